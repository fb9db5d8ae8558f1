"""DICOMweb routes of the gateway (PS3.18), tokens in the ``Authorization`` header.

Reads, role ``reader`` (as the GraphQL reads): QIDO-RS ``GET /dicomweb/studies``, ``/studies/{study}/series``,
``/studies/{study}[/series/{series}]/instances``, answered by SQL over the system of record (PostgreSQL; the
statements come from :mod:`medsearch_api.dicomweb_read`); WADO-RS retrieve of studies, series and instances
(``multipart/related; type="application/dicom"``, each object byte for byte as stored, in its stored transfer
syntax), their ``/metadata`` (``application/dicom+json``, no bulk data) and ``/rendered`` frames (``image/png`` or
``image/jpeg``, ``window=center,width[,function]``) through :mod:`medsearch.imaging`'s one decode pipeline and its
size limits. Every PHI-bearing read passes :func:`audit_phi_read` once.

STOW-RS (``POST /dicomweb/studies[/{study}]``), role ``ingester``: each part of the
``multipart/related; type="application/dicom"`` body goes through the same publisher as every other way in
(object store, duplicate ledger, ``<index>.dicom``); the answer lists every instance as stored
(ReferencedSOPSequence) or failed with its reason (FailedSOPSequence), so one bad part fails alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from graphql import GraphQLError

from medsearch import audit as core_audit
from medsearch import store
from medsearch.contracts.naming import IndexRef
from medsearch.dicomnet.stow import (
    FAILURE_CANNOT_UNDERSTAND,
    FAILURE_PROCESSING,
    FAILURE_SOP_CLASS_MISMATCH,
    FAILURE_TRANSFER_SYNTAX,
    InstanceOutcome,
    StowRequestError,
    parse_multipart_related,
    response_body,
)
from medsearch_api import blocking, errors
from medsearch_api import dicomweb_read as dw
from medsearch_api.audit import AuditLog, AuditUnavailable, record
from medsearch_api.context import Ingest
from medsearch_api.repository import RepositoryError
from medsearch_api.sql import Query, Tables

log = logging.getLogger("medsearch.api.dicomweb")
DICOM_JSON = "application/dicom+json"


def _header(data: bytes) -> tuple[str | None, str | None, str | None, str | None]:
    """(SOPClassUID, SOPInstanceUID, StudyInstanceUID, TransferSyntaxUID) of a part, or Nones when unreadable."""
    from medsearch.producer import dicom_header

    ds = dicom_header(data)
    if ds is None:
        return None, None, None, None

    def get(elem: Any, key: str) -> str | None:
        try:
            v = elem.get(key)
        except Exception:  # noqa: BLE001 - a malformed element is a failure of this part, reported below
            return None
        return (str(v).strip() or None) if v else None

    meta = getattr(ds, "file_meta", None)
    ts = get(meta, "TransferSyntaxUID") if meta is not None else None
    return get(ds, "SOPClassUID"), get(ds, "SOPInstanceUID"), get(ds, "StudyInstanceUID"), ts


MAX_RETRIEVE_INSTANCES = 10_000  # objects one WADO-RS study/series retrieve streams at most


async def audit_phi_read(audit_log: AuditLog | None, request: Request, principal: Any, operation: str,
                         uids: list[str], *, studies: bool = False) -> JSONResponse | None:
    """THE call site of the audit log for DICOMweb reads: every QIDO/WADO answer carrying PHI passes here once, with
    the principal, the operation and the study (QIDO study level) or instance UIDs answered. None when recorded;
    a 503 answer (with the audit reference) when the record could not be written: the read then fails."""
    trail = core_audit.AuditTrail()
    if studies:
        trail.read(studies=uids)
    else:
        trail.read(images=uids)
    client = request.client.host if request.client else ""
    try:
        await record(audit_log, trail, operation=f"dicomweb {operation}", principal=principal, client_addr=client)
    except AuditUnavailable as err:
        return JSONResponse({"errors": [{"message": "the audit log is unavailable", "extensions": {
            "code": errors.SERVICE_UNAVAILABLE, "reference": err.reference}}]}, status_code=503)
    return None


def _problem(status: int, message: str, code: str = "BAD_REQUEST") -> JSONResponse:
    return JSONResponse({"errors": [{"message": message, "extensions": {"code": code}}]}, status_code=status)


def register_dicomweb_reads(app: FastAPI, *, repo: Any, index: IndexRef, object_store_url: str,
                            principal_of: Callable[[Request], Any], audit_log: AuditLog | None = None,
                            max_limit: int = dw.MAX_LIMIT) -> None:
    """QIDO-RS and WADO-RS routes (role reader) over the index's PostgreSQL tables and the object store."""
    from medsearch.imaging import ImageDecodeError, decode_dicom, render_raster

    tables = Tables(index)
    store_root = object_store_url.rstrip("/") + "/"

    async def reader(request: Request) -> Any:
        principal = await asyncio.to_thread(principal_of, request)
        return principal if principal.has("reader") else None

    def forbidden() -> JSONResponse:
        return _problem(403, "DICOMweb reads need the reader role", errors.FORBIDDEN)

    async def rows(query: Query) -> list[dict[str, Any]]:
        fn = getattr(repo, "sql_rows", None)
        if fn is None:
            raise RepositoryError("DICOMweb reads need the PostgreSQL repository")
        out: list[dict[str, Any]] = await fn(query)
        return out

    def root_of(request: Request) -> str:
        return str(request.base_url).rstrip("/") + "/dicomweb"

    async def qido(request: Request, level: dw.Level, study: str | None = None, series: str | None = None
                   ) -> Response:
        principal = await reader(request)
        if principal is None:
            return forbidden()
        try:
            q = dw.parse_qido(level, request.query_params.multi_items(), study_uid=study, series_uid=series,
                              max_limit=max_limit)
        except dw.QidoError as err:
            return _problem(400, str(err))
        try:
            found = await rows(dw.qido_sql(tables, q))
        except RepositoryError as err:
            log.error("QIDO-RS failed: %s", err)
            return _problem(503, "the index store is unavailable", "UNAVAILABLE")
        items, more = dw.page(found, q.limit)
        body = [dw.to_dicom_json(level, r, root_of(request)) for r in items]
        key = {"study": "study_uid", "series": "series_uid", "instance": "sop_instance_uid"}[level]
        failed = await audit_phi_read(audit_log, request, principal, f"QIDO-RS {level}",
                                      [str(r[key]) for r in items], studies=level == "study")
        if failed is not None:
            return failed
        headers = {"Warning": dw.TRUNCATED_WARNING} if more else {}
        if not body:
            return Response(status_code=204, headers=headers)
        return JSONResponse(body, media_type=DICOM_JSON, headers=headers)

    @app.get("/dicomweb/studies", include_in_schema=False)
    async def search_studies(request: Request) -> Response:
        return await qido(request, "study")

    @app.get("/dicomweb/studies/{study}/series", include_in_schema=False)
    async def search_series(study: str, request: Request) -> Response:
        return await qido(request, "series", study)

    @app.get("/dicomweb/studies/{study}/instances", include_in_schema=False)
    async def search_study_instances(study: str, request: Request) -> Response:
        return await qido(request, "instance", study)

    @app.get("/dicomweb/studies/{study}/series/{series}/instances", include_in_schema=False)
    async def search_instances(study: str, series: str, request: Request) -> Response:
        return await qido(request, "instance", study, series)

    # ---------------------------------------------------------------------------------------------- WADO-RS
    async def stored(study: str, series: str | None, sop: str | None) -> list[dict[str, Any]] | Response:
        if not all(dw.valid_uid(u) for u in (study, series, sop) if u is not None):
            return _problem(400, "a UID in the path is not a valid UID")
        try:
            found = await rows(dw.instances_sql(tables, study, series, sop, limit=MAX_RETRIEVE_INSTANCES + 1))
        except RepositoryError as err:
            log.error("WADO-RS lookup failed: %s", err)
            return _problem(503, "the index store is unavailable", "UNAVAILABLE")
        if not found:
            return _problem(404, "no such study, series or instance in this index", "NOT_FOUND")
        if len(found) > MAX_RETRIEVE_INSTANCES:
            return _problem(413, f"more than {MAX_RETRIEVE_INSTANCES} instances: retrieve series by series",
                            "PAYLOAD_TOO_LARGE")
        for r in found:
            uri = str(r["source_uri"])
            if not uri.startswith(store_root) or "/../" in uri or "\\" in uri:
                log.warning("refusing a source URI outside the object store for instance %s", r["sop_instance_uid"])
                return _problem(404, "an instance's object is not in the object store", "NOT_FOUND")
        return found

    async def fetch(uri: str) -> bytes | Response:
        try:
            data: bytes = await blocking.run("object-store", store.get_bytes, uri)
            return data
        except store.ObjectNotFound:
            return _problem(404, "the stored object is missing", "NOT_FOUND")
        except store.StoreError:
            return _problem(503, "object store unavailable", "UNAVAILABLE")

    async def first_object(study: str, series: str | None, sop: str | None
                           ) -> tuple[list[dict[str, Any]], bytes] | Response:
        """The instances at the path and the stored object of the first (missing: the error, before any answer)."""
        found = await stored(study, series, sop)
        if isinstance(found, Response):
            return found
        data = await fetch(str(found[0]["source_uri"]))
        return data if isinstance(data, Response) else (found, data)

    def at_each_level(suffix: str, handler: Callable[[Request, str, str | None, str | None], Awaitable[Response]]
                      ) -> None:
        """GET ``handler`` for a study, a series and an instance (the WADO-RS resource paths + ``suffix``)."""

        async def endpoint(request: Request) -> Response:
            p = request.path_params
            return await handler(request, p["study"], p.get("series"), p.get("sop"))

        for path in ("/studies/{study}", "/studies/{study}/series/{series}",
                     "/studies/{study}/series/{series}/instances/{sop}"):
            app.add_api_route(f"/dicomweb{path}{suffix}", endpoint, methods=["GET"], include_in_schema=False)

    async def retrieve(request: Request, study: str, series: str | None, sop: str | None) -> Response:
        principal = await reader(request)
        if principal is None:
            return forbidden()
        accept = request.headers.get("accept", "")
        if accept and not any(t in accept for t in ("application/dicom", "*/*", "multipart/related")):
            return _problem(406, "instances are served as multipart/related; type=\"application/dicom\"",
                            "NOT_ACCEPTABLE")
        got = await first_object(study, series, sop)
        if isinstance(got, Response):
            return got
        found, first = got
        failed = await audit_phi_read(audit_log, request, principal, "WADO-RS retrieve",
                                      [str(r["sop_instance_uid"]) for r in found])
        if failed is not None:
            return failed
        boundary = dw.multipart_boundary(f"{study}/{series}/{sop}")
        root = root_of(request)

        async def parts() -> Any:
            for n, r in enumerate(found):
                data = first if n == 0 else await blocking.run("object-store", store.get_bytes,
                                                               str(r["source_uri"]))
                loc = f"{root}/studies/{r['study_uid']}/series/{r['series_uid']}/instances/{r['sop_instance_uid']}"
                yield (b"\r\n" if n else b"") + dw.part_header(boundary, str(r["transfer_syntax"]), loc)
                yield data
            yield dw.multipart_end(boundary)

        return StreamingResponse(
            parts(), media_type=f'multipart/related; type="application/dicom"; boundary={boundary}')

    at_each_level("", retrieve)

    async def metadata(request: Request, study: str, series: str | None, sop: str | None) -> Response:
        principal = await reader(request)
        if principal is None:
            return forbidden()
        found = await stored(study, series, sop)
        if isinstance(found, Response):
            return found
        out = []
        for r in found:
            data = await fetch(str(r["source_uri"]))
            if isinstance(data, Response):
                return data
            try:
                out.append(await blocking.run("imaging", dw.metadata_json, data))
            except Exception as err:  # noqa: BLE001  # pydicom raises many types for a damaged object
                log.warning("metadata of instance %s unreadable: %s", r["sop_instance_uid"], type(err).__name__)
                return _problem(500, f"instance {r['sop_instance_uid']}: its stored object cannot be parsed",
                                "UNREADABLE")
        failed = await audit_phi_read(audit_log, request, principal, "WADO-RS metadata",
                                      [str(r["sop_instance_uid"]) for r in found])
        if failed is not None:
            return failed
        return JSONResponse(out, media_type=DICOM_JSON)

    at_each_level("/metadata", metadata)

    @app.get("/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/{frames}", include_in_schema=False)
    async def retrieve_frames(study: str, series: str, sop: str, frames: str, request: Request) -> Response:
        """WADO-RS frames: the bulk data of the listed frames, native (application/octet-stream, explicit VR
        little endian) or compressed as stored (their media type), in a multipart/related answer."""
        principal = await reader(request)
        if principal is None:
            return forbidden()
        try:
            numbers = dw.parse_frame_list(frames)
        except dw.QidoError as err:
            return _problem(400, str(err))
        obj = await first_object(study, series, sop)
        if isinstance(obj, Response):
            return obj
        data = obj[1]
        stored_ok = dw.accepts_stored_syntax(request.headers.get("accept"))
        try:
            got = await blocking.run("imaging", dw.frame_bytes, data, numbers, stored_ok=stored_ok)
        except dw.QidoError as err:
            status = 406 if "transcode" in str(err) else 404 if "requested" in str(err) else 422
            return _problem(status, f"instance {sop}: {err}")
        except ImageDecodeError as err:
            return _problem(413 if err.reason == "too_large" else 422, f"instance {sop}: {err.detail}",
                            err.reason.upper())
        failed = await audit_phi_read(audit_log, request, principal, "WADO-RS frames", [sop])
        if failed is not None:
            return failed
        boundary = dw.multipart_boundary(f"{sop}/frames/{frames}")
        loc = f"{root_of(request)}/studies/{study}/series/{series}/instances/{sop}/frames"
        body = b"".join((b"\r\n" if i else b"") + dw.frame_part_header(boundary, got.media_type, got.transfer_syntax,
                                                                       f"{loc}/{n}") + part
                        for i, (n, part) in enumerate(zip(numbers, got.data, strict=True)))
        body += dw.multipart_end(boundary)
        return Response(body, media_type=f'multipart/related; type="{got.media_type}"; boundary={boundary}')

    async def rendered(request: Request, study: str, series: str, sop: str, frame: int) -> Response:
        principal = await reader(request)
        if principal is None:
            return forbidden()
        params = request.query_params
        try:
            window = dw.parse_window(params.get("window"))
        except dw.QidoError as err:
            return _problem(400, str(err))
        try:
            media = dw.rendered_media_type(request.headers.get("accept"), params.get("accept"))
        except dw.QidoError as err:
            return _problem(406, str(err), "NOT_ACCEPTABLE")
        quality = params.get("quality", "90")
        if not quality.isdigit() or not 1 <= int(quality) <= 100:
            return _problem(400, "quality: an integer 1..100")
        obj = await first_object(study, series, sop)
        if isinstance(obj, Response):
            return obj
        data = obj[1]

        def render() -> bytes:
            decoded = decode_dicom(data, source=f"instance {sop}", frame=frame, window=window)
            return render_raster(decoded.image, media, quality=int(quality))

        try:
            body = await blocking.run("imaging", render)
        except ImageDecodeError as err:
            status = {"too_large": 413, "no_such_frame": 404, "no_pixel_data": 404}.get(err.reason, 422)
            return _problem(status, f"instance {sop}: {err.reason.replace('_', ' ')}: {err.detail}",
                            err.reason.upper())
        failed = await audit_phi_read(audit_log, request, principal, "WADO-RS rendered", [sop])
        if failed is not None:
            return failed
        return Response(body, media_type=media, headers={"Cache-Control": "private, max-age=3600",
                                                         "X-Content-Type-Options": "nosniff"})

    @app.get("/dicomweb/studies/{study}/series/{series}/instances/{sop}/rendered", include_in_schema=False)
    async def instance_rendered(study: str, series: str, sop: str, request: Request) -> Response:
        return await rendered(request, study, series, sop, 0)  # a multi-frame instance: its first frame

    @app.get("/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/rendered",
             include_in_schema=False)
    async def frame_rendered(study: str, series: str, sop: str, frames: str, request: Request) -> Response:
        if not frames.isdigit() or int(frames) < 1:
            return _problem(400, "frames: one frame number (1-based) per rendered request")
        return await rendered(request, study, series, sop, int(frames) - 1)


