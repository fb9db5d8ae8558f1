"""The ``lexicon`` NER backend: a radiology finding lexicon (data file) plus ICD-10-CM index terms.

Concepts and their regular expressions live in ``medsearch/data/radiology_lexicon.yaml`` (loaded by
:mod:`medsearch.findings`); ICD-10-CM
descriptions and inclusion terms of chest-relevant codes (``simple-icd-10-cm``) are matched as phrases with
spaCy's ``PhraseMatcher``. Overlapping hits are resolved longest-first, lexicon concepts before ICD terms.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsearch.findings import (  # the finding vocabulary is shared with the gateway's query understanding
    LEXICON_FILE,
    Concept,
    LexiconError,
    concept_by_id,
    concept_for_text,
    default_concepts,
    load_concepts,
    read_lexicon,
)
from medsearch_workers.nlp.types import Mention

__all__ = [
    "LEXICON_FILE",
    "Concept",
    "LexiconError",
    "concept_by_id",
    "concept_for_text",
    "default_concepts",
    "load_concepts",
]

# ICD-10-CM codes whose descriptions / inclusion terms are matched as phrases and embedded for linking: the
# chapters and blocks a chest radiograph report talks about.
CHEST_CODE_PREFIXES: tuple[str, ...] = (
    "J", "I2", "I3", "I4", "I5", "I7", "I8", "R0", "R91", "R93", "R59", "K44", "M40", "M41", "M42", "M43",
    "M47", "M48", "M50", "M51", "M80", "M81", "M85", "S22", "S27", "S42.0", "C34", "C38", "C45", "C78", "D14",
    "D38", "A15", "B90", "Z95", "Z96", "Z97", "Z98", "Q20", "Q21", "Q33", "Q34", "Q67", "Q76", "E66", "T79",
    "D86", "R50",
)  # fmt: skip
_SEVENTH_KEEP = {"A"}  # of 7th-character extensions keep the initial encounter only

# ICD index-term phrases too generic to be findings on their own.
_TERM_STOPLIST = {
    "other", "unspecified", "disease", "disorder", "disorders", "condition", "lesion", "abnormal", "shock", "collapse",
    "failure", "injury", "arrest", "block", "stricture", "stenosis", "congestion", "infection", "acute", "chronic",
    "syndrome", "mass", "pain", "abscess", "history", "presence", "rupture", "wound", "crushing", "edema",
    "obstruction", "hemorrhage", "fistula", "hernia", "calcification", "deformity", "sequelae",
}  # fmt: skip


# ---------------------------------------------------------------- ICD-10-CM tables


def _keep_code(code: str) -> bool:
    if not code.startswith(CHEST_CODE_PREFIXES):
        return False
    plain = code.replace(".", "")
    if len(plain) == 7 and code[0] in "STM" and plain[-1] not in _SEVENTH_KEEP:
        return False
    return True


@functools.lru_cache(maxsize=1)
def chest_codes() -> tuple[tuple[str, str], ...]:
    """Billable (leaf) ICD-10-CM codes relevant to chest imaging, with descriptions."""
    import simple_icd_10_cm as icd

    out = []
    for code in icd.get_all_codes(with_dots=True):
        if icd.is_leaf(code) and _keep_code(code):
            out.append((code, icd.get_description(code)))
    return tuple(out)


@functools.lru_cache(maxsize=4096)
def icd_description(code: str) -> str:
    import simple_icd_10_cm as icd

    return str(icd.get_description(code)) if icd.is_valid_item(code) else code


_CLEAN = [
    (re.compile(r"\([^)]*\)|\[[^\]]*\]"), " "),
    (re.compile(r",?\s*(?:unspecified|not elsewhere classified|NOS|NEC)\b.*$", re.IGNORECASE), ""),
    (re.compile(r"\s+"), " "),
]


def _clean_term(term: str) -> str:
    t = term
    for pat, rep in _CLEAN:
        t = pat.sub(rep, t)
    return t.strip(" .-").lower()


@functools.lru_cache(maxsize=1)
def icd_index_terms() -> dict[str, str]:
    """Phrase → ICD-10-CM code from descriptions and inclusion terms (short, specific phrases only)."""
    import simple_icd_10_cm as icd

    terms: dict[str, str] = {}
    for code, desc in chest_codes():
        for raw in [desc, *icd.get_inclusion_term(code)]:
            term = _clean_term(raw)
            words = term.split()
            if not (1 <= len(words) <= 4) or len(term) < 5 or term in _TERM_STOPLIST:
                continue
            if "," in term or ";" in term:
                continue  # "Cardiac, heart or myocardial failure": a list, not a phrase of running text
            if len(words) == 1 and re.search(r"(?:al|ic|ac|ar|ior|ed|ous|ive|ary)$", term):
                continue  # a bare adjective ("lateral", "posterior") is no finding
            if words[-1] in {"of", "and", "or", "to", "the", "for", "with", "in", "by"}:
                continue
            if any(w in {"other", "unspecified", "specified", "without", "with", "due", "in", "type"} for w in words):
                continue
            # prefer the shortest (least specific) code for a shared phrase
            if term not in terms or (len(code), code) < (len(terms[term]), terms[term]):
                terms[term] = code
    return terms


# ---------------------------------------------------------------- report-NLP extras of the lexicon


@dataclass(frozen=True)
class ConceptExtras:
    """Per-concept keys of the lexicon that only the report NLP uses (``medsearch.findings`` ignores them)."""

    fuzzy: tuple[str, ...] = ()  # single words that also match with a typo
    also: tuple[str, ...] = ()  # other concept ids a mention asserts as well
    context_codes: tuple[tuple[re.Pattern[str], str], ...] = ()  # (sentence pattern, concept id)


def load_extras(path: str | Path | None = None) -> dict[str, ConceptExtras]:
    """``fuzzy`` / ``also`` / ``context_codes`` per concept id (default: the packaged lexicon); validated."""
    data, where = read_lexicon(path)
    concepts = data["concepts"]
    ids = {str(c.get("id")) for c in concepts if isinstance(c, dict)}
    out: dict[str, ConceptExtras] = {}
    for c in concepts:
        cid = str(c.get("id"))
        fuzzy = [str(w).lower() for w in c.get("fuzzy") or []]
        bad = [w for w in fuzzy if not re.fullmatch(r"[a-z]{8,}", w)]
        if bad:
            raise LexiconError(f"{where}: concept {cid!r}: fuzzy terms must be single words of 8+ letters: {bad}")
        also = [str(a) for a in c.get("also") or []]
        unknown = [a for a in also if a not in ids or a == cid]
        if unknown:
            raise LexiconError(f"{where}: concept {cid!r}: 'also' names unknown concepts {unknown}")
        ctx: list[tuple[re.Pattern[str], str]] = []
        for rule in c.get("context_codes") or []:
            if not isinstance(rule, dict) or rule.get("concept") not in ids or not rule.get("pattern"):
                raise LexiconError(
                    f"{where}: concept {cid!r}: context_codes entries need 'pattern' and a known 'concept'"
                )
            try:
                ctx.append((re.compile(str(rule["pattern"]), re.IGNORECASE), str(rule["concept"])))
            except re.error as err:
                bad_pattern = rule["pattern"]
                raise LexiconError(f"{where}: concept {cid!r}: context_codes pattern {bad_pattern!r}: {err}") from None
        if fuzzy or also or ctx:
            out[cid] = ConceptExtras(tuple(fuzzy), tuple(also), tuple(ctx))
    return out


@functools.lru_cache(maxsize=1)
def concept_extras() -> dict[str, ConceptExtras]:
    return load_extras()


def typo_distance(a: str, b: str, limit: int) -> int:
    """Optimal-string-alignment distance (insert, delete, substitute, swap adjacent), ``limit + 1`` once above."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1]


