"""The main schema executed directly (schema.execute) over a repository of canned answers (api_fakes): every root
field, what reaches the repository and how its answers render. What searches, filters and facets select is SQL:
test_sql.py, and tests/integration/test_api.py over real stores."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import uuid
from typing import Any

import pytest
from api_fakes import FakeIngest, FakeRepository, fake_embed_text, make_context, sample_data
from medsearch_api.context import Context
from medsearch_api.records import FacetCount, ImageFilterSpec, Polarity, ReportFilterSpec, SearchMode
from medsearch_api.schema import schema


def run(query: str, variables: dict[str, Any] | None = None, ctx: Context | None = None) -> Any:
    ctx = ctx or make_context()
    return asyncio.run(schema.execute(query, variable_values=variables, context_value=ctx))


def ok(query: str, variables: dict[str, Any] | None = None, ctx: Context | None = None) -> dict[str, Any]:
    res = run(query, variables, ctx)
    assert res.errors is None, res.errors
    assert res.data is not None
    return res.data


def codes(res: Any) -> list[str]:
    return [e.extensions.get("code") for e in (res.errors or [])]


def test_report_with_codes_entities_images_and_study() -> None:
    data = ok("""{ report(id: "r2") { id studyUid text impression reportDate sections
        icd10Positive { code description } negativeSigns
        entities { text category traits { name } icd10 { code description } }
        images { id viewPosition thumbnailUrl } study { uid reports { id } } } }""")
    r = data["report"]
    assert r["id"] == "r2" and r["studyUid"] == "1.2.2" and r["reportDate"] == "2021-03-10"
    assert {"code": "I51.7", "description": "Cardiomegaly"} in r["icd10Positive"]
    assert r["icd10Positive"][1]["description"].startswith("Pleural effusion")
    assert r["entities"][0]["icd10"][0]["description"].startswith("Pleural effusion")
    assert [i["id"] for i in r["images"]] == ["1.2.2.1", "1.2.2.2"]
    assert r["images"][0]["thumbnailUrl"] == "/thumbnails/1.2.2.1"
    assert r["study"] == {"uid": "1.2.2", "reports": [{"id": "r2"}]}
    assert ok('{ report(id: "nope") { id } }') == {"report": None}


def test_image_and_its_report() -> None:
    data = ok('{ image(id: "1.2.3.2") { id modality viewPosition bodyPart studyDate report { id } study { uid } } }')
    img = data["image"]
    # the second image has no report_id: its report comes through the study
    assert img == {"id": "1.2.3.2", "modality": "CR", "viewPosition": "LATERAL", "bodyPart": "CHEST",
                   "studyDate": "2022-01-01", "report": {"id": "r3"}, "study": {"uid": "1.2.3"}}


def test_study() -> None:
    data = ok('{ study(uid: "1.2.4") { uid images { id } reports { id } report { id } } }')
    assert data["study"] == {"uid": "1.2.4", "images": [{"id": "1.2.4.1"}, {"id": "1.2.4.2"}],
                             "reports": [{"id": "r4"}], "report": {"id": "r4"}}
    assert ok('{ study(uid: "9.9.9") { uid } }') == {"study": None}


SEARCH = """query($q: String, $mode: SearchMode!, $first: Int!, $after: String, $f: ReportFilter) {
  searchReports(query: $q, mode: $mode, first: $first, after: $after, filter: $f) {
    totalCount pageInfo { hasNextPage hasPreviousPage endCursor startCursor }
    edges { cursor score node { id } snippet { text html highlights { start end } } } } }"""


def fake(ctx: Context) -> FakeRepository:
    repo = ctx.services.repo
    assert isinstance(repo, FakeRepository)
    return repo


def searched(repo: FakeRepository) -> list[tuple[Any, ...]]:
    return [c[1] for c in repo.calls if c[0] == "search_reports"]


def test_keyword_search_pages_highlights_and_counts_what_the_repository_ranks() -> None:
    # ranking and counting are the repository's (SQL; tests/integration/test_api.py): here, what the schema asks
    # for and how it renders the answer
    ctx = make_context()
    repo = fake(ctx)
    repo.ranking, repo.total = [("r4", 0.9), ("r1", 0.8), ("r2", 0.7)], 17
    first = ok(SEARCH, {"q": "pleural effusion", "mode": "KEYWORD", "first": 2}, ctx)["searchReports"]
    assert [(e["node"]["id"], e["score"]) for e in first["edges"]] == [("r4", 0.9), ("r1", 0.8)]
    assert first["totalCount"] == 17
    assert first["pageInfo"]["hasNextPage"] is True and first["pageInfo"]["hasPreviousPage"] is False
    snip = first["edges"][1]["snippet"]
    marked = [snip["text"][h["start"]:h["end"]].lower() for h in snip["highlights"]]
    assert marked == ["pleural", "effusion"]
    assert "<mark>pleural</mark>" in snip["html"]
    second = ok(SEARCH, {"q": "pleural effusion", "mode": "KEYWORD", "first": 2,
                         "after": first["pageInfo"]["endCursor"]}, ctx)["searchReports"]
    assert [e["node"]["id"] for e in second["edges"]] == ["r2"]
    assert second["pageInfo"]["hasPreviousPage"] is True and second["pageInfo"]["hasNextPage"] is False
    none = ReportFilterSpec()
    assert searched(repo) == [("pleural effusion", SearchMode.KEYWORD, none, 0, 2),
                              ("pleural effusion", SearchMode.KEYWORD, none, 2, 2)]
    assert ("count_reports", ("pleural effusion", SearchMode.KEYWORD, none)) in repo.calls
    assert repo.vectors == []  # KEYWORD never embeds the query


def test_total_count_is_counted_while_the_page_is_ranked() -> None:
    class Meeting(FakeRepository):
        """A search that finishes only once the count has started: serial resolution would time out."""

        def __init__(self) -> None:
            super().__init__(*sample_data())
            self.counting: asyncio.Event | None = None

        async def search_reports(self, **kw: Any) -> Any:
            self.counting = self.counting or asyncio.Event()
            await asyncio.wait_for(self.counting.wait(), 5)
            return await super().search_reports(**kw)

        async def count_reports(self, **kw: Any) -> int:
            self.counting = self.counting or asyncio.Event()
            self.counting.set()
            return await super().count_reports(**kw)

    ctx = make_context(Meeting())
    fake(ctx).total = 17
    frag = ("query($q: String, $mode: SearchMode!) { searchReports(query: $q, mode: $mode, first: 2) "
            "{ ...Total edges { node { id } } } } fragment Total on ReportSearchConnection { totalCount }")
    for mode in ("KEYWORD", "HYBRID"):
        data = ok(SEARCH, {"q": "effusion", "mode": mode, "first": 2}, ctx)["searchReports"]
        assert data["totalCount"] == 17 and len(data["edges"]) == 2
        assert ok(frag, {"q": "effusion", "mode": mode}, ctx)["searchReports"]["totalCount"] == 17
    counted = [c for c in fake(ctx).calls if c[0] == "count_reports"]
    assert [c[1][:2] for c in counted] == [("effusion", SearchMode.KEYWORD)] * 2 + [("effusion", SearchMode.HYBRID)] * 2
    # a search the schema refuses leaves no count behind it
    before = len(fake(ctx).calls)
    assert codes(run(SEARCH, {"q": "x" * 1001, "mode": "KEYWORD", "first": 2}, ctx)) == ["BAD_USER_INPUT"]
    assert not [c for c in fake(ctx).calls[before:] if c[0] in ("count_reports", "search_reports")]


def test_listing_without_query_and_filters_reach_the_repository_parsed() -> None:
    # what each filter selects is SQL (test_sql.py) and checked against brute force over real stores
    # (tests/integration/test_api.py); here: the filter arrives parsed, the listing has no scores
    ctx = make_context()
    repo = fake(ctx)
    repo.ranking = [("r4", 0.0), ("r2", 0.0)]
    data = ok(SEARCH, {"mode": "KEYWORD", "first": 10, "f": {"positiveCodes": ["J91.8"], "dateFrom": "2021-01-01"}},
              ctx)
    assert [e["node"]["id"] for e in data["searchReports"]["edges"]] == ["r4", "r2"]
    assert data["searchReports"]["edges"][0]["score"] is None
    assert data["searchReports"]["edges"][0]["snippet"]["highlights"] == []
    ok(SEARCH, {"mode": "KEYWORD", "first": 10, "f": {"viewPosition": ["PA"], "dateTo": "2023-12-31"}}, ctx)
    ok(SEARCH, {"q": "effusion", "mode": "KEYWORD", "first": 10, "f": {"negativeCodes": ["J91.8"]}}, ctx)
    assert searched(repo) == [
        (None, SearchMode.KEYWORD, ReportFilterSpec(positive_codes=("J91.8",), date_from=20210101), 0, 10),
        (None, SearchMode.KEYWORD, ReportFilterSpec(view_positions=("PA",), date_to=20231231), 0, 10),
        ("effusion", SearchMode.KEYWORD, ReportFilterSpec(negative_codes=("J91.8",)), 0, 10)]


def test_semantic_and_hybrid_use_the_text_embedder() -> None:
    ctx = make_context()
    repo = fake(ctx)
    for mode in ("SEMANTIC", "HYBRID"):
        data = ok(SEARCH, {"q": "heart failure", "mode": mode, "first": 3}, ctx)["searchReports"]
        assert len(data["edges"]) == 3 and all(e["score"] is not None for e in data["edges"])
    assert [c[1] for c in searched(repo)] == [SearchMode.SEMANTIC, SearchMode.HYBRID]
    want = asyncio.run(fake_embed_text("heart failure"))
    assert repo.vectors == [want, want]  # the query's embedding, whether passed ready or pending
    res = run(SEARCH, {"q": "x", "mode": "SEMANTIC", "first": 3}, make_context(semantic=False))
    assert codes(res) == ["SERVICE_UNAVAILABLE"]


def test_a_failed_query_embedding_fails_the_search_and_is_not_left_pending() -> None:
    from medsearch_api import errors

    async def down(text: str) -> list[float]:
        raise errors.unavailable("the text model is down")

    ctx = make_context()
    ctx.services.embed_text = down
    res = run(SEARCH, {"q": "effusion", "mode": "HYBRID", "first": 3}, ctx)
    assert codes(res) == ["SERVICE_UNAVAILABLE"] and res.data is None


@pytest.mark.parametrize("bad", ['" or 1==1 or "', "J91.8\") or (1==1", "x' || '1'=='1", "J91.8\\", "../etc"])
def test_filter_injection_is_rejected_before_the_repository(bad: str) -> None:
    ctx = make_context()
    repo = ctx.services.repo
    assert isinstance(repo, FakeRepository)
    res = run(SEARCH, {"q": "effusion", "mode": "KEYWORD", "first": 5, "f": {"positiveCodes": [bad]}}, ctx)
    assert codes(res) == ["BAD_USER_INPUT"]
    assert res.errors[0].extensions["argument"] == "filter.positiveCodes"
    res = run('query($m: [String!]) { similarImages(imageId: "1.2.1.1", filter: {modality: $m}) { score } }',
              {"m": [bad]}, ctx)
    assert codes(res) == ["BAD_USER_INPUT"]
    res = run('query($id: ID!) { report(id: $id) { id } }', {"id": bad}, ctx)
    assert codes(res) == ["BAD_USER_INPUT"]
    assert not [c for c in repo.calls if c[0] in ("search_reports", "similar_images", "reports_by_ids")]


def test_limits_on_first_k_size_and_cursor() -> None:
    assert codes(run(SEARCH, {"q": "x", "mode": "KEYWORD", "first": 101})) == ["BAD_USER_INPUT"]
    assert codes(run(SEARCH, {"q": "x", "mode": "KEYWORD", "first": 0})) == ["BAD_USER_INPUT"]
    assert codes(run(SEARCH, {"q": "x", "mode": "KEYWORD", "first": 1, "after": "garbage!"})) == ["BAD_USER_INPUT"]
    assert codes(run('query($k: Int!) { similarImages(imageId: "1.2.1.1", k: $k) { score } }',
                     {"k": 1000000})) == ["BAD_USER_INPUT"]
    # a literal huge k is already refused by the cost estimate, before anything runs
    assert codes(run('{ similarImages(imageId: "1.2.1.1", k: 1000000) { score } }')) == ["QUERY_TOO_COMPLEX"]
    assert codes(run('{ icd10Facets(size: 5000) { code } }')) == ["BAD_USER_INPUT"]
    assert codes(run(SEARCH, {"q": "x" * 1001, "mode": "KEYWORD", "first": 1})) == ["BAD_USER_INPUT"]


def test_similar_images_by_id_excludes_itself_and_passes_the_filter() -> None:
    # the neighbours and the filters' meaning are the repository's (Milvus + SQL; tests/integration/test_api.py)
    ctx = make_context()
    repo = fake(ctx)
    repo.neighbours = [("1.2.5.1", 0.9), ("1.2.4.1", 0.7), ("1.2.4.2", 0.5)]
    data = ok('{ similarImages(imageId: "1.2.1.1", k: 20) { score image { id viewPosition modality } } }', ctx=ctx)
    assert [(h["image"]["id"], h["score"]) for h in data["similarImages"]] == [
        ("1.2.5.1", 0.9), ("1.2.4.1", 0.7), ("1.2.4.2", 0.5)]
    assert data["similarImages"][0]["image"] == {"id": "1.2.5.1", "viewPosition": "AP", "modality": "CR"}
    ok('{ similarImages(imageId: "1.2.1.1", k: 2, filter: {viewPosition: ["AP"], modality: ["CR"]}) '
       '{ image { id } } }', ctx=ctx)
    ok('{ similarImages(imageId: "1.2.1.1", k: 20, filter: {positiveCodes: ["J93.9"]}) { image { id } } }', ctx=ctx)
    source = repo.image_vectors["1.2.1.1"]
    assert [c[1] for c in repo.calls if c[0] == "similar_images"] == [
        (20, ImageFilterSpec(), ["1.2.1.1"], source),
        (2, ImageFilterSpec(view_positions=("AP",), modalities=("CR",)), ["1.2.1.1"], source),
        (20, ImageFilterSpec(positive_codes=("J93.9",)), ["1.2.1.1"], source)]
    res = run('{ similarImages(imageId: "4.4.4", k: 3) { score } }', ctx=ctx)
    assert codes(res) == ["NOT_FOUND"]
    assert len([c for c in repo.calls if c[0] == "similar_images"]) == 3


def test_similar_images_by_upload() -> None:
    b64 = base64.b64encode(b"\x89PNG fake bytes").decode()
    data = ok('query($u: String) { similarImages(uploadBase64: $u, k: 3) { image { id } } }', {"u": b64})
    assert len(data["similarImages"]) == 3
    assert codes(run('{ similarImages(k: 3) { score } }')) == ["BAD_USER_INPUT"]
    assert codes(run('query($u: String) { similarImages(imageId: "1.2.1.1", uploadBase64: $u) { score } }',
                     {"u": b64})) == ["BAD_USER_INPUT"]
    assert codes(run('{ similarImages(uploadBase64: "***") { score } }')) == ["BAD_USER_INPUT"]
    from medsearch.contracts.settings import ApiSettings

    small = make_context(settings=ApiSettings(max_upload_bytes=1024))
    big = base64.b64encode(b"x" * 2048).decode()
    assert codes(run('query($u: String) { similarImages(uploadBase64: $u) { score } }', {"u": big}, small)) == [
        "PAYLOAD_TOO_LARGE"]


def test_icd10_facets_render_the_repositorys_counts_with_descriptions() -> None:
    # the counts are SQL over the reports the list shows (brute-force checks: tests/integration/test_api.py)
    ctx = make_context()
    repo = fake(ctx)
    repo.facets["icd10_negative"] = [FacetCount("J93.9", 4), FacetCount("I51.7", 2)]
    data = ok('query($q: String, $p: Polarity!) { icd10Facets(query: $q, polarity: $p, size: 50) '
              '{ code description count } }', {"q": "effusion", "p": "NEGATIVE"}, ctx)
    assert [(f["code"], f["count"]) for f in data["icd10Facets"]] == [("J93.9", 4), ("I51.7", 2)]
    assert data["icd10Facets"][0]["description"].startswith("Pneumothorax")
    assert data["icd10Facets"][1]["description"] == "Cardiomegaly"
    data = ok('{ icd10Facets(size: 1) { code description count } }', ctx=ctx)
    assert data["icd10Facets"] == [{"code": "J91.8", "description": data["icd10Facets"][0]["description"],
                                    "count": 3}]
    assert data["icd10Facets"][0]["description"].startswith("Pleural effusion")
    ok('{ icd10Facets(filter: {viewPosition: ["AP"]}) { code count } }', ctx=ctx)
    assert [c[1] for c in repo.calls if c[0] == "icd10_facets"] == [
        ("effusion", Polarity.NEGATIVE, 50, ReportFilterSpec()),
        (None, Polarity.POSITIVE, 1, ReportFilterSpec()),
        (None, Polarity.POSITIVE, 20, ReportFilterSpec(view_positions=("AP",)))]


def test_entity_facets_ask_for_the_kinds_column() -> None:
    ctx = make_context()
    repo = fake(ctx)
    data = ok('{ entityFacets(kind: SIGN, reportIds: ["r1", "r2", "r3"]) { term count } }', ctx=ctx)
    assert data["entityFacets"] == [{"term": "effusion", "count": 3}]
    data = ok('{ entityFacets(kind: SIGN, polarity: NEGATIVE, query: "pneumonia") { term count } }', ctx=ctx)
    assert data["entityFacets"] == [{"term": "pneumothorax", "count": 2}]
    data = ok('{ entityFacets(kind: DIAGNOSIS) { term count } }', ctx=ctx)
    assert data["entityFacets"] == [{"term": "pneumothorax", "count": 1}]
    assert [c[1] for c in repo.calls if c[0] == "term_facets"] == [
        ("positive_signs", ["r1", "r2", "r3"], None, 20), ("negative_signs", None, "pneumonia", 20),
        ("positive_diagnoses", None, None, 20)]
    assert codes(run('{ entityFacets(kind: SIGN, polarity: UNCERTAIN) { term } }')) == ["BAD_USER_INPUT"]


def test_mutations_need_the_ingester_role() -> None:
    ingest = FakeIngest()
    q = ('mutation { ingestReport(reportId: "r9", text: "No effusion.", studyUid: "1.2.9", reportDate: "2024-02-29")'
         ' { kind id status } }')
    res = run(q, ctx=make_context(roles=("reader",), ingest=ingest))
    assert codes(res) == ["FORBIDDEN"] and ingest.published == []
    res = run(q, ctx=make_context(roles=None, ingest=ingest))
    assert codes(res) == ["UNAUTHENTICATED"]
    data = ok(q, ctx=make_context(roles=("ingester",), ingest=ingest))
    assert data["ingestReport"] == {"kind": "report", "id": "r9", "status": "published"}
    b64 = base64.b64encode(b"DICM" * 10).decode()
    data = ok('mutation($f: String) { ingestDicom(fileBase64: $f, filename: "../../x.dcm") { kind status uri } }',
              {"f": b64}, make_context(roles=("admin",), ingest=ingest))
    assert data["ingestDicom"]["status"] == "published"
    assert ingest.published == [("report", ("r9", "1.2.9", dt.date(2024, 2, 29))), ("dicom", (40, "x.dcm"))]
    assert codes(run('mutation { ingestReport(reportId: "r9", text: "  ") { id } }',
                     ctx=make_context(roles=("ingester",)))) == ["BAD_USER_INPUT"]
    res = run('mutation { ingestReport(reportId: "r9", text: "Clear.", reportDate: "1850-01-01") { id } }',
              ctx=make_context(roles=("ingester",), ingest=ingest))
    assert codes(res) == ["BAD_USER_INPUT"] and "1900" in res.errors[0].message


def test_queries_need_a_principal() -> None:
    res = run('{ report(id: "r1") { id } }', ctx=make_context(roles=None))
    assert codes(res) == ["UNAUTHENTICATED"] and res.data == {"report": None}


def test_dataloaders_batch_per_request() -> None:
    ctx = make_context()
    repo = ctx.services.repo
    assert isinstance(repo, FakeRepository)
    ok("{ searchReports(first: 5) { edges { node { images { id report { id } } } } } }", ctx=ctx)
    kinds = [c[0] for c in repo.calls]
    assert kinds.count("images_by_studies") == 1  # five reports' images in one call
    assert kinds.count("reports_by_ids") <= 1  # primed by the search; image.report resolved from the loader


def test_depth_alias_and_cost_limits() -> None:
    deep = "{ report(id: \"r1\") { " + "study { report { " * 6 + "id" + " } }" * 6 + " } }"
    res = run(deep)
    assert res.errors and "exceeds maximum operation depth" in res.errors[0].message
    aliases = "{ " + " ".join(f"a{i}: report(id: \"r1\") {{ id }}" for i in range(25)) + " }"
    res = run(aliases)
    assert res.errors and "aliases" in res.errors[0].message.lower()
    costly = ("{ searchReports(first: 100) { edges { node { images { study { reports { images { id } } } } } } } "
              "b: similarImages(imageId: \"1.2.1.1\", k: 100) "
              "{ image { study { images { report { images { id } } } } } } }")
    res = run(costly)
    assert res.errors and res.errors[0].extensions["code"] == "QUERY_TOO_COMPLEX"


def test_a_query_text_is_validated_once_and_its_limits_hold_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    ext = importlib.import_module("medsearch_api.schema.extensions")  # the package exports a function of that name
    validated: list[int] = []
    real = ext.validate_document

    def counting(*args: Any) -> Any:
        validated.append(1)
        return real(*args)

    monkeypatch.setattr(ext, "validate_document", counting)
    fresh = f"# {uuid.uuid4()}\n"  # texts no other test sent to this schema before (its memo outlives tests)
    listing = fresh + "query L($n: Int) { searchReports(first: $n) { totalCount edges { node { id } } } }"
    for n in (1, 2, 3):  # one text, other variables: validated once, executed with each
        assert len(ok(listing, {"n": n})["searchReports"]["edges"]) == n
    assert len(validated) == 1
    costly = (fresh + "{ searchReports(first: 100) { edges { node { images { study { reports { images { id } } } } } } "
              "} b: similarImages(imageId: \"1.2.1.1\", k: 100) "
              "{ image { study { images { report { images { id } } } } } } }")
    for _ in range(2):  # the cached verdict still refuses it
        assert codes(run(costly)) == ["QUERY_TOO_COMPLEX"]
    deep = fresh + "{ report(id: \"r1\") { " + "study { report { " * 6 + "id" + " } }" * 6 + " } }"
    for _ in range(2):
        res = run(deep)
        assert res.errors and "exceeds maximum operation depth" in res.errors[0].message
    assert len(validated) == 3
    assert run("{ report(id: ").errors  # a syntax error is reported every time, nothing cached
    assert run("{ report(id: ").errors


def test_the_validation_memo_keeps_the_latest_texts() -> None:
    from medsearch_api.schema.extensions import ValidationMemo

    memo = ValidationMemo(maxsize=2)
    memo.put("a", ())
    memo.put("b", ())
    assert memo.get("a") == ()  # a is now the latest
    memo.put("c", ())
    assert (memo.get("a"), memo.get("b"), memo.get("c"), len(memo)) == ((), None, (), 2)


def test_unexpected_errors_are_masked() -> None:
    class Boom(FakeRepository):
        async def reports_by_ids(self, ids: Any) -> Any:
            raise KeyError("secret internal detail")

    ctx = make_context(Boom(*sample_data()))
    res = run('{ report(id: "r1") { id } }', ctx=ctx)
    assert res.errors and res.errors[0].message == "internal error"


def _estimated_cost(schema_: Any, query: str) -> int:
    res = asyncio.run(schema_.execute(query, context_value=make_context()))
    assert res.errors and res.errors[0].extensions["code"] == "QUERY_TOO_COMPLEX", res.errors
    return int(res.errors[0].extensions["cost"])


def test_cost_counts_total_count_facets_listing_and_the_compat_search() -> None:
    from medsearch_api.compat import build_compat_schema
    from medsearch_api.schema import build_schema

    from medsearch.contracts.settings import ApiSettings

    tiny = ApiSettings(max_query_cost=100)
    main, compat = build_schema(tiny), build_compat_schema(tiny)
    page = _estimated_cost(main, '{ searchReports(query: "effusion", first: 50) { edges { cursor } } }')
    counted = _estimated_cost(main, '{ searchReports(query: "effusion", first: 50) { edges { cursor } totalCount } }')
    assert counted - page >= 1000  # an exact count, not one more scalar
    listing = _estimated_cost(main, "{ searchReports(first: 50) { edges { cursor } } }")
    assert listing - page >= 500
    assert _estimated_cost(main, "{ icd10Facets(size: 1) { code } }") >= 2500
    assert _estimated_cost(main, "{ entityFacets(kind: SIGNS, size: 1) { term } }") >= 2500
    assert _estimated_cost(compat, '{ searchReports(input: "effusion") { ReportId } }') == 1 + 100  # 100 hits, not 1
    assert _estimated_cost(compat, '{ getAllPositiveICD10CMs { key } }') >= 2500
    assert _estimated_cost(compat, "{ listReports { ReportId } }") >= 500
    # with the default ceiling, twenty aggregations in one request are refused; the web client's search is not
    facets = "{ " + " ".join(f"f{i}: icd10Facets(size: 1) {{ code }}" for i in range(20)) + " }"
    res = run(facets)
    assert res.errors and res.errors[0].extensions["code"] == "QUERY_TOO_COMPLEX"


def test_the_web_clients_operations_fit_the_default_cost() -> None:
    """The cost weights must not lock out our own client: its operations, read from its source, validate."""
    import re
    from pathlib import Path

    src = (Path(__file__).resolve().parents[1] / "web" / "src" / "api" / "client.ts").read_text()
    fields = {k: re.search(rf"const {k} = `(.*?)`", src, re.S).group(1)  # type: ignore[union-attr]  # present
              for k in ("IMAGE_FIELDS", "REPORT_FIELDS")}
    for name in ("SEARCH", "SKIP", "IMAGE", "SIMILAR"):
        m = re.search(rf"const {name} = `(.*?)`;", src, re.S)
        assert m, name
        op = m.group(1)
        for k, v in fields.items():
            op = op.replace("${" + k + "}", v)
        res = run(op)
        assert not any((e.extensions or {}).get("code") == "QUERY_TOO_COMPLEX" for e in res.errors or []), (name, res)
