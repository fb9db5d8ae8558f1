"""The seed web client's operations, verbatim, against /compat/graphql's schema (a repository of canned answers)."""

from __future__ import annotations

import asyncio
from typing import Any

from api_fakes import FakeRepository, make_context
from medsearch_api.compat import compat_schema
from medsearch_api.context import Context
from medsearch_api.records import SearchMode

REPORT_FIELDS = """ReportId Impression Findings PositiveSigns NegativeSigns PositiveDiagnoses NegativeDiagnoses
      PositiveSymptoms NegativeSymptoms PositiveICD10CMs NegativeICD10CMs"""

OPS: dict[str, tuple[str, dict[str, Any]]] = {
    "searchReports": ("query($searchQuery: String) { searchReports(input: $searchQuery) { " + REPORT_FIELDS
                      + " Images { ReportId ImageId Bucket Key } } }", {"searchQuery": "pneumothorax"}),
    "listReports": ("query { listReports(from:0, size:100) { Impression Findings PositiveSigns NegativeSigns "
                    "PositiveDiagnoses NegativeDiagnoses PositiveSymptoms NegativeSymptoms "
                    "Images { ReportId ImageId Bucket Key } } }", {}),
    "getPositiveICD10CMs": ("query($searchQuery: String) { getPositiveICD10CMs(input: $searchQuery) "
                            "{ key doc_count } }",
                            {"searchQuery": "effusion"}),
    "getNegativeICD10CMs": ("query($searchQuery: String) { getNegativeICD10CMs(input: $searchQuery) "
                            "{ key doc_count } }",
                            {"searchQuery": "effusion"}),
    "getAllPositiveICD10CMs": ("query { getAllPositiveICD10CMs { key doc_count } }", {}),
    "getAllNegativeICD10CMs": ("query { getAllNegativeICD10CMs { key doc_count } }", {}),
    "getReport": ("query($reportid: String) { getReport(ReportId: $reportid) { " + REPORT_FIELDS + " } }",
                  {"reportid": "r2"}),
    "getImage": ("query($imageid: String) { getImage(ImageId: $imageid) { ReportId ImageId Bucket Key "
                 "BodyPartExamined Modality ViewPosition } }", {"imageid": "1.2.1.1"}),
    "getSimilarImages": ("query($imageid: String) { getSimilarImages(ImageId: $imageid, k:30) { ImageId ReportId "
                         "Bucket Key ViewPosition } }", {"imageid": "1.2.1.1"}),
}
for pol in ("Positive", "Negative"):
    for what in ("ICD10CMs", "Signs", "Diagnoses", "Symptoms"):
        name = f"get{pol}{what}byReports"
        OPS[name] = (f"query($reportids: String) {{ {name}(input: $reportids) {{ key doc_count }} }}",
                     {"reportids": "r1,r2, r3,r4,r5"})


def run(op: str, ctx: Context | None = None) -> dict[str, Any]:
    query, variables = OPS[op]
    res = asyncio.run(compat_schema.execute(query, variable_values=variables, context_value=ctx or make_context()))
    assert res.errors is None, (op, res.errors)
    assert res.data is not None
    return res.data[op]


def test_every_seed_operation_answers() -> None:
    for op in OPS:
        assert run(op) is not None, op


def test_shapes_and_values() -> None:
    # what matches is the repository's (SQL; tests/integration/test_api.py): here, the seed's shapes
    ctx = make_context()
    repo = ctx.services.repo
    assert isinstance(repo, FakeRepository)
    repo.ranking = [("r4", 0.9), ("r1", 0.5)]
    repo.neighbours = [(i, 1.0 - n / 10) for n, i in enumerate(sorted(repo.images)) if i != "1.2.1.1"]
    found = run("searchReports", ctx)
    assert [r["ReportId"] for r in found] == ["r4", "r1"]
    assert [c[1][:2] for c in repo.calls if c[0] == "search_reports"] == [("pneumothorax", SearchMode.KEYWORD)]
    r4 = next(r for r in found if r["ReportId"] == "r4")
    assert r4["PositiveICD10CMs"][0].startswith("Pneumothorax")
    # the thumbnail on the gateway (/<Bucket>/<Key>), never the object store's layout
    assert r4["Images"][0] == {"ReportId": "r4", "ImageId": "1.2.4.1", "Bucket": "thumbnails", "Key": "1.2.4.1"}
    assert len(run("listReports")) == 5
    buckets = run("getAllPositiveICD10CMs")
    assert buckets[0]["doc_count"] == 3 and buckets[0]["key"].startswith("Pleural effusion")
    assert all(set(b) == {"key", "doc_count"} for b in buckets)
    img = run("getImage")
    assert img["BodyPartExamined"] == "CHEST" and img["Modality"] == "CR" and img["ViewPosition"] == "PA"
    sim = run("getSimilarImages", ctx)
    assert len(sim) == 9 and "1.2.1.1" not in {s["ImageId"] for s in sim}
    [(k, _, exclude, _)] = [c[1] for c in repo.calls if c[0] == "similar_images"]
    assert (k, exclude) == (30, ["1.2.1.1"])
    assert run("getPositiveSignsbyReports") == [{"key": "effusion", "doc_count": 3}]
    neg = run("getNegativeICD10CMsbyReports")
    assert {b["doc_count"] for b in neg} and all(not b["key"][0].isdigit() for b in neg)
    assert run("getReport")["Impression"] == "Cardiomegaly with pulmonary edema"
