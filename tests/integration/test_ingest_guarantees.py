"""Ingest guarantees with real processes (Tansu broker, embedded PostgreSQL, milvus-lite server, the report worker
as a process): workers read only inside the object store; reports travel as claim checks (no text on Kafka);
limits count UTF-8 bytes; a report dead-lettered because its object was missing is replayed once it is back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from medsearch_dev.localstack import procs
from medsearch_dev.testing import read_dead_letters, wait_for
from typer.testing import CliRunner

from medsearch import pgstore, store
from medsearch.contracts.messages import Report
from medsearch.contracts.naming import names_for
from medsearch.contracts.spec import parse_spec
from medsearch.provision import (
    drop_schema,
    ensure_collections,
    ensure_schema,
    ensure_topics,
    kafka_admin,
    milvus_client,
)

pytestmark = pytest.mark.integration

FORBIDDEN = ("file:///etc/passwd", "http://169.254.169.254/latest/meta-data/", "nope://x")


@pytest.fixture()
def report_worker(
    kafka_bootstrap: str, milvus_uri: str, object_store_url: str, unique_index: str, service_logs: Path,
    postgres_dsn: str,
) -> Iterator[str]:
    spec = parse_spec({"kafka": {"partitions": 2}})
    admin = kafka_admin(kafka_bootstrap)
    ensure_topics(admin, unique_index, spec)
    admin.close()
    client = milvus_client(milvus_uri)
    ensure_collections(client, unique_index, spec)
    client.close()
    ensure_schema(postgres_dsn, unique_index, spec)
    env = {
        **os.environ, "MEDSEARCH_INDEX": unique_index, "MEDSEARCH_POSTGRES_DSN": postgres_dsn,
        "MEDSEARCH_KAFKA_BOOTSTRAP": kafka_bootstrap, "MEDSEARCH_MILVUS_URI": milvus_uri,
        "MEDSEARCH_OBJECT_STORE_URL": object_store_url, "MEDSEARCH_WORKER_BATCH_SIZE": "4",
        "MEDSEARCH_WORKER_MAX_WAIT_MS": "200", "MEDSEARCH_WORKER_RETRY_MAX_SECONDS": "2",
        "MEDSEARCH_WORKER_SESSION_TIMEOUT_MS": "6000", "MEDSEARCH_WORKER_HEARTBEAT_MS": "1000", "HF_HUB_OFFLINE": "1",
    }  # fmt: skip
    with open(service_logs / f"report-worker-{unique_index}.log", "ab") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "medsearch_workers.report_worker"], env=env, stdout=fh,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    yield unique_index
    procs.stop_process(proc, timeout=20)
    assert proc.returncode in (0, -15), f"report worker exited with {proc.returncode}"
    drop_schema(postgres_dsn, unique_index)


def _texts(dsn: str, index: str) -> dict[str, str]:
    with pgstore.connect(dsn) as conn:
        rows = conn.execute(f"SELECT report_id, text FROM {names_for(index).pg_schema}.reports").fetchall()
    return {r[0]: r[1] for r in rows}


def _raw_topic(bootstrap: str, topic: str) -> list[bytes]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        out: list[bytes] = []
        deadline = time.monotonic() + 20
        while any(consumer.position(tp) < ends[tp] for tp in parts) and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=500).values():
                out.extend(r.value for r in recs)
        return out
    finally:
        consumer.close()


def _send_raw(bootstrap: str, topic: str, values: list[bytes]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for v in values:
        producer.send(topic, value=v)
    producer.flush()
    producer.close()


def test_allow_list_claim_checks_limits_and_replay(
    report_worker: str, kafka_bootstrap: str, object_store_url: str, postgres_dsn: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from medsearch.cli import app
    from medsearch.producer import Publisher

    index = report_worker
    names = names_for(index)
    greek = ("Μικρή πλευριτική συλλογή αριστερά, χωρίς πνευμοθώρακα. " * 800)[:40_000]
    assert len(greek) == 40_000 and len(greek.encode()) > 70_000  # non-ASCII: 2 bytes a character
    publisher = Publisher(bootstrap=kafka_bootstrap, object_store_url=object_store_url, index=index, source="test")
    try:
        assert publisher.publish_report(report_id="ready", text="Small left pleural effusion.").status == "published"
        assert publisher.publish_report(report_id="greek", text=greek, study_uid="1.2.3").status == "published"
        wide = "\U0001f9e0" * 60_000  # 60,000 characters, 240,000 bytes: refused at ingest, with the reason
        refused = publisher.publish_report(report_id="wide", text=wide)
        assert refused.status == "rejected" and "240000 bytes (UTF-8, 60000 characters) exceeds" in str(refused.reason)
        publisher.flush()
    finally:
        publisher.close()
    # worker start-up (spaCy, medspaCy, MiniLM, ICD-10-CM tables) is included in this wait
    wait_for(lambda: sorted(_texts(postgres_dsn, index)) == ["greek", "ready"] or _texts(postgres_dsn, index).keys(),
             300, "the first reports")
    assert _texts(postgres_dsn, index)["greek"] == greek  # indexed whole

    # 1. URIs outside the object store: dead-lettered at fetch within a minute, nothing read or indexed
    sha = "0" * 64
    t0 = time.monotonic()
    evil = [Report(index=index, report_id=f"evil-{i}", uri=u, sha256=sha).to_bytes() for i, u in enumerate(FORBIDDEN)]
    _send_raw(kafka_bootstrap, names.reports_topic, evil)
    letters = read_dead_letters(kafka_bootstrap, index, expect=3, timeout=60)
    elapsed = time.monotonic() - t0
    assert sorted((dl.original["uri"], dl.stage) for dl in letters) == sorted((u, "fetch") for u in FORBIDDEN)
    assert all("nothing was read" in dl.error for dl in letters), [dl.error for dl in letters]
    assert elapsed < 60
    print(f"forbidden URIs dead-lettered at fetch in {elapsed:.1f}s")

    # 2. a report whose claim-check object is missing is dead-lettered at fetch, and replayed once it is back
    late = b"FINDINGS: Moderate right pneumothorax.\nIMPRESSION: Right pneumothorax."
    late_sha = store.sha256_hex(late)
    late_uri = store.join(object_store_url, index, "reports", f"{late_sha}.txt")
    _send_raw(kafka_bootstrap, names.reports_topic,
              [Report(index=index, report_id="late", uri=late_uri, sha256=late_sha).to_bytes()])
    letters = read_dead_letters(kafka_bootstrap, index, expect=4, timeout=60)
    (missing,) = [dl for dl in letters if dl.original.get("report_id") == "late"]
    assert missing.stage == "fetch" and "not found" in missing.error
    store.put_bytes(late_uri, late)  # the cause is fixed
    monkeypatch.setenv("MEDSEARCH_OBJECT_STORE_URL", object_store_url)
    result = CliRunner().invoke(app, ["dlq", "replay", "--index", index, "--bootstrap", kafka_bootstrap,
                                      "--match", "not found", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["replayed"] == 1
    wait_for(lambda: "late" in _texts(postgres_dsn, index) or sorted(_texts(postgres_dsn, index)), 60, "the replay")
    with pgstore.connect(postgres_dsn) as conn:
        (codes,) = conn.execute(f"SELECT icd10_positive FROM {names.pg_schema}.reports WHERE report_id = 'late'"
                                ).fetchone() or (None,)
    assert codes == ["J93.9"]

    # 3. no report text on Kafka: every record on <index>.reports is a claim check
    raws = _raw_topic(kafka_bootstrap, names.reports_topic)
    assert len(raws) == 2 + len(FORBIDDEN) + 2  # published, forbidden, late, replayed
    for raw in raws:
        body: dict[str, Any] = json.loads(raw)
        assert "text" not in body and set(body) <= set(Report.model_fields), sorted(body)
        for fragment in ("effusion", "pneumothorax", "συλλογή"):
            assert fragment.encode() not in raw.lower()


def test_broker_killed_with_reports_queued_then_resume_indexes_each_once(
    milvus_uri: str, object_store_url: str, unique_index: str, service_logs: Path, postgres_dsn: str,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """2,000 reports published, the broker SIGKILLed before any is consumed (memory storage: all lost) and started
    again; `medsearch ingest --resume` publishes again what the ledger holds as published but not indexed; every
    report is then indexed exactly once, and the same ingest reports them as duplicates only once indexed."""
    import signal

    from medsearch.cli import app
    from medsearch.ledger import Ledger

    n = 2000
    spec = parse_spec({"kafka": {"partitions": 2}})
    ensure_schema(postgres_dsn, unique_index, spec)
    client = milvus_client(milvus_uri)
    ensure_collections(client, unique_index, spec)
    client.close()
    folder = tmp_path / "reports"
    folder.mkdir()
    with open(folder / "reports.jsonl", "w", encoding="utf-8") as fh:
        for i in range(n):
            finding = ("Small left pleural effusion." if i % 3 == 0 else "Moderate right pneumothorax." if i % 3 == 1
                       else "No acute cardiopulmonary process.")
            fh.write(json.dumps({"report_id": f"R{i:05d}", "text": f"FINDINGS: {finding} Case {i}."}) + "\n")
    port = procs.free_port()
    bootstrap = f"127.0.0.1:{port}"
    monkeypatch.setenv("MEDSEARCH_POSTGRES_DSN", postgres_dsn)
    monkeypatch.setenv("MEDSEARCH_OBJECT_STORE_URL", object_store_url)

    def ingest(*args: str) -> dict[str, Any]:
        result = CliRunner().invoke(app, ["ingest", *args, "--index", unique_index, "--bootstrap", bootstrap,
                                          "--store", object_store_url, "--json"])
        assert result.exit_code == 0, result.output
        summary: dict[str, Any] = json.loads(result.stdout)
        return summary

    def start_broker() -> subprocess.Popen[bytes]:
        with open(service_logs / f"tansu-{unique_index}.log", "ab") as log:
            proc = subprocess.Popen(procs.tansu_command(port), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        procs.wait_until(lambda: procs.kafka_ready(bootstrap), timeout=30, what="Tansu", proc=proc)
        admin = kafka_admin(bootstrap)
        ensure_topics(admin, unique_index, spec)
        admin.close()
        return proc

    ledger = Ledger(postgres_dsn, unique_index)
    broker = start_broker()
    worker: subprocess.Popen[bytes] | None = None
    try:
        t0 = time.monotonic()
        first = ingest(str(folder))
        print(f"published {first['published']} reports in {time.monotonic() - t0:.1f}s")
        assert first["published"] == n and ledger.counts() == {"published": n, "indexed": 0, "dead": 0}
        again = ingest(str(folder))  # before the re-publish delay: pending, not "already there"
        assert again["pending"] == n and again["duplicate"] == 0 and again["published"] == 0

        os.kill(broker.pid, signal.SIGKILL)  # everything queued is lost (memory storage)
        broker.wait(timeout=10)
        broker = start_broker()
        assert _raw_topic(bootstrap, names_for(unique_index).reports_topic) == []

        resumed = ingest("--resume", "--republish-after", "0")
        assert resumed["republished"] == n and resumed["published"] == 0

        env = {
            **os.environ, "MEDSEARCH_INDEX": unique_index, "MEDSEARCH_POSTGRES_DSN": postgres_dsn,
            "MEDSEARCH_KAFKA_BOOTSTRAP": bootstrap, "MEDSEARCH_MILVUS_URI": milvus_uri,
            "MEDSEARCH_OBJECT_STORE_URL": object_store_url, "MEDSEARCH_WORKER_BATCH_SIZE": "64",
            "MEDSEARCH_WORKER_MAX_WAIT_MS": "200", "MEDSEARCH_WORKER_RETRY_MAX_SECONDS": "2",
            "MEDSEARCH_WORKER_SESSION_TIMEOUT_MS": "6000", "MEDSEARCH_WORKER_HEARTBEAT_MS": "1000",
            "HF_HUB_OFFLINE": "1",
        }  # fmt: skip
        with open(service_logs / f"report-worker-{unique_index}.log", "ab") as fh:
            worker = subprocess.Popen([sys.executable, "-m", "medsearch_workers.report_worker"], env=env, stdout=fh,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        t1 = time.monotonic()
        wait_for(lambda: ledger.counts()["indexed"] == n or ledger.counts(), 900, "every report indexed")
        print(f"indexed {n} reports in {time.monotonic() - t1:.1f}s (worker start-up included)")
        with pgstore.connect(postgres_dsn) as conn:
            got = pgstore.count_rows(conn, unique_index)["reports"]
        assert got == n
        client = milvus_client(milvus_uri)
        try:
            from medsearch.provision import count_rows

            assert count_rows(client, names_for(unique_index).reports_collection) == n
        finally:
            client.close()
        last = ingest(str(folder))  # now, and only now, they are "already there"
        assert last["duplicate"] == n and last["published"] == 0 and last["pending"] == 0
        assert ingest("--resume", "--republish-after", "0")["republished"] == 0
    finally:
        if worker is not None:
            procs.stop_process(worker, timeout=20)
        procs.stop_process(broker)
        ledger.close()
        drop_schema(postgres_dsn, unique_index)
