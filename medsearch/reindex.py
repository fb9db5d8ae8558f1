"""Rebuild an index's Milvus collections from PostgreSQL, the system of record (``medsearch reindex``).

Each collection is dropped, created again from the spec (so an index-type or metric change takes effect) and
filled with the ANN part of every row (:data:`~medsearch.contracts.collections.IMAGE_ANN_FIELDS` /
:data:`~medsearch.contracts.collections.REPORT_ANN_FIELDS`), read in key order in batches; nothing is
re-embedded. Rows without a vector (written by an older medsearch) are skipped and counted. Workers may keep
running: they write PostgreSQL first, then Milvus, so a row they write during the rebuild reaches the new
collection either way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from medsearch import pgstore
from medsearch.contracts.collections import IMAGE_ANN_FIELDS, IMAGE_VECTOR, REPORT_ANN_FIELDS, REPORT_VECTOR
from medsearch.contracts.naming import IndexRef, names_of
from medsearch.contracts.spec import MedicalSearchIndexSpec
from medsearch.provision import ProvisionError, ensure_collections

KINDS = ("images", "reports")
Progress = Callable[[str, int, int], None]  # (kind, rows done, rows in all)


@dataclass
class ReindexResult:
    written: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # rows without a vector


def _total(conn: Any, index: IndexRef, kind: str) -> int:
    return pgstore.count_rows(conn, index)[kind]


def rebuild(conn: Any, client: Any, index: IndexRef, spec: MedicalSearchIndexSpec, *, kinds: Sequence[str] = KINDS,
            batch: int = 1000, progress: Progress | None = None) -> ReindexResult:
    """Drop, re-create and refill the Milvus collections ``kinds`` of ``index`` from PostgreSQL."""
    names = names_of(index)
    plan = {"images": (names.images_collection, IMAGE_ANN_FIELDS, IMAGE_VECTOR),
            "reports": (names.reports_collection, REPORT_ANN_FIELDS, REPORT_VECTOR)}
    result = ReindexResult()
    unknown = [k for k in kinds if k not in plan]
    if unknown:
        raise ValueError(f"unknown collections {unknown}: choose from {', '.join(KINDS)}")
    for kind in kinds:  # drop first: an old collection of another schema is replaced, not refused
        collection = plan[kind][0]
        try:
            if client.has_collection(collection):
                client.drop_collection(collection)
        except Exception as err:  # pymilvus raises MilvusException and connection errors alike
            raise ProvisionError("MilvusUnreachable", f"dropping {collection} failed: {err}") from err
    created = ensure_collections(client, index, spec)
    for problem in created.problems:
        if any(plan[k][0] in problem.message for k in kinds):
            raise ProvisionError(problem.reason, problem.message)
    for kind in kinds:
        collection, fields, vector = plan[kind]
        total = _total(conn, index, kind)
        done = skipped = 0
        if progress is not None:
            progress(kind, 0, total)
        for rows in pgstore.iter_rows(conn, index, kind, list(fields), batch=batch):
            ready = [r for r in rows if r.get(vector)]
            skipped += len(rows) - len(ready)
            if ready:
                try:
                    client.upsert(collection, ready)
                except Exception as err:  # see above
                    raise ProvisionError("MilvusUnreachable", f"writing {collection} failed: {err}") from err
            done += len(rows)
            if progress is not None:
                progress(kind, done, total)
        try:
            client.flush(collection)
        except Exception as err:  # see above
            raise ProvisionError("MilvusUnreachable", f"flushing {collection} failed: {err}") from err
        result.written[kind] = done - skipped
        result.skipped[kind] = skipped
    return result
