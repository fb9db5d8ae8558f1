"""Report analysis: sections → sentences → NER (lexicon or transformers) → ConText assertion → ICD-10-CM linking
→ per-report roll-up. Pure (no network); the heavy resources are loaded once per process and shared."""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

from medsearch_workers.nlp import assertion, lexicon
from medsearch_workers.nlp.linking import IcdLinker, LexicalOnlyLinker
from medsearch_workers.nlp.sections import sections_text, split_sections, split_sentences
from medsearch_workers.nlp.types import (
    DIAGNOSIS,
    NEGATION,
    SIGN,
    SYMPTOM,
    UNCERTAIN,
    Entity,
    IcdCandidate,
    Mention,
    ReportAnalysis,
    Section,
    Trait,
)

# Sections whose mentions never count as report-level findings (INDICATION only when configured).
NON_FINDING_SECTIONS = frozenset({"COMPARISON", "TECHNIQUE", "EXAMINATION", "HEADER", "RECOMMENDATION"})
INDICATION = "INDICATION"
# A mention without a lexical code takes its best semantic candidate as its code from this cosine upwards.
ASSIGN_THRESHOLD = 0.7
LINKED_CATEGORIES = frozenset({"MEDICAL_CONDITION", "DEVICE", "TEST_TREATMENT_PROCEDURE"})
_SYMPTOM_CODE = re.compile(r"^R(?:0[0-9]|1[0-9]|2[0-9]|5[0-9]|6[0-9])\.")


class NerBackend(Protocol):
    name: str

    def mentions(self, text: str, sentences: list[tuple[int, int]], doc: Any) -> list[Mention]: ...


class LexiconBackend:
    """Radiology lexicon concepts (regular expressions, data file) plus ICD-10-CM index terms (PhraseMatcher)."""

    name = "lexicon"

    def __init__(self, *, icd_terms: bool = True) -> None:
        self._icd_terms = icd_terms
        self._matcher: Any = None
        self._lock = threading.Lock()

    def _phrase_matcher(self, doc: Any) -> Any:
        with self._lock:
            if self._matcher is None:
                nlp, _ = assertion.pipeline()
                self._matcher = lexicon.phrase_matcher(nlp)
            return self._matcher

    def mentions(self, text: str, sentences: list[tuple[int, int]], doc: Any) -> list[Mention]:
        found = lexicon.lexicon_mentions(text, sentences)
        if not self._icd_terms:
            return found
        taken = [(m.start, m.end) for m in found]
        extra: list[Mention] = []
        matcher = self._phrase_matcher(doc)
        hits = sorted(matcher(doc), key=lambda h: -(h[2] - h[1]))
        for match_id, s, e in hits:
            span = doc[s:e]
            a, b = span.start_char, span.end_char
            if any(a < y and x < b for x, y in taken):
                continue
            taken.append((a, b))
            code = doc.vocab.strings[match_id]
            extra.append(Mention(span.text, a, b, "MEDICAL_CONDITION", "DX_NAME", 0.9, None, "present", code))
        return sorted(found + extra, key=lambda m: m.start)


@functools.lru_cache(maxsize=8)
def _transformer_backend(model: str, device: str | None) -> NerBackend:
    from medsearch_workers.nlp.transformer_ner import TransformerBackend

    return TransformerBackend(model, device=device)


def get_backend(name: str = "lexicon", model: str | None = None, *, device: str | None = None) -> NerBackend:
    if name == "lexicon":
        return _lexicon_backend()
    if name == "transformers":
        if not model:
            raise ValueError("the transformers NER backend needs a model name or path (--model / spec.nlp.model)")
        return _transformer_backend(model, device)
    raise ValueError(f"unknown NER backend {name!r} (expected 'lexicon' or 'transformers')")


@functools.lru_cache(maxsize=1)
def _lexicon_backend() -> LexiconBackend:
    return LexiconBackend()


@functools.lru_cache(maxsize=1)
def default_linker() -> IcdLinker:
    return IcdLinker()


