"""Both charts against a real kube-apiserver (the ``kube`` fixture, v1.20): ``helm install`` of the CRD chart
and of the main chart (dependencies disabled) creates the expected objects, the operator's RBAC is granted
by the real RBAC authorizer, ``helm upgrade`` with changed values updates them (and rejects a values typo
without touching the release), ``helm uninstall`` removes them and keeps the CRD.

No kubelet runs there: Deployments are stored, pods never start, so nothing waits for readiness and the
``helm test`` hook is checked as a registered hook, not executed."""

from __future__ import annotations

import importlib.util
import json
import secrets
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.k8s


def _chartkit() -> ModuleType:
    """tests/render/chartkit.py (loaded by path: the test directories are not packages)."""
    path = Path(__file__).resolve().parents[1] / "render" / "chartkit.py"
    spec = importlib.util.spec_from_file_location("medsearch_chartkit", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


chartkit = _chartkit()
CRD_NAME = "medicalsearchindexes.medsearch.io"


class Helm:
    def __init__(self, binary: Path, kubeconfig: Path, home: Path) -> None:
        self.binary, self.kubeconfig = binary, kubeconfig
        self.env = {"HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data"),
                    "HELM_CACHE_HOME": str(home / "cache")}

    def __call__(self, *args: str) -> str:
        return str(chartkit.helm(self.binary, *args, "--kubeconfig", str(self.kubeconfig), env=self.env))


@pytest.fixture(scope="module")
def helm(helm_binary: Path, kube: Any, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(helm_binary, kube.kubeconfig, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="module")
def charts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("charts")
    return {"main": chartkit.stage_chart(chartkit.MAIN_CHART, root),
            "crds": chartkit.stage_chart(chartkit.CRDS_CHART, root)}


@pytest.fixture(scope="module")
def namespaces(kube: Any) -> dict[str, str]:
    suffix = secrets.token_hex(3)
    names = {"release": f"ms-helm-{suffix}", "watched": f"ms-watched-{suffix}"}
    for ns in names.values():
        kube.create_namespace(ns)
    return names


@pytest.fixture(scope="module")
def api(kube: Any) -> Any:
    from kubernetes import client, dynamic

    c = kube.api_client()
    return {"core": client.CoreV1Api(c), "apps": client.AppsV1Api(c), "rbac": client.RbacAuthorizationV1Api(c),
            "ext": client.ApiextensionsV1Api(c), "custom": client.CustomObjectsApi(c),
            "authz": client.AuthorizationV1Api(c), "net": client.NetworkingV1Api(c),
            "dynamic": dynamic.DynamicClient(c)}


def _get(api: Any, api_version: str, kind: str, name: str, ns: str) -> dict[str, Any]:
    """Objects of API versions the typed client no longer has (policy/v1beta1, autoscaling/v2beta2)."""
    res = api["dynamic"].resources.get(api_version=api_version, kind=kind)
    return dict(res.get(name=name, namespace=ns).to_dict())


def _status(helm: Helm, release: str, ns: str) -> dict[str, Any]:
    return dict(json.loads(helm("status", release, "-n", ns, "-o", "json")))


def _gone(call: Any, *args: Any) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        call(*args)
    except ApiException as err:
        return err.status == 404
    return False


def _can(api: Any, sa: str, sa_ns: str, verb: str, group: str, resource: str, ns: str | None,
         subresource: str = "") -> bool:
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": f"system:serviceaccount:{sa_ns}:{sa}",
                       "groups": ["system:serviceaccounts", f"system:serviceaccounts:{sa_ns}"],
                       "resourceAttributes": {"verb": verb, "group": group, "resource": resource,
                                              "subresource": subresource, **({"namespace": ns} if ns else {})}}}
    return bool(api["authz"].create_subject_access_review(review).status.allowed)


