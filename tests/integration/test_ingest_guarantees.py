"""Ingest guarantees with real processes (Tansu broker, embedded PostgreSQL, milvus-lite server, the model server,
the DICOM and report workers as processes): workers read only inside the object store; reports travel as claim checks
(no text on Kafka); limits count UTF-8 bytes; a report dead-lettered because its object was missing is replayed once
it is back; a DICOM whose decoding takes the worker over its memory limit (killed, as the kernel's OOM killer would)
is dead-lettered after maxAttempts restarts and the partition drains; a report dead-lettered at `write` while Milvus
was down past the retry budget is replayed and searchable once Milvus is back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from ingest_env import spec_file
from medsearch_dev.localstack import procs
from medsearch_dev.testing import read_dead_letters, send_raw, wait_for
from test_dicom_ingest import Env, ModelServer, _fresh_copies, env, model_server  # noqa: F401  # shared fixtures
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
    send_raw(kafka_bootstrap, names.reports_topic, evil)
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
    send_raw(kafka_bootstrap, names.reports_topic,
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


def test_broker_killed_with_reports_and_dicom_queued_then_resume_indexes_each_once(
    milvus_uri: str, object_store_url: str, unique_index: str, service_logs: Path, postgres_dsn: str,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_server: ModelServer,  # noqa: F811  # shared fixture
) -> None:
    """2,000 reports and 50 DICOM files (the demo's 24 sample files and 26 copies with fresh UIDs) published, the
    broker SIGKILLed before any is consumed (memory storage: all lost) and started again; `medsearch ingest
    --resume` publishes again what the ledger holds as published but not indexed; every object and report is then
    indexed exactly once, and the same ingest reports them as duplicates only once indexed."""
    import pydicom
    from medsearch_dev.localstack.demo import default_manifest, read_manifest

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
    dicom = folder / "dicom"
    dicom.mkdir()
    samples = read_manifest(default_manifest()).dicom_files
    assert len(samples) == 24
    for src in samples:
        (dicom / src.name).write_bytes(src.read_bytes())
    _fresh_copies("CT_small.dcm", 13, dicom, seed="broker-ct")
    _fresh_copies("MR_small.dcm", 13, dicom, seed="broker-mr")
    sops = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in dicom.iterdir()}
    m = len(list(dicom.iterdir()))
    assert m == 50
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
    dicom_worker: subprocess.Popen[bytes] | None = None
    try:
        t0 = time.monotonic()
        first = ingest(str(folder))
        print(f"published {first['published']} reports and DICOM files in {time.monotonic() - t0:.1f}s")
        assert first["published"] == n + m and ledger.counts() == {"published": n + m, "indexed": 0, "dead": 0}
        assert first["by_kind"]["dicom:published"] == m
        again = ingest(str(folder))  # before the re-publish delay: pending, not "already there"
        assert again["pending"] == n + m and again["duplicate"] == 0 and again["published"] == 0

        os.kill(broker.pid, signal.SIGKILL)  # everything queued is lost (memory storage)
        broker.wait(timeout=10)
        broker = start_broker()
        assert _raw_topic(bootstrap, names_for(unique_index).reports_topic) == []
        assert _raw_topic(bootstrap, names_for(unique_index).dicom_topic) == []

        resumed = ingest("--resume", "--republish-after", "0")
        assert resumed["republished"] == n + m and resumed["published"] == 0

        index_file = spec_file(tmp_path / "index.yaml", unique_index, spec, report=64, dicom=8)
        worker_env = {
            **os.environ, "MEDSEARCH_INDEX": unique_index, "MEDSEARCH_POSTGRES_DSN": postgres_dsn,
            "MEDSEARCH_KAFKA_BOOTSTRAP": bootstrap, "MEDSEARCH_MILVUS_URI": milvus_uri,
            "MEDSEARCH_OBJECT_STORE_URL": object_store_url, "MEDSEARCH_WORKER_MAX_WAIT_MS": "200",
            "MEDSEARCH_INDEX_SPEC_FILE": str(index_file),
            "MEDSEARCH_WORKER_RETRY_MAX_SECONDS": "2",
            "MEDSEARCH_WORKER_SESSION_TIMEOUT_MS": "6000", "MEDSEARCH_WORKER_HEARTBEAT_MS": "1000",
            "HF_HUB_OFFLINE": "1",
        }  # fmt: skip
        with open(service_logs / f"report-worker-{unique_index}.log", "ab") as fh:
            worker = subprocess.Popen([sys.executable, "-m", "medsearch_workers.report_worker"], env=worker_env,
                                      stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)
        with open(service_logs / f"dicom-worker-{unique_index}.log", "ab") as fh:
            dicom_worker = subprocess.Popen(
                [sys.executable, "-m", "medsearch_workers.dicom_worker"],
                env={**worker_env, "MEDSEARCH_MODEL_SERVER_URL": model_server.url},
                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        t1 = time.monotonic()
        wait_for(lambda: ledger.counts()["indexed"] == n + m or ledger.counts(), 900, "everything indexed")
        print(f"indexed {n} reports and {m} DICOM files in {time.monotonic() - t1:.1f}s (workers' start-up included)")
        assert ledger.counts() == {"published": 0, "indexed": n + m, "dead": 0}
        with pgstore.connect(postgres_dsn) as conn:
            got = pgstore.count_rows(conn, unique_index)
        assert got["reports"] == n and got["images"] == len(sops)  # once each (the J2K twins share a SOP UID)
        client = milvus_client(milvus_uri)
        try:
            from medsearch.provision import count_rows

            assert count_rows(client, names_for(unique_index).reports_collection) == n
            assert count_rows(client, names_for(unique_index).images_collection) == len(sops)
        finally:
            client.close()
        last = ingest(str(folder))  # now, and only now, they are "already there"
        assert last["duplicate"] == n + m and last["published"] == 0 and last["pending"] == 0
        assert ingest("--resume", "--republish-after", "0")["republished"] == 0
        assert read_dead_letters(bootstrap, unique_index, expect=0, timeout=2) == []
    finally:
        for proc in (worker, dicom_worker):
            if proc is not None:
                procs.stop_process(proc, timeout=20)
        procs.stop_process(broker)
        ledger.close()
        drop_schema(postgres_dsn, unique_index)


# --------------------------------------------------------------------------------------- a message that kills

MEMORY_LIMIT_MB = 700  # the worker's memory limit; the worker idles at ~300 MB, the huge image needs ~1 GB


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def _huge_dicom(path: Path, side: int = 6300) -> str:
    """A valid 16-bit image of side x side pixels (within the image limits: 40 million pixels a frame) whose decoding
    needs about 1 GB; the study of CT_small, so it shares a partition with copies of it. Returns its SOPInstanceUID."""
    import numpy as np
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Rows = ds.Columns = side
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = (np.arange(side * side, dtype=np.uint32) % 4000).astype(np.uint16).tobytes()
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["huge", str(side)])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


def _attempts(dsn: str, index: str) -> list[tuple[int, int, int | None, str | None]]:
    with pgstore.connect(dsn) as conn:
        return [tuple(r) for r in conn.execute(  # type: ignore[misc]  # rows of 4 columns
            f'SELECT "offset", attempts, stage, error FROM {names_for(index).pg_schema}.delivery_attempts '
            'ORDER BY "offset"').fetchall()]


def _group_offsets(bootstrap: str, group: str, topic: str) -> tuple[int, int]:
    """(the group's lag, the sum of its committed offsets) on ``topic``. Tansu's end offsets can read one short of
    what was committed right after the commit, so a partition's lag counts from 0 up."""
    from kafka import KafkaConsumer, TopicPartition

    admin = kafka_admin(bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        committed = {tp.partition: max(0, om.offset) for tp, om in admin.list_group_offsets(group)[group].items()
                     if tp.topic == topic}
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        ends = consumer.end_offsets(parts)
        lag = sum(max(0, end - committed.get(tp.partition, 0)) for tp, end in ends.items())
        return lag, sum(committed.values())
    finally:
        consumer.close()
        admin.close()


def test_a_dicom_that_kills_the_worker_is_dead_lettered_after_max_attempts_restarts(
    env: Env, tmp_path: Path,  # noqa: F811  # the fixture imported from test_dicom_ingest
) -> None:
    """The worker runs under a memory limit: whenever its memory goes over it, it is SIGKILLed (what the kernel's
    OOM killer does to a container) and started again (what Kubernetes does). A huge, valid DICOM takes it over the
    limit every time it is decoded. Its attempts are counted in the ledger across the restarts; after
    maxAttempts (the spec's default, 3) kills the next worker dead-letters it at `decode` without decoding it, the
    images queued behind it on the same partition are indexed, and the group's lag is 0."""
    from medsearch.ledger import Ledger

    huge_dir, normal_dir = tmp_path / "huge", tmp_path / "normal"
    huge_dir.mkdir()
    normal_dir.mkdir()
    huge_uid = _huge_dicom(huge_dir / "huge.dcm")
    uids = set(_fresh_copies("CT_small.dcm", 5, normal_dir, seed="behind-the-poison"))
    assert env.ingest(huge_dir)["published"] == 1  # first on the partition (one study: one partition)
    assert env.ingest(normal_dir)["published"] == 5
    names = names_for(env.index)

    t0 = time.monotonic()
    for kill in (1, 2, 3):
        worker = env.start_worker()
        deadline = time.monotonic() + 120
        while _rss_mb(worker.pid) <= MEMORY_LIMIT_MB:
            assert worker.poll() is None, f"the worker exited with {worker.returncode}"
            assert time.monotonic() < deadline, f"start {kill}: the worker never went over its memory limit"
            time.sleep(0.02)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
        rows = _attempts(env.dsn, env.index)
        assert rows and rows[0][:2] == (0, kill), rows  # counted durably, before the decoding began
        if kill > 1:
            assert rows[0][2] == "decode", rows  # handled alone: the stage it died in is recorded
        assert env.count() == 0  # nothing behind it got through: the partition was stuck on it
    worker = env.start_worker()  # the fourth start: dead-lettered without being decoded again
    (letter,) = env.dead_letters(1, timeout=90)
    assert letter.stage == "decode" and letter.attempts == 3, letter
    assert "handled 3 times without finishing, last in stage decode" in letter.error
    assert letter.original["uri"].endswith(".dcm") and letter.topic == names.dicom_topic
    wait_for(lambda: env.count() == len(uids) or env.count(), 90, "the images behind the poison message")
    assert {r["sop_instance_uid"] for r in env.rows()} == uids and huge_uid not in uids
    # every one of the 6 messages committed (the poison one too): the partition's lag is 0
    group, topic = names.dicom_consumer_group, names.dicom_topic
    wait_for(lambda: _group_offsets(env.bootstrap, group, topic) == (0, 6), 30, "lag 0")
    assert _attempts(env.dsn, env.index) == []  # forgotten once committed
    assert _rss_mb(worker.pid) < MEMORY_LIMIT_MB and worker.poll() is None
    ledger = Ledger(env.dsn, env.index)
    try:
        assert ledger.counts() == {"published": 0, "indexed": 5, "dead": 1}
        (dead,) = ledger.dead()
        assert dead["stage"] == "decode" and "3 times" in dead["reason"]
    finally:
        ledger.close()
    print(f"poison DICOM isolated after 3 kills in {time.monotonic() - t0:.1f}s")


# --------------------------------------------------------------------------------------- write-stage replay


def test_a_report_dead_lettered_at_write_while_milvus_was_down_is_replayed_and_searchable(
    kafka_bootstrap: str, object_store_url: str, unique_index: str, service_logs: Path, postgres_dsn: str,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Milvus (its own milvus-lite server, so the session's is untouched) stops; a report published then is
    written to PostgreSQL but not to Milvus, retried for the worker's retry budget (4 s here), then dead-lettered
    at `write` (the ledger says dead, not indexed). Once Milvus is back, `medsearch dlq replay --stage write`
    sends it again and it is indexed and found by a k-NN search on its own vector."""
    from medsearch.cli import app
    from medsearch.ledger import Ledger
    from medsearch.producer import Publisher

    spec = parse_spec({"kafka": {"partitions": 1}})
    admin = kafka_admin(kafka_bootstrap)
    ensure_topics(admin, unique_index, spec)
    admin.close()
    ensure_schema(postgres_dsn, unique_index, spec)
    names = names_for(unique_index)
    data_dir, port = tmp_path / "milvus-data", procs.free_port()
    milvus = f"http://127.0.0.1:{port}"
    worker_env = {
        **os.environ, "MEDSEARCH_INDEX": unique_index, "MEDSEARCH_POSTGRES_DSN": postgres_dsn,
        "MEDSEARCH_KAFKA_BOOTSTRAP": kafka_bootstrap, "MEDSEARCH_MILVUS_URI": milvus,
        "MEDSEARCH_OBJECT_STORE_URL": object_store_url, "MEDSEARCH_WORKER_MAX_WAIT_MS": "200",
        "MEDSEARCH_INDEX_SPEC_FILE": str(spec_file(tmp_path / "index.yaml", unique_index, spec, report=4)),
        "MEDSEARCH_WORKER_RETRY_MAX_SECONDS": "1",
        "MEDSEARCH_WORKER_RETRY_BUDGET_SECONDS": "4",
        "MEDSEARCH_WORKER_SESSION_TIMEOUT_MS": "6000", "MEDSEARCH_WORKER_HEARTBEAT_MS": "1000", "HF_HUB_OFFLINE": "1",
    }  # fmt: skip
    ledger = Ledger(postgres_dsn, unique_index)
    publisher = Publisher(bootstrap=kafka_bootstrap, object_store_url=object_store_url, index=unique_index,
                          source="test", ledger=ledger, republish_after=3600)
    worker: subprocess.Popen[bytes] | None = None

    def in_milvus(report_id: str) -> bool:
        client = milvus_client(milvus)
        try:
            client.load_collection(names.reports_collection)  # a restarted milvus-lite has its collections released
            rows = client.query(names.reports_collection, filter=f'report_id == "{report_id}"',
                                output_fields=["report_id"])
            return [r["report_id"] for r in rows] == [report_id]
        finally:
            client.close()

    try:
        with procs.milvus_lite(data_dir, service_logs, port=port):
            client = milvus_client(milvus)
            ensure_collections(client, unique_index, spec)
            client.close()
            with open(service_logs / f"report-worker-{unique_index}.log", "ab") as fh:
                worker = subprocess.Popen([sys.executable, "-m", "medsearch_workers.report_worker"], env=worker_env,
                                          stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)
            assert publisher.publish_report(report_id="before", text="IMPRESSION: No acute disease.").status == \
                "published"
            publisher.flush()
            wait_for(lambda: in_milvus("before"), 300, "the first report in Milvus (worker start-up included)")
        # Milvus is down now.
        t0 = time.monotonic()
        text = "FINDINGS: Large right pleural effusion.\nIMPRESSION: Right pleural effusion."
        assert publisher.publish_report(report_id="during", text=text).status == "published"
        publisher.flush()
        (letter,) = read_dead_letters(kafka_bootstrap, unique_index, expect=1, timeout=60)
        print(f"dead-lettered at {letter.stage} {time.monotonic() - t0:.1f}s after publishing (budget 4 s)")
        assert letter.stage == "write" and "retry budget of 4s" in letter.error, letter
        assert letter.original["report_id"] == "during"
        assert worker.poll() is None, "the worker must survive the outage"
        (dead,) = ledger.dead()
        assert (dead["subject"], dead["stage"]) == ("during", "write")  # dead, not "indexed", in the ledger
        assert ledger.counts() == {"published": 0, "indexed": 1, "dead": 1}

        with procs.milvus_lite(data_dir, service_logs, port=port):
            assert not in_milvus("during")
            monkeypatch.setenv("MEDSEARCH_OBJECT_STORE_URL", object_store_url)
            result = CliRunner().invoke(app, ["dlq", "replay", "--index", unique_index, "--bootstrap",
                                              kafka_bootstrap, "--stage", "write", "--json"])
            assert result.exit_code == 0, result.output
            assert json.loads(result.stdout)["replayed"] == 1
            wait_for(lambda: ledger.counts()["indexed"] == 2 or ledger.counts(), 60, "the replayed report")
            wait_for(lambda: in_milvus("during"), 30, "the replayed report in Milvus")
            with pgstore.connect(postgres_dsn) as conn:
                (vector,) = conn.execute(f"SELECT text_vector::text FROM {names.pg_schema}.reports "
                                         "WHERE report_id = 'during'").fetchone() or (None,)
            client = milvus_client(milvus)
            try:
                hits = client.search(names.reports_collection, data=[json.loads(vector)], limit=1,
                                     output_fields=["report_id"], anns_field="text_vector")
            finally:
                client.close()
            assert hits[0][0]["entity"]["report_id"] == "during"  # searchable
            assert ledger.dead() == []
    finally:
        publisher.close()
        ledger.close()
        if worker is not None:
            procs.stop_process(worker, timeout=20)
        drop_schema(postgres_dsn, unique_index)
