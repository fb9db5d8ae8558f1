"""Dead-letter queue tooling: read ``<index>.dlq``, say what failed and why, and re-publish what can be retried.

Workers dead-letter a message when it failed permanently (not DICOM, undecodable, empty report, ...). Once the
cause is fixed (a decoder installed, a file repaired in the object store, a bug fixed), ``medsearch dlq replay``
sends the original message again to the topic it came from, with the key it was first published with. Replays
are safe to repeat: the workers upsert by primary key (SOPInstanceUID, report id).

Inline report text is never in a dead letter (it is redacted when the letter is written), so such reports
cannot be replayed from the queue: ingest their source file again. Pure functions (:func:`plan`,
:func:`select`, :func:`summarize`) carry the logic; :func:`read` and :func:`replay` do the I/O.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from medsearch.contracts.messages import DeadLetter, DicomObject, MessageError, Report
from medsearch.contracts.naming import IndexRef, names_of

if TYPE_CHECKING:
    from medsearch.producer import Publisher


class DlqError(RuntimeError):
    """The dead-letter topic cannot be read (broker unreachable, topic missing)."""


@dataclass(frozen=True)
class DlqEntry:
    """One record of ``<index>.dlq``: the parsed letter, or why the record itself is unreadable."""

    partition: int
    offset: int
    letter: DeadLetter | None
    problem: str | None = None

    @property
    def ref(self) -> str:
        """``partition:offset``, what ``--offset`` selects."""
        return f"{self.partition}:{self.offset}"

    @property
    def subject(self) -> str:
        """What failed, without report text or patient identifiers: the report id or the object's URI."""
        if self.letter is None:
            return ""
        o = self.letter.original
        return str(o.get("report_id") or o.get("uri") or next(iter(o), ""))[:200]


@dataclass(frozen=True)
class Plan:
    """Whether an entry can be replayed: the message to send, or the reason it cannot be."""

    entry: DlqEntry
    message: DicomObject | Report | None
    reason: str | None = None


def plan(entry: DlqEntry, index: IndexRef) -> Plan:
    """Rebuild the original message of a dead letter for ``index``, or say why it cannot be replayed."""
    letter = entry.letter
    if letter is None:
        return Plan(entry, None, f"unreadable dead-letter record: {entry.problem}")
    names = names_of(index)
    original = dict(letter.original)
    try:
        if letter.topic == names.dicom_topic:
            return Plan(entry, DicomObject.model_validate(original))
        if letter.topic == names.reports_topic:
            text = original.get("text")
            if isinstance(text, str) and text.startswith("<") and text.endswith("characters redacted>"):
                return Plan(entry, None, "inline report text is redacted in dead letters: ingest its file again")
            return Plan(entry, Report.model_validate(original))
    except ValueError as err:  # pydantic's ValidationError is a ValueError
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in getattr(err, "errors", lambda: [])())
        return Plan(entry, None, f"the original message is not a valid {letter.topic} message ({fields or err})")
    return Plan(entry, None, f"came from topic {letter.topic!r}, not from index {index!r}")


def select(
    entries: Iterable[DlqEntry],
    *,
    stages: Sequence[str] = (),
    match: str | None = None,
    refs: Sequence[str] = (),
) -> list[DlqEntry]:
    """Entries with one of ``stages``, whose error contains ``match`` (case-insensitive) and whose
    ``partition:offset`` (or bare offset, any partition) is in ``refs``; an empty criterion selects all."""
    wanted = {r.strip() for r in refs if r.strip()}
    needle = match.lower() if match else None
    out = []
    for e in entries:
        if stages and (e.letter is None or e.letter.stage not in stages):
            continue
        if needle is not None and (e.letter is None or needle not in e.letter.error.lower()):
            continue
        if wanted and e.ref not in wanted and str(e.offset) not in wanted:
            continue
        out.append(e)
    return out


def reason_of(error: str) -> str:
    """The error's leading reason (``undecodable``, ``empty report``, ...), for grouping."""
    head = error.split(":", 1)[0].strip()
    return head[:80] or "unknown"


def summarize(entries: Sequence[DlqEntry], index: IndexRef) -> dict[str, Any]:
    """Counts by source topic, stage and reason, and how many can be replayed."""
    by: Counter[tuple[str, str, str]] = Counter()
    replayable = 0
    for e in entries:
        if e.letter is None:
            by[("?", "?", "unreadable record")] += 1
        else:
            by[(e.letter.topic, e.letter.stage, reason_of(e.letter.error))] += 1
        replayable += plan(e, index).message is not None
    groups = [
        {"topic": t, "stage": s, "reason": r, "count": n}
        for (t, s, r), n in sorted(by.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    return {"index": str(names_of(index)), "total": len(entries), "replayable": replayable, "groups": groups}


def entry_dict(e: DlqEntry) -> dict[str, Any]:
    """The JSON shape of one entry (``medsearch dlq list --json``)."""
    d: dict[str, Any] = {"partition": e.partition, "offset": e.offset, "subject": e.subject}
    if e.letter is None:
        d["problem"] = e.problem
        return d
    d.update(topic=e.letter.topic, stage=e.letter.stage, error=e.letter.error, attempts=e.letter.attempts,
             worker=e.letter.worker, failed_at=e.letter.failed_at)
    return d


def read(bootstrap: str, index: IndexRef, *, timeout: float = 30.0,
         security: dict[str, Any] | None = None) -> list[DlqEntry]:
    """Every record of ``<index>.dlq`` from the beginning to the end offsets seen at the start (no consumer
    group: reading changes nothing)."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    topic = names_of(index).dlq_topic
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=[s.strip() for s in bootstrap.split(",") if s.strip()],
            group_id=None, enable_auto_commit=False, request_timeout_ms=10000,
            bootstrap_timeout_ms=int(min(timeout, 8.0) * 1000), **(security or {}),
        )  # fmt: skip
    except (KafkaError, OSError) as err:
        raise DlqError(
            f"Kafka broker at {bootstrap} is unreachable ({type(err).__name__}): start the local stack "
            "(medsearch up) or pass --bootstrap / set MEDSEARCH_KAFKA_BOOTSTRAP"
        ) from err
    out: list[DlqEntry] = []
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise DlqError(f"topic {topic} does not exist (is {index!r} an index? see medsearch status)")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        remaining = {tp for tp in tps if end[tp] > consumer.position(tp)}
        deadline = time.monotonic() + timeout
        while remaining:
            if time.monotonic() > deadline:
                raise DlqError(f"timed out after {timeout:.0f}s reading {topic} ({len(out)} records read)")
            for tp, records in consumer.poll(timeout_ms=500).items():
                for r in records:
                    if r.offset >= end[tp]:
                        continue
                    try:
                        out.append(DlqEntry(r.partition, r.offset, DeadLetter.from_bytes(r.value)))
                    except MessageError as err:
                        out.append(DlqEntry(r.partition, r.offset, None, str(err)))
                if consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
    except KafkaError as err:
        raise DlqError(f"cannot read {topic} from {bootstrap}: {err}") from err
    finally:
        consumer.close()
    out.sort(key=lambda e: (e.partition, e.offset))
    return out


def replay(plans: Sequence[Plan], publisher: Publisher) -> int:
    """Send every replayable plan's message through ``publisher`` and
    wait for the acknowledgements; returns how many were sent."""
    sent = 0
    for p in plans:
        if p.message is not None:
            publisher.republish(p.message)
            sent += 1
    publisher.flush()
    return sent
