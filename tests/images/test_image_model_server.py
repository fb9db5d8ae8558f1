"""The CPU model-server image, run as the operator's InferenceService runs it: the container and args from
``build_inference_service`` (``--weights /mnt/models``, the spec's input size and batcher), non-root, no
capabilities, and the model in /mnt/models where KServe's storage initializer would put the ``storageUri``
contents. The model is an ONNX export made on this machine (seeded random weights: none can be downloaded here).

The image holds no PyTorch; v2 ``infer`` of a DICOM file returns the 1024-d unit vector that the in-process ONNX
embedder computes for the same file (≤ 1e-5). The CUDA variant (``VARIANT=cuda``: PyPI's CUDA torch wheels, GBs)
is not built here: it cannot run without a GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from medsearch_operator import children as ch
from medsearch_operator.settings import OperatorSettings
from pydicom.data import get_testdata_file
from test_operator import wait_for

from conftest import docker
from medsearch.contracts.spec import parse_spec
from medsearch.embedding_client import EmbeddingClient
from medsearch.localstack.procs import free_port, http_ready

SIZE = 64


def _set_arg(args: list[str], flag: str, value: str) -> None:
    args[args.index(flag) + 1] = value


def test_cpu_model_server_image_serves_the_onnx_model_like_in_process(
        built_images: Any, containers: Any, tmp_path: Path) -> None:
    from medsearch_model_server.config import ServerConfig
    from medsearch_model_server.embedder import export_onnx, load_embedder

    ref = built_images("model-server")
    # No PyTorch in the CPU image (PyPI's Linux torch wheels are CUDA builds of several GB).
    probe = docker("run", "--rm", "--network=none", "--entrypoint", "python", ref, "-c",
                   "import importlib.util as u; print(u.find_spec('torch'), u.find_spec('torchvision'), "
                   "u.find_spec('onnxruntime') is not None)", check=False)
    assert probe.stdout.split() == ["None", "None", "True"], probe.stdout + probe.stderr

    models = tmp_path / "models"
    models.mkdir()
    cache = tmp_path / "cache"
    onnx = export_onnx(ServerConfig(weights="random", input_size=SIZE, seed=0, cache_dir=cache),
                       models / "model.onnx")
    models.chmod(0o755)
    onnx.chmod(0o644)
    ct_bytes = Path(str(get_testdata_file("CT_small.dcm"))).read_bytes()
    expected = load_embedder(ServerConfig(weights=str(onnx), backend="onnx", input_size=SIZE,
                                          cache_dir=cache)).embed_bytes([ct_bytes])[0]

    spec = parse_spec({"embedding": {"inputSize": SIZE}, "predictor": {"storageUri": "s3://models/densenet121"}})
    settings = OperatorSettings(operator_predictor_image=ref)
    isvc = ch.build_inference_service(ch.Owner(name="img", namespace="t", uid="u"), spec, settings)
    (container,) = isvc["spec"]["predictor"]["containers"]
    assert container["image"] == ref and "--weights" in container["args"]
    assert container["args"][container["args"].index("--weights") + 1] == ch.MODEL_MOUNT
    # Host networking: free ports instead of 8080/8081; KServe's storage initializer volume → the export's folder.
    http_port, grpc_port = free_port(), free_port()
    _set_arg(container["args"], "--http-port", str(http_port))
    _set_arg(container["args"], "--grpc-port", str(grpc_port))
    container["volumeMounts"] = [{"name": "kserve-provision-location", "mountPath": ch.MODEL_MOUNT,
                                  "readOnly": True}]
    pod = {"containers": [container], "volumes": [{"name": "kserve-provision-location", "hostPath": {}}]}
    name = containers.start(ref, pod, volumes={"kserve-provision-location": models})

    url = f"http://127.0.0.1:{http_port}"
    wait_for(lambda: http_ready(f"{url}/v2/health/ready") or not containers.running(name), timeout=180,
             what="model server ready")
    assert containers.running(name), containers.logs(name)
    with EmbeddingClient(url) as client:
        params = client.metadata()["parameters"]
        assert params["backend"] == "onnx" and params["input_size"] == SIZE, params
        served = client.embed_image_bytes(ct_bytes)
    assert served.shape == (1024,)
    assert abs(float(np.linalg.norm(served)) - 1.0) <= 1e-5
    assert float(np.abs(served - expected).max()) <= 1e-5
    state = containers.inspect(name)
    assert state["Config"]["User"] == "10001:10001" and state["HostConfig"]["CapDrop"] == ["ALL"]

