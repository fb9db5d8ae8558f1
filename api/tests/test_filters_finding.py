"""Filter expressions of the finding-aware search (pure)."""

from __future__ import annotations

from medsearch_api import filters as fx


def test_partitions_and_visibility() -> None:
    asserted, neither = fx.finding_partitions(["J90", "J91.0"])
    assert asserted == '(ARRAY_CONTAINS(icd10_positive, "J90") or ARRAY_CONTAINS(icd10_positive, "J91.0"))'
    assert neither.startswith("not (ARRAY_CONTAINS(icd10_positive") and "icd10_negative" in neither
    assert fx.finding_visible(["J90"]) == (
        'not ((ARRAY_CONTAINS(icd10_negative, "J90")) and not (ARRAY_CONTAINS(icd10_positive, "J90")))'
    )


def test_in_process_twins_partition_rows_like_the_expressions() -> None:
    codes = ["J90", "J91.0"]
    rows = {
        "asserts": {"icd10_positive": ["J90"], "icd10_negative": []},
        "asserts-and-negates": {"icd10_positive": ["J91.0"], "icd10_negative": ["J90"]},  # left pleura +, right -
        "negates-only": {"icd10_positive": ["I51.7"], "icd10_negative": ["J90"]},
        "neither": {"icd10_positive": ["I51.7"], "icd10_negative": ["J93.9"]},
        "no-codes": {},
    }
    assert {k for k, r in rows.items() if fx.row_asserts(r, codes)} == {"asserts", "asserts-and-negates"}
    assert {k for k, r in rows.items() if fx.row_neither(r, codes)} == {"neither", "no-codes"}
    # visible = in one of the two partitions: everything but the reports that only negate the finding
    assert {k for k, r in rows.items() if fx.row_visible(r, codes)} == set(rows) - {"negates-only"}
    for r in rows.values():
        assert fx.row_visible(r, codes) == (fx.row_asserts(r, codes) or fx.row_neither(r, codes))
