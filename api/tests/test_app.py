"""HTTP behaviour of the app (TestClient, a repository of canned answers): one smoke test per route, auth, limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from api_fakes import FakeIngest, FakeRepository, fake_embed_image, fake_embed_text, sample_data
from fastapi.testclient import TestClient
from medsearch_api.app import create_app
from medsearch_api.auth import AuthConfigError, Authenticator, StaticToken

from medsearch.contracts.settings import ApiSettings

READER = "reader-token-0123456789"
INGESTER = "ingester-token-0123456789"


@pytest.fixture()
def thumbs(tmp_path: Path) -> str:
    root = tmp_path / "objects"
    (root / "demo" / "thumbnails").mkdir(parents=True)
    (root / "demo" / "thumbnails" / "1.2.1.1.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    (tmp_path / "secret.png").write_bytes(b"secret")
    return f"file://{root}"


def make_app(store_url: str = "file:///nonexistent", web: Path | None = None,
             **settings: Any) -> tuple[Any, FakeRepository]:
    reports, images, rv, iv = sample_data()
    images = [i.__class__(**{**i.__dict__, "thumbnail_uri": i.thumbnail_uri.replace("file:///nonexistent", store_url)})
              for i in images]
    # one row pointing outside the object store
    images[1] = images[1].__class__(**{**images[1].__dict__, "thumbnail_uri": store_url + "/../secret.png"})
    repo = FakeRepository(reports, images, rv, iv)
    auth = Authenticator(tokens=[StaticToken(READER, "reader", "r"), StaticToken(INGESTER, "ingester", "i")])
    s = ApiSettings(object_store_url=store_url, **settings)
    app = create_app(s, repo=repo, authenticator=auth, embed_text=fake_embed_text, embed_image=fake_embed_image,
                     ingest=FakeIngest(), readiness={"milvus": lambda: True, "broker": lambda: False},
                     web_dist=web or Path("/nonexistent"))
    return app, repo


def gql(client: TestClient, query: str, token: str | None = READER, path: str = "/graphql",
        variables: dict[str, Any] | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post(path, json={"query": query, "variables": variables or {}}, headers=headers)


def test_graphql_auth_401_403_and_ok() -> None:
    app, _ = make_app()
    with TestClient(app) as c:
        r = gql(c, '{ report(id: "r1") { id } }', token=None)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        r = gql(c, '{ report(id: "r1") { id } }', token="wrong-token-xxxxxxxxxxxx")
        assert r.status_code == 401 and "wrong-token" not in r.text
        r = c.post("/graphql", json={"query": "{ __typename }"}, headers={"Authorization": "Basic abc"})
        assert r.status_code == 401
        r = gql(c, '{ report(id: "r1") { id } }')
        assert r.status_code == 200 and r.json()["data"] == {"report": {"id": "r1"}}
        assert "milvus;dur=" in r.headers["server-timing"]
        r = gql(c, 'mutation { ingestReport(reportId: "x1", text: "t") { status } }')
        assert r.status_code == 403 and r.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
        r = gql(c, 'mutation { ingestReport(reportId: "x1", text: "t") { status } }', token=INGESTER)
        assert r.status_code == 200 and r.json()["data"]["ingestReport"]["status"] == "published"


def test_compat_endpoint_smoke() -> None:
    app, _ = make_app()
    with TestClient(app) as c:
        r = gql(c, "{ getAllPositiveICD10CMs { key doc_count } }", path="/compat/graphql")
        assert r.status_code == 200 and r.json()["data"]["getAllPositiveICD10CMs"][0]["doc_count"] == 3
        assert gql(c, "{ getAllPositiveICD10CMs { key } }", token=None, path="/compat/graphql").status_code == 401


def test_multipart_upload_for_similar_images() -> None:
    import json

    app, _ = make_app()
    with TestClient(app) as c:
        ops = {"query": "query($f: Upload) { similarImages(upload: $f, k: 2) { image { id } } }",
               "variables": {"f": None}}
        r = c.post("/graphql", data={"operations": json.dumps(ops), "map": json.dumps({"0": ["variables.f"]})},
                   files={"0": ("q.png", b"\x89PNG fake image", "image/png")},
                   headers={"Authorization": f"Bearer {READER}"})
        assert r.status_code == 200, r.text
        assert len(r.json()["data"]["similarImages"]) == 2


def test_body_size_limit() -> None:
    app, _ = make_app(max_upload_bytes=1024)
    with TestClient(app) as c:
        big = "x" * (3 * 1024 * 1024)
        r = c.post("/graphql", content=big, headers={"Authorization": f"Bearer {READER}",
                                                   "content-type": "application/json"})
        assert r.status_code == 413 and r.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"


def test_thumbnails_auth_cache_and_traversal(thumbs: str) -> None:
    app, _ = make_app(thumbs)
    with TestClient(app) as c:
        assert c.get("/thumbnails/1.2.1.1").status_code == 401
        h = {"Authorization": f"Bearer {READER}"}
        r = c.get("/thumbnails/1.2.1.1", headers=h)
        assert r.status_code == 200 and r.content.startswith(b"\x89PNG") and r.headers["content-type"] == "image/png"
        etag = r.headers["etag"]
        assert "max-age" in r.headers["cache-control"]
        assert c.get("/thumbnails/1.2.1.1", headers={**h, "If-None-Match": etag}).status_code == 304
        # the signed URL from the schema works without a header
        data = gql(c, '{ image(id: "1.2.1.1") { thumbnailUrl } }').json()["data"]
        url = data["image"]["thumbnailUrl"]
        assert url.startswith("/thumbnails/1.2.1.1?exp=")
        assert c.get(url).status_code == 200
        assert c.get(url.replace("sig=", "sig=0")).status_code == 401
        assert c.get(url.replace("/1.2.1.1?", "/1.2.2.1?")).status_code == 401  # signature bound to the id
        for bad in ("..%2F..%2Fetc%2Fpasswd", "..", "1.2.1.1%00", "%2e%2e", "a\\b", "x" * 300):
            assert c.get(f"/thumbnails/{bad}", headers=h).status_code in (400, 404)
        # a row whose thumbnail points outside the object store is never served
        r = c.get("/thumbnails/1.2.1.2", headers=h)
        assert r.status_code == 404 and b"secret" not in r.content
        assert c.get("/thumbnails/9.9.9", headers=h).status_code == 404


def test_health_ready_metrics() -> None:
    app, _ = make_app()
    with TestClient(app) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        r = c.get("/readyz")  # only an ingest dependency is down: search stays ready
        assert r.status_code == 200 and r.json() == {
            "status": "degraded", "search": "ok", "ingest": "unavailable",
            "checks": {"milvus": "ok", "broker": "unavailable", "collections": "ok"}}
        assert c.get("/readyz", params={"scope": "all"}).status_code == 503
        gql(c, '{ report(id: "r1") { id } }')
        m = c.get("/metrics").text
        assert 'medsearch_api_requests_total{method="POST",route="/graphql",status="200"}' in m


def test_graphiql_on_loopback_only() -> None:
    app, _ = make_app()
    with TestClient(app) as c:
        r = c.get("/graphql", headers={"accept": "text/html"})
        assert r.status_code == 200 and "graphiql" in r.text.lower()
    app, _ = make_app(api_host="0.0.0.0")
    with TestClient(app) as c:
        r = c.get("/graphql", headers={"accept": "text/html", "Authorization": f"Bearer {READER}"})
        assert "graphiql" not in r.text.lower()


def test_open_mode_refused_off_loopback() -> None:
    with pytest.raises(AuthConfigError, match="loopback"):
        create_app(ApiSettings(api_host="0.0.0.0"), repo=FakeRepository(*sample_data()), authenticator=Authenticator())
    app = create_app(ApiSettings(), repo=FakeRepository(*sample_data()), authenticator=Authenticator(),
                     readiness={})
    with TestClient(app) as c:
        assert gql(c, '{ report(id: "r1") { id } }', token=None).json()["data"] == {"report": {"id": "r1"}}


def test_cors_off_by_default_and_configurable() -> None:
    app, _ = make_app()
    with TestClient(app) as c:
        r = c.options("/graphql", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in r.headers
    app, _ = make_app(cors_origins=["https://ui.example"])
    with TestClient(app) as c:
        r = c.options("/graphql", headers={"Origin": "https://ui.example", "Access-Control-Request-Method": "POST"})
        assert r.headers["access-control-allow-origin"] == "https://ui.example"


def test_static_web_client_with_spa_fallback(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<html>app</html>")
    (dist / "assets" / "app.js").write_text("console.log(1)")
    (tmp_path / "outside.txt").write_text("no")
    app, _ = make_app(web=dist)
    with TestClient(app) as c:
        assert c.get("/").text == "<html>app</html>"
        assert c.get("/assets/app.js").text == "console.log(1)"
        assert c.get("/search/deep/link").text == "<html>app</html>"
        assert "no" != c.get("/..%2Foutside.txt").text
        assert c.get("/healthz").json() == {"status": "ok"}


def test_body_size_limit_without_content_length() -> None:
    app, _ = make_app(max_upload_bytes=1024)

    def chunks() -> Any:
        for _ in range(40):
            yield b"x" * (100 * 1024)

    with TestClient(app) as c:
        r = c.post("/graphql", content=chunks(), headers={"Authorization": f"Bearer {READER}",
                                                        "content-type": "application/json"})
        assert r.status_code == 413


def test_graphql_is_post_only() -> None:
    app, _ = make_app()
    h = {"Authorization": f"Bearer {READER}"}
    with TestClient(app) as c:
        for path in ("/graphql", "/compat/graphql"):
            r = c.get(path, params={"query": "{ __typename }"}, headers=h)
            assert r.status_code == 405 and r.headers["allow"] == "POST", (path, r.text)
            assert r.json()["errors"][0]["extensions"]["code"] == "METHOD_NOT_ALLOWED"
            assert c.get(path, params={"query": "{ __typename }"},
                         headers={**h, "accept": "text/html"}).status_code == 405
            assert c.put(path, json={"query": "{ __typename }"}, headers=h).status_code == 405
        assert gql(c, "{ __typename }").json() == {"data": {"__typename": "Query"}}
        assert c.get("/graphql", headers={"accept": "text/html"}).status_code == 200  # the GraphiQL page


def test_logs_never_carry_query_strings_or_query_text(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from medsearch_api.logs import StripQueryStrings

    record = logging.LogRecord("uvicorn.access", logging.INFO, "h.py", 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/thumbnails/1.2.3?exp=9&sig=abcdef", "1.1", 200), None)
    assert StripQueryStrings().filter(record)
    assert record.getMessage() == '127.0.0.1:5 - "GET /thumbnails/1.2.3?… HTTP/1.1" 200'
    app, _ = make_app()
    caplog.set_level(logging.DEBUG)
    with TestClient(app) as c:
        gql(c, '{ searchReports(query: "Jane Roe 19650412" ')  # a syntax error: strawberry printed the source
        gql(c, '{ searchReports(query: "Jane Roe 19650412") { nope } }')  # a validation error
        gql(c, "{ JaneRoe19650412 }")  # the message names the unknown field
        gql(c, '{ searchReports(query: "x", filter: {positiveCodes: ["Jane Roe 19650412"]}) { edges { cursor } } }')
    assert caplog.records and "Jane Roe" not in caplog.text and "19650412" not in caplog.text
    assert any(isinstance(f, StripQueryStrings) for f in logging.getLogger("uvicorn.access").filters)


def test_rate_limit_per_principal_answers_429_with_retry_after() -> None:
    app, _ = make_app(rate_limit_per_second=0.5, rate_limit_burst=3)
    with TestClient(app) as c:
        assert [gql(c, "{ __typename }").status_code for _ in range(3)] == [200, 200, 200]
        r = gql(c, "{ __typename }")
        assert r.status_code == 429 and r.headers["retry-after"] == "2"
        assert r.json()["errors"][0]["extensions"] == {"code": "RATE_LIMITED", "retryAfter": 2}
        assert gql(c, "{ __typename }", token=INGESTER).status_code == 200  # another principal has its own bucket
        assert gql(c, "{ __typename }", token=None).status_code == 401  # authentication comes first
    app, _ = make_app(rate_limit_per_second=0)  # off
    with TestClient(app) as c:
        assert all(gql(c, "{ __typename }").status_code == 200 for _ in range(600))


def test_token_buckets_refill_at_the_rate() -> None:
    from medsearch_api.ratelimit import TokenBuckets

    now = [0.0]
    b = TokenBuckets(rate=2.0, burst=2, clock=lambda: now[0], max_keys=3)
    assert [b.acquire("a"), b.acquire("a")] == [0.0, 0.0]
    assert b.acquire("a") == pytest.approx(0.5)
    now[0] += 0.5
    assert b.acquire("a") == 0.0 and b.acquire("a") > 0
    for k in "bcde":  # idle full buckets are forgotten past max_keys
        b.acquire(k)
    now[0] += 10
    b.acquire("f")
    assert len(b._buckets) <= 3
    with pytest.raises(ValueError):
        TokenBuckets(rate=0, burst=1)


def test_readiness_is_split_between_search_and_ingest() -> None:
    reports, images, rv, iv = sample_data()
    auth = Authenticator(tokens=[StaticToken(READER, "reader", "r")])
    for up, code, status in (({"milvus", "broker", "modelServer"}, 200, "ready"),
                             ({"milvus"}, 200, "degraded"),
                             ({"broker", "modelServer"}, 503, "not ready")):
        checks = {n: (lambda n=n, up=up: n in up) for n in ("milvus", "broker", "modelServer")}
        app = create_app(ApiSettings(), repo=FakeRepository(reports, images, rv, iv), authenticator=auth,
                         embed_text=fake_embed_text, embed_image=fake_embed_image, ingest=FakeIngest(),
                         readiness=checks, web_dist=Path("/nonexistent"))
        with TestClient(app) as c:
            r = c.get("/readyz")
            assert (r.status_code, r.json()["status"]) == (code, status), r.json()


def test_dependency_errors_reach_clients_as_a_reference_not_their_text(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from medsearch_api.repository import RepositoryError

    class Down(FakeRepository):
        async def search_reports(self, *_a: Any, **_k: Any) -> Any:
            raise RepositoryError("Milvus request failed: MilvusException: <connect to 10.20.30.40:19530 failed>")

    reports, images, rv, iv = sample_data()
    auth = Authenticator(tokens=[StaticToken(READER, "reader", "r")])
    app = create_app(ApiSettings(), repo=Down(reports, images, rv, iv), authenticator=auth,
                     embed_text=fake_embed_text, embed_image=fake_embed_image, ingest=FakeIngest(),
                     readiness={}, web_dist=Path("/nonexistent"))
    caplog.set_level(logging.WARNING, logger="medsearch_api.errors")
    with TestClient(app) as c:
        body = gql(c, '{ searchReports(query: "effusion") { edges { cursor } } }').json()
    err = body["errors"][0]
    assert err["extensions"]["code"] == "SERVICE_UNAVAILABLE" and "10.20.30.40" not in str(body)
    ref = err["extensions"]["reference"]
    assert err["message"] == f"the search index is unavailable (reference {ref})"
    assert any(ref in r.getMessage() and "10.20.30.40:19530" in r.getMessage() for r in caplog.records)


def test_a_hung_dependency_does_not_hang_readiness() -> None:
    import time

    reports, images, rv, iv = sample_data()
    auth = Authenticator(tokens=[StaticToken(READER, "reader", "r")])
    app = create_app(ApiSettings(), repo=FakeRepository(reports, images, rv, iv), authenticator=auth,
                     embed_text=fake_embed_text, embed_image=fake_embed_image, ingest=FakeIngest(),
                     readiness={"milvus": lambda: True, "broker": lambda: time.sleep(5.5) or True},
                     web_dist=Path("/nonexistent"))
    with TestClient(app) as c:
        t0 = time.perf_counter()
        r = c.get("/readyz")
        assert time.perf_counter() - t0 < 5.0
        assert r.status_code == 200 and r.json()["checks"]["broker"] == "unavailable"


def test_a_hung_store_does_not_stall_requests_that_do_not_need_it(thumbs: str) -> None:
    """Searches stuck in a hung store fill asyncio's default pool; uploads, readiness and thumbnails-by-token
    run on their own bounded pools and are still answered."""
    import asyncio
    import base64
    import threading

    from pydicom.data import get_testdata_file

    release = threading.Event()

    class Hung(FakeRepository):
        async def search_reports(self, *_a: Any, **_k: Any) -> Any:
            await asyncio.to_thread(release.wait, 30)  # how the repository runs its blocking store calls
            raise AssertionError("released")

    reports, images, rv, iv = sample_data()
    images = [i.__class__(**{**i.__dict__, "thumbnail_uri": i.thumbnail_uri.replace("file:///nonexistent", thumbs)})
              for i in images]
    auth = Authenticator(tokens=[StaticToken(READER, "reader", "r"), StaticToken(INGESTER, "ingester", "i")])
    app = create_app(ApiSettings(object_store_url=thumbs), repo=Hung(reports, images, rv, iv), authenticator=auth,
                     embed_text=fake_embed_text, embed_image=fake_embed_image, ingest=FakeIngest(),
                     readiness={"milvus": lambda: True}, web_dist=Path("/nonexistent"))
    ct = Path(str(get_testdata_file("CT_small.dcm", download=False))).read_bytes()
    with TestClient(app) as c:
        stuck = [threading.Thread(target=gql, args=(c, '{ searchReports(query: "x") { edges { cursor } } }'))
                 for _ in range(40)]
        for t in stuck:
            t.start()
        try:
            answers: list[Any] = []
            upload = threading.Thread(target=lambda: answers.append(gql(
                c, "mutation($f: String!) { ingestDicom(fileBase64: $f) { status } }", token=INGESTER,
                variables={"f": base64.b64encode(ct).decode()})))
            thumb = threading.Thread(target=lambda: answers.append(
                c.get("/thumbnails/1.2.1.1", headers={"Authorization": f"Bearer {READER}"})))
            upload.start()
            thumb.start()
            upload.join(10)
            thumb.join(10)
            assert len(answers) == 2, answers
            by_kind = {type(a.json()).__name__ if a.headers["content-type"].startswith("application/json")
                       else "png": a for a in answers}
            assert by_kind["dict"].json() == {"data": {"ingestDicom": {"status": "published"}}}
            assert by_kind["png"].status_code == 200
        finally:
            release.set()
            for t in stuck:
                t.join(60)


def test_jwt_validation_never_runs_on_the_event_loop(thumbs: str) -> None:
    import json
    import threading
    import time

    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "kid": "k1", "alg": "RS256"}
    threads: list[str] = []

    class RecordingJwks:
        def get_signing_key_from_jwt(self, _token: str) -> jwt.PyJWK:
            threads.append(threading.current_thread().name)
            return jwt.PyJWK.from_dict(jwk)

    iss, aud = "https://idp.example", "medsearch"
    auth = Authenticator(oidc_issuer=iss, oidc_audience=aud, jwks_client=RecordingJwks())
    now = int(time.time())
    token = jwt.encode({"iss": iss, "aud": aud, "sub": "u", "exp": now + 60, "roles": ["reader"]}, key,
                       algorithm="RS256", headers={"kid": "k1"})
    reports, images, rv, iv = sample_data()
    images = [i.__class__(**{**i.__dict__, "thumbnail_uri": i.thumbnail_uri.replace("file:///nonexistent", thumbs)})
              for i in images]
    app = create_app(ApiSettings(object_store_url=thumbs), repo=FakeRepository(reports, images, rv, iv),
                     authenticator=auth, embed_text=fake_embed_text, embed_image=fake_embed_image,
                     ingest=FakeIngest(), readiness={}, web_dist=Path("/nonexistent"))
    with TestClient(app) as c:
        assert c.get("/thumbnails/1.2.1.1", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert gql(c, "{ __typename }", token=token).status_code == 200
    assert len(threads) == 2 and all(t.startswith("medsearch-auth") for t in threads), threads
