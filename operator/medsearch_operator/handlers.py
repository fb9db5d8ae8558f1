"""kopf wiring: every decorator of the operator lives in this module; the logic lives in ``reconcile``.

Reconcile is level-based: create/update/resume react at once, a timer re-runs the same pass every
``MEDSEARCH_OPERATOR_RESYNC_SECONDS`` to repair drift and refresh counts and child status. The finalizer
``medsearch.io/finalizer`` holds deletion until ``spec.deletionPolicy`` has been honoured.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import kopf

from medsearch.contracts.naming import names_for
from medsearch.contracts.spec import API_GROUP, API_VERSION, KIND, PLURAL
from medsearch.provision import ProvisionError
from medsearch_operator.kube import Kube, KubeError
from medsearch_operator.reconcile import Services, backoff_seconds, reconcile, teardown
from medsearch_operator.settings import OperatorSettings

Log = logging.Logger | logging.LoggerAdapter[Any]
FINALIZER = f"{API_GROUP}/finalizer"
RESOURCE = (API_GROUP, API_VERSION, PLURAL)

# Read once at import: kopf needs the timer interval when the decorator runs.
_SETTINGS = OperatorSettings()
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(uid: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(uid, threading.Lock())


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The pod's ServiceAccount in a cluster, else ``$KUBECONFIG`` (read now, not at import time)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: Any, logger: Log, **_: Any) -> None:
    ours = OperatorSettings()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration")
    settings.posting.level = logging.WARNING  # only our explicit events, not every handler log line
    # A resync tick (a sync handler in a thread) may be running when an index is deleted; kopf holds the
    # finalizer until it ends. Our ticks are bounded by the service timeouts: wait for them, poll often.
    settings.background.instant_exit_timeout = ours.operator_service_timeout_seconds * 2 + 5
    settings.background.cancellation_polling = 2
    settings.watching.server_timeout = 120
    settings.watching.client_timeout = 150
    memo["settings"] = ours
    memo["kube"] = Kube.from_environment(ours.operator_field_manager)
    memo["services"] = Services.from_settings(ours)
    logger.info("medsearch operator: kafka=%s milvus=%s resync=%ss", ours.kafka_bootstrap, ours.milvus_uri,
                ours.operator_resync_seconds)


def _events(body: Any, transitions: list[dict[str, Any]]) -> None:
    for c in transitions:
        healthy = c["status"] == "True" or (c["status"] == "Unknown" and c["reason"] == "Reconciling")
        kopf.event(body, type="Normal" if healthy else "Warning", reason=c["reason"],
                   message=f"{c['type']}={c['status']}: {c['message']}"[:1024])


def _run(body: Any, memo: Any, retry: int, logger: Log, *, raise_on_retry: bool) -> None:
    settings: OperatorSettings = memo["settings"]
    try:
        _run_locked(body, memo, retry, logger, raise_on_retry=raise_on_retry)
    except KubeError as err:
        if err.status == 404:
            return  # the index is gone; nothing to reconcile
        raise kopf.TemporaryError(f"Kubernetes API: {err}", delay=backoff_seconds(retry, settings)) from err


def _run_locked(body: Any, memo: Any, retry: int, logger: Log, *, raise_on_retry: bool) -> None:
    settings: OperatorSettings = memo["settings"]
    kube: Kube = memo["kube"]
    services: Services = memo["services"]
    meta = body["metadata"]
    with _lock_for(meta["uid"]):
        # Level-based: act on the object as it is now, not on the snapshot this handler was called with (a
        # timer tick that waited for the lock must not re-apply a spec that an update has just replaced).
        fresh = kube.get(f"{API_GROUP}/{API_VERSION}", KIND, meta["namespace"], meta["name"])
        if fresh is None or fresh["metadata"].get("uid") != meta["uid"] or fresh["metadata"].get("deletionTimestamp"):
            return
        obj = {"metadata": fresh["metadata"], "spec": dict(fresh.get("spec") or {}),
               "status": dict(fresh.get("status") or {})}
        meta = obj["metadata"]
        if not obj["status"].get("conditions"):
            from medsearch_operator.status import initial_conditions, now_rfc3339

            first = {"observedGeneration": int(meta.get("generation") or 0),
                     "conditions": initial_conditions(int(meta.get("generation") or 0), now_rfc3339())}
            kube.patch_index_status(meta["namespace"], meta["name"], first)
            obj["status"] = first
        outcome = reconcile(obj, kube, services, settings)
        kube.patch_index_status(meta["namespace"], meta["name"], outcome.status)
    _events(body, outcome.transitions)
    if outcome.retry:
        delay = backoff_seconds(retry, settings)
        logger.warning("reconcile incomplete, retrying in %.0fs: %s", delay, "; ".join(outcome.failures)[:500])
        if raise_on_retry:
            raise kopf.TemporaryError("; ".join(outcome.failures)[:500] or "retrying", delay=delay)


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
def on_change(body: kopf.Body, memo: Any, retry: int, logger: Log, **_: Any) -> None:
    _run(body, memo, retry, logger, raise_on_retry=True)


@kopf.timer(*RESOURCE, interval=_SETTINGS.operator_resync_seconds, initial_delay=_SETTINGS.operator_resync_seconds)
def resync(body: kopf.Body, memo: Any, logger: Log, **_: Any) -> None:
    # Failures are already in the status; the next tick retries, so the timer itself never errors.
    _run(body, memo, 0, logger, raise_on_retry=False)


@kopf.on.delete(*RESOURCE)
def on_delete(body: kopf.Body, spec: kopf.Spec, memo: Any, retry: int, logger: Log,
              **_: Any) -> None:
    settings: OperatorSettings = memo["settings"]
    policy = str(spec.get("deletionPolicy", "Retain"))
    name = body["metadata"]["name"]
    try:
        done = teardown(names_for(name, body["metadata"]["namespace"]), policy, memo["services"])
    except ProvisionError as err:
        kopf.event(body, type="Warning", reason=err.reason, message=f"deletion waits: {err}"[:1024])
        raise kopf.TemporaryError(f"{err.reason}: {err}", delay=backoff_seconds(retry, settings)) from err
    if policy == "Delete":
        message = (f"deletionPolicy=Delete: dropped topics {done.topics}, PostgreSQL schemas {done.schemas} and "
                   f"collections {done.collections}")
        kopf.event(body, type="Normal", reason="ResourcesDeleted", message=message[:1024])
    else:
        message = f"deletionPolicy=Retain: topics, PostgreSQL schema and collections of {name} are kept"
        kopf.event(body, type="Normal", reason="ResourcesRetained", message=message)
    logger.info("%s", message)
