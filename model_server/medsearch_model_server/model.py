"""The KServe model: DenseNet121 image embeddings over v1, v2 (Open Inference Protocol) REST and gRPC.

Inputs (exactly one per request):

* ``image``: BYTES ``[N]`` (or ``[N, 1]``), each element the bytes of a DICOM, PNG or JPEG file (raw over gRPC
  and the binary tensor extension; base64 text in JSON);
* ``pixel_values``: FP32 ``[N, 3, S, S]``, already preprocessed by :func:`medsearch.imaging.preprocess`.

Output ``embedding``: FP32 ``[N, 1024]``, unit L2 norm. v1: ``{"instances": [{"image": {"b64": ...}} |
{"pixel_values": [[[...]]]}, ...]}`` → ``{"predictions": [[1024 floats], ...]}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from kserve import Model
from kserve.errors import InvalidInput, ModelNotReady
from kserve.model import InferenceVerb
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from numpy.typing import NDArray

from medsearch.contracts.settings import ModelServerSettings
from medsearch.imaging import ImageDecodeError

from . import metrics
from .batcher import DynamicBatcher
from .config import EMBEDDING_DIM
from .embedder import Embedder, InputError, check_pixels, load_embedder

log = logging.getLogger("medsearch_model_server.model")
_B64 = re.compile(rb"^[A-Za-z0-9+/=\r\n_-]+$")


class NotReady(ModelNotReady):  # type: ignore[misc]  # kserve is untyped
    """ModelNotReady with the ``reason`` attribute KServe 0.21's gRPC interceptor reads (its own class lacks it)."""

    def __init__(self, model_name: str, detail: str) -> None:
        super().__init__(model_name, detail)
        self.reason = self.error_msg


@dataclass
class ParsedRequest:
    pixels: NDArray[np.float32]
    protocol: str  # "v1" | "v2" | "grpc"
    request: InferRequest | None


def image_bytes(element: Any, where: str) -> bytes:
    """A BYTES element → file bytes: raw bytes as they are, base64 text (JSON transports) decoded."""
    if isinstance(element, str):
        element = element.encode("ascii", errors="replace")
    elif isinstance(element, np.bytes_):
        element = bytes(element)
    if not isinstance(element, (bytes, bytearray)):
        raise InvalidInput(f"{where}: expected image bytes, got {type(element).__name__}")
    data = bytes(element)
    if data and _B64.match(data[:4096]) and _B64.match(data):
        try:
            return base64.b64decode(data, altchars=b"-_" if b"-" in data or b"_" in data else None, validate=False)
        except (binascii.Error, ValueError) as err:
            raise InvalidInput(f"{where}: looks like base64 but does not decode: {err}") from None
    return data


