# mypy: disable-error-code="untyped-decorator"
# (strawberry.field(...) used as a decorator factory is typed as returning Any; the resolvers are typed.)
"""Report: a radiology report with its NLP annotations (its study's images through a per-request DataLoader)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, cast

import strawberry
from strawberry import Info
from strawberry.scalars import JSON

from medsearch_api.context import Context
from medsearch_api.icd10 import describe
from medsearch_api.records import ReportRecord, epoch_ms_to_datetime, yyyymmdd_to_date
from medsearch_api.schema.entity import Entity
from medsearch_api.schema.image import Image

if TYPE_CHECKING:
    from medsearch_api.schema.study import Study


@strawberry.type(description="An ICD-10-CM code with its CMS description.")
class Icd10Code:
    code: str
    description: str

    @classmethod
    def from_codes(cls, codes: Sequence[str]) -> list[Icd10Code]:
        return [cls(code=c, description=describe(c)) for c in codes]


@strawberry.type(description="A radiology report with its NLP annotations.")
class Report:
    record: strawberry.Private[ReportRecord]
    id: strawberry.ID
    study_uid: str | None
    text: str = strawberry.field(description="Full report text.")
    findings: str
    impression: str
    indication: str
    sections: JSON = strawberry.field(description="Section name -> section text.")
    report_date: dt.date | None
    icd10_positive: list[Icd10Code]
    icd10_negative: list[Icd10Code]
    icd10_uncertain: list[Icd10Code]
    positive_signs: list[str]
    negative_signs: list[str]
    positive_diagnoses: list[str]
    negative_diagnoses: list[str]
    positive_symptoms: list[str]
    negative_symptoms: list[str]
    entities: list[Entity]
    nlp_backend: str | None
    ingested_at: dt.datetime | None

    @classmethod
    def from_record(cls, r: ReportRecord) -> Report:
        return cls(
            record=r, id=strawberry.ID(r.report_id), study_uid=r.study_uid or None, text=r.text,
            findings=r.findings, impression=r.impression, indication=r.indication,
            sections=cast(JSON, dict(r.sections)), report_date=yyyymmdd_to_date(r.report_date),
            icd10_positive=Icd10Code.from_codes(r.icd10_positive),
            icd10_negative=Icd10Code.from_codes(r.icd10_negative),
            icd10_uncertain=Icd10Code.from_codes(r.icd10_uncertain),
            positive_signs=list(r.positive_signs), negative_signs=list(r.negative_signs),
            positive_diagnoses=list(r.positive_diagnoses), negative_diagnoses=list(r.negative_diagnoses),
            positive_symptoms=list(r.positive_symptoms), negative_symptoms=list(r.negative_symptoms),
            entities=[Entity.from_record(e) for e in r.entities], nlp_backend=r.nlp_backend or None,
            ingested_at=epoch_ms_to_datetime(r.ingested_at),
        )

    @strawberry.field(description="Images of the same study.")
    async def images(self, info: Info[Context, None]) -> list[Image]:
        if not self.record.study_uid:
            return []
        found = await info.context.loaders.images_by_study.load(self.record.study_uid)
        return [Image.from_record(i) for i in found]

    @strawberry.field
    def study(self) -> Annotated[Study, strawberry.lazy("medsearch_api.schema.study")] | None:
        from medsearch_api.schema.study import Study  # study.py imports this module

        return Study.of(self.record.study_uid)
