"""The onnx backend's execution provider: CUDA where onnxruntime offers it (onnxruntime-gpu, the model-server-cuda
image), the CPU otherwise; a CUDA provider that cannot start falls back to the CPU with a warning, or fails when
CUDA was asked for by name. The fallback runs here with the CPU build of onnxruntime told that it has CUDA."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from medsearch_model_server.backends import CUDA_PROVIDER, OnnxBackend, onnx_providers
from medsearch_model_server.weights import WeightsError
from onnx import TensorProto, helper

SIZE = 8


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """[N, 3, S, S] -> the same tensor (the backend pools and normalises it)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, SIZE, SIZE])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, SIZE, SIZE])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    onnx.save(model, str(path))
    return path


def test_providers_follow_the_device_and_what_onnxruntime_offers() -> None:
    gpu = [CUDA_PROVIDER, "CPUExecutionProvider"]
    assert onnx_providers(["CPUExecutionProvider"], None) == (["CPUExecutionProvider"], "cpu")
    assert onnx_providers(gpu, None) == ([(CUDA_PROVIDER, {"device_id": 0}), "CPUExecutionProvider"], "cuda:0")
    assert onnx_providers(gpu, "cuda:2") == ([(CUDA_PROVIDER, {"device_id": 2}), "CPUExecutionProvider"], "cuda:2")
    assert onnx_providers(gpu, "cpu") == (["CPUExecutionProvider"], "cpu")
    with pytest.raises(WeightsError, match="no CUDAExecutionProvider"):
        onnx_providers(["CPUExecutionProvider"], "cuda")


def test_cpu_build_serves_on_the_cpu(tiny_onnx: Path) -> None:
    backend = OnnxBackend(tiny_onnx, SIZE, normalise=True)
    assert backend.device == "cpu"
    out = backend(np.ones((2, 3, SIZE, SIZE), dtype=np.float32))
    np.testing.assert_allclose(out, np.full((2, 3), 1 / np.sqrt(3), dtype=np.float32), rtol=1e-6)


def test_cuda_that_cannot_start_falls_back_loudly(tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    if CUDA_PROVIDER in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the fallback is tested with the CPU build")
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [CUDA_PROVIDER, "CPUExecutionProvider"])
    with caplog.at_level(logging.WARNING, logger="medsearch_model_server.backends"):
        backend = OnnxBackend(tiny_onnx, SIZE, normalise=True)
    assert backend.device == "cpu"
    assert any("could not start" in r.getMessage() and "serving on the CPU" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING), caplog.text
    assert backend(np.ones((1, 3, SIZE, SIZE), dtype=np.float32)).shape == (1, 3)
    with pytest.raises(WeightsError, match="could not start"):
        OnnxBackend(tiny_onnx, SIZE, normalise=True, device="cuda:0")
