"""The real model server (python -m medsearch_model_server) in a subprocess: protocols, clients, errors,
metrics, readiness."""

from __future__ import annotations

import base64
import concurrent.futures
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from medsearch_dev.localstack.procs import free_port, http_ready, running, wait_until
from medsearch_model_server.embedder import Embedder
from ms_helpers import SIZE

from medsearch.embedding_client import EmbeddingClient, EmbeddingRejected, EmbeddingUnavailable

pytestmark = pytest.mark.integration


@dataclass
class Server:
    url: str
    grpc: str
    log: Path


def server_cmd(weights: str, http_port: int, grpc_port: int, cache: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "medsearch_model_server",
        "--weights",
        weights,
        "--backend",
        "onnx",
        "--input-size",
        str(SIZE),
        "--host",
        "127.0.0.1",
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        "--cache-dir",
        str(cache),
        "--max-latency-ms",
        "20",
        "--threads",
        "2",
    ]


def grpc_infer(target: str, name: str, datatype: str, array: np.ndarray, *, check_ready: bool = True) -> np.ndarray:
    """One ModelInfer call with the OIP protobufs (KServe ships them; tritonclient.grpc registers the same proto
    names and cannot be imported in a process that has loaded KServe)."""
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    if datatype == "BYTES":
        raw = b"".join(len(b).to_bytes(4, "little") + b for b in array.reshape(-1))
    else:
        raw = np.ascontiguousarray(array).tobytes()
    request = pb.ModelInferRequest(
        model_name="densenet121",
        inputs=[pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=list(array.shape))],
        raw_input_contents=[raw],
    )
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerReady(pb.ServerReadyRequest()).ready is check_ready
        response = stub.ModelInfer(request, timeout=60)
    out = response.outputs[0]
    assert out.name == "embedding" and out.datatype == "FP32"
    return np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(list(out.shape))


