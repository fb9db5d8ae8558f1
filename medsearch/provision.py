"""Ensure the Kafka topics, the PostgreSQL schema and the Milvus collections of an index exist as its spec says.

Shared by the operator (reconcile) and ``medsearch up --index FILE``. Each function is idempotent, grows what
may grow (partitions), and reports what it refuses (shrinking partitions, changing a collection's dimension or
metric) as a :class:`Problem` naming the spec field, instead of dropping data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from medsearch.contracts.collections import (
    IMAGE_ANN_FIELDS,
    IMAGE_VECTOR,
    REPORT_ANN_FIELDS,
    REPORT_VECTOR,
    images_index_params,
    images_schema,
    reports_index_params,
    reports_schema,
    scalar_indexes,
)
from medsearch.contracts.naming import names_for
from medsearch.contracts.spec import MedicalSearchIndexSpec

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Problem:
    """A spec change that was refused. ``field`` is the spec path, ``reason`` a CamelCase condition reason."""

    field: str
    reason: str
    message: str


@dataclass
class EnsureResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class ProvisionError(RuntimeError):
    """A backing service is unreachable or failed; ``reason`` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# --------------------------------------------------------------------------------------------- Kafka topics


def kafka_admin(bootstrap: str, *, client_id: str = "medsearch-provision", timeout_ms: int = 10000,
                security: dict[str, Any] | None = None) -> Any:
    """An admin client; ``security``: TLS/SASL options (:func:`medsearch.kafka_security.kafka_security_options`)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        return KafkaAdminClient(
            bootstrap_servers=bootstrap.split(","),
            client_id=client_id,
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,  # kafka-python 3 waits 30 s by default for an unreachable broker
            **(security or {}),
        )
    except (KafkaError, OSError) as err:
        raise ProvisionError("BrokerUnreachable", f"Kafka at {bootstrap} is unreachable: {err}") from err


def topic_partitions(admin: Any, topics: list[str]) -> dict[str, int]:
    """Partition counts of those ``topics`` that exist."""
    existing = set(admin.list_topics())
    wanted = [t for t in topics if t in existing]
    if not wanted:
        return {}
    out: dict[str, int] = {}
    for desc in admin.describe_topics(wanted):
        name = desc.get("name") or desc.get("topic")
        if name in existing and not desc.get("error_code"):
            out[name] = len(desc.get("partitions") or [])
    return out


def ensure_topics(admin: Any, index: str, spec: MedicalSearchIndexSpec) -> EnsureResult:
    from kafka.admin import NewPartitions, NewTopic
    from kafka.errors import IncompatibleBrokerVersion, KafkaError, TopicAlreadyExistsError

    names = names_for(index)
    want = spec.kafka.partitions
    result = EnsureResult()
    try:
        current = topic_partitions(admin, list(names.topics))
        missing = [t for t in names.topics if t not in current]
        if missing:
            new = [
                NewTopic(
                    name=t,
                    num_partitions=want,
                    replication_factor=spec.kafka.replication_factor,
                    topic_configs={"retention.ms": str(spec.kafka.retention_hours * 3600 * 1000)},
                )
                for t in missing
            ]
            try:
                admin.create_topics(new, validate_only=False)
            except TopicAlreadyExistsError:
                pass  # created concurrently: 409-as-success
            result.created.extend(missing)
        grow: dict[str, Any] = {}
        for t, have in current.items():
            if have < want:
                grow[t] = NewPartitions(total_count=want)
            elif have > want:
                result.problems.append(
                    Problem(
                        "spec.kafka.partitions",
                        "PartitionShrinkRefused",
                        f"topic {t} has {have} partitions; Kafka cannot shrink it to {want}",
                    )
                )
            else:
                result.unchanged.append(t)
        if grow:
            try:
                admin.create_partitions(grow)
                result.updated.extend(grow)
            except IncompatibleBrokerVersion:
                result.problems.append(
                    Problem(
                        "spec.kafka.partitions",
                        "PartitionGrowthUnsupported",
                        f"the broker does not support CreatePartitions; topics {sorted(grow)} keep their "
                        "partition count",
                    )
                )
    except ProvisionError:
        raise
    except (KafkaError, OSError) as err:
        raise ProvisionError("BrokerUnreachable", f"Kafka topic provisioning failed: {err}") from err
    return result


def delete_topics(admin: Any, index: str) -> list[str]:
    from kafka.errors import KafkaError

    names = names_for(index)
    try:
        existing = set(admin.list_topics())
        gone = [t for t in names.topics if t in existing]
        if gone:
            admin.delete_topics(gone)
        return gone
    except (KafkaError, OSError) as err:
        raise ProvisionError("BrokerUnreachable", f"Kafka topic deletion failed: {err}") from err


# ------------------------------------------------------------------------------------------- PostgreSQL schema


def ensure_schema(dsn: str, index: str, spec: MedicalSearchIndexSpec, *, password: str | None = None,
                  timeout: float = 10.0) -> EnsureResult:
    """Create the index's PostgreSQL schema and apply the migrations it lacks (:mod:`medsearch.pgstore`).
    ``created`` names the migrations applied now; ``unchanged`` the schema when it was up to date."""
    from medsearch import pgstore

    names = names_for(index)
    result = EnsureResult()
    try:
        with pgstore.connect(dsn, password, timeout=timeout) as conn:
            applied = pgstore.apply_migrations(conn, index, spec)
    except pgstore.DatabaseError as err:
        raise ProvisionError("DatabaseUnreachable", str(err)) from err
    except Exception as err:  # psycopg raises its Error subclasses (permissions, a missing extension...)
        raise ProvisionError("MigrationFailed", f"PostgreSQL schema {names.pg_schema}: {err}") from err
    if applied:
        result.created.extend(f"{names.pg_schema} migration {v}" for v in applied)
    else:
        result.unchanged.append(names.pg_schema)
    return result


def drop_schema(dsn: str, index: str, *, password: str | None = None, timeout: float = 10.0) -> list[str]:
    """Drop the index's PostgreSQL schema with every table in it (``deletionPolicy: Delete``)."""
    from medsearch import pgstore

    try:
        with pgstore.connect(dsn, password, timeout=timeout) as conn:
            dropped = pgstore.drop_schema(conn, index)
    except pgstore.DatabaseError as err:
        raise ProvisionError("DatabaseUnreachable", str(err)) from err
    except Exception as err:  # psycopg errors
        raise ProvisionError("DatabaseUnreachable", f"PostgreSQL schema deletion failed: {err}") from err
    return [names_for(index).pg_schema] if dropped else []


