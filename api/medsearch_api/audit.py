"""The gateway's PHI audit: one append-only record per request that read or wrote PHI-bearing records
(:mod:`medsearch.audit` holds the record, its FHIR AuditEvent / DICOM PS3.15 A.5 shape and the SQL).

What counts as PHI-bearing (docs/security.md): a report, image or study record returned (by id, in a search page
or listing, as a similar image, through a nested field), a thumbnail served, an upload or ingest (GraphQL
mutations, DICOMweb STOW-RS), the similar-image search by upload, and facets over named reports
(``entityFacets(reportIds:)``, the compat ``get*byReports``): their ids are recorded. Counts and facets over a
query or the whole index are aggregates and are not audited on their own.

- :class:`AuditingRepository` wraps the per-request repository and notes the ids of every record it returns in the
  request's :class:`~medsearch.audit.AuditTrail`;
- :class:`AuditExtension` writes one record per GraphQL operation after it ran; if the write fails, the operation's
  answer is replaced by ``SERVICE_UNAVAILABLE`` with a reference (no PHI leaves without its record);
- :func:`record` is the one call for plain routes (thumbnails, DICOMweb): it raises :class:`AuditUnavailable`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from graphql import GraphQLError, OperationDefinitionNode
from strawberry.extensions import SchemaExtension

from medsearch import audit as core
from medsearch.audit import AuditEvent, AuditTrail
from medsearch.contracts.naming import IndexRef, names_of
from medsearch_api import blocking, errors
from medsearch_api import records as rec
from medsearch_api.repository import PgPool, QueryVector, Repository

log = logging.getLogger("medsearch_api.audit")
SOURCE = "medsearch-api"


class AuditUnavailable(RuntimeError):
    """The audit record could not be written; ``reference`` is logged with the cause."""

    def __init__(self, reference: str) -> None:
        super().__init__(f"the audit log is unavailable (reference {reference})")
        self.reference = reference


class AuditLog:
    """Writes audit records to ``<schema>.audit_log`` (PostgreSQL, the system of record) and, when ``stream`` is
    on, copies each written record to ``<index>.audit`` (Kafka; best effort: PostgreSQL holds the record)."""

    def __init__(self, pool: PgPool, index: IndexRef, *, stream: Any = None) -> None:
        self.pool = pool
        self.index = names_of(index)
        self.stream = stream  # a kafka-python-like producer (send(topic, value=...)), or None
        self._insert = core.insert_sql(index)

    async def write(self, event: AuditEvent) -> AuditEvent:
        from psycopg import Error as PgError
        from psycopg_pool import PoolTimeout

        try:
            pool = await self.pool.get()
            async with pool.connection() as conn, conn.cursor() as cur:
                await cur.execute(self._insert, event.params())
                row = await cur.fetchone()
        except (PgError, PoolTimeout, OSError) as err:
            ref = secrets.token_hex(6)
            # the cause and what the record was about, never any PHI beyond ids counts
            log.error("audit record not written (reference %s): %s: %s; %s by %s, %d report, %d image, %d study "
                      "ids", ref, type(err).__name__, err, event.operation, event.principal, len(event.report_ids),
                      len(event.image_ids), len(event.study_uids))
            raise AuditUnavailable(ref) from err
        written = AuditEvent(**{**event.__dict__, "event_id": int(row[0]), "recorded": row[1]}) if row else event
        if self.stream is not None:
            self._send(written)
        return written

    def _send(self, event: AuditEvent) -> None:
        topic, value = self.index.audit_topic, event.to_bytes(self.index.index)

        def send() -> None:
            self.stream.send(topic, value=value).get(timeout=30)

        future = asyncio.get_running_loop().run_in_executor(blocking.pool("audit"), send)

        def done(f: asyncio.Future[None]) -> None:
            if not f.cancelled() and f.exception() is not None:
                log.warning("audit record %s not streamed to %s (it is in PostgreSQL): %s", event.event_id, topic,
                            type(f.exception()).__name__)

        future.add_done_callback(done)

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()


async def record(audit_log: AuditLog | None, trail: AuditTrail, *, operation: str, principal: Any,
                 client_addr: str = "", outcome: int = core.SUCCESS, outcome_desc: str = "") -> None:
    """Write the record of a plain route's request (thumbnails, DICOMweb). Raises :class:`AuditUnavailable`;
    without an audit log (unit tests) it does nothing."""
    if audit_log is None:
        return
    await audit_log.write(trail.event(
        operation=operation, outcome=outcome, outcome_desc=outcome_desc, principal=str(getattr(principal, "name", "")),
        auth_method=str(getattr(principal, "method", "")), roles=getattr(principal, "roles", ()),
        client_addr=client_addr, source=SOURCE))


class AuditingRepository:
    """A request's view of the :class:`~medsearch_api.repository.Repository`: every record it returns, and every
    report a facet is asked about by id, is noted in the request's trail."""

    def __init__(self, repo: Repository, trail: AuditTrail) -> None:
        self._repo = repo
        self.trail = trail

    def _reports(self, reports: Iterable[rec.ReportRecord]) -> None:
        rs = list(reports)
        self.trail.read(reports=[r.report_id for r in rs], studies=[r.study_uid for r in rs])

    def _images(self, images: Iterable[rec.ImageRecord]) -> None:
        im = list(images)
        self.trail.read(images=[i.sop_instance_uid for i in im], studies=[i.study_uid for i in im],
                        reports=[i.report_id for i in im])

    async def reports_by_ids(self, ids: Sequence[str]) -> dict[str, rec.ReportRecord]:
        found = await self._repo.reports_by_ids(ids)
        self._reports(found.values())
        return found

    async def images_by_ids(self, ids: Sequence[str]) -> dict[str, rec.ImageRecord]:
        found = await self._repo.images_by_ids(ids)
        self._images(found.values())
        return found

    async def images_by_studies(self, study_uids: Sequence[str]) -> dict[str, list[rec.ImageRecord]]:
        found = await self._repo.images_by_studies(study_uids)
        self._images(i for v in found.values() for i in v)
        return found

    async def reports_by_studies(self, study_uids: Sequence[str]) -> dict[str, list[rec.ReportRecord]]:
        found = await self._repo.reports_by_studies(study_uids)
        self._reports(r for v in found.values() for r in v)
        return found

    async def search_reports(self, *, query: str | None, mode: rec.SearchMode, query_vector: QueryVector | None,
                             filter: rec.ReportFilterSpec, offset: int, limit: int) -> rec.ReportPage:
        page = await self._repo.search_reports(query=query, mode=mode, query_vector=query_vector, filter=filter,
                                               offset=offset, limit=limit)
        self._reports(h.report for h in page.hits)
        return page

    async def count_reports(self, *, query: str | None, mode: rec.SearchMode, filter: rec.ReportFilterSpec) -> int:
        return await self._repo.count_reports(query=query, mode=mode, filter=filter)  # an aggregate

    async def image_vector(self, image_id: str) -> list[float] | None:
        return await self._repo.image_vector(image_id)  # a vector, not returned to the client

    async def similar_images(self, *, vector: Sequence[float], k: int, filter: rec.ImageFilterSpec,
                             exclude_ids: Sequence[str]) -> list[rec.ImageHit]:
        self.trail.read(images=exclude_ids)  # the query image (by id), or an upload (no id)
        hits = await self._repo.similar_images(vector=vector, k=k, filter=filter, exclude_ids=exclude_ids)
        self._images(h.image for h in hits)
        return hits

    async def icd10_facets(self, *, query: str | None, filter: rec.ReportFilterSpec, polarity: rec.Polarity,
                           size: int) -> list[rec.FacetCount]:
        return await self._repo.icd10_facets(query=query, filter=filter, polarity=polarity, size=size)

    async def term_facets(self, *, field: str, report_ids: Sequence[str] | None, query: str | None,
                          filter: rec.ReportFilterSpec, size: int) -> list[rec.FacetCount]:
        if report_ids is not None:  # the terms of named reports: their content
            self.trail.read(reports=report_ids)
        return await self._repo.term_facets(field=field, report_ids=report_ids, query=query, filter=filter,
                                            size=size)

    async def ping(self) -> None:
        await self._repo.ping()


