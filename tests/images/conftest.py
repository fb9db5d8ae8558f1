"""The images tier: the four images built from the Dockerfile's targets (scripts/build-images.sh, `make images`)
and run the way the chart or the operator runs them (tests/images/podrun.py turns the rendered pod spec into
`docker run` flags), against the services the other tiers start as local processes.

Where no Docker engine can be had (scripts/docker-engine.sh exits 3: not root, no apt, no dockerd) every test
of the tier skips with that reason; a build failure fails the tests with the build helper's message.

Fixtures: ``docker_host`` (session), ``built_images`` (session: image name → reference), ``run_container``
(start a container from a pod spec; stopped and its log attached to the failure at the end), and the k8s tier's
``kube``/``cluster``/``api``/``ns``/``operator_kubeconfig`` (re-exported from tests/k8s).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
for extra in (HERE, REPO / "tests" / "render", REPO / "tests" / "k8s"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from podrun import run_args  # noqa: E402

# The k8s tier's API server and operator fixtures (its conftest is not in this directory's scope).
_spec = importlib.util.spec_from_file_location("medsearch_k8s_conftest", REPO / "tests" / "k8s" / "conftest.py")
assert _spec is not None and _spec.loader is not None
_k8s = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _k8s
_spec.loader.exec_module(_k8s)
kube = _k8s.kube
k8s_binaries = _k8s.k8s_binaries
kubectl_binary = _k8s.kubectl_binary
helm_binary = _k8s.helm_binary
from test_operator import api, cluster, ns, operator_kubeconfig  # noqa: E402, F401

# What the tier builds: the images as shipped (no image carries PyTorch), except that the model server is built
# without the baked ImageNet export (its weights cannot be downloaded here, and the export needs PyTorch in a
# throwaway stage; the test mounts an export as KServe would), see docs/install.md. MEDSEARCH_IMAGES_BUILD_ARGS
# replaces these arguments (e.g. "--build-arg BAKE_IMAGENET_WEIGHTS=false --build-arg WORKER_EXTRAS=").
TIER_BUILD_ARGS = os.environ.get("MEDSEARCH_IMAGES_BUILD_ARGS", "--build-arg BAKE_IMAGENET_WEIGHTS=false")
TIER_TAG = os.environ.get("MEDSEARCH_IMAGES_TAG", "images-tier")
BUILD_TIMEOUT = 2400


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.parent == HERE and item.path.name.startswith("test_image_"):
            item.add_marker(pytest.mark.images)
            # the first test to need an image builds it (cold: minutes), inside the test's time
            item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT))


@pytest.fixture(scope="session")
def docker_host() -> str:
    proc = subprocess.run(["bash", str(REPO / "scripts" / "docker-engine.sh")], capture_output=True, text=True,
                          timeout=900)
    if proc.returncode == 3:
        pytest.skip(f"no Docker engine here: {proc.stderr.strip()}")
    assert proc.returncode == 0, f"scripts/docker-engine.sh failed:\n{proc.stderr[-3000:]}"
    host = proc.stdout.strip()
    os.environ["DOCKER_HOST"] = host
    return host


def build(images: list[str], *, context: Path = REPO, extra_env: dict[str, str] | None = None,
          timeout: float = BUILD_TIMEOUT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IMAGE_TAG": TIER_TAG, "DOCKER_BUILD_ARGS": TIER_BUILD_ARGS, **(extra_env or {})}
    return subprocess.run(["bash", str(REPO / "scripts" / "build-images.sh"), "--context", str(context), *images],
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="session")
def built_images(docker_host: str) -> Callable[[str], str]:
    """``built_images("operator")`` → the image reference, built (incrementally) on first use."""
    done: dict[str, str] = {}

    def get(image: str) -> str:
        if image not in done:
            proc = build([image])
            if proc.returncode == 3:
                pytest.skip(f"cannot build images here: {proc.stderr.strip()[-500:]}")
            assert proc.returncode == 0, f"building {image} failed:\n{proc.stderr[-4000:]}"
            done[image] = proc.stdout.strip().splitlines()[-1]
            print(proc.stderr.strip().splitlines()[-1])
        return done[image]

    return get


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])}… failed: {proc.stderr.strip()[-2000:]}")
    return proc


def image_user(ref: str) -> str:
    return str(json.loads(docker("image", "inspect", ref).stdout)[0]["Config"]["User"])


class Containers:
    def __init__(self) -> None:
        self.names: list[str] = []

    def start(self, ref: str, pod_spec: dict[str, Any], **kw: Any) -> str:
        name = f"medsearch-test-{uuid.uuid4().hex[:10]}"
        args = run_args(pod_spec, image_user=image_user(ref), name=name, **kw)
        args = [ref if a == "{image}" else a for a in args]
        # --rm is left out so that a container that exited can still show its log
        docker("run", "-d", *[a for a in args if a != "--rm"])
        self.names.append(name)
        return name

    def logs(self, name: str) -> str:
        proc = docker("logs", "--tail", "200", name, check=False)
        return proc.stdout + proc.stderr

    def running(self, name: str) -> bool:
        proc = docker("inspect", "--format", "{{.State.Running}}", name, check=False)
        return proc.stdout.strip() == "true"

    def inspect(self, name: str) -> dict[str, Any]:
        return dict(json.loads(docker("inspect", name).stdout)[0])

    def stop_all(self) -> None:
        for name in self.names:
            docker("rm", "-f", name, check=False, timeout=60)


@pytest.fixture()
def containers(docker_host: str, request: pytest.FixtureRequest) -> Iterator[Containers]:
    cs = Containers()
    try:
        yield cs
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            for name in cs.names:
                print(f"---- log of {name}\n{cs.logs(name)}")
        cs.stop_all()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    if rep.when == "call":
        item.rep_call = rep  # type: ignore[attr-defined]


def start_model_server(containers: Containers, ref: str, folder: Path, size: int) -> str:
    """The model-server image as the operator's InferenceService runs it (``build_inference_service``: ``--weights
    /mnt/models``), serving an ONNX export of seeded random weights made here at ``size`` (none can be downloaded)
    from ``folder/models`` where KServe's storage initializer would put the ``storageUri`` contents. Host
    networking: free ports instead of 8080/8081. Returns the base URL once ``/v2/health/ready`` answers."""
    from medsearch_dev.localstack.procs import free_port, http_ready
    from medsearch_model_server.embedder import export_onnx
    from medsearch_operator import children as ch
    from medsearch_operator.settings import OperatorSettings
    from test_operator import wait_for

    from medsearch.contracts.settings import ModelServerSettings
    from medsearch.contracts.spec import parse_spec

    models = folder / "models"
    models.mkdir(parents=True, exist_ok=True)
    onnx = models / "model.onnx"
    if not onnx.exists():
        export_onnx(ModelServerSettings(weights="random", input_size=size, seed=0, cache_dir=folder / "cache"), onnx)
    for p in (folder, models):
        p.chmod(0o755)
    onnx.chmod(0o644)
    spec = parse_spec({"embedding": {"inputSize": size}, "predictor": {"storageUri": "s3://models/densenet121"}})
    isvc = ch.build_inference_service(ch.Owner(name="img", namespace="t", uid="u"), spec,
                                      OperatorSettings(operator_predictor_image=ref))
    (container,) = isvc["spec"]["predictor"]["containers"]
    assert container["image"] == ref
    assert container["args"][container["args"].index("--weights") + 1] == ch.MODEL_MOUNT
    http_port, grpc_port = free_port(), free_port()
    args = container["args"]
    args[args.index("--http-port") + 1] = str(http_port)
    args[args.index("--grpc-port") + 1] = str(grpc_port)
    container["volumeMounts"] = [{"name": "kserve-provision-location", "mountPath": ch.MODEL_MOUNT,
                                  "readOnly": True}]
    pod = {"containers": [container], "volumes": [{"name": "kserve-provision-location", "hostPath": {}}]}
    name = containers.start(ref, pod, volumes={"kserve-provision-location": models})
    url = f"http://127.0.0.1:{http_port}"
    wait_for(lambda: http_ready(f"{url}/v2/health/ready") or not containers.running(name), timeout=180,
             what="model server ready")
    assert containers.running(name), containers.logs(name)
    return url
