"""Report ingest end to end with real processes: Tansu broker, milvus-lite server and the report worker
(``python -m medsearch_workers.report_worker``, lexicon backend, MiniLM text vectors).

Covers: rows with the right ICD-10-CM code arrays and entities, the empty / oversized / binary / malformed
reports dead-lettered with their reason (never their text), BM25 and dense search over the indexed reports,
typed array filters, and re-delivery of the same reports adding no rows.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from medsearch_dev.testing import read_dead_letters, send_raw, wait_for

from medsearch import pgstore
from medsearch.contracts.collections import MAX_TEXT_BYTES, REPORT_VECTOR
from medsearch.contracts.messages import Report
from medsearch.contracts.naming import names_for
from medsearch.provision import count_rows, milvus_client

pytestmark = pytest.mark.integration

REPORTS = {
    "rpt-effusion": (
        "1.2.826.0.1.1",
        "INDICATION: Shortness of breath.\nFINDINGS: The cardiac silhouette is enlarged. Small left pleural "
        "effusion. No pneumothorax.\nIMPRESSION: Cardiomegaly with small left pleural effusion.",
    ),
    "rpt-ptx": (
        "1.2.826.0.1.2",
        "FINDINGS: Moderate right pneumothorax. Heart size is normal. No pleural effusion.\n"
        "IMPRESSION: Right pneumothorax.",
    ),
    "rpt-normal": (
        None,
        "FINDINGS: Heart size is normal. Lungs are clear. No pleural effusion or pneumothorax.\n"
        "IMPRESSION: No acute cardiopulmonary process.",
    ),
    "rpt-uncertain": (
        "1.2.826.0.1.4",
        "Patchy left basilar opacity, possibly atelectasis versus pneumonia. History of COPD. Old healed right rib "
        "fractures.",
    ),
}
EXPECTED = {
    "rpt-effusion": {"positive": ["I51.7", "J90"], "negative": ["J93.9"], "uncertain": []},
    "rpt-ptx": {"positive": ["J93.9"], "negative": ["I51.7", "J90"], "uncertain": []},
    # "Lungs are clear" negates no coded finding (a consolidation is a sign without a pneumonia code)
    "rpt-normal": {"positive": [], "negative": ["I51.7", "J90", "J93.9"], "uncertain": []},
    "rpt-uncertain": {"positive": ["S22.41XA"], "negative": [], "uncertain": ["J18.9", "J98.11"]},
}


def _rows(dsn: str, index: str) -> list[dict[str, Any]]:
    """The reports as the system of record holds them."""
    cols = ["report_id", "study_uid", "icd10_positive", "icd10_negative", "icd10_uncertain", "entities", "findings",
            "impression", "indication", "positive_signs", "negative_diagnoses", "nlp_backend", "text_vector"]
    with pgstore.connect(dsn) as conn:
        return [r for batch in pgstore.iter_rows(conn, index, "reports", cols) for r in batch]


def _count(milvus_uri: str, index: str) -> int:
    client = milvus_client(milvus_uri)
    try:
        return count_rows(client, names_for(index).reports_collection)
    finally:
        client.close()


def _claim(store_url: str, index: str, report_id: str, data: bytes, study_uid: str | None = None) -> bytes:
    """A Report message for ``data`` stored as a claim check, as the publisher does, without its checks."""
    from medsearch import store

    sha = store.sha256_hex(data)
    uri = store.join(store_url, index, "reports", f"{sha}.txt")
    store.put_bytes(uri, data)
    return Report(index=index, report_id=report_id, uri=uri, sha256=sha, study_uid=study_uid).to_bytes()


def test_reports_indexed_searchable_dead_lettered_and_idempotent(
    report_worker: str, kafka_bootstrap: str, milvus_uri: str, object_store_url: str, postgres_dsn: str
) -> None:
    from medsearch.producer import Publisher

    index = report_worker
    names = names_for(index)
    publisher = Publisher(bootstrap=kafka_bootstrap, object_store_url=object_store_url, index=index, source="test")
    try:
        for rid, (study, text) in REPORTS.items():
            assert publisher.publish_report(report_id=rid, text=text, study_uid=study).status == "published"
        assert publisher.publish_report(report_id="rpt-empty", text="  \n ").status == "published"
        big = "No pleural effusion. " * (MAX_TEXT_BYTES // 20 + 10)
        refused = publisher.publish_report(report_id="rpt-oversized", text=big)
        assert refused.status == "rejected" and "exceeds the limit" in (refused.reason or "")
        publisher.flush()
    finally:
        publisher.close()
    # what a producer that skipped the checks could still send: an oversized and a binary claim check
    oversized = _claim(object_store_url, index, "rpt-oversized", big.encode())
    binary = _claim(object_store_url, index, "rpt-binary", b"\x00\x01\x02\x03 PK\x03\x04")
    send_raw(kafka_bootstrap, names.reports_topic, [oversized, binary, b"{not json"])

    # worker start-up (spaCy, medspaCy, MiniLM, ICD-10-CM tables) is included in this wait
    wait_for(lambda: _count(milvus_uri, index) == len(REPORTS) or _count(milvus_uri, index), 240, "indexed reports")
    letters = read_dead_letters(kafka_bootstrap, index, expect=4, timeout=60)
    by_id = {str(dl.original.get("report_id", "<malformed>")): dl for dl in letters}
    assert sorted(by_id) == ["<malformed>", "rpt-binary", "rpt-empty", "rpt-oversized"]
    assert by_id["rpt-empty"].stage == "decode" and "empty" in by_id["rpt-empty"].error
    assert by_id["rpt-oversized"].stage == "decode" and "oversized" in by_id["rpt-oversized"].error
    assert by_id["rpt-binary"].stage == "decode" and "binary" in by_id["rpt-binary"].error
    assert by_id["<malformed>"].stage == "decode_message"
    for dl in letters:  # the text is redacted in dead letters
        assert "pleural" not in json.dumps(dl.original)

    rows = {r["report_id"]: r for r in _rows(postgres_dsn, index)}
    assert sorted(rows) == sorted(REPORTS)
    for rid, want in EXPECTED.items():
        row = rows[rid]
        got = {"positive": row["icd10_positive"], "negative": sorted(row["icd10_negative"]),
               "uncertain": sorted(row["icd10_uncertain"])}  # fmt: skip
        assert got == {k: (sorted(v) if k != "positive" else v) for k, v in want.items()}, rid
        assert row["study_uid"] == (REPORTS[rid][0] or "")
        assert row["nlp_backend"] == "lexicon" and len(row["text_vector"]) == 384
        entities = row["entities"] if isinstance(row["entities"], list) else json.loads(row["entities"])
        assert all({"text", "start", "end", "category", "traits", "icd10", "section"} <= set(e) for e in entities)
    assert rows["rpt-effusion"]["indication"] == "Shortness of breath."
    assert rows["rpt-effusion"]["impression"].startswith("Cardiomegaly")
    assert "cardiomegaly" in rows["rpt-effusion"]["positive_signs"]

    with pgstore.connect(postgres_dsn) as conn:  # the keyword index is PostgreSQL's
        fts = conn.execute(f"SELECT report_id FROM {names.pg_schema}.reports "
                           "WHERE tsv @@ websearch_to_tsquery('simple', 'pneumothorax')").fetchall()
    fts_ids = {r[0] for r in fts}
    assert "rpt-ptx" in fts_ids and "rpt-uncertain" not in fts_ids
    client = milvus_client(milvus_uri)
    try:
        coll = names.reports_collection
        assert count_rows(client, coll) == len(REPORTS)  # Milvus holds every report written to PostgreSQL
        pos = client.query(coll, filter='array_contains(icd10_positive, "J90")', output_fields=["report_id"])
        assert [r["report_id"] for r in pos] == ["rpt-effusion"]
        from medsearch.text_embedding import embed_texts

        vec = embed_texts(["moderate right pneumothorax"])[0].tolist()
        dense = client.search(coll, data=[vec], anns_field=REPORT_VECTOR, limit=1, output_fields=["report_id"])[0]
        assert dense[0]["entity"]["report_id"] == "rpt-ptx"
    finally:
        client.close()

    # re-delivery: the same reports again (bypassing the publisher's duplicate check) add no rows
    again = [_claim(object_store_url, index, rid, t.encode(), study_uid=s) for rid, (s, t) in REPORTS.items()]
    send_raw(kafka_bootstrap, names.reports_topic, again)
    marker = _claim(object_store_url, index, "rpt-marker", b"Small hiatal hernia.")
    send_raw(kafka_bootstrap, names.reports_topic, [marker])
    wait_for(lambda: _count(milvus_uri, index) == len(REPORTS) + 1 or _count(milvus_uri, index), 120, "marker row")
    time.sleep(1.0)
    rows_after = {r["report_id"]: r for r in _rows(postgres_dsn, index)}
    assert len(rows_after) == len(REPORTS) + 1 and rows_after["rpt-marker"]["icd10_positive"] == ["K44.9"]
