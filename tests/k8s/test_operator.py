"""The operator against a real kube-apiserver, a real Tansu broker and a real milvus-lite server.

The operator runs in-process (``kopf.testing.KopfRunner``), scoped to each test's namespace, and authenticates
as a user bound only to the ClusterRole in ``operator/config/rbac/role.yaml``: a missing permission fails here.
There is no kubelet: tests play the part of KServe and the Deployment controller by writing those objects'
status subresources.
"""

from __future__ import annotations

import contextlib
import copy
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from medsearch_dev.localstack import procs

from medsearch import provision
from medsearch.contracts.collections import IMAGE_VECTOR, REPORT_VECTOR
from medsearch.contracts.naming import IndexNames, names_for

pytestmark = pytest.mark.k8s

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "operator" / "config" / "crd" / "medicalsearchindexes.yaml"
RBAC_FILE = REPO / "operator" / "config" / "rbac" / "role.yaml"
SAMPLES = REPO / "operator" / "config" / "samples"
ISVC_CRD_FILE = Path(__file__).parent / "manifests" / "inferenceservice-crd.yaml"
MSI = ("medsearch.io/v1alpha1", "MedicalSearchIndex")
ISVC = ("serving.kserve.io/v1beta1", "InferenceService")
OPERATOR_ENV = {
    "MEDSEARCH_OPERATOR_RESYNC_SECONDS": "2",
    "MEDSEARCH_OPERATOR_RETRY_MIN_SECONDS": "0.5",
    "MEDSEARCH_OPERATOR_RETRY_MAX_SECONDS": "2",
    "MEDSEARCH_OPERATOR_SERVICE_TIMEOUT_SECONDS": "3",
    "MEDSEARCH_OPERATOR_HEALTH_PORT": "0",
    "MEDSEARCH_OPERATOR_WORKER_IMAGE": "registry.example/medsearch-workers:test",
    "MEDSEARCH_OPERATOR_PREDICTOR_IMAGE": "registry.example/medsearch-model-server:test",
}


def wait_for(check: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.3) -> Any:
    """Poll ``check()`` until it returns something truthy; fail naming ``what`` and the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last value: {last!r}")


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# -------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cluster(kube: Any) -> Iterator[Any]:
    """Our CRD, the stand-in InferenceService CRD and the operator's RBAC, removed again at module end."""
    from kubernetes import client

    ext = client.ApiextensionsV1Api(kube.api_client())
    crds = [load_docs(CRD_FILE)[0], load_docs(ISVC_CRD_FILE)[0]]
    for crd in crds:
        kube.apply_manifest(crd)

    def established() -> bool:
        for crd in crds:
            got = ext.read_custom_resource_definition(crd["metadata"]["name"])
            conds = {c.type: c.status for c in (got.status.conditions or [])}
            if conds.get("Established") != "True":
                return False
        return True

    wait_for(established, timeout=30, what="CRDs established")
    kube.create_namespace("medsearch-system")
    rbac = load_docs(RBAC_FILE)
    for doc in rbac:
        kube.apply_manifest(doc)
    test_binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "medsearch-operator-test-user"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "medsearch-operator"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "medsearch-operator-test"}],
    }
    kube.apply_manifest(test_binding)
    yield kube
    # Leave the shared API server as we found it: objects with our finalizer would block CRD deletion.
    dyn = kube.dynamic()
    msi = dyn.resources.get(api_version=MSI[0], kind=MSI[1])
    for item in msi.get().items:
        dyn.patch(msi, name=item.metadata.name, namespace=item.metadata.namespace,
                  body={"metadata": {"finalizers": None}}, content_type="application/merge-patch+json")
    rbac_api = client.RbacAuthorizationV1Api(kube.api_client())
    rbac_api.delete_cluster_role_binding("medsearch-operator-test-user")
    rbac_api.delete_cluster_role_binding("medsearch-operator")
    rbac_api.delete_cluster_role("medsearch-operator")
    for crd in crds:
        ext.delete_custom_resource_definition(crd["metadata"]["name"])


@pytest.fixture(scope="module")
def operator_kubeconfig(cluster: Any) -> Path:
    return Path(cluster.kubeconfig_for("operator"))


