"""The SQL builders of the gateway, without a server: values are parameters, never SQL text; the finding rule and
the scope are shared by lists, counts and facets. (What the statements return is tested against a real PostgreSQL
in tests/integration/test_api.py.)"""

from __future__ import annotations

import pytest
from medsearch_api import sql as q
from medsearch_api.records import ImageFilterSpec, ReportFilterSpec

T = q.Tables("demo-1")
HOSTILE = "effusion'); DROP TABLE reports; --"


def test_tables_are_the_index_schema() -> None:
    assert T.schema == "medsearch_demo_1"
    assert q.listing(T, ReportFilterSpec(), 10, 0).render().count('"medsearch_demo_1"."reports"') == 1


def test_query_text_is_only_ever_a_parameter() -> None:
    stmt = q.keyword_ranking(T, HOSTILE, ReportFilterSpec(), (), "simple", 10, 0)
    assert stmt is not None
    text = stmt.render()
    assert "DROP" not in text and "effusion" not in text
    assert stmt.params[:4] == ["effusion", "drop", "table", "reports"]  # one plainto_tsquery per word token
    assert text.count("plainto_tsquery('simple'::regconfig, %s)") == 2 * 4  # rank and match
    assert q.keyword_ranking(T, "'\"()", ReportFilterSpec(), (), "simple", 10, 0) is None


def test_filter_conditions_and_their_parameters() -> None:
    f = ReportFilterSpec(positive_codes=("J91.8", "I51.7"), negative_codes=("J93.9",), date_from=20200101,
                         date_to=20231231, view_positions=("PA",), study_uids=("1.2",))
    w = q.report_filter(T, f)
    text = w.sql().as_string(None)
    assert '"r"."icd10_positive" @> %s::text[]' in text and '"r"."icd10_negative" @> %s::text[]' in text
    assert "EXISTS (SELECT 1 FROM \"medsearch_demo_1\".\"images\" i" in text
    assert list(w.params) == [["J91.8", "I51.7"], ["J93.9"], 20200101, 20231231, ["1.2"], ["PA"]]
    assert text.count("%s") == len(w.params)


def test_finding_rule_is_one_rule_for_lists_counts_and_facets() -> None:
    codes = ("J93.9",)
    scope = q.report_scope(T, "pneumothorax", ReportFilterSpec(), codes, "simple")
    assert scope is not None
    rule = "NOT (r.icd10_negative && %s::text[] AND NOT r.icd10_positive && %s::text[])"
    ranking = q.keyword_ranking(T, "pneumothorax", ReportFilterSpec(), codes, "simple", 10, 0)
    assert ranking is not None
    for stmt in (ranking, q.count(T, scope), q.facets(T, "icd10_positive", scope, 10)):
        text = stmt.render()
        assert text.count(rule) == 1 and "r.tsv @@" in text
        assert text.count("%s") == len(stmt.params)
    assert "CASE WHEN r.icd10_positive && %s::text[] THEN 0 ELSE 1 END" in ranking.render()
    assert q.report_scope(T, "pneumothorax", ReportFilterSpec(), (), "simple") is not None
    assert rule not in q.count(T, q.report_scope(T, "cough", ReportFilterSpec(), (), "simple")).render()  # type: ignore[arg-type]


def test_the_knn_tiers_and_the_finding_tier_count_share_the_rule_and_the_tier() -> None:
    codes = ("J93.9",)
    f = ReportFilterSpec(positive_codes=("I51.7",), view_positions=("PA",))
    rule = "NOT (r.icd10_negative && %s::text[] AND NOT r.icd10_positive && %s::text[])"
    tier = "CASE WHEN r.icd10_positive && %s::text[] THEN 0 ELSE 1 END"
    tiers, counted = q.tiers_of(T, ["a", "b"], f, codes), q.asserting_count(T, f, codes, 11)
    for stmt in (tiers, counted):
        text = stmt.render()
        assert text.count(rule) == 1 and text.count(tier) == 1 and "EXISTS (SELECT 1 FROM" in text
        assert text.count("%s") == len(stmt.params)
    text = counted.render()
    assert text.startswith("SELECT count(*) FROM (SELECT 1 FROM") and f"{tier} = 0 LIMIT %s) s" in text
    assert counted.params == [["I51.7"], ["PA"], ["J93.9"], ["J93.9"], ["J93.9"], 11]  # capped: never a full count


def test_facet_columns_are_an_allow_list() -> None:
    with pytest.raises(ValueError):
        q.facets(T, "text", q.Where(), 10)
    with pytest.raises(ValueError):
        q.reports_by(T, "text", ["x"])


def test_facets_and_count_over_every_report_read_the_kept_counts() -> None:
    everything = q.report_scope(T, None, ReportFilterSpec(), (), "simple")
    assert everything is not None and not everything.parts
    facets = q.facets(T, "negative_signs", everything, 7)
    assert '"medsearch_demo_1"."facet_counts"' in facets.render() and "unnest" not in facets.render()
    assert facets.params == ["negative_signs", 7] and facets.render().count("%s") == 2
    total = q.count(T, everything)
    assert '"medsearch_demo_1"."facet_counts"' in total.render() and total.params == []
    # any filter, query or finding rule aggregates the reports in scope
    dated = q.report_scope(T, None, ReportFilterSpec(date_from=20240101), (), "simple")
    assert dated is not None
    for stmt in (q.facets(T, "icd10_positive", dated, 7), q.count(T, dated)):
        assert "facet_counts" not in stmt.render() and '"medsearch_demo_1"."reports" r' in stmt.render()


def test_image_code_filters() -> None:
    f = ImageFilterSpec(positive_codes=("I51.7",), negative_codes=("J90",))
    stmt = q.studies_with_codes(T, f, 100)
    assert stmt.params == [["I51.7"], ["J90"], 100] and stmt.render().count("%s") == 3
    passing = q.images_passing(T, ["1.2.3"], f)
    assert passing.params == [["1.2.3"], ["I51.7"], ["J90"]] and passing.render().count("%s") == 3