# ---------------------------------------------------------------------------------------- Milvus collections


def milvus_client(uri: str, token: str | None = None, *, timeout: float = 10.0, attempts: int = 3) -> Any:
    """A connected ``MilvusClient``. A failed connect is retried (``attempts`` in all, 1 s apart): a gRPC server
    may refuse one connection transiently (e.g. a GOAWAY "too many pings" to a long-lived client process)."""
    import time

    from pymilvus import MilvusClient

    for attempt in range(1, attempts + 1):
        try:
            return MilvusClient(uri=uri, token=token or "", timeout=timeout)
        except Exception as err:  # pymilvus raises several unrelated types for connection failures
            if attempt == attempts:
                raise ProvisionError("MilvusUnreachable", f"Milvus at {uri} is unreachable: {err}") from err
            log.warning("Milvus at %s refused a connection (attempt %d of %d); retrying", uri, attempt, attempts)
            time.sleep(1.0)
    raise AssertionError("unreachable")  # the loop returns or raises


def _vector_dim_and_metric(client: Any, collection: str, vector_field: str) -> tuple[int | None, str | None]:
    desc = client.describe_collection(collection)
    dim = None
    for f in desc.get("fields", []):
        if f.get("name") == vector_field:
            dim = int((f.get("params") or {}).get("dim", 0)) or None
    metric = None
    try:
        idx = client.describe_index(collection, index_name=vector_field)
        metric = (idx or {}).get("metric_type")
    except Exception:  # no index yet: nothing to compare  # noqa: BLE001
        metric = None
    return dim, metric


def _create_scalar_indexes(client: Any, collection: str, kind: str) -> None:
    """The scalar indexes of :func:`~medsearch.contracts.collections.scalar_indexes`, each on its own; one the
    server does not support is left out with a warning (filters then work without it)."""
    from pymilvus import MilvusClient

    rpc_log = logging.getLogger("pymilvus.decorators")  # logs every refused call at ERROR; we report it below
    for field_name, index_type in scalar_indexes(kind):
        params = MilvusClient.prepare_index_params()
        params.add_index(field_name=field_name, index_type=index_type)
        level = rpc_log.level
        rpc_log.setLevel(logging.CRITICAL)
        try:
            client.create_index(collection, params)
        except Exception as err:  # pymilvus MilvusException
            text = str(err).lower()
            if "not support" not in text and "not implemented" not in text:
                raise
            log.warning("collection %s: Milvus has no %s index for %s (%s); filtering without it", collection,
                        index_type, field_name, err)
        finally:
            rpc_log.setLevel(level)


