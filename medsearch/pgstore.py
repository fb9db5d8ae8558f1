"""PostgreSQL, the system of record: connections, an index's schema (versioned migrations) and row writes.

The tables of an index live in their own schema (:attr:`~medsearch.contracts.naming.IndexNames.pg_schema`);
their definition is the versioned SQL files in ``medsearch/contracts/sql`` (``NNNN_name.sql``), applied in order
by :func:`apply_migrations` and recorded in ``<schema>.schema_migrations``. Rows have exactly the columns of the
contract's field lists (:mod:`medsearch.contracts.collections`); vectors are stored as pgvector ``vector`` values
so that the Milvus collections can be rebuilt without re-embedding (``medsearch reindex``).

Writes are idempotent upserts keyed by the data (report id, SOPInstanceUID), one transaction per call.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from medsearch.contracts.collections import (
    IMAGE_FIELDS,
    IMAGE_PK,
    IMAGE_VECTOR,
    REPORT_FIELDS,
    REPORT_PK,
    REPORT_VECTOR,
)
from medsearch.contracts.naming import IndexRef, names_of
from medsearch.contracts.spec import MedicalSearchIndexSpec

# spec.reports.analyzer -> the PostgreSQL text-search configuration of the keyword index ("standard": words as
# they are, lower-cased, nothing removed, like Milvus' standard analyzer; "english": stemming and stop words).
TS_CONFIG = {"standard": "simple", "english": "english"}
EXTENSIONS = ("vector",)
_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

REPORT_COLUMNS: tuple[str, ...] = tuple(f.name for f in REPORT_FIELDS)
IMAGE_COLUMNS: tuple[str, ...] = tuple(f.name for f in IMAGE_FIELDS)
_JSON_COLUMNS = frozenset(f.name for f in (*REPORT_FIELDS, *IMAGE_FIELDS) if f.dtype == "JSON")
_VECTOR_COLUMNS = frozenset({REPORT_VECTOR, IMAGE_VECTOR})


class DatabaseError(RuntimeError):
    """PostgreSQL is unreachable or refused a statement; ``transient`` says whether retrying may help."""

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The schema migrations shipped with the package, in version order."""
    out = []
    for entry in resources.files("medsearch.contracts").joinpath("sql").iterdir():
        m = _MIGRATION_NAME.match(entry.name)
        if m:
            out.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    out.sort(key=lambda x: x.version)
    versions = [m.version for m in out]
    if versions != list(range(1, len(out) + 1)):
        raise RuntimeError(f"schema migrations must be numbered 1..n without gaps, found {versions}")
    return out


def ts_config(spec: MedicalSearchIndexSpec) -> str:
    return TS_CONFIG[spec.reports.analyzer]


def render(migration: Migration, spec: MedicalSearchIndexSpec) -> str:
    """The migration's SQL for an index (its only placeholder is the text-search configuration)."""
    return migration.sql.replace("{ts_config}", ts_config(spec))


def conninfo(dsn: str, password: str | None = None) -> str:
    """``dsn`` with ``password`` added when given (a DSN may carry its own)."""
    if not password:
        return dsn
    from psycopg.conninfo import make_conninfo

    return make_conninfo(dsn, password=password)


def redact(dsn: str) -> str:
    """A DSN for messages: any password removed."""
    try:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params = conninfo_to_dict(dsn)
        params.pop("password", None)
        return make_conninfo("", **params)  # type: ignore[arg-type]  # dict of str values
    except Exception:  # an unparsable DSN: say nothing of it  # noqa: BLE001
        return "<unparsable DSN>"


def connect(dsn: str, password: str | None = None, *, timeout: float = 10.0, autocommit: bool = False) -> Any:
    """A psycopg connection; :class:`DatabaseError` (transient) when PostgreSQL cannot be reached."""
    import psycopg

    try:
        return psycopg.connect(conninfo(dsn, password), connect_timeout=max(1, int(timeout)), autocommit=autocommit)
    except psycopg.Error as err:
        raise DatabaseError(f"PostgreSQL at {redact(dsn)} is unreachable: {err}") from err


