"""Embedding throughput and latency benchmark; prints one JSON document on stdout (progress on stderr).

1. In process, per backend (torch CPU channels_last, onnxruntime CPU, torch CUDA fp16 when a GPU is visible):
   images/s at batch sizes 1, 8, 32 on preprocessed ``[N, 3, S, S]`` tensors.
2. Through the real model server (``python -m medsearch_model_server`` on loopback), ``--concurrency`` clients
   each sending one image per request (``pixel_values`` over the OIP binary extension, as the workers do):
   * the seed-style baseline: torch eager fp32 (NCHW), ``--max-batch-size 1`` (no batching);
   * ours: onnxruntime (CPU) or torch CUDA with dynamic batching;
   images/s, p50/p99 latency, mean batch size, and the ratio ours / baseline measured in the same run.
3. On CUDA: the throughput ceiling (synthetic batch already on the GPU, fp16, no copies) and the fraction of it
   reached end to end.

Defaults finish in a few minutes on 2 CPU cores; ``--n``/``--requests`` make bigger runs.
    python bench/embed.py [--n 32] [--requests 64] [--concurrency 8] [--size 224]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from medsearch_dev.localstack.procs import free_port, http_ready, running

from medsearch.embedding_client import EmbeddingClient
from medsearch.imaging import decode_image_bytes, preprocess


def progress(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def sample_images(size: int, count: int) -> np.ndarray:
    """Real DICOM test images (pydicom's and pydicom-data's), preprocessed, repeated to ``count``."""
    from pydicom.data import get_testdata_file

    names = ["RG1_UNCR.dcm", "CT_small.dcm", "MR_small.dcm", "US1_UNCR.dcm", "JPEG2000.dcm"]
    tensors = []
    for name in names:
        path = get_testdata_file(name)
        if path is None:
            continue
        try:
            tensors.append(preprocess(decode_image_bytes(Path(str(path)).read_bytes(), source=name), size))
        except ValueError as err:
            progress(f"skipping {name}: {err}")
    if not tensors:
        tensors = [np.random.default_rng(0).standard_normal((3, size, size)).astype(np.float32)]
    reps = -(-count // len(tensors))
    return np.stack((tensors * reps)[:count]).astype(np.float32)


def throughput(fn: Any, images: np.ndarray, batch: int, n: int) -> float:
    x = images[:batch] if len(images) >= batch else np.resize(images, (batch, *images.shape[1:]))
    fn(x)  # warm-up (cuDNN autotuning, allocator)
    rounds = max(1, -(-n // batch))
    t0 = time.perf_counter()
    for _ in range(rounds):
        fn(x)
    return rounds * batch / (time.perf_counter() - t0)


def in_process(args: argparse.Namespace, images: np.ndarray, cache: Path) -> dict[str, Any]:
    from medsearch_model_server.backends import cuda_available
    from medsearch_model_server.embedder import load_embedder

    from medsearch.contracts.settings import ModelServerSettings

    variants: list[tuple[str, dict[str, Any]]] = [
        ("torch_cpu", {"backend": "torch", "device": "cpu"}),
        ("onnx_cpu", {"backend": "onnx"}),
    ]
    if cuda_available():
        variants.append(("torch_cuda_fp16", {"backend": "torch", "device": "cuda", "precision": "fp16"}))
    results: dict[str, Any] = {}
    for name, kw in variants:
        if name not in args.backends:
            continue
        cfg = ModelServerSettings(weights=args.weights, input_size=args.size, cache_dir=cache, **kw)
        t0 = time.perf_counter()
        embedder = load_embedder(cfg)
        load_s = time.perf_counter() - t0
        sizes = list(args.batch_sizes)
        if name.startswith("torch_cuda"):
            sizes = sorted({*sizes, 128, 256})
        per_batch: dict[str, float] = {}
        for bs in sizes:
            n = args.n * (8 if name.startswith("torch_cuda") else 1)
            per_batch[str(bs)] = round(throughput(embedder.backend, images, bs, max(n, bs)), 2)
            progress(f"{name} batch {bs}: {per_batch[str(bs)]} images/s")
        results[name] = {"images_per_s": per_batch, "load_s": round(load_s, 1)}
        if name.startswith("torch_cuda"):
            results[name]["ceiling"] = gpu_ceiling(embedder, args.size)
            best = max(per_batch.values())
            results[name]["fraction_of_ceiling"] = round(best / results[name]["ceiling"]["images_per_s"], 3)
    return results


def gpu_ceiling(embedder: Any, size: int, batch: int = 256, rounds: int = 20) -> dict[str, Any]:
    """The model alone on the GPU: a synthetic fp16 channels_last batch already on the device, no copies."""
    import torch

    module = embedder.backend._module  # the backend's own module (same weights, layout and device)
    device = embedder.backend._dev
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast(device_type="cuda", dtype=torch.float16):
        for _ in range(3):
            module(x)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(rounds):
            module(x)
        torch.cuda.synchronize()
    ips = rounds * batch / (time.perf_counter() - t0)
    progress(f"GPU ceiling (batch {batch}, fp16, on-device input): {ips:.0f} images/s")
    return {"images_per_s": round(ips, 1), "batch": batch, "device": torch.cuda.get_device_name(device)}


def load_test(url: str, images: np.ndarray, requests: int, concurrency: int) -> dict[str, Any]:
    """``concurrency`` clients, one image per request; wall-clock images/s and per-request latency."""

    def one(i: int) -> float:
        client = clients[i % concurrency]
        t0 = time.perf_counter()
        client.embed_tensors(images[i % len(images)][None])
        return time.perf_counter() - t0

    clients = [EmbeddingClient(url, timeout=600) for _ in range(concurrency)]
    try:
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(concurrency)))  # warm-up: connections, first batches
            t0 = time.perf_counter()
            latencies = sorted(pool.map(one, range(requests)))
            wall = time.perf_counter() - t0
    finally:
        for c in clients:
            c.close()
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "images_per_s": round(requests / wall, 2),
        "p50_ms": round(q[49] * 1000, 1),
        "p99_ms": round(q[98] * 1000, 1),
        "requests": requests,
        "concurrency": concurrency,
    }


def batch_stats(url: str) -> tuple[float, float]:
    import httpx

    count = total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("medsearch_embedding_batch_size_count"):
            count = float(line.rsplit(" ", 1)[1])
        elif line.startswith("medsearch_embedding_batch_size_sum"):
            total = float(line.rsplit(" ", 1)[1])
    return count, total


def through_server(
    args: argparse.Namespace, images: np.ndarray, cache: Path, logs: Path, name: str, flags: list[str]
) -> dict[str, Any]:
    http_port, grpc_port = free_port(), free_port()
    url = f"http://127.0.0.1:{http_port}"
    cmd = [
        sys.executable, "-m", "medsearch_model_server", "--weights", args.weights, "--input-size", str(args.size),
        "--host", "127.0.0.1", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
        "--cache-dir", str(cache), *flags,
    ]  # fmt: skip
    progress(f"server {name}: {' '.join(flags)}")
    with running(cmd, ready=lambda: http_ready(f"{url}/v2/health/ready"), what=f"model server ({name})",
                 log_path=logs / f"{name}.log", timeout=600):  # fmt: skip
        c0, s0 = batch_stats(url)
        result = load_test(url, images, args.requests, args.concurrency)
        c1, s1 = batch_stats(url)
    result["mean_batch_size"] = round((s1 - s0) / max(c1 - c0, 1.0), 2)
    result["flags"] = " ".join(flags)
    progress(f"server {name}: {result}")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=32, help="images per in-process measurement point (x8 on CUDA)")
    p.add_argument("--requests", type=int, default=64, help="requests per server run")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent clients in the server runs")
    p.add_argument("--size", type=int, default=224, help="input size")
    p.add_argument("--batch-sizes", type=lambda s: [int(v) for v in s.split(",")], default=[1, 8, 32])
    p.add_argument("--weights", default="random", help="weights for every run (random: no download needed)")
    p.add_argument("--backends", default="torch_cpu,onnx_cpu,torch_cuda_fp16", help="in-process variants to run")
    p.add_argument("--max-batch-size", type=int, default=32, help="dynamic batching limit of the batched server")
    p.add_argument("--max-latency-ms", type=float, default=5.0, help="dynamic batching wait of the batched server")
    p.add_argument("--cache-dir", type=Path, default=None, help="ONNX export cache (default: a temp dir)")
    p.add_argument("--skip-server", action="store_true", help="in-process figures only")
    args = p.parse_args()

    import onnxruntime
    import torch
    from medsearch_model_server.backends import cuda_available

    tmp = Path(tempfile.mkdtemp(prefix="medsearch-bench-"))
    cache = args.cache_dir or tmp / "cache"
    images = sample_images(args.size, max(64, max(args.batch_sizes)))
    report: dict[str, Any] = {
        "benchmark": "densenet121-embedding",
        "input_size": args.size,
        "weights": args.weights,
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "cuda": torch.cuda.get_device_name(0) if cuda_available() else None,
        },
    }
    report["in_process"] = in_process(args, images, cache)
    if not args.skip_server:
        baseline = through_server(
            args, images, cache, tmp, "baseline",
            ["--backend", "torch", "--device", "cpu", "--no-channels-last", "--max-batch-size", "1",
             "--max-latency-ms", "0"],
        )  # fmt: skip
        batching = ["--max-batch-size", str(args.max_batch_size), "--max-latency-ms", str(args.max_latency_ms)]
        servers: dict[str, Any] = {"seed_baseline_torch_eager_unbatched": baseline}
        servers["onnx_cpu_batched"] = through_server(args, images, cache, tmp, "onnx", ["--backend", "onnx", *batching])
        report["server"] = servers
        report["ratio_vs_baseline"] = {
            "onnx_cpu_batched": round(servers["onnx_cpu_batched"]["images_per_s"] / baseline["images_per_s"], 2),
        }
        if cuda_available():
            servers["torch_cuda_fp16_batched"] = through_server(
                args, images, cache, tmp, "cuda", ["--backend", "torch", "--precision", "fp16", *batching]
            )
            report["ratio_vs_baseline"]["torch_cuda_fp16_batched"] = round(
                servers["torch_cuda_fp16_batched"]["images_per_s"] / baseline["images_per_s"], 2
            )
        report["target"] = {"onnx_cpu_batched_ratio": 1.8}
        report["meets_target"] = report["ratio_vs_baseline"]["onnx_cpu_batched"] >= 1.8
    report["machine"]["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
