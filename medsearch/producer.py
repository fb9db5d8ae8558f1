"""Publishing DICOM objects and reports for ingest (``medsearch ingest``, and the gateway's upload path).

DICOM: the file is validated by content (DICOM header readable, not the extension), uploaded to
``<store>/<index>/dicom/<sha256>.dcm``, and a :class:`~medsearch.contracts.messages.DicomObject` is published on
``<index>.dicom`` keyed by StudyInstanceUID (one study stays on one partition, in order).
Reports: the text (UTF-8, at most ``MAX_TEXT_BYTES``) is stored at ``<store>/<index>/reports/<sha256>.txt`` (a claim
check) and a :class:`~medsearch.contracts.messages.Report` carrying its URI and sha256, never the text, is published on
``<index>.reports``.

Duplicates are what the index's ingest ledger (:mod:`medsearch.ledger`, PostgreSQL) holds as indexed; every object
and report is recorded there before it is published (a transactional outbox), so a message a broker restart lost is
published again (the next ingest of the same content, or ``medsearch ingest --resume``). A publisher without a
ledger (benchmarks) only skips what it sent itself. Quarantined objects are dead-lettered again when received again.
No torch or NLP imports here; nothing here logs report text or patient identifiers.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from medsearch import store
from medsearch.contracts.collections import MAX_TEXT_BYTES
from medsearch.contracts.messages import DeadLetter, DicomObject, Report, parse_report_date
from medsearch.contracts.naming import IndexRef, names_of
from medsearch.imaging import ImageDecodeError, check_image_limits, looks_like_dicom

if TYPE_CHECKING:
    from medsearch.ledger import Ledger

log = logging.getLogger("medsearch.producer")

REPORT_SUFFIXES = (".txt", ".json", ".jsonl")
_FLUSH_EVERY = 256


class PublishError(RuntimeError):
    """The broker is unreachable or did not acknowledge; the message says which and what to check."""


class LedgerUnavailable(PublishError):
    """The ingest ledger (PostgreSQL) could not be read or written: nothing was published."""


@dataclass
class PublishResult:
    kind: Literal["dicom", "report"]
    id: str
    uri: str | None
    sha256: str
    status: Literal["published", "duplicate", "pending", "rejected", "quarantined"]
    reason: str | None = None


# ------------------------------------------------------------------------------------------------ discovery


@dataclass(frozen=True)
class DicomFile:
    path: Path
    data: bytes
    study_uid: str | None


@dataclass(frozen=True)
class ReportItem:
    path: Path
    report_id: str
    text: str
    study_uid: str | None
    report_date: dt.date | None = None


@dataclass(frozen=True)
class Rejected:
    path: Path
    reason: str


WorkItem = DicomFile | ReportItem | Rejected


def message_key(message: DicomObject | Report) -> str:
    """The Kafka key: the study, so that a study's objects and report land on one partition in order; else the
    object's own identity."""
    if isinstance(message, DicomObject):
        return message.study_uid or message.sha256
    return message.study_uid or message.report_id


def dicom_header(data: bytes) -> Any | None:
    """The dataset (without pixel data) when ``data`` is a readable DICOM file, else None."""
    if not looks_like_dicom(data):
        return None
    import pydicom
    from pydicom.errors import InvalidDicomError

    has_preamble = data[128:132] == b"DICM"
    try:
        check_image_limits(data)  # a Deflated bomb would otherwise be inflated whole just to read its header
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=not has_preamble)
    except (InvalidDicomError, EOFError, ValueError, KeyError, OSError, TypeError, AttributeError):
        return None  # ImageDecodeError (over the size limits) is a ValueError
    if not has_preamble:
        # A forced read of arbitrary bytes "succeeds" with garbage: demand a real identifying element.
        try:
            if not any(ds.get(k) for k in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "Modality")):
                return None
        except Exception:  # noqa: BLE001 - garbage elements fail to decode in many ways: not DICOM
            return None
    return ds