def ready(dsn: str, password: str | None = None, timeout: float = 2.0) -> bool:
    """Whether PostgreSQL answers ``SELECT 1``."""
    try:
        with connect(dsn, password, timeout=timeout, autocommit=True) as conn:
            conn.execute("SELECT 1")
        return True
    except DatabaseError:
        return False


def _ident(name: str) -> Any:
    from psycopg import sql

    return sql.Identifier(name)


def applied_versions(conn: Any, schema: str) -> list[int]:
    row = conn.execute("SELECT to_regclass(%s)", (f"{schema}.schema_migrations",)).fetchone()
    if row is None or row[0] is None:
        return []
    from psycopg import sql

    rows = conn.execute(sql.SQL("SELECT version FROM {}.schema_migrations ORDER BY version").format(
        _ident(schema))).fetchall()
    return [int(r[0]) for r in rows]


def apply_migrations(conn: Any, index: IndexRef, spec: MedicalSearchIndexSpec) -> list[int]:
    """Create the index's schema and apply the migrations it lacks, in one transaction (serialized across
    processes by an advisory lock). Returns the versions applied now (empty when it was up to date)."""
    from psycopg import sql

    schema = names_of(index).pg_schema
    applied: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"medsearch-migrate:{schema}",))
        for ext in EXTENSIONS:
            conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(_ident(ext)))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(_ident(schema)))
        conn.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {}.schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())").format(_ident(schema)))
        have = set(applied_versions(conn, schema))
        conn.execute(sql.SQL("SET LOCAL search_path TO {}, public").format(_ident(schema)))
        for m in migrations():
            if m.version in have:
                continue
            conn.execute(render(m, spec).encode())  # type: ignore[call-overload]  # a file of ours, not input
            conn.execute(sql.SQL("INSERT INTO {}.schema_migrations (version, name) VALUES (%s, %s)").format(
                _ident(schema)), (m.version, m.name))
            applied.append(m.version)
    return applied


def drop_schema(conn: Any, index: IndexRef) -> bool:
    """Drop the index's schema and everything in it; False when it did not exist."""
    from psycopg import sql

    schema = names_of(index).pg_schema
    with conn.transaction():
        row = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
        if row is None:
            return False
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(_ident(schema)))
    return True


# ------------------------------------------------------------------------------------------------- values


def vector_literal(values: Sequence[float] | None) -> str | None:
    """A pgvector text literal (``[1,2,3]``); None stays NULL."""
    if values is None:
        return None
    return "[" + ",".join(repr(float(x)) for x in values) + "]"


def parse_vector(value: Any) -> list[float] | None:
    """A vector read back from PostgreSQL (text ``[1,2,3]`` without the pgvector adapter)."""
    if value is None:
        return None
    if isinstance(value, str):
        inner = value.strip()[1:-1]
        return [float(x) for x in inner.split(",")] if inner else []
    return [float(x) for x in value]


def _adapt(column: str, value: Any) -> Any:
    if column in _JSON_COLUMNS:
        from psycopg.types.json import Jsonb

        return Jsonb(value if value is not None else ({} if column == "sections" else []))
    if column in _VECTOR_COLUMNS:
        return vector_literal(value)
    return value


MAX_BIND_PARAMETERS = 65535  # PostgreSQL's protocol limit per statement


