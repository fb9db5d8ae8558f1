"""Render tier: helm lint/template + offline schema validation of both charts. Part of the default (unit)
tier: no network, no cluster; it needs only the helm binary that ``scripts/k8s-assets.sh --helm-only`` provides
(``make test`` runs ``make k8s-assets`` first)."""

from __future__ import annotations

from pathlib import Path

import pytest
from chartkit import CRDS_CHART, HELM_HINT, MAIN_CHART, STACK_CHART, find_helm, stage_chart


@pytest.fixture(scope="session")
def helm_bin() -> str:
    found = find_helm()
    if not found:
        pytest.skip(f"helm not available: {HELM_HINT}")
    return found


@pytest.fixture(scope="session")
def staged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The charts copied into a temp dir, dependency stand-ins in place (see chartkit.stage_chart)."""
    root = tmp_path_factory.mktemp("charts")
    return {"medsearch": stage_chart(MAIN_CHART, root), "medsearch-crds": stage_chart(CRDS_CHART, root),
            "medsearch-stack": stage_chart(STACK_CHART, root)}
