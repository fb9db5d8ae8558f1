"""Assertion status per mention with medspaCy's ConText, driven by radiology rules kept as data.

Rules: ``medsearch_workers/data/nlp/context_rules.yaml`` (medspaCy ``ConTextRule`` dicts). The spaCy pipeline is
a blank English tokenizer; sentence boundaries come from :mod:`medsearch_workers.nlp.sections`, so a modifier's
scope never crosses a sentence or a section.
"""

from __future__ import annotations

import bisect
import functools
import re
import threading
from collections import OrderedDict
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from medsearch_workers.nlp.types import FAMILY, HISTORICAL, HYPOTHETICAL, NEGATION, UNCERTAIN

RULES_FILE = "context_rules.yaml"
CATEGORY_TRAITS = {
    "NEGATED_EXISTENCE": NEGATION,
    "POSSIBLE_EXISTENCE": UNCERTAIN,
    "HYPOTHETICAL": HYPOTHETICAL,
    "HISTORICAL": HISTORICAL,
    "FAMILY": FAMILY,
}


# A category that asserts nothing and only ends the scope of rules naming it in ``terminated_by`` (a comma ends
# the scope of backward uncertainty cues).
BOUNDARY = "BOUNDARY"


class ContextRulesError(ValueError):
    """The ConText rule file is invalid (names the rule)."""


def load_rule_dicts(path: str | Path | None = None) -> list[dict[str, Any]]:
    if path is None:
        raw = resources.files("medsearch_workers.data.nlp").joinpath(RULES_FILE).read_text(encoding="utf-8")
        where = RULES_FILE
    else:
        raw = Path(path).read_text(encoding="utf-8")
        where = str(path)
    data = yaml.safe_load(raw)
    rules = data.get("context_rules") if isinstance(data, dict) else None
    if not isinstance(rules, list):
        raise ContextRulesError(f"{where}: expected a mapping with a 'context_rules' list")
    for i, r in enumerate(rules):
        if not isinstance(r, dict) or not r.get("literal") or not r.get("category"):
            raise ContextRulesError(f"{where}: rule #{i} needs 'literal' and 'category' ({r!r})")
        after = r.get("unless_after")
        if after is not None and (not isinstance(after, list) or not all(isinstance(a, str) and a for a in after)):
            raise ContextRulesError(f"{where}: rule #{i} ({r['literal']!r}): 'unless_after' must be a list of words")
        if _has_non_string(r.get("pattern")):
            raise ContextRulesError(
                f"{where}: rule #{i} ({r['literal']!r}): a pattern value is not a string (quote yes/no/on/off in YAML)"
            )
        cat = str(r["category"])
        if cat not in CATEGORY_TRAITS and cat not in ("PSEUDO", "TERMINATE", BOUNDARY):
            raise ContextRulesError(f"{where}: rule #{i} ({r['literal']!r}): unknown category {cat!r}")
    return [dict(r) for r in rules]


def _has_non_string(pattern: Any) -> bool:
    if isinstance(pattern, bool):
        return True
    if isinstance(pattern, dict):
        return any(_has_non_string(v) for k, v in pattern.items() if k != "OP") or any(
            isinstance(k, bool) for k in pattern
        )
    if isinstance(pattern, list):
        return any(_has_non_string(v) for v in pattern)
    return False


_build_lock = threading.Lock()


@functools.lru_cache(maxsize=4)
def _pipeline(rules_path: str | None) -> tuple[Any, Any]:
    import spacy
    from medspacy.context import ConText, ConTextRule  # registers the "medspacy_context" factory

    nlp = spacy.blank("en")
    context = ConText(nlp, rules=None, prune_on_target_overlap=True)
    rules = []
    for r in load_rule_dicts(rules_path):
        try:
            # medspaCy's from_dict does not take terminated_by (its constructor does)
            base = {k: v for k, v in r.items() if k not in ("terminated_by", "unless_after")}
            rule = ConTextRule.from_dict(base)
            if r.get("terminated_by"):
                rule.terminated_by = {str(c).upper() for c in r["terminated_by"]}
            if r.get("unless_after"):
                rule.on_modifies = _unless_after(r["unless_after"])
            rules.append(rule)
        except (ValueError, TypeError, KeyError) as err:
            raise ContextRulesError(f"ConText rule {r.get('literal')!r}: {err}") from None
    context.add(rules)
    return nlp, context


