"""Filter expressions of the finding-aware search (pure)."""

from __future__ import annotations

from medsearch_api import filters as fx


def test_partitions_and_visibility() -> None:
    asserted, neither = fx.finding_partitions(["J90", "J91.0"])
    assert asserted == '(ARRAY_CONTAINS(icd10_positive, "J90") or ARRAY_CONTAINS(icd10_positive, "J91.0"))'
    assert neither.startswith("not (ARRAY_CONTAINS(icd10_positive") and "icd10_negative" in neither
    assert fx.finding_visible(["J90"]) == (
        'not ((ARRAY_CONTAINS(icd10_negative, "J90")) and not (ARRAY_CONTAINS(icd10_positive, "J90")))'
    )
