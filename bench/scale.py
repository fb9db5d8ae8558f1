"""Search at archive scale: MIMIC-CXR-sized synthetic data, the gateway over real HTTP, JSON on stdout.

Loads synthetic reports (realistic finding frequencies and negations, dates over ten years) and 1-3 images per
study (metadata + unit vectors) into a real PostgreSQL (the system of record, COPY) and a milvus-lite server (the
ANN engine), starts the gateway process (``python -m medsearch_api``), and drives it with 1 and with 8 concurrent
clients: p50/p99 per operation with the PostgreSQL / Milvus / gateway split (from ``Server-Timing``). It also
checks, at that scale, that ``totalCount`` and facet counts equal brute-force counts over the generated rows,
that facets count what the list shows, and the recall@10 of filtered ``similarImages`` against exact search.
The JSON ends with ``"meets_target"`` over the targets of the issue (2-core machine).

    python bench/scale.py                                # quick run: 20,000 reports
    python bench/scale.py --reports 227835 --images 377110 --data-dir ~/bench-mimic   # MIMIC-CXR size

Loading MIMIC-CXR size takes most of an hour on a 2-core machine: with ``--data-dir`` the stores keep their data
there and a later run with the same ``--reports/--images/--seed`` skips the load (the gateway's log stays there
too). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

# finding word -> (share of reports asserting it, share negating it): MIMIC-CXR-like frequencies
FINDINGS = {
    "effusion": (0.24, 0.30), "cardiomegaly": (0.20, 0.10), "edema": (0.12, 0.15), "atelectasis": (0.20, 0.05),
    "pneumonia": (0.07, 0.15), "pneumothorax": (0.04, 0.35), "consolidation": (0.05, 0.20), "nodule": (0.03, 0.02),
    "fracture": (0.02, 0.03),
}


def finding_code(word: str) -> str | None:
    """The ICD-10-CM code the report NLP gives ``There is <word>.``: the lexicon concept's own code (a sign such as
    consolidation has none), so that the gateway's finding queries meet the codes real reports carry."""
    from medsearch.findings import concept_for_text

    concept = concept_for_text(word)
    return concept.code if concept is not None and concept.category == "MEDICAL_CONDITION" else None


FILLER = ("the heart size is normal mediastinal contours are stable lungs are otherwise clear no acute osseous "
          "abnormality comparison with the prior study portable upright technique").split()
TOKEN = "bench-scale-reader-token-000000001"
TARGETS = {  # operation -> {clients: {"p50": ms, "p99": ms}}
    "keyword": {1: {"p50": 100}, 8: {"p50": 300, "p99": 800}},
    "hybrid": {1: {"p50": 200}, 8: {"p50": 600, "p99": 1500}},
    "facets_query": {1: {"p50": 150}, 8: {"p50": 400}},
    "facets_all": {1: {"p50": 50}, 8: {"p50": 150}},
    "listing_page100": {1: {"p50": 20}, 8: {"p50": 50}},
    "similar_filtered": {1: {"p50": 200}, 8: {"p50": 600}},
    "compat": {1: {"p50": 300}},
}
_TOK = re.compile(r"\w+")


