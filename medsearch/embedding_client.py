"""Client of the embedding model server (Open Inference Protocol v2 REST). No torch needed.

Tensors travel with the OIP binary tensor extension (raw little-endian bytes after the JSON header): for a
batch of 32 images at 224² that is 19 MB of float32 instead of ~60 MB of JSON text, and neither side parses
millions of numbers. Errors are typed: :class:`EmbeddingUnavailable` (server down, not ready, 5xx, timeout —
retry later) and :class:`EmbeddingRejected` (4xx — this input will never work; the message is the server's).
"""

from __future__ import annotations

import struct
from typing import Any

import httpx
import numpy as np
import orjson
from numpy.typing import NDArray

EMBEDDING_DIM = 1024
_HEADER = "Inference-Header-Content-Length"


class EmbeddingUnavailable(RuntimeError):
    """The server cannot answer now (down, not ready, 5xx, timeout): transient, callers retry."""


class EmbeddingRejected(ValueError):
    """The server refused this input (4xx): permanent for that input. The message is the server's reason."""


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return str(body)[:500]


class EmbeddingClient:
    def __init__(self, base_url: str, model_name: str = "densenet121", timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model_name = model_name
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    # ---- requests --------------------------------------------------------------------------------------------
    def _post_infer(self, header: dict[str, Any], payload: bytes) -> NDArray[np.float32]:
        head = orjson.dumps(header)
        try:
            response = self._http.post(
                f"/v2/models/{self.model_name}/infer",
                content=head + payload,
                headers={_HEADER: str(len(head)), "Content-Type": "application/octet-stream"},
            )
        except httpx.TimeoutException as err:
            raise EmbeddingUnavailable(f"model server {self.base_url}: timed out ({err})") from err
        except httpx.TransportError as err:
            raise EmbeddingUnavailable(f"model server {self.base_url}: {type(err).__name__}: {err}") from err
        if 400 <= response.status_code < 500 and response.status_code not in (404, 408, 429):
            raise EmbeddingRejected(_error_text(response))
        if response.status_code != 200:
            raise EmbeddingUnavailable(
                f"model server {self.base_url}: HTTP {response.status_code}: {_error_text(response)}"
            )
        return self._parse_embedding(response)

    def _parse_embedding(self, response: httpx.Response) -> NDArray[np.float32]:
        body = response.content
        json_len_text = response.headers.get(_HEADER)
        json_len = int(json_len_text) if json_len_text else len(body)
        doc = orjson.loads(body[:json_len])
        outputs = {o["name"]: o for o in doc.get("outputs", [])}
        out = outputs.get("embedding")
        if out is None:
            raise EmbeddingUnavailable(f"model server {self.base_url}: response has no 'embedding' output")
        shape = [int(d) for d in out["shape"]]
        if "data" in out:
            arr = np.asarray(out["data"], dtype=np.float32)
        else:
            offset = json_len
            for o in doc["outputs"]:  # raw outputs follow the JSON in output order
                size = int((o.get("parameters") or {}).get("binary_data_size", 0))
                if o is out:
                    arr = np.frombuffer(body[offset : offset + size], dtype="<f4")
                    break
                offset += size
        emb = arr.reshape(shape).astype(np.float32, copy=False)
        if emb.ndim != 2 or emb.shape[1] != EMBEDDING_DIM:
            raise EmbeddingUnavailable(f"model server {self.base_url}: unexpected embedding shape {list(emb.shape)}")
        return emb

    def embed_tensors(self, batch: NDArray[Any]) -> NDArray[np.float32]:
        """float32 ``[N, 3, S, S]`` (stacked :func:`medsearch.imaging.preprocess` outputs) → ``[N, 1024]``."""
        x = np.ascontiguousarray(batch, dtype="<f4")
        if x.ndim != 4:
            raise EmbeddingRejected(f"pixel_values: expected a [N, 3, S, S] batch, got shape {list(x.shape)}")
        raw = x.tobytes()
        header = {
            "inputs": [
                {
                    "name": "pixel_values",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "embedding", "parameters": {"binary_data": True}}],
        }
        emb = self._post_infer(header, raw)
        if emb.shape[0] != x.shape[0]:
            raise EmbeddingUnavailable(
                f"model server {self.base_url}: {emb.shape[0]} embeddings for {x.shape[0]} inputs"
            )
        return emb

    def embed_image_bytes(self, data: bytes) -> NDArray[np.float32]:
        """DICOM/PNG/JPEG file bytes → ``[1024]`` (input ``image``, BYTES, sent raw)."""
        raw = struct.pack("<I", len(data)) + data
        header = {
            "inputs": [
                {"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}
            ],
            "outputs": [{"name": "embedding", "parameters": {"binary_data": True}}],
        }
        emb = self._post_infer(header, raw)
        return np.asarray(emb[0], dtype=np.float32)

    # ---- state -----------------------------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        """``GET /v2/models/<name>``: tensors plus ``parameters`` (input_size, weights_kind, weights_version...)."""
        try:
            response = self._http.get(f"/v2/models/{self.model_name}")
        except httpx.HTTPError as err:
            raise EmbeddingUnavailable(f"model server {self.base_url}: {type(err).__name__}: {err}") from err
        if response.status_code != 200:
            raise EmbeddingUnavailable(
                f"model server {self.base_url}: HTTP {response.status_code}: {_error_text(response)}"
            )
        result: dict[str, Any] = response.json()
        return result

    def ready(self) -> bool:
        try:
            response = self._http.get(f"/v2/models/{self.model_name}/ready")
        except httpx.HTTPError:
            return False
        if response.status_code != 200:
            return False
        try:
            return bool(response.json().get("ready", False))
        except ValueError:
            return False

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EmbeddingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
