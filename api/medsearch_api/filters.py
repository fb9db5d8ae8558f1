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
from dataclasses import dataclass

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


def validate_report_filter(f: ReportFilterSpec) -> ReportFilterSpec:
    """Validated copy of a report filter (raises :class:`FilterInputError`)."""
    if f.date_from is not None and f.date_to is not None and f.date_from > f.date_to:
        raise FilterInputError("filter.dateFrom", "is after filter.dateTo")
    return ReportFilterSpec(
        positive_codes=check_all(ICD10_CODE, f.positive_codes, "filter.positiveCodes"),
        negative_codes=check_all(ICD10_CODE, f.negative_codes, "filter.negativeCodes"),
        uncertain_codes=check_all(ICD10_CODE, f.uncertain_codes, "filter.uncertainCodes"),
        modalities=check_all(CODE_STRING, f.modalities, "filter.modality"),
        view_positions=check_all(CODE_STRING, f.view_positions, "filter.viewPosition"),
        body_parts=check_all(CODE_STRING, f.body_parts, "filter.bodyPart"),
        date_from=f.date_from,
        date_to=f.date_to,
        study_uids=check_all(UID, f.study_uids, "filter.studyUids"),
    )


def validate_image_filter(f: ImageFilterSpec) -> ImageFilterSpec:
    if f.date_from is not None and f.date_to is not None and f.date_from > f.date_to:
        raise FilterInputError("filter.dateFrom", "is after filter.dateTo")
    return ImageFilterSpec(
        modalities=check_all(CODE_STRING, f.modalities, "filter.modality"),
        view_positions=check_all(CODE_STRING, f.view_positions, "filter.viewPosition"),
        body_parts=check_all(CODE_STRING, f.body_parts, "filter.bodyPart"),
        lateralities=check_all(CODE_STRING, f.lateralities, "filter.laterality"),
        date_from=f.date_from,
        date_to=f.date_to,
        study_uids=check_all(UID, f.study_uids, "filter.studyUids"),
        positive_codes=check_all(ICD10_CODE, f.positive_codes, "filter.positiveCodes"),
        negative_codes=check_all(ICD10_CODE, f.negative_codes, "filter.negativeCodes"),
    )


def report_expr(f: ReportFilterSpec, study_uids: Sequence[str] | None = None) -> str:
    """Expression over the report collection's own fields. ``study_uids`` (already resolved through the
    images collection, validated) restricts the study; an empty sequence means "no study matches"."""
    parts: list[str | None] = []
    if f.positive_codes:
        parts.append(contains_all("icd10_positive", f.positive_codes))
    if f.negative_codes:
        parts.append(contains_all("icd10_negative", f.negative_codes))
    if f.uncertain_codes:
        parts.append(contains_all("icd10_uncertain", f.uncertain_codes))
    parts.extend(date_range("report_date", f.date_from, f.date_to))
    uids = list(f.study_uids)
    if study_uids is not None:
        uids = [u for u in uids if u in set(study_uids)] if uids else list(study_uids)
        if not uids:
            return "report_id == \"\" and report_id != \"\""  # matches nothing
    if uids:
        parts.append(eq_any("study_uid", uids))
    if f.report_ids:
        parts.append(eq_any("report_id", f.report_ids))
    return conj(parts)


def image_expr(f: ImageFilterSpec, study_uids: Sequence[str] | None = None,
               exclude_ids: Sequence[str] = ()) -> str:
    parts: list[str | None] = []
    if f.modalities:
        parts.append(eq_any("modality", f.modalities))
    if f.view_positions:
        parts.append(eq_any("view_position", f.view_positions))
    if f.body_parts:
        parts.append(eq_any("body_part", f.body_parts))
    if f.lateralities:
        parts.append(eq_any("laterality", f.lateralities))
    parts.extend(date_range("study_date", f.date_from, f.date_to))
    uids = list(f.study_uids)
    if study_uids is not None:
        uids = [u for u in uids if u in set(study_uids)] if uids else list(study_uids)
        if not uids:
            return "sop_instance_uid == \"\" and sop_instance_uid != \"\""
    if uids:
        parts.append(eq_any("study_uid", uids))
    for x in exclude_ids:
        parts.append(f"sop_instance_uid != {literal(x)}")
    return conj(parts)
