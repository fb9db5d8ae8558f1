"""Validate the KEDA ``ScaledObject`` and the KServe ``InferenceService`` the operator builds against the types
those projects publish, strictly (an unknown field anywhere is an error, as a typo would be one).

No package on PyPI or npm ships KEDA's ``keda.sh_scaledobjects.yaml`` or KServe's
``serving.kserve.io_inferenceservices.yaml`` CRD files, and they are not copied into this repository. What packages
do ship, and what these checks use:

- KEDA: ``cloudcoil-models-keda`` (PyPI, Apache-2.0): pydantic models generated from KEDA's CRDs (field names,
  types, required fields). ``scripts/k8s-assets.sh --crd-models`` downloads and unpacks it into the cache; nothing
  is installed into the environment.
- KServe: the ``kserve`` SDK the model server depends on: models generated from KServe's OpenAPI definitions
  (``openapi_types`` / ``attribute_map``; pod fields are the ``kubernetes`` client's ``V1*`` models, generated from
  Kubernetes' OpenAPI; required fields are the ones whose setters refuse ``None`` or the required pydantic fields).

Neither carries the CRDs' numeric bounds or enums; those stay with the k8s tier's real API server.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CRD_MODELS_HINT = "run `scripts/k8s-assets.sh --crd-models` to fetch KEDA's ScaledObject models (cloudcoil-models-keda)"


# ------------------------------------------------------------------------------------------------------ KEDA


def keda_models() -> Any | None:
    """The ``cloudcoil.models.keda.v1alpha1`` module from the project's cache (fetched on first use), or None."""
    site = os.environ.get("MEDSEARCH_CRD_MODELS")
    if not site:
        try:
            out = subprocess.run(["bash", str(REPO / "scripts" / "k8s-assets.sh"), "--crd-models"],
                                 capture_output=True, text=True, timeout=600, check=True).stdout
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
            return None
        site = next((line.partition("=")[2] for line in out.splitlines() if line.startswith("CRD_MODELS=")), "")
    if not site or not Path(site).is_dir():
        return None
    if site not in sys.path:
        sys.path.append(site)
    import importlib

    return importlib.import_module("cloudcoil.models.keda.v1alpha1")


def _unwrap(annotation: Any) -> list[Any]:
    """The non-None members of an Optional/Union annotation (Annotated stripped)."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def _unknown_pydantic_fields(model: Any, value: Any, path: str) -> list[str]:
    """Keys that ``model`` (a pydantic model class) does not declare, at any depth of ``value``."""
    if not isinstance(value, dict):
        return []
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    errors = [f"{path}{key}: unknown field" for key in value if key not in fields]
    for key, field in fields.items():
        if key in value:
            errors += _unknown_in(field.annotation, value[key], f"{path}{key}.")
    return errors


def _unknown_in(annotation: Any, value: Any, path: str) -> list[str]:
    from pydantic import BaseModel

    errors: list[str] = []
    for member in _unwrap(annotation):
        origin = typing.get_origin(member)
        if isinstance(member, type) and issubclass(member, BaseModel) and isinstance(value, dict):
            return _unknown_pydantic_fields(member, value, path)
        if origin is list and isinstance(value, list):  # List[X] too: its origin is list
            (item,) = typing.get_args(member)
            for i, v in enumerate(value):
                errors += _unknown_in(item, v, f"{path}{i}.")
            return errors
        if origin is dict and isinstance(value, dict):
            _, item = typing.get_args(member)
            for k, v in value.items():
                errors += _unknown_in(item, v, f"{path}{k}.")
            return errors
    return errors


def keda_errors(models: Any, obj: dict[str, Any]) -> list[str]:
    """Why KEDA's ScaledObject type refuses ``obj`` (empty: accepted)."""
    from pydantic import ValidationError

    errors = _unknown_pydantic_fields(models.ScaledObject, obj, "")
    try:
        models.ScaledObject.model_validate(obj)
    except ValidationError as err:
        errors += [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()]
    return errors


# ---------------------------------------------------------------------------------------------------- KServe

_LIST = re.compile(r"^(?:list|List)\[(.+)\]$")
_DICT = re.compile(r"^(?:dict\([^,]+, (.+)\)|Dict\[[^,]+, (.+)\])$")
_PRIMITIVES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "bool": (bool,), "float": (int, float),
                                            "datetime": (str,), "date": (str,)}


def _openapi_model(name: str) -> Any:
    import kserve.models
    import kubernetes.client.models

    for module in (kserve.models, kubernetes.client.models):
        if hasattr(module, name):
            return getattr(module, name)
    raise LookupError(f"no published model named {name}")


def _required(model: Any) -> set[str]:
    """The OpenAPI ``required`` attributes: required pydantic fields (the ``kubernetes`` client's models), else the
    attributes whose generated setter refuses None (the ``kserve`` SDK's)."""
    fields = getattr(model, "model_fields", None)
    if fields is not None:
        return {name for name, f in fields.items() if f.is_required()}
    out = set()
    for attr in model.openapi_types:
        prop = getattr(model, attr, None)
        setter = prop.fset if isinstance(prop, property) else None
        if setter is not None and "must not be `None`" in inspect.getsource(setter):
            out.add(attr)
    return out


def _openapi_errors(type_name: str, value: Any, path: str) -> list[str]:
    where = path.rstrip(".") or "<root>"
    if type_name == "object":
        return []
    if type_name in _PRIMITIVES:
        ok = isinstance(value, _PRIMITIVES[type_name]) and not (type_name != "bool" and isinstance(value, bool))
        return [] if ok else [f"{where}: {value!r} is not of type {type_name}"]
    if m := _LIST.match(type_name):
        if not isinstance(value, list):
            return [f"{where}: expected a list"]
        return [e for i, v in enumerate(value) for e in _openapi_errors(m.group(1), v, f"{path}{i}.")]
    if m := _DICT.match(type_name):
        if not isinstance(value, dict):
            return [f"{where}: expected an object"]
        item = m.group(1) or m.group(2)
        return [e for k, v in value.items() for e in _openapi_errors(item, v, f"{path}{k}.")]
    model = _openapi_model(type_name)
    if not isinstance(value, dict):
        return [f"{where}: expected a {type_name} object"]
    attr_of = {json_key: attr for attr, json_key in model.attribute_map.items()}
    errors = [f"{path}{key}: unknown field of {type_name}" for key in value if key not in attr_of]
    errors += [f"{path}{model.attribute_map[attr]}: required by {type_name}" for attr in sorted(_required(model))
               if model.attribute_map[attr] not in value]
    for key, v in value.items():
        if key in attr_of:
            errors += _openapi_errors(model.openapi_types[attr_of[key]], v, f"{path}{key}.")
    return errors


def kserve_errors(obj: dict[str, Any]) -> list[str]:
    """Why KServe's published ``V1beta1InferenceService`` type refuses ``obj`` (empty: accepted)."""
    errors = _openapi_errors("V1beta1InferenceService", obj, "")
    if obj.get("apiVersion") != "serving.kserve.io/v1beta1" or obj.get("kind") != "InferenceService":
        errors.append("apiVersion/kind: not serving.kserve.io/v1beta1 InferenceService")
    return errors
