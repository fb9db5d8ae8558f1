"""Helpers shared by the chart tests (render tier here, ``tests/k8s/test_helm*.py``): find helm, stage a chart
with stand-ins for its undownloadable dependencies, render it, validate what it renders.

``charts/medsearch`` and ``charts/medsearch-crds`` have no dependencies and are used as they are. The umbrella
chart ``charts/medsearch-stack`` depends on the local medsearch chart (``file://``) and on the Milvus, Kafka and
PostgreSQL charts, which cannot be downloaded here, and helm refuses to render a chart whose ``dependencies``
are missing from ``charts/`` even when their ``condition`` is false. :func:`stage_chart` copies a chart into a
temporary directory, copies each ``file://`` dependency in, and puts an empty chart of the declared name and
version in place of each remote one: a stand-in renders nothing, so the tests see exactly the medsearch objects
and values wiring a user gets (the bundled services themselves are the upstream charts' business).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHARTS = REPO / "charts"
MAIN_CHART = CHARTS / "medsearch"
CRDS_CHART = CHARTS / "medsearch-crds"
STACK_CHART = CHARTS / "medsearch-stack"
OPERATOR_CRD = REPO / "operator" / "config" / "crd" / "medicalsearchindexes.yaml"
OPERATOR_RBAC = REPO / "operator" / "config" / "rbac" / "role.yaml"
KUBE_VERSION = "1.33.0"          # kubernetes-validate schema version for core kinds
HELM_HINT = "run `scripts/k8s-assets.sh --helm-only` (or `make k8s-assets`) to fetch helm v3.19"


class HelmError(RuntimeError):
    """helm exited non-zero; the message carries its command line and stderr."""


def find_helm() -> str | None:
    """helm from ``$MEDSEARCH_HELM``, else the project's own fetch (``scripts/k8s-assets.sh --helm-only``)."""
    explicit = os.environ.get("MEDSEARCH_HELM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    try:
        out = subprocess.run(["bash", str(REPO / "scripts" / "k8s-assets.sh"), "--helm-only"],
                             capture_output=True, text=True, timeout=600, check=True).stdout
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
        return None
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key == "HELM" and value and Path(value).is_file():
            return value
    return None


def _stub_version(constraint: str) -> str:
    """A concrete version satisfying simple constraints such as ``4.2.x`` or ``~1.2.3``."""
    v = constraint.strip().lstrip("^~=v>< ")
    parts = [p if p.isdigit() else "0" for p in re.split(r"[.]", v.split(" ")[0])[:3]]
    while len(parts) < 3:
        parts.append("0")
    return ".".join(parts)


def stage_chart(src: Path, dest_root: Path) -> Path:
    """Copy chart ``src`` under ``dest_root``: ``file://`` dependencies copied in, a stand-in for each remote one."""
    dest = dest_root / src.name
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("charts", "*.tgz"))
    meta = yaml.safe_load((src / "Chart.yaml").read_text())
    for dep in meta.get("dependencies") or []:
        repo = str(dep.get("repository", ""))
        if repo.startswith("file://"):
            local = (src / repo.removeprefix("file://")).resolve()
            stage_chart(local, dest / "charts")
            continue
        stub = dest / "charts" / dep["name"]
        stub.mkdir(parents=True)
        (stub / "Chart.yaml").write_text(yaml.safe_dump({
            "apiVersion": "v2", "name": dep["name"], "version": _stub_version(str(dep["version"])),
            "description": "test stand-in: the real chart cannot be downloaded here; it is disabled",
        }))
    return dest


def helm(helm_bin: str | Path, *args: str, timeout: float = 180, env: dict[str, str] | None = None) -> str:
    cmd = [str(helm_bin), *args]
    full_env = {**os.environ, "HELM_CACHE_HOME": str(Path(os.environ.get("TMPDIR", "/tmp")) / "medsearch-helm-cache"),
                **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)
    if proc.returncode != 0:
        raise HelmError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
    return proc.stdout