def collection_fields(client: Any, collection: str) -> list[str]:
    return [str(f.get("name")) for f in client.describe_collection(collection).get("fields", [])]


def ensure_collections(client: Any, index: str, spec: MedicalSearchIndexSpec) -> EnsureResult:
    names = names_for(index)
    result = EnsureResult()
    plan = (
        (names.images_collection, "images", images_schema, images_index_params, IMAGE_VECTOR,
         spec.embedding.dimension, spec.images.metric, "spec.images.metric", "spec.embedding.dimension",
         IMAGE_ANN_FIELDS),
        (names.reports_collection, "reports", reports_schema, reports_index_params, REPORT_VECTOR,
         spec.reports.dimension, spec.reports.metric, "spec.reports.metric", "spec.reports.dimension",
         REPORT_ANN_FIELDS),
    )
    try:
        for coll, kind, schema_fn, index_fn, vfield, dim, metric, metric_field, dim_field, fields in plan:
            if not client.has_collection(coll):
                client.create_collection(coll, schema=schema_fn(spec), index_params=index_fn(spec))
                _create_scalar_indexes(client, coll, kind)
                client.load_collection(coll)
                result.created.append(coll)
                continue
            have_dim, have_metric = _vector_dim_and_metric(client, coll, vfield)
            refused = False
            have_fields = collection_fields(client, coll)
            if have_fields and sorted(have_fields) != sorted(fields):
                result.problems.append(Problem("spec", "CollectionSchemaChanged",
                                               f"collection {coll} has the fields of another medsearch version; "
                                               "rebuild it from PostgreSQL with `medsearch reindex`"))
                refused = True
            if have_dim is not None and have_dim != dim:
                result.problems.append(Problem(dim_field, "IncompatibleDimension",
                                               f"collection {coll} has dimension {have_dim}, spec asks {dim}"))
                refused = True
            if have_metric is not None and have_metric != metric:
                result.problems.append(Problem(metric_field, "IncompatibleMetric",
                                               f"collection {coll} uses {have_metric}, spec asks {metric}; "
                                               "re-create the index to change it"))
                refused = True
            if not refused:
                client.load_collection(coll)
                result.unchanged.append(coll)
    except Exception as err:  # pymilvus raises MilvusException and grpc/http errors alike
        raise ProvisionError("MilvusUnreachable", f"Milvus collection provisioning failed: {err}") from err
    return result


def drop_collections(client: Any, index: str) -> list[str]:
    names = names_for(index)
    dropped = []
    try:
        for coll in names.collections:
            if client.has_collection(coll):
                client.drop_collection(coll)
                dropped.append(coll)
    except Exception as err:  # see ensure_collections
        raise ProvisionError("MilvusUnreachable", f"Milvus collection deletion failed: {err}") from err
    return dropped


def is_not_loaded(err: BaseException) -> bool:
    """Whether a Milvus error says the collection is not loaded (milvus-lite releases every collection when it
    restarts; a cluster may have one released by an operator)."""
    text = str(err).lower()
    return "released" in text or "not loaded" in text


def ensure_loaded(client: Any, collection: str) -> bool:
    """Load ``collection`` when Milvus says it is not loaded; returns whether it had to. Needed after a restart:
    milvus-lite comes back with every collection released, and ``count(*)`` on a released collection answers 0
    instead of failing."""
    from pymilvus.client.types import LoadState

    state = client.get_load_state(collection).get("state")
    if state in (LoadState.Loaded, LoadState.Loading, LoadState.NotExist):
        return False
    log.warning("collection %s is not loaded (state %s; Milvus restarted?): loading it", collection, state)
    client.load_collection(collection)
    return True


def with_loaded(client: Any, collection: str, fn: Callable[[], T]) -> T:
    """``fn()``; when Milvus answers that ``collection`` is not loaded, load it and call ``fn`` once more."""
    try:
        return fn()
    except Exception as err:  # pymilvus raises MilvusException subclasses
        if not is_not_loaded(err):
            raise
        log.warning("collection %s was not loaded (Milvus restarted?): loading it", collection)
        client.load_collection(collection)
        return fn()


def count_rows(client: Any, collection: str) -> int:
    """Exact row count (``count(*)``), 0 when the collection does not exist."""
    if not client.has_collection(collection):
        return 0
    ensure_loaded(client, collection)
    res = with_loaded(client, collection, lambda: client.query(collection, filter="", output_fields=["count(*)"]))
    return int(res[0]["count(*)"]) if res else 0