class EmbeddingModel(Model):  # type: ignore[misc]  # kserve ships no type information
    def __init__(self, cfg: ModelServerSettings) -> None:
        super().__init__(cfg.name)
        self.cfg = cfg
        self.embedder: Embedder | None = None
        self.batcher: DynamicBatcher | None = None
        self.load_error: str | None = None
        self.state = "loading"
        self._load_lock = threading.Lock()
        self._load_attempted = False

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def load(self) -> bool:
        """Load the weights and the backend; ``ready`` only on success, else ``load_error`` says why.

        Runs once: KServe's data plane calls ``load()`` again on every request to a model that is not ready (in
        the event loop); those calls return at once instead of loading a second time or retrying a failure.
        """
        if not self._load_lock.acquire(blocking=False):
            return bool(self.ready)  # a load is in progress (the server's background thread)
        try:
            if self._load_attempted:
                return bool(self.ready)
            self._load_attempted = True
            return self._load()
        finally:
            self._load_lock.release()

    def _load(self) -> bool:
        self.ready = False
        try:
            embedder = load_embedder(self.cfg)
        except Exception as err:  # noqa: BLE001  # any failure keeps the model unready, with the reason
            self.load_error = str(err) if str(err) else type(err).__name__
            self.state = "failed"
            log.error("model %s is NOT ready: cannot load weights: %s", self.name, self.load_error)
            return False
        self.attach(embedder)
        return True

    def attach(self, embedder: Embedder) -> None:
        """Serve an already loaded embedder (used by load() and by in-process tests)."""
        labels = {"model_name": self.name}

        def on_batch(size: int, seconds: float) -> None:
            metrics.BATCH_SIZE.labels(**labels).observe(size)
            metrics.BATCH_SECONDS.labels(**labels).observe(seconds)
            metrics.IMAGES_TOTAL.labels(**labels).inc(size)

        self.embedder = embedder
        self.batcher = DynamicBatcher(
            embedder.backend,
            max_batch_size=self.cfg.max_batch_size,
            max_latency_ms=self.cfg.max_latency_ms,
            on_batch=on_batch,
        )
        self.load_error = None
        self.state = "ready"
        self.ready = True

    def stop(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        super().stop()

    # ---- metadata --------------------------------------------------------------------------------------------
    def get_input_types(self) -> list[dict[str, Any]]:
        s = self.cfg.input_size
        return [
            {"name": "image", "datatype": "BYTES", "shape": [-1]},
            {"name": "pixel_values", "datatype": "FP32", "shape": [-1, 3, s, s]},
        ]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [{"name": "embedding", "datatype": "FP32", "shape": [-1, EMBEDDING_DIM]}]

    def metadata(self) -> dict[str, Any]:
        """OIP model metadata plus ``parameters`` (weights kind and version, backend, input size) and state."""
        params: dict[str, Any] = {
            "architecture": "densenet121",
            "embedding_dim": EMBEDDING_DIM,
            "input_size": self.cfg.input_size,
            "max_batch_size": self.cfg.max_batch_size,
            "max_latency_ms": self.cfg.max_latency_ms,
        }
        versions: list[str] = []
        platform = ""
        if self.embedder is not None:
            params.update(self.embedder.info.parameters())
            versions = [self.embedder.info.weights.version]
            platform = "onnxruntime_onnx" if self.embedder.info.backend == "onnx" else "pytorch_libtorch"
        params["state"] = self.state
        params["ready"] = bool(self.ready)
        if self.load_error:
            params["load_error"] = self.load_error
        return {
            "name": self.name,
            "versions": versions,
            "platform": platform,
            "inputs": self.get_input_types(),
            "outputs": self.get_output_types(),
            "parameters": params,
        }

    # ---- inference -------------------------------------------------------------------------------------------
    async def __call__(
        self,
        body: Any,
        headers: dict[str, str] | None = None,
        verb: InferenceVerb = InferenceVerb.PREDICT,
    ) -> Any:
        protocol = "v1" if isinstance(body, dict) else ("grpc" if getattr(body, "from_grpc", False) else "v2")
        t0 = time.monotonic()
        outcome = "ok"
        try:
            return await super().__call__(body, headers=headers, verb=verb)
        except InvalidInput:
            outcome = "invalid"
            raise
        except Exception:
            outcome = "error"
            raise
        finally:
            metrics.REQUEST_SECONDS.labels(model_name=self.name, protocol=protocol, outcome=outcome).observe(
                time.monotonic() - t0
            )

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> ParsedRequest:
        if self.embedder is None or not self.ready:
            raise NotReady(self.name, self.load_error or "weights still loading")
        try:
            if isinstance(payload, InferRequest):
                pixels = await self._parse_v2(payload)
                parsed = ParsedRequest(pixels, "grpc" if payload.from_grpc else "v2", payload)
            elif isinstance(payload, dict):
                parsed = ParsedRequest(await self._parse_v1(payload), "v1", None)
            else:
                raise InvalidInput(f"unsupported request body of type {type(payload).__name__}")
        except InvalidInput as err:
            metrics.REJECTED_TOTAL.labels(model_name=self.name, reason=_reason(err)).inc()
            raise
        metrics.REQUEST_IMAGES.labels(model_name=self.name).observe(int(parsed.pixels.shape[0]))
        return parsed

    async def predict(
        self,
        payload: ParsedRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> InferResponse | dict[str, Any]:
        assert self.batcher is not None
        emb = await self.batcher.submit(payload.pixels)
        req = payload.request
        if req is None:
            return {"predictions": emb.tolist()}
        out = InferOutput(name="embedding", shape=list(emb.shape), datatype="FP32")
        # Raw bytes from the start: KServe 0.21's to_grpc() tests an ndarray's truth value and fails otherwise;
        # to_rest() turns them into JSON numbers unless binary output was asked for.
        out.set_data_from_numpy(np.ascontiguousarray(emb, dtype=np.float32), binary_data=True)
        return InferResponse(
            response_id=req.id or str(uuid.uuid4()),
            model_name=self.name,
            infer_outputs=[out],
            use_binary_outputs=req.use_binary_outputs,
            requested_outputs=req.request_outputs,
        )

    # ---- request parsing -------------------------------------------------------------------------------------
    async def _parse_v2(self, req: InferRequest) -> NDArray[np.float32]:
        names = [i.name for i in req.inputs]
        if len(req.inputs) != 1 or names[0] not in ("image", "pixel_values"):
            raise InvalidInput(
                f"expected exactly one input, 'image' (BYTES) or 'pixel_values' (FP32 [N, 3, {self.cfg.input_size}, "
                f"{self.cfg.input_size}]); got {names}"
            )
        inp = req.inputs[0]
        if inp.name == "pixel_values":
            if inp.datatype not in ("FP32", "FP16", "FP64"):
                raise InvalidInput(f"pixel_values: expected datatype FP32, got {inp.datatype}")
            try:
                arr = inp.as_numpy()
            except (ValueError, TypeError) as err:
                raise InvalidInput(f"pixel_values: data do not match shape {list(inp.shape)}: {err}") from None
            return self._check(arr)
        if inp.datatype != "BYTES":
            raise InvalidInput(f"image: expected datatype BYTES, got {inp.datatype}")
        try:
            elements = inp.as_numpy().reshape(-1)
        except (ValueError, TypeError, IndexError) as err:
            raise InvalidInput(f"image: BYTES data do not match shape {list(inp.shape)}: {err}") from None
        items = [image_bytes(e, f"image[{i}]") for i, e in enumerate(elements)]
        return await self._decode(items)

    async def _parse_v1(self, body: dict[str, Any]) -> NDArray[np.float32]:
        instances = body.get("instances")
        if not isinstance(instances, list) or not instances:
            raise InvalidInput(
                'v1 requests need a non-empty \'instances\' list of {"image": {"b64": ...}} or '
                '{"pixel_values": [[[...]]]} objects'
            )
        rows: list[NDArray[np.float32] | None] = []
        images: list[tuple[int, bytes]] = []
        s = self.cfg.input_size
        for i, inst in enumerate(instances):
            value = inst
            if isinstance(inst, dict) and "image" in inst:
                value = inst["image"]
                if isinstance(value, dict):
                    value = value.get("b64")
                images.append((i, image_bytes(value, f"instances[{i}].image")))
                rows.append(None)
            elif isinstance(inst, dict) and "pixel_values" in inst:
                try:
                    arr = np.asarray(inst["pixel_values"], dtype=np.float32)
                except (TypeError, ValueError) as err:
                    raise InvalidInput(f"instances[{i}].pixel_values: not a numeric array: {err}") from None
                if arr.shape != (3, s, s):
                    raise InvalidInput(
                        f"instances[{i}].pixel_values: expected shape [3, {s}, {s}], got {list(arr.shape)}"
                    )
                rows.append(arr)
            elif isinstance(value, str):
                images.append((i, image_bytes(value, f"instances[{i}]")))
                rows.append(None)
            else:
                raise InvalidInput(f'instances[{i}]: expected {{"image": {{"b64": ...}}}} or {{"pixel_values": ...}}')
        if images:
            decoded = await self._decode([b for _, b in images], [f"instances[{i}].image" for i, _ in images])
            for (i, _), px in zip(images, decoded, strict=True):
                rows[i] = px
        return self._check(np.stack([r for r in rows if r is not None]))

    async def _decode(self, items: list[bytes], sources: list[str] | None = None) -> NDArray[np.float32]:
        if not items:
            raise InvalidInput("image: empty batch")
        embedder = self.embedder
        assert embedder is not None
        names = sources or [f"image[{i}]" for i in range(len(items))]

        def work() -> NDArray[np.float32]:
            return np.stack([embedder.pixels_from_bytes(b, n) for b, n in zip(items, names, strict=True)])

        try:
            return await asyncio.get_running_loop().run_in_executor(None, work)
        except ImageDecodeError as err:
            raise InvalidInput(str(err)) from None

    def _check(self, arr: Any) -> NDArray[np.float32]:
        try:
            return check_pixels(arr, self.cfg.input_size)
        except InputError as err:
            raise InvalidInput(str(err)) from None


def _reason(err: InvalidInput) -> str:
    text = str(err)
    for reason in ("not an image", "undecodable", "no pixel data", "unsupported", "too large", "expected shape"):
        if reason in text:
            return reason.replace(" ", "_")
    return "invalid"
