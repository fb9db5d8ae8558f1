"""The FastAPI application: /graphql, /compat/graphql, /thumbnails, /healthz, /readyz, /metrics, the web client.

Wiring only; the logic lives in the schema, resolvers, repository and auth modules.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.fastapi import GraphQLRouter

from medsearch import store
from medsearch.audit import AuditTrail
from medsearch.contracts.settings import ApiSettings
from medsearch.imaging import preload as preload_imaging
from medsearch_api import blocking, errors
from medsearch_api.adapters import ImageEmbedder, PublisherIngest, embed_query_text
from medsearch_api.audit import AuditLog, AuditUnavailable, record
from medsearch_api.auth import AuthConfigError, Authenticator, AuthError, Principal, is_loopback
from medsearch_api.compat import build_compat_schema
from medsearch_api.context import Context, Ingest, Services
from medsearch_api.dicomweb import register_dicomweb, register_dicomweb_reads
from medsearch_api.filters import IDENT
from medsearch_api.logs import install_access_log_filter
from medsearch_api.ratelimit import TokenBuckets
from medsearch_api.repository import (
    MILVUS_TIMER,
    PG_TIMER,
    LazyClient,
    MilvusTimer,
    PgPool,
    Repository,
    SearchRepository,
    StoreTimer,
)
from medsearch_api.schema import build_schema

log = logging.getLogger("medsearch_api")

WEB_DIST = Path(__file__).resolve().parent / "web" / "dist"
INGEST_CHECKS = frozenset({"broker", "modelServer"})  # down: uploads fail, search stays ready
READINESS_TIMEOUT_SECONDS = 4.0  # /readyz answers within this, whatever hangs
THUMBNAIL_URL_TTL = 3600  # seconds a signed thumbnail URL stays valid (rounded to the hour: cacheable)


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("medsearch_api_requests_total", "HTTP requests", ["route", "method", "status"],
                                registry=self.registry)
        self.latency = Histogram("medsearch_api_request_seconds", "HTTP request latency", ["route"],
                                 registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.milvus = Histogram("medsearch_api_milvus_seconds", "Time spent in Milvus calls per request",
                                ["route"], registry=self.registry,
                                buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.postgres = Histogram("medsearch_api_postgres_seconds", "Time spent in PostgreSQL calls per request",
                                  ["route"], registry=self.registry,
                                  buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        # Set by every /readyz (the kubelet probes it every few seconds): what the alerts on unavailable
        # dependencies read (charts/medsearch/templates/prometheusrule.yaml).
        self.dependency_up = Gauge("medsearch_api_dependency_up", "1 when the last readiness check of a dependency "
                                   "succeeded, else 0", ["dependency"], registry=self.registry)


def _route_label(path: str) -> str:
    for prefix in ("/graphql", "/compat/graphql", "/thumbnails", "/dicomweb", "/healthz", "/readyz", "/metrics"):
        if path == prefix or path.startswith(prefix + "/"):
            return prefix
    return "web"


class RequestGuard:
    """Pure ASGI middleware: request body ceiling (413), per-request store timers, Server-Timing, metrics."""

    def __init__(self, app: ASGIApp, *, max_body: int, metrics: _Metrics) -> None:
        self.app = app
        self.max_body = max_body
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = _route_label(scope.get("path", ""))
        headers = dict(scope.get("headers") or [])
        if route in ("/graphql", "/compat/graphql") and not _graphql_method_allowed(scope, headers):
            await _method_not_allowed(send)
            self.metrics.requests.labels(route, scope["method"], "405").inc()
            return
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _too_large(send, self.max_body)
            self.metrics.requests.labels(route, scope["method"], "413").inc()
            return
        seen = 0
        too_big = False

        async def limited_receive() -> Message:
            nonlocal seen, too_big
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_body:
                    too_big = True
                    raise _BodyTooLarge()
            return msg

        timer = MilvusTimer()
        token = MILVUS_TIMER.set(timer)
        pg_timer = StoreTimer()
        pg_token = PG_TIMER.set(pg_timer)
        t0 = time.perf_counter()
        status = 500
        started = False

        async def timed_send(msg: Message) -> None:
            nonlocal status, started
            if msg["type"] == "http.response.start":
                started = True
                status = msg["status"]
                total = (time.perf_counter() - t0) * 1000
                hdrs = list(msg.get("headers") or [])
                hdrs.append((b"server-timing",
                             f"postgres;dur={pg_timer.seconds * 1000:.2f}, milvus;dur={timer.seconds * 1000:.2f}, "
                             f"total;dur={total:.2f}".encode()))
                msg = {**msg, "headers": hdrs}
            await send(msg)

        try:
            await self.app(scope, limited_receive, timed_send)
        except _BodyTooLarge:
            if not started:
                await _too_large(send, self.max_body)
            status = 413
        finally:
            MILVUS_TIMER.reset(token)
            PG_TIMER.reset(pg_token)
            if too_big:
                status = 413
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - t0)
            if timer.calls:
                self.metrics.milvus.labels(route).observe(timer.seconds)
            if pg_timer.calls:
                self.metrics.postgres.labels(route).observe(pg_timer.seconds)


class _BodyTooLarge(Exception):
    pass


def _graphql_method_allowed(scope: Scope, headers: dict[bytes, bytes]) -> bool:
    """GraphQL is POST only (a GET puts the query text in URLs, logs and caches); a CORS preflight is fine, and
    so is the GET of the GraphiQL page itself (HTML, no ``query`` parameter), which executes nothing."""
    method = scope["method"]
    if method in ("POST", "OPTIONS"):
        return True
    if method != "GET":
        return False
    query_string = scope.get("query_string", b"")
    params = {p.split(b"=", 1)[0] for p in query_string.split(b"&") if p}
    return b"text/html" in headers.get(b"accept", b"") and b"query" not in params


async def _method_not_allowed(send: Send) -> None:
    body = (b'{"errors":[{"message":"GraphQL is served over POST only","extensions":'
            b'{"code":"METHOD_NOT_ALLOWED"}}]}')
    await send({"type": "http.response.start", "status": 405,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"allow", b"POST")]})
    await send({"type": "http.response.body", "body": body})


async def _too_large(send: Send, limit: int) -> None:
    body = (b'{"errors":[{"message":"request body exceeds %d bytes","extensions":{"code":"PAYLOAD_TOO_LARGE"}}]}'
            % limit)
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class ThumbnailSigner:
    """HMAC-signed thumbnail URLs, so that ``<img src>`` works without an Authorization header."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _sig(self, image_id: str, exp: int, principal: str = "") -> str:
        msg = f"{image_id}\n{exp}" + (f"\n{principal}" if principal else "")
        return hmac.new(self._secret, msg.encode(), hashlib.sha256).hexdigest()[:32]

    def url(self, image_id: str, now: float | None = None, principal: str = "") -> str:
        """The signed URL; ``principal``: whom it is issued to (signed along, and named in the audit record of
        every fetch of it)."""
        t = int(now if now is not None else time.time())
        exp = (t // THUMBNAIL_URL_TTL + 2) * THUMBNAIL_URL_TTL  # 1-2 h, same URL within an hour
        p = f"&p={quote(principal, safe='')}" if principal else ""
        return f"/thumbnails/{image_id}?exp={exp}{p}&sig={self._sig(image_id, exp, principal)}"

    def valid(self, image_id: str, exp: str | None, sig: str | None, now: float | None = None,
              principal: str = "") -> bool:
        if not exp or not sig or not exp.isdigit():
            return False
        if int(exp) < (now if now is not None else time.time()):
            return False
        return hmac.compare_digest(self._sig(image_id, int(exp), principal), sig)


def _auth_failure(message: str) -> JSONResponse:
    return JSONResponse({"errors": [{"message": message, "extensions": {"code": errors.UNAUTHENTICATED}}]},
                        status_code=401, headers={"WWW-Authenticate": 'Bearer realm="medsearch"'})


class _RateLimited(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"retry after {retry_after:.3f} s")
        self.retry_after = retry_after


class _Unauthenticated(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def create_app(
    settings: ApiSettings | None = None,
    *,
    repo: Repository | None = None,
    authenticator: Authenticator | None = None,
    embed_text: Callable[[str], Awaitable[list[float]]] | None = None,
    embed_image: Callable[[bytes], Awaitable[list[float]]] | None = None,
    ingest: Ingest | None = None,
    audit_log: AuditLog | None = None,
    readiness: dict[str, Callable[[], bool]] | None = None,
    web_dist: Path | None = None,
) -> FastAPI:
    """Build the gateway. Every collaborator defaults to the real one from ``settings``; tests inject fakes."""
    s = settings or ApiSettings()
    auth = authenticator or Authenticator.from_settings(s)
    if not auth.enabled and not is_loopback(s.api_host):
        raise AuthConfigError(
            f"no authentication configured (MEDSEARCH_API_TOKENS_FILE or MEDSEARCH_OIDC_ISSUER) and "
            f"MEDSEARCH_API_HOST={s.api_host} is not a loopback address: refusing to serve an open API")
    if not auth.enabled:
        log.warning("authentication is OFF (loopback only): every request is an anonymous admin")
    lazy_client: LazyClient | None = None
    pg_pool: PgPool | None = None
    if repo is None:
        from medsearch.pgstore import conninfo

        lazy_client = LazyClient(s.milvus_uri, s.milvus_token.get_secret_value() if s.milvus_token else None)
        pg_pool = PgPool(conninfo(s.postgres_dsn, s.postgres_secret()))
        repo = SearchRepository(pg_pool, lazy_client, s.index)
        if audit_log is None:
            audit_log = AuditLog(pg_pool, s.index, stream=_audit_stream(s) if s.audit_kafka else None)
    image_embedder: ImageEmbedder | None = None
    if embed_image is None:
        image_embedder = ImageEmbedder(s.model_server_url, s.model_name)
        embed_image = image_embedder
    publisher: PublisherIngest | None = None
    if ingest is None:
        publisher = PublisherIngest(s)
        ingest = publisher
    secret = s.api_url_secret.get_secret_value().encode() if s.api_url_secret else b""
    if not secret:
        log.warning("MEDSEARCH_API_URL_SECRET is not set: thumbnail URLs are signed with a random per-process key "
                    "(they fail on any other gateway replica)")
        secret = secrets.token_bytes(32)
    signer = ThumbnailSigner(secret)
    services = Services(settings=s, repo=repo, embed_text=embed_text or embed_query_text, embed_image=embed_image,
                        ingest=ingest, thumbnail_url=signer.url, audit_log=audit_log)
    metrics = _Metrics()
    checks = readiness if readiness is not None else _default_readiness(s)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        from medsearch_api.icd10 import describe

        await asyncio.to_thread(describe, "J91.8")  # load the ICD-10-CM tables before the first request
        await asyncio.to_thread(preload_imaging)  # the upload size check's decoders, likewise
        yield
        if pg_pool is not None:
            await pg_pool.close()
        for closer in (lazy_client, image_embedder, publisher, audit_log):
            if closer is not None:
                try:
                    closer.close()
                except Exception as err:  # shutdown must go on whatever a client raises  # noqa: BLE001
                    log.warning("closing %s failed: %s", type(closer).__name__, err)

    install_access_log_filter()  # uvicorn's access log: paths only, never query strings
    app = FastAPI(title="medsearch API", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.services = services
    app.state.metrics = metrics

    @app.exception_handler(_Unauthenticated)
    async def _unauth(_request: Request, exc: _Unauthenticated) -> JSONResponse:
        return _auth_failure(exc.message)

    buckets = TokenBuckets(s.rate_limit_per_second, s.rate_limit_burst) if s.rate_limit_per_second > 0 else None

    @app.exception_handler(_RateLimited)
    async def _rate_limited(_request: Request, exc: _RateLimited) -> JSONResponse:
        seconds = max(1, math.ceil(exc.retry_after))
        return JSONResponse({"errors": [{"message": f"rate limit exceeded ({s.rate_limit_per_second:g} requests/s, "
                                                    f"bursts of {s.rate_limit_burst}); retry after {seconds} s",
                                         "extensions": {"code": "RATE_LIMITED", "retryAfter": seconds}}]},
                            status_code=429, headers={"Retry-After": str(seconds)})

    def principal_of(request: Request) -> Principal:
        try:
            return auth.authenticate(request.headers.get("authorization"))
        except AuthError as err:
            raise _Unauthenticated(str(err)) from err

    async def get_context(request: Request, response: Response) -> Context:
        ide_page = (request.method == "GET" and "text/html" in request.headers.get("accept", "")
                    and "query" not in request.query_params)
        if ide_page:  # the GraphiQL page itself executes nothing; its requests carry the token
            ctx = Context(services, None)
        else:
            principal = await blocking.run("auth", principal_of, request) if auth.issuer else principal_of(request)
            if buckets is not None:
                wait = buckets.acquire(f"{principal.method}:{principal.name}")
                if wait > 0:
                    raise _RateLimited(wait)
            ctx = Context(services, principal)
        ctx.request = request
        ctx.response = response
        return ctx

    ide: Literal["graphiql"] | None = "graphiql" if is_loopback(s.api_host) else None
    app.include_router(GraphQLRouter(build_schema(s), path="/graphql", context_getter=get_context,
                                     graphql_ide=ide, multipart_uploads_enabled=True))
    app.include_router(GraphQLRouter(build_compat_schema(s), path="/compat/graphql", context_getter=get_context,
                                     graphql_ide=ide))

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(scope: str = "search") -> JSONResponse:
        """Ready to serve search (the probe): the index stores answer. Ingest dependencies (Kafka, the model
        server) are reported but do not take search down; ``?scope=all`` requires them too (``helm test``)."""
        names = list(checks)
        tasks: dict[str, asyncio.Future[Any]] = {
            n: asyncio.ensure_future(blocking.run("readiness", _safe_check, checks[n])) for n in names}
        tasks["collections"] = asyncio.ensure_future(repo.ping())
        # a hung dependency must not hang the probe: whatever has not answered in time is unavailable
        await asyncio.wait(tasks.values(), timeout=READINESS_TIMEOUT_SECONDS)
        detail: dict[str, str] = {}
        for n, task in tasks.items():
            ok = task.done() and not task.cancelled() and task.exception() is None and task.result() is not False
            if not ok and n == "collections" and task.done() and not task.cancelled() and task.exception():
                err = task.exception()
                log.warning("readiness: collections unavailable: %s: %s", type(err).__name__, err)
            if not task.done():
                task.cancel()
            detail[n] = "ok" if ok else "unavailable"  # unauthenticated endpoint: no hosts or internals
            metrics.dependency_up.labels(n).set(1 if ok else 0)
        search_ok = all(v == "ok" for n, v in detail.items() if n not in INGEST_CHECKS)
        ingest_ok = all(v == "ok" for n, v in detail.items() if n in INGEST_CHECKS)
        ready = search_ok and (ingest_ok or scope != "all")
        status = "ready" if search_ok and ingest_ok else "degraded" if search_ok else "not ready"
        return JSONResponse({"status": status, "search": "ok" if search_ok else "unavailable",
                             "ingest": "ok" if ingest_ok else "unavailable", "checks": detail},
                            status_code=200 if ready else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics_route() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    store_root = s.object_store_url.rstrip("/") + "/"

    @app.get("/thumbnails/{image_id}", include_in_schema=False)
    async def thumbnail(image_id: str, request: Request) -> Response:
        if len(image_id) > IDENT.max_len or IDENT.pattern.fullmatch(image_id) is None:
            return PlainTextResponse("not a valid image id", status_code=400)
        q = request.query_params
        principal: Any
        if signer.valid(image_id, q.get("exp"), q.get("sig"), principal=q.get("p") or ""):
            principal = Principal(q.get("p") or "-", frozenset(), "signed-url")  # whom the URL was issued to
        else:
            # JWT validation may fetch the JWKS (network): never on the event loop
            principal = await blocking.run("auth", principal_of, request) if auth.issuer else principal_of(request)
            if not principal.has("reader"):
                return JSONResponse({"errors": [{"message": "this operation needs the reader role",
                                                 "extensions": {"code": errors.FORBIDDEN}}]}, status_code=403)
        found = await repo.images_by_ids([image_id])
        img = found.get(image_id)
        uri = img.thumbnail_uri if img else ""
        if not uri:
            return PlainTextResponse("no thumbnail for this image", status_code=404)
        trail = AuditTrail()
        trail.read(images=[image_id], studies=[img.study_uid if img else ""])
        try:
            await record(audit_log, trail, operation="thumbnail", principal=principal,
                         client_addr=request.client.host if request.client else "")
        except AuditUnavailable as err:
            return PlainTextResponse(str(err), status_code=503)
        if not uri.startswith(store_root) or "/../" in uri or "\\" in uri:
            log.warning("refusing a thumbnail URI outside the object store for image %s", image_id)
            return PlainTextResponse("thumbnail outside the object store", status_code=404)
        try:
            data = await blocking.run("object-store", store.get_bytes, uri)
        except store.ObjectNotFound:
            return PlainTextResponse("thumbnail object missing", status_code=404)
        except store.StoreError:
            return PlainTextResponse("object store unavailable", status_code=503)
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        cache = {"ETag": etag, "Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}
        if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
            return Response(status_code=304, headers=cache)
        return Response(data, media_type="image/png", headers=cache)

    # DICOMweb STOW-RS (role ingester): each part through the same publisher as the upload mutation.
    register_dicomweb(app, ingest=ingest, principal_of=principal_of, audit_log=audit_log)
    # DICOMweb QIDO-RS / WADO-RS (role reader) over PostgreSQL and the object store.
    def dicomweb_principal(request: Request) -> Principal:
        principal = principal_of(request)
        if buckets is not None:  # the same per-principal budget as GraphQL
            wait = buckets.acquire(f"{principal.method}:{principal.name}")
            if wait > 0:
                raise _RateLimited(wait)
        return principal

    register_dicomweb_reads(app, repo=repo, index=s.index, object_store_url=s.object_store_url,
                            principal_of=dicomweb_principal, audit_log=audit_log)

    @app.get("/web-settings.json", include_in_schema=False)
    async def web_settings() -> JSONResponse:
        """What the web client needs before sign-in (no PHI): the viewer link template, the DICOMweb root."""
        return JSONResponse({"viewerUrlTemplate": s.viewer_url_template, "dicomwebRoot": "dicomweb"},
                            headers={"Cache-Control": "no-cache"})

    dist = web_dist if web_dist is not None else WEB_DIST
    if (dist / "index.html").is_file():
        root = dist.resolve()

        @app.get("/{path:path}", include_in_schema=False)
        async def web(path: str) -> Response:
            candidate = (root / path).resolve()
            if path and candidate.is_file() and candidate.is_relative_to(root):
                return FileResponse(candidate)
            if path.startswith(("graphql", "compat/", "thumbnails/", "dicomweb/")):
                return PlainTextResponse("not found", status_code=404)
            return FileResponse(root / "index.html", headers={"Cache-Control": "no-cache"})

    if s.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(s.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "Accept"],
                           expose_headers=["Warning"], max_age=600)  # Accept: DICOMweb multipart types
    max_body = (s.max_upload_bytes * 4) // 3 + 1024 * 1024
    app.add_middleware(RequestGuard, max_body=max_body, metrics=metrics)
    return app


def _audit_stream(s: ApiSettings) -> Any:
    """The producer of ``<index>.audit`` (``MEDSEARCH_AUDIT_KAFKA``): connects lazily, bounded waits."""
    from kafka import KafkaProducer

    from medsearch.kafka_security import kafka_security_options

    class _Lazy:
        def __init__(self) -> None:
            self._producer: Any = None

        def send(self, topic: str, value: bytes) -> Any:
            if self._producer is None:
                self._producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap.split(","), max_block_ms=8000,
                                               request_timeout_ms=30000, **kafka_security_options(s))
            return self._producer.send(topic, value=value)

        def close(self) -> None:
            if self._producer is not None:
                self._producer.close(timeout=5)

    return _Lazy()


def _safe_check(check: Callable[[], bool]) -> bool:
    try:
        return bool(check())
    except Exception:  # a failing probe means "not ready", whatever it raised  # noqa: BLE001
        return False


def _kafka_reachable(s: ApiSettings, timeout_ms: int = 3000) -> bool:
    """The broker answers metadata within ``timeout_ms`` (kafka-python's own bootstrap wait is 30 s), with the same
    TLS/SASL options as every other client (a secured cluster must not read as unreachable)."""
    from kafka.errors import KafkaError

    from medsearch.kafka_security import KafkaSecurityError, kafka_security_options
    from medsearch.provision import ProvisionError, kafka_admin

    try:
        admin = kafka_admin(s.kafka_bootstrap, client_id="medsearch-api-readiness", timeout_ms=timeout_ms,
                            security=kafka_security_options(s))
    except (ProvisionError, KafkaSecurityError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def _default_readiness(s: ApiSettings) -> dict[str, Callable[[], bool]]:
    from medsearch import pgstore
    from medsearch.health import http_ready, milvus_ready

    uri = s.milvus_uri
    return {
        "postgres": lambda: pgstore.ready(s.postgres_dsn, s.postgres_secret()),
        "milvus": lambda: milvus_ready(uri),
        "broker": lambda: _kafka_reachable(s),
        "modelServer": lambda: http_ready(s.model_server_url.rstrip("/") + "/v2/health/ready"),
    }