class Analyzer:
    """Analyzes reports with one NER backend and one linker. Thread-safe; reuse one per process."""

    def __init__(
        self,
        backend: NerBackend | None = None,
        *,
        link: bool = True,
        linker: Any = None,
        indication_positive: bool = False,
    ) -> None:
        self.backend = backend or get_backend("lexicon")
        self.linker = linker if linker is not None else (default_linker() if link else LexicalOnlyLinker())
        self.indication_positive = indication_positive
        self._lock = threading.Lock()

    def analyze(self, text: str) -> ReportAnalysis:
        return self.analyze_many([text])[0]

    def analyze_many(self, texts: list[str]) -> list[ReportAnalysis]:
        """Analyze a batch; linking embeds all mentions of the batch in one call."""
        prepared = [self._prepare(t) for t in texts]
        many = getattr(self.backend, "mentions_many", None)
        if many is not None and len(texts) > 1:
            found = many(texts, [sent for _, sent, _ in prepared])
        else:
            found = [self.backend.mentions(t, sent, doc) for t, (_, sent, doc) in zip(texts, prepared, strict=True)]
        staged = [self._entities(t, p, m) for t, p, m in zip(texts, prepared, found, strict=True)]
        flat = [(e, q, c) for ents in staged for (e, q, c) in ents[1]]
        links = self.linker.link([(q, c) for _, q, c in flat]) if flat else []
        linked = [_with_links(e, lexical, cands) for (e, _, lexical), cands in zip(flat, links, strict=True)]
        out: list[ReportAnalysis] = []
        for text, (sections, ents) in zip(texts, staged, strict=True):
            out.append(self._rollup(sections, linked[:len(ents)], text))
            linked = linked[len(ents):]
        return out

    def _prepare(self, text: str) -> tuple[list[Section], list[tuple[int, int]], Any]:
        sections = split_sections(text)
        sentences: list[tuple[int, int]] = []
        for s in sections:
            sentences.extend(split_sentences(text, s.start, s.end))
        nlp, _ = assertion.pipeline()
        doc = nlp.make_doc(text)
        assertion.set_sentence_starts(doc, sentences)
        return sections, sentences, doc

    def _entities(
        self, text: str, prepared: tuple[list[Section], list[tuple[int, int]], Any], mentions: list[Mention]
    ) -> tuple[list[Section], list[tuple[Entity, str, str | None]]]:
        sections, sentences, doc = prepared
        spans = []
        kept: list[Mention] = []
        last_end = -1
        for m in sorted(mentions, key=lambda m: (m.start, -(m.end - m.start))):
            span = doc.char_span(m.start, m.end, label=m.concept or m.category, alignment_mode="expand")
            if span is None or span.start < last_end:
                continue
            last_end = span.end
            spans.append(span)
            kept.append(m)
        with self._lock:  # the ConText component keeps per-call state on the doc only, but be conservative
            traits_per_span = assertion.span_traits(doc, spans)
        concepts = lexicon.concept_by_id()
        out: list[tuple[Entity, str, str | None]] = []
        for m, names in zip(kept, traits_per_span, strict=True):
            if m.polarity == "absent":
                names.add(NEGATION)
            elif m.polarity == "uncertain":
                names.add(UNCERTAIN)
            concept = concepts.get(m.concept) if m.concept else None
            code = m.code
            if concept is None and self.backend.name != "lexicon" and m.category == "MEDICAL_CONDITION":
                concept = lexicon.concept_for_text(m.text)
                if concept is not None:
                    code = concept.code
                elif code is None:
                    code = lexicon.icd_index_terms().get(" ".join(m.text.lower().split()))
            kind = concept.trait if concept and concept.trait else _kind_for_code(code, m.category)
            traits = [Trait(n) for n in sorted(names)]
            if kind:
                traits.append(Trait(kind, 1.0 if concept else 0.8))
            section = next((s.name for s in sections if s.start <= m.start < max(s.end, s.start + 1)), "BODY")
            ent = Entity(
                text=m.text,
                start=m.start,
                end=m.end,
                category=m.category,
                type=m.type,
                score=m.score,
                section=section,
                traits=traits,
                concept=concept.id if concept else None,
                name=concept.name if concept else " ".join(m.text.lower().split()),
            )
            if m.category in LINKED_CATEGORIES and (code or (m.category == "MEDICAL_CONDITION" and concept is None)):
                sent = next((text[a:b] for a, b in sentences if a <= m.start < b), m.text)
                out.append((ent, _query(m.text, sent, concept), code))
            else:
                out.append((ent, "", None))
            out.extend(_also_entities(ent, concept, concepts, traits, text, sentences))
        return sections, [(e, q, c) if q else (e, q, None) for e, q, c in out]

    def _rollup(self, sections: list[Section], entities: list[Entity], text: str) -> ReportAnalysis:
        pos: dict[str, None] = {}
        neg: dict[str, None] = {}
        unc: dict[str, None] = {}
        facets: dict[str, dict[str, dict[str, None]]] = {
            k: {"pos": {}, "neg": {}} for k in (SIGN, DIAGNOSIS, SYMPTOM)
        }
        for e in entities:
            status = e.assertion
            if e.section in NON_FINDING_SECTIONS:
                continue
            kind = next((t.name for t in e.traits if t.name in (SIGN, DIAGNOSIS, SYMPTOM)), None)
            in_indication = e.section == INDICATION
            if in_indication and not self.indication_positive:
                # reasons for the exam are not findings; a symptom there is still the patient's symptom
                if kind == SYMPTOM and status == "present":
                    facets[SYMPTOM]["pos"][e.name] = None
                continue
            # symptoms are what the patient reports, not what the image shows: facets only, no finding codes
            code = e.code if kind != SYMPTOM else None
            # HISTORICAL ("history of X", "prior X") is the patient's past, not a finding of this study; a
            # present-but-old finding ("old healed rib fractures") carries no HISTORICAL trait.
            if status == "present":
                if code:
                    pos[code] = None
                if kind:
                    facets[kind]["pos"][e.name] = None
            elif status == "absent":
                if code:
                    neg[code] = None
                if kind:
                    facets[kind]["neg"][e.name] = None
            elif status == "uncertain" and code:
                unc[code] = None
        uncertain = [c for c in unc if c not in pos]
        negative = [c for c in neg if c not in pos and c not in unc]

        def pos_neg(kind: str) -> tuple[list[str], list[str]]:
            p = list(facets[kind]["pos"])
            return p, [n for n in facets[kind]["neg"] if n not in facets[kind]["pos"]]

        ps, ns = pos_neg(SIGN)
        pd, nd = pos_neg(DIAGNOSIS)
        py, ny = pos_neg(SYMPTOM)
        return ReportAnalysis(
            sections=sections_text(text, sections),
            entities=entities,
            icd10_positive=list(pos),
            icd10_negative=negative,
            icd10_uncertain=uncertain,
            positive_signs=ps,
            negative_signs=ns,
            positive_diagnoses=pd,
            negative_diagnoses=nd,
            positive_symptoms=py,
            negative_symptoms=ny,
            backend=self.backend.name,
        )


