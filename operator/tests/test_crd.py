"""The CRD is generated from the shared pydantic spec; the committed YAML equals the generator's output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from medsearch_operator import crd

from medsearch.contracts.spec import MedicalSearchIndexSpec, load_index_file

OPERATOR = Path(__file__).resolve().parents[1]
COMMITTED = OPERATOR / "config" / "crd" / "medicalsearchindexes.yaml"
SAMPLES = sorted((OPERATOR / "config" / "samples").glob("*.yaml"))
# Keywords apiextensions.k8s.io/v1 JSONSchemaProps knows (v1.20); the generator must emit nothing else.
ALLOWED = {
    "type", "description", "format", "pattern", "enum", "default", "nullable", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems", "minProperties",
    "maxProperties", "multipleOf", "properties", "items", "additionalProperties", "required",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-preserve-unknown-fields",
}


def test_committed_crd_matches_the_generator() -> None:
    assert COMMITTED.read_text() == crd.render(), (
        "operator/config/crd/medicalsearchindexes.yaml is stale: run "
        "`python -m medsearch_operator.crd > operator/config/crd/medicalsearchindexes.yaml`")


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, schema)]
    for name, child in (schema.get("properties") or {}).items():
        out += _walk(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        out += _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        out += _walk(schema["additionalProperties"], f"{path}.*")
    return out


def _schema() -> dict[str, Any]:
    return dict(crd.crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def test_schema_is_structural_for_v1_20() -> None:
    for path, node in _walk(_schema()):
        assert set(node) <= ALLOWED, f"{path}: unsupported keywords {set(node) - ALLOWED}"
        assert "type" in node, f"{path}: structural schemas need a type everywhere"
        assert not ("properties" in node and "additionalProperties" in node), path
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True and "minimum" in node, path


def test_schema_carries_bounds_enums_and_defaults_of_the_model() -> None:
    spec = _schema()["properties"]["spec"]["properties"]
    kafka = spec["kafka"]["properties"]
    parts = kafka["partitions"]
    assert (parts["minimum"], parts["maximum"], parts["default"]) == (1, 256, 3)
    assert spec["images"]["properties"]["indexType"]["enum"] == ["FLAT", "IVF_FLAT", "IVF_SQ8", "HNSW", "HNSW_SQ"]
    assert spec["embedding"]["properties"]["dimension"]["enum"] == [1024]
    assert spec["deletionPolicy"] == {"default": "Retain", "enum": ["Retain", "Delete"], "type": "string"}
    # Per-use defaults of a shared sub-model survive the $ref inlining (report workers batch 32, dicom 16).
    workers = spec["workers"]["properties"]
    assert workers["dicom"]["properties"]["batchSize"]["default"] == 16
    assert workers["report"]["properties"]["batchSize"]["default"] == 32
    # default_factory dicts get their value; nested objects default to {} so the leaves apply.
    assert spec["images"]["properties"]["params"]["default"] == {"M": 16, "efConstruction": 200}
    assert spec["predictor"]["default"] == {}
    # Optional fields become nullable without a null default.
    storage = spec["predictor"]["properties"]["storageUri"]
    assert storage["nullable"] is True and storage["type"] == "string" and "default" not in storage
    toleration = spec["predictor"]["properties"]["tolerations"]["items"]["properties"]
    assert toleration["effect"]["enum"] == ["NoSchedule", "PreferNoSchedule", "NoExecute"]
    assert toleration["tolerationSeconds"]["minimum"] == 0


def test_crd_names_subresource_and_printer_columns() -> None:
    m = crd.crd_manifest()
    assert m["metadata"]["name"] == "medicalsearchindexes.medsearch.io"
    assert m["spec"]["names"]["shortNames"] == ["msi"]
    assert m["spec"]["scope"] == "Namespaced"
    version = m["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    cols = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert cols == ["Ready", "Images", "Reports", "Age"]


def _to_jsonschema(node: Any) -> Any:
    """OpenAPI 3.0 → JSON Schema draft 4 just enough to validate documents offline (nullable, exclusive bounds)."""
    if isinstance(node, dict):
        out = {k: _to_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
        if out.pop("nullable", False) and "type" in out:
            out["type"] = [out["type"], "null"]
        return out
    if isinstance(node, list):
        return [_to_jsonschema(v) for v in node]
    return node


@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_samples_validate_against_the_crd_and_the_model(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    jsonschema.Draft4Validator(_to_jsonschema(_schema())).validate(doc)
    index = load_index_file(path)
    assert index.spec == MedicalSearchIndexSpec.model_validate(doc["spec"])


def test_demo_sample_is_the_local_demo_index() -> None:
    index = load_index_file(OPERATOR / "config" / "samples" / "demo-index.yaml")
    assert index.name == "demo"
    assert index.spec.predictor.gpu == 0
    assert index.spec.kafka.partitions <= 3


def test_structural_schema_translates_json_schema_constructs() -> None:
    js = {
        "$defs": {"Inner": {"type": "object", "title": "Inner", "additionalProperties": False,
                            "properties": {"n": {"type": "integer", "exclusiveMinimum": 0, "default": 1}}}},
        "type": "object",
        "properties": {
            "inner": {"$ref": "#/$defs/Inner"},
            "maybe": {"anyOf": [{"type": "string", "maxLength": 5}, {"type": "null"}], "default": None},
            "fixed": {"const": 7, "type": "integer"},
            "when": {"type": "string", "format": "path"},
        },
    }
    out = crd.structural_schema(js, {"inner": {"n": 1}})
    inner = out["properties"]["inner"]
    assert inner == {"default": {}, "properties": {"n": {"default": 1, "exclusiveMinimum": True, "minimum": 0,
                                                         "type": "integer"}}, "type": "object"}
    assert out["properties"]["maybe"] == {"maxLength": 5, "nullable": True, "type": "string"}
    assert out["properties"]["fixed"] == {"enum": [7], "type": "integer"}
    assert out["properties"]["when"] == {"type": "string"}  # unknown formats are dropped, not passed on


@pytest.mark.parametrize(
    ("js", "message"),
    [
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}}, "spec.a: unresolvable"),
        ({"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}},
         "spec.a: anyOf with 2 non-null branches"),
        ({"type": "object", "properties": {"a": {"description": "no type"}}}, "spec.a: no type"),
    ],
)
def test_structural_schema_refuses_what_it_cannot_express(js: dict[str, Any], message: str) -> None:
    with pytest.raises(crd.SchemaConversionError, match=message.replace("[", r"\[")):
        crd.structural_schema(js)


def test_docs_describe_every_spec_field() -> None:
    doc = (OPERATOR.parent / "docs" / "operator.md").read_text()
    missing = [path for path, node in _walk(_schema()["properties"]["spec"])
               if path and "properties" not in node and not path.endswith(("[]", ".*"))
               and f"`{path[1:]}`" not in doc]
    assert not missing, f"docs/operator.md does not describe {missing}"
