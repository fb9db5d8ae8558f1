"""The repository: the one place that talks to the stores.

Resolvers call the async methods of :class:`Repository`. :class:`SearchRepository` implements them over
PostgreSQL, the system of record (an async psycopg pool: records, keyword search, every filter, exact counts,
listing, facets; the statements come from :mod:`medsearch_api.sql`), and Milvus, the ANN engine (pymilvus'
synchronous ``MilvusClient`` in worker threads; nearest neighbours only, expressions from
:mod:`medsearch_api.filters`). Semantic and hybrid ranking fuse Milvus' neighbours with PostgreSQL's keyword
ranking (RRF); the finding rule is applied in SQL to both. Time spent in each store is added to the per-request
accumulators :data:`PG_TIMER` / :data:`MILVUS_TIMER` (``Server-Timing`` and ``/metrics``).
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from medsearch.contracts.collections import IMAGE_VECTOR, REPORT_VECTOR
from medsearch.contracts.naming import IndexRef, names_of
from medsearch.findings import query_findings
from medsearch.provision import ensure_loaded, with_loaded
from medsearch_api import filters as fx
from medsearch_api import sql as q
from medsearch_api.lazy import Lazy
from medsearch_api.records import (
    ICD10_FIELD,
    FacetCount,
    ImageFilterSpec,
    ImageHit,
    ImageRecord,
    Polarity,
    ReportFilterSpec,
    ReportHit,
    ReportPage,
    ReportRecord,
    SearchMode,
    image_from_row,
    report_from_row,
)
from medsearch_api.search import rrf

T = TypeVar("T")
# A query vector, or the pending embedding of the query (awaited only when the k-NN needs it, so that the keyword
# ranking runs while the query is embedded).
QueryVector = Sequence[float] | Awaitable[Sequence[float]]

# Milvus caps offset + limit of a search at 16384.
MAX_WINDOW = 16384
# Most studies a code filter of similarImages is sent to Milvus as (``study_uid in [...]``); beyond that the
# neighbours are filtered in PostgreSQL while the search is deepened.
MAX_STUDY_IN_LIST = 2000
# Deepest a filtered report k-NN goes to fill a page once PostgreSQL has applied the filter and finding rule
# (the neighbours are approximate anyway; a filter that leaves fewer than a page in this many is a rare case).
DENSE_MAX_DEPTH = 4096
# First window of a report k-NN (at least four pages), and the margin on the pass rate seen so far when sizing the
# next: Milvus' cost grows with the hits it returns, so one well-sized step beats several blind ones.
DENSE_FIRST_DEPTH = 64
DENSE_GROWTH = 1.5
LOAD_CHECK_SECONDS = 10.0
# Search breadth of the vector indexes: HNSW's ef (candidates explored; Milvus' default is k, which loses recall
# under filters), IVF's nprobe. Each index type reads its own key.
MIN_EF = 512
NPROBE = 32
# Every gateway-side Milvus call answers within this (pymilvus' own deadline on the call, and the request's wait on
# the call's thread): a hung Milvus fails the searches that need it with SERVICE_UNAVAILABLE, nothing else.
MILVUS_TIMEOUT_SECONDS = 8.0


class StoreTimer:
    """Accumulates seconds spent in one store's calls for the current request (thread-safe)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self.seconds += seconds
            self.calls += 1


MilvusTimer = StoreTimer  # the name the gateway's middleware has always used
MILVUS_TIMER: contextvars.ContextVar[StoreTimer | None] = contextvars.ContextVar("milvus_timer", default=None)
PG_TIMER: contextvars.ContextVar[StoreTimer | None] = contextvars.ContextVar("pg_timer", default=None)


class RepositoryError(RuntimeError):
    """A store failed or is unreachable (transient from the client's point of view)."""


class QueryTooBroad(ValueError):
    """A filter would need an unbounded expansion."""


