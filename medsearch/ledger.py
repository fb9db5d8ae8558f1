"""The ingest ledger (``<schema>.ingest_ledger``, migration 0002): what was published, indexed or dead, and why.

A transactional outbox for the memory-only (or any) broker: the publisher records a row *before* it publishes;
workers mark rows ``indexed`` in the transaction of their writes (:func:`mark_indexed_in`) and ``dead`` once the
dead letter is written to the outbox (:meth:`Ledger.dead_letter`, one transaction); whatever stays ``published``
longer than ``republish_after`` seconds is published again (by the next ingest of the same content, or
``medsearch ingest --resume``). Rows hold claim checks (URIs, hashes, report ids) and the message to re-publish,
never report text.

The workers' side (migration 0004): ``delivery_attempts`` counts, durably, the handlings of each message begun and
never committed (so a message that kills the worker is isolated after ``maxAttempts`` restarts), and
``dead_letter_outbox`` holds the dead letters between the transaction that marks their rows dead and the broker's
acknowledgement.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from medsearch.contracts.naming import IndexRef, names_of

if TYPE_CHECKING:
    from psycopg import sql

Kind = Literal["dicom", "report"]
DEFAULT_REPUBLISH_AFTER = 300.0
# A row's extra key (not a column): (subject, sha256) of the messages its batch collapsed into it (the same image
# or report id twice), so their ledger rows are marked indexed too.
LEDGER_PAIRS = "_ledger_pairs"


@dataclass(frozen=True)
class Entry:
    """One publication: ``key`` the publisher's content hash, ``subject`` the report id (the object's sha256 for
    DICOM), ``sha256`` the claim check's hash, ``message`` the message's JSON bytes."""

    kind: Kind
    key: str
    subject: str
    sha256: str
    uri: str
    topic: str
    message_key: str | None
    message: bytes


@dataclass(frozen=True)
class Status:
    state: Literal["published", "indexed", "dead"]
    age_seconds: float
    stage: str | None
    reason: str | None
    attempts: int


@dataclass(frozen=True)
class Pending:
    """A row to publish again."""

    kind: Kind
    key: str
    topic: str
    message_key: str | None
    message: bytes


@dataclass(frozen=True)
class Delivery:
    """One message as a worker received it: its position and the sha256 of its bytes (offsets of a memory-only
    broker start again at 0 after a restart, so the position alone does not name a message)."""

    topic: str
    partition: int
    offset: int
    digest: str

    @classmethod
    def of(cls, topic: str, partition: int, offset: int, raw: bytes) -> Delivery:
        import hashlib

        return cls(topic, partition, offset, hashlib.sha256(raw).hexdigest())


@dataclass(frozen=True)
class Attempt:
    """What the ledger holds of a message's uncommitted handlings: how many began, the last stage reached, the
    last error."""

    attempts: int
    stage: str | None
    error: str | None


@dataclass(frozen=True)
class OutboxLetter:
    """A dead letter to publish: the message it replaces (``delivery``), where and with which key, the
    ``DeadLetter`` JSON, and the ledger row it marks dead (``(kind, subject, sha256)``; None for a message that is
    not a valid ingest message)."""

    delivery: Delivery
    dlq_topic: str
    key: bytes | None
    letter: bytes
    row: tuple[Kind, str, str] | None
    stage: str
    reason: str


def ledger_row_of(raw: bytes, topic: str, dicom_topic: str) -> tuple[Kind, str, str] | None:
    """The (kind, subject, sha256) of the ledger row of an ingest message; None when it is not one."""
    from medsearch.contracts.messages import DicomObject, MessageError, Report

    try:
        if topic == dicom_topic:
            obj = DicomObject.from_bytes(raw)
            return "dicom", obj.sha256, obj.sha256
        rep = Report.from_bytes(raw)
        return "report", rep.report_id, rep.sha256
    except MessageError:
        return None


def _ident(name: str) -> sql.Identifier:
    from psycopg import sql

    return sql.Identifier(name)


def _table(index: IndexRef, name: str = "ingest_ledger") -> sql.Composed:
    from psycopg import sql

    return sql.SQL("{}.{}").format(_ident(names_of(index).pg_schema), _ident(name))


# Also over 'indexed': a report written to PostgreSQL (which marks it indexed) whose Milvus write outlived the retry
# budget is dead-lettered at `write`; it is not searchable until replayed, so the ledger must not call it indexed.
_DEAD_SQL = ("UPDATE {} SET state = 'dead', stage = %s, reason = %s, updated_at = now() "
             "WHERE kind = %s AND subject = %s AND sha256 = %s AND state <> 'dead'")


def mark_indexed_in(cur: Any, index: IndexRef, kind: Kind, pairs: Iterable[tuple[str, str]]) -> None:
    """Inside the caller's transaction: mark the rows of (subject, sha256) pairs indexed (DICOM: subject is the
    sha256). Rows already indexed are left alone; absent rows (content published before the ledger) are skipped."""
    from psycopg import sql

    subjects, hashes = [], []
    for subject, sha in pairs:
        subjects.append(subject)
        hashes.append(sha)
    if not subjects:
        return
    cur.execute(sql.SQL(
        "UPDATE {} AS l SET state = 'indexed', stage = NULL, reason = NULL, updated_at = now() "
        "FROM unnest(%s::text[], %s::text[]) AS d(subject, sha256) "
        "WHERE l.kind = %s AND l.subject = d.subject AND l.sha256 = d.sha256 AND l.state <> 'indexed'"
    ).format(_table(index)), (subjects, hashes, kind))


class Ledger:
    """The ledger of one index over its own PostgreSQL connection (one per publisher or worker; not shared
    between threads without the caller's lock)."""

    def __init__(self, dsn: str, index: IndexRef, *, password: str | None = None) -> None:
        from medsearch.pgstore import LazyConnection

        self.dsn = dsn
        self.index = index
        self._db = LazyConnection(dsn, password)
        self._lock = threading.Lock()  # sibling publishers (one per DICOM association) share one ledger

    def _run(self, stmt: Any, params: Sequence[Any] = (), *, fetch: bool = False) -> list[Any]:
        def one(conn: Any) -> list[Any]:
            cur = conn.execute(stmt, params)
            return list(cur.fetchall()) if fetch else []

        return self._tx(one)

    def _tx(self, work: Callable[[Any], list[Any]]) -> list[Any]:
        """``work(connection)`` in one transaction; :class:`~medsearch.pgstore.DatabaseError` on failure."""
        from medsearch.pgstore import DatabaseError, is_transient

        try:
            with self._lock:
                conn = self._db.get()
                with conn.transaction():
                    return work(conn)
        except Exception as err:  # psycopg errors: reconnect next time, say which store and whether to retry
            self._db.reset()
            raise DatabaseError(f"ingest ledger of index {self.index}: {type(err).__name__}: {err}",
                                transient=is_transient(err)) from err

    def status(self, kind: Kind, key: str) -> Status | None:
        from psycopg import sql

        rows = self._run(sql.SQL(
            "SELECT state, extract(epoch FROM now() - published_at)::float8, stage, reason, attempts "
            "FROM {} WHERE kind = %s AND key = %s").format(_table(self.index)), (kind, key), fetch=True)
        if not rows:
            return None
        state, age, stage, reason, attempts = rows[0]
        return Status(state, float(age), stage, reason, int(attempts))

    def record(self, entry: Entry) -> None:
        """Before publishing: the row is ``published`` now (a new row, or a stale/dead one published again)."""
        from psycopg import sql
        from psycopg.types.json import Jsonb

        self._run(sql.SQL(
            "INSERT INTO {} (kind, key, subject, sha256, uri, topic, message_key, message, state, attempts) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'published', 1) "
            "ON CONFLICT (kind, key) DO UPDATE SET subject = EXCLUDED.subject, sha256 = EXCLUDED.sha256, "
            "uri = EXCLUDED.uri, topic = EXCLUDED.topic, message_key = EXCLUDED.message_key, "
            "message = EXCLUDED.message, state = 'published', stage = NULL, reason = NULL, "
            "attempts = {}.attempts + 1, published_at = now(), updated_at = now()"
        ).format(_table(self.index), _ident("ingest_ledger")),
            (entry.kind, entry.key, entry.subject, entry.sha256, entry.uri, entry.topic, entry.message_key,
             Jsonb(json.loads(entry.message))))

    def touch(self, kind: Kind, key: str) -> None:
        """A row published again as it was (``--resume``)."""
        from psycopg import sql

        self._run(sql.SQL("UPDATE {} SET attempts = attempts + 1, published_at = now(), updated_at = now() "
                          "WHERE kind = %s AND key = %s AND state = 'published'").format(_table(self.index)),
                  (kind, key))

    def pending(self, older_than: float, limit: int = 10_000) -> list[Pending]:
        """Rows published more than ``older_than`` seconds ago and neither indexed nor dead, oldest first."""
        from psycopg import sql

        rows = self._run(sql.SQL(
            "SELECT kind, key, topic, message_key, message::text FROM {} WHERE state = 'published' "
            "AND published_at < now() - make_interval(secs => %s) ORDER BY published_at LIMIT %s"
        ).format(_table(self.index)), (older_than, limit), fetch=True)
        return [Pending(k, key, t, mk, m.encode("utf-8")) for k, key, t, mk, m in rows]

    def mark_dead(self, kind: Kind, subject: str, sha256: str, stage: str, reason: str) -> None:
        """A dead letter was acknowledged: the row is ``dead`` with the stage and the reason."""
        from psycopg import sql

        self._run(sql.SQL(_DEAD_SQL).format(_table(self.index)), (stage, reason[:2000], kind, subject, sha256))

    def counts(self) -> dict[str, int]:
        """Rows by state (``published``, ``indexed``, ``dead``)."""
        from psycopg import sql

        rows = self._run(sql.SQL("SELECT state, count(*) FROM {} GROUP BY state").format(_table(self.index)),
                         fetch=True)
        out = {"published": 0, "indexed": 0, "dead": 0}
        out.update({str(s): int(n) for s, n in rows})
        return out

    def dead(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Dead rows, newest first: kind, subject (report id, or the object's sha256), URI, stage, reason,
        times published, when it failed. Claim checks only, never report text."""
        from psycopg import sql

        rows = self._run(sql.SQL(
            "SELECT kind, subject, uri, stage, reason, attempts, updated_at FROM {} WHERE state = 'dead' "
            "ORDER BY updated_at DESC, kind, key LIMIT %s").format(_table(self.index)), (limit,), fetch=True)
        return [{"kind": k, "subject": s, "uri": u, "stage": st, "reason": r, "attempts": int(a),
                 "failed_at": t.isoformat()} for k, s, u, st, r, a, t in rows]

    # ------------------------------------------------------------------------------------------- the workers' side

    def attempts_of(self, deliveries: Sequence[Delivery]) -> dict[Delivery, Attempt]:
        """The uncommitted handlings recorded for these messages (absent: none)."""
        from psycopg import sql

        if not deliveries:
            return {}
        rows = self._run(sql.SQL(
            'SELECT a.topic, a.part, a."offset", a.digest, a.attempts, a.stage, a.error FROM {} AS a '
            f"JOIN {_DELIVERIES} ON {_SAME_DELIVERY}"
        ).format(_table(self.index, "delivery_attempts")), _columns(deliveries), fetch=True)
        return {Delivery(t, int(p), int(o), d): Attempt(int(n), st, e) for t, p, o, d, n, st, e in rows}

    def begin(self, deliveries: Sequence[Delivery]) -> None:
        """Before handling: one more attempt for each message (durable before the first byte is read); the stage
        and the error of the previous one are cleared."""
        from psycopg import sql

        if not deliveries:
            return
        table = _table(self.index, "delivery_attempts")
        self._run(sql.SQL(
            'INSERT INTO {} AS a (topic, part, "offset", digest, attempts) '
            f"SELECT topic, part, off, digest, 1 FROM {_DELIVERIES} "
            'ON CONFLICT (topic, part, "offset", digest) DO UPDATE SET attempts = a.attempts + 1, stage = NULL, '
            "error = NULL, updated_at = now()"
        ).format(table), _columns(deliveries))

    def reached(self, delivery: Delivery, stage: str) -> None:
        """The message's handling reached ``stage`` (recorded for messages handled alone)."""
        self._update_attempt([delivery], "stage = %s", (stage,))

    def failed(self, deliveries: Sequence[Delivery], error: str) -> None:
        """The last handling raised ``error`` (no report text in it)."""
        self._update_attempt(deliveries, "error = %s", (error[:2000],))

    def undo(self, deliveries: Sequence[Delivery]) -> None:
        """A handling stopped by an outage (a transient error) does not count against the message."""
        self._update_attempt(deliveries, "attempts = greatest(attempts - 1, 0)", ())

    def done(self, deliveries: Sequence[Delivery]) -> None:
        """The messages' offsets are committed: forget their attempts."""
        self._delete(deliveries, "delivery_attempts")

    def _update_attempt(self, deliveries: Sequence[Delivery], assignment: str, params: tuple[Any, ...]) -> None:
        from psycopg import sql

        if not deliveries:
            return
        self._run(sql.SQL(
            "UPDATE {} AS a SET " + assignment + ", updated_at = now() "
            f"FROM {_DELIVERIES} WHERE {_SAME_DELIVERY}"
        ).format(_table(self.index, "delivery_attempts")), (*params, *_columns(deliveries)))

    def dead_letter(self, letters: Sequence[OutboxLetter]) -> None:
        """One transaction: the letters' ledger rows are ``dead`` (stage, reason) and the letters are in the outbox.
        Publish them next, then :meth:`sent`. Repeating it (a re-delivered batch) changes nothing."""
        from psycopg import sql
        from psycopg.types.json import Jsonb

        if not letters:
            return
        dead = sql.SQL(_DEAD_SQL).format(_table(self.index))
        outbox = sql.SQL(
            'INSERT INTO {} (topic, part, "offset", digest, dlq_topic, message_key, letter) '
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
        ).format(_table(self.index, "dead_letter_outbox"))

        def work(conn: Any) -> list[Any]:
            with conn.cursor() as cur:
                for lt in letters:
                    if lt.row is not None:
                        kind, subject, sha = lt.row
                        cur.execute(dead, (lt.stage, lt.reason[:2000], kind, subject, sha))
                    d = lt.delivery
                    cur.execute(outbox, (d.topic, d.partition, d.offset, d.digest, lt.dlq_topic, lt.key,
                                         Jsonb(json.loads(lt.letter))))
            return []

        self._tx(work)

    def outbox(self, limit: int = 10_000) -> list[tuple[Delivery, str, bytes | None, bytes]]:
        """Dead letters not yet acknowledged by the broker, oldest first: (message, DLQ topic, key, letter)."""
        from psycopg import sql

        rows = self._run(sql.SQL(
            'SELECT topic, part, "offset", digest, dlq_topic, message_key, letter::text FROM {} '
            "ORDER BY created_at LIMIT %s").format(_table(self.index, "dead_letter_outbox")), (limit,), fetch=True)
        return [(Delivery(t, int(p), int(o), d), q, bytes(k) if k is not None else None, v.encode("utf-8"))
                for t, p, o, d, q, k, v in rows]

    def sent(self, deliveries: Sequence[Delivery]) -> None:
        """The broker acknowledged these dead letters: out of the outbox."""
        self._delete(deliveries, "dead_letter_outbox")

    def _delete(self, deliveries: Sequence[Delivery], table: str) -> None:
        """Delete the rows of ``table`` keyed by these messages."""
        from psycopg import sql

        if not deliveries:
            return
        self._run(sql.SQL(f"DELETE FROM {{}} AS a USING {_DELIVERIES} WHERE {_SAME_DELIVERY}").format(
            _table(self.index, table)), _columns(deliveries))

    def close(self) -> None:
        self._db.close()


# Messages passed as four parallel arrays (see _columns), matched against a table aliased ``a``.
_DELIVERIES = "unnest(%s::text[], %s::int[], %s::bigint[], %s::text[]) AS d(topic, part, off, digest)"
_SAME_DELIVERY = 'a.topic = d.topic AND a.part = d.part AND a."offset" = d.off AND a.digest = d.digest'


def _columns(deliveries: Sequence[Delivery]) -> tuple[list[str], list[int], list[int], list[str]]:
    return ([d.topic for d in deliveries], [d.partition for d in deliveries], [d.offset for d in deliveries],
            [d.digest for d in deliveries])
