"""Score the report NLP against a labelled set (default ``bench/data/nlp_eval.jsonl``); prints JSON.

Metrics (report level = per item, a code/finding is positive when the item has a ``present`` label for it):
- ``positive_codes``: micro P/R/F1 of ``icd10_positive`` against the gold present codes (exact codes), and
  ``positive_code_categories`` on 3-character ICD-10-CM categories (S22.32XA ~ S22.39XA);
- ``positive_findings``: micro P/R/F1 on canonical findings (the codes mapped through the lexicon), and
  ``per_finding`` F1;
- ``negative_codes``: micro F1 of ``icd10_negative`` against gold codes that are only ``absent`` in the item;
- ``assertion``: per (item, finding) that both gold and system mention: ``accuracy`` = the set of assertion
  statuses (present/absent/uncertain/historical/hypothetical) is the same; ``negation_accuracy`` = both agree
  whether the finding is negated somewhere; ``mention_recall`` = share of gold (item, finding) pairs the system
  mentions at all.
Predictions outside the gold vocabulary (findings the set does not label, e.g. devices) are not counted.
Predictions come from the in-process analyzer (the code path of ``medsearch nlp analyze``), or from a JSONL
written by ``medsearch nlp analyze`` with ``--predictions``.

    python bench/nlp_eval.py [--data FILE] [--backend lexicon|transformers --model M] [--predictions OUT.jsonl]
                             [--no-link] [--errors N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

DEFAULT_DATA = Path(__file__).resolve().parent / "data" / "nlp_eval.jsonl"


def prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4), "tp": tp, "fp": fp, "fn": fn}


def load(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise SystemExit(f"{path}:{n}: invalid JSON: {err}") from None
    return rows


def predict(rows: list[dict[str, Any]], backend: str, model: str | None, link: bool) -> list[dict[str, Any]]:
    from medsearch_workers.nlp import Analyzer, get_backend

    analyzer = Analyzer(get_backend(backend, model), link=link)
    out = []
    for i in range(0, len(rows), 16):
        batch = rows[i : i + 16]
        for row, res in zip(batch, analyzer.analyze_many([r["text"] for r in batch]), strict=True):
            out.append({"id": row["id"], **res.to_dict()})
    return out


# The reference point of the quality bar: a keyword matcher with sentence-level negation (finding -> code).
KEYWORDS = {
    "I51.7": ["cardiomegaly", "enlarged heart", "heart is enlarged", "cardiac enlargement"],
    "J90": ["effusion"], "J93.9": ["pneumothorax"], "J98.11": ["atelectasis"],
    "J81.1": ["edema", "vascular congestion"], "J18.9": ["pneumonia"],
    "J43.9": ["emphysema"], "J44.9": ["copd"], "K44.9": ["hiatal hernia"],
    "M41.9": ["scoliosis"], "M40.209": ["kyphosis"], "S22.39XA": ["rib fracture"], "R91.1": ["nodule"],
    "R91.8": ["mass"], "I70.0": ["atherosclero"], "J84.10": ["fibrosis"],
}  # fmt: skip


def keyword_baseline(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    import re

    out = []
    for row in rows:
        pos: set[str] = set()
        neg: set[str] = set()
        for sent in re.split(r"(?<=[.;])\s+|\n", row["text"].lower()):
            negated = re.search(r"\b(?:no|without|negative for|not)\b", sent) is not None
            for code, words in KEYWORDS.items():
                if any(w in sent for w in words):
                    (neg if negated else pos).add(code)
        out.append({"id": row["id"], "entities": [], "icd10_positive": sorted(pos),
                    "icd10_negative": sorted(neg - pos), "icd10_uncertain": []})  # fmt: skip
    return out


def score(rows: list[dict[str, Any]], preds: dict[str, dict[str, Any]], errors: int = 0) -> dict[str, Any]:
    from medsearch_workers.nlp.lexicon import finding_for_code

    gold_codes = {g["code"] for r in rows for g in r["gold"]}
    vocab = {g["finding"] for r in rows for g in r["gold"]}
    code_finding = {g["code"]: g["finding"] for r in rows for g in r["gold"]}

    def finding_of(code: str) -> str | None:
        return code_finding.get(code) or finding_for_code(code)

    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    per_finding: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    assertion_total = assertion_ok = neg_ok = gold_labels = detected = 0
    confusion: Counter[tuple[str, str]] = Counter()
    mistakes: list[dict[str, Any]] = []
    for row in rows:
        pred = preds.get(row["id"])
        if pred is None:
            raise SystemExit(f"no prediction for item {row['id']!r}")
        gold_pos = {g["code"] for g in row["gold"] if g["assertion"] == "present"}
        gold_abs = {g["code"] for g in row["gold"] if g["assertion"] == "absent"} - gold_pos
        in_vocab = [c for c in pred["icd10_positive"] if c in gold_codes or finding_of(c) in vocab]
        pred_pos = set(in_vocab)
        pred_neg = {c for c in pred["icd10_negative"] if c in gold_codes or finding_of(c) in vocab}

        def add(key: str, g: set[str], p: set[str]) -> None:
            c = counts[key]
            c[0] += len(g & p)
            c[1] += len(p - g)
            c[2] += len(g - p)

        add("positive_codes", gold_pos, pred_pos)
        add("positive_code_categories", {c.split(".")[0] for c in gold_pos}, {c.split(".")[0] for c in pred_pos})
        gf = {code_finding[c] for c in gold_pos}
        pf = {f for f in (finding_of(c) for c in pred_pos) if f in vocab}
        add("positive_findings", gf, pf)
        add("negative_codes", gold_abs, pred_neg)
        for f in gf | pf:
            pc = per_finding[f]
            pc[0] += f in gf and f in pf
            pc[1] += f in pf and f not in gf
            pc[2] += f in gf and f not in pf
        # assertion per (item, finding): the set of gold statuses against the set of system statuses
        statuses: dict[str, set[str]] = defaultdict(set)
        for e in pred["entities"]:
            code = e.get("code") or (e["icd10"][0]["code"] if e.get("icd10") else None)
            f = finding_of(code) if code else None
            if f:
                statuses[f].add(e["assertion"])
        gold_status: dict[str, set[str]] = defaultdict(set)
        for g in row["gold"]:
            gold_status[g["finding"]].add(g["assertion"])
        for f, want in gold_status.items():
            gold_labels += 1
            got = statuses.get(f)
            if not got:
                continue
            detected += 1
            assertion_total += 1
            assertion_ok += want == got
            neg_ok += ("absent" in want) == ("absent" in got)
            if want != got:
                confusion[("/".join(sorted(want)), "/".join(sorted(got)))] += 1
        if errors and (gf != pf) and len(mistakes) < errors:
            mistakes.append({"id": row["id"], "text": row["text"][:300], "gold": sorted(gf), "pred": sorted(pf)})
    result: dict[str, Any] = {k: prf(*v) for k, v in counts.items()}
    result["per_finding"] = {f: prf(*v)["f1"] for f, v in sorted(per_finding.items())}
    result["assertion"] = {
        "accuracy": round(assertion_ok / assertion_total, 4) if assertion_total else None,
        "negation_accuracy": round(neg_ok / assertion_total, 4) if assertion_total else None,
        "mention_recall": round(detected / gold_labels, 4) if gold_labels else None,
        "confusions": {f"{g}->{p}": n for (g, p), n in confusion.most_common(10)},
    }
    if errors:
        result["errors"] = mistakes
    return result


def calibrate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Similarity of gold mention texts to their gold code (MiniLM vs the chest code table), and of phrases that
    name no condition to their best code: the evidence behind ``LINK_THRESHOLD`` / ``ASSIGN_THRESHOLD``."""
    import numpy as np
    from medsearch_workers.nlp.linking import IcdLinker

    linker = IcdLinker()
    codes, matrix = linker._table()
    index = {c: i for i, c in enumerate(codes)}
    pairs = sorted({(g["mention"].lower(), g["code"]) for r in rows for g in r["gold"] if g.get("mention")})
    pairs = [(m, c) for m, c in pairs if c in index]
    sims = linker._vectors([m for m, _ in pairs]) @ matrix.T
    correct = np.array([sims[i, index[c]] for i, (_, c) in enumerate(pairs)])
    ranks = [int((sims[i] > sims[i, index[c]]).sum()) for i, (_, c) in enumerate(pairs)]
    unrelated = ["the patient enjoys gardening", "pa and lateral views", "comparison was made", "portable technique",
                 "tip projects over the svc", "the patient is status post", "patient", "left"]  # fmt: skip
    best_unrelated = (linker._vectors(unrelated) @ matrix.T).max(axis=1)
    return {
        "mentions": len(pairs),
        "gold_code_similarity_percentiles": dict(zip(("p10", "p25", "p50", "p75"),
            [round(float(x), 3) for x in np.percentile(correct, [10, 25, 50, 75])], strict=True)),
        "embedding_only_top1": round(float(np.mean([r == 0 for r in ranks])), 3),
        "embedding_only_top5": round(float(np.mean([r < 5 for r in ranks])), 3),
        "unrelated_best_similarity_max": round(float(best_unrelated.max()), 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--backend", default="lexicon", choices=["lexicon", "transformers", "keyword-baseline"])
    ap.add_argument("--model", default=None)
    ap.add_argument("--predictions", type=Path, default=None, help="JSONL from `medsearch nlp analyze`")
    ap.add_argument("--no-link", action="store_true", help="lexical codes only (no MiniLM ranking)")
    ap.add_argument("--errors", type=int, default=0, help="list up to N report-level finding mistakes")
    ap.add_argument("--calibrate", action="store_true", help="print the linking-threshold evidence and exit")
    args = ap.parse_args(argv)
    rows = load(args.data)
    if args.calibrate:
        json.dump(calibrate(rows), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    t0 = time.perf_counter()
    if args.predictions:
        preds = {p["id"]: p for p in load(args.predictions)}
        source = str(args.predictions)
    elif args.backend == "keyword-baseline":
        preds = {p["id"]: p for p in keyword_baseline(rows)}
        source = "keyword matcher with sentence-level negation (reference point)"
    else:
        preds = {p["id"]: p for p in predict(rows, args.backend, args.model, not args.no_link)}
        source = f"{args.backend} (in-process{', lexical codes only' if args.no_link else ''})"
    elapsed = time.perf_counter() - t0
    out = {"data": args.data.name, "items": len(rows), "predictions": source, "seconds": round(elapsed, 2)}
    out.update(score(rows, preds, args.errors))
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
