"""In-memory stand-ins shared by the workers' unit tests."""

from __future__ import annotations

from typing import Any


class MemoryWriter:
    """The store writer of a batch handler, in memory: rows by their ``key`` column, and how many upserts came
    (a batch is written in one upsert, which never holds a key twice)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.rows: dict[str, dict[str, Any]] = {}
        self.calls = 0

    def upsert(self, rows: list[dict[str, Any]]) -> None:
        self.calls += 1
        assert len({r[self.key] for r in rows}) == len(rows), "duplicate keys in one upsert"
        for r in rows:
            self.rows[r[self.key]] = r
