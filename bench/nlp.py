"""Report NLP throughput: reports/s per NER backend; prints JSON.

Backends measured:
- ``lexicon``: the default (lexicon NER + ConText + ICD-10-CM linking with MiniLM candidate ranking);
- ``lexicon-lexical``: the same with lexical codes only (``--no-link``), i.e. without the embedding step;
- ``transformers``: a token-classification model through the windowed, batched backend (``ner_only_reports_per_s``:
  the model and span grouping alone, without assertion and linking; a random head finds many junk mentions,
  each of which is then linked by embedding, so the full-pipeline figure understates a trained model). Nothing can be
  downloaded here, so by default the bundled all-MiniLM-L6-v2 encoder is loaded as a token classifier with a
  randomly initialised head (its entities are meaningless; the throughput is that of a 6-layer, 22M-parameter
  clinical NER model). ``--model NAME_OR_PATH`` measures a real one.

Reports: the demo reports (``samples/reports/reports.jsonl``; else the eval set texts), cycled to ``--n``.
Timings exclude model loading and one warm-up batch.

    python bench/nlp.py [--n 200] [--batch 16] [--backends lexicon,lexicon-lexical,transformers] [--model M]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "samples" / "reports" / "reports.jsonl", ROOT / "bench" / "data" / "nlp_eval.jsonl"]


def load_texts(n: int) -> list[str]:
    """Whole reports: the demo reports when present, else the eval set's texts."""
    texts: list[str] = []
    for path in SOURCES:
        if path.exists() and not texts:
            with path.open(encoding="utf-8") as fh:
                texts.extend(json.loads(line)["text"] for line in fh if line.strip())
    if not texts:
        raise SystemExit("no report texts found (samples/reports/reports.jsonl, bench/data/nlp_eval.jsonl)")
    return [texts[i % len(texts)] for i in range(n)]


def minilm_token_classifier() -> str:
    """A local directory with the bundled MiniLM as a token-classification model (random head)."""
    import tempfile

    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from medsearch.text_embedding import model_path

    labels = ["O", "B-MEDICAL_CONDITION", "I-MEDICAL_CONDITION", "B-ANATOMY", "I-ANATOMY"]
    out = Path(tempfile.mkdtemp(prefix="bench-minilm-ner-"))
    model = AutoModelForTokenClassification.from_pretrained(
        model_path(), num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={lab: i for i, lab in enumerate(labels)},
    )  # fmt: skip
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(model_path()).save_pretrained(out)
    return str(out)


def measure(name: str, analyzer: Any, texts: list[str], batch: int) -> dict[str, Any]:
    analyzer.analyze_many(texts[:batch])  # warm-up: lexicon tables, ConText, MiniLM, ICD embeddings cache
    per_batch: list[float] = []
    entities = 0
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch):
        chunk = texts[i : i + batch]
        b0 = time.perf_counter()
        results = analyzer.analyze_many(chunk)
        per_batch.append((time.perf_counter() - b0) / len(chunk))
        entities += sum(len(r.entities) for r in results)
    elapsed = time.perf_counter() - t0
    return {
        "backend": name,
        "reports": len(texts),
        "seconds": round(elapsed, 3),
        "reports_per_s": round(len(texts) / elapsed, 2),
        "ms_per_report_median": round(statistics.median(per_batch) * 1000, 2),
        "entities_per_report": round(entities / len(texts), 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="reports per backend")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--backends", default="lexicon,lexicon-lexical,transformers")
    ap.add_argument("--model", default=None, help="transformers model name or path (default: MiniLM, random head)")
    ap.add_argument("--device", default=None, help="transformers device (default: cuda if available, else cpu)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from medsearch_workers.nlp import Analyzer, get_backend
    from medsearch_workers.nlp.transformer_ner import TransformerBackend

    texts = load_texts(args.n)
    results = []
    for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
        if name == "lexicon":
            analyzer = Analyzer(get_backend("lexicon"))
        elif name == "lexicon-lexical":
            analyzer = Analyzer(get_backend("lexicon"), link=False)
        elif name == "transformers":
            model = args.model or minilm_token_classifier()
            analyzer = Analyzer(TransformerBackend(model, device=args.device))
        else:
            raise SystemExit(f"unknown backend {name!r}")
        row = measure(name, analyzer, texts, args.batch)
        if name == "transformers":
            ner = analyzer.backend
            t0 = time.perf_counter()
            for i in range(0, len(texts), args.batch):
                ner.mentions_many(texts[i : i + args.batch], [[] for _ in texts[i : i + args.batch]])  # type: ignore[attr-defined]  # TransformerBackend
            row["ner_only_reports_per_s"] = round(len(texts) / (time.perf_counter() - t0), 2)
            row["model"] = args.model or "all-MiniLM-L6-v2 encoder, random token-classification head"
            row["device"] = str(analyzer.backend.device)  # type: ignore[attr-defined]  # TransformerBackend
        results.append(row)
    out = {
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "mean_report_chars": round(sum(map(len, texts)) / len(texts), 1),
        "results": results,
    }
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
