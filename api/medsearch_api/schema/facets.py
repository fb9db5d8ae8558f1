"""Facet buckets: ICD-10-CM code counts (with the CMS description) and entity term counts."""

from __future__ import annotations

import strawberry

from medsearch_api.icd10 import describe
from medsearch_api.records import FacetCount


@strawberry.type
class Icd10Facet:
    code: str
    description: str
    count: int

    @classmethod
    def from_record(cls, c: FacetCount) -> Icd10Facet:
        return cls(code=c.key, description=describe(c.key), count=c.count)


@strawberry.type
class EntityFacet:
    term: str
    count: int

    @classmethod
    def from_record(cls, c: FacetCount) -> EntityFacet:
        return cls(term=c.key, count=c.count)
