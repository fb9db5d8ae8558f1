"""Typed image metadata from a DICOM dataset: the scalar fields of ``<index>_images`` (pure, no I/O).

Strings are truncated to the collection's VARCHAR lengths, dates become ``YYYYMMDD`` integers (0 when absent
or malformed). Patient identifiers are read only when the index spec allows storing them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from medsearch.contracts.collections import IMAGE_FIELDS

if TYPE_CHECKING:
    from pydicom import Dataset

_MAX_LEN = {f.name: f.max_length for f in IMAGE_FIELDS if f.max_length is not None}
_DATE = re.compile(r"^\s*(\d{4})(\d{2})(\d{2})")


class MetadataError(ValueError):
    """The dataset lacks what an image row needs (e.g. SOPInstanceUID). Permanent."""


def _text(ds: Dataset, keyword: str, field: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = "\\".join(str(v) for v in value)
    text = str(value).strip().replace("\x00", "")
    limit = _MAX_LEN.get(field)
    return text[:limit] if limit else text


def parse_date(value: Any) -> int:
    """``"20040826"`` (or a DICOM DT starting with it) → ``20040826``; anything implausible → 0."""
    if value is None:
        return 0
    m = _DATE.match(str(value))
    if not m:
        return 0
    year, month, day = (int(g) for g in m.groups())
    if not (1800 <= year <= 2999 and 1 <= month <= 12 and 1 <= day <= 31):
        return 0
    return year * 10000 + month * 100 + day


def _int(ds: Dataset, keyword: str, default: int) -> int:
    value = ds.get(keyword)
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _transfer_syntax(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return str(uid)[: _MAX_LEN["transfer_syntax"]] if uid else ""


def extract_metadata(ds: Dataset, *, store_patient_identifiers: bool = False) -> dict[str, Any]:
    """The metadata columns of an image row (everything but the vector, URIs, hashes, model and timestamps)."""
    sop = _text(ds, "SOPInstanceUID", "sop_instance_uid")
    if not sop:
        raise MetadataError("the dataset has no SOPInstanceUID (the images collection is keyed by it)")
    laterality = _text(ds, "ImageLaterality", "laterality") or _text(ds, "Laterality", "laterality")
    acquisition = parse_date(ds.get("AcquisitionDate")) or parse_date(ds.get("AcquisitionDateTime"))
    return {
        "sop_instance_uid": sop,
        "study_uid": _text(ds, "StudyInstanceUID", "study_uid"),
        "series_uid": _text(ds, "SeriesInstanceUID", "series_uid"),
        "modality": _text(ds, "Modality", "modality").upper(),
        "view_position": _text(ds, "ViewPosition", "view_position").upper(),
        "body_part": _text(ds, "BodyPartExamined", "body_part").upper(),
        "laterality": laterality.upper(),
        "rows": _int(ds, "Rows", 0),
        "columns": _int(ds, "Columns", 0),
        "frames": max(1, _int(ds, "NumberOfFrames", 1)),
        "photometric": _text(ds, "PhotometricInterpretation", "photometric").upper(),
        "transfer_syntax": _transfer_syntax(ds),
        "study_date": parse_date(ds.get("StudyDate")),
        "acquisition_date": acquisition,
        "patient_id": _text(ds, "PatientID", "patient_id") if store_patient_identifiers else "",
        "patient_name": _text(ds, "PatientName", "patient_name") if store_patient_identifiers else "",
    }
