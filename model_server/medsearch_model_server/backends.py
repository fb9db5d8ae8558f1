"""Inference backends: torch (CUDA with fp16/bf16 autocast, or CPU) and onnxruntime (CPU, or CUDA where
onnxruntime-gpu is installed: the model-server-cuda image).

A backend is a callable ``float32 [N, 3, S, S] -> float32 [N, 1024]`` (unit norm). It is called from one worker
thread at a time (the batcher's), never concurrently.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from medsearch.contracts.settings import ModelServerSettings

from .weights import ResolvedWeights, WeightsError, torch_network

log = logging.getLogger("medsearch_model_server.backends")
ONNX_OPSET = 17


class Backend(Protocol):
    name: str  # "torch" | "onnx"
    device: str  # "cpu", "cuda:0"
    precision: str  # "fp32" | "fp16" | "bf16"

    def __call__(self, batch: NDArray[np.float32]) -> NDArray[np.float32]: ...


class TorchBackend:
    name = "torch"

    def __init__(self, module: Any, *, device: str, precision: str, channels_last: bool, threads: int = 0) -> None:
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
        self._torch = torch
        self.device = device
        self.precision = precision
        self._dev = torch.device(device)
        self._cuda = self._dev.type == "cuda"
        self._memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if self._cuda:
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self._module = module.to(self._dev, memory_format=self._memory_format).eval()
        self._autocast_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        if self._autocast_dtype is not None and not self._cuda:
            raise ValueError(f"precision {precision} needs CUDA; use fp32 on CPU")

    def __call__(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        with torch.inference_mode():
            if self._cuda:
                x = x.pin_memory().to(self._dev, non_blocking=True)
            x = x.contiguous(memory_format=self._memory_format)
            if self._autocast_dtype is not None:
                with torch.autocast(device_type="cuda", dtype=self._autocast_dtype):
                    out = self._module(x)
            else:
                out = self._module(x)
            return np.asarray(out.float().cpu().numpy(), dtype=np.float32)


CUDA_PROVIDER = "CUDAExecutionProvider"


def onnx_providers(available: list[str], device: str | None) -> tuple[list[Any], str]:
    """The execution providers to ask onnxruntime for, and the device they aim at: CUDA (device ``cuda`` or
    ``cuda:N``, or by default) where this onnxruntime has the CUDA provider, else the CPU. Raises WeightsError when
    CUDA is asked for explicitly and this onnxruntime cannot offer it."""
    explicit_cuda = device is not None and device.startswith("cuda")
    if (device is not None and not explicit_cuda) or CUDA_PROVIDER not in available:
        if explicit_cuda:
            raise WeightsError(f"device {device} requested but this onnxruntime has no {CUDA_PROVIDER} "
                               "(onnxruntime-gpu is in the model-server-cuda image)")
        return ["CPUExecutionProvider"], "cpu"
    index = int(device.split(":", 1)[1]) if device is not None and ":" in device else 0
    return [(CUDA_PROVIDER, {"device_id": index}), "CPUExecutionProvider"], f"cuda:{index}"


class OnnxBackend:
    name = "onnx"
    precision = "fp32"

    def __init__(self, path: Path, input_size: int, *, threads: int = 0, normalise: bool = False,
                 device: str | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads > 0:
            opts.intra_op_num_threads = threads
        providers, self.device = onnx_providers(list(ort.get_available_providers()), device)
        if self.device != "cpu":
            _preload_cuda_libraries(ort)
        try:
            self._session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph types
            raise WeightsError(f"{path}: onnxruntime cannot load the model: {err}") from err
        if self.device != "cpu" and self._session.get_providers()[0] != CUDA_PROVIDER:
            # onnxruntime falls back to the CPU by itself when CUDA cannot start (no GPU, no driver, missing libs)
            if device is not None:
                raise WeightsError(f"device {device} requested but onnxruntime's {CUDA_PROVIDER} could not start "
                                   "(no GPU visible, or the CUDA/cuDNN libraries failed to load; see the log above)")
            log.warning("onnxruntime's %s is installed but could not start (no GPU visible, or the CUDA/cuDNN "
                        "libraries failed to load): serving on the CPU, much slower", CUDA_PROVIDER)
            self.device = "cpu"
        model_input = self._session.get_inputs()[0]
        fixed = [d for d in model_input.shape[2:] if isinstance(d, int)]
        if any(d != input_size for d in fixed):
            raise WeightsError(
                f"{path}: the ONNX model takes {model_input.shape[2:]} images, the server is configured for "
                f"{input_size}x{input_size} (set --input-size to the model's size, or export it again at {input_size})"
            )
        self._input = model_input.name
        self._output = self._session.get_outputs()[0].name
        self._normalise = normalise
        self.path = path

    def __call__(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        out = np.asarray(
            self._session.run([self._output], {self._input: np.ascontiguousarray(batch, dtype=np.float32)})[0],
            dtype=np.float32,
        )
        if not self._normalise:
            return out
        if out.ndim == 4:
            out = out.mean(axis=(2, 3))
        out = out.reshape(out.shape[0], -1)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.asarray(out / np.maximum(norms, 1e-12), dtype=np.float32)


def _preload_cuda_libraries(ort: Any) -> None:
    """onnxruntime-gpu finds the CUDA runtime and cuDNN of PyPI's nvidia-* wheels through ``preload_dlls``."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload()
    except Exception as err:  # noqa: BLE001  # the session below says whether CUDA started; this only helps it
        log.warning("onnxruntime could not preload the CUDA libraries: %s", err)


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001  # a broken CUDA install must not stop the CPU path
        return False


