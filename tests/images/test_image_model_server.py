"""The CPU model-server image, run as the operator's InferenceService runs it: the container and args from
``build_inference_service`` (``--weights /mnt/models``, the spec's input size and batcher), non-root, no
capabilities, and the model in /mnt/models where KServe's storage initializer would put the ``storageUri``
contents. The model is an ONNX export made on this machine (seeded random weights: none can be downloaded here).

The image holds no PyTorch; v2 ``infer`` of a DICOM file returns the 1024-d unit vector that the in-process ONNX
embedder computes for the same file (≤ 1e-5). The CUDA variant (target ``model-server-cuda``: onnxruntime-gpu
and its CUDA wheels, GBs) is not built by the tier: ``make images-cuda`` builds it; it cannot run without a GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydicom.data import get_testdata_file

from conftest import docker, start_model_server
from medsearch.embedding_client import EmbeddingClient

SIZE = 64


def test_cpu_model_server_image_serves_the_onnx_model_like_in_process(
        built_images: Any, containers: Any, tmp_path: Path) -> None:
    from medsearch_model_server.embedder import load_embedder

    from medsearch.contracts.settings import ModelServerSettings

    ref = built_images("model-server")
    # No PyTorch in the CPU image (PyPI's Linux torch wheels are CUDA builds of several GB).
    probe = docker("run", "--rm", "--network=none", "--entrypoint", "python", ref, "-c",
                   "import importlib.util as u; print(u.find_spec('torch'), u.find_spec('torchvision'), "
                   "u.find_spec('onnxruntime') is not None)", check=False)
    assert probe.stdout.split() == ["None", "None", "True"], probe.stdout + probe.stderr

    url = start_model_server(containers, ref, tmp_path, SIZE)
    onnx = tmp_path / "models" / "model.onnx"
    ct_bytes = Path(str(get_testdata_file("CT_small.dcm"))).read_bytes()
    expected = load_embedder(ModelServerSettings(weights=str(onnx), backend="onnx", input_size=SIZE,
                                          cache_dir=tmp_path / "cache")).embed_bytes([ct_bytes])[0]
    with EmbeddingClient(url) as client:
        params = client.metadata()["parameters"]
        assert params["backend"] == "onnx" and params["input_size"] == SIZE, params
        served = client.embed_image_bytes(ct_bytes)
    assert served.shape == (1024,)
    assert abs(float(np.linalg.norm(served)) - 1.0) <= 1e-5
    assert float(np.abs(served - expected).max()) <= 1e-5
    (name,) = containers.names
    state = containers.inspect(name)
    assert state["Config"]["User"] == "10001:10001" and state["HostConfig"]["CapDrop"] == ["ALL"]

