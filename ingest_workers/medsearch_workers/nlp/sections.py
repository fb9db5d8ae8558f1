"""Section and sentence splitting for radiology reports (pure functions on character offsets)."""

from __future__ import annotations

import re

from medsearch_workers.nlp.types import Section

# Header spelling -> canonical section name. Matched case-insensitively, followed by ':' (or alone on a line
# in upper case).
SECTION_ALIASES: dict[str, str] = {
    "findings": "FINDINGS",
    "finding": "FINDINGS",
    "report": "FINDINGS",
    "description": "FINDINGS",
    "impression": "IMPRESSION",
    "impressions": "IMPRESSION",
    "conclusion": "IMPRESSION",
    "conclusions": "IMPRESSION",
    "summary": "IMPRESSION",
    "opinion": "IMPRESSION",
    "diagnosis": "IMPRESSION",
    "indication": "INDICATION",
    "indications": "INDICATION",
    "clinical indication": "INDICATION",
    "reason for exam": "INDICATION",
    "reason for examination": "INDICATION",
    "reason for study": "INDICATION",
    "reason": "INDICATION",
    "history": "INDICATION",
    "clinical history": "INDICATION",
    "clinical information": "INDICATION",
    "clinical data": "INDICATION",
    "clinical details": "INDICATION",
    "clinical notes": "INDICATION",
    "clinical": "INDICATION",
    "medical condition": "INDICATION",
    "comparison": "COMPARISON",
    "comparisons": "COMPARISON",
    "prior": "COMPARISON",
    "priors": "COMPARISON",
    "technique": "TECHNIQUE",
    "procedure": "TECHNIQUE",
    "views": "TECHNIQUE",
    "examination": "EXAMINATION",
    "exam": "EXAMINATION",
    "study": "EXAMINATION",
    "type of examination": "EXAMINATION",
    "recommendation": "RECOMMENDATION",
    "recommendations": "RECOMMENDATION",
    "addendum": "ADDENDUM",
    "wet read": "WET_READ",
    "final report": "HEADER",
}
UNLABELED = "BODY"

_names = sorted(SECTION_ALIASES, key=len, reverse=True)
_alt = "|".join(re.escape(n).replace(r"\ ", r"\s+") for n in _names)
# A header: at the text start, a line start, or after a sentence end; name; optional '(S)'; ':' (or '-').
_HEADER = re.compile(
    rf"(?:(?<=^)|(?<=\n)|(?<=[.;]\s)|(?<=[.;]\s\s))[ \t]*(?P<name>{_alt})[ \t]*(?:\(s\))?[ \t]*(?::|-(?=\s))",
    re.IGNORECASE,
)
# An upper-case header alone on its line, without a colon ("FINDINGS\n").
_BARE_HEADER = re.compile(rf"(?:(?<=^)|(?<=\n))[ \t]*(?P<name>{_alt})[ \t]*(?=\n)", re.IGNORECASE)


def split_sections(text: str) -> list[Section]:
    """Split a report into sections. Text before the first header (or a report without headers) is ``BODY``.

    Each section's ``start``/``end`` are offsets into ``text`` of its body (without the header).
    """
    hits: list[tuple[int, int, str, str]] = []
    for m in _HEADER.finditer(text):
        hits.append((m.start("name"), m.end(), SECTION_ALIASES[_norm(m.group("name"))], m.group("name")))
    for m in _BARE_HEADER.finditer(text):
        if m.group("name").isupper():
            hits.append((m.start("name"), m.end(), SECTION_ALIASES[_norm(m.group("name"))], m.group("name")))
    hits.sort()
    sections: list[Section] = []
    pos = 0
    current, header = UNLABELED, ""
    for h_start, h_end, name, raw in hits:
        if h_start < pos:
            continue
        _append(sections, text, current, pos, h_start, header)
        current, header, pos = name, raw, h_end
    _append(sections, text, current, pos, len(text), header)
    return sections


def _norm(name: str) -> str:
    return " ".join(name.lower().split())


def _append(out: list[Section], text: str, name: str, start: int, end: int, header: str) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start or header:
        out.append(Section(name=name, start=start, end=end, header=header))


def sections_text(text: str, sections: list[Section]) -> dict[str, str]:
    """``{section name: text}``; repeated sections are joined with a blank line."""
    out: dict[str, str] = {}
    for s in sections:
        body = text[s.start : s.end]
        out[s.name] = f"{out[s.name]}\n\n{body}" if out.get(s.name) else body
    return out


_ABBREVIATIONS = {
    "dr", "mr", "mrs", "ms", "vs", "e.g", "i.e", "approx", "no", "fig", "st", "cm", "mm", "etc", "pt", "sq", "ap",
    "pa", "lat", "min", "max", "incl", "resp", "hx", "sx", "dx", "tx", "ca",
}  # fmt: skip
_TITLES = {"dr", "mr", "mrs", "ms", "st", "vs", "e.g", "i.e"}
_SENT_END = re.compile(r"(?:[.!?]+|;)(?=[\s\"')\]]|$)|\n[ \t]*\n|\n(?=[ \t]*(?:\d{1,2}[.)]\s|[-*•]\s))")


def split_sentences(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Sentence spans ``(start, end)`` within ``text[start:end]`` (offsets into ``text``), trimmed.

    Ends at '.', '!', '?', ';' followed by space, at blank lines and before list items; not after common
    abbreviations ("vs.", "Dr.") or inside numbers ("1.5 cm").
    """
    stop = len(text) if end is None else end
    spans: list[tuple[int, int]] = []
    pos = start
    for m in _SENT_END.finditer(text, start, stop):
        if m.group(0).startswith("."):
            if re.fullmatch(r"\s*\(?\d{1,2}|\s*[A-Za-z]", text[pos : m.start()]):
                continue  # a list marker ("1.", "a.")
            word = re.search(r"([A-Za-z.]+)$", text[pos : m.start()])
            if word and word.group(1).lower().rstrip(".") in _ABBREVIATIONS and len(word.group(1)) <= 6:
                nxt = text[m.end() : m.end() + 3].lstrip()
                if word.group(1).lower() in _TITLES or nxt[:1].islower() or nxt[:1].isdigit():
                    continue
        _add_span(spans, text, pos, m.end())
        pos = m.end()
    _add_span(spans, text, pos, stop)
    return spans


def _add_span(spans: list[tuple[int, int]], text: str, a: int, b: int) -> None:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    if b > a and any(ch.isalnum() for ch in text[a:b]):
        spans.append((a, b))
