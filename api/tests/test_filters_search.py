"""Filter expressions from validated values only; ranking helpers."""

from __future__ import annotations

import pytest
from medsearch_api import filters as fx
from medsearch_api.records import ImageFilterSpec, ReportFilterSpec
from medsearch_api.search import CursorError, decode_cursor, encode_cursor, make_snippet, rrf

HOSTILE = ['" or 1==1 or "', "' or 1==1 or '", "J91.8\" or report_id != \"", "CR\\", "A\nB", "x) or (true",
           "1.2.3\" || \"1", "", " "]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_are_rejected(value: str) -> None:
    for kind in (fx.ICD10_CODE, fx.UID, fx.IDENT, fx.CODE_STRING):
        with pytest.raises(fx.FilterInputError):
            fx.check(kind, value, "arg")


def test_expressions() -> None:
    f = fx.validate_report_filter(ReportFilterSpec(positive_codes=("J91.8", "I51.7"), negative_codes=("J93.9",),
                                                   date_from=20200101, date_to=20201231))
    assert fx.report_expr(f) == ('(ARRAY_CONTAINS(icd10_positive, "J91.8") and ARRAY_CONTAINS(icd10_positive, '
                                 '"I51.7")) and (ARRAY_CONTAINS(icd10_negative, "J93.9")) and '
                                 '(report_date >= 20200101) and (report_date <= 20201231)')
    assert fx.report_expr(ReportFilterSpec()) == ""
    assert "and report_id !=" in fx.report_expr(ReportFilterSpec(), study_uids=[])  # nothing matches
    g = fx.validate_image_filter(ImageFilterSpec(modalities=("CR", "DX"), view_positions=("PA",)))
    assert fx.image_expr(g, exclude_ids=["1.2.3"]) == ('(modality in ["CR", "DX"]) and (view_position in ["PA"]) '
                                                       'and (sop_instance_uid != "1.2.3")')
    with pytest.raises(fx.FilterInputError, match="dateFrom"):
        fx.validate_report_filter(ReportFilterSpec(date_from=20210101, date_to=20200101))
    with pytest.raises(fx.FilterInputError, match="at most"):
        fx.validate_report_filter(ReportFilterSpec(positive_codes=("J91.8",) * 300))


def test_query_tokens_keep_word_tokens_only() -> None:
    assert fx.query_tokens("Pleural  EFFUSION, pleural; ' or 1==1") == ["pleural", "effusion", "or", "1"]
    assert fx.query_tokens("'\"()") == []


def test_rrf_and_cursor() -> None:
    fused = rrf([["a", "b", "c"], ["c", "a", "d"]])
    assert [d for d, _ in fused] == ["a", "c", "b", "d"]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)
    assert decode_cursor(encode_cursor(7)) == 8 and decode_cursor(None) == 0
    for bad in ("x", encode_cursor(1)[:-1] + "!", "AAAA"):
        with pytest.raises(CursorError):
            decode_cursor(bad)


def test_snippet_window_and_html_escaping() -> None:
    text = "<b>Heart</b> normal. " + "filler words here. " * 30 + "Small left pleural effusion is seen."
    s = make_snippet(text, "effusion", width=80)
    assert len(s.text) <= 90 and s.text.startswith("… ")
    (a, b), = s.highlights
    assert s.text[a:b] == "effusion"
    t = make_snippet(text, "heart", width=80)
    assert t.html().startswith("&lt;b&gt;<mark>Heart</mark>&lt;/b&gt;")


def _densest_start_brute_force(starts: list[int], width: int) -> int:
    best, best_n = starts[0], 0
    for s in starts:
        n = sum(1 for s2 in starts if s <= s2 < s + width)
        if n > best_n:
            best, best_n = s, n
    return best


def test_snippet_window_is_the_densest_and_building_it_is_linear() -> None:
    import random
    import time

    from medsearch_api.search import densest_start

    rng = random.Random(5)
    for _ in range(300):  # the sliding pass picks the same start as the quadratic definition
        starts = sorted(rng.sample(range(2000), rng.randint(1, 120)))
        width = rng.choice([1, 40, 80, 200, 5000])
        assert densest_start(starts, width) == _densest_start_brute_force(starts, width)

    report = "There is a small left pleural effusion. " * 1500  # 60,000 characters, 1,500 matches per word
    assert len(report) == 60_000
    best = float("inf")
    for _ in range(3):  # the best of three: a busy machine should not fail a linear-time check
        t0 = time.perf_counter()
        snip = make_snippet(report, "effusion the small", width=200)
        best = min(best, time.perf_counter() - t0)
    assert best < 0.05  # about 10 ms; quadratic in the matches before (0.36 s)
    assert snip.text.count("effusion") == sum(1 for a, b in snip.highlights if snip.text[a:b] == "effusion")
