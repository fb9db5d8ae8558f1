"""The PostgreSQL system of record against a real server: migrations, idempotent upserts, schema deletion."""

from __future__ import annotations

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
    from medsearch.localstack.procs import free_port
    from medsearch.provision import ProvisionError

    with pytest.raises(ProvisionError) as err:
        ensure_schema(f"postgresql://postgres:secret@127.0.0.1:{free_port()}/medsearch", "x1",
                      MedicalSearchIndexSpec(), timeout=2)
    assert err.value.reason == "DatabaseUnreachable" and "secret" not in str(err.value)
