"""Child manifests are pure functions of the index; checked here without a cluster."""

from __future__ import annotations

from typing import Any

import yaml
from medsearch_operator import children as ch
from medsearch_operator.settings import OperatorSettings

from medsearch.contracts.spec import parse_spec

OWNER = ch.Owner(name="chest", namespace="radiology", uid="1234-uid")
SETTINGS = OperatorSettings(
    kafka_bootstrap="kafka:9092", milvus_uri="http://milvus:19530", object_store_url="s3://bucket/medsearch",
    operator_worker_image="reg/workers:1.2", operator_predictor_image="reg/model:1.2",
    operator_credentials_secret="medsearch-creds",
)


def gpu_spec(**over: Any) -> Any:
    data: dict[str, Any] = {
        "embedding": {"weights": "s3://models/dn121.pt"},
        "workers": {"dicom": {"replicas": 4, "batchSize": 32,
                              "resources": {"requests": {"cpu": "1"}, "limits": {"memory": "4Gi"}}}},
        "predictor": {"minReplicas": 1, "maxReplicas": 3, "gpu": 2, "nodeSelector": {"pool": "gpu"},
                      "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                      "batcher": {"maxBatchSize": 64, "maxLatencyMs": 20},
                      "resources": {"limits": {"memory": "16Gi"}}},
    }
    data.update(over)
    return parse_spec(data)


def test_every_child_is_owned_labelled_and_fixed_named() -> None:
    kids = ch.build_children(OWNER, gpu_spec(), SETTINGS)
    assert [(k["kind"], k["metadata"]["name"]) for k in kids] == [
        ("ConfigMap", "chest-config"), ("Deployment", "chest-dicom-worker"), ("Deployment", "chest-report-worker"),
        ("InferenceService", "chest-embedder"), ("NetworkPolicy", "chest-workers"),
        ("NetworkPolicy", "chest-predictor")]
    for kid in kids:
        meta = kid["metadata"]
        assert "generateName" not in meta
        assert meta["namespace"] == "radiology"
        assert meta["ownerReferences"] == [{"apiVersion": "medsearch.io/v1alpha1", "kind": "MedicalSearchIndex",
                                            "name": "chest", "uid": "1234-uid", "controller": True,
                                            "blockOwnerDeletion": True}]
        assert meta["labels"]["app.kubernetes.io/instance"] == "chest"
        assert meta["labels"]["medsearch.io/index"] == "chest"