class Repository(Protocol):
    async def reports_by_ids(self, ids: Sequence[str]) -> dict[str, ReportRecord]: ...
    async def images_by_ids(self, ids: Sequence[str]) -> dict[str, ImageRecord]: ...
    async def images_by_studies(self, study_uids: Sequence[str]) -> dict[str, list[ImageRecord]]: ...
    async def reports_by_studies(self, study_uids: Sequence[str]) -> dict[str, list[ReportRecord]]: ...
    async def search_reports(
        self, *, query: str | None, mode: SearchMode, query_vector: QueryVector | None,
        filter: ReportFilterSpec, offset: int, limit: int,
    ) -> ReportPage: ...
    async def count_reports(self, *, query: str | None, mode: SearchMode, filter: ReportFilterSpec) -> int: ...
    async def image_vector(self, image_id: str) -> list[float] | None: ...
    async def similar_images(
        self, *, vector: Sequence[float], k: int, filter: ImageFilterSpec, exclude_ids: Sequence[str],
    ) -> list[ImageHit]: ...
    async def icd10_facets(
        self, *, query: str | None, filter: ReportFilterSpec, polarity: Polarity, size: int,
    ) -> list[FacetCount]: ...
    async def term_facets(
        self, *, field: str, report_ids: Sequence[str] | None, query: str | None, filter: ReportFilterSpec,
        size: int,
    ) -> list[FacetCount]: ...
    async def ping(self) -> None: ...


def _hit_pk(hit: Any, pk: str) -> str:
    """The primary key of a search hit (pymilvus versions differ on where they put it)."""
    for key in ("id", pk):
        value = hit.get(key) if hasattr(hit, "get") else None
        if value is not None:
            return str(value)
    return str((hit.get("entity") or {})[pk])


class LazyClient:
    """A ``MilvusClient`` created on first use (the gateway starts, and answers /healthz, before Milvus)."""

    def __init__(self, uri: str, token: str | None = None, timeout: float = 10.0) -> None:
        self.uri = uri

        def make() -> Any:
            from medsearch.provision import ProvisionError, milvus_client

            try:
                return milvus_client(uri, token, timeout=timeout)
            except ProvisionError as err:
                raise RepositoryError(str(err)) from err

        self._client: Lazy[Any] = Lazy(make, lambda c: c.close())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client.get(), name)

    def close(self) -> None:
        self._client.close()


class PgPool:
    """An async psycopg pool opened on first use (the gateway starts, and answers /healthz, before PostgreSQL)."""

    def __init__(self, conninfo: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 10.0) -> None:
        self.conninfo = conninfo
        self.min_size = min_size
        self.max_size = max_size
        self.timeout = timeout
        self._pool: Any = None
        self._lock: asyncio.Lock | None = None

    async def get(self) -> Any:
        if self._pool is not None:
            return self._pool
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._pool is None:
                from psycopg_pool import AsyncConnectionPool

                pool = AsyncConnectionPool(self.conninfo, min_size=self.min_size, max_size=self.max_size,
                                           timeout=self.timeout, open=False,
                                           kwargs={"autocommit": True, "connect_timeout": int(self.timeout)})
                await pool.open(wait=False)
                self._pool = pool
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


