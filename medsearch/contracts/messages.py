"""Kafka message schemas (JSON, versioned). Producers and workers import these; nobody redefines them."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SCHEMA_VERSION = 1
MAX_MESSAGE_BYTES = 1_000_000


class MessageError(ValueError):
    """A message that cannot be decoded or does not match its schema."""


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: Literal[1] = 1

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode("utf-8")

    @classmethod
    def from_bytes(cls, raw: bytes) -> Self:
        if len(raw) > MAX_MESSAGE_BYTES:
            raise MessageError(f"{cls.__name__}: message of {len(raw)} bytes exceeds {MAX_MESSAGE_BYTES}")
        try:
            return cls.model_validate_json(raw)
        except ValidationError as err:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) or "<root>" for e in err.errors())
            raise MessageError(f"{cls.__name__}: invalid message (fields: {fields})") from None


class DicomObject(_Message):
    """A DICOM object uploaded to the object store, to be decoded, embedded and indexed."""

    index: str
    uri: str = Field(description="Object store URL of the DICOM file (file://, s3://, memory://).")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    study_uid: str | None = None
    source: str = Field(default="cli", description="Who published it: cli, api, dicomweb, ...")


class Report(_Message):
    """A radiology report stored in the object store (a claim check): the message carries the text's URI and sha256,
    never the text. Schema version 2 (version 1 carried the text inline)."""

    schema_version: Literal[2] = 2  # type: ignore[assignment]  # the report message's own version
    index: str
    report_id: str = Field(min_length=1, max_length=256)
    uri: str = Field(description="Object store URL of the report text (UTF-8), e.g. <store>/<index>/reports/<sha>.txt")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the text's UTF-8 bytes at ``uri``.")
    study_uid: str | None = None
    report_date: dt.date | None = Field(default=None, description="When the report was signed (ISO date).")
    source: str = "cli"


_YYYYMMDD = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")


def parse_report_date(value: object) -> dt.date:
    """A report date from an input file: ``YYYY-MM-DD``, DICOM-style ``YYYYMMDD`` (string or int) or a date.

    Raises ValueError naming the accepted forms for anything else (including impossible or implausible dates).
    """
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        day = value
    else:
        plausible = isinstance(value, (str, int)) and not isinstance(value, bool)
        m = _YYYYMMDD.match(str(value).strip()) if plausible else None
        if m is None:
            raise ValueError("report date must be YYYY-MM-DD or YYYYMMDD")
        try:
            day = dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            raise ValueError(f"report date {value!r} is not a calendar date") from None
    if not 1900 <= day.year <= 2200:
        raise ValueError(f"report date {day.isoformat()} is outside 1900-2200")
    return day


def date_to_yyyymmdd(day: dt.date | None) -> int:
    """The collections' INT32 date encoding: YYYYMMDD, 0 when unknown."""
    return 0 if day is None else day.year * 10000 + day.month * 100 + day.day


# Identifiers and claim checks of the ingest messages: kept in dead letters so they can be found and replayed.
# Every other string, at any depth (report text, or text under any other key a producer added), is redacted.
_KEPT_FIELDS = (set(DicomObject.model_fields) | set(Report.model_fields)) - {"text"}
_KEPT_MAX_CHARS = 2048


def _redact(value: Any, *, keep: bool = False) -> Any:
    if isinstance(value, str):
        return value if keep and len(value) <= _KEPT_MAX_CHARS else f"<{len(value)} characters redacted>"
    if isinstance(value, dict):
        return {str(k): _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value  # numbers, booleans, null


class DeadLetter(_Message):
    """A message that failed permanently, with the stage and the reason (never the report text)."""

    original: dict[str, Any]
    topic: str
    stage: Literal[
        "decode_message", "fetch", "decode", "metadata", "thumbnail", "embed", "analyze", "write", "deidentify"
    ]
    error: str
    attempts: int = Field(ge=1)
    worker: str | None = None
    failed_at: str | None = None

    @classmethod
    def for_message(
        cls, raw: bytes, *, topic: str, stage: str, error: str, attempts: int, worker: str | None = None
    ) -> DeadLetter:
        """Build a dead letter from the raw message; report text is replaced by its length."""
        from datetime import UTC, datetime

        try:
            original: dict[str, Any] = json.loads(raw)
            if not isinstance(original, dict):
                original = {"raw_json_type": type(original).__name__}
        except (UnicodeDecodeError, json.JSONDecodeError):
            original = {"raw_bytes": len(raw)}
        original = {k: _redact(v, keep=k in _KEPT_FIELDS) for k, v in original.items()}
        return cls.model_validate(
            {
                "original": original,
                "topic": topic,
                "stage": stage,
                "error": error[:2000],
                "attempts": attempts,
                "worker": worker,
                "failed_at": datetime.now(UTC).isoformat(),
            }
        )
