"""The ingest ledger (``<schema>.ingest_ledger``, migration 0002): what was published, indexed or dead, and why.

A transactional outbox for the memory-only (or any) broker: the publisher records a row *before* it publishes;
workers mark rows ``indexed`` in the transaction of their writes (:func:`mark_indexed_in`) and ``dead`` once the
dead letter is acknowledged; whatever stays ``published`` longer than ``republish_after`` seconds is published
again (by the next ingest of the same content, or ``medsearch ingest --resume``). Rows hold claim checks (URIs,
hashes, report ids) and the message to re-publish, never report text.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from medsearch.contracts.naming import IndexRef, names_of

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


def _ident(name: str) -> Any:
    from psycopg import sql

    return sql.Identifier(name)


def _table(index: IndexRef) -> Any:
    from psycopg import sql

    return sql.SQL("{}.ingest_ledger").format(_ident(names_of(index).pg_schema))


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
        from medsearch.pgstore import DatabaseError, is_transient

        try:
            with self._lock:
                conn = self._db.get()
                with conn.transaction():
                    cur = conn.execute(stmt, params)
                    return list(cur.fetchall()) if fetch else []
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

        self._run(sql.SQL(
            "UPDATE {} SET state = 'dead', stage = %s, reason = %s, updated_at = now() "
            "WHERE kind = %s AND subject = %s AND sha256 = %s AND state = 'published'"
        ).format(_table(self.index)), (stage, reason[:2000], kind, subject, sha256))

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

    def close(self) -> None:
        self._db.close()


def mark_dead_letters(ledger: Ledger, dicom_topic: str, letters: Iterable[tuple[bytes, str, str, str]]) -> None:
    """(raw message, topic, stage, error) of acknowledged dead letters: their ledger rows are ``dead``. Messages
    that are not valid ingest messages have no row."""
    from medsearch.contracts.messages import DicomObject, MessageError, Report

    for raw, topic, stage, error in letters:
        try:
            if topic == dicom_topic:
                obj = DicomObject.from_bytes(raw)
                ledger.mark_dead("dicom", obj.sha256, obj.sha256, stage, error)
            else:
                rep = Report.from_bytes(raw)
                ledger.mark_dead("report", rep.report_id, rep.sha256, stage, error)
        except MessageError:
            continue