@contextlib.contextmanager
def env_vars(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def run_operator(operator_kubeconfig: Path, kafka_bootstrap: str, milvus_uri: str,
                 postgres_dsn: str) -> Callable[..., Any]:
    """``with run_operator(namespace, [more namespaces...], bootstrap=...) as runner:`` runs the operator
    in-process, watching the namespaces given."""
    base = {**OPERATOR_ENV, "KUBECONFIG": str(operator_kubeconfig), "MEDSEARCH_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "MEDSEARCH_MILVUS_URI": milvus_uri, "MEDSEARCH_POSTGRES_DSN": postgres_dsn}
    with env_vars(base):
        import medsearch_operator.handlers as handlers  # reads the resync interval from the env set above

    assert handlers.resync.__name__ == "resync"

    @contextlib.contextmanager
    def run(namespace: str, *more: str, **overrides: str) -> Iterator[Any]:
        from kopf.testing import KopfRunner

        watched = [arg for ns in (namespace, *more) for arg in ("--namespace", ns)]
        with env_vars({**base, **overrides}):
            runner = KopfRunner(["run", "--standalone", *watched], timeout=60)
            with runner:
                yield runner
        assert runner.exit_code == 0, runner.output[-3000:]
        assert runner.exception is None, runner.output[-3000:]

    return run


@pytest.fixture()
def ns(cluster: Any) -> str:
    name = f"t-{secrets.token_hex(4)}"
    cluster.create_namespace(name)
    return name


@pytest.fixture()
def api(cluster: Any) -> Any:
    return Api(cluster)


class Api:
    """Test-side access through the official dynamic client (independent of the operator's own code)."""

    def __init__(self, kube: Any) -> None:
        self.kube = kube
        self.dyn = kube.dynamic()

    def res(self, kind: tuple[str, str]) -> Any:
        return self.dyn.resources.get(api_version=kind[0], kind=kind[1])

    def get(self, kind: tuple[str, str], ns: str, name: str) -> dict[str, Any] | None:
        from kubernetes.dynamic.exceptions import NotFoundError

        try:
            return dict(self.dyn.get(self.res(kind), name=name, namespace=ns).to_dict())
        except NotFoundError:
            return None

    def list(self, kind: tuple[str, str], ns: str, selector: str) -> list[dict[str, Any]]:
        return [i.to_dict() for i in self.dyn.get(self.res(kind), namespace=ns, label_selector=selector).items]

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        res = self.res((body["apiVersion"], body["kind"]))
        return dict(self.dyn.create(res, body=body, namespace=body["metadata"]["namespace"]).to_dict())

    def patch(self, kind: tuple[str, str], ns: str, name: str, body: dict[str, Any]) -> None:
        self.dyn.patch(self.res(kind), name=name, namespace=ns, body=body,
                       content_type="application/merge-patch+json")

    def patch_status(self, kind: tuple[str, str], ns: str, name: str, status: dict[str, Any]) -> None:
        res = self.res(kind).subresources["status"]
        self.dyn.patch(res, name=name, namespace=ns, body={"status": status},
                       content_type="application/merge-patch+json")

    def delete(self, kind: tuple[str, str], ns: str, name: str) -> None:
        self.dyn.delete(self.res(kind), name=name, namespace=ns)

    def condition(self, ns: str, name: str, type_: str) -> dict[str, Any] | None:
        obj = self.get(MSI, ns, name) or {}
        for c in (obj.get("status") or {}).get("conditions") or []:
            if c["type"] == type_:
                return dict(c)
        return None

    def wait_condition(self, ns: str, name: str, type_: str, status: str, reason: str | None = None,
                       timeout: float = 60) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            c = self.condition(ns, name, type_)
            if c and c["status"] == status and (reason is None or c["reason"] == reason):
                return c
            return None

        return dict(wait_for(check, timeout=timeout, what=f"{name}: {type_}={status} {reason or ''}"))

    def make_children_ready(self, ns: str, name: str) -> None:
        """Play KServe and the Deployment controller: mark the predictor and the workers ready."""
        isvc = f"{name}-embedder"
        wait_for(lambda: self.get(ISVC, ns, isvc), timeout=30, what=f"InferenceService {isvc}")
        self.patch_status(ISVC, ns, isvc, {
            "url": f"http://{isvc}.{ns}.example", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
        for kind in ("dicom", "report"):
            dep_name = f"{name}-{kind}-worker"
            dep = wait_for(lambda n=dep_name: self.get(("apps/v1", "Deployment"), ns, n), timeout=30,
                           what=f"Deployment {dep_name}")
            n = dep["spec"]["replicas"]
            self.patch_status(("apps/v1", "Deployment"), ns, dep_name, {
                "observedGeneration": dep["metadata"]["generation"], "replicas": n, "readyReplicas": n,
                "updatedReplicas": n, "availableReplicas": n})


def sample(name: str, ns: str, file: str = "demo-index.yaml", **spec_changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(load_docs(SAMPLES / file)[0])
    body["metadata"] = {"name": name, "namespace": ns}
    body["spec"].update(spec_changes)
    return body


def unique_name(prefix: str = "demo") -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def topic_partitions(bootstrap: str, index: IndexNames) -> dict[str, int]:
    admin = provision.kafka_admin(bootstrap)
    try:
        return provision.topic_partitions(admin, list(index.topics))
    finally:
        admin.close()


def collections(milvus_uri: str, index: IndexNames) -> dict[str, str | None]:
    """Existing collections of the index → metric type of their vector index."""
    client = provision.milvus_client(milvus_uri)
    try:
        out: dict[str, str | None] = {}
        n = index
        for coll, vfield in ((n.images_collection, IMAGE_VECTOR), (n.reports_collection, REPORT_VECTOR)):
            if client.has_collection(coll):
                out[coll] = provision._vector_dim_and_metric(client, coll, vfield)[1]
        return out
    finally:
        client.close()


# ----------------------------------------------------------------------------------------------- tests


def test_sample_creates_children_topics_collections_and_converges(
        api: Api, ns: str, run_operator: Any, kafka_bootstrap: str, milvus_uri: str,
        kubectl_binary: Path) -> None:
    name = unique_name()
    with run_operator(ns):
        created = api.create(sample(name, ns))
        uid = created["metadata"]["uid"]
        api.wait_condition(ns, name, "TopicsReady", "True")
        api.wait_condition(ns, name, "CollectionsReady", "True")
        obj = api.get(MSI, ns, name)
        assert obj is not None
        assert obj["metadata"]["finalizers"] == ["medsearch.io/finalizer"]
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
        # Defaults were applied by the API server from the generated schema.
        assert obj["spec"]["kafka"]["retentionHours"] == 168
        assert obj["spec"]["embedding"]["dimension"] == 1024
        assert obj["spec"]["nlp"]["backend"] == "lexicon"
        # Children: fixed names, owner references, the spec's settings.
        sel = f"medsearch.io/index={name}"
        cms = api.list(("v1", "ConfigMap"), ns, sel)
        deps = {d["metadata"]["name"]: d for d in api.list(("apps/v1", "Deployment"), ns, sel)}
        isvcs = api.list(ISVC, ns, sel)
        assert [c["metadata"]["name"] for c in cms] == [f"{name}-config"]
        assert sorted(deps) == [f"{name}-dicom-worker", f"{name}-report-worker"]
        assert [i["metadata"]["name"] for i in isvcs] == [f"{name}-embedder"]
        for child in [*cms, *deps.values(), *isvcs]:
            (ref,) = child["metadata"]["ownerReferences"]
            assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == ("MedicalSearchIndex", name, uid, True)
            assert any(m["manager"] == "medsearch-operator" and m["operation"] == "Apply"
                       for m in child["metadata"]["managedFields"])
        cm = cms[0]["data"]
        assert cm["MEDSEARCH_KAFKA_BOOTSTRAP"] == kafka_bootstrap
        assert cm["MEDSEARCH_INDEX"] == name
        assert yaml.safe_load(cm["index.yaml"])["spec"]["kafka"]["partitions"] == 2
        dicom = deps[f"{name}-dicom-worker"]
        assert dicom["spec"]["replicas"] == 1
        (container,) = dicom["spec"]["template"]["spec"]["containers"]
        assert container["image"] == "registry.example/medsearch-workers:test"
        assert container["resources"]["requests"] == {"cpu": "250m", "memory": "1Gi"}
        # Index-level options reach the workers through the mounted index.yaml only.
        assert yaml.safe_load(cm["index.yaml"])["spec"]["workers"]["dicom"]["batchSize"] == 16
        assert "MEDSEARCH_WORKER_BATCH_SIZE" not in {e["name"] for e in container["env"]}
        assert "medsearch.io/config-checksum" in dicom["spec"]["template"]["metadata"]["annotations"]
        pred = isvcs[0]["spec"]["predictor"]
        assert (pred["minReplicas"], pred["maxReplicas"]) == (1, 1)
        assert pred["batcher"] == {"maxBatchSize": 16, "maxLatency": 5}
        assert pred["containers"][0]["image"] == "registry.example/medsearch-model-server:test"
        # Topics and collections, with the spec's partitions and metric.
        n = names_for(name, ns)
        assert cm["MEDSEARCH_INDEX_NAMESPACE"] == ns
        assert topic_partitions(kafka_bootstrap, n) == {f"{ns}.{name}.dicom": 2, f"{ns}.{name}.reports": 2,
                                                        f"{ns}.{name}.dlq": 2}
        assert collections(milvus_uri, n) == {n.images_collection: "COSINE", n.reports_collection: "COSINE"}
        # Nothing runs the pods here: the parts depending on them are honestly not ready.
        api.wait_condition(ns, name, "WorkersReady", "False", "DeploymentsProgressing")
        api.wait_condition(ns, name, "PredictorReady", "Unknown", "InferenceServicePending")
        assert api.condition(ns, name, "Ready")["status"] != "True"  # type: ignore[index]
        api.make_children_ready(ns, name)
        api.wait_condition(ns, name, "PredictorReady", "True", "InferenceServiceReady")
        api.wait_condition(ns, name, "WorkersReady", "True", "DeploymentsAvailable")
        ready = api.wait_condition(ns, name, "Ready", "True", "AllComponentsReady")
        assert ready["observedGeneration"] == obj["metadata"]["generation"]
        final = api.get(MSI, ns, name)
        assert final is not None and final["status"]["images"] == 0 and final["status"]["reports"] == 0
        # Events on transitions, and the printer columns.
        events = api.list(("v1", "Event"), ns, "")
        reasons = {e["reason"] for e in events if e["involvedObject"]["name"] == name}
        assert {"TopicsReady", "CollectionsReady", "AllComponentsReady"} <= reasons, reasons
        out = subprocess.run([str(kubectl_binary), "--kubeconfig", str(api.kube.kubeconfig), "get", "msi", name,
                              "-n", ns], capture_output=True, text=True, timeout=30, check=True).stdout
        header, row = out.splitlines()
        assert header.split() == ["NAME", "READY", "IMAGES", "REPORTS", "AGE"]
        assert row.split()[:4] == [name, "True", "0", "0"]


def test_spec_change_updates_children_and_reports_refused_changes(
        api: Api, ns: str, run_operator: Any, kafka_bootstrap: str, milvus_uri: str) -> None:
    name = unique_name()
    with run_operator(ns):
        api.create(sample(name, ns))
        api.wait_condition(ns, name, "TopicsReady", "True")
        dep_name = f"{name}-dicom-worker"
        before = api.get(("apps/v1", "Deployment"), ns, dep_name)
        assert before is not None
        old_checksum = before["spec"]["template"]["metadata"]["annotations"]["medsearch.io/config-checksum"]
        api.patch(MSI, ns, name, {"spec": {
            "workers": {"dicom": {"replicas": 3, "batchSize": 8, "resources": {"requests": {"cpu": "500m"}}}},
            "predictor": {"maxReplicas": 2, "gpu": 1, "nodeSelector": {"gpu": "true"},
                          "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
            "nlp": {"backend": "transformers", "model": "/models/ner"}}})

        def dicom_updated() -> dict[str, Any] | None:
            d = api.get(("apps/v1", "Deployment"), ns, dep_name)
            return d if d and d["spec"]["replicas"] == 3 else None

        dep = wait_for(dicom_updated, timeout=30, what="dicom worker scaled to 3")
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        assert container["resources"]["requests"] == {"cpu": "500m", "memory": "1Gi"}  # a merge patch
        assert dep["spec"]["template"]["metadata"]["annotations"]["medsearch.io/config-checksum"] != old_checksum
        cm = api.get(("v1", "ConfigMap"), ns, f"{name}-config")
        assert cm is not None
        index_spec = yaml.safe_load(cm["data"]["index.yaml"])["spec"]
        assert index_spec["nlp"]["backend"] == "transformers" and index_spec["workers"]["dicom"]["batchSize"] == 8
        assert "MEDSEARCH_NLP_BACKEND" not in cm["data"]
        pred = api.get(ISVC, ns, f"{name}-embedder")["spec"]["predictor"]  # type: ignore[index]
        assert pred["maxReplicas"] == 2
        assert pred["nodeSelector"] == {"gpu": "true"}
        assert pred["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        assert pred["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"

        # Topics follow what Kafka allows: shrinking is refused by name, growth needs CreatePartitions
        # (Tansu 0.6 has none: the condition says so instead of pretending).
        api.patch(MSI, ns, name, {"spec": {"kafka": {"partitions": 1}}})
        shrink = api.wait_condition(ns, name, "TopicsReady", "False", "PartitionShrinkRefused")
        assert "spec.kafka.partitions" in shrink["message"]
        api.patch(MSI, ns, name, {"spec": {"kafka": {"partitions": 4}}})

        def grown_or_refused() -> str | None:
            c = api.condition(ns, name, "TopicsReady") or {}
            if c.get("reason") == "PartitionGrowthUnsupported":
                assert "spec.kafka.partitions" in c["message"]
                assert set(topic_partitions(kafka_bootstrap, names_for(name, ns)).values()) == {2}
                return "refused"
            grown = set(topic_partitions(kafka_bootstrap, names_for(name, ns)).values()) == {4}
            if c.get("status") == "True" and grown:
                return "grown"
            return None

        wait_for(grown_or_refused, timeout=30, what="partition growth applied or refused by name")
        api.patch(MSI, ns, name, {"spec": {"kafka": {"partitions": 2}}})
        api.wait_condition(ns, name, "TopicsReady", "True")

        # An incompatible collection change is refused with the field named, never a silent drop.
        api.patch(MSI, ns, name, {"spec": {"images": {"metric": "L2"}}})
        refused = api.wait_condition(ns, name, "CollectionsReady", "False", "IncompatibleMetric")
        assert "spec.images.metric" in refused["message"]
        assert api.condition(ns, name, "Ready")["status"] == "False"  # type: ignore[index]
        assert collections(milvus_uri, names_for(name, ns))[names_for(name, ns).images_collection] == "COSINE"
        obj = api.get(MSI, ns, name)
        assert obj is not None and obj["status"]["observedGeneration"] == obj["metadata"]["generation"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"spec": {"kafka": {"partitions": 0}}}, "spec.kafka.partitions"),
        ({"spec": {"images": {"indexType": "IVF_PQ"}}}, "spec.images.indexType"),
        ({"spec": {"embedding": {"dimension": 512}}}, "spec.embedding.dimension"),
        ({"spec": {"deletionPolicy": "Orphan"}}, "spec.deletionPolicy"),
        ({"spec": {"predictor": {"gpu": 9}}}, "spec.predictor.gpu"),
        ({"metadata": {"name": "Bad_Name"}}, "metadata.name"),
    ],
)
def test_invalid_objects_are_rejected_with_the_field(api: Api, ns: str, change: dict[str, Any], field: str) -> None:
    from kubernetes.dynamic.exceptions import DynamicApiError

    body = sample(unique_name("bad"), ns)
    for key, value in change.items():
        if key == "metadata":
            body["metadata"].update(value)
        else:
            for section, sub in value.items():
                body["spec"][section] = {**body["spec"].get(section, {}), **sub} if isinstance(sub, dict) else sub
    with pytest.raises(DynamicApiError) as err:
        api.create(body)
    assert err.value.status == 422
    assert field in str(err.value.body), err.value.body


def test_kubectl_server_dry_run_of_the_samples(cluster: Any, ns: str, kubectl_binary: Path) -> None:
    for path in sorted(SAMPLES.glob("*.yaml")):
        run = subprocess.run([str(kubectl_binary), "--kubeconfig", str(cluster.kubeconfig), "apply",
                              "--dry-run=server", "-n", ns, "-f", str(path)], capture_output=True, text=True,
                             timeout=60)
        assert run.returncode == 0, f"{path.name}: {run.stderr}"
        assert "(server dry run)" in run.stdout
    bad = yaml.safe_dump(sample("bad", ns, kafka={"partitions": 1000}))
    run = subprocess.run([str(kubectl_binary), "--kubeconfig", str(cluster.kubeconfig), "apply", "--dry-run=server",
                          "-f", "-"], input=bad, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "spec.kafka.partitions" in run.stderr


def test_deletion_policy_delete_drops_and_retain_keeps(
        api: Api, ns: str, run_operator: Any, kafka_bootstrap: str, milvus_uri: str, postgres_dsn: str) -> None:
    drop, keep = unique_name("drop"), unique_name("keep")
    dropped, kept = names_for(drop, ns), names_for(keep, ns)
    with run_operator(ns):
        api.create(sample(drop, ns, deletionPolicy="Delete"))
        api.create(sample(keep, ns, deletionPolicy="Retain"))
        for name in (drop, keep):
            api.wait_condition(ns, name, "TopicsReady", "True")
            api.wait_condition(ns, name, "DatabaseReady", "True")
            api.wait_condition(ns, name, "CollectionsReady", "True")
        assert schemas(postgres_dsn, dropped, kept) == {dropped, kept}
        api.delete(MSI, ns, drop)
        api.delete(MSI, ns, keep)
        for name in (drop, keep):
            wait_for(lambda n=name: api.get(MSI, ns, n) is None, timeout=60, what=f"{name} deleted")
        events = {(e["involvedObject"]["name"], e["reason"]) for e in api.list(("v1", "Event"), ns, "")}
        assert {(drop, "ResourcesDeleted"), (keep, "ResourcesRetained")} <= events
    assert topic_partitions(kafka_bootstrap, dropped) == {}
    assert collections(milvus_uri, dropped) == {}
    assert len(topic_partitions(kafka_bootstrap, kept)) == 3
    assert len(collections(milvus_uri, kept)) == 2
    assert schemas(postgres_dsn, dropped, kept) == {kept}


def schemas(dsn: str, *indexes: IndexNames) -> set[IndexNames]:
    """Which of ``indexes`` have their PostgreSQL schema."""
    from medsearch import pgstore

    with pgstore.connect(dsn) as conn:
        found = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}
    return {i for i in indexes if i.pg_schema in found}


def external_names(n: IndexNames) -> set[str]:
    return {*n.topics, n.audit_topic, n.dicom_consumer_group, n.report_consumer_group, *n.collections, n.pg_schema,
            n.object_prefix}


def test_same_name_in_two_namespaces_shares_nothing_and_delete_keeps_the_other(
        api: Api, cluster: Any, run_operator: Any, kafka_bootstrap: str, milvus_uri: str, postgres_dsn: str) -> None:
    from kafka import KafkaProducer
    from medsearch_dev.localstack.stack import topic_message_count

    ns_a, ns_b = f"t-{secrets.token_hex(4)}", f"t-{secrets.token_hex(4)}"
    for n in (ns_a, ns_b):
        cluster.create_namespace(n)
    name = unique_name()
    a, b = names_for(name, ns_a), names_for(name, ns_b)
    assert not external_names(a) & external_names(b)
    with run_operator(ns_a, ns_b):
        uids = {n: api.create(sample(name, n, deletionPolicy="Delete"))["metadata"]["uid"] for n in (ns_a, ns_b)}
        for n in (ns_a, ns_b):
            for cond in ("TopicsReady", "DatabaseReady", "CollectionsReady"):
                api.wait_condition(n, name, cond, "True")
        # What the operator reports and renders for each index is that index's own names.
        for n, names in ((ns_a, a), (ns_b, b)):
            status = (api.get(MSI, n, name) or {})["status"]
            assert (status["topics"], status["collections"], status["databaseSchema"]) == (
                list(names.topics), list(names.collections), names.pg_schema)
            (cm,) = api.list(("v1", "ConfigMap"), n, f"medsearch.io/index={name}")
            assert (cm["data"]["MEDSEARCH_INDEX"], cm["data"]["MEDSEARCH_INDEX_NAMESPACE"]) == (name, n)
            children = [*api.list(("apps/v1", "Deployment"), n, f"medsearch.io/index={name}"),
                        *api.list(ISVC, n, f"medsearch.io/index={name}")]
            assert len(children) == 3
            assert {c["metadata"]["ownerReferences"][0]["uid"] for c in children} == {uids[n]}
        # Both exist in the shared services, apart.
        assert len(topic_partitions(kafka_bootstrap, a)) == len(topic_partitions(kafka_bootstrap, b)) == 3
        assert len(collections(milvus_uri, a)) == len(collections(milvus_uri, b)) == 2
        assert schemas(postgres_dsn, a, b) == {a, b}
        # B holds data: a message on its topic, a row in its PostgreSQL schema.
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        producer.send(b.dicom_topic, value=b"{}").get(timeout=30)
        producer.close()
        from medsearch import pgstore

        with pgstore.connect(postgres_dsn) as conn, conn.transaction():
            conn.execute(f'INSERT INTO "{b.pg_schema}".ingest_ledger (kind, key, subject, sha256, uri, topic, '
                         "message, state) VALUES ('dicom', 'k', 's', 'h', 'u', 't', '{}', 'published')")
        api.delete(MSI, ns_a, name)
        wait_for(lambda: api.get(MSI, ns_a, name) is None, timeout=60, what=f"{ns_a}/{name} deleted")
        events = {(e["involvedObject"]["name"], e["reason"]) for e in api.list(("v1", "Event"), ns_a, "")}
        assert (name, "ResourcesDeleted") in events
        # A's data is gone; B's is untouched and B's operator keeps it ready.
        assert topic_partitions(kafka_bootstrap, a) == {}
        assert collections(milvus_uri, a) == {}
        assert schemas(postgres_dsn, a, b) == {b}
        assert len(topic_partitions(kafka_bootstrap, b)) == 3
        assert len(collections(milvus_uri, b)) == 2
        assert topic_message_count(kafka_bootstrap, b.dicom_topic) == 1
        with pgstore.connect(postgres_dsn) as conn:
            assert conn.execute(f'SELECT count(*) FROM "{b.pg_schema}".ingest_ledger').fetchone() == (1,)
        assert api.condition(ns_b, name, "TopicsReady")["status"] == "True"  # type: ignore[index]
        api.delete(MSI, ns_b, name)
        wait_for(lambda: api.get(MSI, ns_b, name) is None, timeout=60, what=f"{ns_b}/{name} deleted")
    assert topic_partitions(kafka_bootstrap, b) == {} and schemas(postgres_dsn, b) == set()


def test_broker_outage_shows_and_heals(api: Api, ns: str, run_operator: Any, service_logs: Path) -> None:
    port = procs.free_port()
    bootstrap = f"127.0.0.1:{port}"
    name = unique_name("outage")

    def broker() -> Any:
        return procs.tansu(service_logs / "outage", port=port)

    with run_operator(ns, MEDSEARCH_KAFKA_BOOTSTRAP=bootstrap):
        with broker():
            api.create(sample(name, ns))
            api.wait_condition(ns, name, "TopicsReady", "True")
        # The broker is gone (and, memory-backed, so are its topics).
        down = api.wait_condition(ns, name, "TopicsReady", "False", "BrokerUnreachable", timeout=60)
        assert bootstrap in down["message"] or "Kafka" in down["message"]
        ready = api.wait_condition(ns, name, "Ready", "False", "BrokerUnreachable")
        assert ready["status"] == "False"
        assert api.condition(ns, name, "CollectionsReady")["status"] == "True"  # type: ignore[index]
        with broker():
            api.wait_condition(ns, name, "TopicsReady", "True", timeout=60)
            assert len(topic_partitions(bootstrap, names_for(name, ns))) == 3
        events = api.list(("v1", "Event"), ns, "")
        assert any(e["reason"] == "BrokerUnreachable" and e["type"] == "Warning" for e in events)


def test_operator_restart_mid_reconcile_converges_without_duplicates(
        api: Api, ns: str, run_operator: Any, kafka_bootstrap: str, milvus_uri: str) -> None:
    name = unique_name("restart")
    with run_operator(ns):
        api.create(sample(name, ns))
        # Stop as soon as the first reconcile has started (conditions written, children on their way).
        wait_for(lambda: api.condition(ns, name, "Ready"), timeout=30, what="first status write")
    with run_operator(ns):
        api.patch(MSI, ns, name, {"spec": {"workers": {"report": {"replicas": 2}}}})
        api.wait_condition(ns, name, "TopicsReady", "True")
        wait_for(lambda: (api.get(("apps/v1", "Deployment"), ns, f"{name}-report-worker") or {})
                 .get("spec", {}).get("replicas") == 2, timeout=30, what="report worker scaled to 2")
        api.make_children_ready(ns, name)
        api.wait_condition(ns, name, "Ready", "True", timeout=60)
    obj = api.get(MSI, ns, name)
    assert obj is not None
    assert obj["metadata"]["finalizers"] == ["medsearch.io/finalizer"]
    types = [c["type"] for c in obj["status"]["conditions"]]
    assert sorted(types) == sorted(set(types)) == sorted(
        ["Ready", "TopicsReady", "DatabaseReady", "CollectionsReady", "PredictorReady", "WorkersReady"])
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    sel = f"medsearch.io/index={name}"
    assert len(api.list(("v1", "ConfigMap"), ns, sel)) == 1
    deps = api.list(("apps/v1", "Deployment"), ns, sel)
    assert sorted(d["metadata"]["name"] for d in deps) == [f"{name}-dicom-worker", f"{name}-report-worker"]
    assert {d["metadata"]["name"]: d["spec"]["replicas"] for d in deps}[f"{name}-report-worker"] == 2
    assert len(api.list(ISVC, ns, sel)) == 1
    assert sorted(topic_partitions(kafka_bootstrap, names_for(name, ns))) == sorted(names_for(name, ns).topics)
    assert len(collections(milvus_uri, names_for(name, ns))) == 2


def test_operator_entry_point_runs_as_a_process(
        api: Api, ns: str, operator_kubeconfig: Path, kafka_bootstrap: str, milvus_uri: str, postgres_dsn: str,
        service_logs: Path) -> None:
    """``python -m medsearch_operator``: the real process, its liveness endpoint, a clean SIGTERM."""
    import sys

    import httpx

    health = procs.free_port()
    env = {**os.environ, **OPERATOR_ENV, "KUBECONFIG": str(operator_kubeconfig),
           "MEDSEARCH_KAFKA_BOOTSTRAP": kafka_bootstrap, "MEDSEARCH_MILVUS_URI": milvus_uri,
           "MEDSEARCH_POSTGRES_DSN": postgres_dsn, "MEDSEARCH_OPERATOR_NAMESPACE": ns,
           "MEDSEARCH_OPERATOR_HEALTH_PORT": str(health), "MEDSEARCH_OPERATOR_HEALTH_HOST": "127.0.0.1"}
    log_path = service_logs / f"operator-{ns}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "medsearch_operator"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: procs.http_ready(f"http://127.0.0.1:{health}/healthz"), timeout=30,
                 what="operator /healthz")
        name = unique_name("proc")
        api.create(sample(name, ns))
        api.wait_condition(ns, name, "TopicsReady", "True")
        api.wait_condition(ns, name, "CollectionsReady", "True")
        assert httpx.get(f"http://127.0.0.1:{health}/healthz", timeout=5).status_code == 200
    finally:
        proc.terminate()
        code = proc.wait(timeout=30)
    assert code == 0, log_path.read_text()[-3000:]


def test_periodic_resync_repairs_drift(api: Api, ns: str, run_operator: Any, kafka_bootstrap: str) -> None:
    name = unique_name("drift")
    deployment = ("apps/v1", "Deployment")
    with run_operator(ns):
        api.create(sample(name, ns))
        api.wait_condition(ns, name, "TopicsReady", "True")
        wait_for(lambda: api.get(deployment, ns, f"{name}-report-worker"), timeout=30, what="report worker")
        # Someone deletes a child, scales another by hand, and drops a topic: no spec change follows.
        api.delete(deployment, ns, f"{name}-dicom-worker")
        api.patch(deployment, ns, f"{name}-report-worker", {"spec": {"replicas": 5}})
        admin = provision.kafka_admin(kafka_bootstrap)
        try:
            admin.delete_topics([names_for(name, ns).dlq_topic])
        finally:
            admin.close()

        def repaired() -> bool:
            dicom = api.get(deployment, ns, f"{name}-dicom-worker")
            report = api.get(deployment, ns, f"{name}-report-worker") or {}
            return (dicom is not None and report.get("spec", {}).get("replicas") == 1
                    and names_for(name, ns).dlq_topic in topic_partitions(kafka_bootstrap, names_for(name, ns)))

        wait_for(repaired, timeout=30, what="resync to restore the Deployment, the replicas and the topic")


SCALED_OBJECT_CRD_FILE = Path(__file__).parent / "manifests" / "scaledobject-crd.yaml"


def test_autoscaling_falls_back_without_keda_and_creates_scaled_objects_with_it(
        api: Api, ns: str, run_operator: Any, cluster: Any) -> None:
    from kubernetes import client

    ext = client.ApiextensionsV1Api(cluster.api_client())
    crd = load_docs(SCALED_OBJECT_CRD_FILE)[0]
    name = unique_name("auto")
    spec = {"kafka": {"partitions": 2, "replicationFactor": 1},
            "workers": {"dicom": {"replicas": 1, "autoscaling": {"minReplicas": 1, "maxReplicas": 5,
                                                                 "lagThreshold": 20}}}}
    dep_name = f"{name}-dicom-worker"
    try:
        with run_operator(ns):
            api.create(sample(name, ns, **spec))
            cond = api.wait_condition(ns, name, "AutoscalingReady", "False", "KedaNotInstalled")
            assert "replicas" in cond["message"]
            dep = api.get(("apps/v1", "Deployment"), ns, dep_name)
            assert dep is not None and dep["spec"]["replicas"] == 1
            # KEDA arrives: the next resync applies the ScaledObject under the shipped ClusterRole.
            cluster.apply_manifest(crd)
            wait_for(lambda: any(c.type == "Established" and c.status == "True" for c in
                                 (ext.read_custom_resource_definition(crd["metadata"]["name"]).status.conditions
                                  or [])), timeout=30, what="ScaledObject CRD established")
            api.wait_condition(ns, name, "AutoscalingReady", "True", "ScaledObjectsApplied", timeout=60)
            api.dyn.resources.invalidate_cache()
            scaled = api.get(("keda.sh/v1alpha1", "ScaledObject"), ns, f"{dep_name}-lag")
            assert scaled is not None
            assert scaled["spec"]["scaleTargetRef"]["name"] == dep_name
            assert scaled["spec"]["maxReplicaCount"] == 2  # capped at the partitions
            assert scaled["metadata"]["ownerReferences"][0]["name"] == name
            assert api.get(("keda.sh/v1alpha1", "ScaledObject"), ns, f"{name}-report-worker-lag") is None
    finally:
        with contextlib.suppress(Exception):
            ext.delete_custom_resource_definition(crd["metadata"]["name"])


def test_receiver_enabled_creates_its_deployment_and_service(api: Api, ns: str, run_operator: Any) -> None:
    """spec.receiver: the operator (bound only to the shipped ClusterRole) server-side-applies the receiver's
    Deployment and Service; the API server accepts the generated schema's new fields."""
    name = unique_name("rx")
    with run_operator(ns):
        created = api.create(sample(name, ns, receiver={"enabled": True, "aeTitle": "CHESTAI", "port": 11112,
                                                        "allowedAeTitles": ["PACS1"], "serviceType": "NodePort"},
                                    privacy={"deidentify": "basic"}))
        uid = created["metadata"]["uid"]
        dep = wait_for(lambda: api.get(("apps/v1", "Deployment"), ns, f"{name}-dicom-receiver"), timeout=60,
                       what="receiver Deployment")
        svc = wait_for(lambda: api.get(("v1", "Service"), ns, f"{name}-dicom-receiver"), timeout=60,
                       what="receiver Service")
        for child in (dep, svc):
            (ref,) = child["metadata"]["ownerReferences"]
            assert (ref["kind"], ref["uid"]) == ("MedicalSearchIndex", uid)
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["python", "-m", "medsearch.cli", "receive"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["MEDSEARCH_RECEIVER_AE_TITLE"] == "CHESTAI" and env["MEDSEARCH_RECEIVER_ALLOWED_AETS"] == '["PACS1"]'
        assert svc["spec"]["type"] == "NodePort" and svc["spec"]["ports"][0]["port"] == 11112
        obj = api.get(MSI, ns, name)
        assert obj is not None and obj["spec"]["privacy"]["deidentify"] == "basic"
        assert obj["spec"]["privacy"]["quarantineBurnedInAnnotation"] is True  # defaulted by the API server
