# mypy: disable-error-code="untyped-decorator"
# (strawberry.field(...) used as a decorator factory is typed as returning Any; the resolvers are typed.)
"""Seed-client compatibility schema (``/compat/graphql``): the original web client's operations, names and
shapes, as a thin adapter over :mod:`medsearch_api.resolvers` (the same code as ``/graphql``).

Facet buckets are ``{key doc_count}``; for ICD-10-CM facets ``key`` is the CMS description (as in the seed).
``Image.Bucket``/``Key`` locate the thumbnail on the gateway, never in the object store: ``Bucket`` is
``thumbnails`` and ``Key`` the image id with the URL's signature, so that ``/<Bucket>/<Key>`` is the signed
thumbnail URL (relative to the gateway), fetchable without a header. ``Image.ReportId`` is the image's report, else
the first report of its study.
"""

from __future__ import annotations

from typing import Annotated, Any

import strawberry
from strawberry import Info
from strawberry.schema.config import StrawberryConfig

from medsearch.contracts.settings import ApiSettings
from medsearch_api import resolvers
from medsearch_api.context import Context
from medsearch_api.icd10 import describe
from medsearch_api.logs import Schema as LoggingSchema
from medsearch_api.permissions import IsReader
from medsearch_api.records import (
    FacetCount,
    ImageFilterSpec,
    ImageRecord,
    Polarity,
    ReportFilterSpec,
    ReportRecord,
    SearchMode,
)
from medsearch_api.schema.extensions import extensions

SEARCH_SIZE = 100  # hits returned by searchReports (the seed had no paging argument)
FACET_SIZE = 25
# Every compat facet is an aggregation over many reports: charged like the main schema's facets.
COMPAT_FIELD_WORK = dict.fromkeys(
    [f"get{p}ICD10CMs" for p in ("Positive", "Negative", "AllPositive", "AllNegative")]
    + [f"get{p}{k}byReports" for p in ("Positive", "Negative") for k in ("ICD10CMs", "Signs", "Diagnoses", "Symptoms")],
    2500,
)


THUMBNAIL_BUCKET = "thumbnails"


def _thumbnail(info: Info[Context, None], i: ImageRecord) -> tuple[str | None, str | None]:
    """(Bucket, Key) of the image's signed gateway thumbnail URL ``/thumbnails/<id>?…``; Nones without one."""
    if not i.thumbnail_uri:
        return None, None
    p = info.context.principal
    url = info.context.services.thumbnail_url(i.sop_instance_uid, principal=p.name if p else "")
    prefix = f"/{THUMBNAIL_BUCKET}/"
    return (THUMBNAIL_BUCKET, url[len(prefix):]) if url.startswith(prefix) else (None, url)


@strawberry.type(name="Image")
class CImage:
    ImageId: str | None
    ReportId: str | None
    Bucket: str | None
    Key: str | None
    BodyPartExamined: str | None
    Modality: str | None
    ViewPosition: str | None

    @staticmethod
    def from_record(i: ImageRecord, info: Info[Context, None]) -> CImage:
        bucket, key = _thumbnail(info, i)
        return CImage(ImageId=i.sop_instance_uid, ReportId=i.report_id or None, Bucket=bucket, Key=key,
                      BodyPartExamined=i.body_part or None, Modality=i.modality or None,
                      ViewPosition=i.view_position or None)


@strawberry.type(name="Report")
class CReport:
    r: strawberry.Private[ReportRecord]
    ReportId: str | None
    Impression: str | None
    Findings: str | None
    PositiveSigns: list[str | None] | None
    NegativeSigns: list[str | None] | None
    PositiveDiagnoses: list[str | None] | None
    NegativeDiagnoses: list[str | None] | None
    PositiveSymptoms: list[str | None] | None
    NegativeSymptoms: list[str | None] | None
    PositiveICD10CMs: list[str | None] | None
    NegativeICD10CMs: list[str | None] | None

    @strawberry.field
    async def Images(self, info: Info[Context, None]) -> list[CImage | None] | None:
        images = await info.context.loaders.images_by_study.load(self.r.study_uid) if self.r.study_uid else []
        return [CImage.from_record(i, info) for i in images]

    @staticmethod
    def from_record(r: ReportRecord) -> CReport:
        return CReport(
            r=r, ReportId=r.report_id, Impression=r.impression, Findings=r.findings,
            PositiveSigns=list(r.positive_signs), NegativeSigns=list(r.negative_signs),
            PositiveDiagnoses=list(r.positive_diagnoses), NegativeDiagnoses=list(r.negative_diagnoses),
            PositiveSymptoms=list(r.positive_symptoms), NegativeSymptoms=list(r.negative_symptoms),
            PositiveICD10CMs=[describe(c) for c in r.icd10_positive],
            NegativeICD10CMs=[describe(c) for c in r.icd10_negative],
        )


@strawberry.type(name="Bucket")
class CBucket:
    key: str | None
    doc_count: int | None


def _code_buckets(counts: list[FacetCount]) -> list[CBucket | None]:
    merged: dict[str, int] = {}
    for c in counts:
        d = describe(c.key)
        merged[d] = merged.get(d, 0) + c.count
    return [CBucket(key=k, doc_count=n) for k, n in sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))]


def _ids(input: str | None) -> list[str]:
    return [p.strip() for p in (input or "").split(",") if p.strip()]


