# mypy: disable-error-code="untyped-decorator"
# (strawberry.field(...) used as a decorator factory is typed as returning Any; the resolvers are typed.)
"""Query: the root fields of ``/graphql``. Each checks its arguments, calls :mod:`medsearch_api.resolvers`
(shared with the seed-compat schema) and wraps the records it gets in types."""

from __future__ import annotations

from collections.abc import Sequence

import strawberry
from strawberry import Info
from strawberry.file_uploads import Upload
from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField, Selection

from medsearch_api import resolvers
from medsearch_api.context import Context
from medsearch_api.permissions import IsReader
from medsearch_api.schema.enums import EntityKind, Polarity, SearchMode
from medsearch_api.schema.facets import EntityFacet, Icd10Facet
from medsearch_api.schema.image import Image
from medsearch_api.schema.inputs import ImageFilter, ReportFilter
from medsearch_api.schema.report import Report
from medsearch_api.schema.search_results import ReportSearchConnection, SimilarImage
from medsearch_api.schema.study import Study


def selects(fields: Sequence[Selection], name: str) -> bool:
    """Whether the field's selection set asks for ``name`` (directly or through fragments)."""
    for f in fields:
        for sel in f.selections:
            if isinstance(sel, SelectedField) and sel.name == name:
                return True
            if isinstance(sel, FragmentSpread | InlineFragment) and selects([sel], name):
                return True
    return False


@strawberry.type
class Query:
    @strawberry.field(permission_classes=[IsReader], description="A report by id.")
    async def report(self, info: Info[Context, None], id: strawberry.ID) -> Report | None:
        r = await resolvers.get_report(info.context, str(id))
        return Report.from_record(r) if r else None

    @strawberry.field(permission_classes=[IsReader], description="An image by SOPInstanceUID.")
    async def image(self, info: Info[Context, None], id: strawberry.ID) -> Image | None:
        r = await resolvers.get_image(info.context, str(id))
        return Image.from_record(r) if r else None

    @strawberry.field(permission_classes=[IsReader], description="A study by StudyInstanceUID (null when no "
                                                                  "image or report has it).")
    async def study(self, info: Info[Context, None], uid: strawberry.ID) -> Study | None:
        return Study.of(await resolvers.study_exists(info.context, str(uid)))

    @strawberry.field(permission_classes=[IsReader], description="Ranked report search with cursor pagination; "
                      "without a query: all reports passing the filter, newest first (report date, then id).")
    async def search_reports(
        self, info: Info[Context, None], query: str | None = None, mode: SearchMode = SearchMode.KEYWORD,
        filter: ReportFilter | None = None, first: int = 10, after: str | None = None,
    ) -> ReportSearchConnection:
        spec = ReportFilter.to_spec(filter)
        # an asked-for totalCount is counted while the page is ranked
        total = (resolvers.start_count(info.context, query, mode, spec)
                 if selects(info.selected_fields, "totalCount") else None)
        try:
            page, offset, q = await resolvers.search_reports(info.context, query=query, mode=mode, spec=spec,
                                                             first=first, after=after)
        except BaseException:
            resolvers.settle(total)
            raise
        return ReportSearchConnection.from_hits(page.hits, offset=offset, has_more=page.has_more, query=q, mode=mode,
                                                spec=spec, total=total)

    @strawberry.field(permission_classes=[IsReader], description="k nearest images to an indexed image "
                      "(imageId; the image itself is excluded) or to an uploaded DICOM/PNG/JPEG.")
    async def similar_images(
        self, info: Info[Context, None], image_id: strawberry.ID | None = None, upload: Upload | None = None,
        upload_base64: str | None = None, k: int = 10, filter: ImageFilter | None = None,
    ) -> list[SimilarImage]:
        spec = ImageFilter.to_spec(filter)
        data = await resolvers.read_upload(info.context, upload, upload_base64, "upload")
        hits = await resolvers.similar_images(info.context, image_id=None if image_id is None else str(image_id),
                                              data=data, k=k, spec=spec)
        return [SimilarImage.from_hit(h) for h in hits]

    @strawberry.field(permission_classes=[IsReader], description="ICD-10-CM code counts over the reports "
                      "matching the query (any query term) and filter; over all reports without a query.")
    async def icd10_facets(
        self, info: Info[Context, None], query: str | None = None, filter: ReportFilter | None = None,
        polarity: Polarity = Polarity.POSITIVE, size: int = 20,
    ) -> list[Icd10Facet]:
        counts = await resolvers.icd10_facets(info.context, query=query, spec=ReportFilter.to_spec(filter),
                                              polarity=polarity, size=size)
        return [Icd10Facet.from_record(c) for c in counts]

    @strawberry.field(permission_classes=[IsReader], description="Entity term counts (signs, diagnoses or "
                      "symptoms) over the given reports, or over the reports matching query and filter.")
    async def entity_facets(
        self, info: Info[Context, None], kind: EntityKind, polarity: Polarity = Polarity.POSITIVE,
        report_ids: list[strawberry.ID] | None = None, query: str | None = None,
        filter: ReportFilter | None = None, size: int = 20,
    ) -> list[EntityFacet]:
        counts = await resolvers.entity_facets(
            info.context, kind=kind, polarity=polarity,
            report_ids=None if report_ids is None else [str(i) for i in report_ids], query=query,
            spec=ReportFilter.to_spec(filter), size=size)
        return [EntityFacet.from_record(c) for c in counts]