def _study_uid(ds: Any) -> str | None:
    try:
        uid = ds.get("StudyInstanceUID")
    except Exception:  # noqa: BLE001 - a malformed element is the worker's business, not the key's
        return None
    return (str(uid).strip() or None) if uid else None


def _report_from_obj(obj: Any, path: Path, where: str) -> ReportItem:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object with report_id/id and text")
    rid = obj.get("report_id", obj.get("id"))
    text = obj.get("text")
    study = obj.get("study_uid")
    date = obj.get("report_date", obj.get("date"))
    if not isinstance(rid, (str, int)) or str(rid).strip() == "":
        raise ValueError(f"{where}: missing 'report_id' (or 'id')")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: missing or empty 'text'")
    if study is not None and not isinstance(study, str):
        raise ValueError(f"{where}: 'study_uid' must be a string")
    try:
        day = None if date is None or date == "" else parse_report_date(date)
    except ValueError as err:
        raise ValueError(f"{where}: 'report_date': {err}") from None
    return ReportItem(path, str(rid).strip(), text, study or None, day)


def _reports_in(path: Path) -> Iterator[WorkItem]:
    suffix = path.suffix.lower()
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        yield Rejected(path, f"cannot read report file as UTF-8 text: {type(err).__name__}")
        return
    if suffix == ".txt":
        if not raw.strip():
            yield Rejected(path, "empty report")
        else:
            yield ReportItem(path, path.stem, raw, None)
        return
    if suffix == ".json":
        try:
            item = _report_from_obj(json.loads(raw), path, path.name)
        except json.JSONDecodeError as err:
            yield Rejected(path, f"invalid JSON at line {err.lineno}")
        except ValueError as err:
            yield Rejected(path, str(err))
        else:
            yield item
        return
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name}:{lineno}"
        try:
            item = _report_from_obj(json.loads(line), path, where)
        except json.JSONDecodeError:
            yield Rejected(Path(f"{path}:{lineno}"), f"{where}: invalid JSON")
        except ValueError as err:
            yield Rejected(Path(f"{path}:{lineno}"), str(err))
        else:
            yield item


