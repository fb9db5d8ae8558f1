"""The embedding pipeline without any serving: weights + backend + the shared preprocessing.

Used by the KServe model (behind the dynamic batcher), by ``medsearch embed`` in process, and by the benchmark,
so every path computes embeddings with the same code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medsearch.contracts.settings import ModelServerSettings
from medsearch.imaging import decode_image_bytes, preprocess

from .backends import Backend, build_backend, ensure_onnx
from .config import EMBEDDING_DIM
from .weights import WeightsError, WeightsInfo, resolve_weights

log = logging.getLogger("medsearch_model_server.embedder")


class InputError(ValueError):
    """A request input that cannot be embedded (wrong shape/type, not an image). Maps to HTTP 400."""


@dataclass(frozen=True)
class ModelInfo:
    model_name: str
    input_size: int
    dim: int
    weights: WeightsInfo
    backend: str
    device: str
    precision: str

    def parameters(self) -> dict[str, Any]:
        """What ``GET /v2/models/<name>`` shows beside the tensors (and what the workers record)."""
        return {
            "architecture": "densenet121",
            "embedding_dim": self.dim,
            "input_size": self.input_size,
            "weights_kind": self.weights.kind,
            "weights_version": self.weights.version,
            "weights_source": self.weights.source if self.weights.kind in ("imagenet", "random") else "file",
            "random_weights": self.weights.kind == "random",
            "backend": self.backend,
            "device": self.device,
            "precision": self.precision,
            "normalisation": "imagenet",
            "pooling": "relu-gap-l2",
        }


def check_pixels(x: Any, input_size: int, name: str = "pixel_values") -> NDArray[np.float32]:
    """Validate an already preprocessed batch: float ``[N, 3, S, S]`` with S = the server's input size."""
    arr = np.asarray(x)
    want = f"[N, 3, {input_size}, {input_size}]"
    if arr.ndim != 4 or arr.shape[1] != 3 or arr.shape[2] != input_size or arr.shape[3] != input_size:
        raise InputError(f"{name}: expected shape {want}, got {list(arr.shape)}")
    if arr.shape[0] == 0:
        raise InputError(f"{name}: empty batch")
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"{name}: expected FP32 values, got {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise InputError(f"{name}: contains NaN or infinite values")
    return arr


class Embedder:
    def __init__(self, backend: Backend, info: ModelInfo) -> None:
        self.backend = backend
        self.info = info

    @property
    def input_size(self) -> int:
        return self.info.input_size

    def pixels_from_bytes(self, data: bytes, source: str = "<bytes>") -> NDArray[np.float32]:
        """DICOM/PNG/JPEG bytes → ``[3, S, S]`` via :mod:`medsearch.imaging` (raises ImageDecodeError)."""
        return preprocess(decode_image_bytes(data, source=source), self.info.input_size)

    def embed_pixels(self, batch: Any) -> NDArray[np.float32]:
        x = check_pixels(batch, self.info.input_size)
        return self.backend(x)

    def embed_bytes(self, items: Sequence[bytes], sources: Sequence[str] | None = None) -> NDArray[np.float32]:
        names = list(sources) if sources is not None else [f"<input {i}>" for i in range(len(items))]
        pixels = np.stack([self.pixels_from_bytes(b, s) for b, s in zip(items, names, strict=True)])
        return self.backend(pixels)


def export_onnx(cfg: ModelServerSettings, dest: Path | None = None) -> Path:
    """Export the configured weights at the configured input size to ONNX (``dest``, else the cache file that
    ``--backend onnx`` then serves without PyTorch). Needs PyTorch. Raises WeightsError."""
    return ensure_onnx(resolve_weights(cfg), cfg, dest)


def load_embedder(cfg: ModelServerSettings) -> Embedder:
    """Resolve the weights, build the backend, run one warm-up batch and check the output. Raises WeightsError."""
    t0 = time.monotonic()
    weights = resolve_weights(cfg)
    backend = build_backend(weights, cfg)
    info = ModelInfo(
        model_name=cfg.name,
        input_size=cfg.input_size,
        dim=EMBEDDING_DIM,
        weights=weights.info,
        backend=backend.name,
        device=backend.device,
        precision=backend.precision,
    )
    probe = np.zeros((1, 3, cfg.input_size, cfg.input_size), dtype=np.float32)
    try:
        out = np.asarray(backend(probe))
    except Exception as err:  # user models may fail on our input in any way
        raise WeightsError(
            f"{weights.info.source}: the model fails on a [1, 3, {cfg.input_size}, "
            f"{cfg.input_size}] input: {type(err).__name__}: {err}"
        ) from err
    if out.shape != (1, EMBEDDING_DIM):
        raise WeightsError(
            f"{weights.info.source}: the model outputs shape {list(out.shape)} for one image; expected "
            f"[1, {EMBEDDING_DIM}] (give DenseNet121's feature extractor, not a classifier head)"
        )
    log.info(
        "model %s ready in %.1fs: weights %s (%s), backend %s on %s (%s), input %d",
        cfg.name,
        time.monotonic() - t0,
        weights.info.kind,
        weights.info.version,
        backend.name,
        backend.device,
        backend.precision,
        cfg.input_size,
    )
    return Embedder(backend, info)
