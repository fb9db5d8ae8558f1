"""End-to-end DICOM ingest throughput: publish N images, run the DICOM worker until all are indexed.

Prints JSON: images/s from the first publish to the last row visible in Milvus, and the worker's time split by
stage (fetch, decode, metadata, thumbnail, preprocess, embed, write). Sample files are replicated with fresh
SOP/Series UIDs so every image is a new row. Services are started here (Tansu, milvus-lite, the model server
with ``--weights random``) unless their addresses are given.

    python bench/ingest.py                      # small default run
    python bench/ingest.py --n 200 --sample RG1_J2KI.dcm --batch-size 16
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _replicas(samples: list[str], n: int) -> Iterator[tuple[str, bytes]]:
    import io

    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    datasets = []
    for name in samples:
        path = get_testdata_file(name)
        if path is None:
            raise SystemExit(f"pydicom test file {name!r} not found (pydicom-data installed?)")
        datasets.append((name, pydicom.dcmread(path)))
    run = str(time.time_ns())
    for i in range(n):
        name, ds = datasets[i % len(datasets)]
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[run, name, str(i)])
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=[run, name, "series", str(i // 8)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        yield f"{name}#{i}", buf.getvalue()


@contextlib.contextmanager
def _model_server(url: str | None, input_size: int, backend: str, log_dir: Path) -> Iterator[str]:
    from medsearch_dev.localstack import procs

    if url:
        yield url
        return
    http, grpc = procs.free_port(), procs.free_port()
    cmd = [
        sys.executable, "-m", "medsearch_model_server", "--weights", "random", "--backend", backend,
        "--input-size", str(input_size), "--host", "127.0.0.1", "--http-port", str(http), "--grpc-port", str(grpc),
        "--cache-dir", str(log_dir / "model-cache"),
    ]  # fmt: skip
    base = f"http://127.0.0.1:{http}"
    with procs.running(
        cmd,
        ready=lambda: procs.http_ready(f"{base}/v2/models/densenet121/ready"),
        what="model server",
        log_path=log_dir / "model-server.log",
        timeout=300,
    ):
        yield base


@contextlib.contextmanager
def _services(args: argparse.Namespace, tmp: Path) -> Iterator[tuple[str, str, str]]:
    from medsearch_dev.localstack import procs

    with contextlib.ExitStack() as stack:
        bootstrap = args.bootstrap or stack.enter_context(procs.tansu(tmp))
        milvus = args.milvus_uri or stack.enter_context(procs.milvus_lite(tmp / "milvus", tmp))
        model = stack.enter_context(_model_server(args.model_server_url, args.input_size, args.backend, tmp))
        yield bootstrap, milvus, model


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=48, help="images to ingest")
    p.add_argument(
        "--sample",
        action="append",
        default=None,
        help="pydicom/pydicom-data test file to replicate (repeatable; default: the chest CR RG1_J2KI.dcm, "
        "CT_small.dcm and MR_small_RLE.dcm)",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--input-size", type=int, default=224, help="model input size (for the model server started here)")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"])
    p.add_argument("--bootstrap", default=None, help="use this Kafka broker instead of starting Tansu")
    p.add_argument("--milvus-uri", default=None, help="use this Milvus instead of starting milvus-lite")
    p.add_argument("--model-server-url", default=None, help="use this model server instead of starting one")
    p.add_argument("--timeout", type=float, default=900.0)
    args = p.parse_args(argv)
    samples = args.sample or ["RG1_J2KI.dcm", "CT_small.dcm", "MR_small_RLE.dcm"]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    from medsearch_workers.consumer import STAGES, WorkerMetrics
    from medsearch_workers.dicom_worker import StageTimes, run

    from medsearch.contracts.naming import names_for
    from medsearch.contracts.settings import WorkerSettings
    from medsearch.contracts.spec import parse_spec
    from medsearch.producer import Publisher
    from medsearch.provision import count_rows, ensure_collections, ensure_topics, kafka_admin, milvus_client

    index = f"bench{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="medsearch-bench-") as tmp_s:
        tmp = Path(tmp_s)
        store_url = f"file://{tmp / 'objects'}"
        payloads = list(_replicas(samples, args.n))
        input_bytes = sum(len(d) for _, d in payloads)
        with _services(args, tmp) as (bootstrap, milvus_uri, model_url):
            spec = parse_spec({"workers": {"dicom": {"batchSize": args.batch_size}}})
            admin = kafka_admin(bootstrap)
            ensure_topics(admin, index, spec)
            admin.close()
            client = milvus_client(milvus_uri)
            ensure_collections(client, index, spec)

            settings = WorkerSettings(
                index=index,
                kafka_bootstrap=bootstrap,
                milvus_uri=milvus_uri,
                model_server_url=model_url,
                object_store_url=store_url,
                worker_max_wait_ms=100,
                worker_retry_max_seconds=2.0,
            )
            times = StageTimes()
            metrics = WorkerMetrics("bench")
            stop = threading.Event()
            worker = threading.Thread(
                target=run,
                kwargs={
                    "settings": settings,
                    "stop": stop,
                    "spec": spec,
                    "times": times,
                    "metrics": metrics,
                    "consumer_options": {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000},
                },
                daemon=True,
            )
            worker.start()
            # Warm-up (group join, first model call) with one extra image before the clock starts.
            collection = names_for(index).images_collection
            publisher = Publisher(bootstrap=bootstrap, object_store_url=store_url, index=index, source="bench")
            warm_name, warm_data = next(_replicas(samples[:1], 1))
            publisher.publish_dicom(warm_data, filename=warm_name)
            publisher.flush()
            deadline = time.monotonic() + 300
            while count_rows(client, collection) < 1 and time.monotonic() < deadline:
                time.sleep(0.2)
            for k in times.seconds:
                times.seconds[k] = 0.0

            t0 = time.perf_counter()
            for name, data in payloads:
                publisher.publish_dicom(data, filename=name)
            publisher.close()
            publish_s = time.perf_counter() - t0
            done = 0
            while time.perf_counter() - t0 < args.timeout:
                done = count_rows(client, collection) - 1
                if done >= args.n:
                    break
                time.sleep(0.2)
            wall = time.perf_counter() - t0
            stop.set()
            worker.join(30)
            client.close()
            model_meta: dict[str, Any] = {}
            with contextlib.suppress(Exception):
                import httpx

                model_meta = httpx.get(f"{model_url}/v2/models/densenet121", timeout=5).json()

    stage = {k: round(v, 3) for k, v in times.seconds.items()}
    busy = sum(times.seconds.values()) or 1.0
    result = {
        "benchmark": "ingest",
        "n": args.n,
        "indexed": done,
        "samples": samples,
        "input_mb": round(input_bytes / 1e6, 1),
        "batch_size": args.batch_size,
        "input_size": args.input_size,
        "wall_s": round(wall, 2),
        "images_per_s": round(done / wall, 2) if wall > 0 else None,
        "publish_s": round(publish_s, 2),
        "stage_seconds": stage,
        "stage_share": {k: round(v / busy, 3) for k, v in times.seconds.items()},
        "dead_lettered": sum(metrics.value("medsearch_worker_dead_lettered_total", stage=st) for st in STAGES),
        "model": {k: model_meta.get(k) for k in ("name", "versions", "platform") if k in model_meta},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    if done < args.n:
        raise SystemExit(f"only {done}/{args.n} images indexed within {args.timeout:.0f}s")


if __name__ == "__main__":
    main()
