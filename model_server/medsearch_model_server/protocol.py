"""Open Inference Protocol (v2) REST request parsing, including the binary tensor extension.

KServe 0.21's own REST path turns binary tensors into Python lists (slow for image batches) and re-encodes
binary BYTES elements as UTF-8 text (so raw PNG/DICOM bytes from an official client fail with a 500). This
parser keeps binary data as bytes and builds the same :class:`kserve.InferRequest` the model receives from
gRPC, so every protocol reaches one code path.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput, serialize_byte_tensor

_NUMPY_DTYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


def _shape(value: Any, name: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(d, int) and d >= 0 for d in value):
        raise InvalidInput(f"input '{name}': 'shape' must be a list of non-negative integers, got {value!r}")
    return [int(d) for d in value]


def _flatten(data: Any) -> list[Any]:
    out: list[Any] = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            out.append(item)
    return out


def parse_infer_request(body: bytes, header_length: str | None, model_name: str) -> InferRequest:
    """Body of ``POST /v2/models/<name>/infer`` (JSON, or JSON + binary tensors) → InferRequest.

    Numeric binary tensors and BYTES tensors (binary or JSON) end up as raw bytes on the InferInput, so
    ``as_numpy()`` gives them without Python-level copies. Raises ``InvalidInput`` (HTTP 400) with the reason.
    """
    if header_length is not None:
        try:
            json_len = int(header_length)
        except ValueError:
            raise InvalidInput(f"Inference-Header-Content-Length is not an integer: {header_length!r}") from None
        if not 0 < json_len <= len(body):
            raise InvalidInput(f"Inference-Header-Content-Length {json_len} does not fit a body of {len(body)} bytes")
    else:
        json_len = len(body)
    try:
        doc = orjson.loads(body[:json_len])
    except orjson.JSONDecodeError as err:
        raise InvalidInput(f"the request is not valid JSON: {err}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise InvalidInput("the request needs a non-empty 'inputs' list (Open Inference Protocol v2)")
    offset = json_len
    inputs: list[InferInput] = []
    for i, spec in enumerate(doc["inputs"]):
        if not isinstance(spec, dict):
            raise InvalidInput(f"inputs[{i}] must be an object")
        name = spec.get("name")
        datatype = spec.get("datatype")
        if not isinstance(name, str) or not isinstance(datatype, str):
            raise InvalidInput(f"inputs[{i}] needs a string 'name' and 'datatype'")
        shape = _shape(spec.get("shape"), name)
        params = spec.get("parameters") or {}
        if not isinstance(params, dict):
            raise InvalidInput(f"input '{name}': 'parameters' must be an object")
        count = int(np.prod(shape)) if shape else 1
        infer_input = InferInput(name=name, shape=shape, datatype=datatype, parameters=None)
        if "binary_data_size" in params:
            size = params["binary_data_size"]
            if not isinstance(size, int) or size < 0 or offset + size > len(body):
                raise InvalidInput(f"input '{name}': binary_data_size {size!r} runs past the end of the request body")
            raw = body[offset : offset + size]
            offset += size
            if datatype != "BYTES":
                dtype = _NUMPY_DTYPES.get(datatype)
                if dtype is None:
                    raise InvalidInput(f"input '{name}': unsupported datatype {datatype}")
                if size != count * np.dtype(dtype).itemsize:
                    raise InvalidInput(
                        f"input '{name}': {size} bytes of binary data do not match shape {shape} of {datatype}"
                    )
        elif "data" in spec:
            data = _flatten(spec["data"])
            if len(data) != count:
                raise InvalidInput(f"input '{name}': {len(data)} data elements do not match shape {shape}")
            if datatype == "BYTES":
                items = np.empty(len(data), dtype=object)
                for j, d in enumerate(data):
                    if not isinstance(d, str):
                        raise InvalidInput(f"input '{name}': BYTES elements in JSON must be strings")
                    items[j] = d.encode("utf-8")
                raw = serialize_byte_tensor(items).item() if len(data) else b""
            else:
                dtype = _NUMPY_DTYPES.get(datatype)
                if dtype is None or datatype == "FP16":
                    raise InvalidInput(f"input '{name}': datatype {datatype} is not supported in JSON")
                try:
                    raw = np.asarray(data, dtype=dtype).tobytes()
                except (TypeError, ValueError) as err:
                    raise InvalidInput(f"input '{name}': data are not {datatype} numbers ({err})") from None
        else:
            raise InvalidInput(f"input '{name}': needs 'data' or the binary_data_size parameter")
        infer_input._raw_data = raw  # the documented raw-tensor slot that as_numpy() decodes (as for gRPC)
        inputs.append(infer_input)

    outputs = None
    if doc.get("outputs") is not None:
        if not isinstance(doc["outputs"], list):
            raise InvalidInput("'outputs' must be a list")
        outputs = []
        for o in doc["outputs"]:
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise InvalidInput("each requested output needs a 'name'")
            outputs.append(RequestedOutput(name=o["name"], parameters=o.get("parameters")))
    parameters = doc.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise InvalidInput("'parameters' must be an object")
    request_id = doc.get("id")
    return InferRequest(
        model_name=model_name,
        infer_inputs=inputs,
        request_id=str(request_id) if request_id is not None else None,
        parameters=parameters,
        request_outputs=outputs,
    )