def _literal(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def set_args(values: dict[str, Any] | None) -> list[str]:
    """``--set-string`` for str values (never re-typed by helm), ``--set`` with helm literals otherwise."""
    return [arg for k, v in (values or {}).items()
            for arg in ("--set-string" if isinstance(v, str) else "--set", f"{k}={_literal(v)}")]


def render(helm_bin: str | Path, chart: Path, *, values_files: Sequence[Path] = (),
           sets: dict[str, Any] | None = None, release: str = "medsearch", namespace: str = "medsearch",
           show_only: str | None = None) -> list[dict[str, Any]]:
    """``helm template`` → the rendered objects (hooks included), in order."""
    args = ["template", release, str(chart), "--namespace", namespace, "--include-crds"]
    for f in values_files:
        args += ["--values", str(f)]
    args += set_args(sets)
    if show_only:
        args += ["--show-only", show_only]
    return [d for d in yaml.safe_load_all(helm(helm_bin, *args)) if d]


def by_kind(objects: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o.get("kind") == kind]


def one(objects: Iterable[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [o for o in by_kind(objects, kind) if o["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} named *{name_suffix}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj["spec"]
    return spec["template"]["spec"] if "template" in spec else spec


# ------------------------------------------------------------------------------------- schema validation


def openapi_to_jsonschema(node: Any) -> Any:
    """A Kubernetes structural openAPIV3Schema → a draft-4 JSON schema (``nullable`` → a null type)."""
    if isinstance(node, list):
        return [openapi_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: openapi_to_jsonschema(v) for k, v in node.items()
           if not k.startswith("x-kubernetes-") and k not in ("nullable", "format")}
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def crd_validator(crd: dict[str, Any], version: str) -> Any:
    import jsonschema

    (ver,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = openapi_to_jsonschema(copy.deepcopy(ver["schema"]["openAPIV3Schema"]))
    return jsonschema.Draft4Validator(schema)


def schema_errors(validator: Any, obj: dict[str, Any]) -> list[str]:
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))]


def validate_core(obj: dict[str, Any]) -> None:
    """kubernetes-validate (strict: unknown fields are errors) against Kubernetes ``KUBE_VERSION``."""
    import kubernetes_validate

    kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


# ---------------------------------------------------------------- values.schema.json <- the CRD's spec schema

VALUES_SCHEMA = MAIN_CHART / "values.schema.json"
VALUES_SPEC_POINTER = ("properties", "defaultIndex", "properties", "spec")


def spec_values_schema(node: Any) -> Any:
    """The CRD's ``spec`` openAPIV3Schema as a draft-07 schema for ``defaultIndex.spec`` in values.schema.json.

    Structural CRD schemas prune unknown fields silently (and a 1.20 API server has no strict field
    validation), so the values schema closes every object that lists its properties: a typo inside
    ``defaultIndex.spec`` fails ``helm install`` instead of vanishing. The pydantic spec models forbid extra
    fields too, so this is the same contract."""
    if isinstance(node, list):
        return [spec_values_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: spec_values_schema(v) for k, v in node.items()
           if not k.startswith("x-kubernetes-") and k not in ("nullable", "format", "default")}
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), bool):   # OpenAPI 3.0 boolean form -> draft-07 number
            del out[bound]
            if node[bound] and limit in node:
                out[bound] = out.pop(limit)
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def expected_spec_values_schema() -> dict[str, Any]:
    crd = yaml.safe_load(OPERATOR_CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    spec = spec_values_schema(copy.deepcopy(version["schema"]["openAPIV3Schema"]["properties"]["spec"]))
    spec["description"] = "MedicalSearchIndex.spec, generated from the CRD (tests/render/chartkit.py sync)."
    return dict(spec)


def sync() -> None:
    """``python tests/render/chartkit.py sync``: copy the operator's CRD and RBAC into the charts and regenerate
    ``defaultIndex.spec`` of values.schema.json (what the sync tests compare)."""
    import json

    shutil.copyfile(OPERATOR_CRD, CRDS_CHART / "files" / "medicalsearchindexes.yaml")
    shutil.copyfile(OPERATOR_RBAC, MAIN_CHART / "files" / "operator-rbac.yaml")
    schema = json.loads(VALUES_SCHEMA.read_text())
    parent = schema
    for key in VALUES_SPEC_POINTER[:-1]:
        parent = parent[key]
    parent[VALUES_SPEC_POINTER[-1]] = expected_spec_values_schema()
    VALUES_SCHEMA.write_text(json.dumps(schema, indent=2) + "\n")


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["sync"]:
        raise SystemExit("usage: python tests/render/chartkit.py sync")
    sync()
