"""The repository: the one place that talks to Milvus.

Resolvers call the async methods of :class:`Repository`; :class:`MilvusRepository` implements them over
pymilvus' synchronous ``MilvusClient`` in worker threads. Every expression comes from
:mod:`medsearch_api.filters` (validated values only). Time spent inside Milvus calls is added to the
per-request :data:`MILVUS_SECONDS` accumulator (reported in ``Server-Timing`` and ``/metrics``).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from medsearch.contracts.collections import IMAGE_VECTOR, REPORT_PK, REPORT_SPARSE, REPORT_TEXT, REPORT_VECTOR
from medsearch.contracts.naming import names_for
from medsearch.findings import query_findings
from medsearch.provision import ensure_loaded, with_loaded
from medsearch_api import filters as fx
from medsearch_api.records import (
    ICD10_FIELD,
    IMAGE_READ_FIELDS,
    REPORT_READ_FIELDS,
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

# Milvus caps offset + limit of a search at 16384.
MAX_WINDOW = 16384
# Most studies a modality/view/body-part filter may resolve to before it is refused as too broad for a
# report query (it becomes an ``in [...]`` list).
MAX_STUDY_FANOUT = 16384
FACET_SCAN_BATCH = 2000
# What ranking by finding partition needs of each hit.
PARTITION_FIELDS = ("report_id", "icd10_positive", "icd10_negative")
LOAD_CHECK_SECONDS = 10.0


class MilvusTimer:
    """Accumulates seconds spent in Milvus calls for the current request (thread-safe)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self.seconds += seconds
            self.calls += 1


MILVUS_TIMER: contextvars.ContextVar[MilvusTimer | None] = contextvars.ContextVar("milvus_timer", default=None)


class RepositoryError(RuntimeError):
    """Milvus failed or is unreachable (transient from the client's point of view)."""


class QueryTooBroad(ValueError):
    """A filter would need an unbounded expansion (too many studies)."""


