"""The shipped data files: the report NLP evaluation set and the demo sample data.

``bench/data/nlp_eval.jsonl`` (labelled sentences and short reports, see bench/data/README.md) and
``samples/`` (synthetic reports linked by study UID to DICOM test files of pydicom / pydicom-data, see
samples/README.md). Checks shape, ids, ICD-10-CM codes, assertion values, tag coverage, agreement of tags with
labels, and that every sample DICOM resolves locally, decodes and is unique by SOPInstanceUID.
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import simple_icd_10_cm as icd
from pydicom.data import get_testdata_file

from medsearch.contracts.messages import Report, parse_report_date
from medsearch.imaging import decode_dicom

ROOT = Path(__file__).resolve().parents[2]
EVAL_FILE = ROOT / "bench" / "data" / "nlp_eval.jsonl"
SAMPLES = ROOT / "samples"
MANIFEST = SAMPLES / "manifest.json"

# The code table of bench/data/README.md: canonical finding -> the codes it may carry (first = default).
FINDING_CODES: dict[str, tuple[str, ...]] = {
    "cardiomegaly": ("I51.7",),
    "pleural_effusion": ("J90", "J91.0"),
    "pneumothorax": ("J93.9",),
    "atelectasis": ("J98.11",),
    "pulmonary_edema": ("J81.1",),
    "pneumonia": ("J18.9",),
    "emphysema_copd": ("J43.9", "J44.9"),
    "hiatal_hernia": ("K44.9",),
    "scoliosis": ("M41.9",),
    "kyphosis": ("M40.209",),
    "fracture": ("S22.39XA", "M48.50XA", "S42.009A"),
    "nodule_mass": ("R91.1", "R91.8"),
    "atherosclerosis": ("I70.0",),
    "fibrosis": ("J84.10",),
    "pleural_thickening": ("J92.9",),
    "granuloma": ("J98.4",),
    "degenerative_spine": ("M47.814", "M51.34"),
    "lymphadenopathy": ("R59.0",),
}
ASSERTIONS = {"present", "absent", "uncertain", "historical", "hypothetical"}
LATERALITY = {"left", "right", "bilateral"}
REQUIRED_TAGS = (
    "negation-list",
    "without",
    "resolved",
    "cannot-exclude",
    "possible",
    "history",
    "hypothetical",
    "no-change-positive",
    "not-only",
    "laterality",
    "normal",
    "indication",
    "multi-section",
)
REQUIRED_DICOM = ("RG1_UNCR.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm", "CT_small.dcm", "MR_small.dcm")
UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        assert line.strip(), f"{path.name}:{lineno}: blank line"
        obj = json.loads(line)
        assert isinstance(obj, dict), f"{path.name}:{lineno}: not a JSON object"
        rows.append(obj)
    return rows


@pytest.fixture(scope="module")
def eval_items() -> list[dict[str, Any]]:
    return _jsonl(EVAL_FILE)


@pytest.fixture(scope="module")
def demo_reports() -> list[dict[str, Any]]:
    return _jsonl(SAMPLES / "reports" / "reports.jsonl")


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    data = json.loads(MANIFEST.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _labels(item: dict[str, Any], assertion: str) -> list[dict[str, Any]]:
    return [g for g in item["gold"] if g["assertion"] == assertion]


# ------------------------------------------------------------------------------------------ evaluation set


def test_eval_items_have_the_documented_shape(eval_items: list[dict[str, Any]]) -> None:
    assert len(eval_items) >= 170
    ids = [it["id"] for it in eval_items]
    assert len(ids) == len(set(ids)), "duplicate ids"
    assert len({it["text"] for it in eval_items}) == len(eval_items), "duplicate texts"
    for it in eval_items:
        where = it.get("id")
        assert set(it) == {"id", "text", "gold", "tags"}, where
        assert re.fullmatch(r"e\d{3,}", it["id"]), where
        assert isinstance(it["text"], str) and it["text"].strip(), where
        assert isinstance(it["tags"], list) and all(isinstance(t, str) and t for t in it["tags"]), where
        assert isinstance(it["gold"], list), where
        keys = set()
        for g in it["gold"]:
            assert (
                {"finding", "code", "assertion", "mention"}
                <= set(g)
                <= {"finding", "code", "assertion", "mention", "laterality"}
            ), where
            assert g["finding"] in FINDING_CODES, (where, g["finding"])
            assert g["code"] in FINDING_CODES[g["finding"]], (where, g["finding"], g["code"])
            assert g["assertion"] in ASSERTIONS, (where, g["assertion"])
            assert g.get("laterality", "left") in LATERALITY, (where, g.get("laterality"))
            assert g["mention"] and g["mention"] in it["text"], (where, g["mention"])
            key = (g["finding"], g["code"], g["assertion"], g.get("laterality"))
            assert key not in keys, (where, "duplicate gold label", key)
            keys.add(key)


def test_every_code_is_a_billable_icd10cm_code() -> None:
    for finding, codes in FINDING_CODES.items():
        for code in codes:
            assert icd.is_valid_item(code), (finding, code)
            assert icd.is_leaf(code), (finding, code, "not billable")


def test_eval_set_covers_the_required_phenomena(eval_items: list[dict[str, Any]]) -> None:
    tags = collections.Counter(t for it in eval_items for t in it["tags"])
    short = {t: tags[t] for t in REQUIRED_TAGS if tags[t] < 8}
    assert not short, f"tags with fewer than 8 items: {short}"
    multi = [it for it in eval_items if "multi-section" in it["tags"]]
    assert len(multi) >= 50 and len(eval_items) - len(multi) >= 100
    findings = {g["finding"] for it in eval_items for g in it["gold"]}
    assert findings == set(FINDING_CODES), f"findings never labelled: {set(FINDING_CODES) - findings}"
    statuses = collections.Counter(g["assertion"] for it in eval_items for g in it["gold"])
    assert all(statuses[a] >= 10 for a in ASSERTIONS), statuses


def test_tags_agree_with_the_labels(eval_items: list[dict[str, Any]]) -> None:
    """A tag promises a phenomenon; the gold labels of the item must show it."""
    needs: dict[str, Callable[[dict[str, Any]], object]] = {
        "negation-list": lambda it: len(_labels(it, "absent")) >= 2,
        "without": lambda it: "without" in it["text"].lower() and _labels(it, "absent"),
        "resolved": lambda it: _labels(it, "absent"),
        "cannot-exclude": lambda it: _labels(it, "uncertain"),
        "possible": lambda it: _labels(it, "uncertain"),
        "may-represent": lambda it: _labels(it, "uncertain"),
        "suggestive-of": lambda it: _labels(it, "uncertain"),
        "history": lambda it: _labels(it, "historical"),
        "hypothetical": lambda it: _labels(it, "hypothetical"),
        "no-change-positive": lambda it: _labels(it, "present"),
        "not-only": lambda it: "not only" in it["text"].lower() and _labels(it, "present"),
        "laterality": lambda it: any("laterality" in g for g in it["gold"]),
        "no-finding": lambda it: not it["gold"],
        "multi-section": lambda it: "\n" in it["text"] and ("FINDINGS:" in it["text"] or "IMPRESSION:" in it["text"]),
        "indication": lambda it: "INDICATION:" in it["text"],
    }
    bad = [(it["id"], tag) for it in eval_items for tag in it["tags"] if tag in needs and not needs[tag](it)]
    assert not bad, f"items whose labels contradict their tags: {bad}"


def test_report_level_labels_can_be_derived(eval_items: list[dict[str, Any]]) -> None:
    """Report-level positives are the findings with a `present` label; spot-check the derivation."""
    by_id = {it["id"]: it for it in eval_items}
    present = {i: {g["finding"] for g in _labels(it, "present")} for i, it in by_id.items()}
    e1 = next(i for i, it in by_id.items() if it["text"] == "No pleural effusion or pneumothorax.")
    assert present[e1] == set()
    e2 = next(i for i, it in by_id.items() if it["text"].startswith("There is not only cardiomegaly"))
    assert present[e2] == {"cardiomegaly", "pleural_effusion"}
    assert sum(1 for p in present.values() if "pleural_effusion" in p) >= 20


# ------------------------------------------------------------------------------------------ demo samples


def test_demo_reports_have_the_documented_shape(demo_reports: list[dict[str, Any]]) -> None:
    assert len(demo_reports) >= 60
    ids = [r["report_id"] for r in demo_reports]
    assert len(ids) == len(set(ids))
    for r in demo_reports:
        assert set(r) == {"report_id", "study_uid", "report_date", "text"}, r.get("report_id")
        assert parse_report_date(r["report_date"]).isoformat() == r["report_date"], r["report_id"]
        assert re.fullmatch(r"R\d{4}", r["report_id"])
        assert UID.fullmatch(r["study_uid"]) and len(r["study_uid"]) <= 64, r["report_id"]
        assert "FINDINGS:" in r["text"] and "IMPRESSION:" in r["text"], r["report_id"]
        Report(index="demo", report_id=r["report_id"], study_uid=r["study_uid"], uri="file:///s/r.txt",
               sha256=hashlib.sha256(r["text"].encode()).hexdigest())


def test_demo_reports_are_read_by_the_producer() -> None:
    from medsearch.producer import ReportItem, classify

    items = list(classify(SAMPLES / "reports" / "reports.jsonl"))
    rejected = [i for i in items if not isinstance(i, ReportItem)]
    assert not rejected, rejected
    assert len(items) >= 60


def test_demo_reports_mix_positive_and_negated_findings(demo_reports: list[dict[str, Any]]) -> None:
    texts = [r["text"] for r in demo_reports]
    positive_effusion = re.compile(r"\b(small|moderate|large|trace)\b[^.]{0,40}\bpleural effusions?\b", re.I)
    negated_effusion = re.compile(r"\bno (large )?pleural effusions?\b", re.I)
    assert sum(bool(positive_effusion.search(t)) for t in texts) >= 8
    assert sum(bool(negated_effusion.search(t)) for t in texts) >= 8
    assert sum("cardiomegaly" in t.lower() or "cardiac silhouette is enlarged" in t.lower() for t in texts) >= 6
    assert sum(bool(re.search(r"\bno pneumothorax\b", t, re.I)) for t in texts) >= 8
    assert sum(bool(re.search(r"(small|moderate|large|tiny)[^.]{0,20}pneumothorax", t, re.I)) for t in texts) >= 3
    assert sum(bool(re.search(r"cannot be excluded|possible|may represent|suggestive of", t, re.I)) for t in texts) >= 6
    assert sum(bool(re.search(r"history of", t, re.I)) for t in texts) >= 4
    assert sum(t.count("No acute cardiopulmonary") > 0 or "Normal chest" in t for t in texts) >= 5


def test_manifest_names_the_required_files_once(manifest: dict[str, Any]) -> None:
    names = manifest["dicom"]
    assert all(isinstance(n, str) for n in names)
    assert len(names) == len(set(names)) and len(names) >= 20
    assert set(REQUIRED_DICOM) <= set(names)
    assert (SAMPLES / manifest["reports"]).is_file()
    assert set(manifest["dicom_details"]) == set(names)


@pytest.mark.parametrize("name", json.loads(MANIFEST.read_text(encoding="utf-8"))["dicom"])
def test_manifest_dicom_resolves_locally_and_decodes(name: str, manifest: dict[str, Any]) -> None:
    path = get_testdata_file(name, download=False)
    assert path, f"{name} is not installed (pydicom / pydicom-data test files)"
    decoded = decode_dicom(Path(str(path)).read_bytes(), source=name)
    ds = decoded.dataset
    info = manifest["dicom_details"][name]
    assert str(ds.SOPInstanceUID) == info["sop_instance_uid"]
    assert str(ds.StudyInstanceUID) == info["study_instance_uid"]
    assert str(ds.get("Modality", "")) == info["modality"]
    assert str(ds.file_meta.TransferSyntaxUID) == info["transfer_syntax"]
    assert decoded.image.shape[:2] == (info["rows"], info["columns"])
    assert decoded.image.max() > decoded.image.min()


def test_manifest_images_are_unique_and_linked_to_reports(
    manifest: dict[str, Any], demo_reports: list[dict[str, Any]]
) -> None:
    from medsearch_dev.localstack.demo import read_manifest

    samples = read_manifest(MANIFEST)
    assert len(samples.dicom_files) == len(manifest["dicom"])
    sops = [d["sop_instance_uid"] for d in manifest["dicom_details"].values()]
    assert len(sops) == len(set(sops)), "two sample files share a SOPInstanceUID (the image primary key)"
    assert samples.expected_images == len(sops)
    assert samples.expected_reports == len(demo_reports)
    rg1_study = manifest["dicom_details"]["RG1_UNCR.dcm"]["study_instance_uid"]
    linked = [r for r in demo_reports if r["study_uid"] == rg1_study]
    assert linked, "the real chest radiograph RG1_UNCR.dcm has no report"
    assert "chest" in linked[0]["text"].lower()
