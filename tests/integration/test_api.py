"""The gateway over real services: a real PostgreSQL (the system of record) and a milvus-lite server (the ANN
engine) seeded with rows built from the contract's field lists,
the real model server process (random weights) for upload similarity, the real MiniLM for SEMANTIC search, a
real Tansu broker for the ingest mutation. Every answer is checked against a brute-force computation over the
seeded rows."""

from __future__ import annotations

import base64
import io
import itertools
import math
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from medsearch_dev.localstack import procs
from medsearch_dev.testing import provision_index, seed_operations

from medsearch import pgstore, store
from medsearch.contracts.collections import IMAGE_ANN_FIELDS, IMAGE_FIELDS, REPORT_ANN_FIELDS, REPORT_FIELDS, ann_row
from medsearch.contracts.naming import names_for
from medsearch.contracts.settings import ApiSettings
from medsearch.contracts.spec import MedicalSearchIndexSpec
from medsearch.provision import (
    count_rows,
    drop_collections,
    drop_schema,
    kafka_admin,
    milvus_client,
)

pytestmark = pytest.mark.integration

READER = "it-reader-token-000000000001"
INGESTER = "it-ingester-token-00000000002"
INPUT_SIZE = 64
N_STUDIES = 60

FINDINGS = {  # word in text -> (ICD-10-CM code, entity kind)
    "effusion": ("J91.8", "signs"),
    "cardiomegaly": ("I51.7", "diagnoses"),
    "edema": ("J81.1", "diagnoses"),
    "pneumothorax": ("J93.9", "diagnoses"),
    "pneumonia": ("J18.9", "diagnoses"),
    "atelectasis": ("J98.11", "signs"),
    "nodule": ("R91.1", "signs"),
    "cough": ("R05.9", "symptoms"),
}
_TOK = re.compile(r"\w+")


def toks(text: str) -> set[str]:
    return set(_TOK.findall(text.lower()))


def _default(f: Any) -> Any:
    return {"VARCHAR": "", "INT32": 0, "INT64": 0, "JSON": {}, "ARRAY": []}.get(f.dtype)


def _unit(rng: random.Random, dim: int) -> list[float]:
    v = [rng.gauss(0, 1) for _ in range(dim)]
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def build_rows(seed: int = 7) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rng = random.Random(seed)
    reports, images = [], []
    words = list(FINDINGS)
    for s in range(N_STUDIES):
        study = f"1.2.826.0.1.{s + 1}"
        present = rng.sample(words, rng.randint(0, 3))
        absent = rng.sample([w for w in words if w not in present], rng.randint(0, 2))
        sentences = [f"There is {w} noted." for w in present] + [f"No {w}." for w in absent]
        if not sentences:
            sentences = ["No acute cardiopulmonary disease."]
        text = "FINDINGS: " + " ".join(sentences) + " IMPRESSION: " + (present[0] if present else "normal") + "."
        row = {f.name: _default(f) for f in REPORT_FIELDS if f.dtype != "FLOAT_VECTOR"}
        row.update(
            report_id=f"rep-{s:03d}", study_uid=study, text=text, findings=" ".join(sentences),
            impression=present[0] if present else "normal", sections={"findings": " ".join(sentences)},
            report_date=20190101 + (s % 6) * 10000 + (s % 12) * 100 + (s % 27),
            icd10_positive=[FINDINGS[w][0] for w in present], icd10_negative=[FINDINGS[w][0] for w in absent],
            entities=[{"text": w, "category": FINDINGS[w][1], "icd10": [{"code": FINDINGS[w][0]}]} for w in present],
            nlp_backend="test", ingested_at=1_700_000_000_000 + s,
        )
        for pol, ws in (("positive", present), ("negative", absent)):
            for kind in ("signs", "diagnoses", "symptoms"):
                row[f"{pol}_{kind}"] = [w for w in ws if FINDINGS[w][1] == kind]
        reports.append(row)
        for j in range(2):
            img = {f.name: _default(f) for f in IMAGE_FIELDS if f.dtype != "FLOAT_VECTOR"}
            img.update(
                sop_instance_uid=f"{study}.{j + 1}", study_uid=study, series_uid=f"{study}.100",
                report_id=row["report_id"] if j == 0 else "", modality=("CR", "DX")[s % 2],
                view_position=("PA", "AP")[s % 3 == 0] if j == 0 else "LATERAL",
                body_part="CHEST" if s % 10 else "ABDOMEN", rows=64, columns=64, frames=1,
                study_date=row["report_date"], model_name="densenet121", model_version="random",
                embedding=_unit(rng, 1024),
            )
            images.append(img)
    return reports, images


@dataclass
class Seeded:
    index: str
    reports: list[dict[str, Any]]
    images: list[dict[str, Any]]
    client: Any  # TestClient
    store_url: str
    kafka: str
    model_url: str

    def gql(self, query: str, variables: dict[str, Any] | None = None, token: str | None = READER,
            path: str = "/graphql") -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client.post(path, json={"query": query, "variables": variables or {}}, headers=headers)

    def data(self, query: str, variables: dict[str, Any] | None = None, path: str = "/graphql") -> Any:
        r = self.gql(query, variables, path=path)
        body = r.json()
        assert r.status_code == 200 and "errors" not in body, body
        return body["data"]

    def by_id(self, rid: str) -> dict[str, Any]:
        return next(r for r in self.reports if r["report_id"] == rid)


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory, service_logs: Path) -> Iterator[str]:
    http_port, grpc_port = procs.free_port(), procs.free_port()
    url = f"http://127.0.0.1:{http_port}"
    cmd = [sys.executable, "-m", "medsearch_model_server", "--weights", "random", "--input-size", str(INPUT_SIZE),
           "--host", "127.0.0.1", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
           "--cache-dir", str(tmp_path_factory.mktemp("model-cache"))]
    with procs.running(cmd, ready=lambda: procs.http_ready(url + "/v2/health/ready"), what="model server",
                       log_path=service_logs / "api-model-server.log", timeout=300):
        yield url


