"""Generate the ``MedicalSearchIndex`` CustomResourceDefinition from the shared pydantic spec.

``structural_schema`` is a pure function turning pydantic's JSON schema into a Kubernetes *structural*
openAPIV3Schema that a v1.20 API server accepts: ``$ref`` inlined, ``anyOf [X, null]`` turned into
``nullable``, ``const`` into a one-value ``enum``, JSON-Schema-2020 numeric exclusive bounds into the OpenAPI 3.0
boolean form, defaults filled in from the model's own defaults, keywords the API server rejects or ignores
(``title``, ``additionalProperties: false`` next to ``properties``, ...) removed.

``python -m medsearch_operator.crd`` prints the CRD as YAML; ``operator/config/crd/medicalsearchindexes.yaml``
is that output, and a unit test keeps the two equal.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import yaml

from medsearch.contracts.spec import (
    API_GROUP,
    API_VERSION,
    INDEX_NAME_PATTERN,
    KIND,
    PLURAL,
    SHORT_NAME,
    MedicalSearchIndexSpec,
)

CRD_NAME = f"{PLURAL}.{API_GROUP}"
CONDITION_TYPES = ("Ready", "TopicsReady", "CollectionsReady", "PredictorReady", "WorkersReady")

# Keywords a structural schema may carry (apiextensions.k8s.io/v1 JSONSchemaProps, v1.20), minus the ones we
# never emit. Everything else pydantic produces is dropped or translated.
_KEEP = {
    "type", "description", "format", "pattern", "enum", "default", "nullable",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
    "minItems", "maxItems", "minProperties", "maxProperties", "multipleOf",
    "properties", "items", "additionalProperties", "required",
}
# Formats the API server's validator knows; anything else would be ignored, so it is dropped to stay honest.
_FORMATS = {"int32", "int64", "float", "double", "byte", "date", "date-time", "password", "uri", "email",
            "hostname", "ipv4", "ipv6", "uuid", "duration"}


class SchemaConversionError(ValueError):
    """The JSON schema uses a construct that has no structural-schema equivalent (names the path)."""


def _resolve(node: dict[str, Any], defs: dict[str, Any], path: str) -> dict[str, Any]:
    seen = 0
    while "$ref" in node:
        ref = node["$ref"]
        prefix = "#/$defs/"
        if not isinstance(ref, str) or not ref.startswith(prefix) or ref[len(prefix):] not in defs:
            raise SchemaConversionError(f"{path}: unresolvable $ref {ref!r}")
        extra = {k: v for k, v in node.items() if k != "$ref"}
        node = {**defs[ref[len(prefix):]], **extra}
        seen += 1
        if seen > 32:
            raise SchemaConversionError(f"{path}: recursive $ref {ref!r} cannot be inlined")
    return node


def _convert(node: dict[str, Any], defs: dict[str, Any], path: str, default: Any, has_default: bool) -> dict[str, Any]:
    node = _resolve(node, defs, path)
    nullable = False
    for key in ("anyOf", "oneOf"):
        if key in node:
            branches = [_resolve(b, defs, path) for b in node[key]]
            non_null = [b for b in branches if b.get("type") != "null"]
            if len(non_null) != 1:
                raise SchemaConversionError(f"{path}: {key} with {len(non_null)} non-null branches is not structural")
            nullable = len(non_null) < len(branches)
            node = {**{k: v for k, v in node.items() if k != key}, **non_null[0]}
    if "allOf" in node:
        if len(node["allOf"]) != 1:
            raise SchemaConversionError(f"{path}: allOf with several schemas is not supported")
        node = {**{k: v for k, v in node.items() if k != "allOf"}, **_resolve(node["allOf"][0], defs, path)}
    if "type" not in node:
        raise SchemaConversionError(f"{path}: no type (a structural schema needs one at every level)")

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "const":
            out["enum"] = [value]
        elif key == "exclusiveMinimum" and not isinstance(value, bool):
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum" and not isinstance(value, bool):
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "format" and value not in _FORMATS:
            continue
        elif key in _KEEP and key not in ("properties", "items", "additionalProperties", "default"):
            out[key] = copy.deepcopy(value)
    if nullable:
        out["nullable"] = True

    if node["type"] == "object" and "properties" in node:
        sub_defaults = default if isinstance(default, dict) else {}
        out["properties"] = {
            name: _convert(child, defs, f"{path}.{name}", sub_defaults.get(name), name in sub_defaults)
            for name, child in node["properties"].items()
        }
        if has_default:
            # Objects default to {}: the API server then applies the nested defaults, so every default has
            # exactly one source of truth (the leaf).
            out["default"] = {}
    else:
        if node["type"] == "object" and isinstance(node.get("additionalProperties"), dict):
            out["additionalProperties"] = _convert(node["additionalProperties"], defs, f"{path}.*", None, False)
        if node["type"] == "array" and "items" in node:
            out["items"] = _convert(node["items"], defs, f"{path}[]", None, False)
        if has_default and default is not None:
            out["default"] = copy.deepcopy(default)
        elif "default" in node and node["default"] is not None:
            out["default"] = copy.deepcopy(node["default"])
    if "required" in out and not out["required"]:
        del out["required"]
    return dict(sorted(out.items()))


def structural_schema(json_schema: dict[str, Any], defaults: dict[str, Any] | None = None,
                      path: str = "spec") -> dict[str, Any]:
    """Turn a pydantic JSON schema (with ``$defs``) into a structural openAPIV3Schema.

    ``defaults`` is the JSON dump of the model's default instance; it supplies defaults pydantic leaves out of
    the JSON schema (``default_factory`` fields, per-field overrides of shared sub-models).
    """
    defs = json_schema.get("$defs", {})
    root = {k: v for k, v in json_schema.items() if k != "$defs"}
    return _convert(root, defs, path, defaults if defaults is not None else {}, False)


def spec_schema() -> dict[str, Any]:
    """The structural schema of ``MedicalSearchIndex.spec``."""
    js = MedicalSearchIndexSpec.model_json_schema(by_alias=True, mode="validation")
    defaults = MedicalSearchIndexSpec().model_dump(by_alias=True, mode="json", exclude_none=True)
    schema = structural_schema(js, defaults)
    schema["description"] = "Desired state of a medsearch index: model, collections, topics, workers, predictor."
    return schema


def status_schema() -> dict[str, Any]:
    condition = {
        "type": "object",
        "required": ["type", "status", "lastTransitionTime", "reason", "message"],
        "properties": {
            "type": {"type": "string", "maxLength": 316},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "reason": {"type": "string", "maxLength": 1024, "minLength": 1,
                       "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"},
            "message": {"type": "string", "maxLength": 32768},
        },
    }
    return {
        "type": "object",
        "description": "Observed state, written by the operator.",
        "properties": {
            "observedGeneration": {"type": "integer", "format": "int64"},
            "conditions": {
                "type": "array",
                "items": condition,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "images": {"type": "integer", "format": "int64", "description": "Rows in the image collection."},
            "reports": {"type": "integer", "format": "int64", "description": "Rows in the report collection."},
            "topics": {"type": "array", "items": {"type": "string"}},
            "databaseSchema": {"type": "string", "description": "PostgreSQL schema holding the index's tables."},
            "collections": {"type": "array", "items": {"type": "string"}},
            "predictor": {"type": "string", "description": "Name of the InferenceService."},
            "modelServerUrl": {"type": "string"},
        },
    }


def crd_manifest() -> dict[str, Any]:
    """The whole CustomResourceDefinition (apiextensions.k8s.io/v1)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/name": "medsearch", "app.kubernetes.io/component": "crd"},
        },
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": [SHORT_NAME],
                "categories": ["medsearch"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Ready", "type": "string",
                         "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
                        {"name": "Reason", "type": "string", "priority": 1,
                         "jsonPath": '.status.conditions[?(@.type=="Ready")].reason'},
                        {"name": "Images", "type": "integer", "jsonPath": ".status.images"},
                        {"name": "Reports", "type": "integer", "jsonPath": ".status.reports"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A searchable index of medical images and radiology reports.",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {
                                    "type": "object",
                                    "properties": {
                                        "name": {"type": "string", "maxLength": 40, "pattern": INDEX_NAME_PATTERN},
                                    },
                                },
                                "spec": {**spec_schema(), "default": {}},
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


HEADER = (
    "# GENERATED by `python -m medsearch_operator.crd` from medsearch.contracts.spec.MedicalSearchIndexSpec.\n"
    "# Do not edit: change the pydantic model and regenerate (a unit test compares this file with the generator).\n"
)


def render() -> str:
    return HEADER + yaml.safe_dump(crd_manifest(), sort_keys=False, width=120)


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
