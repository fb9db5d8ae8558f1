"""One context per request: the principal, the repository, per-request DataLoaders and service adapters."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from strawberry.dataloader import DataLoader
from strawberry.fastapi import BaseContext

from medsearch.audit import AuditTrail
from medsearch.contracts.settings import ApiSettings
from medsearch_api.audit import AuditingRepository, AuditLog
from medsearch_api.auth import Principal
from medsearch_api.records import ImageRecord, ReportRecord
from medsearch_api.repository import Repository

TextEmbedder = Callable[[str], Awaitable[list[float]]]
ImageEmbedder = Callable[[bytes], Awaitable[list[float]]]


class Ingest:
    """What the upload mutations need (implemented over ``medsearch.producer.Publisher``)."""

    async def dicom(self, data: bytes, filename: str) -> Any:
        raise NotImplementedError

    async def report(self, report_id: str, text: str, study_uid: str | None, report_date: dt.date | None) -> Any:
        raise NotImplementedError


class Loaders:
    """Per-request DataLoaders: each batches the lookups of one resolver pass into one Milvus query."""

    def __init__(self, repo: Repository) -> None:
        async def reports(ids: Sequence[str]) -> list[ReportRecord | None]:
            found = await repo.reports_by_ids(list(ids))
            return [found.get(i) for i in ids]

        async def images(ids: Sequence[str]) -> list[ImageRecord | None]:
            found = await repo.images_by_ids(list(ids))
            return [found.get(i) for i in ids]

        async def images_by_study(uids: Sequence[str]) -> list[list[ImageRecord]]:
            found = await repo.images_by_studies(list(uids))
            return [found.get(u, []) for u in uids]

        async def reports_by_study(uids: Sequence[str]) -> list[list[ReportRecord]]:
            found = await repo.reports_by_studies(list(uids))
            return [found.get(u, []) for u in uids]

        self.report: DataLoader[str, ReportRecord | None] = DataLoader(load_fn=reports)
        self.image: DataLoader[str, ImageRecord | None] = DataLoader(load_fn=images)
        self.images_by_study: DataLoader[str, list[ImageRecord]] = DataLoader(load_fn=images_by_study)
        self.reports_by_study: DataLoader[str, list[ReportRecord]] = DataLoader(load_fn=reports_by_study)


@dataclass
class Services:
    """Process-wide pieces shared by every request's context."""

    settings: ApiSettings
    repo: Repository
    embed_text: TextEmbedder | None = None
    embed_image: ImageEmbedder | None = None
    ingest: Ingest | None = None
    # (image id, principal=name) -> the thumbnail's URL
    thumbnail_url: Callable[..., str] = field(default=lambda image_id, **_: f"/thumbnails/{image_id}")
    audit_log: AuditLog | None = None  # None only where no store exists (unit tests)


class Context(BaseContext):
    def __init__(self, services: Services, principal: Principal | None) -> None:
        super().__init__()
        self.services = services
        self.settings = services.settings
        self.principal = principal
        # what this request reads and writes, for its audit record (medsearch_api.audit)
        self.audit = AuditTrail()
        self.repo = AuditingRepository(services.repo, self.audit)
        self.loaders = Loaders(self.repo)
