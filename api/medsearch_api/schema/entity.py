"""Entity: a clinical entity of a report, from the typed record the report worker stores
(:class:`medsearch.contracts.entities.EntityRecord`)."""

from __future__ import annotations

import strawberry

from medsearch.contracts.entities import EntityCode as EntityCodeRecord
from medsearch.contracts.entities import EntityRecord
from medsearch.contracts.entities import EntityTrait as EntityTraitRecord
from medsearch_api.icd10 import describe


@strawberry.type
class EntityTrait:
    name: str
    score: float | None

    @classmethod
    def from_record(cls, t: EntityTraitRecord) -> EntityTrait:
        return cls(name=t.name, score=t.score)


@strawberry.type
class EntityCode:
    code: str
    description: str
    score: float | None

    @classmethod
    def from_record(cls, c: EntityCodeRecord) -> EntityCode:
        return cls(code=c.code, description=c.description or describe(c.code), score=c.score)


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

    @classmethod
    def from_record(cls, e: EntityRecord) -> Entity:
        return cls(text=e.text, start=e.start, end=e.end, category=e.category, type=e.type, score=e.score,
                   section=e.section, traits=[EntityTrait.from_record(t) for t in e.traits],
                   icd10=[EntityCode.from_record(c) for c in e.icd10])
