"""Filter inputs of the root fields, validated into the repository's filter specs (a bad value is
BAD_USER_INPUT naming the argument)."""

from __future__ import annotations

import datetime as dt

import strawberry

from medsearch_api import errors
from medsearch_api.filters import FilterInputError, validate_image_filter, validate_report_filter
from medsearch_api.records import ImageFilterSpec, ReportFilterSpec, date_to_yyyymmdd


def _yyyymmdd(day: dt.date | None) -> int | None:
    return date_to_yyyymmdd(day) if day else None


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
        if f is None:
            return ReportFilterSpec()
        try:
            return validate_report_filter(ReportFilterSpec(
                positive_codes=tuple(f.positive_codes or ()), negative_codes=tuple(f.negative_codes or ()),
                uncertain_codes=tuple(f.uncertain_codes or ()), modalities=tuple(f.modality or ()),
                view_positions=tuple(f.view_position or ()), body_parts=tuple(f.body_part or ()),
                date_from=_yyyymmdd(f.date_from), date_to=_yyyymmdd(f.date_to), study_uids=tuple(f.study_uids or ()),
            ))
        except FilterInputError as err:
            raise errors.bad_input(str(err), err.argument) from err


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
        if f is None:
            return ImageFilterSpec()
        try:
            return validate_image_filter(ImageFilterSpec(
                modalities=tuple(f.modality or ()), view_positions=tuple(f.view_position or ()),
                body_parts=tuple(f.body_part or ()), lateralities=tuple(f.laterality or ()),
                date_from=_yyyymmdd(f.date_from), date_to=_yyyymmdd(f.date_to), study_uids=tuple(f.study_uids or ()),
                positive_codes=tuple(f.positive_codes or ()), negative_codes=tuple(f.negative_codes or ()),
            ))
        except FilterInputError as err:
            raise errors.bad_input(str(err), err.argument) from err
