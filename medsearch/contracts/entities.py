"""The typed record of one clinical entity in a report row's ``entities`` JSON (:mod:`.collections`).

The report worker builds these from its analysis and stores ``model_dump()``; the gateway reads rows back with
:meth:`EntityRecord.from_stored`. Reading is lenient, since rows outlive their writers: a field that is missing
or not of its type reads as absent (None, or empty for text and lists) instead of failing the whole report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict


def _or_none(kind: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def read(value: Any) -> Any:
        try:
            return None if value is None else kind(value)
        except (TypeError, ValueError):
            return None

    return read


def _objects(value: Any) -> list[Any]:
    """The JSON objects (or records) of a list; anything else in it, or a non-list, reads as nothing."""
    return [v for v in value if isinstance(v, (Mapping, BaseModel))] if isinstance(value, (list, tuple)) else []


OptFloat = Annotated[float | None, BeforeValidator(_or_none(float))]
OptInt = Annotated[int | None, BeforeValidator(_or_none(int))]
OptStr = Annotated[str | None, BeforeValidator(_or_none(str))]
Text = Annotated[str, BeforeValidator(lambda v: "" if v is None else str(v))]


class _Stored(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class EntityTrait(_Stored):
    """An assertion or kind trait (NEGATION, UNCERTAIN, SIGN, ...) with its score."""

    name: Text = ""
    score: OptFloat = None


class EntityCode(_Stored):
    """A ranked ICD-10-CM candidate of the entity ('' description: the reader looks the code up)."""

    code: Text = ""
    description: Text = ""
    score: OptFloat = None


class EntityRecord(_Stored):
    """One entity: the text and its character span, category/type, section, traits and ICD-10-CM candidates."""

    text: Text = ""
    start: OptInt = None
    end: OptInt = None
    category: OptStr = None
    type: OptStr = None
    score: OptFloat = None
    section: OptStr = None
    traits: Annotated[tuple[EntityTrait, ...], BeforeValidator(_objects)] = ()
    icd10: Annotated[tuple[EntityCode, ...], BeforeValidator(_objects)] = ()
    assertion: OptStr = None
    concept: OptStr = None
    name: OptStr = None
    code: OptStr = None

    @classmethod
    def from_stored(cls, value: Mapping[str, Any]) -> EntityRecord:
        """An entity as a row holds it (any JSON object; see the module's note on leniency)."""
        return cls.model_validate(value)


def stored_entities(value: Any) -> tuple[EntityRecord, ...]:
    """A row's ``entities`` value (a JSON list; anything else reads as none) as records."""
    return tuple(EntityRecord.from_stored(e) for e in _objects(value))
