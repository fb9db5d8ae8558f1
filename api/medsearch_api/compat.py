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
from strawberry.extensions import MaskErrors, MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter
from strawberry.schema.config import StrawberryConfig

from medsearch.contracts.settings import ApiSettings
from medsearch_api import records as rec
from medsearch_api import resolvers as R
from medsearch_api.audit import audit_extension
from medsearch_api.context import Context
from medsearch_api.icd10 import describe
from medsearch_api.limits import CostLimiter
from medsearch_api.logs import Schema as LoggingSchema
from medsearch_api.permissions import IsReader

SEARCH_SIZE = 100  # hits returned by searchReports (the seed had no paging argument)
FACET_SIZE = 25
# Every compat facet is an aggregation over many reports: charged like the main schema's facets.
COMPAT_FIELD_WORK = dict.fromkeys(
    [f"get{p}ICD10CMs" for p in ("Positive", "Negative", "AllPositive", "AllNegative")]
    + [f"get{p}{k}byReports" for p in ("Positive", "Negative") for k in ("ICD10CMs", "Signs", "Diagnoses", "Symptoms")],
    2500,
)


THUMBNAIL_BUCKET = "thumbnails"


def _thumbnail(info: Info[Context, None], i: rec.ImageRecord) -> tuple[str | None, str | None]:
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
    def of(info: Info[Context, None], i: rec.ImageRecord) -> CImage:
        bucket, key = _thumbnail(info, i)
        return CImage(ImageId=i.sop_instance_uid, ReportId=i.report_id or None, Bucket=bucket, Key=key,
                      BodyPartExamined=i.body_part or None, Modality=i.modality or None,
                      ViewPosition=i.view_position or None)


@strawberry.type(name="Report")
class CReport:
    r: strawberry.Private[rec.ReportRecord]
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
        return [CImage.of(info, i) for i in images]

    @staticmethod
    def of(r: rec.ReportRecord) -> CReport:
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


def _code_buckets(counts: list[rec.FacetCount]) -> list[CBucket | None]:
    merged: dict[str, int] = {}
    for c in counts:
        d = describe(c.key)
        merged[d] = merged.get(d, 0) + c.count
    return [CBucket(key=k, doc_count=n) for k, n in sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))]


def _ids(input: str | None) -> list[str]:
    return [p.strip() for p in (input or "").split(",") if p.strip()]


async def _icd(info: Info[Context, None], query: str | None, polarity: rec.Polarity) -> list[CBucket | None]:
    counts = await R.icd10_facets(info.context, query=query, spec=rec.ReportFilterSpec(), polarity=polarity,
                                  size=FACET_SIZE)
    return _code_buckets(counts)


async def _by_reports(info: Info[Context, None], input: str | None, field: str, codes: bool) -> list[CBucket | None]:
    ids = _ids(input)
    if not ids:
        return []
    counts = await R.term_facets(info.context, field=field, report_ids=ids, query=None,
                                 spec=rec.ReportFilterSpec(), size=FACET_SIZE)
    if codes:
        return _code_buckets(counts)
    return [CBucket(key=c.key, doc_count=c.count) for c in counts]


