"""The report worker: ``<index>.reports`` → analyze (sections, NER, assertion, ICD-10-CM) → embed the text
(all-MiniLM-L6-v2) → upsert into PostgreSQL (the ``reports`` table of the index's schema, one transaction per
batch; full-text search is PostgreSQL's), then the vector and filter fields into the Milvus collection
``<index>_reports``, both keyed by report id.

Run it as ``python -m medsearch_workers.report_worker`` (or ``medsearch-report-worker``), configured by
``MEDSEARCH_*`` variables (:class:`~medsearch.contracts.settings.WorkerSettings`) and, when set,
``MEDSEARCH_INDEX_SPEC_FILE`` (a ``MedicalSearchIndex`` YAML; its ``spec.nlp`` picks the NER backend).

Permanent failures (dead-lettered, never retried): a message that is not a valid ``Report``; a URI outside the
configured object store (nothing is read); a report object that does not exist, is not a file or cannot be read
for lack of permission; content whose sha256 is not the message's; text that is empty, binary (not UTF-8, NUL or
control bytes) or longer than ``MAX_TEXT_BYTES`` (UTF-8). PostgreSQL, Milvus or the object store being unavailable
is transient (the batch is retried, nothing is committed). Report text is never logged.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Unpack

from numpy.typing import NDArray

from medsearch import store
from medsearch.contracts.collections import (
    MAX_CODES,
    MAX_TERMS,
    MAX_TEXT_BYTES,
    REPORT_FIELDS,
    REPORT_PK,
    REPORT_TEXT,
    REPORT_VECTOR,
    TERM_LEN,
)
from medsearch.contracts.messages import MessageError, Report, date_to_yyyymmdd
from medsearch.contracts.settings import WorkerSettings
from medsearch.contracts.spec import MedicalSearchIndexSpec
from medsearch.ledger import LEDGER_PAIRS
from medsearch_workers.consumer import Failure, Incoming, TransientError, reached
from medsearch_workers.runtime import RuntimeParts, WorkerRuntime, worker_runtime
from medsearch_workers.runtime import main as runtime_main
from medsearch_workers.writers import RowWriter

log = logging.getLogger("medsearch.workers.report")

# Every REPORT_FIELDS name (the columns of the reports table).
ROW_FIELDS: tuple[str, ...] = tuple(f.name for f in REPORT_FIELDS)
_SECTION_MAX = next(f.max_length for f in REPORT_FIELDS if f.name == "findings") or 65535
_ID_MAX = next(f.max_length for f in REPORT_FIELDS if f.name == REPORT_PK) or 256
_UID_MAX = next(f.max_length for f in REPORT_FIELDS if f.name == "study_uid") or 128
_BACKEND_MAX = next(f.max_length for f in REPORT_FIELDS if f.name == "nlp_backend") or 64


class InvalidReportText(ValueError):
    """Report text that can never be indexed (empty, binary, oversized)."""


def check_text(data: str | bytes) -> str:
    """The report text, or :class:`InvalidReportText` naming the reason (without quoting the text)."""
    if isinstance(data, bytes):
        if b"\x00" in data:
            raise InvalidReportText("binary content (NUL bytes), not report text")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InvalidReportText(f"not UTF-8 text (invalid byte at offset {err.start})") from None
    else:
        text = data
    if "\x00" in text:
        raise InvalidReportText("binary content (NUL characters), not report text")
    if not text.strip():
        raise InvalidReportText("empty report text")
    control = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\r\f")
    if control > max(2, len(text) // 100):
        raise InvalidReportText(f"binary content ({control} control characters), not report text")
    size = len(data) if isinstance(data, bytes) else len(text.encode("utf-8"))
    if size > MAX_TEXT_BYTES:
        raise InvalidReportText(f"oversized report: {size} bytes (UTF-8) > limit {MAX_TEXT_BYTES} bytes")
    return text


class TextAnalyzer(Protocol):
    backend: Any

    def analyze_many(self, texts: list[str]) -> list[Any]: ...


EmbedTexts = Callable[[list[str]], NDArray[Any]]


def _terms(values: Sequence[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        v = v[:TERM_LEN]
        if v and v not in out:
            out.append(v)
    return out[:MAX_TERMS]


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[:n]


def embedding_text(analysis: Any, text: str) -> str:
    """What the dense vector represents: IMPRESSION then FINDINGS when present (MiniLM reads ~256 tokens)."""
    sections = analysis.sections
    parts = [sections.get(k, "") for k in ("IMPRESSION", "FINDINGS")]
    joined = "\n".join(p for p in parts if p.strip())
    return joined or text


def build_row(
    report: Report, text: str, analysis: Any, vector: NDArray[Any], *, backend_name: str, now_ms: int
) -> dict[str, Any]:
    """One ``<index>_reports`` row with exactly :data:`ROW_FIELDS`."""
    sections = analysis.sections
    entities = [e.to_dict() for e in analysis.entities]
    row: dict[str, Any] = {
        REPORT_PK: report.report_id,
        "study_uid": _clip(report.study_uid or "", _UID_MAX),
        REPORT_TEXT: text,
        "findings": _clip(sections.get("FINDINGS", "") or sections.get("BODY", ""), _SECTION_MAX),
        "impression": _clip(sections.get("IMPRESSION", ""), _SECTION_MAX),
        "indication": _clip(sections.get("INDICATION", ""), _SECTION_MAX),
        "sections": dict(sections),
        "report_date": date_to_yyyymmdd(report.report_date),
        "icd10_positive": list(analysis.icd10_positive)[:MAX_CODES],
        "icd10_negative": list(analysis.icd10_negative)[:MAX_CODES],
        "icd10_uncertain": list(analysis.icd10_uncertain)[:MAX_CODES],
        "positive_signs": _terms(analysis.positive_signs),
        "negative_signs": _terms(analysis.negative_signs),
        "positive_diagnoses": _terms(analysis.positive_diagnoses),
        "negative_diagnoses": _terms(analysis.negative_diagnoses),
        "positive_symptoms": _terms(analysis.positive_symptoms),
        "negative_symptoms": _terms(analysis.negative_symptoms),
        "entities": entities,
        "nlp_backend": _clip(backend_name, _BACKEND_MAX),
        "ingested_at": now_ms,
        REPORT_VECTOR: [float(x) for x in vector],
    }
    assert tuple(row) == ROW_FIELDS, "row fields drifted from REPORT_FIELDS"
    return row


@dataclass
class _Ready:
    msg: Incoming
    report: Report
    text: str


class ReportBatchHandler:
    """The consumer :data:`~medsearch_workers.consumer.Handler` of the report worker."""

    def __init__(
        self,
        *,
        index: str,
        analyzer: TextAnalyzer,
        embed: EmbedTexts,
        writer: RowWriter,
        object_store_url: str,
        backend_name: str = "lexicon",
        fetch: Callable[[str], bytes] | None = None,
    ) -> None:
        """``object_store_url``: the only place report objects are read from (any other URI is dead-lettered at
        ``fetch`` unread); ``fetch`` reads an allowed URI (default: :func:`medsearch.store.get_bytes`)."""
        self.index = index
        self.object_store_url = object_store_url
        self.analyzer = analyzer
        self.embed = embed
        self.writer = writer
        self.backend_name = backend_name
        self.fetch = fetch or store.get_bytes

    def _prepare(self, msg: Incoming) -> _Ready | Failure:
        try:
            report = Report.from_bytes(msg.raw)
        except MessageError as err:
            return Failure(msg, "decode_message", str(err))
        if report.index != self.index:
            return Failure(msg, "decode_message", f"report for index {report.index!r} on the topic of {self.index!r}")
        reached("fetch")
        try:
            store.check_within(report.uri, self.object_store_url)
            data = self.fetch(report.uri)
        except store.PermanentStoreError as err:
            return Failure(msg, "fetch", f"report {report.report_id!r}: {err}")
        except store.StoreError as err:
            raise TransientError(f"object store: {err}", stage="fetch") from err
        if store.sha256_hex(data) != report.sha256:
            return Failure(msg, "fetch", f"report {report.report_id!r}: {report.uri}: content does not match the "
                                         "message's sha256")
        reached("decode")
        try:
            text = check_text(data)
        except InvalidReportText as err:
            return Failure(msg, "decode", f"report {report.report_id!r}: {err}")
        return _Ready(msg, report, text)

    def __call__(self, batch: list[Incoming]) -> list[Failure]:
        failures: list[Failure] = []
        ready: list[_Ready] = []
        for msg in batch:
            got = self._prepare(msg)
            (failures if isinstance(got, Failure) else ready).append(got)  # type: ignore[arg-type]  # union split
        # the last message of a report id wins (upsert semantics; one row per key per request)
        latest: dict[str, _Ready] = {}
        superseded: dict[str, list[tuple[str, str]]] = {}
        for r in ready:
            old = latest.pop(r.report.report_id, None)
            if old is not None:
                superseded.setdefault(r.report.report_id, []).append((old.report.report_id, old.report.sha256))
            latest[r.report.report_id] = r
        items = list(latest.values())
        if not items:
            return failures
        analyses: list[Any] = []
        reached("analyze")
        try:
            analyses = list(self.analyzer.analyze_many([r.text for r in items]))
        except Exception:  # noqa: BLE001 - isolate the report that breaks the analyzer, keep the others
            analyses = []
            kept: list[_Ready] = []
            for r in items:
                try:
                    analyses.append(self.analyzer.analyze_many([r.text])[0])
                    kept.append(r)
                except Exception as err:  # noqa: BLE001 - a permanent analyzer failure for this report
                    failures.append(Failure(r.msg, "analyze", f"{type(err).__name__}: {err}"))
            items = kept
        if not items:
            return failures
        reached("embed")
        try:
            vectors = self.embed([embedding_text(a, r.text) for r, a in zip(items, analyses, strict=True)])
        except Exception as err:
            raise TransientError(f"text embedding failed: {err}", stage="embed") from err
        now_ms = int(time.time() * 1000)
        rows = [
            build_row(r.report, r.text, a, v, backend_name=self.backend_name, now_ms=now_ms)
            for r, a, v in zip(items, analyses, vectors, strict=True)
        ]
        for row in rows:  # not a column: the ledger rows of the messages this batch collapsed into the row
            row[LEDGER_PAIRS] = superseded.get(row[REPORT_PK], [])
        reached("write")
        self.writer.upsert(rows)
        log.info("indexed %d reports (%d dead-lettered)", len(rows), len(failures))
        return failures


def backend_name_of(spec: MedicalSearchIndexSpec) -> str:
    """The NER backend as recorded with each report: ``spec.nlp.backend``, with the model's base name."""
    backend, model = spec.nlp.backend, spec.nlp.model
    return backend if not model else f"{backend}:{os.path.basename(model.rstrip('/'))}"


