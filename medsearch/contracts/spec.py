"""The ``MedicalSearchIndex`` spec: one pydantic model shared by the operator, the CRD and ``medsearch up``.

Field names are camelCase on the wire (the CRD's convention) and snake_case in Python. Every bound and
default lives here; the CRD's openAPIV3Schema is generated from these models
(:func:`medsearch.contracts.crd.crd_schema`) and a test checks the committed CRD against it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

API_GROUP = "medsearch.io"
API_VERSION = "v1alpha1"
KIND = "MedicalSearchIndex"
PLURAL = "medicalsearchindexes"
SHORT_NAME = "msi"

EMBEDDING_DIMENSION = 1024
TEXT_EMBEDDING_DIMENSION = 384

# A DNS-1123 label that also maps to a valid Milvus collection name once '-' becomes '_'.
INDEX_NAME_PATTERN = r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$"
_INDEX_NAME_RE = re.compile(INDEX_NAME_PATTERN)

ImageIndexType = Literal["FLAT", "IVF_FLAT", "IVF_SQ8", "HNSW", "HNSW_SQ"]
TextIndexType = Literal["FLAT", "IVF_FLAT", "HNSW"]
Metric = Literal["COSINE", "IP", "L2"]


class SpecError(ValueError):
    """A spec that cannot be used; the message names the offending field."""


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Resources(_Model):
    """Kubernetes container resources (quantities as strings, e.g. ``"500m"``, ``"2Gi"``)."""

    requests: dict[str, str] = Field(default_factory=dict)
    limits: dict[str, str] = Field(default_factory=dict)


class Toleration(_Model):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, ge=0)


class EmbeddingModelSpec(_Model):
    """The image embedding model served by the predictor."""

    name: str = Field(default="densenet121", pattern=r"^[a-z0-9][-a-z0-9_.]{0,62}$")
    weights: str = Field(
        default="imagenet",
        description="imagenet | random | a local path | a URI (https://, s3://, gs://, az://, pvc://; never "
        "http://) to a state dict, TorchScript or ONNX file. 'random' is for tests and offline demos only.",
    )
    sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$",
        description="Expected sha256 of the model file; the model server refuses a file that does not match.",
    )
    format: Literal["auto", "pytorch", "torchscript", "onnx"] = "auto"
    dimension: Literal[1024] = 1024
    input_size: int = Field(default=224, ge=64, le=1024)
    version: str = Field(default="1", pattern=r"^[A-Za-z0-9._-]{1,32}$")

    @field_validator("weights")
    @classmethod
    def _weights_scheme(cls, v: str) -> str:
        return check_model_uri(v)


# Model weights come over TLS or from an object store; plain http:// (or any other scheme) is refused.
MODEL_URI_SCHEMES = ("https", "s3", "gs", "gcs", "az", "abfs", "abfss", "pvc", "file")


def check_model_uri(value: str) -> str:
    if "://" in value:
        scheme = value.split("://", 1)[0].lower()
        if scheme not in MODEL_URI_SCHEMES:
            raise ValueError(f"{scheme}:// is not allowed for model weights; use one of "
                             + ", ".join(f"{s}://" for s in MODEL_URI_SCHEMES))
    return value


class ImageCollectionSpec(_Model):
    index_type: ImageIndexType = "HNSW"
    metric: Metric = "COSINE"
    params: dict[str, int] = Field(
        default_factory=lambda: {"M": 16, "efConstruction": 200},
        description="Index build parameters (M/efConstruction for HNSW, nlist for IVF).",
    )


class ReportCollectionSpec(_Model):
    text_embedding_model: str = Field(default="all-MiniLM-L6-v2")
    dimension: Literal[384] = 384
    index_type: TextIndexType = "HNSW"
    metric: Metric = "COSINE"
    params: dict[str, int] = Field(default_factory=lambda: {"M": 16, "efConstruction": 200})
    analyzer: Literal["standard", "english"] = Field(
        default="standard",
        description="Keyword search text analysis: 'standard' (words as written, PostgreSQL 'simple') or "
        "'english' (stemming, stop words). Fixed when the index's PostgreSQL schema is created.",
    )


class KafkaSpec(_Model):
    partitions: int = Field(default=3, ge=1, le=256)
    replication_factor: int = Field(default=1, ge=1, le=7)
    retention_hours: int = Field(default=168, ge=1, le=87600)


class AutoscalingSpec(_Model):
    """Scale a worker Deployment on its consumer lag (a KEDA ScaledObject; replicas never above partitions)."""

    min_replicas: int = Field(default=1, ge=0, le=100)
    max_replicas: int = Field(default=4, ge=1, le=256, description="Capped at spec.kafka.partitions.")
    lag_threshold: int = Field(default=100, ge=1, le=1_000_000, description="Target messages behind per replica.")

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"minReplicas ({self.min_replicas}) is above maxReplicas ({self.max_replicas})")
        return self


class WorkerSpec(_Model):
    replicas: int = Field(default=1, ge=0, le=100, description="Fixed replicas (without autoscaling, or no KEDA).")
    batch_size: int = Field(default=16, ge=1, le=512)
    max_poll_interval_seconds: int = Field(
        default=300, ge=10, le=3600,
        description="Longest a worker may take between two polls (one batch's handling) before the consumer group "
        "counts it gone and gives its partitions to another (Kafka's max.poll.interval.ms).",
    )
    max_attempts: int = Field(
        default=3, ge=2, le=100,
        description="Handlings of one message that crashed or failed the worker (counted in the ingest ledger, "
        "across restarts) before it is dead-lettered with the reason; the last one is made alone, so the dead "
        "letter names the stage. Permanent failures are never retried.",
    )
    resources: Resources = Field(default_factory=Resources)
    autoscaling: AutoscalingSpec | None = Field(
        default=None, description="Lag-based autoscaling with KEDA (falls back to `replicas` without KEDA)."
    )


WorkerKind = Literal["dicom", "report"]


class WorkersSpec(_Model):
    dicom: WorkerSpec = Field(default_factory=WorkerSpec)
    report: WorkerSpec = Field(default_factory=lambda: WorkerSpec(batch_size=32))

    def of(self, kind: WorkerKind) -> WorkerSpec:
        """The options of one kind of worker."""
        return self.dicom if kind == "dicom" else self.report


class BatcherSpec(_Model):
    max_batch_size: int = Field(default=32, ge=1, le=1024)
    max_latency_ms: int = Field(default=5, ge=0, le=10000)


class PredictorSpec(_Model):
    min_replicas: int = Field(default=1, ge=0, le=100)
    max_replicas: int = Field(default=1, ge=1, le=100)
    gpu: int = Field(default=0, ge=0, le=8, description="GPUs per predictor pod (nvidia.com/gpu).")
    storage_uri: str | None = Field(
        default=None, description="KServe storageUri of the model weights (overrides embedding.weights)."
    )
    backend: Literal["auto", "torch", "onnx"] = "auto"
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    batcher: BatcherSpec = Field(default_factory=BatcherSpec)
    deployment_mode: Literal["Serverless", "Standard"] | None = Field(
        default=None, description="KServe deployment mode; Standard (raw Deployment + HPA) needs no Knative. "
        "Unset: the cluster's default.",
    )
    scale_metric: Literal["cpu", "memory", "concurrency", "rps"] | None = Field(
        default=None, description="Autoscaling metric between minReplicas and maxReplicas (cpu/memory in "
        "Standard mode, concurrency/rps with Knative).",
    )
    scale_target: int | None = Field(default=None, ge=1, le=100000, description="Target value of scaleMetric.")

    @field_validator("storage_uri")
    @classmethod
    def _storage_scheme(cls, v: str | None) -> str | None:
        return None if v is None else check_model_uri(v)

    @field_validator("max_replicas")
    @classmethod
    def _max_ge_min(cls, v: int, info: ValidationInfo) -> int:
        lo = info.data.get("min_replicas", 1)
        if v < lo:
            raise ValueError(f"maxReplicas ({v}) must be >= minReplicas ({lo})")
        return v

    @model_validator(mode="after")
    def _scale_target(self) -> PredictorSpec:
        if self.scale_target is not None and self.scale_metric is None:
            raise ValueError("scaleTarget needs scaleMetric")
        return self


class NlpSpec(_Model):
    backend: Literal["lexicon", "transformers"] = "lexicon"
    model: str | None = Field(default=None, description="HF token-classification model name or path.")
    indication_positive: bool = Field(
        default=False, description="Let the INDICATION/HISTORY section produce positive findings."
    )


class PrivacySpec(_Model):
    store_patient_identifiers: bool = Field(
        default=False, description="Store PatientName/PatientID in the image collection (off by default)."
    )
    deidentify: Literal["none", "basic"] = Field(
        default="none",
        description="De-identify DICOM before anything is stored: none, or basic (PS3.15 Basic Application Level "
        "Confidentiality Profile; UIDs remapped consistently within the index).",
    )
    quarantine_burned_in_annotation: bool = Field(
        default=True,
        description="With deidentify: basic, dead-letter instances flagged BurnedInAnnotation=YES instead of "
        "storing them (their pixels may show identifiers).",
    )


class ReceiverSpec(_Model):
    """The index's DICOM receiver (C-STORE SCP) in clusters: a Deployment and a Service created by the operator."""

    enabled: bool = Field(default=False, description="Create the receiver Deployment and Service.")
    ae_title: str = Field(
        default="MEDSEARCH", min_length=1, max_length=16, pattern=r"^[^\\\x00-\x1f]+$",
        description="AE title the receiver answers to.",
    )
    port: int = Field(default=11112, ge=1, le=65535, description="DICOM port of the Service and the container.")
    allowed_ae_titles: list[str] = Field(
        default_factory=list, description="Calling AE titles allowed to send (empty: any)."
    )
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        default="ClusterIP", description="Type of the receiver's Service."
    )
    replicas: int = Field(default=1, ge=0, le=20)
    resources: Resources = Field(default_factory=Resources)


