"""Report ingest end to end: publish → searchable, and where the time goes. JSON on stdout.

Starts a real Tansu broker, PostgreSQL and a milvus-lite server, runs the real report worker (lexicon NLP,
MiniLM embeddings, PostgreSQL then Milvus writes) in this process, publishes N synthetic reports with the
producer ``medsearch ingest`` uses, and measures the time until every report is in PostgreSQL and in Milvus.
Then it times the worker's stages on the same texts in-process (analysis, embedding, PostgreSQL upsert, Milvus
upsert, per report) to say where the time goes. Target (issue 13): >= 100 reports/s on a 2-core machine.

    python bench/report_ingest.py --n 2000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000, help="reports to ingest")
    p.add_argument("--batch-size", type=int, default=64, help="report worker batch size")
    args = p.parse_args(argv)

    from medsearch_dev.localstack import postgres, procs
    from scale import generate

    from medsearch import pgstore
    from medsearch.contracts.naming import names_for
    from medsearch.contracts.settings import WorkerSettings
    from medsearch.contracts.spec import parse_spec
    from medsearch.producer import Publisher
    from medsearch.provision import count_rows, ensure_collections, ensure_schema, ensure_topics, kafka_admin
    from medsearch.provision import milvus_client as connect_milvus

    reports, _ = generate(args.n, args.n, seed=5)
    index = "benchingest"
    names = names_for(index)
    spec = parse_spec({"workers": {"report": {"batchSize": args.batch_size}}})
    from medsearch.text_embedding import BACKEND, TEXT_MODEL_NAME

    out: dict[str, Any] = {"benchmark": "report_ingest", "reports": args.n, "batch_size": args.batch_size,
                           "text_embedding": {"model": TEXT_MODEL_NAME, "backend": BACKEND},
                           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                       "load_average_before": [round(x, 2) for x in os.getloadavg()]}}
    with tempfile.TemporaryDirectory(prefix="medsearch-bench-ingest-") as tmp, contextlib.ExitStack() as stack:
        tmpd = Path(tmp)
        os.chmod(tmpd, 0o711)  # PostgreSQL may run as another user (when this runs as root)
        dsn = stack.enter_context(postgres.running(tmpd / "pg", tmpd))
        uri = stack.enter_context(procs.milvus_lite(tmpd / "milvus", tmpd))
        bootstrap = stack.enter_context(procs.tansu(tmpd))
        admin = kafka_admin(bootstrap)
        ensure_topics(admin, index, spec)
        admin.close()
        ensure_schema(dsn, index, spec)
        mc = connect_milvus(uri, timeout=120)
        ensure_collections(mc, index, spec)
        settings = WorkerSettings(index=index, kafka_bootstrap=bootstrap, milvus_uri=uri, postgres_dsn=dsn,
                                  object_store_url=f"file://{tmpd / 'objects'}",
                                  worker_max_wait_ms=200, worker_session_timeout_ms=6000, worker_heartbeat_ms=1000,
                                  log_level="WARNING")
        from medsearch_workers import report_worker

        stop = threading.Event()
        worker = threading.Thread(target=report_worker.run, kwargs={"settings": settings, "stop": stop,
                                                                    "spec": spec}, daemon=True)
        worker.start()
        # wait for the worker to load its models (a first report is indexed) before timing
        pub = Publisher(bootstrap=bootstrap, object_store_url=settings.object_store_url, index=index)
        pub.publish_report(report_id="warm-up", text="No pleural effusion.")
        pub.flush()
        with pgstore.connect(dsn) as conn:
            procs.wait_until(lambda: pgstore.count_rows(conn, index)["reports"] >= 1, timeout=600,
                             what="the report worker's first report")
            t0 = time.perf_counter()
            for r in reports:
                pub.publish_report(report_id=r["report_id"], text=r["text"], study_uid=r["study_uid"])
            pub.flush()
            published = time.perf_counter() - t0
            procs.wait_until(lambda: pgstore.count_rows(conn, index)["reports"] >= args.n + 1, timeout=3600,
                             what="every report in PostgreSQL", interval=0.5)
            in_pg = time.perf_counter() - t0
        procs.wait_until(lambda: count_rows(mc, names.reports_collection) >= args.n + 1, timeout=600,
                         what="every report in Milvus", interval=0.5)
        searchable = time.perf_counter() - t0
        stop.set()
        worker.join(timeout=60)
        pub.close()
        out["end_to_end"] = {"publish_seconds": round(published, 2), "in_postgres_seconds": round(in_pg, 2),
                             "searchable_seconds": round(searchable, 2),
                             "reports_per_second": round(args.n / searchable, 1)}
        out["stages_ms_per_report"] = stage_times(reports[:min(500, len(reports))], dsn, uri, index)
        mc.close()
    out["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    out["meets_target"] = out["end_to_end"]["reports_per_second"] >= 100
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def stage_times(reports: list[dict[str, Any]], dsn: str, uri: str, index: str) -> dict[str, float]:
    """The report worker's stages, timed in-process on the same texts (ms per report)."""
    import datetime as dt
    import hashlib

    from medsearch_workers.nlp import Analyzer, get_backend
    from medsearch_workers.report_worker import build_row, embedding_text

    from medsearch import pgstore
    from medsearch.contracts.collections import REPORT_ANN_FIELDS
    from medsearch.contracts.messages import Report
    from medsearch.contracts.naming import names_for
    from medsearch.provision import milvus_client
    from medsearch.text_embedding import embed_texts

    analyzer = Analyzer(get_backend("lexicon", None))
    texts = [r["text"] for r in reports]
    analyzer.analyze_many(texts[:8])
    t0 = time.perf_counter()
    analyses = analyzer.analyze_many(texts)
    t_nlp = time.perf_counter() - t0
    t0 = time.perf_counter()
    vectors = embed_texts([embedding_text(a, t) for a, t in zip(analyses, texts, strict=True)], batch_size=32)
    t_embed = time.perf_counter() - t0
    now = int(time.time() * 1000)
    rows = []
    for r, a, v in zip(reports, analyses, vectors, strict=True):  # the message is a claim check: URI + sha256
        digest = hashlib.sha256(r["text"].encode()).hexdigest()
        message = Report(index=index, report_id=f"x{r['report_id']}", uri=f"file:///bench/{digest}.txt",
                         sha256=digest, study_uid=r["study_uid"], report_date=dt.date(2020, 1, 1))
        rows.append(build_row(message, r["text"], a, v, backend_name="lexicon", now_ms=now))
    t0 = time.perf_counter()
    with pgstore.connect(dsn) as conn:
        for start in range(0, len(rows), 64):
            pgstore.upsert_reports(conn, index, rows[start:start + 64])
    t_pg = time.perf_counter() - t0
    client = milvus_client(uri, timeout=120)
    t0 = time.perf_counter()
    for start in range(0, len(rows), 64):
        client.upsert(names_for(index).reports_collection,
                      [{k: r[k] for k in REPORT_ANN_FIELDS} for r in rows[start:start + 64]])
    t_milvus = time.perf_counter() - t0
    client.close()
    n = len(rows)
    return {"nlp": round(t_nlp / n * 1000, 2), "embedding": round(t_embed / n * 1000, 2),
            "postgres_upsert": round(t_pg / n * 1000, 2), "milvus_upsert": round(t_milvus / n * 1000, 2)}


if __name__ == "__main__":
    raise SystemExit(main())
