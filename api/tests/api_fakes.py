"""An in-memory Repository with the same semantics as MilvusRepository (brute force), and sample data."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from medsearch_api import records as rec
from medsearch_api.auth import Principal
from medsearch_api.context import Context, Ingest, Services
from medsearch_api.records import (
    FacetCount,
    ImageFilterSpec,
    ImageHit,
    ImageRecord,
    Polarity,
    ReportFilterSpec,
    ReportHit,
    ReportPage,
    ReportRecord,
    SearchMode,
)
from medsearch_api.search import rrf

from medsearch.contracts.entities import stored_entities
from medsearch.contracts.settings import ApiSettings

_TOK = re.compile(r"\w+")


def tokens(text: str) -> list[str]:
    return _TOK.findall(text.lower())


def report_matches(r: ReportRecord, f: ReportFilterSpec, images: Sequence[ImageRecord]) -> bool:
    if not all(c in r.icd10_positive for c in f.positive_codes):
        return False
    if not all(c in r.icd10_negative for c in f.negative_codes):
        return False
    if not all(c in r.icd10_uncertain for c in f.uncertain_codes):
        return False
    if f.date_from is not None and r.report_date < f.date_from:
        return False
    if f.date_to is not None and r.report_date > f.date_to:
        return False
    if f.study_uids and r.study_uid not in f.study_uids:
        return False
    if f.report_ids and r.report_id not in f.report_ids:
        return False
    if f.needs_images:
        ok = [i for i in images if i.study_uid == r.study_uid
              and (not f.modalities or i.modality in f.modalities)
              and (not f.view_positions or i.view_position in f.view_positions)
              and (not f.body_parts or i.body_part in f.body_parts)]
        if not ok:
            return False
    return True


def image_matches(i: ImageRecord, f: ImageFilterSpec, reports: Sequence[ReportRecord]) -> bool:
    if f.modalities and i.modality not in f.modalities:
        return False
    if f.view_positions and i.view_position not in f.view_positions:
        return False
    if f.body_parts and i.body_part not in f.body_parts:
        return False
    if f.lateralities and i.laterality not in f.lateralities:
        return False
    if f.date_from is not None and i.study_date < f.date_from:
        return False
    if f.date_to is not None and i.study_date > f.date_to:
        return False
    if f.study_uids and i.study_uid not in f.study_uids:
        return False
    if f.needs_reports:
        ok = [r for r in reports if r.study_uid == i.study_uid
              and all(c in r.icd10_positive for c in f.positive_codes)
              and all(c in r.icd10_negative for c in f.negative_codes)]
        if not ok:
            return False
    return True


def _cos(a: Sequence[float], b: Sequence[float]) -> float:
    na = math.sqrt(sum(x * x for x in a)) or 1.0
    nb = math.sqrt(sum(x * x for x in b)) or 1.0
    return sum(x * y for x, y in zip(a, b, strict=True)) / (na * nb)


class FakeRepository:
    def __init__(self, reports: list[ReportRecord], images: list[ImageRecord],
                 report_vectors: dict[str, list[float]], image_vectors: dict[str, list[float]]) -> None:
        self.reports = {r.report_id: r for r in reports}
        self.images = {i.sop_instance_uid: i for i in images}
        self.report_vectors = report_vectors
        self.image_vectors = image_vectors
        self.calls: list[tuple[str, Any]] = []

    async def reports_by_ids(self, ids: Sequence[str]) -> dict[str, ReportRecord]:
        self.calls.append(("reports_by_ids", list(ids)))
        return {i: self.reports[i] for i in ids if i in self.reports}

    async def images_by_ids(self, ids: Sequence[str]) -> dict[str, ImageRecord]:
        self.calls.append(("images_by_ids", list(ids)))
        return {i: self.images[i] for i in ids if i in self.images}

    async def images_by_studies(self, study_uids: Sequence[str]) -> dict[str, list[ImageRecord]]:
        self.calls.append(("images_by_studies", list(study_uids)))
        return {u: sorted((i for i in self.images.values() if i.study_uid == u),
                          key=lambda i: (i.series_uid, i.sop_instance_uid)) for u in study_uids}

    async def reports_by_studies(self, study_uids: Sequence[str]) -> dict[str, list[ReportRecord]]:
        self.calls.append(("reports_by_studies", list(study_uids)))
        return {u: sorted((r for r in self.reports.values() if r.study_uid == u), key=lambda r: r.report_id)
                for u in study_uids}

    def _filtered(self, f: ReportFilterSpec) -> list[ReportRecord]:
        imgs = list(self.images.values())
        return [r for r in self.reports.values() if report_matches(r, f, imgs)]

    def _keyword(self, query: str, f: ReportFilterSpec) -> list[tuple[str, float]]:
        q = set(tokens(query))
        scored = []
        for r in self._filtered(f):
            toks = tokens(r.text)
            s = float(sum(1 for t in toks if t in q))
            if s > 0:
                scored.append((r.report_id, s))
        return sorted(scored, key=lambda x: (-x[1], x[0]))

    def _dense(self, vector: Sequence[float], f: ReportFilterSpec) -> list[tuple[str, float]]:
        scored = [(r.report_id, _cos(vector, self.report_vectors[r.report_id])) for r in self._filtered(f)]
        return sorted(scored, key=lambda x: (-x[1], x[0]))

    async def search_reports(self, *, query: str | None, mode: SearchMode, query_vector: Sequence[float] | None,
                             filter: ReportFilterSpec, offset: int, limit: int) -> ReportPage:
        self.calls.append(("search_reports", (query, mode, filter, offset, limit)))
        if not query:
            rows = sorted(self._filtered(filter), key=lambda r: (-r.report_date, r.report_id))  # newest first
            page = rows[offset:offset + limit + 1]
            return ReportPage([ReportHit(r, 0.0) for r in page[:limit]], len(page) > limit)
        if mode is SearchMode.KEYWORD:
            ranked = self._keyword(query, filter)
        elif mode is SearchMode.SEMANTIC:
            assert query_vector is not None
            ranked = self._dense(query_vector, filter)
        else:
            assert query_vector is not None
            ranked = rrf([[i for i, _ in self._keyword(query, filter)],
                          [i for i, _ in self._dense(query_vector, filter)]])
        window = ranked[offset:offset + limit + 1]
        return ReportPage([ReportHit(self.reports[i], s) for i, s in window[:limit]], len(window) > limit)

    def matching(self, query: str | None, f: ReportFilterSpec) -> list[ReportRecord]:
        rows = self._filtered(f)
        if query:
            q = set(tokens(query))
            rows = [r for r in rows if q & set(tokens(r.text))]
        return rows

    async def count_reports(self, *, query: str | None, mode: SearchMode, filter: ReportFilterSpec) -> int:
        self.calls.append(("count_reports", (query, mode)))
        return len(self.matching(query if mode is SearchMode.KEYWORD else None, filter))

    async def image_vector(self, image_id: str) -> list[float] | None:
        self.calls.append(("image_vector", image_id))
        return self.image_vectors.get(image_id)

    async def similar_images(self, *, vector: Sequence[float], k: int, filter: ImageFilterSpec,
                             exclude_ids: Sequence[str]) -> list[ImageHit]:
        self.calls.append(("similar_images", (k, filter, list(exclude_ids))))
        reps = list(self.reports.values())
        scored = [(i, _cos(vector, self.image_vectors[i.sop_instance_uid])) for i in self.images.values()
                  if i.sop_instance_uid not in exclude_ids and image_matches(i, filter, reps)]
        scored.sort(key=lambda x: (-x[1], x[0].sop_instance_uid))
        return [ImageHit(i, s) for i, s in scored[:k]]

    async def icd10_facets(self, *, query: str | None, filter: ReportFilterSpec, polarity: Polarity,
                           size: int) -> list[FacetCount]:
        self.calls.append(("icd10_facets", (query, polarity, size)))
        return self._facets(rec.ICD10_FIELD[polarity], None, query, filter, size)

    def _facets(self, field: str, ids: Sequence[str] | None, query: str | None, f: ReportFilterSpec,
                size: int) -> list[FacetCount]:
        rows = self.matching(query, f)
        if ids is not None:
            rows = [r for r in rows if r.report_id in ids]
        c: Counter[str] = Counter()
        for r in rows:
            c.update(set(r.array(field)))
        return [FacetCount(k, n) for k, n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:size]]

    async def term_facets(self, *, field: str, report_ids: Sequence[str] | None, query: str | None,
                          filter: ReportFilterSpec, size: int) -> list[FacetCount]:
        self.calls.append(("term_facets", (field, report_ids, query, size)))
        return self._facets(field, report_ids, query, filter, size)

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


def sample_data() -> tuple[list[ReportRecord], list[ImageRecord], dict[str, list[float]], dict[str, list[float]]]:
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
        reports.append(ReportRecord(
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
            images.append(ImageRecord(
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
