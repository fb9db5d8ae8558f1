"""The demo flow end to end, as a new user runs it: `medsearch demo` → every GraphQL feature → `medsearch down`.

Real processes throughout: Tansu, milvus-lite server, the KServe model server (random seeded weights: offline),
both workers and the gateway, started by the local stack supervisor; the public sample data from
samples/manifest.json.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from medsearch_dev.localstack.procs import free_port
from PIL import Image

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RG1_SOP = "1.3.6.1.4.1.5962.1.1.9.1.1.20040826185059.5457"
EFFUSION = "J90"


def _medsearch(*args: str, env: dict[str, str], timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "medsearch.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


class Stack:
    def __init__(self, env: dict[str, str], api: str, token: str, data_dir: Path) -> None:
        self.env, self.api, self.token, self.data_dir = env, api, token, data_dir
        self.http = httpx.Client(base_url=api, headers={"Authorization": f"Bearer {token}"}, timeout=60)

    def gql(self, query: str, variables: dict[str, Any] | None = None, path: str = "/graphql") -> dict[str, Any]:
        res = self.http.post(path, json={"query": query, "variables": variables or {}})
        assert res.status_code == 200, res.text
        body = res.json()
        assert not body.get("errors"), body["errors"]
        data: dict[str, Any] = body["data"]
        return data


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    from medsearch_dev.testing import outside_pytest_tmp

    for data_dir in outside_pytest_tmp("medsearch-demo-"):  # holds a PostgreSQL cluster
        yield from _demo_stack(data_dir)


def _demo_stack(data_dir: Path) -> Iterator[Stack]:
    env = {**os.environ, "MEDSEARCH_DATA_DIR": str(data_dir)}
    offset = free_port() % 1000 + 40000 - 9092
    t0 = time.monotonic()
    demo = _medsearch("demo", "--detach", "--weights", "random", "--index",
                      str(ROOT / "operator/config/samples/demo-index.yaml"), "--port-offset", str(offset), env=env)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-4000:]
    print(f"medsearch demo (first run) took {time.monotonic() - t0:.1f}s")
    state = json.loads((data_dir / "run" / "stack.json").read_text())
    api = next(s["url"] for s in state["services"] if s["name"] == "api")
    token = _medsearch("token", env=env).stdout.strip()
    st = Stack(env, api, token, data_dir)
    pid = int((data_dir / "run" / "supervisord.pid").read_text())
    children = [int(x) for x in subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                                               text=True).stdout.split()]
    try:
        yield st
    finally:
        down = _medsearch("down", env=env)
        assert down.returncode == 0, down.stderr
        left = [p for p in [pid, *children] if Path(f"/proc/{p}").exists()]
        assert not left, f"processes left behind after `medsearch down`: {left}"


def _all_reports(stack: Stack) -> list[dict[str, Any]]:
    q = """query($after: String) { searchReports(first: 100, after: $after) {
             pageInfo { hasNextPage endCursor }
             edges { node { id icd10Positive { code } icd10Negative { code } icd10Uncertain { code }
                            positiveSigns negativeSigns positiveDiagnoses negativeDiagnoses } } } }"""
    out: list[dict[str, Any]] = []
    after = None
    while True:
        page = stack.gql(q, {"after": after})["searchReports"]
        out += [e["node"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            return out
        after = page["pageInfo"]["endCursor"]


def test_status_counts_the_sample_data(stack: Stack) -> None:
    res = _medsearch("status", "--json", env=stack.env)
    assert res.returncode == 0, res.stdout + res.stderr
    st = json.loads(res.stdout)
    assert all(s["healthy"] for s in st["services"])
    counts = st["indexes"][0]
    manifest = json.loads((ROOT / "samples/manifest.json").read_text())
    reports = [json.loads(line) for line in (ROOT / "samples" / manifest["reports"]).read_text().splitlines() if line]
    assert counts["reports"] == len({r["report_id"] for r in reports})
    assert counts["images"] >= len(manifest["dicom"]) - 2 and counts["images"] <= len(manifest["dicom"])
    assert counts["dead_letters"] == 0


TUTORIAL = ROOT / "docs" / "tutorial.md"
# A graphql block, the "Answer with the demo data:" line, and the json block that documents its answer.
TUTORIAL_PAIR = re.compile(
    r"```graphql\n(?P<query>(?:(?!```).)*)```\n\n"
    r"(?:Variables:\n\n```json\n(?P<variables>(?:(?!```).)*)```\n\n)?"
    r"Answer with the demo data:\n\n```json\n(?P<answer>(?:(?!```).)*)```",
    re.S,
)
ELIDED = "\u2026"  # a string ending in "…": a prefix (signed URLs); a list ending in "…": its first items


def _render(got: Any, old: Any) -> Any:
    """``got`` shaped like the documented answer ``old``: thumbnail URLs and lists the tutorial shortens with "…"
    stay shortened."""
    if isinstance(got, dict):
        prev = old if isinstance(old, dict) else {}
        return {k: (v[:40] + ELIDED if k == "thumbnailUrl" and isinstance(v, str) else _render(v, prev.get(k)))
                for k, v in got.items()}
    if isinstance(got, list):
        prev = old if isinstance(old, list) else []
        keep = len(prev) - 1 if prev and prev[-1] == ELIDED and len(got) > len(prev) - 1 else len(got)
        items = [_render(v, prev[i] if i < len(prev) else None) for i, v in enumerate(got[:keep])]
        return items + ([ELIDED] if keep < len(got) else [])
    return got


def _same(got: Any, want: Any, where: str = "data") -> list[str]:
    """Differences between two JSON values; floats agree within 1e-3 (scores vary in the last digits)."""
    if isinstance(want, float) or isinstance(got, float):
        ok = isinstance(got, (int, float)) and isinstance(want, (int, float)) and abs(got - want) <= 1e-3
        return [] if ok else [f"{where}: {got!r} != {want!r}"]
    if isinstance(want, dict) and isinstance(got, dict):
        if set(got) != set(want):
            return [f"{where}: keys {sorted(got)} != {sorted(want)}"]
        return [d for k in want for d in _same(got[k], want[k], f"{where}.{k}")]
    if isinstance(want, list) and isinstance(got, list):
        if want and want[-1] == ELIDED and len(got) >= len(want) - 1:
            got, want = got[: len(want) - 1], want[:-1]
        if len(got) != len(want):
            return [f"{where}: {len(got)} items != {len(want)}"]
        return [d for i, (g, w) in enumerate(zip(got, want, strict=True)) for d in _same(g, w, f"{where}[{i}]")]
    if isinstance(want, str) and want.endswith(ELIDED) and isinstance(got, str):
        return [] if got.startswith(want[: -len(ELIDED)]) else [f"{where}: {got!r} does not start like {want!r}"]
    return [] if got == want else [f"{where}: {got!r} != {want!r}"]


def test_tutorial_answers_are_what_the_demo_gives(stack: Stack) -> None:
    """docs/tutorial.md shows an answer under each query: the demo data must give exactly that (before anything
    else is ingested). MEDSEARCH_UPDATE_TUTORIAL=1 rewrites the documented answers instead of comparing."""
    text = TUTORIAL.read_text(encoding="utf-8")
    pairs = list(TUTORIAL_PAIR.finditer(text))
    assert len(pairs) == text.count("Answer with the demo data:"), "a documented answer is not in the checked layout"
    update = os.environ.get("MEDSEARCH_UPDATE_TUTORIAL") == "1"
    problems: list[str] = []
    pieces, last = [], 0
    for m in pairs:
        query = m.group("query")
        path = "/compat/graphql" if text.rfind("### Seed-client compatibility", 0, m.start()) > text.rfind(
            "\n## ", 0, m.start()) else "/graphql"
        variables = json.loads(m.group("variables")) if m.group("variables") else None
        got = {"data": stack.gql(query, variables, path=path)}
        if update:
            shown = _render(got, json.loads(m.group("answer")))
            pieces += [text[last:m.start("answer")], json.dumps(shown, indent=2, ensure_ascii=False) + "\n"]
            last = m.end("answer")
        else:
            problems += [f"{query.strip()[:60]!r}: {d}" for d in _same(got, json.loads(m.group("answer")))[:5]]
    if update:
        TUTORIAL.write_text("".join(pieces) + text[last:], encoding="utf-8")
    assert not problems, (
        "docs/tutorial.md answers differ from the demo (MEDSEARCH_UPDATE_TUTORIAL=1 rewrites them):\n"
        + "\n".join(problems)
    )


def test_effusion_search_ranks_positive_reports_first_without_negated_ones(stack: Stack) -> None:
    data = stack.gql("""{ searchReports(query: "pleural effusion", first: 50) {
        totalCount edges { score node { id icd10Positive { code } icd10Negative { code } }
                           snippet { html highlights { start end } } } } }""")["searchReports"]
    nodes = [e["node"] for e in data["edges"]]
    assert nodes, "no report matched"
    positive = [{c["code"] for c in n["icd10Positive"]} for n in nodes]
    negative = [{c["code"] for c in n["icd10Negative"]} for n in nodes]
    assert EFFUSION in positive[0]
    for pos, neg in zip(positive, negative, strict=True):
        assert not (EFFUSION in neg and EFFUSION not in pos), "a report negating the effusion was returned"
    first_non_positive = next((i for i, p in enumerate(positive) if EFFUSION not in p), len(positive))
    assert all(EFFUSION not in p for p in positive[first_non_positive:]), "positives must come first"
    assert "<mark>" in data["edges"][0]["snippet"]["html"]


def test_report_dates_from_the_sample_file_filter_searches(stack: Stack) -> None:
    reports = [json.loads(line) for line in (ROOT / "samples/reports/reports.jsonl").read_text().splitlines() if line]
    want = sorted(r["report_id"] for r in reports if "2020-01-01" <= r["report_date"] <= "2020-12-31")
    assert want, "the sample data has no 2020 report"
    data = stack.gql("""{ searchReports(filter: {dateFrom: "2020-01-01", dateTo: "2020-12-31"}, first: 100) {
        totalCount edges { node { id reportDate } } } }""")["searchReports"]
    assert sorted(e["node"]["id"] for e in data["edges"]) == want and data["totalCount"] == len(want)
    dates = {r["report_id"]: r["report_date"] for r in reports}
    assert all(e["node"]["reportDate"] == dates[e["node"]["id"]] for e in data["edges"])


def test_semantic_and_hybrid_search_answer(stack: Stack) -> None:
    for mode in ("SEMANTIC", "HYBRID"):
        data = stack.gql("""query($m: SearchMode!) { searchReports(query: "fluid around the lung", mode: $m, first: 5)
                            { edges { score node { id } } } }""", {"m": mode})["searchReports"]
        assert len(data["edges"]) == 5


def test_icd10_facets_count_correctly(stack: Stack) -> None:
    reports = _all_reports(stack)
    for polarity, key in (("POSITIVE", "icd10Positive"), ("NEGATIVE", "icd10Negative")):
        facets = stack.gql(
            """query($p: Polarity!) { icd10Facets(polarity: $p, size: 100) { code description count } }""",
            {"p": polarity},
        )["icd10Facets"]
        brute = Counter(c["code"] for r in reports for c in r[key])
        assert {f["code"]: f["count"] for f in facets} == dict(brute)
        assert all(f["description"] for f in facets)
    top = stack.gql('{ icd10Facets(query: "effusion", polarity: POSITIVE, size: 3) { code count } }')["icd10Facets"]
    assert top[0]["code"] == EFFUSION


def test_entity_facets(stack: Stack) -> None:
    reports = _all_reports(stack)
    ids = [r["id"] for r in reports[:20]]
    facets = stack.gql("""query($ids: [ID!]) { entityFacets(kind: DIAGNOSIS, polarity: POSITIVE, reportIds: $ids,
                          size: 100) { term count } }""", {"ids": ids})["entityFacets"]
    brute = Counter(t for r in reports[:20] for t in r["positiveDiagnoses"])
    assert {f["term"]: f["count"] for f in facets} == dict(brute)


def test_chest_radiograph_study_image_report_and_similar_images(stack: Stack) -> None:
    img = stack.gql("""query($id: ID!) { image(id: $id) { id modality bodyPart viewPosition photometric studyUid
                         thumbnailUrl report { id impression } } }""", {"id": RG1_SOP})["image"]
    assert img["modality"] == "CR" and img["bodyPart"] == "CHEST"
    assert img["report"] is not None
    study = stack.gql("""query($uid: ID!) { study(uid: $uid) { uid images { id } reports { id } } }""",
                      {"uid": img["studyUid"]})["study"]
    assert RG1_SOP in {i["id"] for i in study["images"]} and study["reports"]
    report = stack.gql("""query($id: ID!) { report(id: $id) { id text entities { text category traits { name } } } }""",
                       {"id": img["report"]["id"]})["report"]
    assert report["entities"]

    similar = stack.gql("""query($id: ID!) { similarImages(imageId: $id, k: 5) { score image { id modality } } }""",
                        {"id": RG1_SOP})["similarImages"]
    assert len(similar) == 5 and RG1_SOP not in {s["image"]["id"] for s in similar}
    scores = [s["score"] for s in similar]
    assert scores == sorted(scores, reverse=True)

    thumb = stack.http.get(f"/thumbnails/{RG1_SOP}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(thumb.content)) as im:
        assert max(im.size) == 256


def test_search_by_uploaded_image(stack: Stack) -> None:
    thumb = stack.http.get(f"/thumbnails/{RG1_SOP}").content
    similar = stack.gql("""query($b: String!) { similarImages(uploadBase64: $b, k: 3) { score image { id } } }""",
                        {"b": base64.b64encode(thumb).decode()})["similarImages"]
    # RG1_UNCR and its two JPEG 2000 twins (SOP ...9.1.1/2/3) are the nearest to the film's own thumbnail.
    assert len(similar) == 3
    assert all(s["image"]["id"].startswith("1.3.6.1.4.1.5962.1.1.9.1.") for s in similar), similar


def test_upload_a_report_and_find_it(stack: Stack) -> None:
    res = stack.gql("""mutation($t: String!) { ingestReport(reportId: "FLOW-1", text: $t) { status } }""",
                    {"t": "FINDINGS: Large right pneumothorax.\nIMPRESSION: Large right pneumothorax."})["ingestReport"]
    assert res["status"] == "published"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        rep = stack.gql('{ report(id: "FLOW-1") { icd10Positive { code } } }')["report"]
        if rep is not None:
            assert any(c["code"].startswith("J93") for c in rep["icd10Positive"])
            return
        time.sleep(1)
    pytest.fail("uploaded report was not indexed within 120 s")


def test_seed_client_compat_endpoint(stack: Stack) -> None:
    data = stack.gql("""query($id: String) { searchReports(input: "effusion") { ReportId PositiveICD10CMs }
                          getAllPositiveICD10CMs { key doc_count }
                          getImage(ImageId: $id) { ImageId Modality BodyPartExamined } }""",
                     {"id": RG1_SOP}, path="/compat/graphql")
    assert data["searchReports"] and data["getAllPositiveICD10CMs"]
    assert data["getImage"]["Modality"] == "CR"


def test_unauthenticated_requests_are_refused(stack: Stack) -> None:
    res = httpx.post(f"{stack.api}/graphql", json={"query": "{ report(id: \"R0001\") { id } }"}, timeout=30)
    body = res.json() if res.headers.get("content-type", "").startswith("application/json") else {}
    assert res.status_code == 401 or body.get("errors", [{}])[0].get("extensions", {}).get("code") == "UNAUTHENTICATED"