class SearchRepository:
    """:class:`Repository` over PostgreSQL (records, keyword, filters, counts, facets) and Milvus (neighbours)."""

    def __init__(self, pool: PgPool, milvus: Any, index: IndexRef, *,
                 milvus_timeout: float = MILVUS_TIMEOUT_SECONDS) -> None:
        self.pool = pool
        self._client = milvus
        self.milvus_timeout = milvus_timeout
        self.tables = q.Tables(index)
        names = names_of(index)
        self.reports = names.reports_collection
        self.images = names.images_collection
        self._ts_config: str | None = None
        self._load_checked: dict[str, float] = {}  # collection -> monotonic time of the last load-state check

    # -- PostgreSQL ------------------------------------------------------------------------------------------
    async def _rows(self, query: q.Query) -> list[dict[str, Any]]:
        from psycopg import Error as PgError
        from psycopg.rows import dict_row
        from psycopg_pool import PoolTimeout

        t0 = time.perf_counter()
        try:
            pool = await self.pool.get()
            async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(query.text, query.params)
                return list(await cur.fetchall())
        except (PgError, PoolTimeout, OSError) as err:
            raise RepositoryError(f"PostgreSQL request failed: {type(err).__name__}: {err}") from err
        finally:
            timer = PG_TIMER.get()
            if timer is not None:
                timer.add(time.perf_counter() - t0)

    async def ts_config(self) -> str:
        """The text-search configuration the index's keyword column was built with."""
        if self._ts_config is None:
            from psycopg import sql

            rows = await self._rows(q.Query(sql.SQL("SELECT value FROM {} WHERE name = 'ts_config'").format(
                sql.Identifier(self.tables.schema, "index_settings"))))
            if not rows:
                raise RepositoryError(f"schema {self.tables.schema} has no ts_config (run `medsearch up` or the "
                                      "operator to migrate it)")
            self._ts_config = str(rows[0]["value"])
        return self._ts_config

    # -- Milvus ----------------------------------------------------------------------------------------------
    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        t0 = time.perf_counter()
        try:
            if args and args[0] in (self.reports, self.images):  # a collection call: reload after a Milvus restart
                collection: str = args[0]
                self._check_loaded(collection)
                return with_loaded(self._client, collection, lambda: fn(*args, **kwargs))
            return fn(*args, **kwargs)
        except (fx.FilterInputError, QueryTooBroad):
            raise
        except Exception as err:  # pymilvus raises MilvusException, grpc and connection errors alike
            raise RepositoryError(f"Milvus request failed: {type(err).__name__}: {err}") from err
        finally:
            timer = MILVUS_TIMER.get()
            if timer is not None:
                timer.add(time.perf_counter() - t0)

    def _check_loaded(self, collection: str) -> None:
        """At most every LOAD_CHECK_SECONDS per collection: load it if Milvus lost its load state (a restarted
        milvus-lite answers searches on a released collection with an error)."""
        now = time.monotonic()
        if now - self._load_checked.get(collection, float("-inf")) < LOAD_CHECK_SECONDS:
            return
        ensure_loaded(self._client, collection)
        self._load_checked[collection] = now

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn`` (Milvus calls) on the gateway's bounded Milvus pool, answered within ``milvus_timeout``: a hung
        Milvus (a stopped process, a half-open connection) holds at most that pool's threads, never the event
        loop or asyncio's default pool, and its callers get :class:`RepositoryError` in time."""
        from medsearch_api import blocking

        try:
            return await asyncio.wait_for(blocking.run("milvus", fn, *args), self.milvus_timeout + 0.5)
        except TimeoutError as err:
            raise RepositoryError(f"Milvus did not answer within {self.milvus_timeout:g} s") from err

    def _search(self, collection: str, field: str, vector: Sequence[float], expr: str, limit: int, pk: str
                ) -> list[tuple[str, float]]:
        """Nearest neighbours: (key, distance), best first."""
        if limit <= 0:
            return []
        limit = min(limit, MAX_WINDOW)
        kwargs: dict[str, Any] = {"anns_field": field, "limit": limit, "output_fields": [pk],
                                  "search_params": {"params": {"ef": max(MIN_EF, limit), "nprobe": NPROBE}}}
        if expr:
            kwargs["filter"] = expr
        res = self._call(self._client.search, collection, data=[list(vector)], timeout=self.milvus_timeout,
                         **kwargs)
        hits = res[0] if res else []
        return [(_hit_pk(h, pk), float(h["distance"])) for h in hits]

    # -- lookups ---------------------------------------------------------------------------------------------
    @staticmethod
    def _good(ids: Sequence[str]) -> list[str]:
        return [i for i in ids if len(i) <= fx.IDENT.max_len and fx.IDENT.pattern.fullmatch(i)]

    async def _lookup(self, build: Callable[[q.Tables, str, Sequence[str]], q.Query], column: str,
                      values: Sequence[str]) -> list[dict[str, Any]]:
        """Rows whose ``column`` is one of ``values`` (malformed values match nothing, unqueried)."""
        good = self._good(values)
        return await self._rows(build(self.tables, column, good)) if good else []

    async def reports_by_ids(self, ids: Sequence[str]) -> dict[str, ReportRecord]:
        return {str(r["report_id"]): report_from_row(r) for r in await self._lookup(q.reports_by, "report_id", ids)}

    async def images_by_ids(self, ids: Sequence[str]) -> dict[str, ImageRecord]:
        rows = await self._lookup(q.images_by, "sop_instance_uid", ids)
        return {str(r["sop_instance_uid"]): image_from_row(r) for r in rows}

    async def images_by_studies(self, study_uids: Sequence[str]) -> dict[str, list[ImageRecord]]:
        out: dict[str, list[ImageRecord]] = {u: [] for u in study_uids}
        for r in await self._lookup(q.images_by, "study_uid", study_uids):
            out.setdefault(str(r["study_uid"]), []).append(image_from_row(r))
        return out

    async def reports_by_studies(self, study_uids: Sequence[str]) -> dict[str, list[ReportRecord]]:
        out: dict[str, list[ReportRecord]] = {u: [] for u in study_uids}
        for r in await self._lookup(q.reports_by, "study_uid", study_uids):
            out.setdefault(str(r["study_uid"]), []).append(report_from_row(r))
        return out

    # -- report search ---------------------------------------------------------------------------------------
    @staticmethod
    def finding_codes(query: str | None, f: ReportFilterSpec) -> tuple[str, ...]:
        """ICD-10-CM codes of the findings the query names (:func:`medsearch.findings.query_findings`), unless
        the filter itself asks about negated or uncertain codes of those findings (then every mention counts)."""
        if not query or not query.strip():
            return ()
        codes = {c for cs in query_findings(query).values() for c in cs}
        if codes & (set(f.negative_codes) | set(f.uncertain_codes)):
            return ()
        return tuple(sorted(codes))

    async def _keyword(self, query: str, f: ReportFilterSpec, codes: Sequence[str], limit: int, offset: int
                       ) -> list[dict[str, Any]]:
        stmt = q.keyword_ranking(self.tables, query, f, codes, await self.ts_config(), limit, offset)
        return await self._rows(stmt) if stmt is not None else []

    async def _dense(self, vector: Sequence[float], f: ReportFilterSpec, codes: Sequence[str], want: int
                     ) -> list[tuple[str, float, int]]:
        """The ``want`` nearest reports passing the filter and the finding rule: (id, distance, tier), finding
        tier first, then nearest first. Milvus filters what its fields can express; PostgreSQL decides the rest
        (image fields, the finding rule) while the search is deepened: each deeper window is sized from the share
        of the neighbours that passed so far, and a finding search stops once it has seen every report of the
        finding tier there is (counted up to ``want`` beside the first search)."""
        expr = fx.report_expr(replace(f, modalities=(), view_positions=(), body_parts=()))
        depth = min(max(4 * want, DENSE_FIRST_DEPTH), MAX_WINDOW)
        first_tier, counting = want, bool(codes)  # reports in the finding tier (up to ``want``)
        while True:
            search = self._run(self._search, self.reports, REPORT_VECTOR, vector, expr, depth, "report_id")
            if counting:
                hits, counted = await asyncio.gather(
                    search, self._rows(q.asserting_count(self.tables, f, codes, want)))
                first_tier, counting = int(counted[0]["count"]), False
            else:
                hits = await search
            rows = await self._rows(q.tiers_of(self.tables, [i for i, _ in hits], f, codes)) if hits else []
            tiers = {str(r["report_id"]): int(r["tier"]) for r in rows}
            kept = [(i, d, tiers[i]) for i, d in hits if i in tiers]
            seen_first = sum(1 for x in kept if x[2] == 0)
            exhausted = len(hits) < depth or depth >= DENSE_MAX_DEPTH
            # the top ``want`` of tier 0 are settled once ``want`` of them (or all there are) are seen; tier 1 once
            # the whole top is
            settled = (bool(codes) and seen_first >= want) or (
                len(kept) >= want and (not codes or seen_first >= first_tier))
            if exhausted or settled:
                kept.sort(key=lambda x: x[2])  # stable: nearest first within a tier
                return kept[:want]
            need, have = (min(want, first_tier), seen_first) if codes and seen_first < first_tier else (want, len(kept))
            depth = min(max(2 * depth, math.ceil(DENSE_GROWTH * depth * need / max(have, 1))), DENSE_MAX_DEPTH)

    async def search_reports(
        self, *, query: str | None, mode: SearchMode, query_vector: QueryVector | None,
        filter: ReportFilterSpec, offset: int, limit: int,
    ) -> ReportPage:
        f = filter
        if not query or not query.strip():
            rows = await self._rows(q.listing(self.tables, f, limit + 1, offset))
            return ReportPage([ReportHit(report_from_row(r), 0.0) for r in rows[:limit]], len(rows) > limit)
        codes = self.finding_codes(query, f)
        if mode is SearchMode.KEYWORD:
            rows = await self._keyword(query, f, codes, limit + 1, offset)
            hits = [ReportHit(report_from_row(r), float(r["score"])) for r in rows[:limit]]
            return ReportPage(hits, len(rows) > limit)
        if query_vector is None:
            raise ValueError(f"{mode.name} search needs a query vector")
        want = min(offset + limit + 1, MAX_WINDOW)
        if offset >= want:
            return ReportPage([], False)
        vector = query_vector

        async def dense_ranking() -> list[tuple[str, float, int]]:
            v = await vector if isinstance(vector, Awaitable) else vector
            return await self._dense(v, f, codes, want)

        keyword: list[dict[str, Any]] = []
        if mode is SearchMode.SEMANTIC:
            dense = await dense_ranking()
            ranked = [(i, s) for i, s, _ in dense]
        else:
            # the keyword ranking needs no vector: PostgreSQL answers it while the query is embedded and Milvus
            # searches (gather raises the first failure and retrieves the other's)
            dense, keyword = await asyncio.gather(dense_ranking(), self._keyword(query, f, codes, want, 0))
            tiers = {i: t for i, _, t in dense} | {str(r["report_id"]): int(r["tier"]) for r in keyword}
            fused = rrf([[str(r["report_id"]) for r in keyword], [i for i, _, _ in dense]])
            ranked = sorted(fused, key=lambda kv: tiers[kv[0]])[:want]  # stable: fused order within a tier
        page, more = ranked[offset:offset + limit], len(ranked) > offset + limit
        # the keyword rows carry every read field: only the page's dense-only hits need a lookup
        on_page = {i for i, _ in page}
        found = {i: report_from_row(r) for r in keyword if (i := str(r["report_id"])) in on_page}
        missing = [i for i, _ in page if i not in found]
        if missing:
            found |= await self.reports_by_ids(missing)
        return ReportPage([ReportHit(found[i], s) for i, s in page if i in found], more)

    async def count_reports(self, *, query: str | None, mode: SearchMode, filter: ReportFilterSpec) -> int:
        codes = self.finding_codes(query, filter)
        keyword = query if mode is SearchMode.KEYWORD else None
        scope = q.report_scope(self.tables, keyword, filter, codes, await self.ts_config())
        if scope is None:
            return 0
        rows = await self._rows(q.count(self.tables, scope))
        return int(rows[0]["count"]) if rows else 0

    # -- images ----------------------------------------------------------------------------------------------
    async def image_vector(self, image_id: str) -> list[float] | None:
        from medsearch.pgstore import parse_vector

        if not fx.IDENT.pattern.fullmatch(image_id):
            return None
        rows = await self._rows(q.image_vector(self.tables, image_id))
        if not rows:
            return None
        return parse_vector(rows[0]["embedding"])

    async def similar_images(
        self, *, vector: Sequence[float], k: int, filter: ImageFilterSpec, exclude_ids: Sequence[str],
    ) -> list[ImageHit]:
        f = filter
        study_uids: list[str] | None = None
        post_filter = False
        if f.needs_reports:
            rows = await self._rows(q.studies_with_codes(self.tables, f, MAX_STUDY_IN_LIST + 1))
            if len(rows) <= MAX_STUDY_IN_LIST:
                study_uids = sorted(u for u in (str(r["study_uid"]) for r in rows) if fx.IDENT.pattern.fullmatch(u))
            else:
                post_filter = True  # too many studies for an expression: filter the neighbours in PostgreSQL
        expr = fx.image_expr(f, study_uids, exclude_ids)
        depth = k if not post_filter else min(max(8 * k, 64), MAX_WINDOW)
        while True:
            hits = await self._run(self._search, self.images, IMAGE_VECTOR, vector, expr, depth, "sop_instance_uid")
            if post_filter and hits:
                rows = await self._rows(q.images_passing(self.tables, [i for i, _ in hits], f))
                passing = {str(r["sop_instance_uid"]) for r in rows}
                kept = [(i, d) for i, d in hits if i in passing]
            else:
                kept = hits
            if not post_filter or len(kept) >= k or len(hits) < depth or depth >= MAX_WINDOW:
                break
            depth = min(depth * 4, MAX_WINDOW)
        kept = kept[:k]
        found = await self.images_by_ids([i for i, _ in kept])
        return [ImageHit(found[i], d) for i, d in kept if i in found]

    # -- facets ----------------------------------------------------------------------------------------------
    async def _facets(self, column: str, query: str | None, f: ReportFilterSpec, size: int) -> list[FacetCount]:
        scope = q.report_scope(self.tables, query, f, self.finding_codes(query, f), await self.ts_config())
        if scope is None:
            return []
        rows = await self._rows(q.facets(self.tables, column, scope, size))
        return [FacetCount(str(r["key"]), int(r["n"])) for r in rows]

    async def icd10_facets(
        self, *, query: str | None, filter: ReportFilterSpec, polarity: Polarity, size: int,
    ) -> list[FacetCount]:
        return await self._facets(ICD10_FIELD[polarity], query, filter, size)

    async def term_facets(
        self, *, field: str, report_ids: Sequence[str] | None, query: str | None, filter: ReportFilterSpec,
        size: int,
    ) -> list[FacetCount]:
        if report_ids is not None:
            ids = self._good(report_ids)
            if not ids:
                return []
            filter = replace(filter, report_ids=tuple(ids))
        return await self._facets(field, query, filter, size)

    # -- DICOMweb reads (statements from medsearch_api.dicomweb_read) ----------------------------------------
    async def sql_rows(self, query: q.Query) -> list[dict[str, Any]]:
        """Rows of a statement built by a pure query builder over this index's tables."""
        return await self._rows(query)

    # -- health ----------------------------------------------------------------------------------------------
    def _milvus_ping(self) -> None:
        for coll in (self.reports, self.images):
            if not self._call(self._client.has_collection, coll, timeout=self.milvus_timeout):
                raise RepositoryError(f"collection {coll} does not exist (run `medsearch up` or the operator)")

    async def ping(self) -> None:
        from psycopg import sql

        await self.ts_config()  # the schema exists and is migrated
        rows = await self._rows(q.Query(sql.SQL("SELECT to_regclass(%s) IS NOT NULL AS ok"),
                                        [f"{self.tables.schema}.audit_log"]))
        if not rows or not rows[0]["ok"]:  # without it every PHI-bearing request fails (medsearch_api.audit)
            raise RepositoryError(f"schema {self.tables.schema} has no audit_log (run `medsearch up` or the operator "
                                  "to migrate it)")
        await self._run(self._milvus_ping)

    async def close(self) -> None:
        await self.pool.close()