@functools.lru_cache(maxsize=1)
def _fuzzy_index() -> tuple[tuple[str, str], ...]:
    return tuple((w, cid) for cid, ex in concept_extras().items() for w in ex.fuzzy)


@functools.lru_cache(maxsize=8192)
def fuzzy_concept(word: str) -> str | None:
    """The concept id whose fuzzy term ``word`` misspells (one edit; two from 11 letters; same first letter)."""
    w = word.lower()
    if len(w) < 8:
        return None
    best: tuple[int, str] | None = None
    for term, cid in _fuzzy_index():
        if term[0] != w[0] or _opposite_prefix(w, term):
            continue
        limit = 2 if len(term) >= 11 else 1
        d = typo_distance(w, term, limit)
        if d <= limit and (best is None or d < best[0]):
            best = (d, cid)
    return best[1] if best else None


# Prefixes of opposite meaning: one edit apart ("hypoinflated" / "hyperinflated"), never a typo of each other.
_OPPOSITES = (("hypo", "hyper"), ("hyper", "hypo"))


def _opposite_prefix(word: str, term: str) -> bool:
    return any(word.startswith(a) and term.startswith(b) for a, b in _OPPOSITES)


_WORD = re.compile(r"[A-Za-z]{8,}")


# ---------------------------------------------------------------- matching


def _side_and_number(sentence: str, span_text: str) -> tuple[str | None, bool]:
    low = sentence.lower()
    left = re.search(r"\bleft\b", low) is not None
    right = re.search(r"\bright\b", low) is not None
    side = "left" if left and not right else "right" if right and not left else None
    plural = re.search(r"\b(?:fractures|multiple|several|ribs|bilateral|numerous)\b", span_text.lower() + " " + low)
    return side, plural is not None