def onnx_cache_path(cfg: ModelServerSettings, weights_key: str) -> Path:
    return cfg.cache_dir / "onnx" / f"densenet121-emb-{weights_key}-s{cfg.input_size}-opset{ONNX_OPSET}.onnx"


def ensure_onnx(weights: ResolvedWeights, cfg: ModelServerSettings, dest: Path | None = None) -> Path:
    """The ONNX export of these weights at the configured input size: written to ``dest``, or to the cache (once,
    keyed by the weights; a cached export is used without building the torch module)."""
    path = dest or onnx_cache_path(cfg, weights.info.key)
    if dest is None and path.exists():
        log.info("using cached ONNX export %s", path)
        return path
    module = weights.module
    if module is None:
        raise WeightsError(f"{weights.info.source}: nothing to export to ONNX")
    log.info("exporting the embedding network to ONNX (opset %d, input %d) -> %s", ONNX_OPSET, cfg.input_size, path)
    tmp_name = path.with_name(f"{path.stem}.{os.getpid()}.onnx")
    torch_network("exporting to ONNX").export_onnx(module, tmp_name, cfg.input_size, opset=ONNX_OPSET)
    tmp_name.replace(path)
    return path


def choose_backend_name(cfg: ModelServerSettings, weights: ResolvedWeights) -> str:
    if cfg.backend != "auto":
        return cfg.backend
    if weights.info.kind == "onnx":
        return "onnx"
    wants_cpu = cfg.device is not None and cfg.device.startswith("cpu")
    return "torch" if (not wants_cpu and cuda_available()) else "onnx"


def build_backend(weights: ResolvedWeights, cfg: ModelServerSettings) -> Backend:
    name = choose_backend_name(cfg, weights)
    if name == "onnx":
        if weights.info.kind == "onnx" and weights.onnx_path is not None:
            return OnnxBackend(weights.onnx_path, cfg.input_size, threads=cfg.threads, normalise=True,
                               device=cfg.device)
        return OnnxBackend(ensure_onnx(weights, cfg), cfg.input_size, threads=cfg.threads, device=cfg.device)
    if weights.module is None:
        raise WeightsError(f"{weights.info.source}: ONNX weights run on the onnx backend only (use --backend onnx)")
    device = cfg.device or ("cuda" if cuda_available() else "cpu")
    if device.startswith("cuda") and not cuda_available():
        raise WeightsError(f"device {device} requested but CUDA is not available")
    precision = cfg.precision
    if precision == "auto":
        precision = "fp16" if device.startswith("cuda") else "fp32"
    if device.startswith("cuda") and device == "cuda":
        device = "cuda:0"
    return TorchBackend(
        weights.module, device=device, precision=precision, channels_last=cfg.channels_last, threads=cfg.threads
    )
