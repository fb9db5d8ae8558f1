"""The PostgreSQL system of record against a real server: migrations, idempotent upserts, schema deletion."""

from __future__ import annotations

import json
from typing import Any

import pytest
from medsearch_api.sql import ENTITY_ARRAYS

from medsearch import pgstore
from medsearch.contracts.naming import names_for
from medsearch.contracts.spec import MedicalSearchIndexSpec
from medsearch.provision import drop_schema, ensure_schema

pytestmark = pytest.mark.integration


def report_row(rid: str, text: str, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c: [] for c in pgstore.REPORT_COLUMNS}
    row.update(report_id=rid, study_uid="1.2.3", text=text, findings="", impression="", indication="",
               sections={}, report_date=20240101, entities=[], nlp_backend="test", ingested_at=1,
               text_vector=[0.5] * 384)
    row.update(extra)
    return row


def test_schema_is_versioned_idempotent_and_dropped(postgres_dsn: str, unique_index: str) -> None:
    spec = MedicalSearchIndexSpec()
    first = ensure_schema(postgres_dsn, unique_index, spec)
    assert first.created == [f"{names_for(unique_index).pg_schema} migration {m.version}"
                             for m in pgstore.migrations()] and first.ok
    again = ensure_schema(postgres_dsn, unique_index, spec)
    assert again.created == [] and again.unchanged == [names_for(unique_index).pg_schema]
    with pgstore.connect(postgres_dsn) as conn:
        assert pgstore.applied_versions(conn, names_for(unique_index).pg_schema) == [
            m.version for m in pgstore.migrations()]
    assert drop_schema(postgres_dsn, unique_index) == [names_for(unique_index).pg_schema]
    assert drop_schema(postgres_dsn, unique_index) == []


def test_upserts_are_idempotent_and_keep_vectors(postgres_dsn: str, unique_index: str) -> None:
    ensure_schema(postgres_dsn, unique_index, MedicalSearchIndexSpec())
    try:
        with pgstore.connect(postgres_dsn) as conn:
            pgstore.upsert_reports(conn, unique_index, [report_row("r1", "Small pleural effusion."),
                                                        report_row("r2", "No effusion.")])
            pgstore.upsert_reports(conn, unique_index, [report_row("r1", "Large pleural effusion.",
                                                                   icd10_positive=["J91.8"])])
            assert pgstore.count_rows(conn, unique_index) == {"images": 0, "reports": 2}
            rows = [r for batch in pgstore.iter_rows(conn, unique_index, "reports",
                                                     ["report_id", "text", "icd10_positive", "text_vector"], batch=1)
                    for r in batch]
        assert [r["report_id"] for r in rows] == ["r1", "r2"]
        assert rows[0]["text"] == "Large pleural effusion." and rows[0]["icd10_positive"] == ["J91.8"]
        assert rows[1]["text_vector"] == [0.5] * 384
    finally:
        drop_schema(postgres_dsn, unique_index)


def test_unreachable_database_is_a_provision_error() -> None:
    from medsearch_dev.localstack.procs import free_port

    from medsearch.provision import ProvisionError

    with pytest.raises(ProvisionError) as err:
        ensure_schema(f"postgresql://postgres:secret@127.0.0.1:{free_port()}/medsearch", "x1",
                      MedicalSearchIndexSpec(), timeout=2)
    assert err.value.reason == "DatabaseUnreachable" and "secret" not in str(err.value)


