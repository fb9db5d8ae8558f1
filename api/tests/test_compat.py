"""The seed web client's operations, verbatim, against /compat/graphql's schema (a repository of canned answers)."""

from __future__ import annotations

import asyncio
from typing import Any

from api_fakes import FakeRepository, make_context
from medsearch_api.compat import compat_schema
from medsearch_api.context import Context
from medsearch_api.records import SearchMode
from medsearch_dev.testing import seed_operations

OPS = seed_operations(search="pneumothorax", facet_search="effusion", report_id="r2", image_id="1.2.1.1",
                      report_ids="r1,r2, r3,r4,r5")


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
