"""Child manifests of a ``MedicalSearchIndex``: pure functions of (index object, parsed spec, settings) → dict.

Nothing here talks to a cluster; ``handlers.py`` server-side-applies what these return. Every child has a fixed
name derived from the index name, the ``app.kubernetes.io/*`` labels, and an ownerReference to the index.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import yaml

from medsearch.contracts.naming import IndexNames, names_for
from medsearch.contracts.spec import API_GROUP, API_VERSION, KIND, MedicalSearchIndexSpec, Resources, WorkerKind
from medsearch_operator.settings import OperatorSettings

WORKER_KINDS: tuple[WorkerKind, ...] = ("dicom", "report")
CHECKSUM_ANNOTATION = f"{API_GROUP}/config-checksum"
INDEX_LABEL = f"{API_GROUP}/index"
SPEC_FILE = "/etc/medsearch/index.yaml"
MODEL_MOUNT = "/mnt/models"  # where KServe's storage initializer puts storageUri contents
_URI_PREFIXES = ("s3://", "gs://", "https://", "http://", "pvc://", "hdfs://", "webhdfs://", "oci://")


@dataclass(frozen=True)
class Owner:
    """The parts of the index object its children need."""

    name: str
    namespace: str
    uid: str

    @classmethod
    def from_body(cls, body: Any) -> Owner:
        meta = body["metadata"]
        return cls(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])

    @property
    def names(self) -> IndexNames:
        """Topics, consumer groups, collections, schema: scoped by namespace and name (two ``demo`` indexes in two
        namespaces never share one)."""
        return names_for(self.name, self.namespace)


def owner_reference(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def labels(owner: Owner, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "medsearch",
        "app.kubernetes.io/instance": owner.name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "medsearch-operator",
        INDEX_LABEL: owner.name,
    }


def selector_labels(owner: Owner, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/instance": owner.name, "app.kubernetes.io/component": component}


def _metadata(owner: Owner, name: str, component: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner, component),
        "ownerReferences": [owner_reference(owner)],
    }


# ----------------------------------------------------------------------------------------------- names


def configmap_name(index: str) -> str:
    return f"{index}-config"


def worker_name(index: str, kind: WorkerKind) -> str:
    return f"{index}-{kind}-worker"


def inference_service_name(index: str) -> str:
    return f"{index}-embedder"


def receiver_name(index: str) -> str:
    return f"{index}-dicom-receiver"


def model_server_url(index: str, namespace: str) -> str:
    """In-cluster URL of the predictor (KServe names the predictor Service ``<isvc>-predictor``)."""
    return f"http://{inference_service_name(index)}-predictor.{namespace}.svc.cluster.local"


# ------------------------------------------------------------------------------------------- ConfigMap


def spec_document(owner: Owner, spec: MedicalSearchIndexSpec) -> str:
    """The index as a YAML document (what workers read from ``MEDSEARCH_INDEX_SPEC_FILE``).

    Replica counts are left out: scaling is not configuration and must not roll the pods via the checksum.
    """
    body = spec.model_dump(by_alias=True, mode="json", exclude_none=True)
    for worker in body.get("workers", {}).values():
        worker.pop("replicas", None)
    for key in ("minReplicas", "maxReplicas"):
        body.get("predictor", {}).pop(key, None)
    doc = {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {"name": owner.name, "namespace": owner.namespace},
        "spec": body,
    }
    return yaml.safe_dump(doc, sort_keys=True)


def build_configmap(owner: Owner, spec: MedicalSearchIndexSpec, settings: OperatorSettings) -> dict[str, Any]:
    """Process-level settings as ``MEDSEARCH_*`` variables (where the services are, logging) and the index as
    ``index.yaml``: the only source of index-level options (batch size, attempts, NLP backend, embedding model)."""
    data = {
        "MEDSEARCH_INDEX": owner.name,
        "MEDSEARCH_INDEX_NAMESPACE": owner.namespace,
        "MEDSEARCH_INDEX_SPEC_FILE": SPEC_FILE,
        "MEDSEARCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "MEDSEARCH_KAFKA_SECURITY_PROTOCOL": settings.kafka_security_protocol,
        "MEDSEARCH_MILVUS_URI": settings.milvus_uri,
        "MEDSEARCH_POSTGRES_DSN": settings.postgres_dsn,
        "MEDSEARCH_MODEL_SERVER_URL": model_server_url(owner.name, owner.namespace),
        "MEDSEARCH_OBJECT_STORE_URL": settings.object_store_url,
        "MEDSEARCH_LOG_LEVEL": settings.log_level,
        "MEDSEARCH_LOG_FORMAT": settings.log_format,
        "index.yaml": spec_document(owner, spec),
    }
    # Kafka TLS/SASL: everything but the password (the credentials Secret carries MEDSEARCH_KAFKA_SASL_PASSWORD).
    if settings.kafka_sasl_mechanism:
        data["MEDSEARCH_KAFKA_SASL_MECHANISM"] = settings.kafka_sasl_mechanism
    if settings.kafka_sasl_username:
        data["MEDSEARCH_KAFKA_SASL_USERNAME"] = settings.kafka_sasl_username
    if settings.kafka_ssl_cafile:
        data["MEDSEARCH_KAFKA_SSL_CAFILE"] = str(settings.kafka_ssl_cafile)
    data["MEDSEARCH_KAFKA_SSL_CHECK_HOSTNAME"] = "true" if settings.kafka_ssl_check_hostname else "false"
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(owner, configmap_name(owner.name), "config"),
        "data": dict(sorted(data.items())),
    }


def config_checksum(configmap: dict[str, Any]) -> str:
    """sha256 of the ConfigMap's data: a pod-template annotation, so a config change rolls the pods."""
    blob = json.dumps(configmap.get("data", {}), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


# ------------------------------------------------------------------------------------------ Deployments


def _resources(requests: dict[str, str], limits: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = dict(requests)
    if limits:
        out["limits"] = dict(limits)
    return out


_RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _index_deployment(owner: Owner, settings: OperatorSettings, *, name: str, component: str,
                      replicas: int | None, checksum: str, resources: Resources,
                      container: dict[str, Any]) -> dict[str, Any]:
    """A Deployment of the index's worker image (workers, DICOM receiver). ``container`` (name, command, env,
    ports, probes) gets the image, the index's ConfigMap and the credentials Secret (when set) as environment,
    ``resources``, the index spec at /etc/medsearch, a writable /tmp and, with Kafka TLS, the CA where
    MEDSEARCH_KAFKA_SSL_CAFILE points (the same path as in the operator's own pod); restricted pod security; the
    configured service account. ``replicas`` None leaves the count out (an autoscaler owns it); ``checksum`` (of
    the ConfigMap) annotates the pod template, so that a config change rolls the pods."""
    env_from: list[dict[str, Any]] = [{"configMapRef": {"name": configmap_name(owner.name)}}]
    if settings.operator_credentials_secret:
        env_from.append({"secretRef": {"name": settings.operator_credentials_secret, "optional": True}})
    container = {
        **container,
        "image": settings.operator_worker_image,
        "imagePullPolicy": settings.operator_image_pull_policy,
        "envFrom": env_from,
        "volumeMounts": [
            {"name": "index-spec", "mountPath": "/etc/medsearch", "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": _RESTRICTED_CONTAINER,
    }
    requested = _resources(resources.requests, resources.limits)
    if requested:
        container["resources"] = requested
    pod_spec: dict[str, Any] = {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        # Workers finish their batch, the receiver its open associations, on SIGTERM.
        "terminationGracePeriodSeconds": 60,
        "containers": [container],
        "volumes": [
            {"name": "index-spec",
             "configMap": {"name": configmap_name(owner.name), "items": [{"key": "index.yaml", "path": "index.yaml"}]}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if settings.operator_kafka_ca_secret and settings.kafka_ssl_cafile:
        container["volumeMounts"].append({"name": "kafka-ca", "mountPath": str(settings.kafka_ssl_cafile.parent),
                                          "readOnly": True})
        pod_spec["volumes"].append({"name": "kafka-ca", "secret": {"secretName": settings.operator_kafka_ca_secret,
                                                                   "defaultMode": 0o444}})
    if settings.operator_service_account:
        pod_spec["serviceAccountName"] = settings.operator_service_account
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(owner, name, component),
        "spec": {
            **({} if replicas is None else {"replicas": replicas}),
            "selector": {"matchLabels": selector_labels(owner, component)},
            "template": {
                "metadata": {"labels": labels(owner, component), "annotations": {CHECKSUM_ANNOTATION: checksum}},
                "spec": pod_spec,
            },
        },
    }


def build_worker_deployment(owner: Owner, spec: MedicalSearchIndexSpec, settings: OperatorSettings,
                            kind: WorkerKind, checksum: str, autoscaled: bool = False) -> dict[str, Any]:
    """``autoscaled``: a KEDA ScaledObject owns the replica count, so the manifest leaves ``replicas`` out
    (server-side apply then never fights the HPA KEDA drives)."""
    wspec = spec.workers.of(kind)
    component = f"{kind}-worker"
    env = [
        {"name": "MEDSEARCH_WORKER_METRICS_PORT", "value": "9102"},
        # The root filesystem is read-only: caches (Hugging Face, medsearch data dir) go to the /tmp volume.
        {"name": "HOME", "value": "/tmp"},
        {"name": "HF_HOME", "value": "/tmp/huggingface"},
    ]
    container: dict[str, Any] = {
        "name": "worker",
        "command": ["python", "-m", f"medsearch_workers.{kind}_worker"],
        "env": env,
        "ports": [{"name": "metrics", "containerPort": 9102, "protocol": "TCP"}],
    }
    return _index_deployment(owner, settings, name=worker_name(owner.name, kind), component=component,
                             replicas=None if autoscaled else wspec.replicas, checksum=checksum,
                             resources=wspec.resources, container=container)


# ------------------------------------------------------------------------------------- InferenceService


def model_location(spec: MedicalSearchIndexSpec) -> tuple[str | None, str]:
    """(storageUri for KServe's storage initializer or None, the model server's ``--weights`` argument)."""
    if spec.predictor.storage_uri:
        return spec.predictor.storage_uri, MODEL_MOUNT
    if spec.embedding.weights.startswith(_URI_PREFIXES):
        return spec.embedding.weights, MODEL_MOUNT
    return None, spec.embedding.weights


def build_inference_service(owner: Owner, spec: MedicalSearchIndexSpec, settings: OperatorSettings) -> dict[str, Any]:
    pred = spec.predictor
    storage_uri, weights = model_location(spec)
    args = [
        "--model-name", spec.embedding.name,
        "--weights", weights,
        "--backend", pred.backend,
        "--input-size", str(spec.embedding.input_size),
        "--max-batch-size", str(pred.batcher.max_batch_size),
        "--max-latency-ms", str(pred.batcher.max_latency_ms),
        "--http-port", "8080",
        "--grpc-port", "8081",
    ]
    if spec.embedding.sha256:
        args += ["--weights-sha256", spec.embedding.sha256]
    requests = dict(pred.resources.requests)
    limits = dict(pred.resources.limits)
    if pred.gpu:
        limits["nvidia.com/gpu"] = str(pred.gpu)
        requests["nvidia.com/gpu"] = str(pred.gpu)
    container: dict[str, Any] = {
        "name": "kserve-container",
        "image": settings.operator_predictor_image,
        "imagePullPolicy": settings.operator_image_pull_policy,
        "args": args,
        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
        "securityContext": {**_RESTRICTED_CONTAINER, "readOnlyRootFilesystem": False},
    }
    if storage_uri:
        # KServe's storage initializer downloads STORAGE_URI into /mnt/models before the container starts.
        container["env"] = [{"name": "STORAGE_URI", "value": storage_uri}]
    resources = _resources(requests, limits)
    if resources:
        container["resources"] = resources
    predictor: dict[str, Any] = {
        "minReplicas": pred.min_replicas,
        "maxReplicas": pred.max_replicas,
        "batcher": {"maxBatchSize": pred.batcher.max_batch_size, "maxLatency": pred.batcher.max_latency_ms},
        "containers": [container],
    }
    if pred.node_selector:
        predictor["nodeSelector"] = dict(pred.node_selector)
    if pred.tolerations:
        predictor["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in pred.tolerations]
    if settings.operator_service_account:
        predictor["serviceAccountName"] = settings.operator_service_account
    if pred.scale_metric:
        predictor["scaleMetric"] = pred.scale_metric
        if pred.scale_target is not None:
            predictor["scaleTarget"] = pred.scale_target
    meta = _metadata(owner, inference_service_name(owner.name), "predictor")
    meta["annotations"] = {f"{API_GROUP}/model": f"{spec.embedding.name}:{spec.embedding.version}"}
    if pred.deployment_mode:
        # KServe's raw mode ("Standard" since 0.15) is spelled RawDeployment by every release that has it.
        meta["annotations"]["serving.kserve.io/deploymentMode"] = (
            "RawDeployment" if pred.deployment_mode == "Standard" else "Serverless")
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": meta,
        "spec": {"predictor": predictor},
    }


# -------------------------------------------------------------------------------------- NetworkPolicies

# KServe labels every predictor pod with the name of its InferenceService.
ISVC_POD_LABEL = "serving.kserve.io/inferenceservice"
# The chart labels gateway pods with these (app.kubernetes.io/name is the chart name).
GATEWAY_POD_LABELS = {"app.kubernetes.io/name": "medsearch", "app.kubernetes.io/component": "gateway"}
WORKER_METRICS_PORT = 9102


def network_policy_name(index: str, component: str) -> str:
    return f"{index}-{component}"


def build_network_policies(owner: Owner) -> list[dict[str, Any]]:
    """Default-deny ingress for the index's workers (metrics scrapes only) and its predictor (only from this
    index's workers and from medsearch gateways in any namespace). Egress stays open: workers reach Kafka,
    PostgreSQL, Milvus and the object store wherever the site runs them."""
    workers = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(owner, network_policy_name(owner.name, "workers"), "workers"),
        "spec": {
            "podSelector": {
                "matchLabels": {"app.kubernetes.io/instance": owner.name},
                "matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In",
                                      "values": [f"{k}-worker" for k in WORKER_KINDS]}],
            },
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"port": WORKER_METRICS_PORT, "protocol": "TCP"}]}],
        },
    }
    predictor = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(owner, network_policy_name(owner.name, "predictor"), "predictor"),
        "spec": {
            "podSelector": {"matchLabels": {ISVC_POD_LABEL: inference_service_name(owner.name)}},
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [
                    {"podSelector": {
                        "matchLabels": {"app.kubernetes.io/instance": owner.name},
                        "matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In",
                                              "values": [f"{k}-worker" for k in WORKER_KINDS]}],
                    }},
                    {"namespaceSelector": {}, "podSelector": {"matchLabels": dict(GATEWAY_POD_LABELS)}},
                ],
            }],
        },
    }
    return [workers, predictor]


