"""STOW-RS (DICOM PS3.18 10.5): parsing a ``multipart/related; type="application/dicom"`` request body and
building the standard response (a DICOM JSON data set with ReferencedSOPSequence and FailedSOPSequence).

Pure functions: the gateway route does the I/O and hands each part to the same publisher as every other way in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Failure reasons (PS3.18 table 10.5.3-2 / PS3.4 annex B status codes)
FAILURE_PROCESSING = 0x0110
FAILURE_OUT_OF_RESOURCES = 0xA700
FAILURE_SOP_CLASS_MISMATCH = 0xA900  # also: the instance does not belong to the study of the request URL
FAILURE_CANNOT_UNDERSTAND = 0xC000
FAILURE_TRANSFER_SYNTAX = 0xC122  # Referenced Transfer Syntax not supported

_DICOM_TYPES = ("application/dicom",)


class StowRequestError(ValueError):
    """The request as a whole cannot be processed (wrong media type, no boundary, no parts): HTTP 415/400."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Part:
    content_type: str
    data: bytes


def _params(header: str) -> tuple[str, dict[str, str]]:
    """``type/subtype; k=v; k="v"`` -> (lower-cased type, parameters with lower-cased keys)."""
    head, _, rest = header.partition(";")
    params: dict[str, str] = {}
    for m in re.finditer(r';?\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', ";" + rest):
        key, value = m.group(1).lower(), m.group(2).strip()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[key] = value
    return head.strip().lower(), params


def parse_multipart_related(content_type: str, body: bytes) -> list[Part]:
    """The parts of a STOW-RS request body. Raises :class:`StowRequestError` (415 for a media type other than
    ``multipart/related; type="application/dicom"``, 400 for a malformed body)."""
    media, params = _params(content_type or "")
    if media != "multipart/related":
        raise StowRequestError(
            415, f"Content-Type must be multipart/related; type=\"application/dicom\", not {media!r}"
        )
    declared = params.get("type", "").lower()
    if declared and declared not in _DICOM_TYPES:
        raise StowRequestError(415, f"only type=\"application/dicom\" parts are accepted, not {declared!r}")
    boundary = params.get("boundary", "")
    if not boundary or len(boundary) > 200:
        raise StowRequestError(400, "multipart/related without a valid boundary parameter")
    delimiter = b"--" + boundary.encode("latin-1")
    if body.startswith(delimiter):
        rest = body[len(delimiter):]
    else:  # a preamble before the first delimiter
        at = body.find(b"\r\n" + delimiter)
        if at < 0:
            raise StowRequestError(400, "multipart body does not start with the boundary")
        rest = body[at + 2 + len(delimiter):]
    chunks = rest.split(b"\r\n" + delimiter)
    parts: list[Part] = []
    closed = False
    for chunk in chunks:
        if chunk.startswith(b"--"):
            closed = True
            break
        # each chunk: optional transport padding, CRLF, headers, CRLF CRLF, content
        _, sep, rest = chunk.partition(b"\r\n")
        if not sep:
            raise StowRequestError(400, "malformed multipart part (no line break after the boundary)")
        headers_blob, sep, content = rest.partition(b"\r\n\r\n")
        if not sep:
            if rest.startswith(b"\r\n"):  # a part without headers
                headers_blob, content = b"", rest[2:]
            else:
                raise StowRequestError(400, "malformed multipart part (headers not terminated)")
        ctype = ""
        for line in headers_blob.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-type":
                ctype = value.strip()
        parts.append(Part(_params(ctype)[0] if ctype else (declared or "application/dicom"), content))
    if not closed:
        raise StowRequestError(400, "multipart body is not terminated by the closing boundary")
    if not parts:
        raise StowRequestError(400, "multipart body has no parts")
    return parts


@dataclass(frozen=True)
class InstanceOutcome:
    """What happened to one part: success (``failure`` None) or the failure reason; UIDs when readable."""

    sop_class_uid: str | None
    sop_instance_uid: str | None
    failure: int | None = None
    retrieve_url: str | None = None


def _ui(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]}


def response_body(outcomes: list[InstanceOutcome], study_url: str | None = None) -> tuple[int, dict[str, Any]]:
    """(HTTP status, DICOM JSON response) per PS3.18 10.5.3: 200 when every instance was stored, 202 when some
    failed, 409 when none was stored."""
    referenced: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for o in outcomes:
        item: dict[str, Any] = {}
        if o.sop_class_uid:
            item["00081150"] = _ui(o.sop_class_uid)
        if o.sop_instance_uid:
            item["00081155"] = _ui(o.sop_instance_uid)
        if o.failure is None:
            if o.retrieve_url:
                item["00081190"] = {"vr": "UR", "Value": [o.retrieve_url]}
            referenced.append(item)
        else:
            item["00081197"] = {"vr": "US", "Value": [o.failure]}
            failed.append(item)
    body: dict[str, Any] = {}
    if study_url:
        body["00081190"] = {"vr": "UR", "Value": [study_url]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}
    status = 200 if not failed else (202 if referenced else 409)
    return status, body