def test_inference_service_has_gpu_scheduling_storage_and_batcher() -> None:
    isvc = ch.build_inference_service(OWNER, gpu_spec(), SETTINGS)
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["metadata"]["annotations"] == {"medsearch.io/model": "densenet121:1"}
    pred = isvc["spec"]["predictor"]
    assert (pred["minReplicas"], pred["maxReplicas"]) == (1, 3)
    assert pred["nodeSelector"] == {"pool": "gpu"}
    assert pred["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pred["batcher"] == {"maxBatchSize": 64, "maxLatency": 20}
    (c,) = pred["containers"]
    assert c["name"] == "kserve-container" and c["image"] == "reg/model:1.2"
    assert c["resources"] == {"requests": {"nvidia.com/gpu": "2"},
                              "limits": {"memory": "16Gi", "nvidia.com/gpu": "2"}}
    assert {"name": "STORAGE_URI", "value": "s3://models/dn121.pt"} in c["env"]
    args = c["args"]
    assert args[args.index("--weights") + 1] == "/mnt/models"
    assert args[args.index("--max-batch-size") + 1] == "64"
    assert c["securityContext"]["runAsNonRoot"] is True


def test_predictor_storage_uri_overrides_weights_and_plain_weights_pass_through() -> None:
    spec = gpu_spec(predictor={"storageUri": "gs://b/m.onnx"})
    assert ch.model_location(spec) == ("gs://b/m.onnx", "/mnt/models")
    assert ch.model_location(parse_spec({"embedding": {"weights": "imagenet"}})) == (None, "imagenet")
    cpu = ch.build_inference_service(OWNER, parse_spec({}), SETTINGS)
    (c,) = cpu["spec"]["predictor"]["containers"]
    assert "resources" not in c and "env" not in c
    assert "nodeSelector" not in cpu["spec"]["predictor"] and "tolerations" not in cpu["spec"]["predictor"]
    assert "--weights-sha256" not in c["args"]


def test_a_pinned_weights_digest_reaches_the_model_server() -> None:
    digest = "ab" * 32
    isvc = ch.build_inference_service(OWNER, gpu_spec(embedding={"sha256": digest}), SETTINGS)
    args = isvc["spec"]["predictor"]["containers"][0]["args"]
    assert args[args.index("--weights-sha256") + 1] == digest


def test_worker_deployments_carry_replicas_resources_env_and_checksum() -> None:
    spec = gpu_spec()
    cm = ch.build_configmap(OWNER, spec, SETTINGS)
    checksum = ch.config_checksum(cm)
    dicom = ch.build_worker_deployment(OWNER, spec, SETTINGS, "dicom", checksum)
    report = ch.build_worker_deployment(OWNER, spec, SETTINGS, "report", checksum)
    assert dicom["spec"]["replicas"] == 4 and report["spec"]["replicas"] == 1
    assert dicom["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/instance": "chest",
                                                        "app.kubernetes.io/component": "dicom-worker"}
    tmpl = dicom["spec"]["template"]
    assert tmpl["metadata"]["annotations"] == {"medsearch.io/config-checksum": checksum}
    assert set(dicom["spec"]["selector"]["matchLabels"].items()) <= set(tmpl["metadata"]["labels"].items())
    (c,) = tmpl["spec"]["containers"]
    assert c["command"] == ["python", "-m", "medsearch_workers.dicom_worker"]
    assert c["resources"] == {"requests": {"cpu": "1"}, "limits": {"memory": "4Gi"}}
    assert not [e for e in c["env"] if e["name"] == "MEDSEARCH_WORKER_BATCH_SIZE"]  # the spec's, in index.yaml
    assert c["envFrom"] == [{"configMapRef": {"name": "chest-config"}},
                            {"secretRef": {"name": "medsearch-creds", "optional": True}}]
    (rc,) = report["spec"]["template"]["spec"]["containers"]
    assert {e["name"] for e in rc["env"]} == {e["name"] for e in c["env"]}
    assert rc["command"][-1] == "medsearch_workers.report_worker"


def test_configmap_holds_services_and_the_spec_and_checksum_follows_config() -> None:
    spec = gpu_spec()
    cm = ch.build_configmap(OWNER, spec, SETTINGS)
    data = cm["data"]
    assert data["MEDSEARCH_KAFKA_BOOTSTRAP"] == "kafka:9092"
    # Workers and the receiver scope the index's names by its namespace, as the operator does.
    assert (data["MEDSEARCH_INDEX"], data["MEDSEARCH_INDEX_NAMESPACE"]) == ("chest", "radiology")
    assert data["MEDSEARCH_MILVUS_URI"] == "http://milvus:19530"
    assert data["MEDSEARCH_OBJECT_STORE_URL"] == "s3://bucket/medsearch"
    assert data["MEDSEARCH_MODEL_SERVER_URL"] == "http://chest-embedder-predictor.radiology.svc.cluster.local"
    doc = yaml.safe_load(data["index.yaml"])
    assert doc["kind"] == "MedicalSearchIndex" and doc["metadata"]["name"] == "chest"
    assert parse_spec(doc["spec"]).model_dump(exclude={"workers", "predictor"}) == spec.model_dump(
        exclude={"workers", "predictor"})
    assert parse_spec(doc["spec"]).workers.dicom.batch_size == 32
    # Index-level options reach the workers through index.yaml only, never twice.
    assert not {"MEDSEARCH_NLP_BACKEND", "MEDSEARCH_NLP_MODEL", "MEDSEARCH_MODEL_NAME",
                "MEDSEARCH_WORKER_BATCH_SIZE", "MEDSEARCH_WORKER_MAX_ATTEMPTS"} & set(data)
    same = ch.config_checksum(ch.build_configmap(OWNER, gpu_spec(), SETTINGS))
    changed = ch.config_checksum(ch.build_configmap(OWNER, gpu_spec(nlp={"backend": "transformers"}), SETTINGS))
    assert same == ch.config_checksum(cm) != changed
    # Replica changes are not configuration: they must not restart pods.
    scaled = gpu_spec(workers={"dicom": {"replicas": 9, "batchSize": 32,
                                         "resources": {"requests": {"cpu": "1"}, "limits": {"memory": "4Gi"}}}},
                      predictor={**spec.predictor.model_dump(by_alias=True), "maxReplicas": 7})
    assert ch.config_checksum(ch.build_configmap(OWNER, scaled, SETTINGS)) == same


def test_builders_are_deterministic() -> None:
    assert ch.build_children(OWNER, gpu_spec(), SETTINGS) == ch.build_children(OWNER, gpu_spec(), SETTINGS)


def _selects(selector: dict[str, Any], pod_labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics for matchLabels + In/NotIn/Exists expressions."""
    if any(pod_labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        value, op = pod_labels.get(expr["key"]), expr["operator"]
        if (op == "In" and value not in expr["values"]) or (op == "NotIn" and value in expr["values"]) \
                or (op == "Exists" and value is None):
            return False
    return True


def test_network_policies_isolate_the_predictor_and_the_workers() -> None:
    kids = ch.build_children(OWNER, gpu_spec(), SETTINGS)
    pods = {k["metadata"]["name"]: k["spec"]["template"]["metadata"]["labels"] for k in kids
            if k["kind"] == "Deployment"}
    policies = {k["metadata"]["name"]: k["spec"] for k in kids if k["kind"] == "NetworkPolicy"}
    workers, predictor = policies["chest-workers"], policies["chest-predictor"]
    # The worker policy selects exactly the two worker Deployments' pods and admits metrics scrapes only.
    assert all(_selects(workers["podSelector"], labels) for labels in pods.values())
    assert workers["ingress"] == [{"ports": [{"port": 9102, "protocol": "TCP"}]}]
    # The predictor policy selects KServe's predictor pods and admits this index's workers and gateways only.
    isvc = next(k for k in kids if k["kind"] == "InferenceService")["metadata"]["name"]
    assert _selects(predictor["podSelector"], {"serving.kserve.io/inferenceservice": isvc})
    assert not _selects(predictor["podSelector"], {"serving.kserve.io/inferenceservice": "other-embedder"})
    (rule,) = predictor["ingress"]
    peers = rule["from"]
    assert all(any(_selects(p["podSelector"], labels) and "namespaceSelector" not in p for p in peers)
               for labels in pods.values())
    other_index_worker = {**next(iter(pods.values())), "app.kubernetes.io/instance": "other"}
    assert not any(_selects(p["podSelector"], other_index_worker) for p in peers if "namespaceSelector" not in p)
    gateway = {"app.kubernetes.io/name": "medsearch", "app.kubernetes.io/instance": "rel",
               "app.kubernetes.io/component": "gateway"}
    assert any(_selects(p["podSelector"], gateway) and p.get("namespaceSelector") == {} for p in peers)
    assert not any(_selects(p["podSelector"], {**gateway, "app.kubernetes.io/component": "operator"})
                   for p in peers)


def test_network_policies_can_be_switched_off() -> None:
    off = SETTINGS.model_copy(update={"operator_network_policies": False})
    assert not [k for k in ch.build_children(OWNER, gpu_spec(), off) if k["kind"] == "NetworkPolicy"]


def test_kafka_security_reaches_the_workers(tmp_path: Any) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("pem")
    secure = SETTINGS.model_copy(update={
        "kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "PLAIN", "kafka_sasl_username": "ms",
        "kafka_ssl_cafile": ca, "operator_kafka_ca_secret": "kafka-ca"})
    kids = ch.build_children(OWNER, gpu_spec(receiver={"enabled": True}), secure)
    data = kids[0]["data"]
    # the receiver publishes to Kafka too: it gets the CA like the workers
    assert {"chest-dicom-worker", "chest-report-worker", "chest-dicom-receiver"} <= {
        k["metadata"]["name"] for k in kids if k["kind"] == "Deployment"}
    assert data["MEDSEARCH_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert data["MEDSEARCH_KAFKA_SASL_MECHANISM"] == "PLAIN" and data["MEDSEARCH_KAFKA_SASL_USERNAME"] == "ms"
    assert data["MEDSEARCH_KAFKA_SSL_CAFILE"] == str(ca)
    assert not [k for k in data if "PASSWORD" in k]  # the password comes from the credentials Secret only
    for dep in (k for k in kids if k["kind"] == "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "kafka-ca"]
        assert mount["mountPath"] == str(ca.parent)
        assert {"name": "kafka-ca", "secret": {"secretName": "kafka-ca", "defaultMode": 0o444}} in pod["volumes"]


def test_receiver_is_opt_in_and_builds_a_deployment_and_service() -> None:
    kinds = [(k["kind"], k["metadata"]["name"]) for k in ch.build_children(OWNER, gpu_spec(), SETTINGS)]
    assert ("Service", "chest-dicom-receiver") not in kinds
    spec = gpu_spec(receiver={"enabled": True, "aeTitle": "CHESTAI", "port": 104, "allowedAeTitles": ["CT1", "PACS"],
                              "serviceType": "LoadBalancer", "resources": {"limits": {"memory": "1Gi"}}})
    kids = ch.build_children(OWNER, spec, SETTINGS)
    (dep,) = [k for k in kids if (k["kind"], k["metadata"]["name"]) == ("Deployment", "chest-dicom-receiver")]
    (svc,) = [k for k in kids if (k["kind"], k["metadata"]["name"]) == ("Service", "chest-dicom-receiver")]
    assert kids[0]["kind"] == "ConfigMap"  # applied first: the receiver's checksum comes from it
    checksum = ch.config_checksum(kids[0])
    pod = dep["spec"]["template"]
    assert pod["metadata"]["annotations"] == {"medsearch.io/config-checksum": checksum}
    (c,) = pod["spec"]["containers"]
    assert c["image"] == "reg/workers:1.2" and c["command"] == ["python", "-m", "medsearch.cli", "receive"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["MEDSEARCH_RECEIVER_AE_TITLE"] == "CHESTAI" and env["MEDSEARCH_RECEIVER_PORT"] == "104"
    assert env["MEDSEARCH_RECEIVER_HOST"] == "0.0.0.0"
    assert yaml.safe_load(env["MEDSEARCH_RECEIVER_ALLOWED_AETS"]) == ["CT1", "PACS"]
    assert {"configMapRef": {"name": "chest-config"}} in c["envFrom"]
    assert c["ports"] == [{"name": "dicom", "containerPort": 104, "protocol": "TCP"},
                          {"name": "metrics", "containerPort": 9102, "protocol": "TCP"}]
    assert env["MEDSEARCH_RECEIVER_METRICS_PORT"] == "9102"
    assert c["readinessProbe"]["tcpSocket"] == {"port": "dicom"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True and c["resources"] == {"limits": {"memory": "1Gi"}}
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["ports"] == [{"name": "dicom", "port": 104, "targetPort": "dicom", "protocol": "TCP"}]
    selector = {"app.kubernetes.io/instance": "chest", "app.kubernetes.io/component": "dicom-receiver"}
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"] == selector
    assert selector.items() <= pod["metadata"]["labels"].items()
    for kid in (dep, svc):
        assert kid["metadata"]["ownerReferences"][0]["uid"] == "1234-uid"
