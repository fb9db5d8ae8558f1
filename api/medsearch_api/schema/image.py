# mypy: disable-error-code="untyped-decorator"
# (strawberry.field(...) used as a decorator factory is typed as returning Any; the resolvers are typed.)
"""Image: an indexed DICOM image (one SOP instance), its signed thumbnail URL and its report."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry import Info

from medsearch_api.context import Context
from medsearch_api.records import ImageRecord, epoch_ms_to_datetime, yyyymmdd_to_date

if TYPE_CHECKING:
    from medsearch_api.schema.report import Report
    from medsearch_api.schema.study import Study


def _thumbnail_url(root: Image, info: Info[Context, None]) -> str | None:
    if not root.record.thumbnail_uri:
        return None
    p = info.context.principal
    return info.context.services.thumbnail_url(root.record.sop_instance_uid, principal=p.name if p else "")


@strawberry.type(description="An indexed DICOM image (one SOP instance).")
class Image:
    record: strawberry.Private[ImageRecord]
    id: strawberry.ID = strawberry.field(description="SOPInstanceUID.")
    study_uid: str | None
    series_uid: str | None
    report_id: str | None
    modality: str
    view_position: str
    body_part: str
    laterality: str
    rows: int
    columns: int
    frames: int
    photometric: str
    transfer_syntax: str
    study_date: dt.date | None
    acquisition_date: dt.date | None
    sha256: str = strawberry.field(description="SHA-256 of the source DICOM object.")
    source_uri: str = strawberry.field(description="Object-store URI of the source DICOM object.")
    thumbnail_url: str | None = strawberry.field(
        resolver=_thumbnail_url, description="Gateway URL of the PNG thumbnail (carries a short-lived signature, "
        "so it works in <img src>; a bearer token works too). Null without a thumbnail.")
    model_name: str
    model_version: str
    indexed_at: dt.datetime | None

    @classmethod
    def from_record(cls, r: ImageRecord) -> Image:
        return cls(
            record=r, id=strawberry.ID(r.sop_instance_uid), study_uid=r.study_uid or None,
            series_uid=r.series_uid or None, report_id=r.report_id or None, modality=r.modality,
            view_position=r.view_position, body_part=r.body_part, laterality=r.laterality, rows=r.rows,
            columns=r.columns, frames=r.frames, photometric=r.photometric, transfer_syntax=r.transfer_syntax,
            study_date=yyyymmdd_to_date(r.study_date), acquisition_date=yyyymmdd_to_date(r.acquisition_date),
            sha256=r.sha256, source_uri=r.source_uri, model_name=r.model_name, model_version=r.model_version,
            indexed_at=epoch_ms_to_datetime(r.indexed_at),
        )

    @strawberry.field(description="The linked report (report_id), else the first report of the same study.")
    async def report(self, info: Info[Context, None]) -> Annotated[
            Report, strawberry.lazy("medsearch_api.schema.report")] | None:
        from medsearch_api.schema.report import Report  # report.py imports this module

        loaders = info.context.loaders
        if self.record.report_id:
            r = await loaders.report.load(self.record.report_id)
            if r is not None:
                return Report.from_record(r)
        if self.record.study_uid:
            found = await loaders.reports_by_study.load(self.record.study_uid)
            if found:
                return Report.from_record(found[0])
        return None

    @strawberry.field
    def study(self) -> Annotated[Study, strawberry.lazy("medsearch_api.schema.study")] | None:
        from medsearch_api.schema.study import Study  # study.py imports this module

        return Study.of(self.record.study_uid)
