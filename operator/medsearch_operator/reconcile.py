"""One reconcile pass of a ``MedicalSearchIndex``: level-based, idempotent, no kopf in here.

Given the object as the API server has it, the pass server-side-applies the children, ensures topics, the
PostgreSQL schema and the collections through ``medsearch.provision`` (the same code ``medsearch up --index``
runs), reads the children's status and returns the index status to write. External failures become ``False``
conditions with a CamelCase reason and ``retry=True``; the caller retries with backoff.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from medsearch import provision
from medsearch.contracts.naming import IndexNames, IndexRef, names_of
from medsearch.contracts.spec import SpecError, parse_spec
from medsearch.kafka_security import KafkaSecurityError, kafka_security_options
from medsearch_operator import children as ch
from medsearch_operator import status as st
from medsearch_operator.kube import Kube, KubeError
from medsearch_operator.settings import OperatorSettings

log = logging.getLogger(__name__)


@dataclass
class Services:
    """Factories of admin clients for the shared services (tests and the handlers pass real ones)."""

    kafka_admin: Callable[[], Any]
    milvus_client: Callable[[], Any]
    # (index, spec) -> EnsureResult: the index's PostgreSQL schema (None: not managed by this operator)
    ensure_schema: Callable[[IndexRef, Any], provision.EnsureResult] | None = None
    drop_schema: Callable[[IndexRef], list[str]] | None = None

    @classmethod
    def from_settings(cls, settings: OperatorSettings) -> Services:
        timeout = settings.operator_service_timeout_seconds
        token = settings.milvus_token.get_secret_value() if settings.milvus_token else None
        return cls(
            kafka_admin=lambda: provision.kafka_admin(settings.kafka_bootstrap, client_id="medsearch-operator",
                                                      security=_kafka_security(settings),
                                                      timeout_ms=int(timeout * 1000)),
            milvus_client=lambda: provision.milvus_client(settings.milvus_uri, token, timeout=timeout),
            ensure_schema=lambda index, spec: provision.ensure_schema(
                settings.postgres_dsn, index, spec, password=settings.postgres_secret(), timeout=timeout),
            drop_schema=lambda index: provision.drop_schema(
                settings.postgres_dsn, index, password=settings.postgres_secret(), timeout=timeout),
        )


@dataclass
class Outcome:
    status: dict[str, Any]
    transitions: list[dict[str, Any]] = field(default_factory=list)
    retry: bool = False
    failures: list[str] = field(default_factory=list)


def _kafka_security(settings: OperatorSettings) -> dict[str, Any]:
    """TLS/SASL options; contradictory settings become TopicsReady=False with the setting to fix."""
    try:
        return kafka_security_options(settings)
    except KafkaSecurityError as err:
        raise provision.ProvisionError("KafkaSecurityMisconfigured", str(err)) from err


def _close(client: Any) -> None:
    try:
        client.close()
    except Exception as err:  # closing a broken client must not hide the real result  # noqa: BLE001
        log.debug("closing %s failed: %s", type(client).__name__, err)


def _topics(services: Services, index: IndexNames, spec: Any) -> tuple[st.Cond, bool]:
    try:
        admin = services.kafka_admin()
    except provision.ProvisionError as err:
        return st.Cond(st.TOPICS, "False", err.reason, str(err)), True
    try:
        return st.from_ensure(st.TOPICS, provision.ensure_topics(admin, index, spec), "Topics"), False
    except provision.ProvisionError as err:
        return st.Cond(st.TOPICS, "False", err.reason, str(err)), True
    finally:
        _close(admin)


def _database(services: Services, index: IndexNames, spec: Any) -> tuple[st.Cond, bool]:
    if services.ensure_schema is None:
        return st.Cond(st.DATABASE, "True", "NotManaged", "no PostgreSQL configured for this operator"), False
    try:
        return st.from_ensure(st.DATABASE, services.ensure_schema(index, spec), "Database"), False
    except provision.ProvisionError as err:
        return st.Cond(st.DATABASE, "False", err.reason, str(err)), True


def _collections(services: Services, index: IndexNames, spec: Any) -> tuple[st.Cond, bool, dict[str, int]]:
    counts: dict[str, int] = {}
    try:
        client = services.milvus_client()
    except provision.ProvisionError as err:
        return st.Cond(st.COLLECTIONS, "False", err.reason, str(err)), True, counts
    try:
        cond = st.from_ensure(st.COLLECTIONS, provision.ensure_collections(client, index, spec), "Collections")
        names = names_of(index)
        try:
            counts = {"images": provision.count_rows(client, names.images_collection),
                      "reports": provision.count_rows(client, names.reports_collection)}
        except Exception as err:  # counts are informative; a failed count must not fail the reconcile  # noqa: BLE001
            log.warning("index %s: counting rows failed: %s", index, err)
        return cond, False, counts
    except provision.ProvisionError as err:
        return st.Cond(st.COLLECTIONS, "False", err.reason, str(err)), True, counts
    finally:
        _close(client)


def reconcile(body: dict[str, Any], kube: Kube, services: Services, settings: OperatorSettings,
              now: str | None = None) -> Outcome:
    now = now or st.now_rfc3339()
    meta = body["metadata"]
    owner = ch.Owner.from_body(body)
    generation = int(meta.get("generation") or 0)
    old_status = body.get("status") or {}
    old_conditions = list(old_status.get("conditions") or [])

    try:
        spec = parse_spec(dict(body.get("spec") or {}))
    except SpecError as err:
        conds = [st.Cond(t, "Unknown", "InvalidSpec", "waiting for a valid spec") for t in st.PART_TYPES]
        conds.append(st.Cond(st.READY, "False", "InvalidSpec", str(err)))
        merged = st.merge_conditions(old_conditions, conds, generation, now)
        return Outcome({"observedGeneration": generation, "conditions": merged},
                       st.transitions(old_conditions, merged), retry=False, failures=[str(err)])

    retry = False
    failures: list[str] = []
    applied: dict[str, dict[str, Any] | None] = {}
    predictor_cond: st.Cond | None = None
    workers_cond: st.Cond | None = None
    keda, auto_cond = _autoscaling(kube, owner, spec, settings, old_conditions)
    if auto_cond is not None and auto_cond.reason == "ApplyFailed":
        retry = True
        failures.append(auto_cond.message)
    for manifest in ch.build_children(owner, spec, settings, keda=keda):
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        try:
            applied[name] = kube.apply(manifest)
        except KubeError as err:
            applied[name] = None
            retry = True
            failures.append(str(err))
            if kind == "InferenceService":
                reason = "InferenceServiceCRDMissing" if err.status == 404 else "ApplyFailed"
                hint = " (is KServe installed?)" if err.status == 404 else ""
                predictor_cond = st.Cond(st.PREDICTOR, "False", reason, f"{err}{hint}")
            else:  # the ConfigMap or a worker Deployment: the workers cannot be right
                workers_cond = st.Cond(st.WORKERS, "False", "ApplyFailed", str(err))

    topics_cond, topics_retry = _topics(services, owner.names, spec)
    db_cond, db_retry = _database(services, owner.names, spec)
    colls_cond, colls_retry, counts = _collections(services, owner.names, spec)
    retry = retry or topics_retry or db_retry or colls_retry
    if predictor_cond is None:
        predictor_cond = st.predictor_condition(applied.get(ch.inference_service_name(owner.name)))
    if workers_cond is None:
        workers_cond = st.workers_condition([applied.get(ch.worker_name(owner.name, k)) for k in ch.WORKER_KINDS])
    parts = [topics_cond, db_cond, colls_cond, predictor_cond, workers_cond]
    extra = [auto_cond] if auto_cond is not None else []
    merged = st.merge_conditions(old_conditions, [*parts, st.ready_condition(parts), *extra], generation, now)
    names = owner.names
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": merged,
        "topics": list(names.topics),
        "databaseSchema": names.pg_schema,
        "collections": list(names.collections),
        "predictor": ch.inference_service_name(owner.name),
        "modelServerUrl": ch.model_server_url(owner.name, owner.namespace),
    }
    if counts:
        status.update(counts)
    for cond in (topics_cond, db_cond, colls_cond):
        if cond.status == "False":
            failures.append(f"{cond.type}: {cond.reason}: {cond.message}")
    return Outcome(status, st.transitions(old_conditions, merged), retry=retry, failures=failures)


def _autoscaling(kube: Kube, owner: ch.Owner, spec: Any, settings: OperatorSettings,
                 old_conditions: list[dict[str, Any]]) -> tuple[bool, st.Cond | None]:
    """Whether KEDA drives the autoscaled workers, and the AutoscalingReady condition (None when autoscaling was
    never asked for). KEDA's presence is learnt by applying the first ScaledObject: a kind the API server does
    not serve answers 404, and the workers then keep their fixed ``replicas``. ScaledObjects of workers that no
    longer ask for autoscaling are deleted (they would fight the operator over the replica count)."""
    kinds = ch.autoscaled_kinds(spec)
    had = any(c.get("type") == st.AUTOSCALING for c in old_conditions)
    if had:
        for k in ch.WORKER_KINDS:
            if k not in kinds:
                with contextlib.suppress(KubeError):
                    kube.delete("keda.sh/v1alpha1", "ScaledObject", owner.namespace,
                                ch.scaled_object_name(owner.name, k))
    if not kinds:
        if had:
            return False, st.Cond(st.AUTOSCALING, "False", "NotRequested",
                                  "no worker sets spec.workers.*.autoscaling: fixed replicas")
        return False, None
    try:
        kube.apply(ch.build_scaled_object(owner, spec, settings, kinds[0]))
    except KubeError as err:
        if err.status == 404:
            return False, st.Cond(st.AUTOSCALING, "False", "KedaNotInstalled",
                                  "KEDA's ScaledObject kind is not served by this cluster: the workers run with "
                                  "their fixed spec.workers.*.replicas (install KEDA to scale on consumer lag)")
        return False, st.Cond(st.AUTOSCALING, "False", "ApplyFailed", str(err))
    scaled = ", ".join(ch.scaled_object_name(owner.name, k) for k in kinds)
    return True, st.Cond(st.AUTOSCALING, "True", "ScaledObjectsApplied",
                         f"KEDA scales {', '.join(f'{k} workers' for k in kinds)} on consumer lag ({scaled}); "
                         f"replicas capped at {spec.kafka.partitions} partitions")


@dataclass
class Teardown:
    topics: list[str]
    collections: list[str]
    schemas: list[str] = field(default_factory=list)


def teardown(index: IndexNames, deletion_policy: str, services: Services) -> Teardown:
    """Drop the topics, the PostgreSQL schema and the collections of ``index`` (scoped by its namespace: a same-named
    index in another namespace keeps its own) when the policy is ``Delete``; raises ProvisionError to be
    retried."""
    if deletion_policy != "Delete":
        return Teardown([], [])
    admin = services.kafka_admin()
    try:
        topics = provision.delete_topics(admin, index)
    finally:
        _close(admin)
    client = services.milvus_client()
    try:
        collections = provision.drop_collections(client, index)
    finally:
        _close(client)
    schemas = services.drop_schema(index) if services.drop_schema is not None else []
    return Teardown(topics, collections, schemas)


def backoff_seconds(retry: int, settings: OperatorSettings) -> float:
    return float(min(settings.operator_retry_max_seconds, settings.operator_retry_min_seconds * (2 ** max(retry, 0))))