class Repository(Protocol):
    async def reports_by_ids(self, ids: Sequence[str]) -> dict[str, ReportRecord]: ...
    async def images_by_ids(self, ids: Sequence[str]) -> dict[str, ImageRecord]: ...
    async def images_by_studies(self, study_uids: Sequence[str]) -> dict[str, list[ImageRecord]]: ...
    async def reports_by_studies(self, study_uids: Sequence[str]) -> dict[str, list[ReportRecord]]: ...
    async def search_reports(
        self, *, query: str | None, mode: SearchMode, query_vector: Sequence[float] | None,
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


def _top(counter: Counter[str], size: int) -> list[FacetCount]:
    items = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    return [FacetCount(k, n) for k, n in items[:size]]


class LazyClient:
    """A ``MilvusClient`` created on first use (the gateway starts, and answers /healthz, before Milvus)."""

    def __init__(self, uri: str, token: str | None = None, timeout: float = 10.0) -> None:
        self.uri = uri
        self._token = token
        self._timeout = timeout
        self._client: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        with self._lock:
            if self._client is None:
                from medsearch.provision import ProvisionError, milvus_client

                try:
                    self._client = milvus_client(self.uri, self._token, timeout=self._timeout)
                except ProvisionError as err:
                    raise RepositoryError(str(err)) from err
            return self._client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


class MilvusRepository:
    """:class:`Repository` over a ``MilvusClient`` (thread-safe gRPC client, shared by requests)."""

    def __init__(self, client: Any, index: str, *, facet_cache_seconds: float = 0.0) -> None:
        """``facet_cache_seconds``: how long facets over ALL reports (no query) may be served from memory
        (they scan every row; 0 = never cached)."""
        self._client = client
        self.facet_cache_seconds = facet_cache_seconds
        self._facet_cache: dict[Any, tuple[float, list[FacetCount]]] = {}
        self._cache_lock = threading.Lock()
        names = names_for(index)
        self.reports = names.reports_collection
        self.images = names.images_collection
        self._load_checked: dict[str, float] = {}  # collection -> monotonic time of the last load-state check

    # -- plumbing ---------------------------------------------------------------------------------------
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
        milvus-lite answers ``count(*)`` on a released collection with 0 rather than an error)."""
        now = time.monotonic()
        if now - self._load_checked.get(collection, float("-inf")) < LOAD_CHECK_SECONDS:
            return
        ensure_loaded(self._client, collection)
        self._load_checked[collection] = now

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        ctx = contextvars.copy_context()
        return await asyncio.to_thread(ctx.run, fn, *args)

    def _query(self, collection: str, expr: str, fields: Sequence[str], limit: int | None = None,
               offset: int | None = None) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {"filter": expr, "output_fields": list(fields)}
        if limit is not None:
            kwargs["limit"] = limit
        if offset:
            kwargs["offset"] = offset
        rows = self._call(self._client.query, collection, **kwargs)
        return [dict(r) for r in rows]

    def _scan(self, collection: str, expr: str, fields: Sequence[str]) -> list[dict[str, Any]]:
        """Every row matching ``expr``: one query when it fits the query window, else the query iterator."""
        first = self._query(collection, expr, fields, limit=MAX_WINDOW)
        if len(first) < MAX_WINDOW:
            return first
        it = self._call(self._client.query_iterator, collection, batch_size=FACET_SCAN_BATCH, filter=expr,
                        output_fields=list(fields))
        out: list[dict[str, Any]] = []
        try:
            while True:
                batch = self._call(it.next)
                if not batch:
                    break
                out.extend(dict(r) for r in batch)
        finally:
            it.close()
        return out

    # -- lookups ----------------------------------------------------------------------------------------
    def _reports_by_ids(self, ids: Sequence[str]) -> dict[str, ReportRecord]:
        good = [i for i in ids if fx.IDENT.pattern.fullmatch(i) and len(i) <= fx.IDENT.max_len]
        if not good:
            return {}
        rows = self._query(self.reports, fx.ids_expr("report_id", good), REPORT_READ_FIELDS, limit=len(good))
        return {str(r["report_id"]): report_from_row(r) for r in rows}

    async def reports_by_ids(self, ids: Sequence[str]) -> dict[str, ReportRecord]:
        return await self._run(self._reports_by_ids, list(ids))

    def _images_by_ids(self, ids: Sequence[str]) -> dict[str, ImageRecord]:
        good = [i for i in ids if fx.IDENT.pattern.fullmatch(i) and len(i) <= fx.IDENT.max_len]
        if not good:
            return {}
        rows = self._query(self.images, fx.ids_expr("sop_instance_uid", good), IMAGE_READ_FIELDS, limit=len(good))
        return {str(r["sop_instance_uid"]): image_from_row(r) for r in rows}

    async def images_by_ids(self, ids: Sequence[str]) -> dict[str, ImageRecord]:
        return await self._run(self._images_by_ids, list(ids))

    def _images_by_studies(self, uids: Sequence[str]) -> dict[str, list[ImageRecord]]:
        good = [u for u in uids if fx.IDENT.pattern.fullmatch(u)]
        out: dict[str, list[ImageRecord]] = {u: [] for u in uids}
        if good:
            for r in self._scan(self.images, fx.ids_expr("study_uid", good), IMAGE_READ_FIELDS):
                out.setdefault(str(r["study_uid"]), []).append(image_from_row(r))
        for v in out.values():
            v.sort(key=lambda i: (i.series_uid, i.sop_instance_uid))
        return out

    async def images_by_studies(self, study_uids: Sequence[str]) -> dict[str, list[ImageRecord]]:
        return await self._run(self._images_by_studies, list(study_uids))

    def _reports_by_studies(self, uids: Sequence[str]) -> dict[str, list[ReportRecord]]:
        good = [u for u in uids if fx.IDENT.pattern.fullmatch(u)]
        out: dict[str, list[ReportRecord]] = {u: [] for u in uids}
        if good:
            for r in self._scan(self.reports, fx.ids_expr("study_uid", good), REPORT_READ_FIELDS):
                out.setdefault(str(r["study_uid"]), []).append(report_from_row(r))
        for v in out.values():
            v.sort(key=lambda r: r.report_id)
        return out

    async def reports_by_studies(self, study_uids: Sequence[str]) -> dict[str, list[ReportRecord]]:
        return await self._run(self._reports_by_studies, list(study_uids))

    # -- report search ----------------------------------------------------------------------------------
    def _report_filter_expr(self, f: ReportFilterSpec) -> str:
        study_uids: list[str] | None = None
        if f.needs_images:
            rows = self._query(self.images, fx.images_for_report_filter(f), ["study_uid"], limit=MAX_WINDOW)
            study_uids = sorted({str(r["study_uid"]) for r in rows if r.get("study_uid")})
            if len(rows) >= MAX_WINDOW:
                raise QueryTooBroad(
                    "filter: the modality/viewPosition/bodyPart part matches too many images; narrow it down")
            study_uids = [u for u in study_uids if fx.UID.pattern.fullmatch(u) or fx.IDENT.pattern.fullmatch(u)]
            if len(study_uids) > MAX_STUDY_FANOUT:
                raise QueryTooBroad("filter: matches too many studies; narrow it down")
        return fx.report_expr(f, study_uids)

    def _search_ids(self, field: str, data: Any, expr: str, limit: int, offset: int = 0,
                    params: dict[str, Any] | None = None) -> list[tuple[str, float]]:
        return [(pk, d) for pk, d, _ in self._search_hits(field, data, expr, limit, offset, params, ["report_id"])]

    def _search_hits(self, field: str, data: Any, expr: str, limit: int, offset: int,
                     params: dict[str, Any] | None, fields: Sequence[str]) -> list[tuple[str, float, dict[str, Any]]]:
        if limit <= 0:
            return []
        kwargs: dict[str, Any] = {"anns_field": field, "limit": limit, "output_fields": list(fields)}
        if offset:
            kwargs["offset"] = offset
        if expr:
            kwargs["filter"] = expr
        if params:
            kwargs["search_params"] = params
        res = self._call(self._client.search, self.reports, data=[data], **kwargs)
        hits = res[0] if res else []
        out = []
        for h in hits:
            pk = _hit_pk(h, "report_id")
            out.append((pk, float(h["distance"]), {**dict(h.get("entity") or {}), "report_id": pk}))
        return out

    @staticmethod
    def _finding_codes(query: str | None, f: ReportFilterSpec) -> tuple[str, ...]:
        """ICD-10-CM codes of the findings the query names (:func:`medsearch.findings.query_findings`), unless
        the filter itself asks about negated or uncertain codes of those findings (then every mention counts)."""
        if not query or not query.strip():
            return ()
        codes = {c for cs in query_findings(query).values() for c in cs}
        if codes & (set(f.negative_codes) | set(f.uncertain_codes)):
            return ()
        return tuple(sorted(codes))

    def _ranked(self, query: str, mode: SearchMode, vector: Sequence[float] | None, expr: str,
                want: int) -> list[tuple[str, float, dict[str, Any] | None]]:
        """The top ``want`` reports for one expression: (id, score, row or None when only the id is known)."""
        if mode is SearchMode.KEYWORD:
            hits = self._search_hits(REPORT_SPARSE, query, expr, want, 0, {"metric_type": "BM25"},
                                     REPORT_READ_FIELDS)
            return [(i, abs(d), e) for i, d, e in hits]  # milvus-lite reports BM25 as a negative distance
        if vector is None:
            raise ValueError(f"{mode.name} search needs a query vector")
        if mode is SearchMode.SEMANTIC:
            return list(self._search_hits(REPORT_VECTOR, list(vector), expr, want, 0, None, REPORT_READ_FIELDS))
        sparse = self._search_ids(REPORT_SPARSE, query, expr, want, 0, {"metric_type": "BM25"})
        dense = self._search_ids(REPORT_VECTOR, list(vector), expr, want, 0)
        return [(i, s, None) for i, s in rrf([[i for i, _ in sparse], [i for i, _ in dense]])[:want]]

    def _candidates(self, query: str, mode: SearchMode, vector: Sequence[float] | None, expr: str,
                    depth: int) -> list[list[tuple[str, float, dict[str, Any]]]]:
        """The ranked lists a mode fuses (one for KEYWORD/SEMANTIC, sparse and dense for HYBRID), ``depth`` deep,
        each hit carrying only its id and code arrays."""
        lists = []
        if mode in (SearchMode.KEYWORD, SearchMode.HYBRID):
            hits = self._search_hits(REPORT_SPARSE, query, expr, depth, 0, {"metric_type": "BM25"}, PARTITION_FIELDS)
            lists.append([(i, abs(d), e) for i, d, e in hits])  # milvus-lite reports BM25 as a negative distance
        if mode in (SearchMode.SEMANTIC, SearchMode.HYBRID):
            if vector is None:
                raise ValueError(f"{mode.name} search needs a query vector")
            lists.append(self._search_hits(REPORT_VECTOR, list(vector), expr, depth, 0, None, PARTITION_FIELDS))
        return lists

    def _partitioned(self, query: str, mode: SearchMode, vector: Sequence[float] | None, expr: str,
                     codes: Sequence[str], want: int) -> list[tuple[str, float]] | None:
        """What searching each finding partition (:func:`filters.finding_partitions`) with ``expr`` and
        concatenating would rank, computed from unfiltered rankings instead: milvus-lite evaluates array filters
        row by row (~1.5 s per search at 10k reports, against ~30 ms unfiltered).

        Exact with respect to the unfiltered ranking: a partition's top ``want`` within a ranked list is known
        once the list holds ``want`` of its members or is exhausted (fewer hits than asked for); until then the
        lists are deepened (x8). None when even MAX_WINDOW-deep lists do not settle it (the caller then runs the
        filtered searches). Scores are the collection-wide ones (milvus-lite's filtered BM25 searches score
        differently once a collection has several segments; on one sealed segment both agree)."""
        depth = min(max(4 * want, 64), MAX_WINDOW)
        while True:
            lists = self._candidates(query, mode, vector, expr, depth)
            ranked: list[tuple[str, float]] = []
            settled = True
            for member in (fx.row_asserts, fx.row_neither):
                # Only the first ``want`` of the concatenation matter. One ranked list: the second partition
                # needs only what the first leaves. Fused lists (HYBRID): each partition is fused from its
                # top ``want`` per list, as the filtered searches do, so the fusion needs them all.
                need = want - len(ranked) if len(lists) == 1 else want
                if need <= 0:
                    break
                per_list = [[(i, s) for i, s, row in hits if member(row, codes)] for hits in lists]
                if any(len(p) < need and len(hits) >= depth for p, hits in zip(per_list, lists, strict=True)):
                    settled = False
                    break
                if len(per_list) == 1:
                    ranked += per_list[0][:need]
                else:
                    ranked += rrf([[i for i, _ in p[:want]] for p in per_list])[:want]
            if settled:
                return ranked[:want]
            if depth >= MAX_WINDOW:
                return None
            depth = min(depth * 8, MAX_WINDOW)

    def _list_reports(self, expr: str, offset: int, limit: int) -> ReportPage:
        """Reports passing a filter without a query: newest first (report date, undated last), then by id.

        Milvus queries return rows in storage order, which changes with inserts and compaction, so the order is
        made here: the keys of every matching row are read (two scalar fields), sorted, and only the page's rows
        are fetched. Pages are therefore stable under offset pagination."""
        keys = self._scan(self.reports, expr, [REPORT_PK, "report_date"])
        keys.sort(key=lambda r: (-int(r.get("report_date") or 0), str(r[REPORT_PK])))
        ids = [str(r[REPORT_PK]) for r in keys[offset:offset + limit]]
        found = self._reports_by_ids(ids) if ids else {}
        return ReportPage([ReportHit(found[i], 0.0) for i in ids if i in found], len(keys) > offset + limit)

    def _search_reports(self, query: str | None, mode: SearchMode, vector: Sequence[float] | None,
                        f: ReportFilterSpec, offset: int, limit: int) -> ReportPage:
        expr = self._report_filter_expr(f)
        if not query or not query.strip():
            return self._list_reports(expr, offset, limit)
        want = min(offset + limit + 1, MAX_WINDOW)
        if offset >= want:
            return ReportPage([], False)
        codes = self._finding_codes(query, f)
        # A query naming a finding ranks the reports asserting it first, then those that mention its words without
        # asserting or negating it; reports that only negate it are left out.
        ranked: list[tuple[str, float, dict[str, Any] | None]] = []
        fast = self._partitioned(query, mode, vector, expr, codes, want) if codes else None
        if fast is not None:
            ranked = [(i, s, None) for i, s in fast]
        else:
            for e in [fx.conj([expr, part]) for part in fx.finding_partitions(codes)] if codes else [expr]:
                ranked += self._ranked(query, mode, vector, e, want)
        page, more = ranked[offset:offset + limit], len(ranked) > offset + limit
        missing = [i for i, _, row in page if row is None]
        found = self._reports_by_ids(missing) if missing else {}
        hits = [ReportHit(report_from_row(row) if row is not None else found[i], s) for i, s, row in page
                if row is not None or i in found]
        return ReportPage(hits, more)

    async def search_reports(
        self, *, query: str | None, mode: SearchMode, query_vector: Sequence[float] | None,
        filter: ReportFilterSpec, offset: int, limit: int,
    ) -> ReportPage:
        return await self._run(self._search_reports, query, mode, query_vector, filter, offset, limit)

    def _matching_rows(self, query: str | None, f: ReportFilterSpec, fields: Sequence[str]) -> list[dict[str, Any]]:
        """Reports containing any query term (all reports without a query) that pass the filter.

        With a query this is a BM25 search over the whole window: a report scores > 0 exactly when it shares a
        token with the query under the collection's analyzer, and the search path is far cheaper than a
        ``TEXT_MATCH`` scan. A saturated window falls back to the exact ``TEXT_MATCH`` scan."""
        expr = self._report_filter_expr(f)
        if not query or not query.strip():
            return self._scan(self.reports, expr, fields)
        if not fx.query_tokens(query):
            return []
        kwargs: dict[str, Any] = {"anns_field": REPORT_SPARSE, "limit": MAX_WINDOW,
                                  "output_fields": list(fields), "search_params": {"metric_type": "BM25"}}
        if expr:
            kwargs["filter"] = expr
        res = self._call(self._client.search, self.reports, data=[query], **kwargs)
        hits = res[0] if res else []
        if len(hits) < MAX_WINDOW:
            return [{**dict(h.get("entity") or {}), "report_id": _hit_pk(h, "report_id")} for h in hits]
        return self._scan(self.reports, self._matching_expr(query, f), fields)

    def _matching_expr(self, query: str | None, f: ReportFilterSpec) -> str:
        expr = self._report_filter_expr(f)
        if query and query.strip():
            tm = fx.text_match(REPORT_TEXT, query)
            if tm is None:
                return "report_id == \"\" and report_id != \"\""
            expr = fx.conj([tm, expr])
        return expr

    def _count_reports(self, query: str | None, mode: SearchMode, f: ReportFilterSpec) -> int:
        # A finding search leaves out reports that only negate the finding (filters.finding_visible); that is
        # decided here from the code arrays rather than by an array filter (slow in milvus-lite, see _partitioned).
        codes = self._finding_codes(query, f)
        if mode is SearchMode.KEYWORD and query and query.strip():
            if not codes:
                return len(self._matching_rows(query, f, []))
            return sum(fx.row_visible(r, codes) for r in self._matching_rows(query, f, PARTITION_FIELDS))
        expr = self._report_filter_expr(f)
        if codes:
            return sum(fx.row_visible(r, codes) for r in self._scan(self.reports, expr, PARTITION_FIELDS))
        rows = self._query(self.reports, expr, ["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    async def count_reports(self, *, query: str | None, mode: SearchMode, filter: ReportFilterSpec) -> int:
        return await self._run(self._count_reports, query, mode, filter)

    # -- images -----------------------------------------------------------------------------------------
    def _image_vector(self, image_id: str) -> list[float] | None:
        if not fx.IDENT.pattern.fullmatch(image_id):
            return None
        rows = self._query(self.images, fx.ids_expr("sop_instance_uid", [image_id]), [IMAGE_VECTOR], limit=1)
        if not rows:
            return None
        return [float(x) for x in rows[0][IMAGE_VECTOR]]

    async def image_vector(self, image_id: str) -> list[float] | None:
        return await self._run(self._image_vector, image_id)

    def _similar_images(self, vector: Sequence[float], k: int, f: ImageFilterSpec,
                        exclude: Sequence[str]) -> list[ImageHit]:
        study_uids: list[str] | None = None
        if f.needs_reports:
            rows = self._query(self.reports, fx.reports_for_image_filter(f), ["study_uid"], limit=MAX_WINDOW)
            if len(rows) >= MAX_WINDOW:
                raise QueryTooBroad("filter: the code part matches too many reports; narrow it down")
            study_uids = sorted({str(r["study_uid"]) for r in rows if r.get("study_uid")})
            study_uids = [u for u in study_uids if fx.IDENT.pattern.fullmatch(u)]
        expr = fx.image_expr(f, study_uids, exclude)
        kwargs: dict[str, Any] = {"anns_field": IMAGE_VECTOR, "limit": k, "output_fields": list(IMAGE_READ_FIELDS)}
        if expr:
            kwargs["filter"] = expr
        res = self._call(self._client.search, self.images, data=[list(vector)], **kwargs)
        hits = res[0] if res else []
        out = []
        for h in hits:
            ent = dict(h.get("entity") or {})
            ent.setdefault("sop_instance_uid", _hit_pk(h, "sop_instance_uid"))
            out.append(ImageHit(image_from_row(ent), float(h["distance"])))
        return out

    async def similar_images(
        self, *, vector: Sequence[float], k: int, filter: ImageFilterSpec, exclude_ids: Sequence[str],
    ) -> list[ImageHit]:
        return await self._run(self._similar_images, list(vector), k, filter, list(exclude_ids))

    # -- facets -----------------------------------------------------------------------------------------
    def _term_facets(self, field: str, report_ids: Sequence[str] | None, query: str | None,
                     f: ReportFilterSpec, size: int) -> list[FacetCount]:
        if report_ids is not None:
            ids = [i for i in report_ids if fx.IDENT.pattern.fullmatch(i)]
            if not ids:
                return []
            f = replace(f, report_ids=tuple(ids))
        key = (field, query or "", f, size)
        if not query and self.facet_cache_seconds > 0:
            with self._cache_lock:
                hit = self._facet_cache.get(key)
                if hit is not None and time.monotonic() - hit[0] < self.facet_cache_seconds:
                    return hit[1]
        counter: Counter[str] = Counter()
        for row in self._matching_rows(query, f, [field]):
            # each report counts once per distinct value
            counter.update(set(str(v) for v in (row.get(field) or [])))
        out = _top(counter, size)
        if not query and self.facet_cache_seconds > 0:
            with self._cache_lock:
                if len(self._facet_cache) > 1024:
                    self._facet_cache.clear()
                self._facet_cache[key] = (time.monotonic(), out)
        return out

    async def icd10_facets(
        self, *, query: str | None, filter: ReportFilterSpec, polarity: Polarity, size: int,
    ) -> list[FacetCount]:
        return await self._run(self._term_facets, ICD10_FIELD[polarity], None, query, filter, size)

    async def term_facets(
        self, *, field: str, report_ids: Sequence[str] | None, query: str | None, filter: ReportFilterSpec,
        size: int,
    ) -> list[FacetCount]:
        return await self._run(self._term_facets, field, report_ids, query, filter, size)

    def _ping(self) -> None:
        for coll in (self.reports, self.images):
            if not self._call(self._client.has_collection, coll):
                raise RepositoryError(f"collection {coll} does not exist (run `medsearch up` or the operator)")

    async def ping(self) -> None:
        await self._run(self._ping)