def _upsert_sql(schema: str, table: str, columns: Sequence[str], key: str, n_rows: int = 1) -> Any:
    """One ``INSERT .. VALUES (..), (..) ON CONFLICT DO UPDATE`` of ``n_rows`` rows."""
    from psycopg import sql

    values = [sql.SQL("%s::vector") if c in _VECTOR_COLUMNS else sql.SQL("%s") for c in columns]
    row = sql.SQL("({})").format(sql.SQL(", ").join(values))
    updates = [sql.SQL("{} = EXCLUDED.{}").format(_ident(c), _ident(c)) for c in columns if c != key]
    return sql.SQL("INSERT INTO {}.{} ({}) VALUES {} ON CONFLICT ({}) DO UPDATE SET {}").format(
        _ident(schema), _ident(table), sql.SQL(", ").join(map(_ident, columns)), sql.SQL(", ").join([row] * n_rows),
        _ident(key), sql.SQL(", ").join(updates))


def _upsert(conn: Any, index: IndexRef, table: str, columns: Sequence[str], key: str,
            rows: Sequence[dict[str, Any]]) -> None:
    """The rows in one statement (the reports' count triggers run once per batch), in key order (concurrent
    writers lock rows in one order); of rows sharing a key, the last wins."""
    if not rows:
        return
    missing = [c for c in columns if c not in rows[0] and c not in _VECTOR_COLUMNS]
    if missing:
        raise ValueError(f"{table} rows lack the columns {missing}")
    last = {str(r[key]): r for r in rows}
    keys = sorted(last)
    per = MAX_BIND_PARAMETERS // len(columns)  # more rows than a statement can bind go in several (rare)
    with conn.transaction(), conn.cursor() as cur:
        for start in range(0, len(keys), per):
            chunk = keys[start:start + per]
            cur.execute(_upsert_sql(names_of(index).pg_schema, table, columns, key, len(chunk)),
                        [_adapt(c, last[k].get(c)) for k in chunk for c in columns])
        _mark_ledger(cur, index, table, rows)


def _mark_ledger(cur: Any, index: IndexRef, table: str, rows: Sequence[dict[str, Any]]) -> None:
    """The ingest ledger's rows of what was just written are ``indexed``, in the same transaction: the row's own
    claim check, and those of the messages it superseded in its batch (``LEDGER_PAIRS``: (subject, sha256))."""
    from medsearch.ledger import LEDGER_PAIRS, mark_indexed_in

    pairs: list[tuple[str, str]] = [p for r in rows for p in r.get(LEDGER_PAIRS, ())]
    if table == "images":
        pairs += [(r["sha256"], r["sha256"]) for r in rows if r.get("sha256")]
        mark_indexed_in(cur, index, "dicom", pairs)
    else:
        pairs += [(r[REPORT_PK], hashlib.sha256(r["text"].encode("utf-8")).hexdigest())
                  for r in rows if isinstance(r.get("text"), str)]
        mark_indexed_in(cur, index, "report", pairs)


def upsert_reports(conn: Any, index: IndexRef, rows: Sequence[dict[str, Any]]) -> None:
    """Insert or replace report rows (the columns of :data:`REPORT_COLUMNS`) in one transaction."""
    _upsert(conn, index, "reports", REPORT_COLUMNS, REPORT_PK, rows)


def upsert_images(conn: Any, index: IndexRef, rows: Sequence[dict[str, Any]]) -> None:
    """Insert or replace image rows (the columns of :data:`IMAGE_COLUMNS`) in one transaction."""
    _upsert(conn, index, "images", IMAGE_COLUMNS, IMAGE_PK, rows)


def count_rows(conn: Any, index: IndexRef) -> dict[str, int]:
    """Exact row counts ``{"images": n, "reports": n}`` (0 for a schema that does not exist yet)."""
    from psycopg import sql

    schema = names_of(index).pg_schema
    out = {"images": 0, "reports": 0}
    for table in out:
        row = conn.execute("SELECT to_regclass(%s)", (f"{schema}.{table}",)).fetchone()
        if row is not None and row[0] is not None:
            got = conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(_ident(schema), _ident(table))).fetchone()
            out[table] = int(got[0]) if got else 0
    conn.rollback()
    return out