def _png(seed: int) -> bytes:
    from PIL import Image

    arr = np.random.default_rng(seed).integers(0, 255, size=(48, 48), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def seeded(milvus_uri: str, kafka_bootstrap: str, model_server: str, postgres_dsn: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    from fastapi.testclient import TestClient
    from medsearch_api.app import create_app

    from medsearch.embedding_client import EmbeddingClient
    from medsearch.text_embedding import embed_texts

    index = "apitest" + format(random.Random().getrandbits(24), "x")
    spec = MedicalSearchIndexSpec()
    provision_index(index, spec, dsn=postgres_dsn, bootstrap=kafka_bootstrap, milvus_uri=milvus_uri)
    client = milvus_client(milvus_uri)
    reports, images = build_rows()
    vecs = embed_texts([r["text"] for r in reports])
    for r, v in zip(reports, vecs, strict=True):
        r["text_vector"] = [float(x) for x in v]
    # one image whose vector is the model server's embedding of a known PNG (for the upload query)
    with EmbeddingClient(model_server) as ec:
        images[5]["embedding"] = [float(x) for x in ec.embed_image_bytes(_png(1))]
    root = tmp_path_factory.mktemp("objects")
    store_url = f"file://{root}"
    for img in images[:6]:
        uri = store.join(store_url, index, "thumbnails", img["sop_instance_uid"] + ".png")
        store.put_bytes(uri, _png(100 + images.index(img)))
        img["thumbnail_uri"] = uri
    (root / "outside.png").write_bytes(b"not for you")
    images[6]["thumbnail_uri"] = f"{store_url}/{index}/../outside.png"
    names = names_for(index)
    with pgstore.connect(postgres_dsn) as conn:  # the system of record first, as the workers write
        pgstore.upsert_reports(conn, index, reports)
        pgstore.upsert_images(conn, index, images)
    client.upsert(names.reports_collection, [ann_row(r, REPORT_ANN_FIELDS) for r in reports])
    client.upsert(names.images_collection, [ann_row(i, IMAGE_ANN_FIELDS) for i in images])
    for coll in names.collections:  # seal the segments, as Milvus does on its own after writes
        client.flush(coll)
    tokens = tmp_path_factory.mktemp("tok") / "tokens"
    tokens.write_text(f"{READER} reader it\n{INGESTER} ingester it\n")
    settings = ApiSettings(index=index, milvus_uri=milvus_uri, kafka_bootstrap=kafka_bootstrap,
                           postgres_dsn=postgres_dsn, model_server_url=model_server, object_store_url=store_url,
                           api_tokens_file=tokens)
    with TestClient(create_app(settings)) as tc:
        yield Seeded(index, reports, images, tc, store_url, kafka_bootstrap, model_server)
    drop_collections(client, index)
    client.close()
    drop_schema(postgres_dsn, index)


# ------------------------------------------------------------------------------------------------ lookups


def test_report_image_study(seeded: Seeded) -> None:
    r = seeded.reports[3]
    d = seeded.data("""query($id: ID!) { report(id: $id) { id studyUid text reportDate
        icd10Positive { code description }
        positiveSigns entities { text } images { id viewPosition } study { uid images { id } reports { id } } } }""",
                    {"id": r["report_id"]})["report"]
    assert d["id"] == r["report_id"] and d["text"] == r["text"] and d["studyUid"] == r["study_uid"]
    assert [c["code"] for c in d["icd10Positive"]] == r["icd10_positive"]
    assert d["positiveSigns"] == r["positive_signs"]
    assert [i["id"] for i in d["images"]] == [f"{r['study_uid']}.1", f"{r['study_uid']}.2"]
    assert d["study"]["reports"] == [{"id": r["report_id"]}]
    img = seeded.data('query($id: ID!) { image(id: $id) { id modality viewPosition bodyPart report { id } } }',
                      {"id": f"{r['study_uid']}.2"})["image"]
    assert img["report"] == {"id": r["report_id"]} and img["viewPosition"] == "LATERAL"
    assert seeded.data('{ report(id: "missing-1") { id } image(id: "9.9") { id } study(uid: "9.9") { uid } }') == {
        "report": None, "image": None, "study": None}


# ------------------------------------------------------------------------------------------------ search

SEARCH = """query($q: String, $mode: SearchMode!, $first: Int!, $after: String, $f: ReportFilter) {
  searchReports(query: $q, mode: $mode, first: $first, after: $after, filter: $f) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { score node { id text } snippet { text highlights { start end } } } } }"""


def _all_pages(seeded: Seeded, variables: dict[str, Any], first: int = 7) -> tuple[list[dict[str, Any]], int]:
    out, after, total = [], None, -1
    for _ in range(100):
        d = seeded.data(SEARCH, {**variables, "first": first, "after": after})["searchReports"]
        total = d["totalCount"]
        out.extend(d["edges"])
        if not d["pageInfo"]["hasNextPage"]:
            break
        after = d["pageInfo"]["endCursor"]
    return out, total


def test_finding_search_puts_asserting_reports_first_and_leaves_out_negating_ones(seeded: Seeded) -> None:
    for mode in ("KEYWORD", "HYBRID"):
        edges, total = _all_pages(seeded, {"q": "pneumothorax", "mode": mode}, first=5)
        ids = [e["node"]["id"] for e in edges]
        positive = {r["report_id"] for r in seeded.reports if "J93.9" in r["icd10_positive"]}
        negated_only = {r["report_id"] for r in seeded.reports
                        if "J93.9" in r["icd10_negative"] and "J93.9" not in r["icd10_positive"]}
        assert positive and negated_only
        assert not set(ids) & negated_only
        assert set(ids[:len(positive)]) == positive  # asserting reports first, whatever their BM25 rank
        if mode == "KEYWORD":
            assert total == len(ids)
    # Asking for the negated finding explicitly turns the rule off: the negating reports are what was asked for.
    edges, _ = _all_pages(seeded, {"q": "pneumothorax", "mode": "KEYWORD",
                                   "f": {"negativeCodes": ["J93.9"]}})
    assert {e["node"]["id"] for e in edges} == negated_only


def test_keyword_search_pages_through_exactly_the_matching_reports(seeded: Seeded) -> None:
    q = "noted normal"  # names no finding: plain BM25 over every report sharing a token
    edges, total = _all_pages(seeded, {"q": q, "mode": "KEYWORD"})
    expected = {r["report_id"] for r in seeded.reports if toks(r["text"]) & toks(q)}
    ids = [e["node"]["id"] for e in edges]
    assert len(ids) == len(set(ids)) == total == len(expected) and set(ids) == expected
    scores = [e["score"] for e in edges]
    assert all(s > 0 for s in scores) and scores == sorted(scores, reverse=True)
    for e in edges:
        marked = {e["snippet"]["text"][h["start"]:h["end"]].lower() for h in e["snippet"]["highlights"]}
        assert marked and marked <= toks(q)


def test_filters_match_brute_force(seeded: Seeded) -> None:
    f = {"positiveCodes": ["J91.8"], "viewPosition": ["PA"], "dateFrom": "2020-01-01", "dateTo": "2023-12-31"}
    edges, total = _all_pages(seeded, {"mode": "KEYWORD", "f": f})
    pa_studies = {i["study_uid"] for i in seeded.images if i["view_position"] == "PA"}
    expected = {r["report_id"] for r in seeded.reports if "J91.8" in r["icd10_positive"]
                and r["study_uid"] in pa_studies and 20200101 <= r["report_date"] <= 20231231}
    assert expected and {e["node"]["id"] for e in edges} == expected and total == len(expected)
    f2 = {"negativeCodes": ["J93.9"], "bodyPart": ["ABDOMEN"]}
    edges, _ = _all_pages(seeded, {"q": "no", "mode": "KEYWORD", "f": f2})
    abd = {i["study_uid"] for i in seeded.images if i["body_part"] == "ABDOMEN"}
    assert {e["node"]["id"] for e in edges} == {
        r["report_id"] for r in seeded.reports if "J93.9" in r["icd10_negative"] and r["study_uid"] in abd}


def test_listing_without_a_query_pages_newest_first(seeded: Seeded) -> None:
    # Milvus returns query rows in storage order; the listing must be one global order across pages.
    f = {"positiveCodes": ["J91.8"]}
    edges, total = _all_pages(seeded, {"mode": "KEYWORD", "f": f}, first=6)
    want = sorted((r for r in seeded.reports if "J91.8" in r["icd10_positive"]),
                  key=lambda r: (-r["report_date"], r["report_id"]))
    assert len(want) > 6 and total == len(want)  # more than one page
    assert [e["node"]["id"] for e in edges] == [r["report_id"] for r in want]


def test_semantic_and_hybrid(seeded: Seeded) -> None:
    target = seeded.reports[11]
    for mode in ("SEMANTIC", "HYBRID"):
        d = seeded.data(SEARCH, {"q": target["text"], "mode": mode, "first": 5})["searchReports"]
        assert d["edges"][0]["node"]["id"] == target["report_id"], mode
        assert len(d["edges"]) == 5
    d = seeded.data(SEARCH, {"q": "fluid around the lungs", "mode": "SEMANTIC", "first": 3,
                             "f": {"positiveCodes": ["I51.7"]}})["searchReports"]
    assert all("I51.7" in seeded.by_id(e["node"]["id"])["icd10_positive"] for e in d["edges"])


def _repository(seeded: Seeded, milvus_uri: str, postgres_dsn: str) -> Any:
    from medsearch_api.repository import LazyClient, PgPool, SearchRepository

    return SearchRepository(PgPool(postgres_dsn), LazyClient(milvus_uri), seeded.index)


HYBRID_CASES = [  # (query, filter): findings asserted by many, by few, by none; no finding; filters on both stores
    ("pneumothorax", {}), ("effusion cough", {}), ("rib fracture", {}), ("noted normal", {}),
    ("cardiomegaly", {"date_from": 20200101}), ("edema", {"view_positions": ("PA",)}),
]


def test_report_knn_deepening_gives_the_full_depth_answer(seeded: Seeded, milvus_uri: str, postgres_dsn: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The report k-NN deepens its Milvus window step by step (sized from the pass rate, stopping once every
    finding-tier report is seen), and HYBRID ranks the keyword list while the query is embedded: the pages are
    exactly those of one search over every row (no deepening), for SEMANTIC and HYBRID, ready or pending vectors."""
    import asyncio

    from medsearch_api import repository as repo_mod
    from medsearch_api.records import ReportFilterSpec, SearchMode

    from medsearch.text_embedding import embed_texts

    repo = _repository(seeded, milvus_uri, postgres_dsn)
    searches: list[int] = []
    search = repo._search

    def counted(*args: Any) -> Any:
        searches.append(args[4])
        return search(*args)

    monkeypatch.setattr(repo, "_search", counted)

    async def pages(query: str, f: ReportFilterSpec, mode: SearchMode, pending: bool, vec: list[float]
                    ) -> list[list[str]]:
        out = []
        for offset, limit in ((0, 3), (3, 5), (0, 10)):
            fut: Any = vec
            if pending:
                fut = asyncio.get_running_loop().create_future()
                fut.set_result(vec)
            page = await repo.search_reports(query=query, mode=mode, query_vector=fut, filter=f, offset=offset,
                                             limit=limit)
            out.append([h.report.report_id for h in page.hits])
        return out

    async def both() -> None:
        deepened = 0
        for (query, fields), other in itertools.product(HYBRID_CASES, (False, True)):
            f = ReportFilterSpec(**fields)
            # the query's own vector, or one far from it (its finding's reports lie deep in the neighbours)
            vec = [float(x) for x in embed_texts(["chest radiograph with a normal heart" if other else query])[0]]
            for mode in (SearchMode.SEMANTIC, SearchMode.HYBRID):
                monkeypatch.setattr(repo_mod, "DENSE_FIRST_DEPTH", 1)  # the smallest windows: deepening runs
                searches.clear()
                stepped = await pages(query, f, mode, True, vec)
                steps = list(searches)
                monkeypatch.setattr(repo_mod, "DENSE_FIRST_DEPTH", 10 * len(seeded.reports))  # every row at once
                whole = await pages(query, f, mode, False, vec)
                assert stepped == whole, (query, fields, mode, other)
                assert any(p for p in whole), (query, fields, mode)
                assert max(steps) < 10 * len(seeded.reports)
                deepened += len(steps) > 3
                if query == "rib fracture":  # no report asserts it: no deepening for a finding tier nobody is in
                    assert len(steps) == 3, steps  # one search per page
        assert deepened >= 4  # the stepped runs did deepen
        await repo.close()

    asyncio.run(both())


# ------------------------------------------------------------------------------------------------ images

SIMILAR = """query($id: ID, $u: String, $k: Int!, $f: ImageFilter) {
  similarImages(imageId: $id, uploadBase64: $u, k: $k, filter: $f) { score image { id viewPosition modality } } }"""


def _brute_knn(seeded: Seeded, vec: list[float], k: int, keep: Any) -> list[str]:
    q = np.asarray(vec)
    scored = [(float(np.dot(q, np.asarray(i["embedding"]))), i["sop_instance_uid"]) for i in seeded.images if keep(i)]
    return [uid for _, uid in sorted(scored, reverse=True)[:k]]


def test_similar_images_by_id_with_filters(seeded: Seeded) -> None:
    src = seeded.images[0]
    d = seeded.data(SIMILAR, {"id": src["sop_instance_uid"], "k": 8})["similarImages"]
    ids = [h["image"]["id"] for h in d]
    assert src["sop_instance_uid"] not in ids and len(ids) == 8
    assert ids == _brute_knn(seeded, src["embedding"], 8, lambda i: i is not src)
    f = {"viewPosition": ["AP"], "modality": ["CR"]}
    d = seeded.data(SIMILAR, {"id": src["sop_instance_uid"], "k": 5, "f": f})["similarImages"]
    assert [h["image"]["id"] for h in d] == _brute_knn(
        seeded, src["embedding"], 5,
        lambda i: i is not src and i["view_position"] == "AP" and i["modality"] == "CR")
    f = {"positiveCodes": ["J93.9"]}
    d = seeded.data(SIMILAR, {"id": src["sop_instance_uid"], "k": 100, "f": f})["similarImages"]
    studies = {r["study_uid"] for r in seeded.reports if "J93.9" in r["icd10_positive"]}
    assert {h["image"]["id"] for h in d} == {i["sop_instance_uid"] for i in seeded.images
                                             if i["study_uid"] in studies and i is not src}


def test_similar_images_by_upload_uses_the_model_server(seeded: Seeded) -> None:
    d = seeded.data(SIMILAR, {"u": base64.b64encode(_png(1)).decode(), "k": 3})["similarImages"]
    assert d[0]["image"]["id"] == seeded.images[5]["sop_instance_uid"] and d[0]["score"] > 0.999
    r = seeded.gql(SIMILAR, {"u": base64.b64encode(b"definitely not an image").decode(), "k": 3})
    assert r.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


# ------------------------------------------------------------------------------------------------ facets


def shown(r: dict[str, Any], query: str) -> bool:
    """Whether a keyword search for ``query`` lists report ``r``: it shares a token with the query and does not
    only negate a finding the query names (the finding rule)."""
    from medsearch.findings import query_findings

    codes = {c for cs in query_findings(query).values() for c in cs}
    negates_only = bool(codes & set(r["icd10_negative"])) and not codes & set(r["icd10_positive"])
    return bool(toks(r["text"]) & toks(query)) and not negates_only


def _brute_codes(seeded: Seeded, field: str, query: str | None = None, keep: Any = None) -> dict[str, int]:
    """Facet counts over the reports the list shows (facets count what the list shows: the same finding rule)."""
    c: Counter[str] = Counter()
    for r in seeded.reports:
        if query is not None and not shown(r, query):
            continue
        if keep is not None and not keep(r):
            continue
        c.update(set(r[field]))
    return dict(c)


def test_icd10_facets_match_brute_force(seeded: Seeded) -> None:
    q = ("query($q: String, $p: Polarity!, $f: ReportFilter) { "
         "icd10Facets(query: $q, polarity: $p, filter: $f, size: 100) { code description count } }")
    for query, pol, field in ((None, "POSITIVE", "icd10_positive"), (None, "NEGATIVE", "icd10_negative"),
                              ("effusion cough", "POSITIVE", "icd10_positive"), ("no", "NEGATIVE", "icd10_negative")):
        got = seeded.data(q, {"q": query, "p": pol})["icd10Facets"]
        assert {f["code"]: f["count"] for f in got} == _brute_codes(seeded, field, query), (query, pol)
        counts = [f["count"] for f in got]
        assert counts == sorted(counts, reverse=True)
    got = seeded.data(q, {"p": "POSITIVE", "f": {"dateFrom": "2021-01-01"}})["icd10Facets"]
    assert {f["code"]: f["count"] for f in got} == _brute_codes(
        seeded, "icd10_positive", keep=lambda r: r["report_date"] >= 20210101)
    ap = {i["study_uid"] for i in seeded.images if i["view_position"] == "AP"}  # through the study's images
    got = seeded.data(q, {"p": "POSITIVE", "f": {"viewPosition": ["AP"]}})["icd10Facets"]
    assert {f["code"]: f["count"] for f in got} == _brute_codes(
        seeded, "icd10_positive", keep=lambda r: r["study_uid"] in ap)
    eff = next(f for f in seeded.data(q, {"p": "POSITIVE"})["icd10Facets"] if f["code"] == "J91.8")
    assert eff["description"].startswith("Pleural effusion")


def test_entity_facets_match_brute_force(seeded: Seeded) -> None:
    ids = [r["report_id"] for r in seeded.reports[:20]]
    got = seeded.data('query($ids: [ID!]) { entityFacets(kind: DIAGNOSIS, reportIds: $ids, size: 50) { term count } }',
                      {"ids": ids})["entityFacets"]
    expected = Counter(w for r in seeded.reports[:20] for w in set(r["positive_diagnoses"]))
    assert {f["term"]: f["count"] for f in got} == dict(expected)
    got = seeded.data('{ entityFacets(kind: SIGN, polarity: NEGATIVE, query: "effusion", size: 50) { term count } }')
    expected = Counter(w for r in seeded.reports if shown(r, "effusion") for w in set(r["negative_signs"]))
    assert {f["term"]: f["count"] for f in got["entityFacets"]} == dict(expected)
    got = seeded.data('{ entityFacets(kind: DIAGNOSIS, size: 50) { term count } }')["entityFacets"]
    assert {f["term"]: f["count"] for f in got} == dict(Counter(w for r in seeded.reports
                                                                for w in set(r["positive_diagnoses"])))


# ------------------------------------------------------------------------------------------------ hostile input


@pytest.mark.parametrize("bad", ['" or 1==1 or "', "' or 1==1 or '", 'J91.8") or (report_id != "',
                                 "rep-001\" || \"1\"==\"1"])
def test_filter_injection_is_refused(seeded: Seeded, bad: str) -> None:
    for query, variables in (
        (SEARCH, {"mode": "KEYWORD", "first": 5, "f": {"positiveCodes": [bad]}}),
        (SEARCH, {"mode": "KEYWORD", "first": 5, "f": {"modality": [bad]}}),
        (SIMILAR, {"id": seeded.images[0]["sop_instance_uid"], "k": 3, "f": {"viewPosition": [bad]}}),
        ("query($id: ID!) { report(id: $id) { id } }", {"id": bad}),
        ("query($ids: [ID!]) { entityFacets(kind: SIGN, reportIds: $ids) { term } }", {"ids": [bad]}),
    ):
        body = seeded.gql(query, variables).json()
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", (query, body)


def test_hostile_free_text_is_only_ranked(seeded: Seeded) -> None:
    q = "effusion' or '1'=='1\") or (true"
    d = seeded.data(SEARCH, {"q": q, "mode": "KEYWORD", "first": 100})["searchReports"]
    expected = {r["report_id"] for r in seeded.reports if toks(r["text"]) & toks(q)}
    assert d["totalCount"] == len(expected) and {e["node"]["id"] for e in d["edges"]} == expected


def test_limits(seeded: Seeded) -> None:
    r = seeded.gql(SIMILAR, {"id": seeded.images[0]["sop_instance_uid"], "k": 10**9})
    assert r.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    r = seeded.gql(SEARCH, {"q": "x", "mode": "KEYWORD", "first": 10**6})
    assert r.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    deep = '{ report(id: "rep-001") { ' + "study { report { " * 6 + "id" + " } }" * 6 + " } }"
    assert "depth" in seeded.gql(deep).json()["errors"][0]["message"]
    many = "{ " + " ".join(f'a{i}: report(id: "rep-001") {{ id }}' for i in range(30)) + " }"
    assert "aliases" in seeded.gql(many).json()["errors"][0]["message"].lower()


def test_thumbnails(seeded: Seeded) -> None:
    img = seeded.images[2]
    url = seeded.data('query($id: ID!) { image(id: $id) { thumbnailUrl } }',
                      {"id": img["sop_instance_uid"]})["image"]["thumbnailUrl"]
    c = seeded.client
    r = c.get(url)
    assert r.status_code == 200 and r.content == store.get_bytes(img["thumbnail_uri"])
    r2 = c.get(f"/thumbnails/{img['sop_instance_uid']}", headers={"Authorization": f"Bearer {READER}",
                                                                  "If-None-Match": r.headers["etag"]})
    assert r2.status_code == 304
    assert c.get(f"/thumbnails/{img['sop_instance_uid']}").status_code == 401
    h = {"Authorization": f"Bearer {READER}"}
    for bad in ("..%2F..%2Foutside.png", "..%2F", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "a%5C..%5Cb", "..%00"):
        assert c.get(f"/thumbnails/{bad}", headers=h).status_code in (400, 404), bad
    r = c.get(f"/thumbnails/{seeded.images[6]['sop_instance_uid']}", headers=h)  # URI escapes the store
    assert r.status_code == 404 and b"not for you" not in r.content


def test_auth_failures(seeded: Seeded) -> None:
    r = seeded.gql('{ report(id: "rep-001") { id } }', token=None)
    assert r.status_code == 401 and r.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    r = seeded.gql('{ report(id: "rep-001") { id } }', token="not-a-valid-token-000000")
    assert r.status_code == 401
    r = seeded.gql('mutation { ingestReport(reportId: "new-1", text: "No effusion.") { status } }')
    assert r.status_code == 403 and r.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def test_ingest_mutation_publishes_to_the_broker(seeded: Seeded) -> None:
    from kafka import KafkaConsumer, TopicPartition

    from medsearch.contracts.messages import Report

    r = seeded.gql('mutation { ingestReport(reportId: "new-1", text: "Small effusion.", studyUid: "1.2.3") '
                   '{ kind id status } }', token=INGESTER)
    assert r.json()["data"]["ingestReport"] == {"kind": "report", "id": "new-1", "status": "published"}
    topic = names_for(seeded.index).reports_topic
    consumer = KafkaConsumer(bootstrap_servers=seeded.kafka, enable_auto_commit=False)
    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    raws: list[bytes] = []
    deadline = time.monotonic() + 20
    while not raws and time.monotonic() < deadline:
        for recs in consumer.poll(timeout_ms=500).values():
            raws.extend(x.value for x in recs)
    consumer.close()
    got = [Report.from_bytes(v) for v in raws]
    assert not any(b"effusion" in v.lower() for v in raws)  # a claim check: the text is in the object store
    from medsearch import store

    assert [(m.report_id, m.study_uid, store.get_bytes(m.uri)) for m in got] == [("new-1", "1.2.3", b"Small effusion.")]


def test_readyz_with_real_services(seeded: Seeded) -> None:
    r = seeded.client.get("/readyz")
    assert r.status_code == 200, r.json()
    assert set(r.json()["checks"]) == {"postgres", "milvus", "broker", "modelServer", "collections"}


# ------------------------------------------------------------------------------------------------ compat


def test_compat_seed_operations(seeded: Seeded) -> None:
    from medsearch_api.icd10 import describe

    p = "/compat/graphql"
    found = seeded.data('query($s: String) { searchReports(input: $s) { ReportId Impression Findings PositiveSigns '
                        'NegativeSigns PositiveDiagnoses NegativeDiagnoses PositiveSymptoms NegativeSymptoms '
                        'PositiveICD10CMs NegativeICD10CMs Images { ReportId ImageId Bucket Key } } }',
                        {"s": "pneumothorax"}, path=p)["searchReports"]
    # The same finding-aware search as the main schema: reports that only negate the finding are left out.
    expected = {r["report_id"] for r in seeded.reports if "pneumothorax" in toks(r["text"])
                and not ("J93.9" in r["icd10_negative"] and "J93.9" not in r["icd10_positive"])}
    assert {x["ReportId"] for x in found} == expected
    assert seeded.data("query { listReports(from:0, size:100) { Impression Images { ImageId } } }",
                       path=p)["listReports"].__len__() == N_STUDIES
    for op, field, query in (("getAllPositiveICD10CMs", "icd10_positive", None),
                             ("getAllNegativeICD10CMs", "icd10_negative", None),
                             ("getPositiveICD10CMs", "icd10_positive", "cough"),
                             ("getNegativeICD10CMs", "icd10_negative", "cough")):
        arg = '(input: "cough")' if query else ""
        got = seeded.data(f"query {{ {op}{arg} {{ key doc_count }} }}", path=p)[op]
        assert {b["key"]: b["doc_count"] for b in got} == {
            describe(c): n for c, n in _brute_codes(seeded, field, query).items()}, op
    ids = ",".join(r["report_id"] for r in seeded.reports[:15])
    for op, field in (("getPositiveICD10CMsbyReports", "icd10_positive"),
                      ("getNegativeICD10CMsbyReports", "icd10_negative"),
                      ("getPositiveSignsbyReports", "positive_signs"), ("getNegativeSignsbyReports", "negative_signs"),
                      ("getPositiveDiagnosesbyReports", "positive_diagnoses"),
                      ("getNegativeDiagnosesbyReports", "negative_diagnoses"),
                      ("getPositiveSymptomsbyReports", "positive_symptoms"),
                      ("getNegativeSymptomsbyReports", "negative_symptoms")):
        got = seeded.data(f'query($r: String) {{ {op}(input: $r) {{ key doc_count }} }}', {"r": ids}, path=p)[op]
        expected = Counter(v for r in seeded.reports[:15] for v in set(r[field]))
        if "ICD10" in op:
            expected = Counter({describe(c): n for c, n in expected.items()})
        assert {b["key"]: b["doc_count"] for b in got} == dict(expected), op
    rep = seeded.data('query($r: String) { getReport(ReportId: $r) { ReportId PositiveICD10CMs } }',
                      {"r": "rep-005"}, path=p)["getReport"]
    assert rep["PositiveICD10CMs"] == [describe(c) for c in seeded.by_id("rep-005")["icd10_positive"]]
    img = seeded.images[0]
    got = seeded.data('query($i: String) { getImage(ImageId: $i) { ReportId ImageId Bucket Key BodyPartExamined '
                      'Modality ViewPosition } }', {"i": img["sop_instance_uid"]}, path=p)["getImage"]
    assert got["ImageId"] == img["sop_instance_uid"] and got["Bucket"] == "thumbnails"
    assert got["Key"].startswith(img["sop_instance_uid"] + "?exp=")  # the signed gateway URL, not the store
    sim = seeded.data('query($i: String) { getSimilarImages(ImageId: $i, k:30) { ImageId ReportId Bucket Key '
                      'ViewPosition } }', {"i": img["sop_instance_uid"]}, path=p)["getSimilarImages"]
    assert [s["ImageId"] for s in sim] == _brute_knn(seeded, img["embedding"], 30, lambda i: i is not img)


# ------------------------------------------------------------------------------------------------ process


def test_gateway_process_entry_point(seeded: Seeded, tmp_path: Path, service_logs: Path) -> None:
    import httpx

    port = procs.free_port()
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{READER} reader\n")
    env = {"MEDSEARCH_INDEX": seeded.index,
           "MEDSEARCH_MILVUS_URI": seeded.client.app.state.services.settings.milvus_uri,
           "MEDSEARCH_POSTGRES_DSN": seeded.client.app.state.services.settings.postgres_dsn,
           "MEDSEARCH_API_PORT": str(port), "MEDSEARCH_API_TOKENS_FILE": str(tokens),
           "MEDSEARCH_KAFKA_BOOTSTRAP": seeded.kafka, "MEDSEARCH_MODEL_SERVER_URL": seeded.model_url}
    base = f"http://127.0.0.1:{port}"
    with procs.running([sys.executable, "-m", "medsearch_api"], ready=lambda: procs.http_ready(base + "/healthz"),
                       what="gateway", log_path=service_logs / "api-gateway.log", env=env, timeout=60):
        r = httpx.post(base + "/graphql", json={"query": '{ report(id: "rep-002") { id } }'},
                       headers={"Authorization": f"Bearer {READER}"}, timeout=30)
        assert r.json() == {"data": {"report": {"id": "rep-002"}}}
        assert httpx.get(base + "/readyz", timeout=30).status_code == 200
        assert "medsearch_api_requests_total" in httpx.get(base + "/metrics", timeout=10).text
    # and the process refuses an open API off loopback
    open_env = {k: v for k, v in os.environ.items()
                if k not in ("MEDSEARCH_API_TOKENS_FILE", "MEDSEARCH_OIDC_ISSUER")}
    out = subprocess.run([sys.executable, "-m", "medsearch_api", "--host", "0.0.0.0", "--port", str(port)],
                         capture_output=True, text=True, timeout=60, env=open_env)
    assert out.returncode == 2 and "loopback" in out.stderr


# ------------------------------------------------------------------------------------------------ reindex


def test_reindex_rebuilds_dropped_collections_from_postgres(seeded: Seeded, milvus_uri: str, postgres_dsn: str) -> None:
    """Milvus is an index, not a store: drop both collections, `medsearch reindex`, and every search that needs
    Milvus answers as before (the vectors come back from PostgreSQL, nothing is re-embedded)."""
    from typer.testing import CliRunner

    from medsearch.cli import app

    target = seeded.reports[11]
    src = seeded.images[0]
    queries = [
        (SEARCH, {"q": target["text"], "mode": "SEMANTIC", "first": 10}),
        (SEARCH, {"q": "pneumothorax", "mode": "HYBRID", "first": 10}),
        (SIMILAR, {"id": src["sop_instance_uid"], "k": 10}),
        (SIMILAR, {"id": src["sop_instance_uid"], "k": 10, "f": {"positiveCodes": ["J93.9"]}}),
    ]
    before = [seeded.data(q, v) for q, v in queries]
    client = milvus_client(milvus_uri)
    try:
        assert sorted(drop_collections(client, seeded.index)) == sorted(names_for(seeded.index).collections)
        assert seeded.gql(*queries[0]).json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
        result = CliRunner().invoke(app, ["reindex", "--index", seeded.index, "--data-dir", "/nonexistent"],
                                    env={"MEDSEARCH_POSTGRES_DSN": postgres_dsn, "MEDSEARCH_MILVUS_URI": milvus_uri})
        assert result.exit_code == 0, result.output
        assert f"{seeded.index} images: {len(seeded.images)} rows rebuilt" in result.output
        assert f"{seeded.index} reports: {len(seeded.reports)} rows rebuilt" in result.output
        assert count_rows(client, names_for(seeded.index).images_collection) == len(seeded.images)
    finally:
        client.close()
    time.sleep(0.5)
    after = [seeded.data(q, v) for q, v in queries]
    assert _same_answers(after, before), (after, before)


def _same_answers(a: Any, b: Any, tol: float = 1e-6) -> bool:
    """Equal, floats (scores) within ``tol``: after a rebuild Milvus may give the same vectors' distance a few
    float32 units in the last place apart (seen: 0.0828902 vs 0.0828903 for one of ten neighbours)."""
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= tol
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_answers(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_answers(x, y, tol) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# ------------------------------------------------------------------------------------------------ audit


def _audit_since(postgres_dsn: str, index: str, after: int) -> list[Any]:
    from medsearch import audit

    with pgstore.connect(postgres_dsn) as conn:
        return [e for e in audit.list_events(conn, index, limit=1000) if (e.event_id or 0) > after][::-1]


def _last_audit_id(postgres_dsn: str, index: str) -> int:
    from medsearch import audit

    with pgstore.connect(postgres_dsn) as conn:
        events = audit.list_events(conn, index, limit=1)
    return int(events[0].event_id or 0) if events else 0


def test_audit_log_records_each_phi_request_with_its_ids_and_never_text(seeded: Seeded, postgres_dsn: str) -> None:
    import json

    import psycopg
    from typer.testing import CliRunner

    from medsearch.cli import app

    start = _last_audit_id(postgres_dsn, seeded.index)
    query = "pneumothorax zebraquery"
    d = seeded.data(SEARCH, {"q": query, "mode": "KEYWORD", "first": 5})["searchReports"]
    ids = [e["node"]["id"] for e in d["edges"]]
    assert ids
    events = _audit_since(postgres_dsn, seeded.index, start)
    assert len(events) == 1, events
    ev = events[0]
    assert ev.report_ids == tuple(ids) and ev.principal == "it" and ev.auth_method == "token"
    assert ev.action == "R" and ev.operation == "graphql query searchReports" and ev.outcome == 0
    assert set(ev.study_uids) == {seeded.by_id(i)["study_uid"] for i in ids}
    with psycopg.connect(postgres_dsn) as conn:
        raw = str(conn.execute(f"SELECT * FROM {names_for(seeded.index).pg_schema}.audit_log WHERE event_id = %s",
                               (ev.event_id,)).fetchall())
    assert "zebraquery" not in raw and "pneumothorax" not in raw
    assert not any(seeded.by_id(i)["text"] in raw for i in ids)

    # aggregates alone are not PHI-bearing: no record; a thumbnail, an image and the compat endpoint are
    mark = _last_audit_id(postgres_dsn, seeded.index)
    seeded.data('{ icd10Facets(query: "effusion") { code count } }')
    assert _audit_since(postgres_dsn, seeded.index, mark) == []
    img = seeded.images[2]
    url = seeded.data('query($id: ID!) { image(id: $id) { thumbnailUrl } }',
                      {"id": img["sop_instance_uid"]})["image"]["thumbnailUrl"]
    assert seeded.client.get(url).status_code == 200
    seeded.data('query($r: String) { getReport(ReportId: $r) { ReportId } }', {"r": "rep-007"}, path="/compat/graphql")
    ops = [(e.operation, e.auth_method, e.image_ids, e.report_ids) for e in _audit_since(postgres_dsn, seeded.index,
                                                                                          mark)]
    assert ops == [("graphql query image", "token", (img["sop_instance_uid"],), (img["report_id"],) if img["report_id"]
                    else ()),
                   ("thumbnail", "signed-url", (img["sop_instance_uid"],), ()),
                   ("compat query getReport", "token", (), ("rep-007",))], ops

    # append-only: the table refuses changes
    with psycopg.connect(postgres_dsn) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(f"DELETE FROM {names_for(seeded.index).pg_schema}.audit_log")

    # `medsearch audit` lists it (JSON: FHIR AuditEvent)
    result = CliRunner().invoke(app, ["audit", "--index", seeded.index, "--principal", "it", "--json", "--since",
                                      "1h", "--data-dir", "/nonexistent"],
                                env={"MEDSEARCH_POSTGRES_DSN": postgres_dsn})
    assert result.exit_code == 0, result.output
    listed = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    mine = next(x for x in listed if x["id"] == str(ev.event_id))
    assert mine["resourceType"] == "AuditEvent" and mine["action"] == "R" and mine["outcome"] == "0"
    assert [x["what"]["identifier"]["value"] for x in mine["entity"] if x["type"]["code"] == "report"] == ids
    table = CliRunner().invoke(app, ["audit", "--index", seeded.index, "--data-dir", "/nonexistent"],
                               env={"MEDSEARCH_POSTGRES_DSN": postgres_dsn})
    assert table.exit_code == 0 and "searchReports" in table.stdout and "compat query getReport" in table.stdout, (
        table.output)


def test_a_failing_audit_store_fails_the_request(seeded: Seeded, postgres_dsn: str) -> None:
    import psycopg

    schema = names_for(seeded.index).pg_schema
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {schema}.audit_log RENAME TO audit_log_away")
    try:
        r = seeded.gql(SEARCH, {"q": "effusion", "mode": "KEYWORD", "first": 5})
        body = r.json()
        assert body["data"] is None, body  # no PHI leaves without its audit record
        err = body["errors"][0]
        assert err["extensions"]["code"] == "SERVICE_UNAVAILABLE" and err["extensions"]["reference"], err
        assert err["message"].startswith("the audit log is unavailable") and "audit_log" not in err["message"]
        r = seeded.gql('query($r: String) { getReport(ReportId: $r) { ReportId Findings } }', {"r": "rep-001"},
                       path="/compat/graphql")
        assert r.json()["data"] is None and r.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
        thumb = seeded.client.get(f"/thumbnails/{seeded.images[2]['sop_instance_uid']}",
                                  headers={"Authorization": f"Bearer {READER}"})
        assert thumb.status_code == 503 and thumb.content != store.get_bytes(seeded.images[2]["thumbnail_uri"])
        # aggregates need no audit record and keep working
        assert seeded.data('{ icd10Facets { code count } }')["icd10Facets"]
        # and the gateway says it is not ready to serve search
        ready = seeded.client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["collections"] == "unavailable", ready.json()
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f"ALTER TABLE {schema}.audit_log_away RENAME TO audit_log")
    assert seeded.data(SEARCH, {"q": "effusion", "mode": "KEYWORD", "first": 5})["searchReports"]["edges"]


# The seed React client's operations, verbatim (the same as api/tests/test_compat.py).
SEED_OPS = seed_operations(search="effusion", facet_search="effusion", report_id="rep-004", image_id="1.2.826.0.1.5.2",
                           report_ids=",".join(f"rep-{i:03d}" for i in range(40)))


def _nulls(value: Any, path: str = "") -> list[str]:
    if value is None:
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _nulls(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for n, v in enumerate(value) for p in _nulls(v, f"{path}[{n}]")]
    return []


def test_every_seed_client_operation_returns_values_for_every_field(seeded: Seeded, postgres_dsn: str) -> None:
    """On real data (reports and images linked only by study, as the workers write them; a thumbnail per image),
    every field the seed client selects has a value: ReportId from the study link, Bucket/Key the signed gateway
    thumbnail URL, which the client fetches without a header."""
    import psycopg

    schema = names_for(seeded.index).pg_schema
    unlinked = [i for i in seeded.images if not i["report_id"]]
    assert unlinked  # images whose row carries no report id, as the DICOM worker writes them
    saved = {i["sop_instance_uid"]: i["thumbnail_uri"] for i in seeded.images}
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        for img in seeded.images:
            uri = store.join(seeded.store_url, seeded.index, "thumbnails", img["sop_instance_uid"] + ".png")
            if not store.exists(uri):
                store.put_bytes(uri, _png(7))
            conn.execute(f"UPDATE {schema}.images SET thumbnail_uri = %s WHERE sop_instance_uid = %s",
                         (uri, img["sop_instance_uid"]))
    try:
        fetched = 0
        for op, (query, variables) in SEED_OPS.items():
            data = seeded.data(query, variables, path="/compat/graphql")[op]
            assert data, op
            assert _nulls(data) == [], (op, _nulls(data)[:5])
            images = [i for r in data for i in r.get("Images") or []] if isinstance(data, list) else []
            images += [data] if op == "getImage" else data if op == "getSimilarImages" else []
            for img in images[:3]:
                by_study = next(r for r in seeded.reports
                                if r["study_uid"] == img["ImageId"].rsplit(".", 1)[0])
                assert img["ReportId"] == by_study["report_id"], img
                assert "/" not in img["Key"].split("?")[0] and seeded.store_url not in img["Key"]
                r = seeded.client.get(f"/{img['Bucket']}/{img['Key']}")  # no Authorization header
                assert r.status_code == 200 and r.headers["content-type"] == "image/png", img
                fetched += 1
        assert fetched >= 6
        # the report id comes from the study link for every image, whichever arrived first
        listed = seeded.data("query { listReports(from:0, size:100) { Images { ImageId ReportId } } }",
                             path="/compat/graphql")["listReports"]
        assert sum(1 for r in listed for i in r["Images"] if i["ReportId"]) == len(seeded.images)
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            for sop, uri in saved.items():
                conn.execute(f"UPDATE {schema}.images SET thumbnail_uri = %s WHERE sop_instance_uid = %s",
                             (uri, sop))


def test_an_image_links_to_a_report_that_arrives_after_it(seeded: Seeded, postgres_dsn: str) -> None:
    import psycopg

    q = "query($i: String) { getImage(ImageId: $i) { ImageId ReportId } }"
    image = {**seeded.images[0], "sop_instance_uid": "1.2.826.0.99.1.1", "study_uid": "1.2.826.0.99.1",
             "report_id": ""}
    report = {**seeded.reports[0], "report_id": "late-report-1", "study_uid": "1.2.826.0.99.1"}
    schema = names_for(seeded.index).pg_schema
    try:
        with pgstore.connect(postgres_dsn) as conn:
            pgstore.upsert_images(conn, seeded.index, [image])
        got = seeded.data(q, {"i": image["sop_instance_uid"]}, path="/compat/graphql")["getImage"]
        assert got == {"ImageId": image["sop_instance_uid"], "ReportId": None}  # no report for the study yet
        with pgstore.connect(postgres_dsn) as conn:
            pgstore.upsert_reports(conn, seeded.index, [report])
        got = seeded.data(q, {"i": image["sop_instance_uid"]}, path="/compat/graphql")["getImage"]
        assert got["ReportId"] == "late-report-1"
        main = seeded.data('query($i: ID!) { image(id: $i) { reportId report { id } } }',
                           {"i": image["sop_instance_uid"]})["image"]
        assert main == {"reportId": "late-report-1", "report": {"id": "late-report-1"}}
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f"DELETE FROM {schema}.images WHERE sop_instance_uid = %s", (image["sop_instance_uid"],))
            conn.execute(f"DELETE FROM {schema}.reports WHERE report_id = %s", (report["report_id"],))


def test_audit_records_stream_to_the_audit_topic_when_enabled(seeded: Seeded, postgres_dsn: str,
                                                              tmp_path: Path) -> None:
    import json

    from fastapi.testclient import TestClient
    from kafka import KafkaConsumer, TopicPartition
    from kafka.admin import NewTopic
    from medsearch_api.app import create_app


    topic = names_for(seeded.index).audit_topic
    admin = kafka_admin(seeded.kafka)
    if topic not in admin.list_topics():
        admin.create_topics([NewTopic(name=topic, num_partitions=1, replication_factor=1)])
    admin.close()
    settings = seeded.client.app.state.services.settings.model_copy(update={"audit_kafka": True})
    with TestClient(create_app(settings)) as tc:
        r = tc.post("/graphql", json={"query": '{ report(id: "rep-009") { id text } }'},
                    headers={"Authorization": f"Bearer {READER}"})
        assert r.json()["data"]["report"]["id"] == "rep-009"
        consumer = KafkaConsumer(bootstrap_servers=seeded.kafka, enable_auto_commit=False)
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=500).values():
                got.extend(json.loads(x.value) for x in recs)
        consumer.close()
    assert len(got) == 1, got
    event = got[0]
    assert event["resourceType"] == "AuditEvent" and event["subtype"][0]["code"] == "graphql query report"
    assert [e["what"]["identifier"]["value"] for e in event["entity"]] == ["rep-009", seeded.by_id("rep-009")[
        "study_uid"]]
    assert seeded.by_id("rep-009")["text"] not in json.dumps(event)
    # the same record is in PostgreSQL, the record of truth
    with pgstore.connect(postgres_dsn) as conn:
        from medsearch import audit

        assert str(audit.list_events(conn, seeded.index, limit=1)[0].event_id) == event["id"]
