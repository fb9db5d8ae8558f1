"""IngestResult: the outcome of an upload mutation (a :class:`medsearch.producer.PublishResult`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import strawberry

if TYPE_CHECKING:  # the producer (and its imaging imports) loads only when an upload is published
    from medsearch.producer import PublishResult


@strawberry.type(description="Outcome of an upload: published to the ingest topic, a duplicate, or rejected.")
class IngestResult:
    kind: str
    id: str
    uri: str | None
    sha256: str
    status: str
    reason: str | None

    @classmethod
    def from_record(cls, r: PublishResult) -> IngestResult:
        return cls(kind=str(r.kind), id=str(r.id), uri=r.uri, sha256=str(r.sha256), status=str(r.status),
                   reason=r.reason)
