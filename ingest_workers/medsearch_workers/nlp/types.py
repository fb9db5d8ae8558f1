"""Data shapes of the report analysis (interface 5): plain dataclasses that serialise to JSON-able dicts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from medsearch.contracts.entities import EntityCode, EntityRecord, EntityTrait

Category = Literal["MEDICAL_CONDITION", "ANATOMY", "TEST_TREATMENT_PROCEDURE", "DEVICE", "MEDICATION", "OTHER"]
Assertion = Literal["present", "absent", "uncertain", "historical", "hypothetical", "family"]

# Trait names (Comprehend Medical's vocabulary where one exists).
NEGATION = "NEGATION"
UNCERTAIN = "UNCERTAIN"
HYPOTHETICAL = "HYPOTHETICAL"
HISTORICAL = "HISTORICAL"
FAMILY = "FAMILY"
SIGN = "SIGN"
SYMPTOM = "SYMPTOM"
DIAGNOSIS = "DIAGNOSIS"
ASSERTION_TRAITS = (NEGATION, UNCERTAIN, HYPOTHETICAL, HISTORICAL, FAMILY)


@dataclass(frozen=True)
class Section:
    name: str  # FINDINGS, IMPRESSION, INDICATION, COMPARISON, TECHNIQUE, EXAMINATION, BODY (unlabeled), ...
    start: int  # character offsets of the section body (header excluded)
    end: int
    header: str = ""


@dataclass(frozen=True)
class Trait:
    name: str
    score: float = 1.0


@dataclass(frozen=True)
class IcdCandidate:
    code: str
    description: str
    score: float


@dataclass(frozen=True)
class Span:
    """A classified stretch of the report text (character offsets), with the classifier's score."""

    text: str
    start: int
    end: int
    category: str
    type: str
    score: float


@dataclass(frozen=True)
class Mention(Span):
    """A raw NER hit, before assertion status and linking (the shape both backends produce)."""

    concept: str | None = None  # lexicon concept id, when known
    polarity: Literal["present", "absent", "uncertain"] = "present"  # normal phrasing ("heart size is normal")
    code: str | None = None  # lexical ICD-10-CM code, when known


@dataclass(frozen=True)
class Entity(Span):
    """A mention as the report holds it: its section, assertion and kind traits, and ICD-10-CM links."""

    section: str
    traits: list[Trait] = field(default_factory=list)
    icd10: list[IcdCandidate] = field(default_factory=list)
    concept: str | None = None
    name: str = ""
    code: str | None = None  # the code the report roll-up uses (lexical, else a confident semantic link)

    @property
    def trait_names(self) -> set[str]:
        return {t.name for t in self.traits}

    @property
    def assertion(self) -> Assertion:
        names = self.trait_names
        if FAMILY in names:
            return "family"
        if HYPOTHETICAL in names:
            return "hypothetical"
        if NEGATION in names:
            return "absent"
        if UNCERTAIN in names:
            return "uncertain"
        if HISTORICAL in names:
            return "historical"
        return "present"

    def to_record(self) -> EntityRecord:
        """The stored shape (the ``entities`` JSON of a report row), shared with the gateway; scores to 4 places."""
        return EntityRecord(
            text=self.text, start=self.start, end=self.end, category=self.category, type=self.type,
            score=round(self.score, 4), section=self.section,
            traits=tuple(EntityTrait(name=t.name, score=round(t.score, 4)) for t in self.traits),
            icd10=tuple(EntityCode(code=c.code, description=c.description, score=round(c.score, 4))
                        for c in self.icd10),
            assertion=self.assertion, concept=self.concept, name=self.name, code=self.code,
        )

    def to_dict(self) -> dict[str, Any]:
        return self.to_record().model_dump(mode="json")


@dataclass
class ReportAnalysis:
    sections: dict[str, str]
    entities: list[Entity]
    icd10_positive: list[str]
    icd10_negative: list[str]
    icd10_uncertain: list[str]
    positive_signs: list[str]
    negative_signs: list[str]
    positive_diagnoses: list[str]
    negative_diagnoses: list[str]
    positive_symptoms: list[str]
    negative_symptoms: list[str]
    backend: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "sections": dict(self.sections),
            "entities": [e.to_dict() for e in self.entities],
            "icd10_positive": list(self.icd10_positive),
            "icd10_negative": list(self.icd10_negative),
            "icd10_uncertain": list(self.icd10_uncertain),
            "positive_signs": list(self.positive_signs),
            "negative_signs": list(self.negative_signs),
            "positive_diagnoses": list(self.positive_diagnoses),
            "negative_diagnoses": list(self.negative_diagnoses),
            "positive_symptoms": list(self.positive_symptoms),
            "negative_symptoms": list(self.negative_symptoms),
            "backend": self.backend,
        }
