"""From a search result to the full-resolution image, in a real browser against the real gateway process.

Real parts: PostgreSQL (the system of record), a milvus-lite server, the gateway serving the built web client,
objects in a ``file://`` object store, headless Debian Chromium driven by playwright-core
(tests/browser/viewer-flow.mjs). The index holds the 2k chest radiograph RG1_UNCR (pydicom-data; 1955 x 1841,
15-bit, MONOCHROME1) with its report R0001 (samples/reports) and two more images. Image vectors are seeded random
(no model server needed: this test is about reading images, not similarity).

Observed: the "Open in viewer" links of the result card and of the image page carry the study UID; the image page
shows the WADO-RS rendered frame at full resolution; a window preset and a keyboard adjustment change the pixels
(screenshot diff). Measured and printed: the time from the click on the result to the first full-resolution frame
(target <= 1.5 s on a 2-core machine; asserted only against a generous bound).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from medsearch_dev.localstack import procs
from PIL import Image
from pydicom.data import get_testdata_file
from test_web_browser import chromium_path, report_rows, web_client  # noqa: F401  # shared fixtures

from medsearch import store

pytestmark = [pytest.mark.integration, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "tests" / "browser" / "viewer-flow.mjs"
TOKEN = "viewer-test-token-0123456789abcdef"
FILES = ("RG1_UNCR.dcm", "CT_small.dcm", "MR_small.dcm")
TEMPLATE = "https://ohif.example.org/viewer?StudyInstanceUIDs={study}"


def _pixels(path: str) -> np.ndarray[Any, Any]:
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.float32)


def test_search_result_to_full_resolution_image_with_window_presets(
    chromium_path: str, web_client: Path, milvus_uri: str, postgres_dsn: str,  # noqa: F811  # imported fixtures
    tmp_path: Path, service_logs: Path,
) -> None:
    from medsearch_workers.dicom_meta import extract_metadata

    from medsearch import pgstore
    from medsearch.contracts import names_for
    from medsearch.contracts.collections import (
        EMBEDDING_DIMENSION,
        IMAGE_ANN_FIELDS,
        IMAGE_VECTOR,
        REPORT_ANN_FIELDS,
        ann_row,
    )
    from medsearch.contracts.spec import MedicalSearchIndexSpec
    from medsearch.provision import drop_schema, ensure_collections, ensure_schema, milvus_client

    index = "viewertest"
    store_url = f"file://{tmp_path / 'objects'}"
    spec = MedicalSearchIndexSpec()
    ensure_schema(postgres_dsn, index, spec)
    client = milvus_client(milvus_uri)
    ensure_collections(client, index, spec)
    rng = np.random.default_rng(0)
    images = []
    for name in FILES:
        data = Path(str(get_testdata_file(name, download=False))).read_bytes()
        sha = store.sha256_hex(data)
        uri = store.join(store_url, index, "dicom", f"{sha}.dcm")  # where the producer stores it
        store.put_bytes(uri, data)
        vec = rng.normal(size=EMBEDDING_DIMENSION)
        images.append({**extract_metadata(pydicom.dcmread(io.BytesIO(data))), "report_id": "", "source_uri": uri,
                       "sha256": sha, "thumbnail_uri": "", "model_name": "densenet121",
                       "model_version": "random-seed0", "indexed_at": int(time.time() * 1000),
                       IMAGE_VECTOR: [float(x) for x in vec / np.linalg.norm(vec)]})
    reports = [json.loads(line) for line in (ROOT / "samples" / "reports" / "reports.jsonl").read_text().splitlines()
               if line.strip()]
    r0001 = next(r for r in reports if r["report_id"] == "R0001")
    rows = report_rows([r0001])
    chest = images[0]
    assert rows[0]["study_uid"] == chest["study_uid"] and (chest["rows"], chest["columns"]) == (1955, 1841)
    with pgstore.connect(postgres_dsn) as conn:
        pgstore.upsert_images(conn, index, images)
        pgstore.upsert_reports(conn, index, rows)
    names = names_for(index)
    client.upsert(names.images_collection, [ann_row(r, IMAGE_ANN_FIELDS) for r in images])
    client.upsert(names.reports_collection, [ann_row(r, REPORT_ANN_FIELDS) for r in rows])
    client.close()

    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN} reader viewer-test\n")
    port = procs.free_port()
    base = f"http://127.0.0.1:{port}/"
    env = {"MEDSEARCH_INDEX": index, "MEDSEARCH_MILVUS_URI": milvus_uri, "MEDSEARCH_POSTGRES_DSN": postgres_dsn,
           "MEDSEARCH_OBJECT_STORE_URL": store_url, "MEDSEARCH_API_TOKENS_FILE": str(tokens),
           "MEDSEARCH_MODEL_SERVER_URL": f"http://127.0.0.1:{procs.free_port()}",
           "MEDSEARCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{procs.free_port()}", "MEDSEARCH_VIEWER_URL_TEMPLATE": TEMPLATE}
    out = Path(os.environ.get("MEDSEARCH_TEST_OUTPUT", ROOT / "test-output")) / "web-viewer"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    serve = ("import sys, uvicorn; from pathlib import Path; from medsearch.contracts.settings import ApiSettings; "
             "from medsearch_api.app import create_app; "
             "uvicorn.run(create_app(ApiSettings(), web_dist=Path(sys.argv[1])), host='127.0.0.1', "
             "port=int(sys.argv[2]))")
    try:
        with procs.running([sys.executable, "-c", serve, str(web_client), str(port)],
                           ready=lambda: procs.http_ready(f"{base}healthz"), what="gateway",
                           log_path=service_logs / "gateway-viewer.log", timeout=90, env=env):
            res = subprocess.run(["node", str(DRIVER), "--base", base, "--token", TOKEN, "--out", str(out),
                                  "--chromium", chromium_path, "--query", "pulmonary masses", "--report", "R0001"],
                                 capture_output=True, text=True, timeout=300)
    finally:
        drop_schema(postgres_dsn, index)
    assert res.stdout.strip(), f"the browser driver printed nothing:\n{res.stderr[-3000:]}"
    seen = json.loads(res.stdout.strip().splitlines()[-1])
    (out / "observations.json").write_text(json.dumps(seen, indent=2))
    assert seen["ok"], f"step {seen.get('step')}: {seen.get('error')}\n{res.stderr[-2000:]}"
    steps = seen["steps"]
    study = chest["study_uid"]
    want = TEMPLATE.replace("{study}", study)
    assert steps["search"]["cardViewerHref"] == want and steps["search"]["cardViewerTarget"] == "_blank"
    assert steps["image"]["imageViewerHref"] == want
    assert steps["image"]["hash"] == f"#/image/{chest['sop_instance_uid']}"
    assert steps["image"]["natural"] == [1841, 1955]  # full resolution, not the thumbnail
    assert steps["presets"]["pressed"] == {"lung": "true", "bone": "true"}
    assert steps["keyboard"]["focusedIsRange"] and steps["keyboard"]["window"] != "default"

    shots = {k: _pixels(v) for k, v in seen["shots"].items()}
    default, lung, keyboard = shots["default"], shots["lung"], shots["keyboard"]
    assert default.shape == lung.shape == keyboard.shape
    # The lung window (Hounsfield units) is far below this radiograph's stored values: after MONOCHROME1
    # inversion it shows almost black; the default (the object's own window) shows the chest.
    assert float(np.abs(default - lung).mean()) > 20, "the preset did not change the pixels"
    assert lung.mean() < default.mean() - 20
    # A narrower width from the keyboard raises the contrast of the same picture.
    assert float(np.abs(default - keyboard).mean()) > 3 and keyboard.std() > default.std()
    assert not seen["consoleErrors"], seen["consoleErrors"]
    assert not seen["failedRequests"], seen["failedRequests"]
    click_ms, mount_ms = steps["image"]["clickToFrameMs"], steps["image"]["mountToFrameMs"]
    print(f"first full-resolution frame of RG1_UNCR (1841 x 1955): {click_ms} ms from the click on the result, "
          f"{mount_ms} ms from the viewer's mount (target <= 1500 ms)")
    assert click_ms < 15_000  # a generous bound; the figure itself is what the closing note reports