@strawberry.type(name="Query")
class CompatQuery:
    @strawberry.field(permission_classes=[IsReader])
    async def searchReports(self, info: Info[Context, None], input: str | None = None) -> list[CReport | None] | None:
        if not input or not input.strip():
            return []
        page, _, _ = await R.search_reports(info.context, query=input, mode=rec.SearchMode.KEYWORD,
                                            spec=rec.ReportFilterSpec(),
                                            first=min(SEARCH_SIZE, info.context.settings.max_first))
        return [CReport.of(h.report) for h in page.hits]

    @strawberry.field(permission_classes=[IsReader])
    async def listReports(self, info: Info[Context, None],
                          from_: Annotated[int | None, strawberry.argument(name="from")] = 0,
                          size: int | None = 10) -> list[CReport | None] | None:
        page, _, _ = await R.search_reports(info.context, query=None, mode=rec.SearchMode.KEYWORD,
                                            spec=rec.ReportFilterSpec(), first=size or 10,
                                            offset=max(0, from_ or 0))
        return [CReport.of(h.report) for h in page.hits]

    @strawberry.field(permission_classes=[IsReader])
    async def getPositiveICD10CMs(self, info: Info[Context, None],
                                  input: str | None = None) -> list[CBucket | None] | None:
        return await _icd(info, input, rec.Polarity.POSITIVE)

    @strawberry.field(permission_classes=[IsReader])
    async def getNegativeICD10CMs(self, info: Info[Context, None],
                                  input: str | None = None) -> list[CBucket | None] | None:
        return await _icd(info, input, rec.Polarity.NEGATIVE)

    @strawberry.field(permission_classes=[IsReader])
    async def getAllPositiveICD10CMs(self, info: Info[Context, None]) -> list[CBucket | None] | None:
        return await _icd(info, None, rec.Polarity.POSITIVE)

    @strawberry.field(permission_classes=[IsReader])
    async def getAllNegativeICD10CMs(self, info: Info[Context, None]) -> list[CBucket | None] | None:
        return await _icd(info, None, rec.Polarity.NEGATIVE)

    @strawberry.field(permission_classes=[IsReader])
    async def getReport(self, info: Info[Context, None],
                        ReportId: str | None = None) -> CReport | None:
        if not ReportId:
            return None
        r = await R.get_report(info.context, ReportId)
        return CReport.of(r) if r else None

    @strawberry.field(permission_classes=[IsReader])
    async def getImage(self, info: Info[Context, None], ImageId: str | None = None) -> CImage | None:
        if not ImageId:
            return None
        i = await R.get_image(info.context, ImageId)
        return CImage.of(info, i) if i else None

    @strawberry.field(permission_classes=[IsReader])
    async def getSimilarImages(self, info: Info[Context, None], ImageId: str | None = None,
                               k: int | None = 10) -> list[CImage | None] | None:
        if not ImageId:
            return []
        hits = await R.similar_images(info.context, image_id=ImageId, data=None, k=k or 10,
                                      spec=rec.ImageFilterSpec())
        return [CImage.of(info, h.image) for h in hits]

    @strawberry.field(permission_classes=[IsReader])
    async def getPositiveICD10CMsbyReports(self, info: Info[Context, None],
                                           input: str | None = None) -> list[CBucket | None] | None:
        return await _by_reports(info, input, "icd10_positive", True)

    @strawberry.field(permission_classes=[IsReader])
    async def getNegativeICD10CMsbyReports(self, info: Info[Context, None],
                                           input: str | None = None) -> list[CBucket | None] | None:
        return await _by_reports(info, input, "icd10_negative", True)

    @strawberry.field(permission_classes=[IsReader])
    async def getPositiveSignsbyReports(self, info: Info[Context, None],
                                        input: str | None = None) -> list[CBucket | None] | None:
        return await _by_reports(info, input, "positive_signs", False)

    @strawberry.field(permission_classes=[IsReader])
    async def getNegativeSignsbyReports(self, info: Info[Context, None],
                                        input: str | None = None) -> list[CBucket | None] | None:
        return await _by_reports(info, input, "negative_signs", False)

    @strawberry.field(permission_classes=[IsReader])
    async def getPositiveDiagnosesbyReports(self, info: Info[Context, None],
                                            input: str | None = None) -> list[CBucket | None] | None:
        return await _by_reports(info, input, "positive_diagnoses", False)

    @strawberry.field(permission_classes=[IsReader])
    async def getNegativeDiagnosesbyReports(self, info: Info[Context, None],
                                            input: str | None = None) -> list[CBucket | None] | None:
        return await _by_reports(info, input, "negative_diagnoses", False)

    @strawberry.field(permission_classes=[IsReader])
    async def getPositiveSymptomsbyReports(self, info: Info[Context, None],
                                           input: str | None = None) -> list[CBucket | None] | None:
        return await _by_reports(info, input, "positive_symptoms", False)

    @strawberry.field(permission_classes=[IsReader])
    async def getNegativeSymptomsbyReports(self, info: Info[Context, None],
                                           input: str | None = None) -> list[CBucket | None] | None:
        return await _by_reports(info, input, "negative_symptoms", False)


def build_compat_schema(settings: ApiSettings | None = None) -> strawberry.Schema:
    from medsearch_api.schema import mask_unexpected

    s = settings or ApiSettings()
    extensions: list[Any] = [
        lambda: QueryDepthLimiter(max_depth=s.max_query_depth),
        lambda: MaxAliasesLimiter(max_alias_count=20),
        lambda: MaxTokensLimiter(max_token_count=2000),
        lambda: CostLimiter(max_cost=s.max_query_cost, max_first=s.max_first, max_k=s.max_k,
                            field_work=COMPAT_FIELD_WORK, listing_work={"listReports": 500},
                            default_pages={"searchReports": SEARCH_SIZE, "listReports": 10, "getSimilarImages": 10,
                                           **dict.fromkeys(COMPAT_FIELD_WORK, FACET_SIZE)}),
        audit_extension("compat"),
        lambda: MaskErrors(should_mask_error=mask_unexpected, error_message="internal error"),
    ]
    return LoggingSchema(query=CompatQuery, config=StrawberryConfig(auto_camel_case=False),
                             extensions=extensions)


compat_schema = build_compat_schema()
