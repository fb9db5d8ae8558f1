"""DICOM receiver benchmark: instances/s received from 4 simultaneous dcmtk ``storescu`` senders, and the time from
the end of an association (one study) to all of its instances being searchable (p50/p95).

Real processes: Tansu broker, ``medsearch receive``, dcmtk's storescu (install with scripts/ensure-dicom-peers.sh);
for the latency part also milvus-lite, the model server (``--weights random``) and the DICOM worker. Prints JSON.
Targets (issue 16): >= 100 small instances/s received with 4 senders; p95 <= 10 s per study.

    python bench/receive.py                         # 4 x 100 small instances, 10 studies of 4 for the latency
    python bench/receive.py --per-sender 250 --studies 20 --skip-latency
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# dcmtk leaves Nagle's algorithm on unless TCP_NODELAY=1: each C-STORE then waits for the peer's delayed ACK
# (~40 ms; measured 18 instead of ~100 instances/s per association). Modalities and PACS disable it; so do we here.
SENDER_ENV = {**os.environ, "TCP_NODELAY": "1"}


def _study(dest: Path, src: str, n: int, seed: str) -> tuple[list[Path], list[str]]:
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    path = get_testdata_file(src)
    if path is None:
        raise SystemExit(f"pydicom test file {src!r} not found")
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[seed, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[seed, "series"])
    dest.mkdir(parents=True, exist_ok=True)
    files, uids = [], []
    for i in range(n):
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[seed, str(i)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        files.append(dest / f"{i:05d}.dcm")
        uids.append(str(ds.SOPInstanceUID))
        ds.save_as(files[-1], enforce_file_format=True)
    return files, uids


def _storescu_cmd(storescu: str, cfg: Path, port: int, files: list[Path], aet: str) -> list[str]:
    from medsearch.dicomnet.dcmtk import PROFILE_NAME

    return [storescu, "-xf", str(cfg), PROFILE_NAME, "-aet", aet, "-aec", "MEDSEARCH", "127.0.0.1", str(port),
            *map(str, files)]


@contextlib.contextmanager
def _receiver(index: str, bootstrap: str, store_url: str, log: Path) -> Iterator[int]:
    from medsearch_dev.localstack import procs

    port = procs.free_port()
    cmd = [sys.executable, "-m", "medsearch.cli", "receive", "--index", index, "--port", str(port), "--bootstrap",
           bootstrap, "--store", store_url]
    with procs.running(cmd, ready=lambda: procs.port_in_use(port), what="medsearch receive", log_path=log,
                       timeout=60):
        yield port


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--senders", type=int, default=4)
    p.add_argument("--per-sender", type=int, default=100, help="instances per sender (one association each)")
    p.add_argument("--sample", default="CT_small.dcm", help="test file replicated (a small CT slice by default)")
    p.add_argument("--studies", type=int, default=10, help="studies sent one after another for the latency")
    p.add_argument("--per-study", type=int, default=4, help="instances per study for the latency")
    p.add_argument("--input-size", type=int, default=224, help="model input size (model server started here)")
    p.add_argument("--skip-latency", action="store_true", help="only the receive throughput")
    p.add_argument("--timeout", type=float, default=120.0, help="longest wait for one study to be searchable")
    args = p.parse_args(argv)

    from medsearch_dev.localstack import procs

    from medsearch.contracts.naming import names_for
    from medsearch.contracts.spec import MedicalSearchIndexSpec
    from medsearch.dicomnet.dcmtk import dcmtk_tool, storescu_profile
    from medsearch.provision import ensure_collections, ensure_topics, kafka_admin, milvus_client

    storescu = dcmtk_tool("storescu")
    if storescu is None:
        raise SystemExit("dcmtk's storescu is missing: run scripts/ensure-dicom-peers.sh")
    index = f"benchrx{os.getpid()}"
    result: dict[str, Any] = {"benchmark": "receive", "senders": args.senders, "per_sender": args.per_sender,
                              "sample": args.sample}
    with tempfile.TemporaryDirectory(prefix="medsearch-bench-rx-") as tmp_s, contextlib.ExitStack() as stack:
        tmp = Path(tmp_s)
        store_url = f"file://{tmp / 'objects'}"
        bootstrap = stack.enter_context(procs.tansu(tmp))
        spec = MedicalSearchIndexSpec()
        admin = kafka_admin(bootstrap)
        ensure_topics(admin, index, spec)
        admin.close()
        port = stack.enter_context(_receiver(index, bootstrap, store_url, tmp / "receiver.log"))

        # ---- throughput: N senders at once, each one association of per_sender instances (after a warm-up)
        batches = [_study(tmp / f"s{i}", args.sample, args.per_sender, f"{index}-{i}")[0] for i in range(args.senders)]
        cfg = tmp / "profile.cfg"
        cfg.write_text(storescu_profile(batches[0][:1]), encoding="utf-8")
        warm = subprocess.run(_storescu_cmd(storescu, cfg, port, batches[0][:1], "WARMUP"), capture_output=True,
                              env=SENDER_ENV)
        if warm.returncode != 0:
            raise SystemExit(f"storescu failed: {warm.stderr.decode(errors='replace')[-500:]}")
        t0 = time.perf_counter()
        senders = [subprocess.Popen(_storescu_cmd(storescu, cfg, port, files, f"SENDER{i}"), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, env=SENDER_ENV) for i, files in enumerate(batches)]
        failures = sum(1 for s in senders if s.wait() != 0)
        wall = time.perf_counter() - t0
        result["receive"] = {
            "instances": args.senders * args.per_sender,
            "instance_bytes": batches[0][0].stat().st_size,
            "wall_s": round(wall, 3),
            "instances_per_s": round(args.senders * args.per_sender / wall, 1),
            "failed_senders": failures,
            "sender_tcp_nodelay": True,
            "target_instances_per_s": 100,
        }

        # ---- association end -> searchable, one study at a time (own index: the worker starts from empty)
        if not args.skip_latency:
            from ingest import _model_server  # bench/ingest.py: the model server as the ingest benchmark runs it

            lindex = index + "l"
            ensure = kafka_admin(bootstrap)
            ensure_topics(ensure, lindex, spec)
            ensure.close()
            milvus = stack.enter_context(procs.milvus_lite(tmp / "milvus", tmp))
            model = stack.enter_context(_model_server(None, args.input_size, "auto", tmp))
            client = milvus_client(milvus)
            stack.callback(client.close)
            ensure_collections(client, lindex, spec)
            lport = stack.enter_context(_receiver(lindex, bootstrap, store_url, tmp / "receiver-latency.log"))
            env = {**os.environ, "MEDSEARCH_INDEX": lindex, "MEDSEARCH_KAFKA_BOOTSTRAP": bootstrap,
                   "MEDSEARCH_MILVUS_URI": milvus, "MEDSEARCH_MODEL_SERVER_URL": model,
                   "MEDSEARCH_OBJECT_STORE_URL": store_url, "MEDSEARCH_WORKER_MAX_WAIT_MS": "100",
                   "MEDSEARCH_WORKER_SESSION_TIMEOUT_MS": "6000", "MEDSEARCH_WORKER_HEARTBEAT_MS": "1000"}
            with open(tmp / "worker.log", "ab") as log:
                worker = subprocess.Popen([sys.executable, "-m", "medsearch_workers.dicom_worker"], env=env,
                                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            stack.callback(procs.stop_process, worker, 20)
            collection = names_for(lindex).images_collection

            def searchable(uids: list[str]) -> bool:
                quoted = ", ".join(json.dumps(u) for u in uids)
                rows = client.query(collection, filter=f"sop_instance_uid in [{quoted}]",
                                    output_fields=["sop_instance_uid"], limit=len(uids) + 1)
                return len(rows) == len(uids)

            latencies: list[float] = []
            for i in range(args.studies + 1):  # the first study warms up (group join, first model call)
                files, uids = _study(tmp / f"l{i}", args.sample, args.per_study, f"{lindex}-{i}")
                run = subprocess.run(_storescu_cmd(storescu, cfg, lport, files, "MODALITY"), capture_output=True,
                                     env=SENDER_ENV)
                if run.returncode != 0:
                    raise SystemExit(f"storescu failed: {run.stderr.decode(errors='replace')[-500:]}")
                t_end = time.perf_counter()
                deadline = t_end + (args.timeout * (5 if i == 0 else 1))
                while not searchable(uids):
                    if time.perf_counter() > deadline or worker.poll() is not None:
                        raise SystemExit(f"study {i} not searchable within the timeout (see {tmp / 'worker.log'})")
                    time.sleep(0.05)
                if i:
                    latencies.append(time.perf_counter() - t_end)
            ordered = sorted(latencies)
            result["association_end_to_searchable"] = {
                "studies": args.studies,
                "instances_per_study": args.per_study,
                "input_size": args.input_size,
                "p50_s": round(statistics.median(ordered), 3),
                "p95_s": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 3),
                "max_s": round(ordered[-1], 3),
                "target_p95_s": 10,
            }
        result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                             "platform": platform.platform()}
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