async def _icd(info: Info[Context, None], query: str | None, polarity: Polarity) -> list[CBucket | None]:
    counts = await resolvers.icd10_facets(info.context, query=query, spec=ReportFilterSpec(), polarity=polarity,
                                  size=FACET_SIZE)
    return _code_buckets(counts)


async def _by_reports(info: Info[Context, None], input: str | None, field: str, codes: bool) -> list[CBucket | None]:
    ids = _ids(input)
    if not ids:
        return []
    counts = await resolvers.term_facets(info.context, field=field, report_ids=ids, query=None,
                                 spec=ReportFilterSpec(), size=FACET_SIZE)
    if codes:
        return _code_buckets(counts)
    return [CBucket(key=c.key, doc_count=c.count) for c in counts]


def _icd_field(polarity: Polarity, *, over_all: bool = False) -> Any:
    """``get<Polarity>ICD10CMs(input)``: code buckets over the reports matching ``input``; ``getAll…``: over all."""
    if over_all:
        async def resolve_all(info: Info[Context, None]) -> list[CBucket | None] | None:
            return await _icd(info, None, polarity)

        return strawberry.field(resolver=resolve_all, permission_classes=[IsReader])

    async def resolve(info: Info[Context, None], input: str | None = None) -> list[CBucket | None] | None:
        return await _icd(info, input, polarity)

    return strawberry.field(resolver=resolve, permission_classes=[IsReader])


def _by_reports_field(field: str) -> Any:
    """``get<Polarity><Kind>byReports(input)``: buckets of a report array over the comma-separated report ids."""

    async def resolve(info: Info[Context, None], input: str | None = None) -> list[CBucket | None] | None:
        return await _by_reports(info, input, field, codes=field.startswith("icd10_"))

    return strawberry.field(resolver=resolve, permission_classes=[IsReader])


@strawberry.type(name="Query")
class CompatQuery:
    @strawberry.field(permission_classes=[IsReader])
    async def searchReports(self, info: Info[Context, None], input: str | None = None) -> list[CReport | None] | None:
        if not input or not input.strip():
            return []
        page, _, _ = await resolvers.search_reports(info.context, query=input, mode=SearchMode.KEYWORD,
                                            spec=ReportFilterSpec(),
                                            first=min(SEARCH_SIZE, info.context.settings.max_first))
        return [CReport.from_record(h.report) for h in page.hits]

    @strawberry.field(permission_classes=[IsReader])
    async def listReports(self, info: Info[Context, None],
                          from_: Annotated[int | None, strawberry.argument(name="from")] = 0,
                          size: int | None = 10) -> list[CReport | None] | None:
        page, _, _ = await resolvers.search_reports(info.context, query=None, mode=SearchMode.KEYWORD,
                                            spec=ReportFilterSpec(), first=size or 10,
                                            offset=max(0, from_ or 0))
        return [CReport.from_record(h.report) for h in page.hits]

    getPositiveICD10CMs = _icd_field(Polarity.POSITIVE)
    getNegativeICD10CMs = _icd_field(Polarity.NEGATIVE)
    getAllPositiveICD10CMs = _icd_field(Polarity.POSITIVE, over_all=True)
    getAllNegativeICD10CMs = _icd_field(Polarity.NEGATIVE, over_all=True)

    @strawberry.field(permission_classes=[IsReader])
    async def getReport(self, info: Info[Context, None],
                        ReportId: str | None = None) -> CReport | None:
        if not ReportId:
            return None
        r = await resolvers.get_report(info.context, ReportId)
        return CReport.from_record(r) if r else None

    @strawberry.field(permission_classes=[IsReader])
    async def getImage(self, info: Info[Context, None], ImageId: str | None = None) -> CImage | None:
        if not ImageId:
            return None
        i = await resolvers.get_image(info.context, ImageId)
        return CImage.from_record(i, info) if i else None

    @strawberry.field(permission_classes=[IsReader])
    async def getSimilarImages(self, info: Info[Context, None], ImageId: str | None = None,
                               k: int | None = 10) -> list[CImage | None] | None:
        if not ImageId:
            return []
        hits = await resolvers.similar_images(info.context, image_id=ImageId, data=None, k=k or 10,
                                      spec=ImageFilterSpec())
        return [CImage.from_record(h.image, info) for h in hits]

    getPositiveICD10CMsbyReports = _by_reports_field("icd10_positive")
    getNegativeICD10CMsbyReports = _by_reports_field("icd10_negative")
    getPositiveSignsbyReports = _by_reports_field("positive_signs")
    getNegativeSignsbyReports = _by_reports_field("negative_signs")
    getPositiveDiagnosesbyReports = _by_reports_field("positive_diagnoses")
    getNegativeDiagnosesbyReports = _by_reports_field("negative_diagnoses")
    getPositiveSymptomsbyReports = _by_reports_field("positive_symptoms")
    getNegativeSymptomsbyReports = _by_reports_field("negative_symptoms")


def build_compat_schema(settings: ApiSettings | None = None) -> strawberry.Schema:
    exts = extensions(settings or ApiSettings(), endpoint="compat", field_work=COMPAT_FIELD_WORK,
                      listing_work={"listReports": 500},
                      default_pages={"searchReports": SEARCH_SIZE, "listReports": 10, "getSimilarImages": 10,
                                     **dict.fromkeys(COMPAT_FIELD_WORK, FACET_SIZE)})
    return LoggingSchema(query=CompatQuery, config=StrawberryConfig(auto_camel_case=False), extensions=exts)


compat_schema = build_compat_schema()
