"""The transformers NER backend with a token-classification model this test builds and trains itself (a tiny
BERT, a word-level vocabulary, ~seconds of training on generated sentences): never downloaded.

Checks that character spans are recovered exactly — sub-word tokens grouped into words, BIO tags into
entities — on a long report cut into many overlapping windows, including entities that no single window holds.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from medsearch_workers.nlp.transformer_ner import (  # noqa: E402 - after the importorskip guards
    TokenPrediction,
    TransformerBackend,
    group_entities,
    merge_windows,
    split_label,
)

LABELS = ["O", "B-MEDICAL_CONDITION", "I-MEDICAL_CONDITION", "B-ANATOMY", "I-ANATOMY"]
# phrase -> per-word labels; "pneumothorax" is not in the vocabulary: WordPiece splits it (pneumo ##thorax)
ENTITIES = {
    "pleural effusion": ["B-MEDICAL_CONDITION", "I-MEDICAL_CONDITION"],
    "pulmonary edema": ["B-MEDICAL_CONDITION", "I-MEDICAL_CONDITION"],
    "pneumothorax": ["B-MEDICAL_CONDITION"],
    "cardiomegaly": ["B-MEDICAL_CONDITION"],
    "atelectasis": ["B-MEDICAL_CONDITION"],
    "consolidation": ["B-MEDICAL_CONDITION"],
    "lung": ["B-ANATOMY"],
    "heart": ["B-ANATOMY"],
    "lower lobe": ["B-ANATOMY", "I-ANATOMY"],
    "left upper lobe": ["B-ANATOMY", "I-ANATOMY", "I-ANATOMY"],
    "chronic obstructive airway disease": ["B-MEDICAL_CONDITION"] + ["I-MEDICAL_CONDITION"] * 3,
}
FILLER = "there is a small no the in with mild right and of seen stable new moderate".split()
CATEGORY = {"MEDICAL_CONDITION": "MEDICAL_CONDITION", "ANATOMY": "ANATOMY"}


def make_text(rng: random.Random, sentences: int) -> tuple[str, list[tuple[int, int, str]]]:
    """Random sentences and the gold entity spans (start, end, type)."""
    text = ""
    spans: list[tuple[int, int, str]] = []
    for _ in range(sentences):
        words: list[str | tuple[str, str]] = []
        for _ in range(rng.randint(3, 7)):
            if rng.random() < 0.35:
                phrase = rng.choice(sorted(ENTITIES))
                words.append((phrase, ENTITIES[phrase][0].split("-", 1)[1]))
            else:
                words.append(rng.choice(FILLER))
        for w in words:
            if text and not text.endswith(" "):
                text += " "
            if isinstance(w, tuple):
                spans.append((len(text), len(text) + len(w[0]), w[1]))
                text += w[0]
            else:
                text += w
        text += ". "
    return text.strip(), spans


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForTokenClassification, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-ner")
    words = sorted({w for p in ENTITIES for w in p.split() if w != "pneumothorax"} | set(FILLER))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "pneumo", "##thorax", *words]
    backend = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=64,
    )  # fmt: skip
    assert tok.tokenize("pneumothorax") == ["pneumo", "##thorax"]
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
        label2id={lab: i for i, lab in enumerate(LABELS)},
    )  # fmt: skip
    torch.manual_seed(0)
    model = BertForTokenClassification(config)
    rng = random.Random(0)
    examples = []
    for _ in range(256):
        text, spans = make_text(rng, 1)
        enc = tok(text, return_offsets_mapping=True, truncation=True, max_length=32, padding="max_length")
        labels = []
        for a, b in enc["offset_mapping"]:
            if b <= a:
                labels.append(-100)
                continue
            lab = "O"
            for s, e, _t in spans:
                if s <= a < e:
                    # which word of the phrase: count spaces before a within the span
                    idx = text[s:a].count(" ")
                    first_sub = a == s or text[a - 1] == " "
                    lab = ENTITIES[text[s:e]][idx] if first_sub else "IGNORE"
            labels.append(-100 if lab == "IGNORE" else LABELS.index(lab))
        examples.append((enc["input_ids"], enc["attention_mask"], labels))
    ids = torch.tensor([e[0] for e in examples])
    mask = torch.tensor([e[1] for e in examples])
    labels = torch.tensor([e[2] for e in examples])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for step in range(400):
        idx = torch.randint(0, len(examples), (32,))
        loss = model(input_ids=ids[idx], attention_mask=mask[idx], labels=labels[idx]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 49:
            with torch.no_grad():
                pred = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
            keep = labels != -100
            if bool((pred[keep] == labels[keep]).all()):
                break
    model.eval()
    with torch.no_grad():
        pred = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
    keep = labels != -100
    assert bool((pred[keep] == labels[keep]).all()), "the tiny model did not learn its training set"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_split_label_and_grouping_from_fixed_predictions() -> None:
    assert split_label("B-PROBLEM") == ("B", "PROBLEM")
    assert split_label("O") == ("O", "")
    assert split_label("OBS-DA") == ("", "OBS-DA")
    text = "Small pleural effusion, no pneumothorax."
    toks = [
        TokenPrediction(0, 5, "O", 0.9),
        TokenPrediction(6, 13, "B-MEDICAL_CONDITION", 0.8),
        TokenPrediction(14, 22, "I-MEDICAL_CONDITION", 0.6),
        TokenPrediction(22, 23, "O", 0.9),
        TokenPrediction(24, 26, "O", 0.9),
        TokenPrediction(27, 33, "B-MEDICAL_CONDITION", 0.9),
        TokenPrediction(33, 39, "O", 0.1),  # a continuation sub-token: takes the word's first label
        TokenPrediction(39, 40, "O", 0.9),
    ]
    got = [(m.text, m.start, m.end, m.category, round(m.score, 2)) for m in group_entities(text, toks)]
    assert got == [("pleural effusion", 6, 22, "MEDICAL_CONDITION", 0.7), ("pneumothorax", 27, 39,
                                                                          "MEDICAL_CONDITION", 0.9)]


def test_radgraph_labels_carry_polarity() -> None:
    text = "no effusion"
    got = group_entities(text, [TokenPrediction(0, 2, "O", 1.0), TokenPrediction(3, 11, "OBS-DA", 0.9)])
    assert [(m.text, m.category, m.polarity) for m in got] == [("effusion", "MEDICAL_CONDITION", "absent")]


def test_merge_windows_prefers_the_most_central_window() -> None:
    # token (10, 12) is last in window 1 (centrality 0) and in the middle of window 2 (centrality 1)
    w1 = ([(0, 0), (0, 4), (5, 9), (10, 12), (0, 0)], np.array([[1, 0], [1, 0], [1, 0], [1, 0], [1, 0]], float))
    w2 = ([(0, 0), (5, 9), (10, 12), (13, 15), (0, 0)], np.array([[0, 1], [0, 1], [0, 1], [0, 1], [0, 1]], float))
    merged = {(a, b): int(np.argmax(p)) for a, b, p in merge_windows([w1, w2])}
    assert merged == {(0, 4): 0, (5, 9): 0, (10, 12): 1, (13, 15): 1}


def _windows(tok: object, text: str, max_length: int, stride: int) -> list[set[tuple[int, int]]]:
    enc = tok(  # type: ignore[operator]
        text, return_offsets_mapping=True, return_overflowing_tokens=True, truncation=True,
        max_length=max_length, stride=stride,
    )  # fmt: skip
    return [{(a, b) for a, b in offs if b > a} for offs in enc["offset_mapping"]]


def test_spans_recovered_across_window_boundaries(tiny_model: Path) -> None:
    backend = TransformerBackend(str(tiny_model), device="cpu", max_length=16, stride=1, batch_size=4)
    text, gold = make_text(random.Random(42), 40)
    windows = _windows(backend.tokenizer, text, 16, 1)
    assert len(windows) > 10
    enc = backend.tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    straddling = 0
    for s, e, _ in gold:
        toks = {(a, b) for a, b in enc["offset_mapping"] if s <= a < e}
        if not any(toks <= w for w in windows):
            straddling += 1
    assert straddling >= 1, "the generated text should put an entity across a window boundary"
    got = [(m.start, m.end, m.category) for m in backend.mentions(text, [], None)]
    want = [(s, e, CATEGORY[t]) for s, e, t in gold]
    assert got == want
    assert all(text[s:e] in ENTITIES for s, e, _ in got)


def test_same_spans_with_one_big_window(tiny_model: Path) -> None:
    text, gold = make_text(random.Random(7), 6)
    small = TransformerBackend(str(tiny_model), device="cpu", max_length=12, stride=3)
    big = TransformerBackend(str(tiny_model), device="cpu", max_length=64)
    spans_small = [(m.start, m.end, m.type) for m in small.mentions(text, [], None)]
    spans_big = [(m.start, m.end, m.type) for m in big.mentions(text, [], None)]
    assert spans_small == spans_big == [(s, e, t) for s, e, t in gold]


def test_analyzer_with_the_transformers_backend(tiny_model: Path) -> None:
    from medsearch_workers.nlp import Analyzer
    from medsearch_workers.nlp.linking import LexicalOnlyLinker

    backend = TransformerBackend(str(tiny_model), device="cpu", max_length=16, stride=4)
    analyzer = Analyzer(backend, linker=LexicalOnlyLinker())
    res = analyzer.analyze("FINDINGS: there is a small pleural effusion. no pneumothorax. mild cardiomegaly.")
    by_text = {e.text: e for e in res.entities}
    assert by_text["pleural effusion"].assertion == "present"
    assert by_text["pneumothorax"].assertion == "absent"
    # transformer mentions are linked through the lexicon's concepts
    assert res.icd10_positive == ["J90", "I51.7"]
    assert res.icd10_negative == ["J93.9"]
    assert res.backend == "transformers"


def test_bad_window_settings_are_rejected(tiny_model: Path) -> None:
    with pytest.raises(ValueError, match="stride"):
        TransformerBackend(str(tiny_model), device="cpu", max_length=8, stride=6)
    with pytest.raises(OSError, match="cannot load"):
        TransformerBackend(str(tiny_model / "missing"), device="cpu")


def test_batched_reports_match_one_at_a_time(tiny_model: Path) -> None:
    backend = TransformerBackend(str(tiny_model), device="cpu", max_length=16, stride=2, batch_size=3)
    rng = random.Random(3)
    texts = [make_text(rng, n)[0] for n in (1, 9, 4)] + [""]
    batched = backend.mentions_many(texts, [[] for _ in texts])
    single = [backend.mentions(t, [], None) for t in texts]
    assert batched == single and batched[-1] == [] and len(batched[1]) > 0


def test_the_iu_bench_scores_the_transformers_backend(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """bench/nlp_iu.py scores a token-classification model given by path, on a synthetic archive in the layout
    of the IU reports (made-up texts and MeSH headings)."""
    import importlib.util
    import io
    import json
    import sys
    import tarfile

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("bench_nlp_iu_tx", root / "bench" / "nlp_iu.py")
    assert spec is not None and spec.loader is not None
    iu = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = iu
    spec.loader.exec_module(iu)

    reports = {
        1: ("there is a small pleural effusion. no pneumothorax.", "Pleural Effusion/small"),
        3: ("mild cardiomegaly. no pleural effusion.", "Cardiomegaly/mild"),
        5: ("no pneumothorax.", "Pneumothorax"),
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for n, (findings, major) in reports.items():
            xml = (f'<eCitation><uId id="CXR{n}"/><Abstract><AbstractText Label="FINDINGS">{findings}</AbstractText>'
                   f"</Abstract><MeSH><major>{major}</major></MeSH></eCitation>").encode()  # fmt: skip
            info = tarfile.TarInfo(f"ecgen-radiology/{n}.xml")
            info.size = len(xml)
            tar.addfile(info, io.BytesIO(xml))
    archive = tmp_path / "reports.tgz"
    archive.write_bytes(buf.getvalue())
    argv = ["--archive", str(archive), "--backend", "transformers", "--model", str(tiny_model), "--no-link"]
    assert iu.main([*argv, "--folds", "0", "--errors", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["system"].startswith("transformers ")
    assert out["groups"]["pleural effusion"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "tp": 1, "fp": 0,
                                                      "fn": 0}  # fmt: skip
    assert out["groups"]["cardiomegaly"]["tp"] == 1
    assert out["groups"]["pneumothorax"]["fn"] == 1  # the report's text denies what its heading says
    assert out["micro"]["tp"] == 2 and out["micro"]["fp"] == 0 and out["micro"]["fn"] == 1
    assert [e["id"] for e in out["errors"]] == ["CXR5"]
