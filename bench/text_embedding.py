"""Report text embedding throughput: medsearch's onnxruntime encoder against sentence-transformers (torch), same
texts, same process, one after the other. JSON on stdout.

The texts are what the report worker embeds (IMPRESSION then FINDINGS, ``embedding_text``) of ``--n`` synthetic
reports from ``bench/scale.py``. Each runtime embeds them ``--repeat`` times with the worker's batch size; the best
run counts (reports/s, CPU ms per report). Then the median latency of one short query alone (what the gateway does
for SEMANTIC/HYBRID search), and the largest absolute difference between the two runtimes' vectors.
sentence-transformers is measured only where it is installed (the dev venv); ``--no-reference`` skips it.

    python bench/text_embedding.py [--n 500] [--batch-size 32] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


Embed = Callable[[list[str]], np.ndarray]


def measure(embed: Embed, texts: list[str], repeat: int) -> tuple[dict[str, Any], np.ndarray]:
    """Best of ``repeat`` runs: reports/s (wall clock) and CPU ms per report (this process, every thread: less
    sensitive to other jobs on the machine than the wall clock)."""
    embed(texts[:8])  # warm-up: load the model, first allocations
    best, cpu, vectors = float("inf"), float("inf"), np.zeros(0)
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        vectors = embed(texts)
        best, cpu = min(best, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    figures = {"reports_per_second": round(len(texts) / best, 1), "ms_per_report": round(1000 * best / len(texts), 2),
               "cpu_ms_per_report": round(1000 * cpu / len(texts), 2)}
    figures["query_p50_ms"] = query_p50_ms(embed)
    return figures, np.asarray(vectors, dtype=np.float32)


def query_p50_ms(embed: Embed, n: int = 50) -> float:
    """Median latency of one short query alone (what the gateway does for SEMANTIC/HYBRID search)."""
    queries = ["pleural effusion", "enlarged heart", "fluid collecting around the lungs", "no pneumothorax"]
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        embed([queries[i % len(queries)]])
        times.append(time.perf_counter() - t0)
    return round(1000 * float(np.median(times)), 2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=500, help="reports")
    p.add_argument("--batch-size", type=int, default=32, help="texts per encoder call (the report worker's: 32)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per runtime (the best counts)")
    p.add_argument("--no-reference", action="store_true", help="skip sentence-transformers")
    args = p.parse_args(argv)

    from medsearch_workers.nlp import Analyzer, get_backend
    from medsearch_workers.report_worker import embedding_text
    from scale import generate

    from medsearch.contracts.settings import TextModelSettings
    from medsearch.text_embedding import BACKEND, embed_texts, model_path

    reports, _ = generate(args.n, args.n, seed=5)
    raw = [r["text"] for r in reports]
    texts = [embedding_text(a, t) for a, t in zip(Analyzer(get_backend("lexicon", None)).analyze_many(raw), raw,
                                                     strict=True)]
    out: dict[str, Any] = {
        "benchmark": "text_embedding", "reports": args.n, "batch_size": args.batch_size,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_before": [round(x, 2) for x in os.getloadavg()]},
        "mean_chars": round(sum(map(len, texts)) / len(texts), 1),
    }
    figures, ours = measure(lambda t: embed_texts(t, batch_size=args.batch_size), texts, args.repeat)
    out[BACKEND] = {**figures, "threads": TextModelSettings().threads or "default"}
    if not args.no_reference:
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError:
            out["sentence_transformers"] = "not installed"
        else:
            model = SentenceTransformer(model_path(), device="cpu", local_files_only=True)
            reference, ref = measure(
                lambda t: model.encode(t, batch_size=args.batch_size, convert_to_numpy=True,
                                       normalize_embeddings=True, show_progress_bar=False), texts, args.repeat)
            out["sentence_transformers"] = {**reference, "torch_threads": torch.get_num_threads()}
            out["speedup_wall"] = round(figures["reports_per_second"] / reference["reports_per_second"], 2)
            out["speedup_cpu"] = round(reference["cpu_ms_per_report"] / figures["cpu_ms_per_report"], 2)
            out["max_abs_diff"] = float(np.abs(ref - ours).max())
    out["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