def test_install_upgrade_uninstall(helm: Helm, charts: dict[str, Path], namespaces: dict[str, str], api: Any) -> None:
    ns, watched = namespaces["release"], namespaces["watched"]

    # --- the CRD chart (take ownership: another test module may have applied the same CRD already)
    helm("upgrade", "--install", "medsearch-crds", str(charts["crds"]), "-n", ns, "--take-ownership")
    crd = api["ext"].read_custom_resource_definition(CRD_NAME)
    assert crd.metadata.annotations["meta.helm.sh/release-name"] == "medsearch-crds"
    assert crd.metadata.annotations["helm.sh/resource-policy"] == "keep"
    operator_crd = yaml.safe_load(chartkit.OPERATOR_CRD.read_text())
    stored = api["ext"].api_client.sanitize_for_serialization(crd)
    assert stored["spec"]["versions"][0]["schema"] == operator_crd["spec"]["versions"][0]["schema"]

    # --- the main chart: defaults + a default index, dependencies disabled
    out = helm("install", "ms", str(charts["main"]), "-n", ns,
               "--set", "defaultIndex.create=true", "--set", "defaultIndex.name=chest",
               "--set", "defaultIndex.spec.kafka.partitions=2",
               "--set-string", "gateway.image.tag=itest1")
    assert "GraphQL gateway" in out   # NOTES.txt rendered
    assert _status(helm, "ms", ns)["info"]["status"] == "deployed"

    deployments = {d.metadata.name: d for d in api["apps"].list_namespaced_deployment(ns).items}
    assert set(deployments) == {"ms-medsearch-operator", "ms-medsearch-gateway"}
    gateway = deployments["ms-medsearch-gateway"]
    assert gateway.spec.replicas == 2
    assert gateway.spec.template.spec.containers[0].image == "ghcr.io/medsearch/medsearch-api:itest1"
    assert gateway.spec.template.spec.security_context.run_as_non_root is True
    assert gateway.spec.template.spec.security_context.seccomp_profile.type == "RuntimeDefault"
    first_checksum = gateway.spec.template.metadata.annotations["checksum/config"]
    cm = api["core"].read_namespaced_config_map("ms-medsearch-config", ns).data
    assert cm["MEDSEARCH_INDEX"] == "chest" and cm["MEDSEARCH_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert api["core"].read_namespaced_service("ms-medsearch-gateway", ns).spec.ports[0].port == 80
    api["core"].read_namespaced_secret("ms-medsearch-secrets", ns)
    api["core"].read_namespaced_service_account("ms-medsearch-operator", ns)
    # a 1.20 server has no policy/v1: the chart fell back to policy/v1beta1
    pdb = _get(api, "policy/v1beta1", "PodDisruptionBudget", "ms-medsearch-gateway", ns)
    assert pdb["spec"]["minAvailable"] == 1
    msi = api["custom"].get_namespaced_custom_object("medsearch.io", "v1alpha1", ns, "medicalsearchindexes", "chest")
    assert msi["spec"]["kafka"]["partitions"] == 2
    assert msi["spec"]["deletionPolicy"] == "Retain"   # the CRD's defaults were applied by the server
    hooks = list(yaml.safe_load_all(helm("get", "hooks", "ms", "-n", ns)))
    assert [h["metadata"]["name"] for h in hooks if h] == ["ms-medsearch-test-readyz"]

    # --- the operator's RBAC, asked of the real authorizer
    role = api["rbac"].read_cluster_role("ms-medsearch-operator")
    assert {r for rule in role.rules for r in rule.resources} >= {"medicalsearchindexes", "inferenceservices"}
    sa = "ms-medsearch-operator"
    assert _can(api, sa, ns, "watch", "medsearch.io", "medicalsearchindexes", None)
    assert _can(api, sa, ns, "patch", "medsearch.io", "medicalsearchindexes", watched, "status")
    assert _can(api, sa, ns, "create", "serving.kserve.io", "inferenceservices", watched)
    assert _can(api, sa, ns, "patch", "apps", "deployments", watched)
    assert not _can(api, sa, ns, "delete", "", "secrets", watched)
    assert not _can(api, "ms-medsearch-gateway", ns, "list", "medsearch.io", "medicalsearchindexes", ns)

    # --- upgrade with changed values: config, replicas, ingress, HPA, a single watched namespace
    helm("upgrade", "ms", str(charts["main"]), "-n", ns, "--reuse-values",
         "--set", "externalKafka.brokerList=kafka-0.data.svc:9092",
         "--set", "gateway.ingress.enabled=true", "--set", "gateway.autoscaling.enabled=true",
         "--set", f"operator.watchNamespace={watched}")
    assert _status(helm, "ms", ns)["version"] == 2
    cm = api["core"].read_namespaced_config_map("ms-medsearch-config", ns).data
    assert cm["MEDSEARCH_KAFKA_BOOTSTRAP"] == "kafka-0.data.svc:9092"
    gateway = api["apps"].read_namespaced_deployment("ms-medsearch-gateway", ns)
    assert gateway.spec.template.metadata.annotations["checksum/config"] != first_checksum   # pods roll
    assert gateway.spec.template.spec.containers[0].image == "ghcr.io/medsearch/medsearch-api:itest1"
    assert api["net"].read_namespaced_ingress("ms-medsearch-gateway", ns).spec.rules[0].host == "medsearch.local"
    hpa = _get(api, "autoscaling/v2beta2", "HorizontalPodAutoscaler", "ms-medsearch-gateway", ns)
    assert hpa["spec"]["maxReplicas"] == 10
    operator = api["apps"].read_namespaced_deployment("ms-medsearch-operator", ns)
    env = {e.name: e.value for e in operator.spec.template.spec.containers[0].env}
    assert env["MEDSEARCH_OPERATOR_NAMESPACE"] == watched
    assert _can(api, sa, ns, "patch", "apps", "deployments", watched)        # the Role in the watched namespace
    assert not _can(api, sa, ns, "patch", "apps", "deployments", ns)         # nowhere else any more
    assert _can(api, sa, ns, "watch", "apiextensions.k8s.io", "customresourcedefinitions", None)

    # --- a typo is rejected by the schema and leaves the release alone
    with pytest.raises(chartkit.HelmError, match="replicCount"):
        helm("upgrade", "ms", str(charts["main"]), "-n", ns, "--reuse-values", "--set", "gateway.replicCount=3")
    status = _status(helm, "ms", ns)
    assert (status["version"], status["info"]["status"]) == (2, "deployed")

    # --- uninstall: everything goes, the CRD stays (resource-policy keep)
    helm("uninstall", "ms", "-n", ns)
    assert _gone(api["apps"].read_namespaced_deployment, "ms-medsearch-gateway", ns)
    assert _gone(api["apps"].read_namespaced_deployment, "ms-medsearch-operator", ns)
    assert _gone(api["rbac"].read_cluster_role, "ms-medsearch-operator")
    assert _gone(api["rbac"].read_namespaced_role, "ms-medsearch-operator", watched)
    assert _gone(api["core"].read_namespaced_config_map, "ms-medsearch-config", ns)
    assert _gone(api["custom"].get_namespaced_custom_object, "medsearch.io", "v1alpha1", ns,
                 "medicalsearchindexes", "chest")
    helm("uninstall", "medsearch-crds", "-n", ns)
    assert api["ext"].read_custom_resource_definition(CRD_NAME).metadata.name == CRD_NAME


def test_ci_values_install(helm: Helm, charts: dict[str, Path], namespaces: dict[str, str], api: Any) -> None:
    """Every ci/*-values.yaml installs into the real API server (server-side validation of every object)."""
    ns = namespaces["release"]
    helm("upgrade", "--install", "medsearch-crds", str(charts["crds"]), "-n", ns, "--take-ownership")
    try:
        for values in sorted((chartkit.MAIN_CHART / "ci").glob("*-values.yaml")):
            release = "ci-" + values.name.removesuffix("-values.yaml")[:20]
            extra = ["--set", f"operator.watchNamespace={namespaces['watched']}"] if "ingress" in values.name else []
            helm("install", release, str(charts["main"]), "-n", ns, "--values", str(values), *extra)
            assert _status(helm, release, ns)["info"]["status"] == "deployed", values.name
            helm("uninstall", release, "-n", ns)
    finally:
        helm("uninstall", "medsearch-crds", "-n", ns)
