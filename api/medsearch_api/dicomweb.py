"""DICOMweb routes of the gateway: STOW-RS (``POST /dicomweb/studies[/{study}]``), role ``ingester``.

Each part of the ``multipart/related; type="application/dicom"`` body goes through the same publisher as every
other way in (object store, duplicate ledger, ``<index>.dicom``); the answer lists every instance as stored
(ReferencedSOPSequence) or failed with its reason (FailedSOPSequence), so one bad part fails alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from graphql import GraphQLError

from medsearch import audit as core_audit
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
from medsearch_api import errors
from medsearch_api.audit import AuditLog, AuditUnavailable, record
from medsearch_api.context import Ingest

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
