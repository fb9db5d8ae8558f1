"""The workers' writes: a batch to PostgreSQL (the system of record, one transaction), then to the Milvus collection
(the ANN fields only), and how a Milvus failure is classified (transient: retried; else permanent).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from medsearch.contracts.collections import ann_row
from medsearch.contracts.settings import WorkerSettings
from medsearch.contracts.spec import WorkerKind
from medsearch_workers.consumer import TransientError

log = logging.getLogger("medsearch.workers.writers")


class RowWriter(Protocol):
    """What the workers' handlers write a batch of rows with (and the Milvus half of :class:`SystemOfRecordWriter`)."""

    def upsert(self, rows: list[dict[str, Any]]) -> None: ...


class WriteError(RuntimeError):
    """Milvus refused rows for a reason that retrying will not fix (dead-lettered after the retry budget)."""

    stage = "write"


# Milvus error codes (pymilvus ``ErrorCode`` and the server's merr codes) worth retrying: the collection is not
# there or not loaded yet (provisioning and restarts bring it), the server is not ready, rate limits. Input errors
# (wrong fields, types, lengths) are permanent whatever their code.
_TRANSIENT_MILVUS_CODES = frozenset({
    2,     # UnexpectedError from a server that is starting / not ready (connection level)
    8,     # RATE_LIMIT
    100,   # COLLECTION_NOT_FOUND (not provisioned yet)
    101,   # collection not loaded (released after a restart)
    1,     # UNEXPECTED_ERROR: only together with a connection-level message, see below
})
# Connection-level failures arrive from pymilvus as UNEXPECTED_ERROR without a specific code; these words in
# such an error (and only such) say the server was not reached.
_CONNECTION_HINTS = ("connect", "unavailable", "timeout", "timed out", "deadline", "refused", "reset by peer",
                     "closed", "not ready")


def is_transient_milvus_error(err: BaseException) -> bool:
    """Retry forever: connection problems, timeouts, gRPC UNAVAILABLE/DEADLINE_EXCEEDED/RESOURCE_EXHAUSTED, and the
    Milvus codes of :data:`_TRANSIENT_MILVUS_CODES`; never an input error."""
    if isinstance(err, (ConnectionError, TimeoutError, OSError)):
        return True
    from pymilvus.exceptions import (
        CollectionNotExistException,
        ConnectError,
        ConnectionNotExistException,
        MilvusException,
        MilvusUnavailableException,
    )

    if isinstance(err, (MilvusUnavailableException, ConnectError, ConnectionNotExistException,
                        CollectionNotExistException)):
        return True
    if isinstance(err, MilvusException):
        if getattr(err, "_is_input_error", False):
            return False
        if getattr(err, "_retriable", False):
            return True
        code = int(getattr(err, "code", 1) or 1)
        if code == 1:  # no specific code: only a connection-level failure is transient
            text = str(getattr(err, "message", "") or err).lower()
            return any(h in text for h in _CONNECTION_HINTS)
        return code in _TRANSIENT_MILVUS_CODES
    code_of = getattr(err, "code", None)
    if callable(code_of):  # grpc.RpcError
        status = getattr(code_of(), "name", "")
        return status in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED")
    return False


def check_upsert_count(result: Any, expected: int, collection: str) -> None:
    """Milvus answers an upsert with the number of rows it took; fewer than sent is a failed write (retried: upserts
    are idempotent), never a silent loss."""
    count = result.get("upsert_count") if isinstance(result, dict) else getattr(result, "upsert_count", None)
    if isinstance(count, int) and count != expected:
        raise TransientError(f"Milvus upserted {count} of {expected} rows into {collection}")


class MilvusWriter:
    """Upserts rows into a Milvus collection (``<index>_images`` / ``<index>_reports``); connects lazily and
    reconnects after failures."""

    def __init__(self, uri: str, collection: str, token: str | None = None, timeout: float = 30.0) -> None:
        self.uri = uri
        self.collection = collection
        self.token = token
        self.timeout = timeout
        self._client: Any | None = None
        self._lock = threading.Lock()

    def _connect(self) -> Any:
        if self._client is None:
            from pymilvus import MilvusClient

            kwargs: dict[str, Any] = {"uri": self.uri, "timeout": self.timeout}
            if self.token:
                kwargs["token"] = self.token
            self._client = MilvusClient(**kwargs)
        return self._client

    def _reset(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                log.debug("closing the Milvus client failed", exc_info=True)

    def upsert(self, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            try:
                client = self._connect()
                result = client.upsert(collection_name=self.collection, data=rows, timeout=self.timeout)
            except Exception as err:
                self._reset()
                if is_transient_milvus_error(err):
                    raise TransientError(f"Milvus {self.uri}: {err}") from err
                raise WriteError(f"Milvus refused {len(rows)} rows in {self.collection}: {err}") from err
            check_upsert_count(result, len(rows), self.collection)

    def close(self) -> None:
        with self._lock:
            self._reset()


class SystemOfRecordWriter:
    """Writes a batch to PostgreSQL first (every field and the vector, one transaction), then the part the ANN
    collection holds (``ann_fields``) to Milvus. Either store failing transiently retries the whole batch; both
    writes are upserts, so a retry after PostgreSQL succeeded and Milvus failed writes the same rows again."""

    def __init__(self, pg_upsert: Callable[[list[dict[str, Any]]], None], milvus: RowWriter,
                 ann_fields: Sequence[str], closers: Sequence[Callable[[], None]] = ()) -> None:
        self.pg_upsert = pg_upsert
        self.milvus = milvus
        self.ann_fields = tuple(ann_fields)
        self._closers = list(closers)

    def upsert(self, rows: list[dict[str, Any]]) -> None:
        from medsearch.pgstore import DatabaseError

        try:
            self.pg_upsert(rows)
        except DatabaseError as err:
            if err.transient:
                raise TransientError(str(err)) from err
            raise WriteError(str(err)) from err
        self.milvus.upsert([ann_row(r, self.ann_fields) for r in rows])

    def close(self) -> None:
        for close in self._closers:
            close()


def index_writer(settings: WorkerSettings, kind: WorkerKind) -> SystemOfRecordWriter:
    """The writer of a ``kind`` of worker: ``dicom`` writes the images table and collection, ``report`` the
    reports'."""
    from medsearch.contracts.collections import IMAGE_ANN_FIELDS, REPORT_ANN_FIELDS
    from medsearch.pgstore import PostgresWriter

    names = settings.index_names()
    token = settings.milvus_token.get_secret_value() if settings.milvus_token else None
    collection = names.images_collection if kind == "dicom" else names.reports_collection
    milvus = MilvusWriter(settings.milvus_uri, collection, token=token)
    pg = PostgresWriter(settings.postgres_dsn, names, password=settings.postgres_secret())
    if kind == "dicom":
        return SystemOfRecordWriter(pg.upsert_images, milvus, IMAGE_ANN_FIELDS, (pg.close, milvus.close))
    return SystemOfRecordWriter(pg.upsert_reports, milvus, REPORT_ANN_FIELDS, (pg.close, milvus.close))
