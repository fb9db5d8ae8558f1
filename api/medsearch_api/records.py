"""Plain records the repository returns and the GraphQL layer renders (no strawberry, no pymilvus here).

Rows come from ``<index>_reports`` / ``<index>_images`` with exactly the fields of
:mod:`medsearch.contracts.collections`; :func:`report_from_row` / :func:`image_from_row` tolerate missing
optional fields so that a partially filled row (older writer) still renders.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from medsearch.contracts.entities import EntityRecord, stored_entities

# Re-exported: filters encode dates exactly as the workers store them.
from medsearch.contracts.messages import date_to_yyyymmdd as date_to_yyyymmdd


class SearchMode(enum.Enum):
    KEYWORD = "KEYWORD"
    SEMANTIC = "SEMANTIC"
    HYBRID = "HYBRID"


class Polarity(enum.Enum):
    POSITIVE = "POSITIVE"
    NEGATIVE = "NEGATIVE"
    UNCERTAIN = "UNCERTAIN"


class EntityKind(enum.Enum):
    SIGN = "SIGN"
    DIAGNOSIS = "DIAGNOSIS"
    SYMPTOM = "SYMPTOM"


ICD10_FIELD = {
    Polarity.POSITIVE: "icd10_positive",
    Polarity.NEGATIVE: "icd10_negative",
    Polarity.UNCERTAIN: "icd10_uncertain",
}

_KIND_PLURAL = {EntityKind.SIGN: "signs", EntityKind.DIAGNOSIS: "diagnoses", EntityKind.SYMPTOM: "symptoms"}


def entity_field(kind: EntityKind, polarity: Polarity) -> str:
    """The report array field for an entity kind and polarity (no UNCERTAIN arrays exist for entities)."""
    if polarity is Polarity.UNCERTAIN:
        raise ValueError("entity facets exist for POSITIVE and NEGATIVE polarity only")
    return f"{polarity.value.lower()}_{_KIND_PLURAL[kind]}"


def _positive(value: Any) -> int | None:
    """A stored date or time field as a number; 0 (unknown), None and malformed values as None."""
    try:
        n = int(value or 0)
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None


def yyyymmdd_to_date(value: Any) -> dt.date | None:
    """``20240131`` -> date; 0 / None / malformed -> None."""
    n = _positive(value)
    if n is None:
        return None
    try:
        return dt.date(n // 10000, (n // 100) % 100, n % 100)
    except ValueError:
        return None


def epoch_ms_to_datetime(value: Any) -> dt.datetime | None:
    n = _positive(value)
    return None if n is None else dt.datetime.fromtimestamp(n / 1000.0, tz=dt.UTC)


def _strs(value: Any) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(str(v) for v in value)


@dataclass(frozen=True)
class ReportRecord:
    report_id: str
    study_uid: str = ""
    text: str = ""
    findings: str = ""
    impression: str = ""
    indication: str = ""
    sections: Mapping[str, str] = field(default_factory=dict)
    report_date: int = 0
    icd10_positive: tuple[str, ...] = ()
    icd10_negative: tuple[str, ...] = ()
    icd10_uncertain: tuple[str, ...] = ()
    positive_signs: tuple[str, ...] = ()
    negative_signs: tuple[str, ...] = ()
    positive_diagnoses: tuple[str, ...] = ()
    negative_diagnoses: tuple[str, ...] = ()
    positive_symptoms: tuple[str, ...] = ()
    negative_symptoms: tuple[str, ...] = ()
    entities: tuple[EntityRecord, ...] = ()
    nlp_backend: str = ""
    ingested_at: int = 0

    def array(self, name: str) -> tuple[str, ...]:
        value: tuple[str, ...] = getattr(self, name)
        return value


@dataclass(frozen=True)
class ImageRecord:
    sop_instance_uid: str
    study_uid: str = ""
    series_uid: str = ""
    report_id: str = ""
    modality: str = ""
    view_position: str = ""
    body_part: str = ""
    laterality: str = ""
    rows: int = 0
    columns: int = 0
    frames: int = 0
    photometric: str = ""
    transfer_syntax: str = ""
    study_date: int = 0
    acquisition_date: int = 0
    source_uri: str = ""
    sha256: str = ""
    thumbnail_uri: str = ""
    model_name: str = ""
    model_version: str = ""
    indexed_at: int = 0


REPORT_ARRAYS = (
    "icd10_positive", "icd10_negative", "icd10_uncertain",
    "positive_signs", "negative_signs", "positive_diagnoses", "negative_diagnoses",
    "positive_symptoms", "negative_symptoms",
)
REPORT_READ_FIELDS = (
    "report_id", "study_uid", "text", "findings", "impression", "indication", "sections", "report_date",
    *REPORT_ARRAYS, "entities", "nlp_backend", "ingested_at",
)
IMAGE_READ_FIELDS = (
    "sop_instance_uid", "study_uid", "series_uid", "report_id", "modality", "view_position", "body_part",
    "laterality", "rows", "columns", "frames", "photometric", "transfer_syntax", "study_date",
    "acquisition_date", "source_uri", "sha256", "thumbnail_uri", "model_name", "model_version", "indexed_at",
)


def report_from_row(row: Mapping[str, Any]) -> ReportRecord:
    sections = row.get("sections") or {}
    return ReportRecord(
        report_id=str(row["report_id"]),
        study_uid=str(row.get("study_uid") or ""),
        text=str(row.get("text") or ""),
        findings=str(row.get("findings") or ""),
        impression=str(row.get("impression") or ""),
        indication=str(row.get("indication") or ""),
        sections={str(k): str(v) for k, v in sections.items()} if isinstance(sections, Mapping) else {},
        report_date=int(row.get("report_date") or 0),
        **{name: _strs(row.get(name)) for name in REPORT_ARRAYS},
        entities=stored_entities(row.get("entities")),
        nlp_backend=str(row.get("nlp_backend") or ""),
        ingested_at=int(row.get("ingested_at") or 0),
    )


def image_from_row(row: Mapping[str, Any]) -> ImageRecord:
    ints = {"rows", "columns", "frames", "study_date", "acquisition_date", "indexed_at"}
    kwargs: dict[str, Any] = {}
    for name in IMAGE_READ_FIELDS:
        value = row.get(name)
        kwargs[name] = int(value or 0) if name in ints else str(value or "")
    return ImageRecord(**kwargs)


@dataclass(frozen=True)
class ReportFilterSpec:
    """Report filter: every set part must hold (codes: all listed; modality/view/body part: any listed, through
    the images of the same study; dates inclusive, YYYYMMDD)."""

    positive_codes: tuple[str, ...] = ()
    negative_codes: tuple[str, ...] = ()
    uncertain_codes: tuple[str, ...] = ()
    modalities: tuple[str, ...] = ()
    view_positions: tuple[str, ...] = ()
    body_parts: tuple[str, ...] = ()
    date_from: int | None = None
    date_to: int | None = None
    study_uids: tuple[str, ...] = ()
    report_ids: tuple[str, ...] = ()  # internal (entity facets over given reports), not a GraphQL filter

    @property
    def needs_images(self) -> bool:
        return bool(self.modalities or self.view_positions or self.body_parts)


@dataclass(frozen=True)
class ImageFilterSpec:
    """Image filter: typed image fields (any listed value), dates inclusive, and report codes through the
    reports of the same study (all listed)."""

    modalities: tuple[str, ...] = ()
    view_positions: tuple[str, ...] = ()
    body_parts: tuple[str, ...] = ()
    lateralities: tuple[str, ...] = ()
    date_from: int | None = None
    date_to: int | None = None
    study_uids: tuple[str, ...] = ()
    positive_codes: tuple[str, ...] = ()
    negative_codes: tuple[str, ...] = ()

    @property
    def needs_reports(self) -> bool:
        return bool(self.positive_codes or self.negative_codes)


@dataclass(frozen=True)
class ReportHit:
    report: ReportRecord
    score: float


@dataclass(frozen=True)
class ReportPage:
    hits: list[ReportHit]
    has_more: bool


@dataclass(frozen=True)
class ImageHit:
    image: ImageRecord
    score: float


@dataclass(frozen=True)
class FacetCount:
    key: str
    count: int
