"""The web client in a real browser against a running gateway with demo data.

Real processes: milvus-lite server, the model server (random seeded weights), the GraphQL gateway serving the
built client; headless Debian Chromium driven by playwright-core (tests/browser/web-flow.mjs). The demo
images (pydicom / pydicom-data files of samples/manifest.json) go through the same decode -> thumbnail ->
preprocess -> model server embedding steps as the DICOM worker; the demo reports (samples/reports) are
annotated by a small rule table in this file (the test needs known ICD-10-CM codes, not NLP quality) and
written as rows of medsearch/contracts/collections.py.

Screenshots: ``test-output/web-browser/`` at the repository root (or $MEDSEARCH_TEST_OUTPUT/web-browser).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from medsearch_dev.localstack import procs

pytestmark = [pytest.mark.integration, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "api" / "web"
DIST = ROOT / "api" / "medsearch_api" / "web" / "dist"
DRIVER = ROOT / "tests" / "browser" / "web-flow.mjs"
TOKEN = "browser-test-token-0123456789abcdef"

# Sample DICOM files (all in samples/manifest.json): three views of one chest study, plus other modalities.
DICOM_NAMES = ("RG1_UNCR.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm", "RG3_UNCR.dcm", "CT_small.dcm", "MR_small.dcm",
               "US1_UNCR.dcm", "693_UNCR.dcm", "JPGExtended.dcm", "SC_rgb_rle.dcm")

# term (regex) -> ICD-10-CM code, for the test's own annotator
TERMS: tuple[tuple[str, str], ...] = (
    (r"pleural effusions?", "J91.8"),
    (r"pneumothorax", "J93.9"),
    (r"cardiomegaly", "I51.7"),
    (r"pneumonia", "J18.9"),
    (r"consolidation", "J18.9"),
    (r"atelectasis", "J98.11"),
    (r"(?:pulmonary|interstitial) edema", "J81.1"),
    (r"nodules?", "R91.1"),
    (r"pulmonary metastases", "C78.00"),
    (r"fractures?", "T14.8"),
    (r"emphysema", "J43.9"),
)
NEGATION = re.compile(r"\b(no|without|negative for|free of|resolved)\b[^.;]*$", re.IGNORECASE)
UNCERTAIN = re.compile(r"\b(possible|possibly|may|might|cannot be excluded|questionable|suspected|likely)\b",
                       re.IGNORECASE)


def annotate(text: str) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """Entities (the report worker's display shape) and code arrays by polarity."""
    entities: list[dict[str, Any]] = []
    codes: dict[str, list[str]] = {"positive": [], "negative": [], "uncertain": []}
    for pattern, code in TERMS:
        for m in re.finditer(pattern, text, re.IGNORECASE):
            sentence_start = max(text.rfind(".", 0, m.start()), text.rfind("\n", 0, m.start())) + 1
            before = text[sentence_start:m.start()]
            sentence_end = min(x for x in (text.find(".", m.end()), text.find("\n", m.end()), len(text)) if x >= 0)
            sentence = text[sentence_start:sentence_end]
            if NEGATION.search(before):
                polarity, traits = "negative", [{"name": "is_negated", "score": 1.0}]
            elif UNCERTAIN.search(sentence):
                polarity, traits = "uncertain", [{"name": "is_uncertain", "score": 1.0}]
            else:
                polarity, traits = "positive", []
            entities.append({
                "text": m.group(0), "start": m.start(), "end": m.end(), "category": "DIAGNOSIS", "type": "finding",
                "score": 1.0, "section": "", "traits": traits,
                "icd10": [{"code": code, "description": "", "score": 1.0}],
            })
            if code not in codes[polarity]:
                codes[polarity].append(code)
    # a code asserted present anywhere is not also listed as absent/uncertain
    codes["negative"] = [c for c in codes["negative"] if c not in codes["positive"]]
    codes["uncertain"] = [c for c in codes["uncertain"] if c not in codes["positive"] + codes["negative"]]
    return entities, codes


def section(text: str, name: str) -> str:
    m = re.search(rf"^{name}:\s*(.*)$", text, re.MULTILINE)
    return m.group(1).strip() if m else ""


def report_rows(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    try:
        from medsearch.text_embedding import embed_texts

        vectors = embed_texts([r["text"] for r in reports])
    except Exception:  # the text model is optional here: the test searches in KEYWORD mode  # noqa: BLE001
        rng = np.random.default_rng(0)
        vectors = rng.normal(size=(len(reports), 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = []
    for r, vec in zip(reports, vectors, strict=True):
        text = r["text"]
        entities, codes = annotate(text)
        rows.append({
            "report_id": r["report_id"], "study_uid": r.get("study_uid") or "", "text": text,
            "findings": section(text, "FINDINGS"), "impression": section(text, "IMPRESSION"),
            "indication": section(text, "INDICATION"),
            "sections": {n.lower(): section(text, n) for n in ("INDICATION", "FINDINGS", "IMPRESSION")},
            "report_date": 20240101 + int(r["report_id"][-2:]) % 28,
            "icd10_positive": codes["positive"], "icd10_negative": codes["negative"],
            "icd10_uncertain": codes["uncertain"],
            "positive_signs": [], "negative_signs": [], "positive_diagnoses": [], "negative_diagnoses": [],
            "positive_symptoms": [], "negative_symptoms": [], "entities": entities, "nlp_backend": "browser-test",
            "ingested_at": int(time.time() * 1000), "text_vector": [float(x) for x in vec],
        })
    return rows


def image_rows(files: list[Path], *, store_url: str, index: str, model_url: str) -> list[dict[str, Any]]:
    """The DICOM worker's steps: decode, metadata, thumbnail into the object store, preprocess, embed."""
    from medsearch_workers.dicom_meta import extract_metadata
    from medsearch_workers.dicom_worker import thumbnail_url

    from medsearch import store
    from medsearch.embedding_client import EmbeddingClient
    from medsearch.imaging import decode_dicom, preprocess, thumbnail_png

    rows, tensors = [], []
    for path in files:
        data = path.read_bytes()
        decoded = decode_dicom(data, source=path.name)
        meta = extract_metadata(decoded.dataset)
        thumb = thumbnail_url(store_url, index, meta["sop_instance_uid"])
        store.put_bytes(thumb, thumbnail_png(decoded.image))
        source = store.join(store_url, index, "dicom", f"{store.sha256_hex(data)}.dcm")  # where the producer puts it
        store.put_bytes(source, data)  # the image page reads it back through WADO-RS
        tensors.append(preprocess(decoded.image, 224))
        rows.append({**meta, "report_id": "", "source_uri": source, "sha256": hashlib.sha256(data).hexdigest(),
                     "thumbnail_uri": thumb, "model_name": "densenet121", "model_version": "random-seed0",
                     "indexed_at": int(time.time() * 1000)})
    client = EmbeddingClient(model_url)
    try:
        vectors = client.embed_tensors(np.stack(tensors).astype(np.float32))
    finally:
        client.close()
    from medsearch.contracts.collections import IMAGE_FIELDS, IMAGE_VECTOR

    names = {f.name for f in IMAGE_FIELDS}
    out = []
    for row, vec in zip(rows, vectors, strict=True):
        full = {k: v for k, v in row.items() if k in names}
        full.setdefault("patient_id", "")
        full.setdefault("patient_name", "")
        full[IMAGE_VECTOR] = [float(x) for x in vec]
        out.append(full)
    return out


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def chromium_path() -> str:
    script = ROOT / "scripts" / "ensure-chromium.sh"
    res = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=900)
    if res.returncode != 0:
        pytest.skip(f"no Chromium for the browser test: {res.stderr.strip()[-300:]}")
    return res.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def web_client() -> Path:
    """The built client (scripts/build-web.sh) and playwright-core from api/web/node_modules."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js/npm are not installed: the web client cannot be built or driven")
    res = subprocess.run(["bash", str(ROOT / "scripts" / "build-web.sh")], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, f"scripts/build-web.sh failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    if not (WEB / "node_modules" / "playwright-core").is_dir():
        res = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=WEB,
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-2000:]
    assert (DIST / "index.html").is_file(), "the build left no api/medsearch_api/web/dist/index.html"
    return DIST


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory, service_logs: Path) -> Iterator[str]:
    http, grpc = procs.free_port(), procs.free_port()
    url = f"http://127.0.0.1:{http}"
    cmd = [sys.executable, "-m", "medsearch_model_server", "--weights", "random", "--backend", "torch",
           "--host", "127.0.0.1", "--http-port", str(http), "--grpc-port", str(grpc),
           "--cache-dir", str(tmp_path_factory.mktemp("model-cache"))]
    with procs.running(cmd, ready=lambda: procs.http_ready(f"{url}/v2/models/densenet121/ready"),
                       what="model server", log_path=service_logs / "model-server-web.log", timeout=240):
        yield url


def output_dir() -> Path:
    base = Path(os.environ.get("MEDSEARCH_TEST_OUTPUT", ROOT / "test-output"))
    out = base / "web-browser"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    return out


class FakeIdP:
    """A minimal OpenID provider on loopback for the browser's sign-in: discovery, an authorization endpoint
    that approves at once (no login page), a token endpoint that checks PKCE (S256) and returns an RS256 JWT,
    and the JWKS the gateway verifies it with. CORS is open, as a real IdP allows for a registered web app."""

    def __init__(self, client_id: str, audience: str) -> None:
        import base64
        import http.server
        import secrets
        import threading
        import urllib.parse

        import jwt
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.client_id, self.audience = client_id, audience
        self.port = procs.free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        self.jwks = {"keys": [{**jwk, "kid": "test-key", "use": "sig", "alg": "RS256"}]}
        self.codes: dict[str, dict[str, str]] = {}
        self.exchanges: list[dict[str, Any]] = []
        idp = self

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).decode().rstrip("=")

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet: pytest captures failures, not access logs
                pass

            def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Access-Control-Allow-Headers", "Content-Type, Accept")
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_OPTIONS(self) -> None:
                self._send(204)

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                q = dict(urllib.parse.parse_qsl(url.query))
                if url.path == "/.well-known/openid-configuration":
                    self._send(200, {"issuer": idp.issuer, "authorization_endpoint": f"{idp.issuer}/authorize",
                                     "token_endpoint": f"{idp.issuer}/token", "jwks_uri": f"{idp.issuer}/jwks"})
                elif url.path == "/jwks":
                    self._send(200, idp.jwks)
                elif url.path == "/authorize":
                    ok = (q.get("response_type") == "code" and q.get("client_id") == idp.client_id
                          and q.get("code_challenge_method") == "S256" and q.get("code_challenge")
                          and q.get("redirect_uri", "").startswith("http://127.0.0.1:"))
                    if not ok:
                        self._send(400, {"error": "invalid_request"})
                        return
                    code = secrets.token_urlsafe(16)
                    idp.codes[code] = q
                    sep = "&" if "?" in q["redirect_uri"] else "?"
                    query = urllib.parse.urlencode({"code": code, "state": q.get("state", "")})
                    target = q["redirect_uri"] + sep + query
                    self._send(302, None, {"Location": target})
                else:
                    self._send(404, {"error": "not_found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                if self.path != "/token":
                    self._send(404, {"error": "not_found"})
                    return
                req = idp.codes.pop(form.get("code", ""), None)
                verifier = form.get("code_verifier", "")
                pkce_ok = bool(req) and b64(hashlib.sha256(verifier.encode()).digest()) == req["code_challenge"]
                ok = (pkce_ok and form.get("grant_type") == "authorization_code" and req is not None
                      and form.get("client_id") == idp.client_id and form.get("redirect_uri") == req["redirect_uri"])
                idp.exchanges.append({"pkce_ok": pkce_ok, "ok": ok})
                if not ok:
                    self._send(400, {"error": "invalid_grant", "error_description": "code or PKCE verifier mismatch"})
                    return
                now = int(time.time())
                token = jwt.encode({"iss": idp.issuer, "aud": idp.audience, "sub": "dr-browser", "iat": now,
                                    "exp": now + 600, "roles": ["reader"]}, key, algorithm="RS256",
                                   headers={"kid": "test-key"})
                self._send(200, {"access_token": token, "token_type": "Bearer", "expires_in": 600})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeIdP:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------- the test


def test_radiologist_flow_in_chromium(chromium_path: str, web_client: Path, milvus_uri: str, model_server: str,
                                      service_logs: Path, tmp_path: Path, postgres_dsn: str) -> None:
    pytest.importorskip("medsearch_api.app", reason="the gateway app (medsearch_api.app) is not there yet")
    from pydicom.data import get_testdata_file

    from medsearch import pgstore
    from medsearch.contracts import names_for
    from medsearch.contracts.collections import IMAGE_ANN_FIELDS, REPORT_ANN_FIELDS, ann_row
    from medsearch.contracts.spec import MedicalSearchIndexSpec
    from medsearch.provision import ensure_collections, ensure_schema, milvus_client

    index = "webtest"
    names = names_for(index)
    store_root = tmp_path / "objects"
    store_root.mkdir()
    store_url = f"file://{store_root}"

    files = [Path(str(get_testdata_file(n, download=False))) for n in DICOM_NAMES]
    reports = [json.loads(line) for line in (ROOT / "samples" / "reports" / "reports.jsonl").read_text().splitlines()
               if line.strip()]
    client = milvus_client(milvus_uri)
    ensure_collections(client, index, MedicalSearchIndexSpec())
    ensure_schema(postgres_dsn, index, MedicalSearchIndexSpec())
    image_rows_written = image_rows(files, store_url=store_url, index=index, model_url=model_server)
    rows = report_rows(reports)
    with pgstore.connect(postgres_dsn) as conn:  # the system of record, then the ANN engine, as the workers write
        pgstore.upsert_images(conn, index, image_rows_written)
        pgstore.upsert_reports(conn, index, rows)
    client.upsert(names.images_collection, [ann_row(r, IMAGE_ANN_FIELDS) for r in image_rows_written])
    client.upsert(names.reports_collection, [ann_row(r, REPORT_ANN_FIELDS) for r in rows])
    client.close()

    # what the UI should show for the facet click: reports where "pleural effusion" is negated
    effusion_negated = sorted(r["report_id"] for r in rows
                              if "J91.8" in r["icd10_negative"] and re.search(r"effusion", r["text"], re.I))
    assert "R0001" in effusion_negated  # the report of the chest study RG1 ("No pleural effusion ...")
    cr_studies = {r["study_uid"] for r in image_rows_written if r["modality"] == "CR"}
    effusion_negated_cr = sorted(r for r in effusion_negated
                                 if next(x for x in rows if x["report_id"] == r)["study_uid"] in cr_studies)
    assert effusion_negated_cr  # R0001 at least

    # the date range step: a listing (no query, newest first, then by id) of the reports dated in the range
    date_from, date_to = "2024-01-11", "2024-01-13"
    lo, hi = (int(d.replace("-", "")) for d in (date_from, date_to))
    in_range = sorted((r for r in rows if lo <= r["report_date"] <= hi),
                      key=lambda r: (-r["report_date"], r["report_id"]))
    assert 0 < len(in_range) <= 10  # one page
    range_positive = {c: sum(c in r["icd10_positive"] for r in in_range) for r in in_range for c in r["icd10_positive"]}

    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN} reader browser-test\n")
    port = procs.free_port()
    base = f"http://127.0.0.1:{port}/"
    env = {"MEDSEARCH_INDEX": index, "MEDSEARCH_MILVUS_URI": milvus_uri, "MEDSEARCH_POSTGRES_DSN": postgres_dsn,
           "MEDSEARCH_MODEL_SERVER_URL": model_server,
           "MEDSEARCH_OBJECT_STORE_URL": store_url, "MEDSEARCH_API_TOKENS_FILE": str(tokens),
           "MEDSEARCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{procs.free_port()}", "MEDSEARCH_LOG_LEVEL": "INFO"}
    out = output_dir()
    upload_png = tmp_path / "query.png"
    from medsearch.imaging import decode_dicom, thumbnail_png

    upload_png.write_bytes(thumbnail_png(decode_dicom(files[3].read_bytes()).image))
    # OIDC sign-in as deployed: config.json beside index.html names the IdP; the gateway verifies its JWTs.
    # (A copy of the build, so the shared build output is never touched.)
    dist = tmp_path / "dist"
    shutil.copytree(web_client, dist)
    idp_ctx = FakeIdP(client_id="medsearch-web", audience="medsearch-api")
    (dist / "config.json").write_text(json.dumps({"oidc": {
        "issuer": idp_ctx.issuer, "clientId": "medsearch-web", "scope": "openid profile"}}))
    env.update({"MEDSEARCH_OIDC_ISSUER": idp_ctx.issuer, "MEDSEARCH_OIDC_AUDIENCE": "medsearch-api",
                "MEDSEARCH_OIDC_JWKS_URL": f"{idp_ctx.issuer}/jwks"})
    serve = ("import sys, uvicorn; from pathlib import Path; from medsearch.contracts.settings import ApiSettings; "
             "from medsearch_api.app import create_app; "
             "uvicorn.run(create_app(ApiSettings(), web_dist=Path(sys.argv[1])), host='127.0.0.1', "
             "port=int(sys.argv[2]))")
    with idp_ctx as idp, procs.running([sys.executable, "-c", serve, str(dist), str(port)],
                                       ready=lambda: procs.http_ready(f"{base}healthz"), what="gateway",
                                       log_path=service_logs / "gateway-web.log", timeout=90, env=env):
        started = time.monotonic()
        res = subprocess.run(
            ["node", str(DRIVER), "--base", base, "--token", TOKEN, "--out", str(out), "--chromium", chromium_path,
             "--query", "effusion", "--mode", "keyword", "--facet-code", "J91.8", "--facet-polarity", "negative",
             "--modality", "CR", "--upload-dicom", str(files[0]), "--upload-png", str(upload_png),
             "--date-from", date_from, "--date-to", date_to, "--date-inverted-to", "2000-01-01", "--oidc", "1"],
            capture_output=True, text=True, timeout=300,
        )
        elapsed = time.monotonic() - started
    assert res.stdout.strip(), f"the browser driver printed nothing:\n{res.stderr[-3000:]}"
    seen = json.loads(res.stdout.strip().splitlines()[-1])
    (out / "observations.json").write_text(json.dumps(seen, indent=2))
    gateway_log = (service_logs / "gateway-web.log").read_text(errors="replace")[-3000:]
    assert seen["ok"], f"step {seen.get('step')}: {seen.get('error')}\n{res.stderr[-2000:]}\n{gateway_log}"
    steps = seen["steps"]

    # login: a wrong token is refused in the form, the right one is kept for the tab only
    assert "did not accept" in steps["login"]["badTokenMessage"]
    assert steps["login"]["focused"] and steps["login"]["tokenStored"]
    assert steps["login"]["title"] == "Sign in · medsearch"

    # search: keyword results with highlighted snippets, coloured findings, both facet charts, thumbnails
    search = steps["search"]
    assert search["cards"] == 10  # page size; far more than 10 sample reports mention effusion
    assert search["snippets"] > 0
    assert {"positive", "negative"} <= set(search["chipKinds"])
    pos = {f["code"]: f["count"] for f in search["positiveFacets"]}
    neg = {f["code"]: f["count"] for f in search["negativeFacets"]}
    assert "J91.8" in pos and "J91.8" in neg
    assert all(s == "ok" for s in search["thumbs"] if s != "error") and "loading" not in search["thumbs"]

    # facet click: filter chip added, every card carries the code as negated, count = the facet's count
    facet = steps["facet"]
    assert "neg=J91.8" in facet["hash"]
    assert facet["everyCardHasCode"] and facet["cards"] > 0
    assert facet["filterChips"] and "J91.8" in facet["filterChips"][0]
    assert facet["expectedCount"] == neg["J91.8"]
    assert str(facet["expectedCount"]) in facet["heading"]
    assert set(facet["reportIds"]) <= set(effusion_negated)

    # modality filter (through each report's study images): exactly the CR-imaged reports of the facet's set
    modality = steps["modality"]
    assert "modality=CR" in modality["hash"] and "neg=J91.8" in modality["hash"]
    assert sorted(modality["reportIds"]) == effusion_negated_cr
    assert all(modality["withImage"]) and modality["thumbs"] and all(t == "ok" for t in modality["thumbs"])

    # image page: metadata, the report with highlighted entities (negated effusion), similar images
    image = steps["image"]
    assert image["hash"].startswith("#/image/1.3.6.1.4.1.5962.1.1.9.1.")  # one of the RG1 chest views
    assert image["viewerThumb"] == ["ok"]
    assert {"Modality", "Study UID", "SOP Instance UID"} <= set(image["metadata"])
    assert {"text": "pleural effusion", "assertion": "negative"} in image["entities"]
    assert len(image["similar"]) == min(10, len(DICOM_NAMES) - 1)
    scores = [s["score"] for s in image["similar"]]
    assert scores == sorted(scores, reverse=True)
    assert all(s == "ok" for s in image["similarThumbs"])
    assert steps["similarK"]["items"] == 5

    # upload the chest DICOM itself: its own image (and the two other encodings of the same pixels in the RG1
    # study: lossless and lossy JPEG 2000) are the nearest neighbours, at cosine ~1
    upload = steps["uploadDicom"]["items"]
    top3 = {u["href"] for u in upload[:3]}
    assert "#/image/1.3.6.1.4.1.5962.1.1.9.1.1.20040826185059.5457" in top3
    assert all(h.startswith("#/image/1.3.6.1.4.1.5962.1.1.9.1.") for h in top3)
    assert all(u["score"] > 0.99 for u in upload[:3])
    assert [u["score"] for u in upload] == sorted((u["score"] for u in upload), reverse=True)
    assert steps["uploadPng"]["items"] and steps["uploadPng"]["preview"] == 1

    # report date range: exactly the reports dated in it, newest first; facets over the same reports
    dates = steps["dateRange"]
    assert f"from={date_from}" in dates["hash"] and f"to={date_to}" in dates["hash"]
    assert dates["inputTypes"] == ["date", "date"] and dates["inputs"] == [date_from, date_to]
    assert dates["reportIds"] == [r["report_id"] for r in in_range]
    assert dates["dates"] and all(date_from <= d <= date_to for d in dates["dates"])
    assert dates["heading"].startswith(f"{len(in_range)} report")
    assert dates["positiveFacets"] and all(f["count"] == range_positive.get(f["code"]) for f in dates["positiveFacets"])
    assert dates["clearButton"] == 1
    # a start after the end: said inline, both inputs marked invalid, nothing sent, no results
    inverted = steps["dateRangeInverted"]
    assert "to=2000-01-01" in inverted["hash"]
    assert date_from in inverted["error"] and "2000-01-01" in inverted["error"] and "after" in inverted["error"]
    assert inverted["invalid"] == ["true", "true"]
    assert inverted["cards"] == 0 and inverted["requestsSent"] == 0
    # "Clear filters" clears the dates
    cleared = steps["dateRangeCleared"]
    assert "from=" not in cleared["hash"] and "to=" not in cleared["hash"]
    assert cleared["inputs"] == ["", ""] and cleared["cards"] == 10 and cleared["clearButton"] == 0

    # tablet width: no horizontal scrolling, the filters stack above the results
    assert steps["tablet"]["scrollWidth"] <= 820
    assert steps["tablet"]["sidebarAboveResults"]
    assert steps["keyboard"]["firstTabStop"] == "Skip to content" and steps["keyboard"]["reachedSearchBox"]
    assert steps["signOut"]["tokenCleared"]

    # OIDC: the IdP's code came back, PKCE verified, the JWT kept and accepted by the gateway for a search
    oidc = steps["oidc"]
    assert idp.exchanges == [{"pkce_ok": True, "ok": True}]
    assert oidc["tokenIsJwt"] and oidc["urlClean"] and oidc["hash"].startswith("#/search")
    assert oidc["cards"] > 0
    assert not seen["consoleErrors"], seen["consoleErrors"]
    assert not seen["failedRequests"], seen["failedRequests"]
    for shot in seen["screenshots"]:
        assert Path(shot).stat().st_size > 10_000, shot
    print(f"browser flow: {elapsed:.1f}s, screenshots in {out}")


def test_web_unit_suite(web_client: Path) -> None:
    """The client's vitest unit tests (api/web/src/**/*.test.ts), so that `make test` runs them too."""
    env = {**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0"}  # CI runners often force colour
    res = subprocess.run(["npm", "test", "--silent"], cwd=WEB, capture_output=True, text=True, timeout=300, env=env)
    out = re.sub(r"\x1b\[[0-9;]*m", "", res.stdout)
    assert res.returncode == 0, f"npm test failed:\n{out[-3000:]}\n{res.stderr[-2000:]}"
    assert re.search(r"Tests\s+\d+ passed", out), out[-2000:]