def _also_entities(
    ent: Entity,
    concept: lexicon.Concept | None,
    concepts: dict[str, lexicon.Concept],
    traits: list[Trait],
    text: str,
    sentences: list[tuple[int, int]],
) -> list[tuple[Entity, str, str | None]]:
    """The other concepts a mention asserts as well (lexicon ``also``: "kyphoscoliosis" → kyphosis), same status."""
    extras = lexicon.concept_extras().get(concept.id) if concept else None
    if extras is None or not extras.also:
        return []
    out: list[tuple[Entity, str, str | None]] = []
    sent = next((text[a:b] for a, b in sentences if a <= ent.start < b), ent.text)
    for cid in extras.also:
        other = concepts.get(cid)
        if other is None:
            continue
        kind = [Trait(other.trait, 1.0)] if other.trait else []
        assertion_traits = [t for t in traits if t.name not in (SIGN, DIAGNOSIS, SYMPTOM)]
        clone = Entity(
            text=ent.text, start=ent.start, end=ent.end, category=other.category, type=other.type, score=ent.score,
            section=ent.section, traits=assertion_traits + kind, concept=other.id, name=other.name,
        )  # fmt: skip
        code = other.code_for(side=None, plural=False)
        out.append((clone, _query(ent.text, sent, other), code) if code else (clone, "", None))
    return out


def _with_links(ent: Entity, lexical: str | None, cands: Sequence[IcdCandidate]) -> Entity:
    """``ent`` with its linked ICD-10-CM candidates and the code the roll-up uses: the lexical one, else for an
    entity of no lexicon concept a confident first candidate."""
    code = ent.code
    if lexical:
        code = lexical
    elif ent.concept is None and cands and cands[0].score >= ASSIGN_THRESHOLD:
        code = cands[0].code
    return replace(ent, icd10=list(cands), code=code)


def _kind_for_code(code: str | None, category: str) -> str | None:
    if category != "MEDICAL_CONDITION":
        return None
    if code and _SYMPTOM_CODE.match(code):
        return SYMPTOM if code[:3] in {"R05", "R06", "R07", "R50", "R04", "R09", "R53"} else SIGN
    return DIAGNOSIS


def _query(mention: str, sentence: str, concept: lexicon.Concept | None) -> str:
    """Linking query: the mention, plus laterality from its sentence where the mention lacks it."""
    q = mention
    low = sentence.lower()
    if not re.search(r"\b(?:left|right|bilateral)\b", mention, re.IGNORECASE):
        sides = [s for s in ("left", "right", "bilateral") if re.search(rf"\b{s}\b", low)]
        if len(sides) == 1:
            q = f"{sides[0]} {q}"
    return q


_default_lock = threading.Lock()


@functools.lru_cache(maxsize=8)
def _default_analyzer(backend: str, model: str | None, link: bool, indication_positive: bool) -> Analyzer:
    return Analyzer(get_backend(backend, model), link=link, indication_positive=indication_positive)


def analyze_report(
    text: str,
    *,
    backend: str = "lexicon",
    model: str | None = None,
    link: bool = True,
    indication_positive: bool = False,
) -> ReportAnalysis:
    """Analyze one report with a shared per-process analyzer (interface 5)."""
    with _default_lock:
        analyzer = _default_analyzer(backend, model, link, indication_positive)
    return analyzer.analyze(text)
