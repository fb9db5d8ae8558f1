"""Validation of filter values, and the Milvus boolean expressions of filtered k-NN built from validated values.

milvus-lite does not implement filter templating (``filter_params``: "unexpected character '{'"), so user
input is never spliced into an expression as text: every value is checked against a strict per-field
allow-list (a regular expression without quotes, backslashes or operators) and rendered by this module as a
double-quoted literal or an integer. Anything that does not fit is rejected with :class:`FilterInputError`
naming the argument, never "escaped". Field names come from this module's constants, never from input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import TypeVar

from medsearch_api.records import ImageFilterSpec, ReportFilterSpec


class FilterInputError(ValueError):
    """A filter value that cannot be expressed safely. ``argument`` names the GraphQL argument."""

    def __init__(self, argument: str, reason: str) -> None:
        super().__init__(f"{argument}: {reason}")
        self.argument = argument
        self.reason = reason


@dataclass(frozen=True)
class ValueKind:
    name: str
    pattern: re.Pattern[str]
    max_len: int
    description: str


ICD10_CODE = ValueKind("icd10", re.compile(r"[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?"), 8,
                       "an ICD-10-CM code such as J91.8")
UID = ValueKind("uid", re.compile(r"[0-9]+(\.[0-9]+)*"), 128, "a DICOM UID (digits and dots)")
# Report / image ids come from the data (file stems, SOPInstanceUIDs): letters, digits and . _ : -
IDENT = ValueKind("id", re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]*"), 256,
                  "an id of letters, digits and . _ : -")
CODE_STRING = ValueKind("cs", re.compile(r"[A-Za-z0-9][A-Za-z0-9 _\-]*"), 64,
                        "a DICOM code string (letters, digits, space, _ and -)")
TERM = ValueKind("term", re.compile(r"[\w][\w ,.'()/+\-]*"), 256, "a clinical term")

MAX_VALUES = 256  # most values one list argument may carry
_TOKEN = re.compile(r"\w+", re.UNICODE)
MAX_QUERY_TOKENS = 64


def check(kind: ValueKind, value: str, argument: str) -> str:
    """Return ``value`` (stripped) when it matches ``kind`` fully; raise :class:`FilterInputError` otherwise."""
    if not isinstance(value, str):
        raise FilterInputError(argument, "must be a string")
    v = value.strip()
    if not v or len(v) > kind.max_len or kind.pattern.fullmatch(v) is None or '"' in v or "\\" in v:
        raise FilterInputError(argument, f"{value[:40]!r} is not {kind.description}")
    return v


def check_all(kind: ValueKind, values: Iterable[str], argument: str) -> tuple[str, ...]:
    out = tuple(check(kind, v, argument) for v in values)
    if len(out) > MAX_VALUES:
        raise FilterInputError(argument, f"at most {MAX_VALUES} values")
    return out


def literal(value: str) -> str:
    """A double-quoted Milvus string literal of an already validated value."""
    if '"' in value or "\\" in value or "\n" in value:  # defence in depth: validated values never hold these
        raise FilterInputError("filter", "value holds a quote or backslash")
    return f'"{value}"'


def query_tokens(query: str) -> list[str]:
    """Word tokens of a free-text query (lower-cased, deduplicated, at most MAX_QUERY_TOKENS)."""
    seen: list[str] = []
    for tok in _TOKEN.findall(query.lower()):
        if tok not in seen:
            seen.append(tok)
    return seen[:MAX_QUERY_TOKENS]


def eq_any(field: str, values: Sequence[str]) -> str:
    # ``in [...]`` even for one value: milvus-lite serves it from the primary-key path (10x faster than ==)
    return f"{field} in [{', '.join(literal(v) for v in values)}]"


def contains_all(field: str, values: Sequence[str]) -> str:
    return " and ".join(f"ARRAY_CONTAINS({field}, {literal(v)})" for v in values)


def date_range(field: str, lo: int | None, hi: int | None) -> list[str]:
    parts = []
    if lo is not None:
        parts.append(f"{field} >= {int(lo)}")
    if hi is not None:
        parts.append(f"{field} <= {int(hi)}")
    return parts


def conj(parts: Iterable[str | None]) -> str:
    kept = [p for p in parts if p]
    if not kept:
        return ""
    if len(kept) == 1:
        return kept[0]
    return " and ".join(f"({p})" for p in kept)


# What each filter list must hold, and the GraphQL argument named when it does not.
_FILTER_LISTS: dict[str, tuple[ValueKind, str]] = {
    "positive_codes": (ICD10_CODE, "filter.positiveCodes"),
    "negative_codes": (ICD10_CODE, "filter.negativeCodes"),
    "uncertain_codes": (ICD10_CODE, "filter.uncertainCodes"),
    "modalities": (CODE_STRING, "filter.modality"),
    "view_positions": (CODE_STRING, "filter.viewPosition"),
    "body_parts": (CODE_STRING, "filter.bodyPart"),
    "lateralities": (CODE_STRING, "filter.laterality"),
    "study_uids": (UID, "filter.studyUids"),
}
_Spec = TypeVar("_Spec", ReportFilterSpec, ImageFilterSpec)


def validate_filter(f: _Spec) -> _Spec:
    """A copy of the filter with its GraphQL parts checked, in field order (raises :class:`FilterInputError`);
    internal parts (a report filter's ``report_ids``) are not carried over."""
    if f.date_from is not None and f.date_to is not None and f.date_from > f.date_to:
        raise FilterInputError("filter.dateFrom", "is after filter.dateTo")
    lists: dict[str, tuple[str, ...]] = {}
    for d in fields(f):
        if d.name in _FILTER_LISTS:
            kind, argument = _FILTER_LISTS[d.name]
            lists[d.name] = check_all(kind, getattr(f, d.name), argument)
    return type(f)(**lists, date_from=f.date_from, date_to=f.date_to)


def validate_report_filter(f: ReportFilterSpec) -> ReportFilterSpec:
    """Validated copy of a report filter (raises :class:`FilterInputError`)."""
    return validate_filter(f)


def validate_image_filter(f: ImageFilterSpec) -> ImageFilterSpec:
    return validate_filter(f)


# Filter lists -> the collection fields they constrain (code arrays: all listed; image fields: any listed).
_CODE_ARRAYS = {"positive_codes": "icd10_positive", "negative_codes": "icd10_negative",
                "uncertain_codes": "icd10_uncertain"}
_IMAGE_FIELDS = {"modalities": "modality", "view_positions": "view_position", "body_parts": "body_part",
                 "lateralities": "laterality"}


def _studies(own: Sequence[str], resolved: Sequence[str] | None) -> list[str] | None:
    """The studies an expression keeps ([]: any), given the filter's own and those resolved through the other
    collection (None: not resolved); None when the two do not meet, so that nothing matches."""
    uids = list(own)
    if resolved is not None:
        uids = [u for u in uids if u in set(resolved)] if uids else list(resolved)
        if not uids:
            return None
    return uids


def report_expr(f: ReportFilterSpec, study_uids: Sequence[str] | None = None) -> str:
    """Expression over the report collection's own fields. ``study_uids`` (already resolved through the
    images collection, validated) restricts the study; an empty sequence means "no study matches"."""
    parts: list[str | None] = [contains_all(field, getattr(f, name)) for name, field in _CODE_ARRAYS.items()
                               if getattr(f, name)]
    parts.extend(date_range("report_date", f.date_from, f.date_to))
    uids = _studies(f.study_uids, study_uids)
    if uids is None:
        return "report_id == \"\" and report_id != \"\""  # matches nothing
    if uids:
        parts.append(eq_any("study_uid", uids))
    if f.report_ids:
        parts.append(eq_any("report_id", f.report_ids))
    return conj(parts)


def image_expr(f: ImageFilterSpec, study_uids: Sequence[str] | None = None,
               exclude_ids: Sequence[str] = ()) -> str:
    parts: list[str | None] = [eq_any(field, getattr(f, name)) for name, field in _IMAGE_FIELDS.items()
                               if getattr(f, name)]
    parts.extend(date_range("study_date", f.date_from, f.date_to))
    uids = _studies(f.study_uids, study_uids)
    if uids is None:
        return "sop_instance_uid == \"\" and sop_instance_uid != \"\""
    if uids:
        parts.append(eq_any("study_uid", uids))
    for x in exclude_ids:
        parts.append(f"sop_instance_uid != {literal(x)}")
    return conj(parts)