# ------------------------------------------------------------------------------------ KEDA autoscaling


def scaled_object_name(index: str, kind: WorkerKind) -> str:
    return f"{worker_name(index, kind)}-lag"


def autoscaled_kinds(spec: MedicalSearchIndexSpec) -> list[WorkerKind]:
    return [k for k in WORKER_KINDS if spec.workers.of(k).autoscaling is not None]


def build_scaled_object(owner: Owner, spec: MedicalSearchIndexSpec, settings: OperatorSettings,
                        kind: WorkerKind) -> dict[str, Any]:
    """A KEDA ScaledObject scaling the worker on its consumer group's lag; never more replicas than
    partitions (more consumers than partitions sit idle)."""
    auto = spec.workers.of(kind).autoscaling
    assert auto is not None  # only called for autoscaled kinds
    names = owner.names
    topic = names.dicom_topic if kind == "dicom" else names.reports_topic
    group = names.dicom_consumer_group if kind == "dicom" else names.report_consumer_group
    metadata: dict[str, str] = {
        "bootstrapServers": settings.kafka_bootstrap,
        "consumerGroup": group,
        "topic": topic,
        "lagThreshold": str(auto.lag_threshold),
        "offsetResetPolicy": "earliest",
        "allowIdleConsumers": "false",
    }
    trigger: dict[str, Any] = {"type": "kafka", "metadata": metadata}
    if settings.kafka_security_protocol != "PLAINTEXT":
        # KEDA reads credentials through a TriggerAuthentication the site provides (same name as the object).
        trigger["authenticationRef"] = {"name": scaled_object_name(owner.name, kind)}
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _metadata(owner, scaled_object_name(owner.name, kind), f"{kind}-worker"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": worker_name(owner.name, kind)},
            "minReplicaCount": min(auto.min_replicas, spec.kafka.partitions),
            "maxReplicaCount": min(auto.max_replicas, spec.kafka.partitions),
            "pollingInterval": 15,
            "cooldownPeriod": 300,
            "triggers": [trigger],
        },
    }


