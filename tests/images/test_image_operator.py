"""The operator image, run as the chart's operator Deployment runs it (non-root, read-only root filesystem with the
chart's /tmp emptyDir, no capabilities), against the k8s tier's real kube-apiserver: a MedicalSearchIndex gets its
children (ConfigMap, worker Deployments, InferenceService; topics and collections in the real broker and Milvus)
and, once the children report ready, Ready=True."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import yaml
from chartkit import MAIN_CHART, by_kind, one, pod_spec, render
from medsearch_dev.localstack.procs import free_port
from podrun import objects_data
from test_operator import MSI, OPERATOR_ENV, Api, collections, sample, topic_partitions, unique_name, wait_for

from medsearch.contracts.naming import names_for


def _split(ref: str) -> tuple[str, str]:
    repo, _, tag = ref.rpartition(":")
    return repo, tag


def _container_kubeconfig(kube: Any, token: str, path: Path) -> Path:
    """The operator user's kubeconfig with the CA inline (the container sees none of the host's paths)."""
    cfg = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "envtest", "cluster": {
            "server": kube.server,
            "certificate-authority-data": base64.b64encode(kube.ca_file.read_bytes()).decode()}}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "envtest", "context": {"cluster": "envtest", "user": "operator"}}],
        "current-context": "envtest",
    }
    path.mkdir(parents=True, exist_ok=True)
    (path / "config").write_text(yaml.safe_dump(cfg))
    (path / "config").chmod(0o644)
    path.chmod(0o755)
    return path


def test_operator_image_reconciles_an_index(
        built_images: Any, containers: Any, helm_binary: Path, cluster: Any, api: Api, ns: str,
        kafka_bootstrap: str, milvus_uri: str, postgres_dsn: str, tmp_path: Path) -> None:
    ref = built_images("operator")
    repo, tag = _split(ref)
    objs = render(helm_binary, MAIN_CHART, namespace=ns, sets={
        "operator.image.repository": repo, "operator.image.tag": tag, "operator.watchNamespace": ns,
        "workers.image.repository": "registry.example/medsearch-workers", "workers.image.tag": "test",
        "modelServer.image.repository": "registry.example/medsearch-model-server", "modelServer.image.tag": "test",
        "externalMilvus.uri": milvus_uri, "externalKafka.brokerList": kafka_bootstrap})
    deployment = one(objs, "Deployment", "-operator")
    spec = pod_spec(deployment)
    (container,) = spec["containers"]
    assert container["image"] == ref
    # In a cluster the operator authenticates with its service account; here a kubeconfig stands in for it.
    spec["volumes"].append({"name": "kubeconfig", "secret": {"secretName": "stand-in"}})
    container.setdefault("volumeMounts", []).append(
        {"name": "kubeconfig", "mountPath": "/etc/medsearch/kube", "readOnly": True})
    health = free_port()
    env = {**OPERATOR_ENV, "KUBECONFIG": "/etc/medsearch/kube/config", "MEDSEARCH_OPERATOR_NAMESPACE": ns,
           "MEDSEARCH_OPERATOR_HEALTH_PORT": str(health), "MEDSEARCH_OPERATOR_HEALTH_HOST": "127.0.0.1",
           "MEDSEARCH_KAFKA_BOOTSTRAP": kafka_bootstrap, "MEDSEARCH_MILVUS_URI": milvus_uri,
           # the local PostgreSQL's keyword DSN (the chart takes a URI + a Secret)
           "MEDSEARCH_POSTGRES_DSN": postgres_dsn}
    kubeconfig_dir = _container_kubeconfig(cluster, cluster.token_for("operator"), tmp_path / "kube")
    sources = objects_data(by_kind(objs, "ConfigMap") + by_kind(objs, "Secret"))
    name = containers.start(ref, spec, volumes={"kubeconfig": kubeconfig_dir}, env=env, sources=sources)

    # The chart's probes: kopf's liveness endpoint answers.
    probe = container["livenessProbe"]["httpGet"]["path"]
    wait_for(lambda: containers.running(name) and _ok(f"http://127.0.0.1:{health}{probe}"), timeout=90,
             what=f"operator liveness {probe} (container log: see below)")
    state = containers.inspect(name)
    assert state["Config"]["User"].split(":")[0] != "0"
    assert state["HostConfig"]["ReadonlyRootfs"] is True
    assert state["HostConfig"]["CapDrop"] == ["ALL"]

    index = unique_name("img")
    api.create(sample(index, ns))
    api.wait_condition(ns, index, "TopicsReady", "True", timeout=120)
    api.wait_condition(ns, index, "CollectionsReady", "True", timeout=60)
    sel = f"medsearch.io/index={index}"
    assert [c["metadata"]["name"] for c in api.list(("v1", "ConfigMap"), ns, sel)] == [f"{index}-config"]
    deps = sorted(d["metadata"]["name"] for d in api.list(("apps/v1", "Deployment"), ns, sel))
    assert deps == [f"{index}-dicom-worker", f"{index}-report-worker"]
    names = names_for(index, ns)
    assert topic_partitions(kafka_bootstrap, names) == {f"{ns}.{index}.dicom": 2, f"{ns}.{index}.reports": 2,
                                                        f"{ns}.{index}.dlq": 2}
    assert len(collections(milvus_uri, names)) == 2
    api.make_children_ready(ns, index)
    api.wait_condition(ns, index, "Ready", "True", "AllComponentsReady", timeout=60)
    obj = api.get(MSI, ns, index)
    assert obj is not None and obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert containers.running(name), containers.logs(name)


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False