def iter_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files under ``paths`` (folders walked recursively in sorted order; hidden entries skipped)."""
    for p in paths:
        path = Path(p)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                rel = child.relative_to(path)
                if child.is_file() and not any(part.startswith(".") for part in rel.parts):
                    yield child
        elif path.is_file():
            yield path
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")


def classify(path: Path) -> Iterator[WorkItem]:
    """What one file is: DICOM (by content), reports (by suffix), or rejected with the reason."""
    try:
        data = path.read_bytes()
    except OSError as err:
        yield Rejected(path, f"cannot read: {err.strerror or err}")
        return
    if looks_like_dicom(data):
        try:
            check_image_limits(data, source=str(path))
        except ImageDecodeError as err:
            yield Rejected(path, str(err))
            return
    ds = dicom_header(data)
    if ds is not None:
        yield DicomFile(path, data, _study_uid(ds))
        return
    if path.suffix.lower() in REPORT_SUFFIXES:
        yield from _reports_in(path)
        return
    if not data:
        yield Rejected(path, "empty file")
    elif looks_like_dicom(data):
        yield Rejected(path, "looks like DICOM but the header cannot be read")
    else:
        yield Rejected(path, "not DICOM (by content) and not a report (.txt, .json, .jsonl)")


def discover(paths: Iterable[str | Path]) -> Iterator[WorkItem]:
    """Every work item under ``paths``: DICOM files by content, reports from .txt/.json/.jsonl, rejections."""
    for path in iter_files(paths):
        yield from classify(path)


# ------------------------------------------------------------------------------------------------ publisher


class Publisher:
    """Uploads and publishes; call :meth:`flush` (or :meth:`close`) to wait for the broker's acknowledgements."""

    def __init__(
        self,
        *,
        bootstrap: str,
        object_store_url: str,
        index: IndexRef,
        source: str = "cli",
        producer: Any | None = None,
        security: Mapping[str, Any] | None = None,
        deidentifier: Any = "auto",
        ledger: Ledger | None = None,
        republish_after: float | None = None,
    ) -> None:
        """``security``: kafka-python TLS/SASL options (:func:`medsearch.kafka_security.kafka_security_options`).
        ``deidentifier``: "auto" applies what the index's spec asks for (``spec.privacy.deidentify``, see
        :func:`medsearch.dicomnet.deid.deidentifier_for`); None never de-identifies; or a ``Deidentifier``.
        ``ledger``: the index's :class:`medsearch.ledger.Ledger`: every DICOM object and report is recorded there
        before it is published and duplicates are what it holds as indexed (or published less than
        ``republish_after`` seconds ago: "pending"); without one (benchmarks), only what this publisher sent."""
        from medsearch.ledger import DEFAULT_REPUBLISH_AFTER

        self.ledger = ledger
        self.republish_after = DEFAULT_REPUBLISH_AFTER if republish_after is None else republish_after
        if deidentifier == "auto":
            from medsearch.contracts.settings import default_data_dir
            from medsearch.dicomnet.deid import deidentifier_for

            try:
                deidentifier = deidentifier_for(index, data_dir=default_data_dir(), store_url=object_store_url)
            except ValueError as err:
                raise PublishError(str(err)) from err
        self.deidentifier = deidentifier
        self.names = names_of(index)
        self.security = dict(security or {})
        self.index = self.names.index  # what messages carry; topics and object keys come from self.names
        self.bootstrap = bootstrap
        self.object_store_url = object_store_url.rstrip("/")
        self.source = source
        # (future, (kind, sha256) or None)
        self._pending: list[tuple[Any, tuple[str, str] | None]] = []
        self._seen: set[tuple[str, str]] = set()
        self._producer = producer if producer is not None else self._connect()
        self._shared = False

    def _connect(self) -> Any:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        try:
            return KafkaProducer(
                bootstrap_servers=[s.strip() for s in self.bootstrap.split(",") if s.strip()],
                acks="all",
                linger_ms=20,
                bootstrap_timeout_ms=8000,
                client_id=f"medsearch-{self.source}",
                **self.security,
            )
        except (KafkaError, OSError) as err:
            raise PublishError(
                f"Kafka broker at {self.bootstrap} is unreachable ({type(err).__name__}): start the local stack "
                "(medsearch up) or pass --bootstrap / set MEDSEARCH_KAFKA_BOOTSTRAP"
            ) from err

    def sibling(self, source: str | None = None) -> Publisher:
        """A publisher sharing this one's broker connection (the Kafka producer is thread-safe) with its own pending
        acknowledgements: one per thread, e.g. per DICOM association. Closing it only flushes."""
        other = Publisher(
            bootstrap=self.bootstrap, object_store_url=self.object_store_url, index=self.names,
            source=source or self.source, producer=self._producer, deidentifier=self.deidentifier,
            security=self.security, ledger=self.ledger, republish_after=self.republish_after,
        )
        other._shared = True
        return other

    def _send(self, topic: str, key: str | None, value: bytes, kind: str | None, sha: str | None) -> None:
        """Send; ``kind``/``sha``: remembered, so that this publisher does not send the same content twice."""
        from kafka.errors import KafkaError

        seen = (kind, sha) if kind and sha else None
        try:
            fut = self._producer.send(topic, key=key.encode("utf-8") if key else None, value=value)
        except KafkaError as err:
            raise PublishError(f"cannot publish to {topic} on {self.bootstrap}: {err}") from err
        if seen:  # only once handed to the producer: a failure before this point leaves nothing remembered
            self._seen.add(seen)
        self._pending.append((fut, seen))
        if len(self._pending) >= _FLUSH_EVERY:
            self.flush()

    def _duplicate(self, kind: str, sha: str) -> bool:
        """Already sent by this publisher (pending or acknowledged)."""
        return (kind, sha) in self._seen

    def _store_new(self, kind: Literal["dicom", "report"], item_id: str, key: str, uri: str, data: bytes
                   ) -> PublishResult | None:
        """The result for content that must not be published now (:meth:`_already`); otherwise None, once the
        object is in the store (written unless it is there already)."""
        already = self._already(kind, key)
        if already is not None:
            return PublishResult(kind, item_id, uri, key, already[0], already[1])  # type: ignore[arg-type]  # a status literal
        if not store.exists(uri):
            store.put_bytes(uri, data)
        return None

    def _already(self, kind: Literal["dicom", "report"], key: str) -> tuple[str, str] | None:
        """(status, reason) when this content must not be published now; None to publish it (new, dead, or
        published longer than ``republish_after`` ago and never indexed)."""
        if self._duplicate(kind, key):
            return "duplicate", "same content already published in this run"
        if self.ledger is None:
            return None
        from medsearch.pgstore import DatabaseError

        try:
            st = self.ledger.status(kind, key)
        except DatabaseError as err:
            raise LedgerUnavailable(f"{err} (nothing was published)") from err
        if st is None or st.state == "dead":
            return None
        if st.state == "indexed":
            return "duplicate", "already indexed"
        if st.age_seconds < self.republish_after:
            return "pending", (f"published {st.age_seconds:.0f}s ago, not indexed yet (published again after "
                               f"{self.republish_after:.0f}s)")
        return None

    def _record(self, kind: Literal["dicom", "report"], key: str, subject: str, sha: str, uri: str, topic: str,
                msg: DicomObject | Report) -> None:
        if self.ledger is not None:
            from medsearch.ledger import Entry
            from medsearch.pgstore import DatabaseError

            try:
                self.ledger.record(Entry(kind, key, subject, sha, uri, topic, message_key(msg), msg.to_bytes()))
            except DatabaseError as err:
                raise LedgerUnavailable(f"{err} (nothing was published)") from err

    def resume(self) -> int:
        """Publish again every ledger row published more than ``republish_after`` seconds ago and neither indexed
        nor dead (``medsearch ingest --resume``); returns how many. Call :meth:`flush` after."""
        if self.ledger is None:
            raise PublishError("resuming needs the ingest ledger (PostgreSQL)")
        from medsearch.pgstore import DatabaseError

        sent = 0
        try:
            for p in self.ledger.pending(self.republish_after):
                self.ledger.touch(p.kind, p.key)  # first: a send that fails leaves the row pending for the next run
                self._send(p.topic, p.message_key, p.message, None, None)
                sent += 1
        except DatabaseError as err:
            raise LedgerUnavailable(str(err)) from err
        return sent

    def publish_dicom(self, data: bytes, *, filename: str) -> PublishResult:
        sha = store.sha256_hex(data)
        try:
            check_image_limits(data, source=filename)
        except ImageDecodeError as err:
            return PublishResult("dicom", filename, None, sha, "rejected", str(err))
        ds = dicom_header(data)
        if ds is None:
            return PublishResult("dicom", filename, None, sha, "rejected", "not a readable DICOM file")
        if self.deidentifier is not None:  # before anything is stored (spec.privacy.deidentify)
            from medsearch.dicomnet.deid import DeidentificationError, Quarantined

            try:
                data = self.deidentifier.apply(data)
            except Quarantined as q:
                return self._quarantine(q, filename)
            except DeidentificationError as err:
                return PublishResult("dicom", filename, None, sha, "rejected", str(err))
            sha = store.sha256_hex(data)
            ds = dicom_header(data)
            if ds is None:
                return PublishResult("dicom", filename, None, sha, "rejected", "de-identified file unreadable")
        uri = store.join(self.object_store_url, self.names.object_prefix, "dicom", f"{sha}.dcm")
        known = self._store_new("dicom", filename, sha, uri, data)
        if known is not None:
            return known
        study = _study_uid(ds)
        msg = DicomObject(index=self.index, uri=uri, sha256=sha, study_uid=study, source=self.source)
        self._record("dicom", sha, sha, sha, uri, self.names.dicom_topic, msg)
        self._send(self.names.dicom_topic, message_key(msg), msg.to_bytes(), "dicom", sha)
        return PublishResult("dicom", filename, uri, sha, "published")

    def _quarantine(self, q: Any, filename: str) -> PublishResult:
        """A de-identified object that must be reviewed before indexing: stored apart and dead-lettered with the
        reason (``medsearch dlq replay`` indexes it once reviewed)."""
        sha = store.sha256_hex(q.data)
        uri = store.join(self.object_store_url, self.names.object_prefix, "quarantine", f"{sha}.dcm")
        if self._duplicate("quarantine", sha):
            return PublishResult("dicom", filename, uri, sha, "duplicate",
                                 "same content already quarantined in this run")
        if not store.exists(uri):
            store.put_bytes(uri, q.data)
        msg = DicomObject(index=self.index, uri=uri, sha256=sha, study_uid=q.study_uid, source=self.source)
        letter = DeadLetter.for_message(msg.to_bytes(), topic=self.names.dicom_topic, stage="deidentify",
                                        error=q.reason, attempts=1, worker=f"publisher-{self.source}")
        self._send(self.names.dlq_topic, message_key(msg), letter.to_bytes(), "quarantine", sha)
        return PublishResult("dicom", filename, uri, sha, "quarantined", q.reason)

    def publish_report(
        self, *, report_id: str, text: str, study_uid: str | None = None, report_date: dt.date | None = None
    ) -> PublishResult:
        if self.deidentifier is not None and study_uid:
            study_uid = self.deidentifier.map_uid(study_uid)  # the images' StudyInstanceUIDs are remapped too
        content: list[str | None] = [report_id, study_uid, text]
        if report_date is not None:  # (undated reports keep the content hash they had before dates existed)
            content.append(report_date.isoformat())
        sha = store.sha256_hex(json.dumps(content).encode("utf-8"))
        if not 1 <= len(report_id) <= 256:
            return PublishResult("report", report_id[:64], None, sha, "rejected", "report id must be 1-256 characters")
        data = text.encode("utf-8")
        if len(data) > MAX_TEXT_BYTES:
            return PublishResult(
                "report", report_id, None, sha, "rejected",
                f"report text of {len(data)} bytes (UTF-8, {len(text)} characters) exceeds the limit of "
                f"{MAX_TEXT_BYTES} bytes",
            )
        text_sha = store.sha256_hex(data)
        uri = store.join(self.object_store_url, self.names.object_prefix, "reports", f"{text_sha}.txt")
        known = self._store_new("report", report_id, sha, uri, data)
        if known is not None:
            return known
        msg = Report(
            index=self.index, report_id=report_id, uri=uri, sha256=text_sha, study_uid=study_uid,
            report_date=report_date, source=self.source,
        )
        self._record("report", sha, report_id, text_sha, uri, self.names.reports_topic, msg)
        self._send(self.names.reports_topic, message_key(msg), msg.to_bytes(), "report", sha)
        return PublishResult("report", report_id, uri, sha, "published")

    def republish(self, message: DicomObject | Report) -> str:
        """Send ``message`` again to the topic and with the key it was first published with (a dead letter whose
        cause is fixed); returns the topic. No duplicate check: the workers upsert by primary key."""
        if message.index != self.index:
            raise PublishError(f"message of index {message.index!r} cannot be republished to index {self.index!r}")
        topic = self.names.dicom_topic if isinstance(message, DicomObject) else self.names.reports_topic
        self._send(topic, message_key(message), message.to_bytes(), None, None)
        return topic

    def flush(self, timeout: float = 60.0) -> None:
        """Wait for every pending acknowledgement.

        On failure nothing of the pending batch counts as published: publishing the same content again retries (the
        ledger's rows stay ``published``: ``--resume`` publishes them again too).
        """
        from kafka.errors import KafkaError

        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            self._producer.flush(timeout=timeout)
            for fut, _key in pending:
                fut.get(timeout=timeout)
        except KafkaError as err:
            for _fut, key in pending:
                if key:
                    self._seen.discard(key)
            raise PublishError(
                f"the broker at {self.bootstrap} did not acknowledge {len(pending)} messages: {err}"
            ) from err

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if not self._shared:
                self._producer.close(timeout=10)
