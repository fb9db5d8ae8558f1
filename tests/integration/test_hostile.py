"""Hostile input and failing dependencies against the real processes: the gateway (``python -m medsearch_api``
under uvicorn) and the real model server, each in its own process so that their memory can be read from /proc."""

from __future__ import annotations

import base64
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from medsearch_dev.localstack import procs

from medsearch.embedding_client import EmbeddingClient, EmbeddingRejected

pytestmark = pytest.mark.integration

READER = "hostile-reader-token-0000000001"
INGESTER = "hostile-ingester-token-000000002"
INPUT_SIZE = 64


@dataclass
class Gateway:
    url: str
    pid: int
    log: Path
    model_url: str
    model_pid: int

    def post(self, query: str, variables: dict[str, object] | None = None, token: str = READER,
             timeout: float = 30) -> httpx.Response:
        return httpx.post(self.url + "/graphql", json={"query": query, "variables": variables or {}},
                          headers={"Authorization": f"Bearer {token}"}, timeout=timeout)


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set size (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, service_logs: Path) -> Iterator[Gateway]:
    http_port, grpc_port, api_port = procs.free_port(), procs.free_port(), procs.free_port()
    model_url = f"http://127.0.0.1:{http_port}"
    ms_cmd = [sys.executable, "-m", "medsearch_model_server", "--weights", "random", "--input-size", str(INPUT_SIZE),
              "--host", "127.0.0.1", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
              "--cache-dir", str(tmp_path_factory.mktemp("model-cache"))]
    tokens = tmp_path_factory.mktemp("tok") / "tokens"
    tokens.write_text(f"{READER} reader hostile\n{INGESTER} ingester hostile\n")
    closed = procs.free_port()  # nothing listens there: Milvus and Kafka are "down" for these tests
    env = {"MEDSEARCH_INDEX": "hostile", "MEDSEARCH_MILVUS_URI": f"http://127.0.0.1:{closed}",
           "MEDSEARCH_API_PORT": str(api_port), "MEDSEARCH_API_TOKENS_FILE": str(tokens),
           "MEDSEARCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{closed}", "MEDSEARCH_MODEL_SERVER_URL": model_url,
           "MEDSEARCH_OBJECT_STORE_URL": f"file://{tmp_path_factory.mktemp('objects')}"}
    base = f"http://127.0.0.1:{api_port}"
    log = service_logs / "hostile-gateway.log"
    with procs.running(ms_cmd, ready=lambda: procs.http_ready(model_url + "/v2/health/ready"), what="model server",
                       log_path=service_logs / "hostile-model-server.log", timeout=300) as ms, \
            procs.running([sys.executable, "-m", "medsearch_api"], ready=lambda: procs.http_ready(base + "/healthz"),
                          what="gateway", log_path=log, env=env, timeout=60) as gw:
        yield Gateway(base, gw.pid, log, model_url, ms.pid)


UPLOAD = "query($b: String!) { similarImages(uploadBase64: $b, k: 3) { score } }"


def test_a_deflated_bomb_upload_is_refused_fast_and_costs_no_memory(gateway: Gateway) -> None:
    from medsearch_dev.hostile import deflated_dicom_bomb

    bomb = deflated_dicom_bomb()  # 3 GiB of zeros behind a 128 x 128 header
    payload = base64.b64encode(bomb).decode()
    with EmbeddingClient(gateway.model_url, timeout=60) as warm:  # a first request loads lazy parts
        warm.embed_image_bytes(base64.b64decode(_PNG_1x1))
    gateway.post("{ __typename }")
    gw_before, ms_before = peak_rss_bytes(gateway.pid), peak_rss_bytes(gateway.model_pid)

    t0 = time.perf_counter()
    r = gateway.post(UPLOAD, {"b": payload})
    elapsed = time.perf_counter() - t0
    body = r.json()
    assert r.status_code == 200 and body["data"] is None, body
    err = body["errors"][0]
    assert err["extensions"]["code"] == "BAD_USER_INPUT", err
    assert "too large" in err["message"] and "inflates to more than" in err["message"], err
    assert elapsed < 1.0, elapsed

    # the model server refuses it too, when called directly
    t0 = time.perf_counter()
    with EmbeddingClient(gateway.model_url, timeout=60) as ec, pytest.raises(EmbeddingRejected, match="too large"):
        ec.embed_image_bytes(bomb)
    assert time.perf_counter() - t0 < 1.0

    grew_gw = peak_rss_bytes(gateway.pid) - gw_before
    grew_ms = peak_rss_bytes(gateway.model_pid) - ms_before
    assert grew_gw < 512 * 1024 * 1024 and grew_ms < 512 * 1024 * 1024, (grew_gw, grew_ms)


