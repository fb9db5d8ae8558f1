"""Filter inputs of the root fields, validated into the repository's filter specs (a bad value is
BAD_USER_INPUT naming the argument)."""

from __future__ import annotations

import datetime as dt
from dataclasses import fields
from typing import Any, TypeVar

import strawberry

from medsearch_api import errors
from medsearch_api.filters import FilterInputError, validate_filter
from medsearch_api.records import ImageFilterSpec, ReportFilterSpec, date_to_yyyymmdd

# Input fields whose spec field has another name (the input's are singular, as in the web client's URLs).
_SPEC_FIELDS = {"modality": "modalities", "view_position": "view_positions", "body_part": "body_parts",
                "laterality": "lateralities"}
_Spec = TypeVar("_Spec", ReportFilterSpec, ImageFilterSpec)


def _spec(f: ReportFilter | ImageFilter | None, spec: type[_Spec]) -> _Spec:
    """The validated ``spec`` of an input filter: lists as tuples, dates as YYYYMMDD (no filter: everything)."""
    if f is None:
        return spec()
    values: dict[str, Any] = {}
    for field in fields(f):
        value = getattr(f, field.name)
        if field.name in ("date_from", "date_to"):
            values[field.name] = date_to_yyyymmdd(value) if value else None
        else:
            values[_SPEC_FIELDS.get(field.name, field.name)] = tuple(value or ())
    try:
        return validate_filter(spec(**values))
    except FilterInputError as err:
        raise errors.bad_input(str(err), err.argument) from err


@strawberry.input(description="Report filter: every given part must hold.")
class ReportFilter:
    positive_codes: list[str] | None = strawberry.field(default=None, description="All of these ICD-10-CM codes "
                                                        "asserted present.")
    negative_codes: list[str] | None = strawberry.field(default=None, description="All of these asserted absent.")
    uncertain_codes: list[str] | None = None
    modality: list[str] | None = strawberry.field(default=None, description="Any of these, through the images "
                                                  "of the same study.")
    view_position: list[str] | None = None
    body_part: list[str] | None = None
    date_from: dt.date | None = strawberry.field(default=None, description="Report date, inclusive.")
    date_to: dt.date | None = None
    study_uids: list[str] | None = None

    @staticmethod
    def to_spec(f: ReportFilter | None) -> ReportFilterSpec:
        """The validated spec of ``f`` (no filter: everything)."""
        return _spec(f, ReportFilterSpec)


@strawberry.input(description="Image filter: every given part must hold.")
class ImageFilter:
    modality: list[str] | None = None
    view_position: list[str] | None = None
    body_part: list[str] | None = None
    laterality: list[str] | None = None
    date_from: dt.date | None = strawberry.field(default=None, description="Study date, inclusive.")
    date_to: dt.date | None = None
    study_uids: list[str] | None = None
    positive_codes: list[str] | None = strawberry.field(default=None, description="Through the reports of the "
                                                        "same study: all of these codes present.")
    negative_codes: list[str] | None = None

    @staticmethod
    def to_spec(f: ImageFilter | None) -> ImageFilterSpec:
        """The validated spec of ``f`` (no filter: everything)."""
        return _spec(f, ImageFilterSpec)
