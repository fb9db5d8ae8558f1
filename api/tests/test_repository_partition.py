"""MilvusRepository._partitioned (finding partitions ranked in process) over a fake Milvus client: deepening,
exhaustion, HYBRID fusion, and the fallback when even the deepest lists cannot settle it."""

from __future__ import annotations

from typing import Any

import pytest
from medsearch_api import filters as fx
from medsearch_api import repository as repo_mod
from medsearch_api.records import SearchMode
from medsearch_api.repository import MilvusRepository
from medsearch_api.search import rrf

CODES = ["J90"]


class FakeClient:
    """Ranks a fixed corpus; honours ``limit`` and the two finding-partition filters (nothing else)."""

    def __init__(self, rows: list[dict[str, Any]], dense_order: list[str]) -> None:
        self.rows = {r["report_id"]: r for r in rows}
        self.sparse = [r["report_id"] for r in rows]  # corpus order = BM25 order
        self.dense = dense_order
        self.searches: list[tuple[str, int, str | None]] = []

    def get_load_state(self, collection: str) -> dict[str, Any]:
        from pymilvus.client.types import LoadState

        return {"state": LoadState.Loaded}

    def search(self, collection: str, data: list[Any], anns_field: str, limit: int, output_fields: list[str],
               filter: str | None = None, search_params: dict[str, Any] | None = None) -> list[list[dict[str, Any]]]:
        self.searches.append((anns_field, limit, filter))
        order = self.sparse if anns_field == "text_sparse" else self.dense
        asserted, neither = fx.finding_partitions(CODES)
        keep = {None: lambda r: True, "": lambda r: True,
                asserted: lambda r: fx.row_asserts(r, CODES), neither: lambda r: fx.row_neither(r, CODES)}[filter]
        hits = [i for i in order if keep(self.rows[i])][:limit]
        n = len(order)
        return [[{"id": i, "distance": -(n - k) if anns_field == "text_sparse" else 1.0 - k / n,
                  "entity": {f: self.rows[i].get(f) for f in output_fields}} for k, i in enumerate(hits)]]


def corpus(n: int, asserted_at: set[int], negated_at: set[int]) -> list[dict[str, Any]]:
    return [{"report_id": f"r{k:04d}", "icd10_positive": ["J90"] if k in asserted_at else [],
             "icd10_negative": ["J90"] if k in negated_at else []} for k in range(n)]


def filtered(repo: MilvusRepository, mode: SearchMode, want: int) -> list[str]:
    """The first ``want`` of one filtered search per partition, concatenated (all a results page can show)."""
    out: list[str] = []
    for part in fx.finding_partitions(CODES):
        out += [i for i, _, _ in repo._ranked("effusion", mode, [0.0], part, want)]
    return out[:want]


@pytest.mark.parametrize("mode", list(SearchMode))
@pytest.mark.parametrize("want", [1, 5, 11, 40])
def test_equals_the_filtered_searches_and_deepens_for_rare_findings(mode: SearchMode, want: int) -> None:
    # 600 reports; the finding is asserted only deep in the ranking and negated here and there
    rows = corpus(600, asserted_at={5, 300, 420, 599}, negated_at={0, 1, 2, 7, 301})
    dense = [r["report_id"] for r in reversed(rows)]
    client = FakeClient(rows, dense)
    repo = MilvusRepository(client, "t")
    fast = repo._partitioned("effusion", mode, [0.0], "", CODES, want)
    assert fast is not None
    assert [i for i, _ in fast] == filtered(repo, mode, want)
    depths = [limit for field, limit, flt in client.searches if flt is None or flt == ""]
    assert depths[0] == max(4 * want, 64)
    assert (len(set(depths)) > 1) == (want > 1)  # one rare asserted report is near the top; two or more are not


def test_common_findings_settle_on_the_first_shallow_list() -> None:
    rows = corpus(5000, asserted_at=set(range(0, 5000, 3)), negated_at=set(range(1, 5000, 3)))
    client = FakeClient(rows, [r["report_id"] for r in rows])
    repo = MilvusRepository(client, "t")
    fast = repo._partitioned("effusion", SearchMode.KEYWORD, None, "", CODES, 11)
    assert fast is not None
    assert [i for i, _ in fast] == [f"r{k:04d}" for k in range(0, 33, 3)]  # the asserting reports
    assert [limit for _, limit, _ in client.searches] == [64]


def test_few_asserting_reports_are_followed_by_those_that_neither_assert_nor_negate() -> None:
    rows = corpus(5000, asserted_at={4, 9, 30}, negated_at={0, 1, 2, 3})
    client = FakeClient(rows, [r["report_id"] for r in rows])
    repo = MilvusRepository(client, "t")
    fast = repo._partitioned("effusion", SearchMode.KEYWORD, None, "", CODES, 11)
    assert fast is not None
    neither = [f"r{k:04d}" for k in range(5, 20) if k not in (9,)][:8]
    assert [i for i, _ in fast] == ["r0004", "r0009", "r0030", *neither]
    # fewer asserting reports than asked for: only a list that is exhausted proves there are no more
    assert [limit for _, limit, _ in client.searches] == [64, 512, 4096, 16384]


def test_unsettled_at_the_deepest_list_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repo_mod, "MAX_WINDOW", 512)
    rows = corpus(2000, asserted_at={1900}, negated_at=set())  # 1 asserted report beyond the deepest list
    client = FakeClient(rows, [r["report_id"] for r in rows])
    repo = MilvusRepository(client, "t")
    assert repo._partitioned("effusion", SearchMode.KEYWORD, None, "", CODES, 5) is None


def test_hybrid_fuses_within_each_partition() -> None:
    rows = corpus(100, asserted_at={3, 50, 97}, negated_at={10})
    dense = [r["report_id"] for r in sorted(rows, key=lambda r: (int(r["report_id"][1:]) * 37) % 101)]
    client = FakeClient(rows, dense)
    repo = MilvusRepository(client, "t")
    fast = repo._partitioned("effusion", SearchMode.HYBRID, [0.0], "", CODES, 5)
    assert fast is not None
    asserted = ["r0003", "r0050", "r0097"]
    sparse_a = [i for i in client.sparse if i in asserted]
    dense_a = [i for i in dense if i in asserted]
    assert [i for i, _ in fast[:3]] == [i for i, _ in rrf([sparse_a, dense_a])]
    assert "r0010" not in {i for i, _ in fast}  # negated only: in neither partition