def test_an_oversized_png_upload_is_bad_input_not_a_500(gateway: Gateway) -> None:
    from medsearch_dev.hostile import png_header_only

    for w, h in ((20000, 10000), (8000, 8000)):  # over Pillow's own bomb limit; over ours only
        r = gateway.post(UPLOAD, {"b": base64.b64encode(png_header_only(w, h)).decode()})
        err = r.json()["errors"][0]
        assert err["extensions"]["code"] == "BAD_USER_INPUT" and "too large" in err["message"], err
        with EmbeddingClient(gateway.model_url) as ec, pytest.raises(EmbeddingRejected, match="too large"):
            ec.embed_image_bytes(png_header_only(w, h))


_PNG_1x1 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg==")


def test_graphql_over_get_is_405_and_the_access_log_has_no_query_strings(gateway: Gateway) -> None:
    h = {"Authorization": f"Bearer {READER}"}
    r = httpx.get(gateway.url + "/graphql", params={"query": '{ searchReports(query: "Jane Roe") { totalCount } }'},
                  headers=h, timeout=10)
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    httpx.get(gateway.url + "/thumbnails/1.2.3.4", params={"exp": "99999999999", "sig": "SIGNATURE0123456"},
              timeout=10)
    time.sleep(0.5)
    text = gateway.log.read_text(errors="replace")
    assert '"GET /graphql?… HTTP/1.1" 405' in text and '"GET /thumbnails/1.2.3.4?… HTTP/1.1"' in text, text[-2000:]
    assert "Jane" not in text and "SIGNATURE0123456" not in text and "sig=" not in text