def test_ledger_rows_are_marked_indexed_in_the_write_transaction(postgres_dsn: str, unique_index: str) -> None:
    import hashlib

    import psycopg

    from medsearch.ledger import Entry, Ledger

    ensure_schema(postgres_dsn, unique_index, MedicalSearchIndexSpec())
    ledger = Ledger(postgres_dsn, unique_index)
    try:
        def entry(rid: str, text: str) -> Entry:
            sha = hashlib.sha256(text.encode()).hexdigest()
            return Entry("report", f"key-{rid}", rid, sha, f"file:///s/{sha}.txt", "t.reports", rid, b'{"x": 1}')

        for rid, text in (("r1", "Small pleural effusion."), ("r2", "No effusion."), ("r3", "Pneumothorax.")):
            ledger.record(entry(rid, text))
        assert ledger.counts() == {"published": 3, "indexed": 0, "dead": 0}
        with pgstore.connect(postgres_dsn) as conn:
            pgstore.upsert_reports(conn, unique_index, [report_row("r1", "Small pleural effusion."),
                                                        report_row("r2", "Changed text.")])  # another version
            with pytest.raises(psycopg.DataError):  # a write that fails marks nothing
                pgstore.upsert_reports(conn, unique_index, [report_row("r3", "Pneumothorax.", report_date="x")])
            conn.rollback()
        assert ledger.counts() == {"published": 2, "indexed": 1, "dead": 0}
        assert (st := ledger.status("report", "key-r1")) is not None and st.state == "indexed"
        ledger.mark_dead("report", "r3", hashlib.sha256(b"Pneumothorax.").hexdigest(), "write", "refused")
        st3 = ledger.status("report", "key-r3")
        assert st3 is not None and (st3.state, st3.stage, st3.reason) == ("dead", "write", "refused")
        assert [p.key for p in ledger.pending(0)] == ["key-r2"]
        assert ledger.pending(3600) == []
        (dead,) = ledger.dead()
        assert (dead["subject"], dead["stage"], dead["reason"], dead["attempts"]) == ("r3", "write", "refused", 1)
        from typer.testing import CliRunner

        from medsearch.cli import app

        result = CliRunner().invoke(app, ["dlq", "list", "--ledger", "--index", unique_index, "--json"],
                                    env={"MEDSEARCH_POSTGRES_DSN": postgres_dsn})
        assert result.exit_code == 0, result.output
        listed = json.loads(result.stdout)
        assert listed["summary"]["states"] == {"published": 1, "indexed": 1, "dead": 1}
        assert listed["summary"]["groups"] == [{"kind": "report", "stage": "write", "reason": "refused", "count": 1}]
        ledger.record(entry("r3", "Pneumothorax."))  # published again: state and attempts follow
        st3 = ledger.status("report", "key-r3")
        assert st3 is not None and (st3.state, st3.attempts, st3.stage) == ("published", 2, None)
    finally:
        ledger.close()
        drop_schema(postgres_dsn, unique_index)


FACET_FIELDS = tuple(sorted(ENTITY_ARRAYS))  # the gateway's facet columns


def kept_counts(conn: Any, index: str) -> dict[tuple[str, str], int]:
    schema = names_for(index).pg_schema
    rows = conn.execute(f'SELECT field, value, n FROM "{schema}".facet_counts WHERE n <> 0').fetchall()
    conn.rollback()
    return {(f, v): n for f, v, n in rows}


def brute_counts(conn: Any, index: str) -> dict[tuple[str, str], int]:
    """The counts recomputed from every report row, in Python."""
    from collections import Counter

    schema = names_for(index).pg_schema
    rows = conn.execute(f'SELECT {", ".join(FACET_FIELDS)} FROM "{schema}".reports').fetchall()
    conn.rollback()
    out: Counter[tuple[str, str]] = Counter({("reports", ""): len(rows)} if rows else {})
    for row in rows:
        for field, values in zip(FACET_FIELDS, row, strict=True):
            out.update((field, v) for v in set(values))
    return dict(out)


