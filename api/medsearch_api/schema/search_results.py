# mypy: disable-error-code="untyped-decorator"
# (strawberry.field(...) used as a decorator factory is typed as returning Any; the resolvers are typed.)
"""Search results: the report connection (edges with snippets, page info, an exact total) and similar images."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import strawberry
from strawberry import Info

from medsearch_api import resolvers
from medsearch_api.context import Context
from medsearch_api.records import ImageHit, ReportFilterSpec, ReportHit, SearchMode
from medsearch_api.schema.image import Image
from medsearch_api.schema.report import Report
from medsearch_api.search import encode_cursor, make_snippet


@strawberry.type(description="Relay-style page information.")
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type(description="[start, end) character offsets into Snippet.text.")
class TextSpan:
    start: int
    end: int


@strawberry.type(description="A window of the report text around the query terms.")
class Snippet:
    text: str
    highlights: list[TextSpan]
    html: str = strawberry.field(description="HTML-escaped text with <mark> around the highlights.")


@strawberry.type
class ReportSearchEdge:
    cursor: str
    node: Report
    score: float | None = strawberry.field(description="Ranking score (ts_rank, cosine or RRF); null when listing.")
    query: strawberry.Private[str | None]

    @strawberry.field
    def snippet(self, width: int = 200) -> Snippet:
        r = self.node.record
        text = r.text or " ".join(p for p in (r.findings, r.impression) if p)
        s = make_snippet(text, self.query, width=max(40, min(width, 2000)))
        return Snippet(text=s.text, highlights=[TextSpan(start=a, end=b) for a, b in s.highlights], html=s.html())


@strawberry.type
class ReportSearchConnection:
    edges: list[ReportSearchEdge]
    page_info: PageInfo
    query: strawberry.Private[str | None]
    mode: strawberry.Private[SearchMode]
    spec: strawberry.Private[ReportFilterSpec]
    total: strawberry.Private[asyncio.Future[int] | None] = None  # the count, when started beside the search

    @classmethod
    def from_hits(cls, hits: Sequence[ReportHit], *, offset: int, has_more: bool, query: str | None,
                  mode: SearchMode, spec: ReportFilterSpec, total: asyncio.Future[int] | None = None,
                  ) -> ReportSearchConnection:
        """A page of hits starting at ``offset``; scores only for a ranked search (``query`` set)."""
        edges = [ReportSearchEdge(cursor=encode_cursor(offset + n), node=Report.from_record(h.report),
                                  score=h.score if query else None, query=query)
                 for n, h in enumerate(hits)]
        page_info = PageInfo(has_next_page=has_more, has_previous_page=offset > 0,
                             start_cursor=edges[0].cursor if edges else None,
                             end_cursor=edges[-1].cursor if edges else None)
        return cls(edges=edges, page_info=page_info, query=query, mode=mode, spec=spec, total=total)

    @strawberry.field(description="Reports matching the query and filter (KEYWORD: containing any query term; "
                                  "SEMANTIC/HYBRID and listing: all reports passing the filter).")
    async def total_count(self, info: Info[Context, None]) -> int:
        if self.total is not None:
            return await self.total
        return await resolvers.count_reports(info.context, self.query, self.mode, self.spec)


@strawberry.type
class SimilarImage:
    image: Image
    score: float = strawberry.field(description="Similarity (metric of the image index, COSINE by default).")

    @classmethod
    def from_hit(cls, hit: ImageHit) -> SimilarImage:
        return cls(image=Image.from_record(hit.image), score=hit.score)
