"""The report worker's batch handler with the real analyzer, a fake embedder and an in-memory writer."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from medsearch_workers.consumer import Incoming, TransientError
from medsearch_workers.nlp import Analyzer
from medsearch_workers.nlp.linking import LexicalOnlyLinker
from medsearch_workers.report_worker import InvalidReportText, ReportBatchHandler, check_text
from worker_fakes import MemoryWriter

from medsearch import store
from medsearch.contracts.collections import MAX_TEXT_BYTES, REPORT_FIELDS
from medsearch.contracts.messages import Report
from medsearch.ledger import LEDGER_PAIRS

INDEX = "unit-idx"


def fake_embed(texts: list[str]) -> np.ndarray:
    out = np.zeros((len(texts), 384), dtype=np.float32)
    for i, t in enumerate(texts):
        out[i, len(t) % 384] = 1.0
    return out


STORE = "memory://unit-store"


def msg(offset: int, **fields: Any) -> Incoming:
    """A Report message; ``text=`` is stored as a claim check in the in-memory store first, as the publisher does."""
    text = fields.pop("text", None)
    if text is not None:
        data = text.encode("utf-8") if isinstance(text, str) else text
        fields["sha256"] = store.sha256_hex(data)
        fields["uri"] = store.join(STORE, INDEX, "reports", f"{fields['sha256']}.txt")
        store.put_bytes(fields["uri"], data)
    fields.setdefault("sha256", "0" * 64)
    raw = Report(index=INDEX, **fields).to_bytes()
    return Incoming(raw=raw, key=None, topic=f"{INDEX}.reports", partition=0, offset=offset)


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer(linker=LexicalOnlyLinker())


def make_handler(analyzer: Analyzer, writer: MemoryWriter, **kw: Any) -> ReportBatchHandler:
    kw.setdefault("object_store_url", STORE)
    return ReportBatchHandler(index=INDEX, analyzer=analyzer, embed=fake_embed, writer=writer, **kw)


def test_rows_have_exactly_the_report_fields(analyzer: Analyzer) -> None:
    writer = MemoryWriter("report_id")
    handler = make_handler(analyzer, writer)
    text = "INDICATION: Cough.\nFINDINGS: Small left pleural effusion. No pneumothorax.\nIMPRESSION: Effusion."
    failures = handler([msg(0, report_id="r1", study_uid="1.2.3", text=text, report_date="2024-02-29"),
                        msg(1, report_id="undated", text="No effusion.")])
    assert failures == []
    assert writer.rows["r1"]["report_date"] == 20240229 and writer.rows["undated"]["report_date"] == 0
    row = writer.rows["r1"]
    assert tuple(row) == (*(f.name for f in REPORT_FIELDS), LEDGER_PAIRS) and row[LEDGER_PAIRS] == []
    assert row["icd10_positive"] == ["J90"] and row["icd10_negative"] == ["J93.9"]
    assert row["findings"] == "Small left pleural effusion. No pneumothorax."
    assert row["impression"] == "Effusion." and row["indication"] == "Cough."
    assert row["study_uid"] == "1.2.3" and row["text"] == text
    assert len(row["text_vector"]) == 384
    json.dumps(row["entities"])  # JSON-able
    assert row["positive_symptoms"] == ["cough"] and row["nlp_backend"] == "lexicon"


def test_bad_reports_are_dead_lettered_and_good_ones_written(analyzer: Analyzer) -> None:
    writer = MemoryWriter("report_id")
    handler = make_handler(analyzer, writer)
    batch = [
        msg(0, report_id="ok", text="Mild cardiomegaly."),
        msg(1, report_id="empty", text="   \n "),
        msg(2, report_id="big", text="No effusion. " * (MAX_TEXT_BYTES // 10)),
        msg(3, report_id="bin", text="\x00\x01\x02garbage"),
        Incoming(raw=b"not json", key=None, topic="t", partition=0, offset=4),
        Incoming(raw=json.dumps({"index": "other", "report_id": "x", "text": "t"}).encode(), key=None, topic="t",
                 partition=0, offset=5),
    ]
    failures = handler(batch)
    assert sorted(writer.rows) == ["ok"]
    got = {f.message.offset: (f.stage, f.error) for f in failures}
    assert got[1][0] == "decode" and "empty" in got[1][1]
    assert got[2][0] == "decode" and "oversized" in got[2][1]
    assert got[3][0] == "decode" and "binary" in got[3][1]
    assert got[4][0] == "decode_message" and got[5][0] == "decode_message"
    assert "No effusion" not in " ".join(e for _, e in got.values())  # report text never in errors


def test_duplicate_ids_in_a_batch_keep_the_last(analyzer: Analyzer) -> None:
    writer = MemoryWriter("report_id")
    handler = make_handler(analyzer, writer)
    first = msg(0, report_id="r", text="No effusion.")
    assert handler([first, msg(1, report_id="r", text="Small effusion.")]) == []
    assert writer.calls == 1 and writer.rows["r"]["icd10_positive"] == ["J90"]
    # the superseded message's ledger row is marked indexed with the row that replaced it
    assert writer.rows["r"][LEDGER_PAIRS] == [("r", Report.from_bytes(first.raw).sha256)]


def test_reports_by_uri(analyzer: Analyzer, tmp_path: Any) -> None:
    url = f"file://{tmp_path}"
    store.put_bytes(store.join(url, "r.txt"), b"Small right pneumothorax.")
    writer = MemoryWriter("report_id")
    (tmp_path / "folder.txt").mkdir()
    (tmp_path.parent / "outside.txt").write_text("Outside the store.")
    read: list[str] = []

    def fetch(uri: str) -> bytes:
        read.append(uri)
        return store.get_bytes(uri)

    handler = make_handler(analyzer, writer, object_store_url=url, fetch=fetch)
    forbidden = ["file:///etc/passwd", "http://169.254.169.254/latest/meta-data/", "nope://x",
                 f"{url}/../outside.txt", f"file://{tmp_path.parent}/outside.txt"]
    failures = handler(
        [msg(0, report_id="a", uri=store.join(url, "r.txt"), sha256=store.sha256_hex(b"Small right pneumothorax.")),
         msg(1, report_id="b", uri=store.join(url, "nope.txt")),
         msg(2, report_id="c", uri=store.join(url, "folder.txt"))]
        + [msg(3 + i, report_id=f"x{i}", uri=u) for i, u in enumerate(forbidden)]
    )
    assert writer.rows["a"]["icd10_positive"] == ["J93.9"]
    assert [(f.message.offset, f.stage) for f in failures] == [(i, "fetch") for i in range(1, 3 + len(forbidden))]
    assert "not a file" in failures[1].error
    assert all("nothing was read" in f.error or "not allowed" in f.error for f in failures[2:])
    assert read == [store.join(url, p) for p in ("r.txt", "nope.txt", "folder.txt")]


def test_claim_check_content_must_match_its_sha256(analyzer: Analyzer) -> None:
    writer = MemoryWriter("report_id")
    good = msg(0, report_id="r", text="Small effusion.")
    uri = Report.from_bytes(good.raw).uri
    store.put_bytes(uri, b"Changed after publishing.")
    failures = make_handler(analyzer, writer)([good])
    assert [(f.stage, "does not match" in f.error) for f in failures] == [("fetch", True)] and not writer.rows


def test_embedding_failure_is_transient(analyzer: Analyzer) -> None:
    def broken(texts: list[str]) -> np.ndarray:
        raise RuntimeError("out of memory")

    handler = make_handler(analyzer, MemoryWriter("report_id"))
    handler.embed = broken
    with pytest.raises(TransientError):
        handler([msg(0, report_id="r", text="No effusion.")])


def test_check_text() -> None:
    assert check_text(b"Normal chest.") == "Normal chest."
    for bad, reason in [(b"\xff\xfe\x00x", "binary"), (b"\xc3\x28", "UTF-8"), ("", "empty"),
                        ("\x01\x02\x03\x04 text", "control"), ("x" * (MAX_TEXT_BYTES + 1), "oversized"),
                        ("é" * (MAX_TEXT_BYTES // 2 + 1), "oversized")]:  # fmt: skip
        with pytest.raises(InvalidReportText, match=reason):
            check_text(bad)