def test_search_stays_ready_while_ingest_dependencies_are_down_and_uploads_fail_clearly(
        milvus_uri: str, tmp_path: Path, service_logs: Path, request: pytest.FixtureRequest) -> None:
    from pydicom.data import get_testdata_file

    import medsearch.provision as provision
    from medsearch.contracts.spec import MedicalSearchIndexSpec
    from medsearch.provision import drop_collections, ensure_collections, milvus_client

    index = "hostileready"
    client = milvus_client(milvus_uri)
    ensure_collections(client, index, MedicalSearchIndexSpec())
    search_env: dict[str, str] = {}
    postgres_dsn: str | None = None
    if hasattr(provision, "ensure_schema"):  # the PostgreSQL system of record is a search dependency too
        postgres_dsn = str(request.getfixturevalue("postgres_dsn"))
        provision.ensure_schema(postgres_dsn, index, MedicalSearchIndexSpec())
        search_env["MEDSEARCH_POSTGRES_DSN"] = postgres_dsn
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{READER} reader r\n{INGESTER} ingester i\n")
    api_port, closed = procs.free_port(), procs.free_port()
    env = {"MEDSEARCH_INDEX": index, "MEDSEARCH_MILVUS_URI": milvus_uri, "MEDSEARCH_API_PORT": str(api_port),
           "MEDSEARCH_API_TOKENS_FILE": str(tokens), "MEDSEARCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{closed}",
           "MEDSEARCH_MODEL_SERVER_URL": f"http://127.0.0.1:{closed}",
           "MEDSEARCH_OBJECT_STORE_URL": f"file://{tmp_path / 'objects'}", **search_env}
    base = f"http://127.0.0.1:{api_port}"
    gw = Gateway(base, 0, service_logs / "hostile-ready-gateway.log", "", 0)
    try:
        with procs.running([sys.executable, "-m", "medsearch_api"], ready=lambda: procs.http_ready(base + "/healthz"),
                           what="gateway", log_path=gw.log, env=env, timeout=60):
            r = httpx.get(base + "/readyz", timeout=30)
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "degraded" and r.json()["ingest"] == "unavailable"
            assert httpx.get(base + "/readyz", params={"scope": "all"}, timeout=30).status_code == 503

            body = gw.post('{ searchReports(query: "effusion") { totalCount edges { cursor } } }').json()
            assert body == {"data": {"searchReports": {"totalCount": 0, "edges": []}}}, body

            ct = Path(str(get_testdata_file("CT_small.dcm", download=False))).read_bytes()
            t0 = time.perf_counter()
            r = gw.post("mutation($f: String!) { ingestDicom(fileBase64: $f) { status } }",
                        {"f": base64.b64encode(ct).decode()}, token=INGESTER, timeout=60)
            err = r.json()["errors"][0]
            assert time.perf_counter() - t0 < 30
            assert err["extensions"]["code"] == "SERVICE_UNAVAILABLE", err
            assert err["message"].startswith("the ingest broker is unavailable; search is not affected (reference ")
            assert str(closed) not in err["message"] and "127.0.0.1" not in err["message"]

            r = gw.post(UPLOAD, {"b": _PNG_1x1})
            err = r.json()["errors"][0]
            assert err["extensions"]["code"] == "SERVICE_UNAVAILABLE", err
            assert err["message"].startswith("the model server is unavailable") and str(closed) not in err["message"]
        log_text = gw.log.read_text(errors="replace")
        assert err["extensions"]["reference"] in log_text  # the verbatim cause is in the gateway's log
    finally:
        drop_collections(client, index)
        client.close()
        if postgres_dsn is not None:
            provision.drop_schema(postgres_dsn, index)