def run(settings: WorkerSettings | None = None, **parts: Unpack[RuntimeParts]) -> None:
    """Run the worker until stopped (SIGTERM/SIGINT or ``stop``)."""
    with worker_runtime("report", settings, **parts) as rt:
        rt.consume(_handler(rt))


def _handler(rt: WorkerRuntime) -> ReportBatchHandler:
    """The worker's handler: the spec's NLP backend loaded and warmed up, the index's writer."""
    from medsearch.text_embedding import embed_texts
    from medsearch_workers.nlp import Analyzer, get_backend

    nlp = rt.spec.nlp
    analyzer = Analyzer(get_backend(nlp.backend, nlp.model), indication_positive=nlp.indication_positive)
    backend_name = backend_name_of(rt.spec)
    t0 = time.perf_counter()
    analyzer.analyze_many(["Warm-up: no pleural effusion."])  # loads the lexicon, ConText, ICD tables, MiniLM
    embed_texts(["warm-up"])
    log.info("NLP backend %s ready in %.1fs", backend_name, time.perf_counter() - t0)
    writer = rt.index_writer()
    return ReportBatchHandler(
        index=rt.settings.index,
        analyzer=analyzer,
        embed=lambda texts: embed_texts(texts, batch_size=32),
        writer=writer,
        object_store_url=rt.settings.object_store_url,
        backend_name=backend_name,
    )


def main(argv: Sequence[str] | None = None) -> None:
    runtime_main(run)


if __name__ == "__main__":
    main()
