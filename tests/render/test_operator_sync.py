"""The charts and the operator agree: same CRD, same RBAC rules, and what the chart configures (images, env,
the default index) makes the operator build children that validate (the InferenceService and the KEDA
ScaledObjects against the types KServe and KEDA publish, see crdmodels.py; Deployments/ConfigMaps with
kubernetes-validate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import chartkit
import pytest
import yaml
from chartkit import (
    MAIN_CHART,
    OPERATOR_RBAC,
    by_kind,
    one,
    pod_spec,
    render,
    validate_core,
)
from crdmodels import CRD_MODELS_HINT, keda_errors, keda_models, kserve_errors


def _operator_cluster_role() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(OPERATOR_RBAC.read_text()) if d]
    (role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    return role


def test_rbac_copy_equals_the_operators() -> None:
    copy = MAIN_CHART / "files" / "operator-rbac.yaml"
    assert copy.read_bytes() == OPERATOR_RBAC.read_bytes(), (
        "charts/medsearch/files/operator-rbac.yaml differs from operator/config/rbac/role.yaml: "
        "run `python tests/render/chartkit.py sync`")


def test_rendered_cluster_role_has_exactly_the_operators_rules(helm_bin: str, staged: dict[str, Path]) -> None:
    objs = render(helm_bin, staged["medsearch"])
    assert one(objs, "ClusterRole")["rules"] == _operator_cluster_role()["rules"]
    binding = one(objs, "ClusterRoleBinding")
    sa = one(objs, "ServiceAccount", "-operator")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": "medsearch"}]
    assert pod_spec(one(objs, "Deployment", "-operator"))["serviceAccountName"] == sa["metadata"]["name"]


def test_namespaced_rbac_keeps_every_rule(helm_bin: str, staged: dict[str, Path]) -> None:
    """With watchNamespace the rules are split between a ClusterRole and a Role, none lost or duplicated."""
    objs = render(helm_bin, staged["medsearch"], sets={"operator.watchNamespace": "radiology"})
    split = one(objs, "ClusterRole")["rules"] + one(objs, "Role")["rules"]
    expected = _operator_cluster_role()["rules"]
    assert sorted(map(repr, split)) == sorted(map(repr, expected))


def _operator_settings(objs: list[dict[str, Any]]) -> Any:
    """OperatorSettings exactly as the operator pod would read them from the rendered env."""
    from medsearch_operator.settings import OperatorSettings

    env = dict(one(objs, "ConfigMap", "-config")["data"])
    env.update({e["name"]: e["value"] for e in pod_spec(one(objs, "Deployment", "-operator"))["containers"][0]["env"]
                if "value" in e})
    fields = OperatorSettings.model_fields
    prefix = OperatorSettings.model_config["env_prefix"].upper()
    kwargs = {name: env[(prefix + name).upper()] for name in fields if (prefix + name).upper() in env}
    return OperatorSettings(**kwargs)


def test_default_index_children_validate(helm_bin: str, staged: dict[str, Path]) -> None:
    from medsearch_operator.children import Owner, build_children

    from medsearch.contracts.spec import parse_index

    objs = render(helm_bin, staged["medsearch"], namespace="radiology",
                  values_files=[MAIN_CHART / "ci" / "gpu-predictor-values.yaml"],
                  sets={"workers.image.repository": "registry.test/ms/workers", "workers.image.tag": "w1"})
    settings = _operator_settings(objs)
    assert settings.operator_predictor_image == "registry.example.com/medsearch/medsearch-model-server:0.1.0-cuda"
    assert settings.operator_credentials_secret == "medsearch-secrets"
    msi = one(objs, "MedicalSearchIndex")
    index = parse_index(msi)
    owner = Owner(name=index.name, namespace=msi["metadata"]["namespace"], uid="00000000-0000-0000-0000-000000000001")
    children = build_children(owner, index.spec, settings)
    isvcs = by_kind(children, "InferenceService")
    assert len(isvcs) == 1
    assert kserve_errors(isvcs[0]) == []
    container = isvcs[0]["spec"]["predictor"]["containers"][0]
    assert container["image"] == settings.operator_predictor_image
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    deployments = by_kind(children, "Deployment")
    assert len(deployments) == 2
    for child in children:
        if child["kind"] != "InferenceService":
            validate_core(child)
    for dep in deployments:
        c = pod_spec(dep)["containers"][0]
        assert c["image"] == "registry.test/ms/workers:w1"
        secret_refs = [s["secretRef"]["name"] for s in c.get("envFrom", []) if "secretRef" in s]
        assert secret_refs == ["medsearch-secrets"]   # the chart's Secret reaches the workers
    cm = one(children, "ConfigMap")["data"]
    chart_cm = one(objs, "ConfigMap", "-config")["data"]
    for key in ("MEDSEARCH_KAFKA_BOOTSTRAP", "MEDSEARCH_MILVUS_URI", "MEDSEARCH_OBJECT_STORE_URL",
                "MEDSEARCH_MODEL_SERVER_URL"):
        assert cm[key] == chart_cm[key], key


AUTOSCALED_SPEC = {
    "kafka": {"partitions": 6},
    "workers": {"dicom": {"autoscaling": {"minReplicas": 1, "maxReplicas": 8, "lagThreshold": 200}},
                "report": {"autoscaling": {"minReplicas": 0, "maxReplicas": 3, "lagThreshold": 50}}},
    "predictor": {"minReplicas": 1, "maxReplicas": 4, "deploymentMode": "Standard", "scaleMetric": "cpu",
                  "scaleTarget": 70},
}


def _autoscaled_children(**settings: Any) -> list[dict[str, Any]]:
    from medsearch_operator.children import Owner, build_children
    from medsearch_operator.settings import OperatorSettings

    from medsearch.contracts.spec import parse_spec

    ours = OperatorSettings(kafka_bootstrap="kafka:9092", operator_worker_image="registry.test/w:1",
                            operator_predictor_image="registry.test/p:1", **settings)
    return build_children(Owner("chest", "radiology", "00000000-0000-0000-0000-000000000001"),
                          parse_spec(AUTOSCALED_SPEC), ours, keda=True)


@pytest.fixture(scope="module")
def keda() -> Any:
    models = keda_models()
    if models is None:
        pytest.skip(CRD_MODELS_HINT)
    return models


@pytest.mark.parametrize("security", [{}, {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "PLAIN",
                                           "kafka_sasl_username": "medsearch"}])
def test_scaled_objects_and_standard_predictor_validate_against_the_published_types(
        keda: Any, security: dict[str, Any]) -> None:
    children = _autoscaled_children(**security)
    scaled = by_kind(children, "ScaledObject")
    assert len(scaled) == 2
    for obj in scaled:
        assert keda_errors(keda, obj) == [], obj["metadata"]["name"]
        assert obj["spec"]["maxReplicaCount"] <= 6
        assert ("authenticationRef" in obj["spec"]["triggers"][0]) == bool(security)
    (isvc,) = by_kind(children, "InferenceService")
    assert kserve_errors(isvc) == []
    assert isvc["spec"]["predictor"]["scaleMetric"] == "cpu"


def test_keda_validation_rejects_broken_scaled_objects(keda: Any) -> None:
    good = by_kind(_autoscaled_children(), "ScaledObject")[0]
    spec = good["spec"]
    typo = {**good, "spec": {**spec, "maxReplicas": 3}}                          # KEDA's field is maxReplicaCount
    no_target = {**good, "spec": {k: v for k, v in spec.items() if k != "scaleTargetRef"}}
    trigger = {**spec["triggers"][0], "metadata": {**spec["triggers"][0]["metadata"], "lagThreshold": 200}}
    number = {**good, "spec": {**spec, "triggers": [trigger]}}                  # trigger metadata are strings
    assert any("maxReplicas: unknown field" in e for e in keda_errors(keda, typo))
    assert any("scaleTargetRef" in e for e in keda_errors(keda, no_target))
    assert any("lagThreshold" in e for e in keda_errors(keda, number))


def test_kserve_validation_rejects_broken_inference_services() -> None:
    import copy

    (good,) = by_kind(_autoscaled_children(), "InferenceService")
    typo = copy.deepcopy(good)
    typo["spec"]["predictor"]["minReplica"] = 1
    wrong = copy.deepcopy(good)
    wrong["spec"]["predictor"]["maxReplicas"] = "4"
    wrong["spec"]["predictor"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": 1}}
    unnamed = copy.deepcopy(good)
    del unnamed["spec"]["predictor"]["containers"][0]["name"]
    assert any("minReplica: unknown field" in e for e in kserve_errors(typo))
    assert {e.split(":")[0] for e in kserve_errors(wrong)} == {
        "spec.predictor.maxReplicas", "spec.predictor.containers.0.resources.limits.nvidia.com/gpu"}
    assert any("containers.0.name: required" in e for e in kserve_errors(unnamed))


def test_values_schema_spec_is_generated_from_the_crd() -> None:
    import json

    schema = json.loads(chartkit.VALUES_SCHEMA.read_text())
    node = schema
    for key in chartkit.VALUES_SPEC_POINTER:
        node = node[key]
    assert node == chartkit.expected_spec_values_schema(), (
        "defaultIndex.spec in charts/medsearch/values.schema.json is out of date: "
        "run `python tests/render/chartkit.py sync`")


@pytest.mark.parametrize(("sets", "field"), [
    ({"defaultIndex.spec.predictor.gpus": 1}, "gpus"),
    ({"defaultIndex.spec.images.indexType": "IVF_PQ"}, "indexType"),
    ({"defaultIndex.spec.kafka.partitions": 0}, "partitions"),
])
def test_default_index_typos_fail_at_helm_time(helm_bin: str, staged: dict[str, Path], sets: dict[str, Any],
                                               field: str) -> None:
    """The API server would prune an unknown field silently; the values schema refuses it instead."""
    with pytest.raises(chartkit.HelmError, match=field):
        render(helm_bin, staged["medsearch"], sets={"defaultIndex.create": True, **sets})
