"""DICOMweb reads, the pure part: QIDO-RS matching keys -> SQL over the index's ``images`` table, rows -> DICOM JSON,
WADO-RS ``window``/``accept`` parameters and the ``multipart/related`` framing. No I/O here; the routes in
:mod:`medsearch_api.dicomweb` wire it to PostgreSQL and the object store.

Matching (PS3.18 8.3.4): single values, UID lists (comma-separated), date ranges (``YYYYMMDD``, ``A-B``, ``-B``,
``A-``), ``*``/``?`` wildcards on PatientID. Only what the system of record stores can be matched; a key it does
not hold is refused with 400 naming it (rather than silently ignored and over-answering).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from psycopg import sql

from medsearch.imaging import Window
from medsearch_api.filters import IDENT
from medsearch_api.sql import Query, Tables, Where

Level = Literal["study", "series", "instance"]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_OFFSET = 1_000_000
UID = re.compile(r"[0-9]+(\.[0-9]+)*")
DATE = re.compile(r"[0-9]{8}")

# keyword -> (tag, VR); what the index stores about an image and can answer with
TAGS: dict[str, tuple[str, str]] = {
    "StudyDate": ("00080020", "DA"),
    "ModalitiesInStudy": ("00080061", "CS"),
    "Modality": ("00080060", "CS"),
    "SOPInstanceUID": ("00080018", "UI"),
    "AvailableTransferSyntaxUID": ("00083002", "UI"),
    "RetrieveURL": ("00081190", "UR"),
    "PatientName": ("00100010", "PN"),
    "PatientID": ("00100020", "LO"),
    "BodyPartExamined": ("00180015", "CS"),
    "ViewPosition": ("00185101", "CS"),
    "StudyInstanceUID": ("0020000D", "UI"),
    "SeriesInstanceUID": ("0020000E", "UI"),
    "ImageLaterality": ("00200062", "CS"),
    "NumberOfStudyRelatedSeries": ("00201206", "IS"),
    "NumberOfStudyRelatedInstances": ("00201208", "IS"),
    "NumberOfSeriesRelatedInstances": ("00201209", "IS"),
    "NumberOfFrames": ("00280008", "IS"),
    "Rows": ("00280010", "US"),
    "Columns": ("00280011", "US"),
    "PhotometricInterpretation": ("00280004", "CS"),
}
BY_TAG = {tag: kw for kw, (tag, _) in TAGS.items()}

# matching keys each level accepts (keyword -> column); StudyInstanceUID/SeriesInstanceUID in the path count too
MATCHING: dict[Level, dict[str, str]] = {
    "study": {"StudyInstanceUID": "study_uid", "StudyDate": "study_date", "PatientID": "patient_id",
              "ModalitiesInStudy": "modality", "Modality": "modality"},
    "series": {"SeriesInstanceUID": "series_uid", "Modality": "modality", "StudyDate": "study_date",
               "StudyInstanceUID": "study_uid", "PatientID": "patient_id"},
    "instance": {"SOPInstanceUID": "sop_instance_uid", "SeriesInstanceUID": "series_uid", "Modality": "modality",
                 "StudyDate": "study_date", "StudyInstanceUID": "study_uid", "PatientID": "patient_id"},
}
CONTROL = frozenset({"limit", "offset", "includefield", "fuzzymatching"})


class QidoError(ValueError):
    """A QIDO-RS/WADO-RS request the gateway cannot answer as asked (400), with the reason for the client."""


@dataclass(frozen=True)
class QidoQuery:
    level: Level
    study_uid: str | None = None  # from the path
    series_uid: str | None = None  # from the path
    uids: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # column -> UID list
    modalities: tuple[str, ...] = ()
    date_from: int | None = None
    date_to: int | None = None
    patient_id: str | None = None
    limit: int = DEFAULT_LIMIT
    offset: int = 0


def _keyword(key: str) -> str:
    k = key.strip()
    return BY_TAG.get(k.upper(), k)


def _uid_list(key: str, value: str) -> tuple[str, ...]:
    uids = tuple(u.strip() for u in value.replace("\\", ",").split(",") if u.strip())
    if not uids or any(len(u) > 64 or not UID.fullmatch(u) for u in uids):
        raise QidoError(f"{key}: not a UID or comma-separated UID list")
    return uids


def parse_date_range(value: str) -> tuple[int | None, int | None]:
    """``YYYYMMDD`` | ``A-B`` | ``-B`` | ``A-`` (dashes inside dates allowed: ``2004-08-26``) -> inclusive bounds."""
    v = value.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
        v = v.replace("-", "")
    if DATE.fullmatch(v):
        return int(v), int(v)
    lo, sep, hi = v.partition("-")
    if not sep or (not lo and not hi) or any(p and not DATE.fullmatch(p) for p in (lo, hi)):
        raise QidoError(f"StudyDate: {value!r} is not a date (YYYYMMDD) or a range (YYYYMMDD-YYYYMMDD, -YYYYMMDD, "
                        "YYYYMMDD-)")
    a, b = (int(lo) if lo else None), (int(hi) if hi else None)
    if a is not None and b is not None and a > b:
        raise QidoError(f"StudyDate: the range {value!r} starts after it ends")
    return a, b


def _int(key: str, value: str, lo: int, hi: int) -> int:
    if not value.strip().isdigit():
        raise QidoError(f"{key}: {value!r} is not a non-negative integer")
    n = int(value)
    if not lo <= n <= hi:
        raise QidoError(f"{key}: {n} is outside {lo}..{hi}")
    return n


def parse_qido(level: Level, params: Iterable[tuple[str, str]], *, study_uid: str | None = None,
               series_uid: str | None = None, max_limit: int = MAX_LIMIT) -> QidoQuery:
    """The query parameters of a QIDO-RS request (repeated keys: the last wins, except includefield)."""
    for name, uid in (("StudyInstanceUID", study_uid), ("SeriesInstanceUID", series_uid)):
        if uid is not None and (len(uid) > 64 or not UID.fullmatch(uid)):
            raise QidoError(f"{name} in the path is not a UID")
    uids: dict[str, tuple[str, ...]] = {}
    modalities: tuple[str, ...] = ()
    date_from = date_to = None
    patient_id = None
    limit, offset = DEFAULT_LIMIT, 0
    allowed = MATCHING[level]
    for raw_key, value in params:
        key = raw_key.strip()
        if key in CONTROL:
            if key == "limit":
                limit = _int("limit", value, 1, max_limit)
            elif key == "offset":
                offset = _int("offset", value, 0, MAX_OFFSET)
            continue  # includefield: every attribute the index stores is returned; fuzzymatching: not offered
        kw = _keyword(key)
        if kw not in allowed:
            known = ", ".join(sorted(allowed))
            raise QidoError(f"{raw_key}: not a matching key this index can answer at the {level} level "
                            f"(supported: {known}, limit, offset, includefield)")
        column = allowed[kw]
        if not value.strip():
            continue  # universal matching: the attribute is returned, nothing is filtered
        if kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            uids[column] = _uid_list(kw, value)
        elif column == "modality":
            mods = tuple(m.strip().upper() for m in value.replace("\\", ",").split(",") if m.strip())
            if any(not re.fullmatch(r"[A-Z0-9_ ]{1,16}", m) for m in mods):
                raise QidoError(f"{kw}: {value!r} is not a modality code or list")
            modalities = mods
        elif column == "study_date":
            date_from, date_to = parse_date_range(value)
        elif column == "patient_id":
            if len(value) > 64 or any(ord(c) < 32 for c in value):
                raise QidoError("PatientID: at most 64 printable characters")
            patient_id = value
    return QidoQuery(level, study_uid, series_uid, uids, modalities, date_from, date_to, patient_id, limit, offset)


def _like(pattern: str) -> str:
    """A DICOM wildcard pattern (``*``, ``?``) as a LIKE pattern (``\\`` escapes)."""
    out = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return out.replace("*", "%").replace("?", "_")


def _where(q: QidoQuery, *, modality: bool) -> Where:
    w = Where().and_(sql.SQL("i.study_uid <> ''"))
    if q.study_uid is not None:
        w = w.and_(sql.SQL("i.study_uid = %s"), q.study_uid)
    if q.series_uid is not None:
        w = w.and_(sql.SQL("i.series_uid = %s"), q.series_uid)
    for column, values in sorted(q.uids.items()):
        w = w.and_(sql.SQL("{} = ANY(%s)").format(sql.Identifier("i", column)), list(values))
    if q.date_from is not None:
        w = w.and_(sql.SQL("i.study_date >= %s"), q.date_from)
    if q.date_to is not None:
        w = w.and_(sql.SQL("i.study_date <= %s"), q.date_to)
    if q.patient_id is not None:
        if "*" in q.patient_id or "?" in q.patient_id:
            w = w.and_(sql.SQL("i.patient_id LIKE %s"), _like(q.patient_id))
        else:
            w = w.and_(sql.SQL("i.patient_id = %s"), q.patient_id)
    if modality and q.modalities:
        w = w.and_(sql.SQL("i.modality = ANY(%s)"), list(q.modalities))
    return w


def qido_sql(t: Tables, q: QidoQuery) -> Query:
    """One page of the level's entities, plus one row more (to tell whether the page was cut). Study and series
    counts are over the whole study/series; a modality key selects studies (series) having an instance of it."""
    page = [q.limit + 1, q.offset]
    if q.level == "instance":
        w = _where(q, modality=True)
        text = sql.SQL("SELECT i.study_uid, i.series_uid, i.sop_instance_uid, i.modality, i.study_date, i.rows, "
                       "i.columns, i.frames, i.photometric, i.transfer_syntax, i.body_part, i.view_position, "
                       "i.laterality, i.patient_id, i.patient_name FROM {} i WHERE {} "
                       "ORDER BY i.study_uid, i.series_uid, i.sop_instance_uid LIMIT %s OFFSET %s").format(
            t.images, w.sql())
        return Query(text, [*w.params, *page])
    w = _where(q, modality=False)
    having = Where()
    if q.modalities:
        having = having.and_(sql.SQL("bool_or(i.modality = ANY(%s))"), list(q.modalities))
    if q.level == "study":
        text = sql.SQL("SELECT i.study_uid, max(i.study_date) AS study_date, "
                       "array_agg(DISTINCT i.modality) FILTER (WHERE i.modality <> '') AS modalities, "
                       "count(DISTINCT i.series_uid) AS n_series, count(*) AS n_instances, "
                       "max(i.patient_id) AS patient_id, max(i.patient_name) AS patient_name FROM {} i WHERE {} "
                       "GROUP BY i.study_uid HAVING {} ORDER BY max(i.study_date) DESC, i.study_uid "
                       "LIMIT %s OFFSET %s").format(t.images, w.sql(), having.sql())
    else:
        text = sql.SQL("SELECT i.study_uid, i.series_uid, max(i.modality) AS modality, "
                       "max(i.study_date) AS study_date, count(*) AS n_instances, max(i.body_part) AS body_part, "
                       "max(i.patient_id) AS patient_id, max(i.patient_name) AS patient_name FROM {} i WHERE {} "
                       "GROUP BY i.study_uid, i.series_uid HAVING {} ORDER BY i.study_uid, i.series_uid "
                       "LIMIT %s OFFSET %s").format(t.images, w.sql(), having.sql())
    return Query(text, [*w.params, *having.params, *page])


def instances_sql(t: Tables, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None,
                  *, limit: int) -> Query:
    """The stored objects of a study / series / instance for WADO-RS (at most ``limit``, in a stable order)."""
    w = Where().and_(sql.SQL("i.study_uid = %s"), study_uid)
    if series_uid is not None:
        w = w.and_(sql.SQL("i.series_uid = %s"), series_uid)
    if sop_uid is not None:
        w = w.and_(sql.SQL("i.sop_instance_uid = %s"), sop_uid)
    text = sql.SQL("SELECT i.study_uid, i.series_uid, i.sop_instance_uid, i.transfer_syntax, i.source_uri, "
                   "i.frames FROM {} i WHERE {} ORDER BY i.series_uid, i.sop_instance_uid LIMIT %s").format(
        t.images, w.sql())
    return Query(text, [*w.params, limit])


# -------------------------------------------------------------------------------------------------- DICOM JSON


def _attr(keyword: str, value: Any) -> tuple[str, dict[str, Any]]:
    tag, vr = TAGS[keyword]
    values = value if isinstance(value, (list, tuple)) else [value]
    values = [v for v in values if v not in (None, "", 0)]
    if not values:
        return tag, {"vr": vr}
    if vr == "PN":
        return tag, {"vr": vr, "Value": [{"Alphabetic": str(v)} for v in values]}
    if vr in ("IS", "US"):
        return tag, {"vr": vr, "Value": [int(v) for v in values]}
    return tag, {"vr": vr, "Value": [str(v) for v in values]}


def _date(value: Any) -> str:
    n = int(value or 0)
    return f"{n:08d}" if n > 0 else ""


def to_dicom_json(level: Level, row: Mapping[str, Any], retrieve_root: str) -> dict[str, Any]:
    """A QIDO-RS answer item (DICOM JSON model, PS3.18 F.2) from a row of :func:`qido_sql`. PatientID and
    PatientName carry what the index stores (nothing unless ``spec.privacy.storePatientIdentifiers``)."""
    study = str(row["study_uid"])
    url = f"{retrieve_root}/studies/{study}"
    items: list[tuple[str, Any]] = [("StudyInstanceUID", study), ("StudyDate", _date(row.get("study_date"))),
                                    ("PatientID", row.get("patient_id") or ""),
                                    ("PatientName", row.get("patient_name") or "")]
    if level == "study":
        mods = sorted(m for m in (row.get("modalities") or []) if m)
        items += [("ModalitiesInStudy", mods), ("NumberOfStudyRelatedSeries", int(row["n_series"])),
                  ("NumberOfStudyRelatedInstances", int(row["n_instances"]))]
    else:
        series = str(row["series_uid"])
        url += f"/series/{series}"
        items += [("SeriesInstanceUID", series), ("Modality", row.get("modality") or ""),
                  ("BodyPartExamined", row.get("body_part") or "")]
        if level == "series":
            items.append(("NumberOfSeriesRelatedInstances", int(row["n_instances"])))
        else:
            sop = str(row["sop_instance_uid"])
            url += f"/instances/{sop}"
            items += [("SOPInstanceUID", sop), ("Rows", row.get("rows") or 0), ("Columns", row.get("columns") or 0),
                      ("NumberOfFrames", max(1, int(row.get("frames") or 1))),
                      ("PhotometricInterpretation", row.get("photometric") or ""),
                      ("AvailableTransferSyntaxUID", row.get("transfer_syntax") or ""),
                      ("ViewPosition", row.get("view_position") or ""),
                      ("ImageLaterality", row.get("laterality") or "")]
    items.append(("RetrieveURL", url))
    return dict(sorted(_attr(k, v) for k, v in items))


TRUNCATED_WARNING = ('299 medsearch "The number of results exceeded the limit; more results can be requested '
                     'with offset"')


def page(rows: Sequence[Mapping[str, Any]], limit: int) -> tuple[list[Mapping[str, Any]], bool]:
    """(the page, whether more rows exist) from a query that fetched ``limit + 1``."""
    return list(rows[:limit]), len(rows) > limit


# ------------------------------------------------------------------------------------------------------- WADO


def valid_uid(uid: str) -> bool:
    return len(uid) <= 64 and UID.fullmatch(uid) is not None and IDENT.pattern.fullmatch(uid) is not None


def parse_window(value: str | None) -> Window | None:
    """``window=center,width[,function]`` (PS3.18 8.3.5.1.3; function ``linear`` (default), ``linear-exact``,
    ``sigmoid``)."""
    if value is None or not value.strip():
        return None
    parts = [p.strip() for p in value.split(",")]
    if len(parts) not in (2, 3):
        raise QidoError(f"window: {value!r} is not center,width[,function]")
    try:
        center, width = float(parts[0]), float(parts[1])
    except ValueError:
        raise QidoError(f"window: {value!r}: center and width must be numbers") from None
    if not (abs(center) < 1e9 and 0 < width < 1e9):
        raise QidoError(f"window: {value!r}: width must be positive and both finite")
    function = (parts[2].lower() if len(parts) == 3 else "linear").replace("_", "-")
    if function not in ("linear", "linear-exact", "sigmoid"):
        raise QidoError(f"window: function {parts[2]!r} is not linear, linear-exact or sigmoid")
    return Window(center, width, function)  # type: ignore[arg-type]  # checked against the Literal just above


RenderedType = Literal["image/png", "image/jpeg"]


def rendered_media_type(accept: str | None, accept_param: str | None = None) -> RenderedType:
    """The rendered media type: the ``accept`` query parameter, else the Accept header; PNG by default
    (lossless); JPEG when asked for. Anything else: :class:`QidoError` (406 at the route)."""
    for source in (accept_param, accept):
        if not source:
            continue
        types = [t.split(";")[0].strip().lower() for t in source.split(",")]
        for t in types:
            if t in ("image/png", "image/jpeg"):
                return t  # type: ignore[return-value]  # one of the two Literal values just checked
        if any(t in ("*/*", "image/*") for t in types):
            return "image/png"
        raise QidoError(f"rendered frames are image/png or image/jpeg, not {source!r}")
    return "image/png"


def multipart_boundary(seed: str) -> str:
    import hashlib

    return "medsearch-" + hashlib.sha256(seed.encode()).hexdigest()[:32]


def part_header(boundary: str, transfer_syntax: str, location: str) -> bytes:
    ct = 'application/dicom' + (f'; transfer-syntax={transfer_syntax}' if transfer_syntax else "")
    return (f"--{boundary}\r\nContent-Type: {ct}\r\nContent-Location: {location}\r\n\r\n").encode()


def multipart_end(boundary: str) -> bytes:
    return f"\r\n--{boundary}--\r\n".encode()


def metadata_json(data: bytes) -> dict[str, Any]:
    """The DICOM JSON of a stored object without bulk data (pixel data left out; other binary values inline)."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=data[128:132] != b"DICM")
    for kw in ("FloatPixelData", "DoubleFloatPixelData"):
        if kw in ds:
            del ds[kw]
    out: dict[str, Any] = ds.to_json_dict(bulk_data_threshold=1024 * 1024)
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if ts:
        out["00020010"] = {"vr": "UI", "Value": [str(ts)]}
    return out


