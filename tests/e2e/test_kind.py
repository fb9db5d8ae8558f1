"""End to end on a kind cluster: create the cluster, install cert-manager + KServe, `skaffold run -p kind`
(four images built and loaded, both charts installed with Milvus/Kafka dependencies and a default index),
wait for the index to become Ready, ingest sample DICOM objects and reports through the gateway's GraphQL
mutations, query them back (keyword search, ICD-10 facets, similar images), tear the cluster down.

Run with ``make e2e`` (``pytest -m e2e -rs tests/e2e``) on a machine with docker, kind, kubectl, helm and
skaffold on PATH and network access. Skips, naming what is missing, everywhere else. Set
``MEDSEARCH_E2E_KEEP=1`` to keep the cluster afterwards (then ``tests/e2e/kind.sh down``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
KIND_SH = HERE / "kind.sh"
CONTEXT = "kind-" + os.environ.get("MEDSEARCH_KIND_CLUSTER", "medsearch")
NAMESPACE = "medsearch"
INDEX = "e2e"
TOKEN = "e2e-admin-token-0123456789"   # tests/e2e/kind-values.yaml
REPORTS = {
    "e2e-r1": ("FINDINGS: Moderate right pleural effusion. No pneumothorax.\n"
               "IMPRESSION: Right pleural effusion."),
    "e2e-r2": "FINDINGS: Heart size is enlarged. Lungs are clear.\nIMPRESSION: Cardiomegaly without effusion.",
    "e2e-r3": "FINDINGS: No focal consolidation, effusion or pneumothorax.\nIMPRESSION: Normal chest.",
}
DICOM_FILES = ("CT_small.dcm", "MR_small.dcm", "rtdose.dcm")


def _missing_prerequisites() -> list[str]:
    missing = [b for b in ("docker", "kind", "kubectl", "helm", "skaffold") if not shutil.which(b)]
    if "docker" not in missing:
        try:
            subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=True)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
            missing.append("a running docker daemon (docker info failed)")
    return missing


def _run(*args: str, timeout: float = 1800) -> None:
    subprocess.run(list(args), check=True, timeout=timeout, cwd=REPO)


def _wait(what: str, check: Callable[[], Any], timeout: float, interval: float = 5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as err:  # noqa: BLE001 - polling: any failure means "not yet"; reported on timeout
            last = err
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    missing = _missing_prerequisites()
    if missing:
        pytest.skip("the kind e2e tier needs " + ", ".join(missing)
                    + " (and network access to pull images and charts); see docs/install.md")
    try:
        _run("bash", str(KIND_SH), "up")
        _run("bash", str(KIND_SH), "deploy", timeout=3600)
        yield CONTEXT
    finally:
        if not os.environ.get("MEDSEARCH_E2E_KEEP"):
            subprocess.run(["bash", str(KIND_SH), "down"], check=False, timeout=600)


def _kubectl_json(*args: str) -> Any:
    out = subprocess.run(["kubectl", "--context", CONTEXT, "-n", NAMESPACE, *args, "-o", "json"],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    return json.loads(out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def gateway(cluster: str) -> Iterator[Any]:
    import httpx

    port = _free_port()
    proc = subprocess.Popen(["kubectl", "--context", cluster, "-n", NAMESPACE, "port-forward",
                             "svc/medsearch-gateway", f"{port}:80"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60,
                          headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        _wait("the gateway's /readyz", lambda: client.get("/readyz").status_code == 200, timeout=600)
        yield client
    finally:
        client.close()
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


def _graphql(client: Any, query: str, **variables: Any) -> dict[str, Any]:
    r = client.post("/graphql", json={"query": query, "variables": variables})
    r.raise_for_status()
    body = r.json()
    assert not body.get("errors"), body["errors"]
    return dict(body["data"])


def test_index_becomes_ready(cluster: str) -> None:
    def ready() -> bool:
        msi = _kubectl_json("get", "medicalsearchindex", INDEX)
        conditions = {c["type"]: c["status"] for c in msi.get("status", {}).get("conditions", [])}
        return conditions.get("Ready") == "True"

    _wait(f"MedicalSearchIndex {INDEX} Ready", ready, timeout=1200, interval=10)
    deployments = {d["metadata"]["name"] for d in _kubectl_json("get", "deployments")["items"]}
    assert {"medsearch-gateway", "medsearch-operator", f"{INDEX}-dicom-worker", f"{INDEX}-report-worker"} <= deployments
    isvc = _kubectl_json("get", "inferenceservice", f"{INDEX}-embedder")
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in isvc["status"]["conditions"])


def test_ingest_and_query(gateway: Any) -> None:
    from pydicom.data import get_testdata_file

    for name in DICOM_FILES:
        path = get_testdata_file(name)
        assert path, f"pydicom test file {name} missing"
        data = Path(str(path)).read_bytes()
        res = _graphql(gateway, "mutation($f: String!, $n: String!) { ingestDicom(fileBase64: $f, filename: $n)"
                                " { status reason id } }", f=base64.b64encode(data).decode(), n=name)
        assert res["ingestDicom"]["status"] in ("published", "duplicate"), res
    for report_id, text in REPORTS.items():
        res = _graphql(gateway, "mutation($id: ID!, $t: String!) { ingestReport(reportId: $id, text: $t)"
                                " { status reason } }", id=report_id, t=text)
        assert res["ingestReport"]["status"] in ("published", "duplicate"), res

    search = "query { searchReports(query: \"effusion\", first: 10) { totalCount edges { node { id } } } }"
    found = _wait("the reports to be searchable",
                  lambda: {e["node"]["id"] for e in _graphql(gateway, search)["searchReports"]["edges"]} or None,
                  timeout=600)
    assert "e2e-r1" in found

    facets = _graphql(gateway, "query { icd10Facets(polarity: POSITIVE) { code count } }")["icd10Facets"]
    assert facets, "no ICD-10-CM facets over the ingested reports"

    listing = "query { searchReports(first: 10) { totalCount } }"
    assert _graphql(gateway, listing)["searchReports"]["totalCount"] >= len(REPORTS)

    def images() -> list[dict[str, Any]]:
        q = "query($k: Int!, $u: String!) { similarImages(uploadBase64: $u, k: $k) { score image { id } } }"
        data = Path(str(get_testdata_file(DICOM_FILES[0]))).read_bytes()
        hits: list[dict[str, Any]] = _graphql(gateway, q, k=3, u=base64.b64encode(data).decode())["similarImages"]
        return hits if len(hits) >= 2 else []

    hits = _wait("the images to be indexed", images, timeout=600)
    assert hits[0]["score"] >= hits[-1]["score"]