# How many tokens before a target ``unless_after`` looks at.
UNLESS_AFTER_WINDOW = 3


def _unless_after(words: list[str]) -> Any:
    """``on_modifies`` callback: a modifier does not reach back to a target that one of ``words`` introduces
    ("likely atelectasis or scarring": the "or" leaves atelectasis, which "likely" commits to, present)."""
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(w.lower()) for w in words) + r")\s*$")

    def on_modifies(target: Any, modifier: Any, _between: Any) -> bool:
        if target.start >= modifier.start:
            return True  # a target after the cue: the rule applies as usual
        before = target.doc[max(target.sent.start, target.start - UNLESS_AFTER_WINDOW) : target.start]
        return pattern.search(before.text.lower()) is None

    return on_modifies


def pipeline(rules_path: str | None = None) -> tuple[Any, Any]:
    """``(nlp, context)``: a blank spaCy English tokenizer and a ConText component with the radiology rules."""
    with _build_lock:
        return _pipeline(rules_path)


def set_sentence_starts(doc: Any, sentences: list[tuple[int, int]]) -> None:
    starts = {a for a, _ in sentences}
    ends = sorted(b for _, b in sentences)

    for tok in doc:
        if tok.i == 0:
            tok.is_sent_start = True
            continue
        # a token starts a sentence if a sentence starts at/before it and after the previous token
        prev = doc[tok.i - 1]
        k = bisect.bisect_right(ends, prev.idx)
        boundary = k < len(ends) and ends[k] <= tok.idx
        tok.is_sent_start = bool(boundary or tok.idx in starts)


# Sentence-level results of ConText, keyed by the sentence text and its targets: radiology reports repeat the
# same sentences ("No pneumothorax.", "The lungs are clear.") and a modifier's scope never leaves its sentence.
SENTENCE_CACHE_SIZE = 50_000
_SentenceKey = tuple[str | None, str, tuple[tuple[int, int, str], ...]]
_sentence_cache: OrderedDict[_SentenceKey, tuple[frozenset[str], ...]] = OrderedDict()
_cache_lock = threading.Lock()


def span_traits(doc: Any, spans: list[Any], rules_path: str | None = None) -> list[set[str]]:
    """The assertion traits ConText gives each of ``spans`` (non-overlapping, ordered spans of ``doc``, whose
    sentence starts are set), computed sentence by sentence on a copy of the sentence and cached per sentence.
    A span that crosses a sentence boundary makes the whole doc run at once instead (no cache)."""
    _, context = pipeline(rules_path)
    starts = [t.i for t in doc if t.is_sent_start] or [0]
    bounds = [*starts[1:], len(doc)]
    groups: dict[int, list[int]] = {}
    for i, sp in enumerate(spans):
        k = bisect.bisect_right(starts, sp.start) - 1
        if sp.end > bounds[k]:
            return _whole_doc_traits(doc, spans, context)
        groups.setdefault(k, []).append(i)
    out: list[set[str]] = [set() for _ in spans]
    for k, idxs in groups.items():
        sent = doc[starts[k] : bounds[k]]
        targets = tuple((spans[i].start - sent.start, spans[i].end - sent.start, spans[i].label_) for i in idxs)
        key: _SentenceKey = (rules_path, sent.text, targets)
        with _cache_lock:
            cached = _sentence_cache.get(key)
            if cached is not None:
                _sentence_cache.move_to_end(key)
        if cached is None:
            from spacy.tokens import Span

            sub = sent.as_doc()
            sub.ents = [Span(sub, a, b, label=label) for a, b, label in targets]
            context(sub)
            cached = tuple(frozenset(traits_of(e)) for e in sub.ents)
            with _cache_lock:
                _sentence_cache[key] = cached
                if len(_sentence_cache) > SENTENCE_CACHE_SIZE:
                    _sentence_cache.popitem(last=False)
        for i, names in zip(idxs, cached, strict=True):
            out[i] = set(names)
    return out


def _whole_doc_traits(doc: Any, spans: list[Any], context: Any) -> list[set[str]]:
    doc.ents = spans
    context(doc)
    return [traits_of(e) for e in doc.ents]


def traits_of(ent: Any) -> set[str]:
    """Assertion traits a ConText-processed span carries."""
    out: set[str] = set()
    for mod in getattr(ent._, "modifiers", ()) or ():
        trait = CATEGORY_TRAITS.get(mod.category)
        if trait:
            out.add(trait)
    return out