def generate(n_reports: int, n_images: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rng = random.Random(seed)
    codes = {w: finding_code(w) for w in FINDINGS}
    reports, images = [], []
    per_study = [1] * n_reports
    for _ in range(max(0, n_images - n_reports)):  # 1-3 images per study
        k = rng.randrange(n_reports)
        while per_study[k] >= 3:
            k = rng.randrange(n_reports)
        per_study[k] += 1
    for k in range(n_reports):
        study = f"2.25.{k + 1}"
        present = [w for w, (p, _) in FINDINGS.items() if rng.random() < p]
        absent = [w for w, (_, q) in FINDINGS.items() if w not in present and rng.random() < q]
        sentences = [f"There is {w}." for w in present] + [f"No {w}." for w in absent]
        text = ("FINDINGS: " + " ".join(sentences + rng.sample(FILLER, 10)) + " IMPRESSION: "
                + (present[0] if present else "no acute cardiopulmonary process") + ".")
        day = rng.randrange(3650)
        date = int(time.strftime("%Y%m%d", time.gmtime(1262304000 + day * 86400)))
        reports.append({
            "report_id": f"s{k:07d}", "study_uid": study, "text": text, "report_date": date,
            "icd10_positive": [c for w in present if (c := codes[w])],
            "icd10_negative": [c for w in absent if (c := codes[w])],
        })
        for j in range(per_study[k]):
            images.append({"sop_instance_uid": f"{study}.{j + 1}", "study_uid": study,
                           "modality": rng.choice(("CR", "DX")), "view_position": ("PA", "LATERAL", "AP")[j],
                           "body_part": "CHEST", "study_date": date})
    return reports, images


def unit_vectors(n: int, dim: int, seed: int, clusters: int = 512, spread: float = 0.6) -> np.ndarray:
    """Unit vectors with neighbourhood structure, as embeddings have: each is a random cluster centre plus noise
    (``spread`` of the centre's norm). Structureless random vectors (all nearly orthogonal) are the worst case
    of every ANN index and unlike any embedding."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    v = centres[rng.integers(0, clusters, n)] + rng.standard_normal((n, dim), dtype=np.float32) * (spread / dim ** 0.5)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def _vec(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.6f}" for x in v) + "]"


def load_postgres(dsn: str, index: str, reports: list[dict[str, Any]], images: list[dict[str, Any]],
                  rvec: np.ndarray, ivec: np.ndarray) -> float:
    from psycopg import sql
    from psycopg.types.json import Jsonb

    from medsearch import pgstore
    from medsearch.contracts.naming import names_for
    from medsearch.contracts.spec import MedicalSearchIndexSpec
    from medsearch.provision import ensure_schema

    ensure_schema(dsn, index, MedicalSearchIndexSpec())
    schema = names_for(index).pg_schema
    t0 = time.perf_counter()
    with pgstore.connect(dsn) as conn:
        rcols = ["report_id", "study_uid", "text", "findings", "report_date", "icd10_positive", "icd10_negative",
                 "sections", "entities", "text_vector"]
        with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(
                sql.Identifier(schema, "reports"), sql.SQL(", ").join(map(sql.Identifier, rcols)))) as cp:
            for r, v in zip(reports, rvec, strict=True):
                cp.write_row([r["report_id"], r["study_uid"], r["text"], r["text"], r["report_date"],
                              r["icd10_positive"], r["icd10_negative"], Jsonb({}), Jsonb([]), _vec(v)])
        icols = ["sop_instance_uid", "study_uid", "modality", "view_position", "body_part", "study_date", "embedding"]
        with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(
                sql.Identifier(schema, "images"), sql.SQL(", ").join(map(sql.Identifier, icols)))) as cp:
            for i, v in zip(images, ivec, strict=True):
                cp.write_row([i[c] for c in icols[:-1]] + [_vec(v)])
        conn.commit()
        conn.autocommit = True
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(schema, "reports")))
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(schema, "images")))
    return time.perf_counter() - t0


def load_milvus(uri: str, index: str, reports: list[dict[str, Any]], images: list[dict[str, Any]],
                rvec: np.ndarray, ivec: np.ndarray) -> float:
    from medsearch.contracts.naming import names_for
    from medsearch.contracts.spec import MedicalSearchIndexSpec
    from medsearch.provision import ensure_collections, milvus_client

    names = names_for(index)
    client = milvus_client(uri, timeout=600)
    ensure_collections(client, index, MedicalSearchIndexSpec())
    t0 = time.perf_counter()
    for start in range(0, len(reports), 2000):
        client.upsert(names.reports_collection, [
            {"report_id": r["report_id"], "study_uid": r["study_uid"], "report_date": r["report_date"],
             "icd10_positive": r["icd10_positive"], "icd10_negative": r["icd10_negative"], "icd10_uncertain": [],
             "text_vector": rvec[start + k].tolist()} for k, r in enumerate(reports[start:start + 2000])])
    for start in range(0, len(images), 2000):
        client.upsert(names.images_collection, [
            {**i, "laterality": "", "embedding": ivec[start + k].tolist()}
            for k, i in enumerate(images[start:start + 2000])])
    for coll in names.collections:
        client.flush(coll)
    client.close()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------- operations

SEARCH = ("query($q: String, $mode: SearchMode!, $after: String) { searchReports(query: $q, mode: $mode, first: 10,"
          " after: $after) { totalCount edges { score node { id } snippet { html } } } }")
LISTING = ("query($after: String) { searchReports(first: 10, after: $after) "
           "{ edges { node { id reportDate impression } } pageInfo { hasNextPage endCursor } } }")
FACETS = "query($q: String) { icd10Facets(query: $q, size: 20) { code count } }"
SIMILAR = ("query($id: ID!, $f: ImageFilter) { similarImages(imageId: $id, k: 10, filter: $f) "
           "{ score image { id } } }")
COMPAT = ["query { searchReports(input: \"pleural effusion\") { ReportId Impression } }",
          "query { getAllPositiveICD10CMs { key doc_count } }",
          "query { listReports(from: 0, size: 10) { ReportId } }"]
QUERIES = ["pleural effusion", "cardiomegaly", "pneumothorax", "edema", "atelectasis"]


def request(op: str, rng: random.Random, n_studies: int) -> tuple[str, dict[str, Any], str]:
    from medsearch_api.search import encode_cursor

    if op == "keyword":
        return SEARCH, {"q": rng.choice(QUERIES), "mode": "KEYWORD"}, "/graphql"
    if op == "hybrid":
        return SEARCH, {"q": rng.choice(QUERIES), "mode": "HYBRID"}, "/graphql"
    if op == "facets_query":
        return FACETS, {"q": rng.choice(QUERIES)}, "/graphql"
    if op == "facets_all":
        return FACETS, {}, "/graphql"
    if op == "listing_page100":
        return LISTING, {"after": encode_cursor(989)}, "/graphql"  # page 100 of 10, newest first
    if op == "similar_filtered":
        return SIMILAR, {"id": f"2.25.{rng.randint(1, max(1, n_studies))}.1",
                         "f": {"positiveCodes": [rng.choice(["J90", "I51.7", "J93.9"])]}}, "/graphql"
    return rng.choice(COMPAT), {}, "/compat/graphql"


_TIMING = re.compile(r"(postgres|milvus|total);dur=([0-9.]+)")


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return round(s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))], 2) if s else 0.0


def drive(base: str, op: str, clients: int, requests: int, n_reports: int) -> dict[str, Any]:
    import httpx

    lat: list[float] = []
    split: dict[str, list[float]] = {"postgres": [], "milvus": [], "total": []}
    errors: list[str] = []
    lock = threading.Lock()
    per = max(1, requests // clients)

    def worker(w: int) -> None:
        rng = random.Random(7000 + w)
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=300) as c:
            for _ in range(per):
                q, v, path = request(op, rng, n_reports)
                t0 = time.perf_counter()
                r = c.post(path, json={"query": q, "variables": v})
                dt = (time.perf_counter() - t0) * 1000
                timing = dict((k, float(x)) for k, x in _TIMING.findall(r.headers.get("server-timing", "")))
                body = r.json()
                with lock:
                    if r.status_code != 200 or "errors" in body:
                        errors.append(str(body)[:300])
                    lat.append(dt)
                    for k in split:
                        split[k].append(timing.get(k, 0.0))

    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=300) as c:
        for k in range(3):  # warm-up: connections, pools, caches
            q, v, path = request(op, random.Random(k), n_reports)
            c.post(path, json={"query": q, "variables": v})
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    gateway = [t - p - m for t, p, m in zip(split["total"], split["postgres"], split["milvus"], strict=True)]
    return {"requests": len(lat), "errors": len(errors), "first_error": errors[0] if errors else None,
            "rps": round(len(lat) / wall, 1), "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "postgres_p50_ms": pct(split["postgres"], 50), "milvus_p50_ms": pct(split["milvus"], 50),
            "gateway_p50_ms": pct(gateway, 50),
            "client_overhead_p50_ms": pct([a - b for a, b in zip(lat, split["total"], strict=True)], 50)}


# --------------------------------------------------------------------------------------------- correctness


def shown(r: dict[str, Any], query: str, codes: set[str]) -> bool:
    toks = set(_TOK.findall(query.lower()))
    if not toks & set(_TOK.findall(r["text"].lower())):
        return False
    return not (codes & set(r["icd10_negative"]) and not codes & set(r["icd10_positive"]))


def check_counts(base: str, reports: list[dict[str, Any]]) -> dict[str, Any]:
    import httpx

    from medsearch.findings import query_findings

    out: dict[str, Any] = {"checked": [], "ok": True}
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=300) as c:
        def gql(q: str, v: dict[str, Any]) -> Any:
            body = c.post("/graphql", json={"query": q, "variables": v}).json()
            if "errors" in body:
                raise RuntimeError(str(body)[:300])
            return body["data"]

        for query in QUERIES[:3]:
            codes = {x for cs in query_findings(query).values() for x in cs}
            listed = [r for r in reports if shown(r, query, codes)]
            total = gql(SEARCH, {"q": query, "mode": "KEYWORD"})["searchReports"]["totalCount"]
            facets = {f["code"]: f["count"] for f in gql(FACETS, {"q": query})["icd10Facets"]}
            brute = Counter(code for r in listed for code in set(r["icd10_positive"]))
            top = dict(brute.most_common(20))
            ok = total == len(listed) and facets == top
            # facets count the reports the list shows: the top code's count never exceeds the list's total
            ok = ok and all(n <= total for n in facets.values())
            out["checked"].append({"query": query, "totalCount": total, "brute_force": len(listed),
                                   "facets_equal_brute_force": facets == top})
            out["ok"] = out["ok"] and ok
        everything = {f["code"]: f["count"] for f in gql(FACETS, {})["icd10Facets"]}
        brute_all = dict(Counter(code for r in reports for code in set(r["icd10_positive"])).most_common(20))
        out["facets_all_equal_brute_force"] = everything == brute_all
        out["ok"] = out["ok"] and everything == brute_all
    return out


def warm_up(base: str, image_id: str, deadline_s: float = 900) -> dict[str, Any]:
    """Search both collections until Milvus answers: right after a load, milvus-lite loads a large collection on
    the first search, which can outlast the gateway's Milvus timeout (the gateway answers SERVICE_UNAVAILABLE).
    Returns how long that took and how many searches failed, so the cold start is reported, not hidden."""
    import httpx

    t0, failed, last = time.perf_counter(), 0, ""
    searches = [(SIMILAR, {"id": image_id, "f": None}),
                (SEARCH, {"q": "pleural effusion", "mode": "HYBRID"})]
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=300) as c:
        while searches:
            query, variables = searches[0]
            body = c.post("/graphql", json={"query": query, "variables": variables}).json()
            if "errors" not in body:
                searches.pop(0)
                continue
            failed, last = failed + 1, str(body["errors"])[:300]
            if time.perf_counter() - t0 > deadline_s:
                raise RuntimeError(f"Milvus did not answer within {deadline_s:g} s: {last}")
            time.sleep(2)
    return {"seconds": round(time.perf_counter() - t0, 1), "failed_searches": failed, "last_error": last or None}


def check_recall(base: str, images: list[dict[str, Any]], reports: list[dict[str, Any]], ivec: np.ndarray,
                 samples: int, seed: int) -> dict[str, Any]:
    import httpx

    rng = random.Random(seed)
    index = {i["sop_instance_uid"]: k for k, i in enumerate(images)}
    recalls: list[float] = []
    failed: list[str] = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=300) as c:
        for _ in range(samples):
            code = rng.choice(["J90", "I51.7", "J93.9", "R91.1"])
            studies = {r["study_uid"] for r in reports if code in r["icd10_positive"]}
            src = images[rng.randrange(len(images))]
            keep = np.array([i["study_uid"] in studies and i is not src for i in images])
            scores = ivec @ ivec[index[src["sop_instance_uid"]]]
            scores[~keep] = -np.inf
            exact = {images[k]["sop_instance_uid"] for k in np.argsort(-scores)[:10] if np.isfinite(scores[k])}
            body = c.post("/graphql", json={"query": SIMILAR, "variables": {
                "id": src["sop_instance_uid"], "f": {"positiveCodes": [code]}}}).json()
            if "errors" in body:  # counted as recall 0 and reported: the run goes on
                failed.append(f"{code}: {str(body['errors'])[:300]}")
                recalls.append(0.0)
                continue
            got = {h["image"]["id"] for h in body["data"]["similarImages"]}
            recalls.append(len(got & exact) / max(1, len(exact)))
    return {"samples": samples, "recall_at_10": round(statistics.fmean(recalls), 4), "failed": len(failed),
            "first_failure": failed[0] if failed else None}


def meets(ops: dict[str, dict[int, dict[str, Any]]]) -> tuple[bool, list[str]]:
    missed = []
    for op, per_clients in TARGETS.items():
        for clients, limits in per_clients.items():
            got = ops.get(op, {}).get(clients)
            if got is None:
                continue
            for stat, limit in limits.items():
                if got[f"{stat}_ms"] > limit or got["errors"]:
                    missed.append(f"{op} {clients} client(s) {stat} {got[f'{stat}_ms']} ms > {limit} ms"
                                  if got[f"{stat}_ms"] > limit else f"{op} {clients} client(s): errors")
    return not missed, missed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reports", type=int, default=20000, help="reports (MIMIC-CXR: 227835)")
    p.add_argument("--images", type=int, default=None, help="images (default: 1.655 per report, MIMIC-CXR's ratio)")
    p.add_argument("--requests", type=int, default=40, help="requests per operation and client count")
    p.add_argument("--ops", default=",".join(TARGETS), help="comma-separated operations")
    p.add_argument("--recall-samples", type=int, default=20)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--data-dir", type=Path, default=None,
                   help="keep the stores' data (and the gateway log) here; a later run of the same size reuses it")
    args = p.parse_args(argv)
    n_images = args.images or round(args.reports * 377110 / 227835)

    from medsearch_dev.localstack import postgres, procs

    out: dict[str, Any] = {"benchmark": "scale", "reports": args.reports, "images": n_images,
                           "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    t0 = time.perf_counter()
    reports, images = generate(args.reports, n_images, args.seed)
    rvec, ivec = unit_vectors(len(reports), 384, args.seed), unit_vectors(len(images), 1024, args.seed + 1)
    out["generate_seconds"] = round(time.perf_counter() - t0, 1)
    index = "benchscale"
    with contextlib.ExitStack() as stack:
        if args.data_dir is None:
            tmpd = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="medsearch-bench-scale-")))
        else:
            tmpd = args.data_dir.expanduser().resolve()
            tmpd.mkdir(parents=True, exist_ok=True)
        os.chmod(tmpd, 0o711)  # PostgreSQL may run as another user (when this runs as root)
        marker, dataset = tmpd / "loaded.json", {"reports": args.reports, "images": n_images, "seed": args.seed}
        if not marker.exists() and any((tmpd / d).exists() for d in ("pg", "milvus")):
            raise SystemExit(f"{tmpd} holds an unfinished or foreign load (no loaded.json): remove it or use another "
                             "--data-dir")
        loaded = json.loads(marker.read_text()) if marker.exists() else None
        if loaded is not None and loaded.get("dataset") != dataset:
            raise SystemExit(f"{tmpd} holds another data set ({loaded.get('dataset')}): use another --data-dir")
        dsn = stack.enter_context(postgres.running(tmpd / "pg", tmpd))
        uri = stack.enter_context(procs.milvus_lite(tmpd / "milvus", tmpd))
        if loaded is not None:
            from medsearch.contracts.spec import MedicalSearchIndexSpec
            from medsearch.provision import ensure_schema

            ensure_schema(dsn, index, MedicalSearchIndexSpec())  # migrations shipped since the load
            out["load_seconds"] = {**loaded["load_seconds"], "reused": True}
            progress(f"reusing the data loaded in {tmpd}")
        else:
            progress(f"loading {args.reports:,} reports and {n_images:,} images into PostgreSQL")
            pg_s = round(load_postgres(dsn, index, reports, images, rvec, ivec), 1)
            progress(f"PostgreSQL loaded in {pg_s} s; loading milvus-lite")
            out["load_seconds"] = {"postgres": pg_s,
                                   "milvus": round(load_milvus(uri, index, reports, images, rvec, ivec), 1)}
            progress(f"milvus-lite loaded in {out['load_seconds']['milvus']} s")
            if args.data_dir is not None:
                marker.write_text(json.dumps({"dataset": dataset, "load_seconds": out["load_seconds"]}) + "\n")
        (tmpd / "tokens").write_text(f"{TOKEN} reader bench\n")
        port = procs.free_port()
        base = f"http://127.0.0.1:{port}"
        env = {"MEDSEARCH_INDEX": index, "MEDSEARCH_MILVUS_URI": uri, "MEDSEARCH_POSTGRES_DSN": dsn,
               "MEDSEARCH_API_PORT": str(port), "MEDSEARCH_API_TOKENS_FILE": str(tmpd / "tokens"),
               "MEDSEARCH_LOG_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1"}
        stack.enter_context(procs.running([sys.executable, "-m", "medsearch_api"],
                                          ready=lambda: procs.http_ready(base + "/healthz"), what="gateway",
                                          log_path=tmpd / "gateway.log", env=env, timeout=180))
        progress("gateway up; waiting for Milvus to answer")
        out["warm_up"] = warm_up(base, images[0]["sop_instance_uid"])
        progress("checking counts, facets and recall against brute force")
        out["correctness"] = {"counts": check_counts(base, reports),
                              "similar_filtered": check_recall(base, images, reports, ivec, args.recall_samples,
                                                               args.seed)}
        ops: dict[str, dict[int, dict[str, Any]]] = {}
        for op in args.ops.split(","):
            progress(f"driving {op}")
            ops[op] = {c: drive(base, op, c, args.requests * (1 if c == 1 else 2), args.reports)
                       for c in sorted(TARGETS[op])} if op in TARGETS else {}
        out["ops"] = {op: {f"{c}_clients": v for c, v in per.items()} for op, per in ops.items()}
    ok, missed = meets(ops)
    correct = (out["correctness"]["counts"]["ok"]
               and out["correctness"]["similar_filtered"]["recall_at_10"] >= 0.95
               and not out["correctness"]["similar_filtered"]["failed"])
    out["missed"] = missed + ([] if correct else ["correctness (counts, facets or recall@10)"])
    out["meets_target"] = ok and correct
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