def test_a_stopped_milvus_fails_the_searches_that_need_it_within_10_s_and_nothing_else(
        tmp_path: Path, service_logs: Path, postgres_dsn: str) -> None:
    """SIGSTOP the milvus-lite server (its TCP port still accepts, nothing answers): similarImages, which needs
    Milvus, answers SERVICE_UNAVAILABLE within 10 s, while keyword searches (PostgreSQL) keep being answered, during
    and after; SIGCONT and Milvus serves again."""
    import os
    import signal
    import threading

    from medsearch import pgstore
    from medsearch.contracts.collections import IMAGE_ANN_FIELDS, IMAGE_FIELDS, REPORT_FIELDS, ann_row
    from medsearch.contracts.naming import names_for
    from medsearch.contracts.spec import MedicalSearchIndexSpec
    from medsearch.provision import drop_schema, ensure_collections, ensure_schema, milvus_client

    index = "hostilehang"
    spec = MedicalSearchIndexSpec()
    milvus_port = procs.free_port()
    milvus_uri = f"http://127.0.0.1:{milvus_port}"
    with procs.running(procs.milvus_lite_command(tmp_path / "milvus", milvus_port),
                       ready=lambda: procs.milvus_ready(milvus_uri), what="milvus-lite server",
                       log_path=service_logs / "hostile-hang-milvus.log", timeout=90) as milvus:
        client = milvus_client(milvus_uri)
        ensure_collections(client, index, spec)
        ensure_schema(postgres_dsn, index, spec)
        reports, images = [], []
        for n in range(4):
            r = {f.name: {"VARCHAR": "", "INT32": 0, "INT64": 0, "JSON": {}, "ARRAY": []}.get(f.dtype)
                 for f in REPORT_FIELDS if f.dtype != "FLOAT_VECTOR"}
            r.update(report_id=f"h{n}", study_uid=f"1.2.9.{n}", text=f"Small pleural effusion number {n}.",
                     sections={}, entities=[], text_vector=[0.1] * spec.reports.dimension)
            reports.append(r)
            i = {f.name: {"VARCHAR": "", "INT32": 0, "INT64": 0, "JSON": {}, "ARRAY": []}.get(f.dtype)
                 for f in IMAGE_FIELDS if f.dtype != "FLOAT_VECTOR"}
            i.update(sop_instance_uid=f"1.2.9.{n}.1", study_uid=f"1.2.9.{n}", modality="CR",
                     embedding=[float(n + 1 if k == n else 0.5) for k in range(spec.embedding.dimension)])
            images.append(i)
        with pgstore.connect(postgres_dsn) as conn:
            pgstore.upsert_reports(conn, index, reports)
            pgstore.upsert_images(conn, index, images)
        client.upsert(names_for(index).images_collection, [ann_row(i, IMAGE_ANN_FIELDS) for i in images])
        client.flush(names_for(index).images_collection)
        client.close()
        tokens = tmp_path / "tokens"
        tokens.write_text(f"{READER} reader r\n")
        api_port = procs.free_port()
        env = {"MEDSEARCH_INDEX": index, "MEDSEARCH_MILVUS_URI": milvus_uri, "MEDSEARCH_POSTGRES_DSN": postgres_dsn,
               "MEDSEARCH_API_PORT": str(api_port), "MEDSEARCH_API_TOKENS_FILE": str(tokens),
               "MEDSEARCH_RATE_LIMIT_PER_SECOND": "0", "MEDSEARCH_OBJECT_STORE_URL": f"file://{tmp_path / 'o'}"}
        base = f"http://127.0.0.1:{api_port}"
        gw = Gateway(base, 0, service_logs / "hostile-hang-gateway.log", "", 0)
        similar = '{ similarImages(imageId: "1.2.9.0.1", k: 2) { image { id } } }'
        keyword = '{ searchReports(query: "effusion") { edges { node { id } } } }'
        try:
            with procs.running([sys.executable, "-m", "medsearch_api"],
                               ready=lambda: procs.http_ready(base + "/healthz"), what="gateway", log_path=gw.log,
                               env=env, timeout=60):
                assert gw.post(similar).json()["data"]["similarImages"], "Milvus answers before it is stopped"
                os.killpg(milvus.pid, signal.SIGSTOP)
                try:
                    answers: list[tuple[float, dict[str, object]]] = []

                    def ask_similar() -> None:
                        t0 = time.perf_counter()
                        body = gw.post(similar, timeout=60).json()
                        answers.append((time.perf_counter() - t0, body))

                    threads = [threading.Thread(target=ask_similar) for _ in range(12)]  # more than the pool
                    for t in threads:
                        t.start()
                    keyword_times = []
                    for _ in range(5):  # while the Milvus searches hang
                        t0 = time.perf_counter()
                        body = gw.post(keyword, timeout=30).json()
                        keyword_times.append(time.perf_counter() - t0)
                        assert len(body["data"]["searchReports"]["edges"]) == 4, body
                    for t in threads:
                        t.join(timeout=60)
                    assert len(answers) == 12
                    for elapsed, body in answers:
                        assert elapsed < 10, (elapsed, body)
                        err = body["errors"][0]  # type: ignore[index]
                        assert err["extensions"]["code"] == "SERVICE_UNAVAILABLE", err
                        assert milvus_uri not in err["message"] and str(milvus_port) not in err["message"]
                    assert max(keyword_times) < 3, keyword_times
                finally:
                    os.killpg(milvus.pid, signal.SIGCONT)
                procs.wait_until(lambda: "data" in gw.post(similar).json() and bool(
                    gw.post(similar).json()["data"]), timeout=60, what="similarImages after SIGCONT")
        finally:
            drop_schema(postgres_dsn, index)
