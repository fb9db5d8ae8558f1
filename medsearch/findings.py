"""The radiology finding vocabulary: concepts, their ICD-10-CM codes and the phrases that assert them.

The data lives in ``medsearch/data/radiology_lexicon.yaml``. The report NLP's ``lexicon`` backend finds mentions
with it (:mod:`medsearch_workers.nlp.lexicon`), and the gateway maps a search query to the findings it names
(:func:`query_findings`) so that a search for a finding ranks reports asserting it first and leaves out those
that only negate it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

DATA_PACKAGE = "medsearch.data"
LEXICON_FILE = "radiology_lexicon.yaml"


class LexiconError(ValueError):
    """The lexicon data file is invalid (names the concept and field)."""


@dataclass(frozen=True)
class Concept:
    id: str
    finding: str
    code: str | None
    codes: dict[str, str]
    category: str
    type: str
    trait: str | None
    present: re.Pattern[str] | None
    absent: re.Pattern[str] | None
    uncertain: re.Pattern[str] | None

    @property
    def name(self) -> str:
        return self.id.replace("_", " ")

    def code_for(self, *, side: str | None, plural: bool) -> str | None:
        keys = []
        if plural and side:
            keys.append(f"plural_{side}")
        if plural:
            keys.append("plural")
        if side:
            keys.append(side)
        for k in keys:
            if k in self.codes:
                return self.codes[k]
        return self.code


def _compile(patterns: list[str], macros: dict[str, str], where: str) -> re.Pattern[str] | None:
    if not patterns:
        return None
    parts = []
    for p in patterns:
        expanded = p
        for _ in range(3):  # macros may reference macros
            expanded = re.sub(r"\{([A-Z_]+)\}", lambda m: macros.get(m.group(1), m.group(0)), expanded)
        try:
            re.compile(expanded)
        except re.error as err:
            raise LexiconError(f"{where}: invalid regular expression {p!r}: {err}") from None
        parts.append(f"(?:{expanded})")
    return re.compile(r"(?<![\w-])(?:" + "|".join(parts) + r")(?![\w-])", re.IGNORECASE)


def read_lexicon(path: str | Path | None = None) -> tuple[dict[str, Any], str]:
    """The lexicon YAML (default: the packaged one) as a mapping with a ``concepts`` list, and where it came from."""
    if path is None:
        raw = resources.files(DATA_PACKAGE).joinpath(LEXICON_FILE).read_text(encoding="utf-8")
        where = LEXICON_FILE
    else:
        raw = Path(path).read_text(encoding="utf-8")
        where = str(path)
    data = yaml.safe_load(raw)
    if not isinstance(data, dict) or not isinstance(data.get("concepts"), list):
        raise LexiconError(f"{where}: expected a mapping with a 'concepts' list")
    return data, where


def load_concepts(path: str | Path | None = None) -> list[Concept]:
    """Parse the lexicon YAML (default: the packaged one)."""
    data, where = read_lexicon(path)
    macros = {str(k): str(v) for k, v in (data.get("macros") or {}).items()}
    out: list[Concept] = []
    seen: set[str] = set()
    for i, c in enumerate(data["concepts"]):
        cid = str(c.get("id", ""))
        if not cid or cid in seen:
            raise LexiconError(f"{where}: concept #{i}: missing or duplicate 'id' ({cid!r})")
        seen.add(cid)
        if not c.get("patterns"):
            raise LexiconError(f"{where}: concept {cid!r}: 'patterns' is empty")
        out.append(
            Concept(
                id=cid,
                finding=str(c.get("finding", cid)),
                code=c.get("code"),
                codes={str(k): str(v) for k, v in (c.get("codes") or {}).items()},
                category=str(c.get("category", "MEDICAL_CONDITION")),
                type=str(c.get("type", "DX_NAME")),
                trait=c.get("trait"),
                present=_compile([str(p) for p in c["patterns"]], macros, f"{where}: concept {cid!r}: patterns"),
                absent=_compile([str(p) for p in c.get("absent") or []], macros, f"{where}: concept {cid!r}: absent"),
                uncertain=_compile(
                    [str(p) for p in c.get("uncertain") or []], macros, f"{where}: concept {cid!r}: uncertain"
                ),
            )
        )
    return out


@functools.lru_cache(maxsize=1)
def default_concepts() -> tuple[Concept, ...]:
    return tuple(load_concepts())


@functools.lru_cache(maxsize=1)
def concept_by_id() -> dict[str, Concept]:
    """Concepts by id (shared; do not modify)."""
    return {c.id: c for c in default_concepts()}


def concept_for_text(text: str) -> Concept | None:
    """The lexicon concept whose 'patterns' match ``text`` most fully (used to link transformer mentions)."""
    best: tuple[int, Concept] | None = None
    for concept in default_concepts():
        if concept.present is None:
            continue
        for m in concept.present.finditer(text):
            n = m.end() - m.start()
            if best is None or n > best[0]:
                best = (n, concept)
    return best[1] if best else None


def query_findings(query: str) -> dict[str, frozenset[str]]:
    """The findings a free-text query names, each with every ICD-10-CM code the lexicon assigns to it.

    ``"left pleural effusion"`` → ``{"pleural_effusion": {"J90", ...}}``. Only medical conditions count;
    anatomy, devices and procedures in a query stay plain search terms.
    """
    conditions = [c for c in default_concepts() if c.category == "MEDICAL_CONDITION"]
    named = {c.finding for c in conditions if c.present is not None and c.present.search(query)}
    out: dict[str, set[str]] = {}
    for concept in conditions:  # every concept of a named finding (e.g. malignant effusion under effusion)
        if concept.finding in named:
            out.setdefault(concept.finding, set()).update(c for c in (concept.code, *concept.codes.values()) if c)
    return {k: frozenset(v) for k, v in out.items() if v}