def iter_rows(conn: Any, index: IndexRef, table: str, columns: Sequence[str], batch: int = 1000
              ) -> Iterator[list[dict[str, Any]]]:
    """Every row of ``table`` (``images`` / ``reports``) in key order, ``batch`` at a time (keyset pagination,
    so a long rebuild never holds one transaction open)."""
    from psycopg import sql

    if table not in ("images", "reports"):
        raise ValueError(f"unknown table {table!r}")
    key = IMAGE_PK if table == "images" else REPORT_PK
    schema = names_of(index).pg_schema
    cols = sql.SQL(", ").join(
        sql.SQL("{}::text").format(_ident(c)) if c in _VECTOR_COLUMNS else _ident(c) for c in columns)
    stmt = sql.SQL("SELECT {} FROM {}.{} WHERE {} > %s ORDER BY {} LIMIT %s").format(
        cols, _ident(schema), _ident(table), _ident(key), _ident(key))
    last = ""
    while True:
        rows = conn.execute(stmt, (last, batch)).fetchall()
        conn.rollback()
        if not rows:
            return
        out = []
        for r in rows:
            row = dict(zip(columns, r, strict=True))
            for c in _VECTOR_COLUMNS & set(columns):
                row[c] = parse_vector(row[c])
            out.append(row)
        yield out
        last = str(rows[-1][list(columns).index(key)])


_TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57", "58")  # connection, rollback, resources, operator, system


def is_transient(err: BaseException) -> bool:
    """Whether retrying a failed statement may succeed (connection lost, deadlock, server shutting down...)."""
    import psycopg

    if isinstance(err, DatabaseError):
        return err.transient
    if isinstance(err, (psycopg.OperationalError, psycopg.InterfaceError)):
        return True
    state = getattr(err, "sqlstate", None) or ""
    if state == "3F000" or state == "42P01":  # schema / table missing: not provisioned yet (operator, `up`)
        return True
    return state[:2] in _TRANSIENT_SQLSTATE_CLASSES


class LazyConnection:
    """A psycopg connection opened on first use, and again after :meth:`reset` (what a failed statement calls, so
    that the next one reconnects). Not locked: its owner serialises its use."""

    def __init__(self, dsn: str, password: str | None = None, *, timeout: float = 10.0) -> None:
        self.dsn = dsn
        self._password = password
        self.timeout = timeout
        self._conn: Any = None

    def get(self) -> Any:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.dsn, self._password, timeout=self.timeout)
        return self._conn

    def reset(self) -> None:
        """Forget the connection, closing it quietly (after a failure it may be broken)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class PostgresWriter:
    """Upserts rows of one index into PostgreSQL, one transaction per call; connects lazily and reconnects after
    a failure. Raises :class:`DatabaseError` with ``transient`` set from :func:`is_transient`."""

    def __init__(self, dsn: str, index: IndexRef, *, password: str | None = None, timeout: float = 30.0) -> None:
        import threading

        self.dsn = dsn
        self.index = index
        self.timeout = timeout
        self._db = LazyConnection(dsn, password, timeout=timeout)
        self._lock = threading.Lock()

    def _write(self, fn: Any, rows: Sequence[dict[str, Any]]) -> None:
        with self._lock:
            try:
                fn(self._db.get(), self.index, rows)
            except DatabaseError:
                self._db.reset()
                raise
            except Exception as err:  # psycopg.Error and adaptation errors
                self._db.reset()
                raise DatabaseError(f"PostgreSQL refused {len(rows)} rows of index {self.index}: "
                                    f"{type(err).__name__}: {err}", transient=is_transient(err)) from err

    def upsert_reports(self, rows: Sequence[dict[str, Any]]) -> None:
        self._write(upsert_reports, rows)

    def upsert_images(self, rows: Sequence[dict[str, Any]]) -> None:
        self._write(upsert_images, rows)

    def close(self) -> None:
        with self._lock:
            self._db.reset()
