# mypy: disable-error-code="untyped-decorator"
# (strawberry.field(...) used as a decorator factory is typed as returning Any; the resolvers are typed.)
"""The strawberry schema: typed, camelCase, cursor pagination. Resolvers stay thin: they validate arguments,
call the repository (through per-request DataLoaders where lookups repeat) and wrap records in types.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, cast

import strawberry
from strawberry import Info
from strawberry.extensions import MaskErrors, MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter
from strawberry.file_uploads import Upload
from strawberry.scalars import JSON

from medsearch.contracts.settings import ApiSettings
from medsearch_api import errors
from medsearch_api import records as rec
from medsearch_api import resolvers as R
from medsearch_api.audit import audit_extension
from medsearch_api.context import Context
from medsearch_api.filters import FilterInputError, validate_image_filter, validate_report_filter
from medsearch_api.icd10 import describe
from medsearch_api.limits import CostLimiter
from medsearch_api.logs import Schema as LoggingSchema
from medsearch_api.permissions import IsIngester, IsReader
from medsearch_api.search import encode_cursor, make_snippet

# strawberry.enum registers the records' enums in place (same classes), so resolvers take them directly.
strawberry.enum(rec.SearchMode, description="How searchReports ranks reports.")
strawberry.enum(rec.Polarity, description="Assertion of a finding: present, absent or uncertain.")
strawberry.enum(rec.EntityKind, description="Clinical entity category.")

# --------------------------------------------------------------------------------------------- output types


@strawberry.type(description="Relay-style page information.")
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type(description="An ICD-10-CM code with its CMS description.")
class Icd10Code:
    code: str
    description: str


@strawberry.type
class EntityTrait:
    name: str
    score: float | None


@strawberry.type
class EntityCode:
    code: str
    description: str
    score: float | None


@strawberry.type(description="A clinical entity found in a report (for display).")
class Entity:
    text: str
    start: int | None
    end: int | None
    category: str | None
    type: str | None
    score: float | None
    section: str | None
    traits: list[EntityTrait]
    icd10: list[EntityCode]


def _f(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def _i(v: Any) -> int | None:
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None


def _s(v: Any) -> str | None:
    return None if v is None else str(v)


def _entity(e: Any) -> Entity:
    traits = [EntityTrait(name=str(t.get("name", "")), score=_f(t.get("score")))
              for t in (e.get("traits") or []) if isinstance(t, dict)]
    codes = [EntityCode(code=str(c.get("code", "")),
                        description=str(c.get("description") or describe(str(c.get("code", "")))),
                        score=_f(c.get("score")))
             for c in (e.get("icd10") or []) if isinstance(c, dict)]
    return Entity(text=str(e.get("text", "")), start=_i(e.get("start")), end=_i(e.get("end")),
                  category=_s(e.get("category")), type=_s(e.get("type")), score=_f(e.get("score")),
                  section=_s(e.get("section")), traits=traits, icd10=codes)


def _codes(codes: Sequence[str]) -> list[Icd10Code]:
    return [Icd10Code(code=c, description=describe(c)) for c in codes]


@strawberry.type(description="A radiology report with its NLP annotations.")
class Report:
    rec: strawberry.Private[rec.ReportRecord]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(self.rec.report_id)

    @strawberry.field
    def study_uid(self) -> str | None:
        return self.rec.study_uid or None

    @strawberry.field(description="Full report text.")
    def text(self) -> str:
        return self.rec.text

    @strawberry.field
    def findings(self) -> str:
        return self.rec.findings

    @strawberry.field
    def impression(self) -> str:
        return self.rec.impression

    @strawberry.field
    def indication(self) -> str:
        return self.rec.indication

    @strawberry.field(description="Section name -> section text.")
    def sections(self) -> JSON:
        return cast(JSON, dict(self.rec.sections))

    @strawberry.field
    def report_date(self) -> dt.date | None:
        return rec.yyyymmdd_to_date(self.rec.report_date)

    @strawberry.field
    def icd10_positive(self) -> list[Icd10Code]:
        return _codes(self.rec.icd10_positive)

    @strawberry.field
    def icd10_negative(self) -> list[Icd10Code]:
        return _codes(self.rec.icd10_negative)

    @strawberry.field
    def icd10_uncertain(self) -> list[Icd10Code]:
        return _codes(self.rec.icd10_uncertain)

    @strawberry.field
    def positive_signs(self) -> list[str]:
        return list(self.rec.positive_signs)

    @strawberry.field
    def negative_signs(self) -> list[str]:
        return list(self.rec.negative_signs)

    @strawberry.field
    def positive_diagnoses(self) -> list[str]:
        return list(self.rec.positive_diagnoses)

    @strawberry.field
    def negative_diagnoses(self) -> list[str]:
        return list(self.rec.negative_diagnoses)

    @strawberry.field
    def positive_symptoms(self) -> list[str]:
        return list(self.rec.positive_symptoms)

    @strawberry.field
    def negative_symptoms(self) -> list[str]:
        return list(self.rec.negative_symptoms)

    @strawberry.field
    def entities(self) -> list[Entity]:
        return [_entity(e) for e in self.rec.entities]

    @strawberry.field
    def nlp_backend(self) -> str | None:
        return self.rec.nlp_backend or None

    @strawberry.field
    def ingested_at(self) -> dt.datetime | None:
        return rec.epoch_ms_to_datetime(self.rec.ingested_at)

    @strawberry.field(description="Images of the same study.")
    async def images(self, info: Info[Context, None]) -> list[Image]:
        if not self.rec.study_uid:
            return []
        found = await info.context.loaders.images_by_study.load(self.rec.study_uid)
        return [Image(rec=i) for i in found]

    @strawberry.field
    def study(self) -> Study | None:
        return Study(uid=strawberry.ID(self.rec.study_uid)) if self.rec.study_uid else None


@strawberry.type(description="An indexed DICOM image (one SOP instance).")
class Image:
    rec: strawberry.Private[rec.ImageRecord]

    @strawberry.field(description="SOPInstanceUID.")
    def id(self) -> strawberry.ID:
        return strawberry.ID(self.rec.sop_instance_uid)

    @strawberry.field
    def study_uid(self) -> str | None:
        return self.rec.study_uid or None

    @strawberry.field
    def series_uid(self) -> str | None:
        return self.rec.series_uid or None

    @strawberry.field
    def report_id(self) -> str | None:
        return self.rec.report_id or None

    @strawberry.field
    def modality(self) -> str:
        return self.rec.modality

    @strawberry.field
    def view_position(self) -> str:
        return self.rec.view_position

    @strawberry.field
    def body_part(self) -> str:
        return self.rec.body_part

    @strawberry.field
    def laterality(self) -> str:
        return self.rec.laterality

    @strawberry.field
    def rows(self) -> int:
        return self.rec.rows

    @strawberry.field
    def columns(self) -> int:
        return self.rec.columns

    @strawberry.field
    def frames(self) -> int:
        return self.rec.frames

    @strawberry.field
    def photometric(self) -> str:
        return self.rec.photometric

    @strawberry.field
    def transfer_syntax(self) -> str:
        return self.rec.transfer_syntax

    @strawberry.field
    def study_date(self) -> dt.date | None:
        return rec.yyyymmdd_to_date(self.rec.study_date)

    @strawberry.field
    def acquisition_date(self) -> dt.date | None:
        return rec.yyyymmdd_to_date(self.rec.acquisition_date)

    @strawberry.field(description="SHA-256 of the source DICOM object.")
    def sha256(self) -> str:
        return self.rec.sha256

    @strawberry.field(description="Object-store URI of the source DICOM object.")
    def source_uri(self) -> str:
        return self.rec.source_uri

    @strawberry.field(description="Gateway URL of the PNG thumbnail (carries a short-lived signature, so it "
                                  "works in <img src>; a bearer token works too). Null without a thumbnail.")
    def thumbnail_url(self, info: Info[Context, None]) -> str | None:
        if not self.rec.thumbnail_uri:
            return None
        p = info.context.principal
        return info.context.services.thumbnail_url(self.rec.sop_instance_uid, principal=p.name if p else "")

    @strawberry.field
    def model_name(self) -> str:
        return self.rec.model_name

    @strawberry.field
    def model_version(self) -> str:
        return self.rec.model_version

    @strawberry.field
    def indexed_at(self) -> dt.datetime | None:
        return rec.epoch_ms_to_datetime(self.rec.indexed_at)

    @strawberry.field(description="The linked report (report_id), else the first report of the same study.")
    async def report(self, info: Info[Context, None]) -> Report | None:
        if self.rec.report_id:
            r = await info.context.loaders.report.load(self.rec.report_id)
            if r is not None:
                return Report(rec=r)
        if self.rec.study_uid:
            found = await info.context.loaders.reports_by_study.load(self.rec.study_uid)
            if found:
                return Report(rec=found[0])
        return None

    @strawberry.field
    def study(self) -> Study | None:
        return Study(uid=strawberry.ID(self.rec.study_uid)) if self.rec.study_uid else None


@strawberry.type(description="A study: images and reports that share a StudyInstanceUID.")
class Study:
    uid: strawberry.ID

    @strawberry.field
    async def images(self, info: Info[Context, None]) -> list[Image]:
        return [Image(rec=i) for i in await info.context.loaders.images_by_study.load(str(self.uid))]

    @strawberry.field
    async def reports(self, info: Info[Context, None]) -> list[Report]:
        return [Report(rec=r) for r in await info.context.loaders.reports_by_study.load(str(self.uid))]

    @strawberry.field(description="The first report of the study (by report id).")
    async def report(self, info: Info[Context, None]) -> Report | None:
        found = await info.context.loaders.reports_by_study.load(str(self.uid))
        return Report(rec=found[0]) if found else None


@strawberry.type(description="[start, end) character offsets into Snippet.text.")
class TextSpan:
    start: int
    end: int


@strawberry.type(description="A window of the report text around the query terms.")
class Snippet:
    text: str
    highlights: list[TextSpan]
    html: str = strawberry.field(description="HTML-escaped text with <mark> around the highlights.")


@strawberry.type
class ReportSearchEdge:
    cursor: str
    node: Report
    score: float | None = strawberry.field(description="Ranking score (ts_rank, cosine or RRF); null when listing.")
    query: strawberry.Private[str | None]

    @strawberry.field
    def snippet(self, width: int = 200) -> Snippet:
        text = self.node.rec.text or " ".join(p for p in (self.node.rec.findings, self.node.rec.impression) if p)
        s = make_snippet(text, self.query, width=max(40, min(width, 2000)))
        return Snippet(text=s.text, highlights=[TextSpan(start=a, end=b) for a, b in s.highlights], html=s.html())


@strawberry.type
class ReportSearchConnection:
    edges: list[ReportSearchEdge]
    page_info: PageInfo
    args: strawberry.Private[tuple[str | None, rec.SearchMode, rec.ReportFilterSpec]]

    @strawberry.field(description="Reports matching the query and filter (KEYWORD: containing any query term; "
                                  "SEMANTIC/HYBRID and listing: all reports passing the filter).")
    async def total_count(self, info: Info[Context, None]) -> int:
        query, mode, f = self.args
        return await R.count_reports(info.context, query, mode, f)


@strawberry.type
class SimilarImage:
    image: Image
    score: float = strawberry.field(description="Similarity (metric of the image index, COSINE by default).")


@strawberry.type
class Icd10Facet:
    code: str
    description: str
    count: int


@strawberry.type
class EntityFacet:
    term: str
    count: int


@strawberry.type(description="Outcome of an upload: published to the ingest topic, a duplicate, or rejected.")
class IngestResult:
    kind: str
    id: str
    uri: str | None
    sha256: str
    status: str
    reason: str | None


# --------------------------------------------------------------------------------------------- inputs


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

    def spec(self) -> rec.ReportFilterSpec:
        return validate_report_filter(rec.ReportFilterSpec(
            positive_codes=tuple(self.positive_codes or ()), negative_codes=tuple(self.negative_codes or ()),
            uncertain_codes=tuple(self.uncertain_codes or ()), modalities=tuple(self.modality or ()),
            view_positions=tuple(self.view_position or ()), body_parts=tuple(self.body_part or ()),
            date_from=rec.date_to_yyyymmdd(self.date_from) if self.date_from else None,
            date_to=rec.date_to_yyyymmdd(self.date_to) if self.date_to else None,
            study_uids=tuple(self.study_uids or ()),
        ))


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

    def spec(self) -> rec.ImageFilterSpec:
        return validate_image_filter(rec.ImageFilterSpec(
            modalities=tuple(self.modality or ()), view_positions=tuple(self.view_position or ()),
            body_parts=tuple(self.body_part or ()), lateralities=tuple(self.laterality or ()),
            date_from=rec.date_to_yyyymmdd(self.date_from) if self.date_from else None,
            date_to=rec.date_to_yyyymmdd(self.date_to) if self.date_to else None,
            study_uids=tuple(self.study_uids or ()), positive_codes=tuple(self.positive_codes or ()),
            negative_codes=tuple(self.negative_codes or ()),
        ))


# --------------------------------------------------------------------------------------------- helpers


def _report_filter(f: ReportFilter | None) -> rec.ReportFilterSpec:
    try:
        return f.spec() if f is not None else rec.ReportFilterSpec()
    except FilterInputError as err:
        raise errors.bad_input(str(err), err.argument) from err


def _image_filter(f: ImageFilter | None) -> rec.ImageFilterSpec:
    try:
        return f.spec() if f is not None else rec.ImageFilterSpec()
    except FilterInputError as err:
        raise errors.bad_input(str(err), err.argument) from err


def _ingest_result(r: Any) -> IngestResult:
    return IngestResult(kind=str(r.kind), id=str(r.id), uri=r.uri, sha256=str(r.sha256), status=str(r.status),
                        reason=r.reason)


# --------------------------------------------------------------------------------------------- root


@strawberry.type
class Query:
    @strawberry.field(permission_classes=[IsReader], description="A report by id.")
    async def report(self, info: Info[Context, None], id: strawberry.ID) -> Report | None:
        r = await R.get_report(info.context, str(id))
        return Report(rec=r) if r else None

    @strawberry.field(permission_classes=[IsReader], description="An image by SOPInstanceUID.")
    async def image(self, info: Info[Context, None], id: strawberry.ID) -> Image | None:
        r = await R.get_image(info.context, str(id))
        return Image(rec=r) if r else None

    @strawberry.field(permission_classes=[IsReader], description="A study by StudyInstanceUID (null when no "
                                                                  "image or report has it).")
    async def study(self, info: Info[Context, None], uid: strawberry.ID) -> Study | None:
        u = await R.study_exists(info.context, str(uid))
        return Study(uid=strawberry.ID(u)) if u else None

    @strawberry.field(permission_classes=[IsReader], description="Ranked report search with cursor pagination; "
                      "without a query: all reports passing the filter, newest first (report date, then id).")
    async def search_reports(
        self, info: Info[Context, None], query: str | None = None,
        mode: rec.SearchMode = rec.SearchMode.KEYWORD,
        filter: ReportFilter | None = None, first: int = 10, after: str | None = None,
    ) -> ReportSearchConnection:
        spec = _report_filter(filter)
        page, offset, q = await R.search_reports(info.context, query=query, mode=mode, spec=spec, first=first,
                                                 after=after)
        edges = [ReportSearchEdge(cursor=encode_cursor(offset + n), node=Report(rec=h.report),
                                  score=h.score if q else None, query=q)
                 for n, h in enumerate(page.hits)]
        info_ = PageInfo(has_next_page=page.has_more, has_previous_page=offset > 0,
                         start_cursor=edges[0].cursor if edges else None,
                         end_cursor=edges[-1].cursor if edges else None)
        return ReportSearchConnection(edges=edges, page_info=info_, args=(q, mode, spec))

    @strawberry.field(permission_classes=[IsReader], description="k nearest images to an indexed image "
                      "(imageId; the image itself is excluded) or to an uploaded DICOM/PNG/JPEG.")
    async def similar_images(
        self, info: Info[Context, None], image_id: strawberry.ID | None = None, upload: Upload | None = None,
        upload_base64: str | None = None, k: int = 10, filter: ImageFilter | None = None,
    ) -> list[SimilarImage]:
        spec = _image_filter(filter)
        data = await R.read_upload(info.context, upload, upload_base64, "upload")
        hits = await R.similar_images(info.context, image_id=None if image_id is None else str(image_id),
                                      data=data, k=k, spec=spec)
        return [SimilarImage(image=Image(rec=h.image), score=h.score) for h in hits]

    @strawberry.field(permission_classes=[IsReader], description="ICD-10-CM code counts over the reports "
                      "matching the query (any query term) and filter; over all reports without a query.")
    async def icd10_facets(
        self, info: Info[Context, None], query: str | None = None, filter: ReportFilter | None = None,
        polarity: rec.Polarity = rec.Polarity.POSITIVE, size: int = 20,
    ) -> list[Icd10Facet]:
        counts = await R.icd10_facets(info.context, query=query, spec=_report_filter(filter), polarity=polarity,
                                      size=size)
        return [Icd10Facet(code=c.key, description=describe(c.key), count=c.count) for c in counts]

    @strawberry.field(permission_classes=[IsReader], description="Entity term counts (signs, diagnoses or "
                      "symptoms) over the given reports, or over the reports matching query and filter.")
    async def entity_facets(
        self, info: Info[Context, None], kind: rec.EntityKind, polarity: rec.Polarity = rec.Polarity.POSITIVE,
        report_ids: list[strawberry.ID] | None = None, query: str | None = None,
        filter: ReportFilter | None = None, size: int = 20,
    ) -> list[EntityFacet]:
        counts = await R.entity_facets(info.context, kind=kind, polarity=polarity,
                                       report_ids=None if report_ids is None else [str(i) for i in report_ids],
                                       query=query, spec=_report_filter(filter), size=size)
        return [EntityFacet(term=c.key, count=c.count) for c in counts]


@strawberry.type
class Mutation:
    @strawberry.mutation(permission_classes=[IsIngester], description="Upload a DICOM object for ingest "
                         "(stored in the object store, then published to <index>.dicom).")
    async def ingest_dicom(
        self, info: Info[Context, None], file: Upload | None = None, file_base64: str | None = None,
        filename: str = "upload.dcm",
    ) -> IngestResult:
        data = await R.read_upload(info.context, file, file_base64, "file")
        if data is None:
            raise errors.bad_input("give file or fileBase64", "file")
        return _ingest_result(await R.ingest_dicom(info.context, data, filename))

    @strawberry.mutation(permission_classes=[IsIngester], description="Publish a report for ingest "
                         "(reportDate: when it was signed; the dateFrom/dateTo report filters use it).")
    async def ingest_report(
        self, info: Info[Context, None], report_id: strawberry.ID, text: str, study_uid: str | None = None,
        report_date: dt.date | None = None,
    ) -> IngestResult:
        return _ingest_result(await R.ingest_report(info.context, str(report_id), text, study_uid, report_date))


def mask_unexpected(error: Any) -> bool:
    ext = getattr(error, "extensions", None) or {}
    if "code" in ext:
        return False
    # GraphQL validation / parse errors have no original error and are safe to show.
    return getattr(error, "original_error", None) is not None


def build_schema(settings: ApiSettings | None = None) -> strawberry.Schema:
    s = settings or ApiSettings()
    extensions: list[Any] = [
        lambda: QueryDepthLimiter(max_depth=s.max_query_depth),
        lambda: MaxAliasesLimiter(max_alias_count=20),
        lambda: MaxTokensLimiter(max_token_count=2000),
        lambda: CostLimiter(max_cost=s.max_query_cost, max_first=s.max_first, max_k=s.max_k),
        audit_extension("graphql"),
        lambda: MaskErrors(should_mask_error=mask_unexpected, error_message="internal error"),
    ]
    return LoggingSchema(query=Query, mutation=Mutation, extensions=extensions)


schema = build_schema()
