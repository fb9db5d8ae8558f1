"""OIP v2 REST parsing with and without the binary tensor extension."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest
from kserve.errors import InvalidInput
from medsearch_model_server.model import image_bytes
from medsearch_model_server.protocol import parse_infer_request


def binary_request(header: dict, raw: bytes) -> tuple[bytes, str]:
    head = orjson.dumps(header)
    return head + raw, str(len(head))


def test_binary_fp32_tensor_stays_binary() -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    body, n = binary_request(
        {
            "inputs": [
                {
                    "name": "pixel_values",
                    "shape": [2, 3, 4, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [{"name": "embedding", "parameters": {"binary_data": True}}],
        },
        x.tobytes(),
    )
    req = parse_infer_request(body, n, "m")
    np.testing.assert_array_equal(req.inputs[0].as_numpy(), x)
    assert req.request_outputs[0].binary_data is True


def test_binary_and_json_bytes_elements() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    raw = struct.pack("<I", len(png)) + png
    body, n = binary_request(
        {
            "inputs": [
                {"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}
            ]
        },
        raw,
    )
    element = parse_infer_request(body, n, "m").inputs[0].as_numpy()[0]
    assert image_bytes(element, "image[0]") == png
    import base64

    doc = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(png).decode()]}]}
    element = parse_infer_request(orjson.dumps(doc), None, "m").inputs[0].as_numpy()[0]
    assert image_bytes(element, "image[0]") == png


def test_json_numbers() -> None:
    doc = {"inputs": [{"name": "pixel_values", "shape": [1, 2], "datatype": "FP32", "data": [[1.5, 2.5]]}]}
    np.testing.assert_array_equal(parse_infer_request(orjson.dumps(doc), None, "m").inputs[0].as_numpy(), [[1.5, 2.5]])


@pytest.mark.parametrize(
    ("body", "header", "message"),
    [
        (b"{not json", None, "not valid JSON"),
        (b'{"inputs": []}', None, "non-empty 'inputs'"),
        (
            orjson.dumps({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0]}]}),
            None,
            "do not match shape",
        ),
        (
            orjson.dumps(
                {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}
            )
            + b"1234",
            "70",
            "runs past",
        ),
        (orjson.dumps({"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": []}]}), None, "shape"),
        (b"{}", "99", "does not fit"),
    ],
)
def test_malformed_requests_are_invalid_input(body: bytes, header: str | None, message: str) -> None:
    if header == "70":
        header = str(body.index(b"}]}") + 3)
    with pytest.raises(InvalidInput, match=message):
        parse_infer_request(body, header, "m")
