"""A Repository of records and canned answers, for the schema's unit tests, and sample data.

The fake holds no search, filter, ranking or counting logic: those are SQL (:mod:`medsearch_api.sql`, unit-tested
without a server in ``test_sql.py``) and the real :class:`medsearch_api.repository.SearchRepository`, tested over
a real PostgreSQL and milvus-lite in ``tests/integration/test_api.py`` against brute-force answers.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Sequence
from typing import Any

from medsearch_api import records as rec
from medsearch_api.auth import Principal
from medsearch_api.context import Context, Ingest, Services

from medsearch.contracts.entities import stored_entities
from medsearch.contracts.settings import ApiSettings

# canned facet counts per column (what a test of the schema's rendering needs; not computed from the records)
CANNED_FACETS: dict[str, list[rec.FacetCount]] = {
    "icd10_positive": [rec.FacetCount("J91.8", 3), rec.FacetCount("I51.7", 1), rec.FacetCount("J93.9", 1)],
    "icd10_negative": [rec.FacetCount("J93.9", 2), rec.FacetCount("J91.8", 1)],
    "positive_signs": [rec.FacetCount("effusion", 3)],
    "negative_signs": [rec.FacetCount("pneumothorax", 2)],
    "positive_diagnoses": [rec.FacetCount("pneumothorax", 1)],
}


class FakeRepository:
    """Lookups by key answer from the records it holds; ``search_reports`` pages through the canned ``ranking``
    (default: the reports in the order given), ``count_reports`` answers ``total`` (default: the ranking's
    length), ``similar_images`` the first ``k`` of the canned ``neighbours``, the facets ``facets[column]``.
    Every call is recorded in ``calls`` with the arguments the schema passed (filters as parsed specs)."""

    def __init__(self, reports: list[rec.ReportRecord], images: list[rec.ImageRecord],
                 report_vectors: dict[str, list[float]], image_vectors: dict[str, list[float]]) -> None:
        self.reports = {r.report_id: r for r in reports}
        self.images = {i.sop_instance_uid: i for i in images}
        self.image_vectors = image_vectors
        self.ranking: list[tuple[str, float]] = [(r.report_id, 1.0 / (n + 1)) for n, r in enumerate(reports)]
        self.total: int | None = None
        self.neighbours: list[tuple[str, float]] = [(i.sop_instance_uid, 1.0 - n / 100) for n, i in enumerate(images)]
        self.facets: dict[str, list[rec.FacetCount]] = {k: list(v) for k, v in CANNED_FACETS.items()}
        self.vectors: list[list[float]] = []  # the query vectors search_reports received
        self.calls: list[tuple[str, Any]] = []

    async def reports_by_ids(self, ids: Sequence[str]) -> dict[str, rec.ReportRecord]:
        self.calls.append(("reports_by_ids", list(ids)))
        return {i: self.reports[i] for i in ids if i in self.reports}

    async def images_by_ids(self, ids: Sequence[str]) -> dict[str, rec.ImageRecord]:
        self.calls.append(("images_by_ids", list(ids)))
        return {i: self.images[i] for i in ids if i in self.images}

    async def images_by_studies(self, study_uids: Sequence[str]) -> dict[str, list[rec.ImageRecord]]:
        self.calls.append(("images_by_studies", list(study_uids)))
        return {u: [i for i in self.images.values() if i.study_uid == u] for u in study_uids}

    async def reports_by_studies(self, study_uids: Sequence[str]) -> dict[str, list[rec.ReportRecord]]:
        self.calls.append(("reports_by_studies", list(study_uids)))
        return {u: [r for r in self.reports.values() if r.study_uid == u] for u in study_uids}

    async def search_reports(self, *, query: str | None, mode: rec.SearchMode,
                             query_vector: Sequence[float] | Awaitable[Sequence[float]] | None,
                             filter: rec.ReportFilterSpec, offset: int, limit: int) -> rec.ReportPage:
        self.calls.append(("search_reports", (query, mode, filter, offset, limit)))
        if query_vector is not None:
            v = await query_vector if isinstance(query_vector, Awaitable) else query_vector
            self.vectors.append(list(v))
        window = self.ranking[offset:offset + limit + 1]
        return rec.ReportPage([rec.ReportHit(self.reports[i], s) for i, s in window[:limit]], len(window) > limit)

    async def count_reports(self, *, query: str | None, mode: rec.SearchMode, filter: rec.ReportFilterSpec) -> int:
        self.calls.append(("count_reports", (query, mode, filter)))
        return len(self.ranking) if self.total is None else self.total

    async def image_vector(self, image_id: str) -> list[float] | None:
        self.calls.append(("image_vector", image_id))
        return self.image_vectors.get(image_id)

    async def similar_images(self, *, vector: Sequence[float], k: int, filter: rec.ImageFilterSpec,
                             exclude_ids: Sequence[str]) -> list[rec.ImageHit]:
        self.calls.append(("similar_images", (k, filter, list(exclude_ids), list(vector))))
        return [rec.ImageHit(self.images[i], s) for i, s in self.neighbours[:k]]

    async def icd10_facets(self, *, query: str | None, filter: rec.ReportFilterSpec, polarity: rec.Polarity,
                           size: int) -> list[rec.FacetCount]:
        self.calls.append(("icd10_facets", (query, polarity, size, filter)))
        return self.facets.get(rec.ICD10_FIELD[polarity], [])[:size]

    async def term_facets(self, *, field: str, report_ids: Sequence[str] | None, query: str | None,
                          filter: rec.ReportFilterSpec, size: int) -> list[rec.FacetCount]:
        self.calls.append(("term_facets", (field, report_ids, query, size)))
        return self.facets.get(field, [])[:size]

    async def ping(self) -> None:
        return None


class FakeIngest(Ingest):
    def __init__(self) -> None:
        self.published: list[tuple[str, Any]] = []

    async def dicom(self, data: bytes, filename: str) -> Any:
        from medsearch.producer import PublishResult

        self.published.append(("dicom", (len(data), filename)))
        return PublishResult("dicom", filename, "file:///x/demo/dicom/abc.dcm", "abc", "published")

    async def report(self, report_id: str, text: str, study_uid: str | None, report_date: Any = None) -> Any:
        from medsearch.producer import PublishResult

        self.published.append(("report", (report_id, study_uid, report_date)))
        return PublishResult("report", report_id, None, "def", "published")


def _unit(seed: int, dim: int) -> list[float]:
    import random

    rnd = random.Random(seed)
    v = [rnd.gauss(0, 1) for _ in range(dim)]
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def sample_data() -> tuple[list[rec.ReportRecord], list[rec.ImageRecord], dict[str, list[float]],
                           dict[str, list[float]]]:
    texts = [
        ("r1", "1.2.1", "Small left pleural effusion. No pneumothorax.", ("J91.8",), ("J93.9",), 20200105),
        ("r2", "1.2.2", "Cardiomegaly with pulmonary edema. Pleural effusion bilaterally.", ("I51.7", "J91.8", "J81.1"),
         (), 20210310),
        ("r3", "1.2.3", "No acute disease. Heart size normal. No effusion.", (), ("J91.8", "I51.7"), 20220101),
        ("r4", "1.2.4", "Right pneumothorax, large. Pleural effusion small.", ("J93.9", "J91.8"), (), 20230615),
        ("r5", "1.2.5", "Lobar pneumonia right lower lobe.", ("J18.1",), ("J93.9",), 20240220),
    ]
    reports = []
    for rid, study, text, pos, neg, date in texts:
        reports.append(rec.ReportRecord(
            report_id=rid, study_uid=study, text=text, findings=text, impression=text.split(".")[0],
            sections={"findings": text}, report_date=date, icd10_positive=pos, icd10_negative=neg,
            positive_signs=("effusion",) if "J91.8" in pos else (),
            negative_signs=("pneumothorax",) if "J93.9" in neg else (),
            positive_diagnoses=tuple("pneumothorax" for c in pos if c == "J93.9"),
            entities=stored_entities([{"text": "effusion", "start": 0, "end": 8, "category": "sign",
                                       "traits": [{"name": "negated", "score": 0.1}],
                                       "icd10": [{"code": "J91.8", "score": 0.9}]}]),
            nlp_backend="lexicon", ingested_at=1700000000000,
        ))
    images = []
    views = ["PA", "AP", "LATERAL", "PA", "AP"]
    for n, r in enumerate(reports):
        for j in range(2):
            images.append(rec.ImageRecord(
                sop_instance_uid=f"{r.study_uid}.{j + 1}", study_uid=r.study_uid, series_uid=f"{r.study_uid}.9",
                report_id=r.report_id if j == 0 else "", modality="CR" if n % 2 == 0 else "DX",
                view_position=views[n] if j == 0 else "LATERAL", body_part="CHEST", rows=256, columns=256, frames=1,
                study_date=r.report_date,
                thumbnail_uri=f"file:///nonexistent/demo/thumbnails/{r.study_uid}.{j + 1}.png",
                source_uri=f"s3://bucket/demo/dicom/{n}{j}.dcm", model_name="densenet121", model_version="1"))
    rv = {r.report_id: _unit(n, 8) for n, r in enumerate(reports)}
    iv = {i.sop_instance_uid: _unit(100 + n, 8) for n, i in enumerate(images)}
    return reports, images, rv, iv


async def fake_embed_text(text: str) -> list[float]:
    return _unit(sum(map(ord, text)), 8)


async def fake_embed_image(data: bytes) -> list[float]:
    return _unit(len(data), 8)


def make_context(repo: FakeRepository | None = None, *, roles: Sequence[str] | None = ("reader",),
                 settings: ApiSettings | None = None, ingest: Ingest | None = None, semantic: bool = True,
                 ) -> Context:
    repo = repo or FakeRepository(*sample_data())
    services = Services(settings=settings or ApiSettings(), repo=repo,
                        embed_text=fake_embed_text if semantic else None, embed_image=fake_embed_image,
                        ingest=ingest or FakeIngest())
    principal = None if roles is None else Principal("test", frozenset(roles), "token")
    return Context(services, principal)