# ------------------------------------------------------------------------------------------ DICOM receiver


def build_receiver_deployment(owner: Owner, spec: MedicalSearchIndexSpec, settings: OperatorSettings,
                              checksum: str) -> dict[str, Any]:
    """The index's DICOM receiver (``medsearch receive``, C-ECHO + C-STORE SCP) in the worker image."""
    rspec = spec.receiver
    component = "dicom-receiver"
    env = [
        {"name": "MEDSEARCH_RECEIVER_AE_TITLE", "value": rspec.ae_title},
        {"name": "MEDSEARCH_RECEIVER_HOST", "value": "0.0.0.0"},
        {"name": "MEDSEARCH_RECEIVER_PORT", "value": str(rspec.port)},
        {"name": "MEDSEARCH_RECEIVER_ALLOWED_AETS", "value": json.dumps(list(rspec.allowed_ae_titles))},
        {"name": "MEDSEARCH_RECEIVER_METRICS_PORT", "value": "9102"},
        {"name": "HOME", "value": "/tmp"},
    ]
    container: dict[str, Any] = {
        "name": "receiver",
        "command": ["python", "-m", "medsearch.cli", "receive"],
        "env": env,
        "ports": [{"name": "dicom", "containerPort": rspec.port, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": 9102, "protocol": "TCP"}],
        "readinessProbe": {"tcpSocket": {"port": "dicom"}, "periodSeconds": 10},
        "livenessProbe": {"tcpSocket": {"port": "dicom"}, "periodSeconds": 20, "failureThreshold": 3},
    }
    return _index_deployment(owner, settings, name=receiver_name(owner.name), component=component,
                             replicas=rspec.replicas, checksum=checksum, resources=rspec.resources,
                             container=container)


def build_receiver_service(owner: Owner, spec: MedicalSearchIndexSpec) -> dict[str, Any]:
    """The Service modalities and PACS send to (``<index>-dicom-receiver:<port>``, AE ``spec.receiver.aeTitle``)."""
    component = "dicom-receiver"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, receiver_name(owner.name), component),
        "spec": {
            "type": spec.receiver.service_type,
            "selector": selector_labels(owner, component),
            "ports": [{"name": "dicom", "port": spec.receiver.port, "targetPort": "dicom", "protocol": "TCP"}],
        },
    }


def build_children(owner: Owner, spec: MedicalSearchIndexSpec, settings: OperatorSettings,
                   keda: bool = False) -> list[dict[str, Any]]:
    """Every child, in apply order (ConfigMap first: the Deployments' checksum is computed from it).
    ``keda``: KEDA is installed, so autoscaled workers get a ScaledObject and no fixed replica count."""
    cm = build_configmap(owner, spec, settings)
    checksum = config_checksum(cm)
    scaled = set(autoscaled_kinds(spec)) if keda else set()
    kids = [
        cm,
        *(build_worker_deployment(owner, spec, settings, k, checksum, autoscaled=k in scaled)
          for k in WORKER_KINDS),
        *(build_scaled_object(owner, spec, settings, k) for k in WORKER_KINDS if k in scaled),
        build_inference_service(owner, spec, settings),
        *(build_network_policies(owner) if settings.operator_network_policies else []),
    ]
    if spec.receiver.enabled:
        kids += [build_receiver_deployment(owner, spec, settings, checksum), build_receiver_service(owner, spec)]
    return kids
