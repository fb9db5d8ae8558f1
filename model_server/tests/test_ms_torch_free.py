"""The CPU image's runtime: onnxruntime only. A server started where ``import torch`` fails serves an ONNX export
with the same embeddings as the torch network it was exported from."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from medsearch_model_server.backends import ensure_onnx
from medsearch_model_server.embedder import Embedder, export_onnx
from medsearch_model_server.weights import resolve_weights
from ms_helpers import SIZE, config
from test_ms_server import free_port, http_ready, running, server_cmd

from medsearch.embedding_client import EmbeddingClient

# Run the model server with torch and torchvision unimportable, as in an image that does not install them.
NO_TORCH = """
import importlib.abc, runpy, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, NoTorch())
runpy.run_module("medsearch_model_server", run_name="__main__", alter_sys=True)
"""


def without_torch(cmd: list[str]) -> list[str]:
    assert cmd[1:3] == ["-m", "medsearch_model_server"]
    return [sys.executable, "-c", NO_TORCH, *cmd[3:]]


def test_a_cached_export_is_served_without_building_the_torch_network(
    onnx_embedder: Embedder, model_cache: Path
) -> None:
    cfg = config(model_cache, backend="onnx")
    weights = resolve_weights(cfg)
    assert ensure_onnx(weights, cfg) == Path(onnx_embedder.backend.path)
    assert "module" not in vars(weights)  # the torch module was never built
    assert weights.module is not None and "module" in vars(weights)  # (and it is built when asked for)


@pytest.mark.integration
def test_server_without_torch_serves_the_onnx_export_like_torch(
    torch_embedder: Embedder, model_cache: Path, ct_bytes: bytes, tmp_path: Path
) -> None:
    exported = export_onnx(config(model_cache), tmp_path / "densenet121.onnx")
    http_port, grpc_port = free_port(), free_port()
    url = f"http://127.0.0.1:{http_port}"
    cmd = without_torch(server_cmd(str(exported), http_port, grpc_port, tmp_path / "cache"))
    with running(cmd, ready=lambda: http_ready(f"{url}/v2/health/ready"), what="model server without torch",
                 log_path=tmp_path / "server.log", timeout=120), EmbeddingClient(url) as client:
        params = client.metadata()["parameters"]
        assert params["backend"] == "onnx" and params["weights_kind"] == "onnx" and params["input_size"] == SIZE
        served = client.embed_image_bytes(ct_bytes)
    expected = torch_embedder.embed_bytes([ct_bytes])[0]
    assert served.shape == (1024,)
    assert np.abs(served - expected).max() <= 1e-5


@pytest.mark.integration
def test_without_torch_torch_only_work_fails_with_the_way_out(model_cache: Path, tmp_path: Path) -> None:
    cmd = without_torch(server_cmd("random", free_port(), free_port(), tmp_path / "cache"))
    done = subprocess.run([*cmd, "--export-onnx"], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    assert "--weights random needs PyTorch" in done.stderr and "medsearch-model-server[torch]" in done.stderr