# ------------------------------------------------------------------------------------------ WADO-RS raw frames

# stored (compressed) transfer syntax -> the media type of its frames (PS3.18 Table 8.7.3-2)
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg", "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg", "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls", "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2", "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.201": "image/jphc", "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc", "1.2.840.10008.1.2.5": "image/dicom-rle",
}
EXPLICIT_LE = "1.2.840.10008.1.2.1"
MAX_FRAMES_PER_REQUEST = 1000


def parse_frame_list(value: str, *, limit: int = MAX_FRAMES_PER_REQUEST) -> list[int]:
    """``1,3,5`` -> 1-based frame numbers (in the order asked)."""
    parts = [p.strip() for p in value.split(",")]
    if not parts or len(parts) > limit or any(not p.isdigit() or int(p) < 1 for p in parts):
        raise QidoError(f"frames: a comma-separated list of at most {limit} frame numbers (1-based)")
    return [int(p) for p in parts]


def accepts_stored_syntax(accept: str | None) -> bool:
    """Whether a frames request takes frames in their stored transfer syntax (``transfer-syntax=*``, a type with
    no transfer-syntax besides octet-stream, or ``*/*``); a bare ``application/octet-stream`` means explicit VR
    little endian (uncompressed) in PS3.18."""
    if not accept:
        return True
    a = accept.lower().replace(" ", "")
    if "transfer-syntax=*" in a or "*/*" in a:
        return True
    return any(t in a for t in ("image/jpeg", "image/jls", "image/jp2", "image/jphc", "image/dicom-rle"))