class MedicalSearchIndexSpec(_Model):
    """``MedicalSearchIndex.spec``."""

    embedding: EmbeddingModelSpec = Field(default_factory=EmbeddingModelSpec)
    images: ImageCollectionSpec = Field(default_factory=ImageCollectionSpec)
    reports: ReportCollectionSpec = Field(default_factory=ReportCollectionSpec)
    kafka: KafkaSpec = Field(default_factory=KafkaSpec)
    workers: WorkersSpec = Field(default_factory=WorkersSpec)
    predictor: PredictorSpec = Field(default_factory=PredictorSpec)
    nlp: NlpSpec = Field(default_factory=NlpSpec)
    privacy: PrivacySpec = Field(default_factory=PrivacySpec)
    receiver: ReceiverSpec = Field(default_factory=ReceiverSpec)
    deletion_policy: Literal["Retain", "Delete"] = "Retain"


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    namespace: str | None = None


class MedicalSearchIndex(BaseModel):
    """A whole ``MedicalSearchIndex`` object as written in YAML (what ``medsearch up --index`` reads)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    api_version: str = Field(default=f"{API_GROUP}/{API_VERSION}", alias="apiVersion")
    kind: Literal["MedicalSearchIndex"] = "MedicalSearchIndex"
    metadata: ObjectMeta
    spec: MedicalSearchIndexSpec = Field(default_factory=MedicalSearchIndexSpec)

    @field_validator("metadata")
    @classmethod
    def _valid_name(cls, meta: ObjectMeta) -> ObjectMeta:
        validate_index_name(meta.name)
        return meta

    @property
    def name(self) -> str:
        return self.metadata.name


def validate_index_name(name: str) -> str:
    if not _INDEX_NAME_RE.match(name):
        raise SpecError(
            f"metadata.name: index name {name!r} must be a lowercase DNS label of at most 40 characters "
            "(letters, digits, '-'; starting with a letter)"
        )
    return name


def _format_validation_error(err: ValidationError, prefix: str) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        parts.append(f"{prefix}{loc}: {e['msg']}")
    return "; ".join(parts)


def parse_spec(data: dict[str, Any]) -> MedicalSearchIndexSpec:
    """Validate a ``spec`` dict (camelCase), raising :class:`SpecError` naming the field."""
    try:
        return MedicalSearchIndexSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(_format_validation_error(err, "spec.")) from None


def parse_index(data: dict[str, Any]) -> MedicalSearchIndex:
    """Validate a whole ``MedicalSearchIndex`` object, raising :class:`SpecError` naming the field."""
    try:
        return MedicalSearchIndex.model_validate(data)
    except ValidationError as err:
        raise SpecError(_format_validation_error(err, "")) from None


def load_index_file(path: str | Path) -> MedicalSearchIndex:
    """Read a ``MedicalSearchIndex`` YAML file (the first document of that kind)."""
    p = Path(path)
    try:
        docs = [d for d in yaml.safe_load_all(p.read_text(encoding="utf-8")) if d]
    except (OSError, yaml.YAMLError) as err:
        raise SpecError(f"{p}: cannot read index spec: {err}") from None
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == KIND:
            try:
                return parse_index(doc)
            except SpecError as err:
                raise SpecError(f"{p}: {err}") from None
    raise SpecError(f"{p}: no document of kind {KIND}")


def default_index(name: str = "demo") -> MedicalSearchIndex:
    return MedicalSearchIndex(metadata=ObjectMeta(name=validate_index_name(name)))
