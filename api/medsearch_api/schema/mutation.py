# mypy: disable-error-code="untyped-decorator"
# (strawberry.field(...) used as a decorator factory is typed as returning Any; the resolvers are typed.)
"""Mutation: the upload fields of ``/graphql`` (object store, then the index's ingest topic)."""

from __future__ import annotations

import datetime as dt

import strawberry
from strawberry import Info
from strawberry.file_uploads import Upload

from medsearch_api import errors, resolvers
from medsearch_api.context import Context
from medsearch_api.permissions import IsIngester
from medsearch_api.schema.ingest import IngestResult


@strawberry.type
class Mutation:
    @strawberry.mutation(permission_classes=[IsIngester], description="Upload a DICOM object for ingest "
                         "(stored in the object store, then published to <index>.dicom).")
    async def ingest_dicom(
        self, info: Info[Context, None], file: Upload | None = None, file_base64: str | None = None,
        filename: str = "upload.dcm",
    ) -> IngestResult:
        data = await resolvers.read_upload(info.context, file, file_base64, "file")
        if data is None:
            raise errors.bad_input("give file or fileBase64", "file")
        return IngestResult.from_record(await resolvers.ingest_dicom(info.context, data, filename))

    @strawberry.mutation(permission_classes=[IsIngester], description="Publish a report for ingest "
                         "(reportDate: when it was signed; the dateFrom/dateTo report filters use it).")
    async def ingest_report(
        self, info: Info[Context, None], report_id: strawberry.ID, text: str, study_uid: str | None = None,
        report_date: dt.date | None = None,
    ) -> IngestResult:
        return IngestResult.from_record(
            await resolvers.ingest_report(info.context, str(report_id), text, study_uid, report_date))