@dataclass(frozen=True)
class Frames:
    media_type: str  # of each part
    transfer_syntax: str
    data: list[bytes]


def frame_bytes(data: bytes, numbers: Sequence[int], *, stored_ok: bool) -> Frames:
    """The bulk data of the asked frames of a stored object, without decoding: native pixel data sliced per
    frame (explicit VR little endian byte order), or the compressed frames as stored. Raises :class:`QidoError`
    (``no such frame``, or a compressed object asked for uncompressed frames: the gateway does not transcode)."""
    import pydicom
    from pydicom.encaps import get_frame

    from medsearch.imaging import check_pixel_counts

    ds = pydicom.dcmread(io.BytesIO(data), force=data[128:132] != b"DICM")
    if "PixelData" not in ds:
        raise QidoError("the object has no pixel data")
    ts = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    n_frames = max(1, int(ds.get("NumberOfFrames", 1) or 1))
    check_pixel_counts(rows, cols, n_frames)
    bad = [n for n in numbers if n > n_frames]
    if bad:
        raise QidoError(f"frame {bad[0]} requested; the object has {n_frames}")
    if ts in FRAME_MEDIA_TYPES:
        if not stored_ok:
            raise QidoError(f"the frames are stored compressed ({ts}) and the gateway does not transcode: ask for "
                            "transfer-syntax=* or their media type")
        return Frames(FRAME_MEDIA_TYPES[ts], ts,
                      [get_frame(ds.PixelData, n - 1, number_of_frames=n_frames) for n in numbers])
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 8) or 8)
    if bits % 8:
        raise QidoError(f"BitsAllocated {bits}: frames of less than a byte per sample are not served")
    size = rows * cols * samples * bits // 8
    pixels = bytes(ds.PixelData)
    big_endian = ts == "1.2.840.10008.1.2.2"
    out = []
    for n in numbers:
        chunk = pixels[(n - 1) * size:n * size]
        if len(chunk) != size:
            raise QidoError(f"frame {n}: the stored pixel data is shorter than the header declares")
        if big_endian and bits > 8:
            import numpy as np

            chunk = np.frombuffer(chunk, dtype=f">u{bits // 8}").astype(f"<u{bits // 8}").tobytes()
        out.append(chunk)
    return Frames("application/octet-stream", EXPLICIT_LE, out)


def frame_part_header(boundary: str, media_type: str, transfer_syntax: str, location: str) -> bytes:
    return (f"--{boundary}\r\nContent-Type: {media_type}; transfer-syntax={transfer_syntax}\r\n"
            f"Content-Location: {location}\r\n\r\n").encode()
