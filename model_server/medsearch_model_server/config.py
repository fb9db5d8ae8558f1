"""Model server configuration: the flags of ``python -m medsearch_model_server`` over ``MEDSEARCH_MODEL_*``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from medsearch.contracts.settings import ModelServerSettings, default_data_dir

Backend = Literal["auto", "torch", "onnx"]
Precision = Literal["auto", "fp32", "fp16", "bf16"]
EMBEDDING_DIM = 1024
IMAGENET_FILE = "densenet121-a639ec97.pth"  # torchvision's DenseNet121 ImageNet checkpoint


class WeightsError(RuntimeError):
    """The weights cannot be loaded; the message says which file/spec and why, and what to do."""


def default_cache_dir() -> Path:
    """``$MEDSEARCH_MODEL_CACHE_DIR``, else ``<data dir>/model-cache`` (exported ONNX files, downloaded weights)."""
    env = os.environ.get("MEDSEARCH_MODEL_CACHE_DIR")
    return Path(env).expanduser() if env else default_data_dir() / "model-cache"


@dataclass(frozen=True)
class ServerConfig:
    model_name: str = "densenet121"
    weights: str = "imagenet"
    backend: Backend = "auto"
    input_size: int = 224
    max_batch_size: int = 32
    max_latency_ms: float = 5.0
    http_port: int = 8080
    grpc_port: int = 8081
    seed: int = 0
    precision: Precision = "auto"
    device: str | None = None  # "cuda", "cuda:1", "cpu"; None: CUDA when available for the torch backend
    cache_dir: Path = field(default_factory=default_cache_dir)
    channels_last: bool = True
    threads: int = 0  # intra-op threads (0: library default)
    exit_on_load_failure: bool = False
    weights_sha256: str | None = None  # expected sha256 of the model file; a mismatch is refused
    allow_pickle: bool = False  # opt-in to unpickle a whole pickled model (runs code from the file)

    def __post_init__(self) -> None:
        if not 32 <= self.input_size <= 1024:
            raise ValueError(f"input_size must be in [32, 1024], got {self.input_size}")
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_latency_ms < 0:
            raise ValueError(f"max_latency_ms must be >= 0, got {self.max_latency_ms}")

    @classmethod
    def from_settings(cls, settings: ModelServerSettings | None = None) -> ServerConfig:
        s = settings or ModelServerSettings()
        return cls(
            model_name=s.name,
            weights=s.weights,
            backend=s.backend,
            input_size=s.input_size,
            max_batch_size=s.max_batch_size,
            max_latency_ms=s.max_latency_ms,
            http_port=s.http_port,
            grpc_port=s.grpc_port,
            weights_sha256=s.weights_sha256,
            allow_pickle=s.allow_pickle,
        )
