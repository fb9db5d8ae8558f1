"""Pure ranking helpers: reciprocal-rank fusion, cursors, highlighted snippets."""

from __future__ import annotations

import base64
import binascii
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass

from medsearch_api.filters import query_tokens

RRF_K = 60


def rrf(rankings: Sequence[Sequence[str]], *, k: int = RRF_K) -> list[tuple[str, float]]:
    """Reciprocal-rank fusion: score(d) = sum over rankings of 1 / (k + rank), rank from 1. Ties keep the
    order of first appearance, so the result is deterministic."""
    scores: dict[str, float] = {}
    order: dict[str, int] = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
            order.setdefault(doc, len(order))
    return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))


class CursorError(ValueError):
    pass


_CURSOR_PREFIX = "o:"


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{offset}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    """The offset AFTER the item the cursor points at (so ``after: cursor`` continues past it)."""
    if cursor is None:
        return 0
    try:
        pad = "=" * (-len(cursor) % 4)
        raw = base64.urlsafe_b64decode(cursor + pad).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as err:
        raise CursorError(f"after: {cursor[:40]!r} is not a cursor from this API") from err
    if not raw.startswith(_CURSOR_PREFIX) or not raw[len(_CURSOR_PREFIX):].isdigit():
        raise CursorError(f"after: {cursor[:40]!r} is not a cursor from this API")
    return int(raw[len(_CURSOR_PREFIX):]) + 1


@dataclass(frozen=True)
class Snippet:
    text: str
    highlights: tuple[tuple[int, int], ...]  # [start, end) offsets into ``text``

    def html(self, tag: str = "mark") -> str:
        out: list[str] = []
        pos = 0
        for s, e in self.highlights:
            out.append(html.escape(self.text[pos:s]))
            out.append(f"<{tag}>{html.escape(self.text[s:e])}</{tag}>")
            pos = e
        out.append(html.escape(self.text[pos:]))
        return "".join(out)


_WS = re.compile(r"\s+")


def densest_start(starts: list[int], width: int) -> int:
    """The first of the sorted match ``starts`` whose window ``[start, start + width)`` holds the most matches,
    in one sliding pass (linear in the matches; a long report with a common word has thousands)."""
    best, best_n, j = starts[0], 0, 0
    for i, s in enumerate(starts):
        j = max(j, i)
        while j < len(starts) and starts[j] < s + width:
            j += 1
        if j - i > best_n:
            best, best_n = s, j - i
    return best


def make_snippet(text: str, query: str | None, *, width: int = 200) -> Snippet:
    """A window of about ``width`` characters of ``text`` around the densest cluster of query-token matches,
    with the match offsets. Without matches: the start of the text."""
    flat = _WS.sub(" ", text).strip()
    toks = query_tokens(query or "")
    matches: list[tuple[int, int]] = []
    if toks:
        pattern = re.compile(r"\b(" + "|".join(re.escape(t) for t in toks) + r")\b", re.IGNORECASE)
        matches = [(m.start(), m.end()) for m in pattern.finditer(flat)]
    if len(flat) <= width:
        start, end = 0, len(flat)
    elif not matches:
        start, end = 0, width
    else:
        best = densest_start([s for s, _ in matches], width)
        start = max(0, best - width // 4)
        end = min(len(flat), start + width)
        start = max(0, end - width)
        # do not cut words at the edges
        if start > 0:
            sp = flat.find(" ", start)
            if sp != -1 and sp < best:
                start = sp + 1
        if end < len(flat):
            sp = flat.rfind(" ", start, end)
            if sp > start:
                end = sp
    window = flat[start:end]
    hl = tuple((s - start, e - start) for s, e in matches if s >= start and e <= end)
    prefix = "… " if start > 0 else ""
    suffix = " …" if end < len(flat) else ""
    shift = len(prefix)
    return Snippet(prefix + window + suffix, tuple((s + shift, e + shift) for s, e in hl))
