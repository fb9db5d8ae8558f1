"""GraphQL gateway latency and throughput over real HTTP.

Seeds a milvus-lite server with N synthetic reports and N synthetic images (rows built from the contract's
field lists, deterministic random vectors), starts the gateway process (``python -m medsearch_api``, uvicorn)
and drives ``searchReports`` (KEYWORD, BM25), ``similarImages`` (by image id) and ``icd10Facets`` (with a
query) with C concurrent clients. Prints JSON: p50/p99 latency and requests/s per operation, the time spent
inside Milvus (from the gateway's ``Server-Timing: milvus`` header) and the gateway's own overhead
(client-observed latency minus Milvus time).

    python bench/api.py                 # small default run (1000 items)
    python bench/api.py --n 10000       # the 10k-item figure
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

WORDS = ["effusion", "cardiomegaly", "edema", "pneumothorax", "pneumonia", "atelectasis", "nodule", "consolidation",
         "opacity", "fracture", "emphysema", "granuloma", "scoliosis", "hernia", "mass", "calcification"]
CODES = ["J91.8", "I51.7", "J81.1", "J93.9", "J18.9", "J98.11", "R91.1", "J18.1", "R91.8", "S22.9", "J43.9",
         "D86.0", "M41.9", "K44.9", "R22.2", "R93.1"]
FILLER = ("the heart size is normal lungs are clear no acute osseous abnormality mediastinal contours stable "
          "comparison with prior study patient positioned upright portable technique").split()


def _unit(rng: random.Random, dim: int) -> list[float]:
    v = [rng.gauss(0, 1) for _ in range(dim)]
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def seed(client: Any, index: str, n: int) -> None:
    from medsearch.contracts.collections import IMAGE_FIELDS, REPORT_FIELDS
    from medsearch.contracts.naming import names_for

    def defaults(fields: Any) -> dict[str, Any]:
        return {f.name: {"VARCHAR": "", "INT32": 0, "INT64": 0, "JSON": {}, "ARRAY": []}.get(f.dtype)
                for f in fields if f.dtype not in ("FLOAT_VECTOR", "SPARSE_FLOAT_VECTOR")}

    names = names_for(index)
    rng = random.Random(1)
    batch_r: list[dict[str, Any]] = []
    batch_i: list[dict[str, Any]] = []
    for k in range(n):
        study = f"1.2.840.9.{k + 1}"
        present = rng.sample(range(len(WORDS)), rng.randint(0, 3))
        absent = rng.sample([i for i in range(len(WORDS)) if i not in present], rng.randint(0, 2))
        text = " ".join([f"There is {WORDS[i]}." for i in present] + [f"No {WORDS[i]}." for i in absent]
                        + rng.sample(FILLER, 12))
        r = defaults(REPORT_FIELDS)
        r.update(report_id=f"r{k:06d}", study_uid=study, text=text, findings=text,
                 report_date=20150101 + rng.randint(0, 9) * 10000 + rng.randint(0, 11) * 100 + rng.randint(0, 27),
                 icd10_positive=[CODES[i] for i in present], icd10_negative=[CODES[i] for i in absent],
                 positive_signs=[WORDS[i] for i in present], negative_signs=[WORDS[i] for i in absent],
                 text_vector=_unit(rng, 384))
        i = defaults(IMAGE_FIELDS)
        i.update(sop_instance_uid=f"{study}.1", study_uid=study, report_id=r["report_id"],
                 modality=rng.choice(["CR", "DX"]), view_position=rng.choice(["PA", "AP", "LATERAL"]),
                 body_part="CHEST", rows=512, columns=512, frames=1, study_date=r["report_date"],
                 embedding=_unit(rng, 1024))
        batch_r.append(r)
        batch_i.append(i)
        if len(batch_r) >= 500:
            client.upsert(names.reports_collection, batch_r)
            client.upsert(names.images_collection, batch_i)
            batch_r, batch_i = [], []
    if batch_r:
        client.upsert(names.reports_collection, batch_r)
        client.upsert(names.images_collection, batch_i)
    for coll in names.collections:  # seal the segments (queries on growing data are slow in milvus-lite)
        client.flush(coll)


QUERIES = {
    "searchReports": ("query($q: String!) { searchReports(query: $q, mode: KEYWORD, first: 10) "
                      "{ edges { score node { id impression } snippet { html } } pageInfo { endCursor } } }"),
    "similarImages": ("query($id: ID!) { similarImages(imageId: $id, k: 10) "
                      "{ score image { id viewPosition thumbnailUrl } } }"),
    "icd10Facets": "query($q: String!) { icd10Facets(query: $q, size: 10) { code description count } }",
}


def variables(op: str, rng: random.Random, n: int) -> dict[str, Any]:
    if op == "similarImages":
        return {"id": f"1.2.840.9.{rng.randint(1, n)}.1"}
    if op == "icd10Facets":
        return {"q": rng.choice(WORDS)}
    return {"q": " ".join(rng.sample(WORDS, 2))}


_TIMING = re.compile(r"milvus;dur=([0-9.]+)")


def drive(base: str, token: str, op: str, n: int, clients: int, requests: int) -> dict[str, Any]:
    import httpx

    lat: list[float] = []
    milvus: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    per = max(1, requests // clients)

    def worker(w: int) -> None:
        rng = random.Random(1000 + w)
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120) as c:
            for _ in range(per):
                body = {"query": QUERIES[op], "variables": variables(op, rng, n)}
                t0 = time.perf_counter()
                r = c.post("/graphql", json=body)
                dt = time.perf_counter() - t0
                m = _TIMING.search(r.headers.get("server-timing", ""))
                payload = r.json()
                with lock:
                    if r.status_code != 200 or "errors" in payload:
                        errors.append(str(payload)[:200])
                    lat.append(dt * 1000)
                    milvus.append(float(m.group(1)) if m else 0.0)

    # warm-up (connection, caches)
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120) as c:
        for k in range(3):
            c.post("/graphql", json={"query": QUERIES[op], "variables": variables(op, random.Random(k), n)})
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    overhead = [a - b for a, b in zip(lat, milvus, strict=True)]

    def pct(xs: list[float], p: float) -> float:
        s = sorted(xs)
        return round(s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))], 2)

    return {
        "requests": len(lat), "errors": len(errors), "first_error": errors[0] if errors else None,
        "rps": round(len(lat) / wall, 1),
        "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
        "milvus_p50_ms": pct(milvus, 50), "milvus_mean_ms": round(statistics.fmean(milvus), 2),
        "gateway_overhead_p50_ms": pct(overhead, 50), "gateway_overhead_mean_ms": round(statistics.fmean(overhead), 2),
        "gateway_overhead_share": round(sum(overhead) / sum(lat), 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000, help="reports and images to index (10000 for the headline figure)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients")
    p.add_argument("--requests", type=int, default=160, help="requests per operation (split over the clients)")
    p.add_argument("--ops", default=",".join(QUERIES), help="comma-separated operations")
    p.add_argument("--milvus-uri", help="use this Milvus instead of starting a milvus-lite server")
    args = p.parse_args(argv)

    from medsearch.contracts.spec import MedicalSearchIndexSpec
    from medsearch.localstack import procs
    from medsearch.provision import drop_collections, ensure_collections, milvus_client

    out: dict[str, Any] = {"benchmark": "api", "n": args.n, "clients": args.clients,
                           "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    with tempfile.TemporaryDirectory(prefix="medsearch-bench-api-") as tmp:
        tmpd = Path(tmp)
        import contextlib

        with contextlib.ExitStack() as stack:
            uri = args.milvus_uri or stack.enter_context(procs.milvus_lite(tmpd / "milvus", tmpd))
            index = "benchapi"
            client = milvus_client(uri, timeout=600)
            drop_collections(client, index)
            ensure_collections(client, index, MedicalSearchIndexSpec())
            t0 = time.perf_counter()
            seed(client, index, args.n)
            out["seed_seconds"] = round(time.perf_counter() - t0, 1)
            token = "bench-reader-token-0000000000"
            (tmpd / "tokens").write_text(f"{token} reader bench\n")
            port = procs.free_port()
            base = f"http://127.0.0.1:{port}"
            env = {"MEDSEARCH_INDEX": index, "MEDSEARCH_MILVUS_URI": uri, "MEDSEARCH_API_PORT": str(port),
                   "MEDSEARCH_API_TOKENS_FILE": str(tmpd / "tokens"), "MEDSEARCH_LOG_LEVEL": "WARNING"}
            stack.enter_context(procs.running([sys.executable, "-m", "medsearch_api"],
                                              ready=lambda: procs.http_ready(base + "/healthz"), what="gateway",
                                              log_path=tmpd / "gateway.log", env=env, timeout=60))
            out["ops"] = {op: drive(base, token, op, args.n, args.clients, args.requests)
                          for op in args.ops.split(",")}
            drop_collections(client, index)
            client.close()
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