def test_facet_counts_follow_every_write(postgres_dsn: str, unique_index: str) -> None:
    ensure_schema(postgres_dsn, unique_index, MedicalSearchIndexSpec())
    schema = names_for(unique_index).pg_schema
    try:
        with pgstore.connect(postgres_dsn) as conn:
            assert kept_counts(conn, unique_index) == {}
            pgstore.upsert_reports(conn, unique_index, [
                report_row("r1", "a", icd10_positive=["J90", "J90"], negative_signs=["pneumothorax"]),
                report_row("r2", "b", icd10_positive=["I51.7"], icd10_negative=["J90"]),
                report_row("r1", "a again", icd10_positive=["J90", "I51.7"])])  # same key in a batch: last wins
            assert kept_counts(conn, unique_index) == brute_counts(conn, unique_index) == {
                ("reports", ""): 2, ("icd10_positive", "J90"): 1, ("icd10_positive", "I51.7"): 2,
                ("icd10_negative", "J90"): 1}
            pgstore.upsert_reports(conn, unique_index, [  # a new version of r2, and a new report
                report_row("r2", "b2", icd10_uncertain=["J18.9"], positive_symptoms=["cough"]),
                report_row("r3", "c", icd10_positive=["J90"])])
            assert kept_counts(conn, unique_index) == brute_counts(conn, unique_index)
            assert kept_counts(conn, unique_index)[("icd10_positive", "I51.7")] == 1
            with conn.transaction():
                conn.execute(f'DELETE FROM "{schema}".reports WHERE report_id = %s', ("r1",))
            assert kept_counts(conn, unique_index) == brute_counts(conn, unique_index)
            with conn.transaction():
                conn.execute(f'TRUNCATE "{schema}".reports')
            assert kept_counts(conn, unique_index) == brute_counts(conn, unique_index) == {}
    finally:
        drop_schema(postgres_dsn, unique_index)


def test_facet_counts_migration_counts_the_reports_already_there(postgres_dsn: str, unique_index: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = pgstore.migrations()
    monkeypatch.setattr(pgstore, "migrations", lambda: [m for m in shipped if m.name != "facet_counts"])
    ensure_schema(postgres_dsn, unique_index, MedicalSearchIndexSpec())
    try:
        with pgstore.connect(postgres_dsn) as conn:
            pgstore.upsert_reports(conn, unique_index, [
                report_row(f"r{k}", "x", icd10_positive=["J90"] if k % 2 else ["I51.7", "J90"],
                           negative_diagnoses=["pneumonia"] * (k % 3)) for k in range(25)])
            assert conn.execute("SELECT to_regclass(%s)", (f"{names_for(unique_index).pg_schema}.facet_counts",)
                                ).fetchone() == (None,)
            conn.rollback()
        monkeypatch.setattr(pgstore, "migrations", lambda: shipped)
        assert ensure_schema(postgres_dsn, unique_index, MedicalSearchIndexSpec()).created
        with pgstore.connect(postgres_dsn) as conn:
            assert kept_counts(conn, unique_index) == brute_counts(conn, unique_index)
            assert kept_counts(conn, unique_index)[("icd10_positive", "J90")] == 25
    finally:
        drop_schema(postgres_dsn, unique_index)


def test_concurrent_writers_keep_facet_counts_exact(postgres_dsn: str, unique_index: str) -> None:
    """Several workers writing overlapping reports and codes at once: no deadlock, no lost count."""
    import random
    import threading

    ensure_schema(postgres_dsn, unique_index, MedicalSearchIndexSpec())
    codes = ["J90", "I51.7", "J93.9", "J18.9", "R91.1", "J81.1"]
    failures: list[BaseException] = []

    def writer(w: int) -> None:
        rng = random.Random(w)
        try:
            with pgstore.connect(postgres_dsn) as conn:
                for _ in range(15):
                    pgstore.upsert_reports(conn, unique_index, [
                        report_row(f"r{rng.randrange(40)}", "t", icd10_positive=rng.sample(codes, rng.randrange(4)),
                                   icd10_negative=rng.sample(codes, rng.randrange(3)))
                        for _ in range(rng.randrange(1, 12))])
        except BaseException as err:  # noqa: BLE001 - reported by the test thread
            failures.append(err)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == []
        with pgstore.connect(postgres_dsn) as conn:
            assert kept_counts(conn, unique_index) == brute_counts(conn, unique_index)
    finally:
        drop_schema(postgres_dsn, unique_index)