@pytest.fixture(scope="module")
def server(onnx_embedder: Embedder, model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # onnx_embedder has exported the ONNX file into model_cache already: the server reuses it.
    http_port, grpc_port = free_port(), free_port()
    url = f"http://127.0.0.1:{http_port}"
    log = tmp_path_factory.mktemp("server") / "model-server.log"
    with running(
        server_cmd("random", http_port, grpc_port, model_cache),
        ready=lambda: http_ready(f"{url}/v2/health/ready"),
        what="model server",
        log_path=log,
        timeout=120,
    ):
        yield Server(url, f"127.0.0.1:{grpc_port}", log)


@pytest.fixture()
def client(server: Server) -> Iterator[EmbeddingClient]:
    with EmbeddingClient(server.url) as c:
        yield c


def test_metadata_shows_random_weights(client: EmbeddingClient, server: Server) -> None:
    assert client.ready()
    meta = client.metadata()
    p = meta["parameters"]
    assert p["weights_kind"] == "random" and p["random_weights"] is True and p["weights_version"] == "random-seed0"
    assert p["input_size"] == SIZE and p["backend"] == "onnx" and meta["versions"] == ["random-seed0"]
    assert "WARNING: serving RANDOM DenseNet121 weights" in server.log.read_text()


def test_v1_v2_grpc_and_official_clients_agree(
    client: EmbeddingClient, server: Server, onnx_embedder: Embedder, ct_bytes: bytes
) -> None:
    import tritonclient.http as thttp

    expected = onnx_embedder.embed_bytes([ct_bytes])[0]
    b64 = base64.b64encode(ct_bytes).decode()
    got: dict[str, np.ndarray] = {"client": client.embed_image_bytes(ct_bytes)}
    r = httpx.post(f"{server.url}/v1/models/densenet121:predict", json={"instances": [{"image": {"b64": b64}}]})
    assert r.status_code == 200, r.text
    got["v1"] = np.asarray(r.json()["predictions"][0], np.float32)
    r = httpx.post(
        f"{server.url}/v2/models/densenet121/infer",
        json={"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64]}]},
    )
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["name"] == "embedding" and out["shape"] == [1, 1024] and out["datatype"] == "FP32"
    got["v2-json"] = np.asarray(out["data"], np.float32)

    http_client = thttp.InferenceServerClient(server.url.removeprefix("http://"))
    assert http_client.is_model_ready("densenet121")
    assert http_client.get_model_metadata("densenet121")["outputs"][0]["name"] == "embedding"
    inp = thttp.InferInput("image", [1], "BYTES")
    inp.set_data_from_numpy(np.array([ct_bytes], dtype=object))  # binary tensor extension (the default)
    got["triton-http"] = http_client.infer("densenet121", [inp]).as_numpy("embedding")[0]

    got["grpc"] = grpc_infer(server.grpc, "image", "BYTES", np.array([ct_bytes], dtype=object))[0]
    px = onnx_embedder.pixels_from_bytes(ct_bytes)[None]
    got["grpc-pixels"] = grpc_infer(server.grpc, "pixel_values", "FP32", px)[0]
    for name, emb in got.items():
        assert emb.shape == (1024,), name
        assert np.abs(emb - expected).max() < 1e-5, name


def test_embed_tensors_batch(client: EmbeddingClient, onnx_embedder: Embedder) -> None:
    x = np.random.default_rng(3).standard_normal((5, 3, SIZE, SIZE)).astype(np.float32)
    emb = client.embed_tensors(x)
    assert emb.shape == (5, 1024)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert np.abs(emb - onnx_embedder.embed_pixels(x)).max() < 1e-5


def test_bad_inputs_get_4xx_and_the_server_keeps_serving(
    client: EmbeddingClient, server: Server, ct_bytes: bytes
) -> None:
    with pytest.raises(EmbeddingRejected, match="not an image"):
        client.embed_image_bytes(b"this is a text file, not an image")
    with pytest.raises(EmbeddingRejected, match=r"image\[0\]: (no pixel data|undecodable)"):
        client.embed_image_bytes(ct_bytes[: len(ct_bytes) // 2])
    with pytest.raises(EmbeddingRejected, match=rf"expected shape \[N, 3, {SIZE}, {SIZE}\], got \[2, 3, 32, 32\]"):
        client.embed_tensors(np.zeros((2, 3, 32, 32), np.float32))
    r = httpx.post(
        f"{server.url}/v2/models/densenet121/infer",
        json={"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}]},
    )
    assert r.status_code == 400 and "expected exactly one input" in r.json()["error"]
    r = httpx.post(f"{server.url}/v1/models/densenet121:predict", json={"instances": [{"pixel_values": [1, 2]}]})
    assert r.status_code == 400 and "expected shape [3" in r.json()["error"]
    r = httpx.post(f"{server.url}/v2/models/densenet121/infer", content=b"{broken")
    assert r.status_code == 400
    import grpc

    with pytest.raises(grpc.RpcError) as err:
        grpc_infer(server.grpc, "pixel_values", "FP32", np.zeros((1, 3, 8, 8), np.float32))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "expected shape" in err.value.details()
    # still serving
    assert client.ready()
    assert client.embed_image_bytes(ct_bytes).shape == (1024,)


def test_concurrent_requests_are_batched_and_metered(server: Server, onnx_embedder: Embedder) -> None:
    x = np.random.default_rng(4).standard_normal((24, 3, SIZE, SIZE)).astype(np.float32)

    def one(i: int) -> np.ndarray:
        with EmbeddingClient(server.url) as c:
            return c.embed_tensors(x[i : i + 1])[0]

    def counts() -> tuple[float, float]:
        text = httpx.get(f"{server.url}/metrics").text
        batches = re.search(r'^medsearch_embedding_batch_size_count\{model_name="densenet121"\} (\S+)$', text, re.M)
        images = re.search(r'^medsearch_embedding_batch_size_sum\{model_name="densenet121"\} (\S+)$', text, re.M)
        assert batches and images, "batch-size histogram missing from /metrics"
        assert "medsearch_embedding_request_seconds_bucket" in text
        return float(batches.group(1)), float(images.group(1))

    b0, i0 = counts()
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, range(24)))
    b1, i1 = counts()
    assert i1 - i0 == 24
    assert b1 - b0 < 24  # some requests shared a backend call
    expected = onnx_embedder.embed_pixels(x)
    assert max(float(np.abs(r - e).max()) for r, e in zip(results, expected, strict=True)) < 1e-5


def test_unloadable_weights_never_become_ready(tmp_path: Path, model_cache: Path) -> None:
    http_port, grpc_port = free_port(), free_port()
    url = f"http://127.0.0.1:{http_port}"
    missing = tmp_path / "no-such-model.pth"
    log = tmp_path / "server.log"

    def failed() -> bool:
        try:
            r = httpx.get(f"{url}/v2/models/densenet121", timeout=2)
        except httpx.HTTPError:
            return False
        return r.status_code == 200 and r.json()["parameters"]["state"] == "failed"

    with running(
        server_cmd(str(missing), http_port, grpc_port, model_cache),
        ready=failed,
        what="model server (bad weights)",
        log_path=log,
        timeout=120,
    ):
        meta = httpx.get(f"{url}/v2/models/densenet121").json()["parameters"]
        assert meta["ready"] is False and "no-such-model.pth: no such file" in meta["load_error"]
        assert httpx.get(f"{url}/v2/health/ready").status_code == 503
        assert httpx.get(f"{url}/v2/health/live").status_code == 200
        with EmbeddingClient(url) as c:
            assert not c.ready()
            with pytest.raises(EmbeddingUnavailable, match=r"503.*no such file"):
                c.embed_tensors(np.zeros((1, 3, SIZE, SIZE), np.float32))
        import grpc

        with pytest.raises(grpc.RpcError) as err:  # gRPC does not retry the load in the request either
            grpc_infer(
                f"127.0.0.1:{grpc_port}",
                "pixel_values",
                "FP32",
                np.zeros((1, 3, SIZE, SIZE), np.float32),
                check_ready=False,
            )
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "no such file" in err.value.details()
        wait_until(lambda: "is NOT ready: cannot load weights" in log.read_text(), timeout=10, what="log line")
        assert log.read_text().count("is NOT ready: cannot load weights") == 1


def test_cli_embed_in_process_and_via_server(
    server: Server,
    model_cache: Path,
    ct_bytes: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    onnx_embedder: Embedder,
) -> None:
    import json

    from typer.testing import CliRunner

    from medsearch.cli import app

    monkeypatch.setenv("MEDSEARCH_MODEL_CACHE_DIR", str(model_cache))
    dcm = tmp_path / "ct.dcm"
    dcm.write_bytes(ct_bytes)
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    expected = onnx_embedder.embed_bytes([ct_bytes])[0]
    runner = CliRunner()
    in_process = runner.invoke(
        app,
        ["embed", str(dcm), str(bad), "--json", "--weights", "random", "--backend", "onnx", "--input-size", str(SIZE)],
    )
    via_server = runner.invoke(app, ["embed", str(dcm), "--json", "--url", server.url])
    for result in (in_process, via_server):
        lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        assert len(lines) == 1 and lines[0]["file"] == str(dcm) and lines[0]["weights_kind"] == "random"
        assert np.abs(np.asarray(lines[0]["embedding"], np.float32) - expected).max() < 1e-5
    assert in_process.exit_code == 1 and "notes.txt: not an image" in in_process.stderr
    assert via_server.exit_code == 0


def test_exit_on_load_failure(tmp_path: Path, model_cache: Path) -> None:
    import subprocess

    cmd = [*server_cmd(str(tmp_path / "absent.onnx"), free_port(), free_port(), model_cache), "--exit-on-load-failure"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 3
    assert "absent.onnx: no such file" in done.stderr + done.stdout