def _root_fields(document: Any, operation_name: str | None) -> list[str]:
    for d in getattr(document, "definitions", ()):
        if isinstance(d, OperationDefinitionNode) and (operation_name is None or
                                                       (d.name and d.name.value == operation_name)):
            return [s.name.value for s in d.selection_set.selections if hasattr(s, "name")]
    return []


def _outcome(result: Any) -> tuple[int, str]:
    errs = list(getattr(result, "errors", None) or [])
    if not errs:
        return core.SUCCESS, ""
    codes = sorted({str((e.extensions or {}).get("code") or "ERROR") for e in errs})
    return (core.MINOR_FAILURE if getattr(result, "data", None) else core.SERIOUS_FAILURE), ",".join(codes)


def audit_extension(endpoint: str) -> type[SchemaExtension]:
    """A schema extension recording each operation of ``endpoint`` (``graphql`` / ``compat``)."""

    class AuditExtension(SchemaExtension):
        async def on_operation(self) -> AsyncIterator[None]:
            yield
            ec = self.execution_context
            ctx = ec.context
            trail: AuditTrail | None = getattr(ctx, "audit", None)
            principal = getattr(ctx, "principal", None)
            if trail is None or principal is None or not trail.phi:
                return
            result = ec.result
            outcome, desc = _outcome(result)
            kind = "mutation" if trail.action == "C" else "query"
            fields = ",".join(_root_fields(ec.graphql_document, ec.operation_name)) or "-"
            request = getattr(ctx, "request", None)
            client = request.client.host if request is not None and request.client else ""
            try:
                await record(ctx.services.audit_log, trail, operation=f"{endpoint} {kind} {fields}",
                             principal=principal, client_addr=client, outcome=outcome, outcome_desc=desc)
            except AuditUnavailable as err:
                if result is not None:
                    result.data = None
                    result.errors = [GraphQLError(str(err), extensions={
                        "code": errors.SERVICE_UNAVAILABLE, "reference": err.reference})]

    return AuditExtension