def lexicon_mentions(text: str, sentences: list[tuple[int, int]]) -> list[Mention]:
    """Regex concept hits per sentence; overlapping hits resolved longest-first (absent/uncertain win ties)."""
    cands: list[tuple[int, int, int, Concept, str]] = []
    order = {"absent": 0, "uncertain": 1, "present": 2}
    # one search over the whole text first: most patterns occur in no sentence of a report (a sentence span is
    # bounded by punctuation or whitespace, so a pattern found in a sentence is found in the text as well)
    live = [
        (concept, polarity, pat)
        for concept in default_concepts()
        for polarity, pat in (("absent", concept.absent), ("uncertain", concept.uncertain),
                              ("present", concept.present))
        if pat is not None and pat.search(text) is not None
    ]
    for a, b in sentences:
        sent = text[a:b]
        for concept, polarity, pat in live:
            for m in pat.finditer(sent):
                if m.end() > m.start():
                    cands.append((a + m.start(), a + m.end(), order[polarity], concept, polarity))
    cands.extend(_typo_candidates(text, sentences, cands))
    # findings before anatomy (an anatomy phrase never hides a finding), then longest first
    cands.sort(key=lambda c: (c[3].category == "ANATOMY", -(c[1] - c[0]), c[2], c[0]))
    taken: list[tuple[int, int]] = []
    out: list[Mention] = []
    for start, end, _, concept, polarity in cands:
        if any(start < e and s < end for s, e in taken):
            continue
        taken.append((start, end))
        sent_start, sent_end = next(((a, b) for a, b in sentences if a <= start < b), (start, end))
        concept = _in_context(concept, text[sent_start:sent_end])
        span = text[start:end]
        if polarity == "present" and re.search(r"\b(?:not|no)\b", span, re.IGNORECASE):
            polarity = "absent"  # "heart is not enlarged" matched as one span
        side, plural = _side_and_number(text[sent_start:sent_end], span)
        out.append(
            Mention(
                text=span,
                start=start,
                end=end,
                category=concept.category,
                type=concept.type,
                score=1.0,
                concept=concept.id,
                polarity=polarity,  # type: ignore[arg-type]  # one of the three literals above
                code=concept.code_for(side=side, plural=plural),
            )
        )
    out.sort(key=lambda m: m.start)
    return out


def _typo_candidates(
    text: str, sentences: list[tuple[int, int]], cands: list[tuple[int, int, int, Concept, str]]
) -> list[tuple[int, int, int, Concept, str]]:
    """Misspelled fuzzy terms ("cardiomegally") in words no pattern matched, as present mentions."""
    by_id = concept_by_id()
    out: list[tuple[int, int, int, Concept, str]] = []
    for a, b in sentences:
        for m in _WORD.finditer(text, a, b):
            s, e = m.start(), m.end()
            if any(s < ce and cs < e for cs, ce, *_ in cands):
                continue
            cid = fuzzy_concept(m.group(0))
            if cid is not None and cid in by_id:
                out.append((s, e, 2, by_id[cid], "present"))
    return out


def _in_context(concept: Concept, sentence: str) -> Concept:
    """The concept a generic mention takes from its sentence (``context_codes``): "healed fracture" of a rib."""
    extras = concept_extras().get(concept.id)
    if extras is None:
        return concept
    by_id = concept_by_id()
    for pattern, target in extras.context_codes:
        if pattern.search(sentence) and target in by_id:
            return by_id[target]
    return concept


def phrase_matcher(nlp: Any) -> Any:
    """A spaCy PhraseMatcher over the ICD-10-CM index terms (label = code)."""
    from spacy.matcher import PhraseMatcher

    matcher = PhraseMatcher(nlp.vocab, attr="LOWER")
    by_code: dict[str, list[str]] = {}
    for term, code in icd_index_terms().items():
        by_code.setdefault(code, []).append(term)
    for code, terms in by_code.items():
        matcher.add(code, list(nlp.tokenizer.pipe(terms)))
    return matcher


@functools.lru_cache(maxsize=1)
def _code_findings() -> tuple[dict[str, str], dict[str, str]]:
    exact: dict[str, str] = {}
    by_category: dict[str, set[str]] = {}
    for c in default_concepts():
        if c.category != "MEDICAL_CONDITION":
            continue
        for code in [c.code, *c.codes.values()]:
            if code:
                exact.setdefault(code, c.finding)
                by_category.setdefault(code.split(".")[0], set()).add(c.finding)
    unique = {cat: next(iter(f)) for cat, f in by_category.items() if len(f) == 1}
    return exact, unique


def finding_for_code(code: str) -> str | None:
    """The lexicon finding a code belongs to (exact code, else its 3-character category when unambiguous)."""
    exact, by_category = _code_findings()
    return exact.get(code) or by_category.get(code.split(".")[0])
