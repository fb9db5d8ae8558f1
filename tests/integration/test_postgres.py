"""The PostgreSQL system of record against a real server: migrations, idempotent upserts, schema deletion."""

from __future__ import annotations

import json
from typing import Any

import pytest

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