def register_dicomweb(app: FastAPI, *, ingest: Ingest, principal_of: Callable[[Request], Any],
                      audit_log: AuditLog | None = None) -> None:
    """The DICOMweb routes. Every route that reads or writes instances writes its audit record with
    :func:`medsearch_api.audit.record` (a trail of the SOP instance and study UIDs it served or stored) and
    answers 503 when that fails."""
    from medsearch.dicomnet.receiver import readable_transfer_syntaxes

    readable = set(readable_transfer_syntaxes())

    async def store(request: Request, study: str | None) -> JSONResponse:
        principal = await asyncio.to_thread(principal_of, request)
        if not principal.has("ingester"):
            return JSONResponse({"errors": [{"message": "STOW-RS needs the ingester role",
                                             "extensions": {"code": errors.FORBIDDEN}}]}, status_code=403)
        body = await request.body()
        try:
            parts = parse_multipart_related(request.headers.get("content-type", ""), body)
        except StowRequestError as err:
            return JSONResponse({"errors": [{"message": str(err)}]}, status_code=err.status)
        outcomes: list[InstanceOutcome] = []
        stored_studies: list[str] = []
        for i, part in enumerate(parts, start=1):
            if part.content_type not in ("application/dicom", ""):
                outcomes.append(InstanceOutcome(None, None, FAILURE_CANNOT_UNDERSTAND))
                continue
            sop_class, sop_uid, study_uid, ts = await asyncio.to_thread(_header, part.data)
            if sop_uid is None or sop_class is None:
                outcomes.append(InstanceOutcome(sop_class, sop_uid, FAILURE_CANNOT_UNDERSTAND))
                continue
            if ts is not None and ts not in readable:
                outcomes.append(InstanceOutcome(sop_class, sop_uid, FAILURE_TRANSFER_SYNTAX))
                continue
            if study is not None and study_uid != study:
                outcomes.append(InstanceOutcome(sop_class, sop_uid, FAILURE_SOP_CLASS_MISMATCH))
                continue
            try:
                res = await ingest.dicom(part.data, f"STOW-RS part {i}")
            except GraphQLError as err:  # broker or object store unavailable
                log.error("STOW-RS part %d could not be stored: %s", i, err.message)
                outcomes.append(InstanceOutcome(sop_class, sop_uid, FAILURE_PROCESSING))
                continue
            if getattr(res, "status", None) == "rejected":
                outcomes.append(InstanceOutcome(sop_class, sop_uid, FAILURE_CANNOT_UNDERSTAND))
            else:
                outcomes.append(InstanceOutcome(sop_class, sop_uid))
                stored_studies.append(study_uid or "")
        status, payload = response_body(outcomes)
        n_failed = sum(1 for o in outcomes if o.failure is not None)
        trail = core_audit.AuditTrail()
        trail.wrote(images=[o.sop_instance_uid or "" for o in outcomes if o.failure is None],
                    studies=[u for u in stored_studies if u])
        outcome = (core_audit.SUCCESS if not n_failed else
                   core_audit.MINOR_FAILURE if n_failed < len(outcomes) else core_audit.SERIOUS_FAILURE)
        try:
            await record(audit_log, trail, operation="dicomweb STOW-RS", principal=principal,
                         client_addr=request.client.host if request.client else "", outcome=outcome,
                         outcome_desc=f"{n_failed} of {len(outcomes)} instances failed" if n_failed else "")
        except AuditUnavailable as err:
            return JSONResponse({"errors": [{"message": str(err), "extensions": {
                "code": errors.SERVICE_UNAVAILABLE, "reference": err.reference}}]}, status_code=503)
        log.info("STOW-RS by %s: %d stored, %d failed", getattr(principal, "name", "?"), len(outcomes) - n_failed,
                 n_failed)
        return JSONResponse(payload, status_code=status, media_type=DICOM_JSON)

    @app.post("/dicomweb/studies", include_in_schema=False)
    async def stow(request: Request) -> JSONResponse:
        return await store(request, None)

    @app.post("/dicomweb/studies/{study}", include_in_schema=False)
    async def stow_study(study: str, request: Request) -> JSONResponse:
        return await store(request, study)
