"""The workers and gateway images, run the way a cluster runs them, against the real local services (Tansu,
milvus-lite, PostgreSQL) and the model-server image:

- the DICOM worker as the operator's Deployment (``build_worker_deployment``) with the operator's ConfigMap as its
  environment and index spec: a DICOM file published with ``medsearch ingest`` ends up in PostgreSQL and Milvus;
- the gateway as the chart's Deployment (``helm template``; its ConfigMap and Secrets as environment, the static
  tokens and index spec as mounted files): ``/healthz`` and ``/readyz`` answer, a GraphQL image search (an upload of
  the same file) finds the indexed image, its thumbnail is a PNG and the web client is served.

Every container is non-root with a read-only root filesystem, the pod's emptyDirs as tmpfs and no capabilities.
The object store is a ``file://`` folder (S3 in a cluster), shared with the containers at the same path.

Not covered here: the report worker. The tier builds the workers image without the ``report`` extra (it pulls
PyTorch, which PyPI ships only as multi-GB CUDA builds); see docs/install.md.
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

from conftest import image_user, start_model_server
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


def _milvus_images(uri: str, index: str) -> int:
    client = milvus_client(uri)
    try:
        return count_rows(client, names_for(index, NAMESPACE).images_collection)
    finally:
        client.close()


def test_workers_index_a_dicom_and_the_gateway_serves_it(
        built_images: Any, containers: Any, helm_binary: Path, index: str, kafka_bootstrap: str, milvus_uri: str,
        postgres_dsn: str, tmp_path: Path) -> None:
    workers_ref, gateway_ref = built_images("workers"), built_images("api")
    model_url = start_model_server(containers, built_images("model-server"), tmp_path / "model", SIZE)

    store = tmp_path / "objects"
    store.mkdir()
    store_url = f"file://{store}"
    tmp_path.chmod(0o755)

    # ---- the DICOM worker, as the operator deploys it
    owner = ch.Owner(name=index, namespace=NAMESPACE, uid="u")
    spec = parse_spec({"embedding": {"inputSize": SIZE}})
    settings = OperatorSettings(kafka_bootstrap=kafka_bootstrap, milvus_uri=milvus_uri, postgres_dsn=postgres_dsn,
                                object_store_url=store_url, operator_worker_image=workers_ref)
    configmap = ch.build_configmap(owner, spec, settings)
    deployment = ch.build_worker_deployment(owner, spec, settings, "dicom", ch.config_checksum(configmap))
    worker_pod = _with_store(pod_spec(deployment), store)
    sources = objects_data([configmap])
    worker = containers.start(workers_ref, worker_pod, sources=sources,
                              volumes={**volume_dirs(worker_pod, sources, tmp_path / "worker-volumes"),
                                       "object-store": store},
                              env={"MEDSEARCH_MODEL_SERVER_URL": model_url,        # the InferenceService's URL
                                   "MEDSEARCH_WORKER_METRICS_PORT": str(free_port()),  # host network
                                   "MEDSEARCH_WORKER_MAX_WAIT_MS": "200",
                                   "MEDSEARCH_WORKER_SESSION_TIMEOUT_MS": "6000",
                                   "MEDSEARCH_WORKER_HEARTBEAT_MS": "1000"})

    from medsearch.cli import app

    ct = Path(str(get_testdata_file(CT)))
    result = CliRunner().invoke(app, ["ingest", str(ct), "--index", index, "--bootstrap", kafka_bootstrap,
                                      "--store", store_url, "--json"], env={"MEDSEARCH_POSTGRES_DSN": postgres_dsn,
                                                                         "MEDSEARCH_INDEX_NAMESPACE": NAMESPACE})
    assert result.exit_code == 0, result.output
    # What `medsearch ingest` stored here (as root) is the containers' to write beside (thumbnails), as a bucket
    # would be: hand the folder to the images' user.
    uid, gid = (int(x) for x in image_user(workers_ref).split(":"))
    for path in [store, *store.rglob("*")]:
        os.chown(path, uid, gid)
    wait_for(lambda: (len(_image_rows(postgres_dsn, index)) == 1 and _milvus_images(milvus_uri, index) == 1)
             or not containers.running(worker), timeout=240, what="the DICOM indexed by the worker container")
    assert containers.running(worker), containers.logs(worker)
    (row,) = _image_rows(postgres_dsn, index)
    sop = row["sop_instance_uid"]
    assert row["thumbnail_uri"].startswith(store_url)

    # ---- the gateway, as the chart deploys it
    repo, tag = _split(gateway_ref)
    objs = render(helm_binary, MAIN_CHART, namespace=NAMESPACE, sets={
        "gateway.image.repository": repo, "gateway.image.tag": tag, "config.index": index,
        "externalPostgres.dsn": "postgresql://medsearch@127.0.0.1/medsearch", "externalMilvus.uri": milvus_uri,
        "externalKafka.brokerList": kafka_bootstrap, "config.modelServerUrl": model_url,
        "gateway.auth.staticTokens.enabled": True, "gateway.auth.staticTokens.tokens[0].token": TOKEN,
        "gateway.auth.staticTokens.tokens[0].role": "reader"})
    gateway_pod = _with_store(pod_spec(one(objs, "Deployment", "-gateway")), store)
    (container,) = gateway_pod["containers"]
    assert container["image"] == gateway_ref
    gw_sources = {**objects_data(by_kind(objs, "ConfigMap") + by_kind(objs, "Secret")), **sources}
    port = free_port()
    gateway = containers.start(gateway_ref, gateway_pod, sources=gw_sources,
                               volumes={**volume_dirs(gateway_pod, gw_sources, tmp_path / "gateway-volumes"),
                                        "object-store": store},
                               env={"MEDSEARCH_API_PORT": str(port),              # host network
                                    # the local PostgreSQL's keyword DSN (the chart takes a URI + a Secret)
                                    "MEDSEARCH_POSTGRES_DSN": postgres_dsn,
                                    "MEDSEARCH_OBJECT_STORE_URL": store_url})     # S3 in the chart
    base = f"http://127.0.0.1:{port}"
    health = container["livenessProbe"]["httpGet"]["path"]
    ready = container["readinessProbe"]["httpGet"]["path"]
    wait_for(lambda: http_ready(f"{base}{ready}") or not containers.running(gateway), timeout=180,
             what="gateway readiness")
    assert containers.running(gateway), containers.logs(gateway)
    http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert http.get(health).status_code == 200
    assert http.get(ready).status_code == 200, http.get(ready).text

    res = http.post("/graphql", json={"query": """query($b: String!) { similarImages(uploadBase64: $b, k: 3) {
                                        score image { id modality thumbnailUrl } } }""",
                                      "variables": {"b": base64.b64encode(ct.read_bytes()).decode()}})
    assert res.status_code == 200, res.text
    body = res.json()
    assert not body.get("errors"), body
    hits = body["data"]["similarImages"]
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
    for name in (worker, gateway):
        state = containers.inspect(name)
        assert state["HostConfig"]["ReadonlyRootfs"] is True and state["HostConfig"]["CapDrop"] == ["ALL"]
        assert state["Config"]["User"].split(":")[0] not in ("", "0"), json.dumps(state["Config"])[:300]
