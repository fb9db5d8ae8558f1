"""Operator settings, from ``MEDSEARCH_*`` environment variables (the shared :class:`ServiceSettings` plus the
operator's own ``MEDSEARCH_OPERATOR_*`` knobs)."""

from __future__ import annotations

from pydantic import Field

from medsearch.contracts.settings import ServiceSettings


class OperatorSettings(ServiceSettings):
    """Where the shared services are (``MEDSEARCH_KAFKA_BOOTSTRAP``, ``MEDSEARCH_MILVUS_URI``, ...) and what the
    operator deploys for each index."""

    operator_namespace: str = Field(
        default="", description="Namespace to watch; empty watches every namespace (needs the ClusterRole)."
    )
    operator_worker_image: str = Field(
        default="medsearch-workers:latest", description="Image of the ingest worker Deployments."
    )
    operator_predictor_image: str = Field(
        default="medsearch-model-server:latest", description="Image of the InferenceService predictor container."
    )
    operator_image_pull_policy: str = Field(default="IfNotPresent", description="imagePullPolicy of the children.")
    operator_credentials_secret: str = Field(
        default="",
        description="Optional Secret (same namespace as the index) whose keys become the workers' environment, "
        "e.g. MEDSEARCH_MILVUS_TOKEN, AWS_ACCESS_KEY_ID.",
    )
    operator_kafka_ca_secret: str = Field(
        default="",
        description="Secret (in each index's namespace) with the Kafka CA, mounted into the workers where "
        "MEDSEARCH_KAFKA_SSL_CAFILE points (the chart sets both from externalKafka.tls).",
    )
    operator_service_account: str = Field(default="", description="ServiceAccount of the worker and predictor pods.")
    operator_resync_seconds: float = Field(
        default=60.0, gt=0, description="Periodic resync: re-applies children and repairs drift."
    )
    operator_retry_min_seconds: float = Field(default=2.0, gt=0, description="First retry delay on failures.")
    operator_retry_max_seconds: float = Field(default=60.0, gt=0, description="Backoff ceiling on failures.")
    operator_service_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Timeout of Kafka/Milvus admin calls."
    )
    operator_field_manager: str = Field(default="medsearch-operator", description="Server-side apply field manager.")
    operator_health_host: str = Field(
        default="0.0.0.0", description="Address of the liveness endpoint (all interfaces: kubelet probes it)."
    )
    operator_health_port: int = Field(
        default=8080, ge=0, le=65535, description="Port of the liveness endpoint /healthz (0: off)."
    )
    operator_network_policies: bool = Field(
        default=True,
        description="Create NetworkPolicies for each index's workers and predictor (predictor reachable only "
        "from the index's workers and medsearch gateways; workers accept nothing but metrics scrapes).",
    )
