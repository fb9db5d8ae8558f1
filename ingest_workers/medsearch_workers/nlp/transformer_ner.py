"""The ``transformers`` NER backend: any Hugging Face token-classification model, by hub name or local path.

- Long reports are split into overlapping windows (``max_length`` tokens, ``stride`` tokens of overlap); every
  token takes its prediction from the window in which it is most central, so entities that straddle a window
  boundary are recovered whole.
- Windows are run in batches (``batch_size``) under ``torch.inference_mode``.
- Tokens are grouped into words through the fast tokenizer's character offsets (a word takes the label of its
  first sub-token), words into entities by IOB/BIO tags (``B-X``/``I-X``) or plain labels (``X``); spans are
  character offsets into the original text.
- Labels map to Comprehend-style categories (:data:`CATEGORY_ALIASES`); RadGraph-style observation labels
  carry an assertion (``OBS-DA`` → absent, ``OBS-U`` → uncertain) that becomes the mention's polarity.
Nothing is downloaded unless the name is not a local path and the hub is reachable (``HF_HUB_OFFLINE=1``
forbids it).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medsearch_workers.nlp.types import Mention

log = logging.getLogger(__name__)

CATEGORY_ALIASES: dict[str, str] = {
    "MEDICAL_CONDITION": "MEDICAL_CONDITION",
    "PROBLEM": "MEDICAL_CONDITION",
    "DISEASE": "MEDICAL_CONDITION",
    "DISORDER": "MEDICAL_CONDITION",
    "DISEASE_DISORDER": "MEDICAL_CONDITION",
    "FINDING": "MEDICAL_CONDITION",
    "OBSERVATION": "MEDICAL_CONDITION",
    "CONDITION": "MEDICAL_CONDITION",
    "SIGN_SYMPTOM": "MEDICAL_CONDITION",
    "SIGN": "MEDICAL_CONDITION",
    "SYMPTOM": "MEDICAL_CONDITION",
    "DX_NAME": "MEDICAL_CONDITION",
    "OBS": "MEDICAL_CONDITION",
    "OBS-DP": "MEDICAL_CONDITION",
    "OBS-DA": "MEDICAL_CONDITION",
    "OBS-U": "MEDICAL_CONDITION",
    "ANATOMY": "ANATOMY",
    "ANAT": "ANATOMY",
    "ANAT-DP": "ANATOMY",
    "BODY_PART": "ANATOMY",
    "BIOLOGICAL_STRUCTURE": "ANATOMY",
    "SYSTEM_ORGAN_SITE": "ANATOMY",
    "TEST_TREATMENT_PROCEDURE": "TEST_TREATMENT_PROCEDURE",
    "TEST": "TEST_TREATMENT_PROCEDURE",
    "TREATMENT": "TEST_TREATMENT_PROCEDURE",
    "PROCEDURE": "TEST_TREATMENT_PROCEDURE",
    "DIAGNOSTIC_PROCEDURE": "TEST_TREATMENT_PROCEDURE",
    "THERAPEUTIC_PROCEDURE": "TEST_TREATMENT_PROCEDURE",
    "DEVICE": "DEVICE",
    "MEDICATION": "MEDICATION",
    "DRUG": "MEDICATION",
    "CHEMICAL": "MEDICATION",
}
_POLARITY = {"OBS-DA": "absent", "OBS-U": "uncertain"}


def split_label(label: str) -> tuple[str, str]:
    """``"B-PROBLEM"`` → ``("B", "PROBLEM")``; ``"O"`` → ``("O", "")``; ``"PROBLEM"`` → ``("", "PROBLEM")``."""
    if label in ("O", "", "0"):
        return "O", ""
    for sep in ("-", "_"):
        head, _, rest = label.partition(sep)
        if head in ("B", "I", "E", "S", "L", "U") and rest:
            return head, rest
    return "", label


def category_for(entity_type: str) -> str:
    return CATEGORY_ALIASES.get(entity_type.upper(), "OTHER")


@dataclass(frozen=True)
class TokenPrediction:
    start: int
    end: int
    label: str
    score: float


def merge_windows(windows: list[tuple[list[tuple[int, int]], NDArray[Any]]]) -> list[tuple[int, int, NDArray[Any]]]:
    """Per token (by character span) the probabilities from the window where it is most central.

    ``windows``: for each window, the character offsets of its tokens (``(0, 0)`` for special tokens) and a
    ``[tokens, labels]`` probability array.
    """
    best: dict[tuple[int, int], tuple[int, NDArray[Any]]] = {}
    for offsets, probs in windows:
        content = [i for i, (a, b) in enumerate(offsets) if b > a]
        if not content:
            continue
        lo, hi = content[0], content[-1]
        for i in content:
            key = offsets[i]
            centrality = min(i - lo, hi - i)
            prev = best.get(key)
            if prev is None or centrality > prev[0]:
                best[key] = (centrality, probs[i])
    return [(a, b, p) for (a, b), (_, p) in sorted(best.items())]


def group_entities(text: str, tokens: list[TokenPrediction]) -> list[Mention]:
    """Tokens → words (first sub-token's label) → entities (BIO or plain labels) with character spans."""
    words: list[TokenPrediction] = []
    for tok in tokens:
        if (
            words
            and tok.start == words[-1].end
            and tok.start > 0
            and text[tok.start - 1].isalnum()
            and text[tok.start : tok.start + 1].isalnum()
        ):  # a continuation sub-token of the same word
            w = words[-1]
            words[-1] = TokenPrediction(w.start, max(w.end, tok.end), w.label, w.score)
        else:
            words.append(tok)
    mentions: list[Mention] = []
    cur: dict[str, Any] | None = None

    def close() -> None:
        nonlocal cur
        if cur is not None:
            etype = cur["type"]
            mentions.append(
                Mention(
                    text=text[cur["start"] : cur["end"]],
                    start=cur["start"],
                    end=cur["end"],
                    category=category_for(etype),
                    type=etype,
                    score=float(np.mean(cur["scores"])),
                    polarity=_POLARITY.get(etype.upper(), "present"),  # type: ignore[arg-type]  # literal values
                )
            )
            cur = None

    for w in words:
        tag, etype = split_label(w.label)
        if tag == "O":
            close()
            continue
        gap = text[cur["end"] : w.start] if cur is not None else ""
        continues = (
            cur is not None
            and cur["type"] == etype
            and tag in ("I", "E", "L", "")
            and (gap.strip() == "" or gap.strip() in ("-", "/"))
        )
        if continues:
            assert cur is not None
            cur["end"] = w.end
            cur["scores"].append(w.score)
        else:
            close()
            cur = {"start": w.start, "end": w.end, "type": etype, "scores": [w.score]}
        if tag in ("E", "L", "S", "U"):
            close()
    close()
    return mentions


class TransformerBackend:
    """Token-classification NER with any Hugging Face model (fast tokenizer required for offsets)."""

    name = "transformers"

    def __init__(
        self,
        model: str,
        *,
        device: str | None = None,
        max_length: int | None = None,
        stride: int | None = None,
        batch_size: int = 8,
    ) -> None:
        try:
            import torch
            from transformers import AutoModelForTokenClassification, AutoTokenizer
        except ImportError as err:
            raise ImportError(
                "the transformers NER backend needs Hugging Face transformers and torch "
                "(pip install 'medsearch-workers[ner]'); the default lexicon backend needs neither"
            ) from err

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model)
            self.model = AutoModelForTokenClassification.from_pretrained(model)
        except OSError as err:
            raise OSError(f"cannot load token-classification model {model!r}: {err}") from err
        if not getattr(self.tokenizer, "is_fast", False):
            raise ValueError(f"model {model!r}: a fast tokenizer is needed for character offsets")
        self.model_name = model
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
        self.id2label = {int(k): str(v) for k, v in self.model.config.id2label.items()}
        limit = int(getattr(self.model.config, "max_position_embeddings", 512) or 512)
        tok_max = int(getattr(self.tokenizer, "model_max_length", limit) or limit)
        self.max_length = max_length or min(limit, tok_max, 512)
        special = self.tokenizer.num_special_tokens_to_add(pair=False)
        if self.max_length - special < 4:
            raise ValueError(f"max_length {self.max_length} leaves no room for tokens")
        self.stride = stride if stride is not None else max(1, (self.max_length - special) // 4)
        if self.stride >= self.max_length - special:
            raise ValueError(f"stride {self.stride} must be smaller than max_length - {special} special tokens")
        self.batch_size = batch_size
        self._lock = threading.Lock()

    def token_predictions(self, text: str) -> list[TokenPrediction]:
        return self.token_predictions_many([text])[0]

    def token_predictions_many(self, texts: list[str]) -> list[list[TokenPrediction]]:
        """Token predictions per text; the windows of all texts are run together in batches."""
        import torch

        enc = self.tokenizer(
            texts,
            return_offsets_mapping=True,
            return_overflowing_tokens=True,
            truncation=True,
            max_length=self.max_length,
            stride=self.stride,
            padding=True,
            return_special_tokens_mask=True,
        )
        n = len(enc["input_ids"])
        owner = enc["overflow_to_sample_mapping"] if "overflow_to_sample_mapping" in enc else [0] * n
        windows: list[list[tuple[list[tuple[int, int]], NDArray[Any]]]] = [[] for _ in texts]
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        with self._lock, torch.inference_mode():
            for i in range(0, n, self.batch_size):
                batch = {k: torch.tensor(enc[k][i : i + self.batch_size], device=self.device) for k in keys}
                logits = self.model(**batch).logits
                probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
                for j in range(probs.shape[0]):
                    offsets = [
                        (0, 0) if special else (int(a), int(b))
                        for (a, b), special in zip(
                            enc["offset_mapping"][i + j], enc["special_tokens_mask"][i + j], strict=True
                        )
                    ]
                    windows[int(owner[i + j])].append((offsets, probs[j]))
        out: list[list[TokenPrediction]] = []
        for per_text in windows:
            preds = []
            for a, b, p in merge_windows(per_text):
                k = int(np.argmax(p))
                preds.append(TokenPrediction(a, b, self.id2label.get(k, "O"), float(p[k])))
            out.append(preds)
        return out

    def mentions_many(self, texts: list[str], sentences: list[list[tuple[int, int]]]) -> list[list[Mention]]:
        todo = [i for i, t in enumerate(texts) if t.strip()]
        preds = self.token_predictions_many([texts[i] for i in todo]) if todo else []
        out: list[list[Mention]] = [[] for _ in texts]
        for i, p in zip(todo, preds, strict=True):
            out[i] = group_entities(texts[i], p)
        return out

    def mentions(self, text: str, sentences: list[tuple[int, int]], doc: Any) -> list[Mention]:
        if not text.strip():
            return []
        return group_entities(text, self.token_predictions(text))
