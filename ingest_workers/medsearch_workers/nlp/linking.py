"""ICD-10-CM linking: ranked top-k ``{code, description, score}`` per condition mention.

Candidates come from two sources and are merged:
- lexical: the code the lexicon concept (or the ICD-10-CM index term) names for the mention, laterality-refined;
  scored ``LEXICAL_SCORE`` (an exact, curated match), followed by the codes whose descriptions are nearest to
  its own (precomputed, so lexically coded mentions need no embedding at analysis time);
- semantic: cosine similarity between the MiniLM embedding of the mention (plus laterality from its sentence)
  and the embeddings of the descriptions of billable chest-relevant codes (:func:`lexicon.chest_codes`). Only
  candidates at or above ``LINK_THRESHOLD`` are kept.
The code-description embeddings are computed once and cached as ``.npy`` under the cache directory
(``$MEDSEARCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/medsearch``, else ``~/.cache/medsearch``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medsearch_workers.nlp.lexicon import chest_codes, icd_description
from medsearch_workers.nlp.types import IcdCandidate

log = logging.getLogger(__name__)

TOP_K = 5
LEXICAL_SCORE = 0.95
# Cosine similarity below which a semantic candidate is dropped. ``bench/nlp_eval.py --calibrate`` prints the
# evidence: phrases that name no condition ("the patient enjoys gardening", "portable technique") reach at most
# ~0.46 against the chest code table, while the median gold mention reaches ~0.6 against its gold code. Raw
# mention embeddings alone rank the gold code first for only ~1/3 of mentions, which is why a lexical match
# (lexicon concept or ICD-10-CM index term) always outranks them and is what the report roll-up uses.
LINK_THRESHOLD = 0.5

EmbedFn = Callable[[list[str]], NDArray[Any]]


def cache_dir() -> Path:
    env = os.environ.get("MEDSEARCH_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "medsearch"


def _default_embed(texts: list[str]) -> NDArray[Any]:
    from medsearch.text_embedding import embed_texts

    return embed_texts(texts, batch_size=64)


class IcdLinker:
    """Thread-safe linker with a per-process LRU cache of mention embeddings."""

    def __init__(
        self,
        embed: EmbedFn | None = None,
        *,
        cache: Path | None = None,
        max_cached: int = 20000,
        table: tuple[tuple[str, str], ...] | None = None,
    ) -> None:
        self._embed = embed or _default_embed
        self._table_source = table
        self._cache_dir = cache or cache_dir()
        self._codes: list[str] = []
        self._descs: list[str] = []
        self._matrix: NDArray[Any] | None = None
        self._lock = threading.Lock()
        self._mention_cache: OrderedDict[str, NDArray[Any]] = OrderedDict()
        self._neighbour_cache: dict[str, list[tuple[str, float]]] = {}
        self._max_cached = max_cached

    def _table(self) -> tuple[list[str], NDArray[Any]]:
        if self._matrix is not None:
            return self._codes, self._matrix
        with self._lock:
            if self._matrix is None:
                table = self._table_source if self._table_source is not None else chest_codes()
                codes = [c for c, _ in table]
                descs = [d for _, d in table]
                digest = hashlib.sha256("\n".join(f"{c}\t{d}" for c, d in table).encode()).hexdigest()[:16]
                path = self._cache_dir / f"icd10cm-chest-minilm-{digest}.npy"
                matrix: NDArray[Any] | None = None
                if path.exists():
                    try:
                        matrix = np.load(path)
                        if matrix.shape[0] != len(codes):
                            matrix = None
                    except (OSError, ValueError):
                        matrix = None
                if matrix is None:
                    log.info("embedding %d ICD-10-CM descriptions (once; cached at %s)", len(codes), path)
                    matrix = np.asarray(self._embed(descs), dtype=np.float32)
                    try:
                        path.parent.mkdir(parents=True, exist_ok=True)
                        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
                        np.save(tmp, matrix)
                        os.replace(tmp, path)
                    except OSError as err:
                        log.warning("cannot cache ICD-10-CM embeddings at %s: %s", path, err)
                self._codes, self._descs, self._matrix = codes, descs, matrix
        assert self._matrix is not None
        return self._codes, self._matrix

    def _vectors(self, queries: list[str]) -> NDArray[Any]:
        missing = [q for q in dict.fromkeys(queries) if q not in self._mention_cache]
        if missing:
            vecs = np.asarray(self._embed(missing), dtype=np.float32)
            with self._lock:
                for q, v in zip(missing, vecs, strict=True):
                    self._mention_cache[q] = v
                    if len(self._mention_cache) > self._max_cached:
                        self._mention_cache.popitem(last=False)
        with self._lock:
            return np.stack([self._mention_cache.get(q, np.zeros(0)) for q in queries]) if queries else np.zeros(
                (0, 0), dtype=np.float32
            )

    def link(self, mentions: list[tuple[str, str | None]], *, top_k: int = TOP_K) -> list[list[IcdCandidate]]:
        """For each ``(query text, lexical code or None)`` the ranked candidates (possibly empty).

        A mention with a lexical code gets that code first (``LEXICAL_SCORE``) and, as alternatives, the codes
        whose descriptions are nearest to that code's description (precomputed, no mention embedding needed);
        a mention without one is embedded and ranked against every code description.
        """
        if not mentions:
            return []
        codes, matrix = self._table()
        index = {c: i for i, c in enumerate(codes)}
        free = [i for i, (_, code) in enumerate(mentions) if not code or code not in index]
        sims_free: dict[int, NDArray[Any]] = {}
        if free:
            queries = [" ".join(mentions[i][0].lower().split()) for i in free]
            vecs = self._vectors(queries)
            for i, row in zip(free, vecs @ matrix.T, strict=True):
                sims_free[i] = row
        out: list[list[IcdCandidate]] = []
        for i, (_, lexical) in enumerate(mentions):
            cands: dict[str, float] = {}
            if lexical:
                cands[lexical] = LEXICAL_SCORE
            if i in sims_free:
                row = sims_free[i]
                for j in np.argsort(-row)[: top_k + 1]:
                    score = float(row[j])
                    if score < LINK_THRESHOLD:
                        break
                    code = codes[j]
                    if code not in cands:
                        # a lexical match outranks every semantic neighbour
                        cands[code] = min(score, LEXICAL_SCORE - 0.01) if lexical else score
            else:
                assert lexical is not None
                for code, score in self._neighbours(lexical, index, codes, matrix, top_k):
                    cands.setdefault(code, min(score, LEXICAL_SCORE - 0.01))
            ranked = sorted(cands.items(), key=lambda kv: -kv[1])[:top_k]
            out.append([IcdCandidate(c, icd_description(c), s) for c, s in ranked])
        return out

    def _neighbours(
        self, code: str, index: dict[str, int], codes: list[str], matrix: NDArray[Any], top_k: int
    ) -> list[tuple[str, float]]:
        with self._lock:
            hit = self._neighbour_cache.get(code)
        if hit is None:
            row = matrix @ matrix[index[code]]
            hit = [
                (codes[j], float(row[j]))
                for j in np.argsort(-row)[: top_k + 1]
                if codes[j] != code and float(row[j]) >= LINK_THRESHOLD
            ][: top_k - 1]
            with self._lock:
                self._neighbour_cache[code] = hit
        return hit


class LexicalOnlyLinker:
    """No embeddings: only the lexical code (fast path for benchmarks and ``--no-link``)."""

    def link(self, mentions: list[tuple[str, str | None]], *, top_k: int = TOP_K) -> list[list[IcdCandidate]]:
        return [[IcdCandidate(code, icd_description(code), LEXICAL_SCORE)] if code else [] for _, code in mentions]
