"""Status conditions in the metav1.Condition shape, and how each is derived. Pure functions, no cluster.

Condition types are adjectives (``Ready``, ``TopicsReady``, ``CollectionsReady``, ``PredictorReady``,
``WorkersReady``); reasons are CamelCase. ``lastTransitionTime`` only moves when ``status`` changes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from medsearch.provision import EnsureResult

READY = "Ready"
TOPICS = "TopicsReady"
DATABASE = "DatabaseReady"
COLLECTIONS = "CollectionsReady"
PREDICTOR = "PredictorReady"
WORKERS = "WorkersReady"
PART_TYPES = (TOPICS, DATABASE, COLLECTIONS, PREDICTOR, WORKERS)
# Present only once some worker asked for autoscaling; not part of Ready (fixed replicas still work).
AUTOSCALING = "AutoscalingReady"
ALL_TYPES = (READY, *PART_TYPES)
_MAX_MESSAGE = 1024


@dataclass(frozen=True)
class Cond:
    """A condition's desired value (the transition time is filled in by :func:`merge_conditions`)."""

    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def initial_conditions(generation: int, now: str) -> list[dict[str, Any]]:
    """What a first visit writes: every condition ``Unknown``."""
    return merge_conditions(
        [], [Cond(t, "Unknown", "Reconciling", "the operator has not finished its first reconcile") for t in ALL_TYPES],
        generation, now)


def merge_conditions(current: list[dict[str, Any]] | None, updates: list[Cond], generation: int,
                     now: str) -> list[dict[str, Any]]:
    """Apply ``updates`` onto ``current``; keep lastTransitionTime when a condition's status did not change."""
    by_type = {c.get("type"): dict(c) for c in (current or []) if c.get("type")}
    for u in updates:
        old = by_type.get(u.type)
        changed = old is None or old.get("status") != u.status
        by_type[u.type] = {
            "type": u.type,
            "status": u.status,
            "reason": u.reason,
            "message": u.message[:_MAX_MESSAGE],
            "observedGeneration": generation,
            "lastTransitionTime": now if changed or not old or not old.get("lastTransitionTime")
            else old["lastTransitionTime"],
        }
    order = {t: i for i, t in enumerate(ALL_TYPES)}
    return sorted(by_type.values(), key=lambda c: (order.get(c["type"], len(order)), c["type"]))


def find(conditions: list[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    for c in conditions or []:
        if c.get("type") == type_:
            return c
    return None


def transitions(before: list[dict[str, Any]] | None, after: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Conditions whose status or reason changed (those deserve a Kubernetes Event)."""
    out = []
    for c in after:
        old = find(before, c["type"])
        if old is None or old.get("status") != c["status"] or old.get("reason") != c["reason"]:
            out.append(c)
    return out


# --------------------------------------------------------------------------------------- derivations


def from_ensure(type_: str, result: EnsureResult, what: str) -> Cond:
    if result.problems:
        p = result.problems[0]
        rest = f" (+{len(result.problems) - 1} more)" if len(result.problems) > 1 else ""
        return Cond(type_, "False", p.reason, f"{p.field}: {p.message}{rest}")
    parts = []
    if result.created:
        parts.append(f"created {', '.join(result.created)}")
    if result.updated:
        parts.append(f"updated {', '.join(result.updated)}")
    if result.unchanged:
        parts.append(f"{len(result.unchanged)} up to date")
    return Cond(type_, "True", f"{what}Ready", "; ".join(parts) or "nothing to do")


def predictor_condition(isvc: dict[str, Any] | None) -> Cond:
    """PredictorReady mirrors the InferenceService's own ``Ready`` condition."""
    if isvc is None:
        return Cond(PREDICTOR, "Unknown", "InferenceServiceMissing", "the InferenceService does not exist yet")
    status = isvc.get("status") or {}
    ready = find(status.get("conditions"), "Ready")
    if ready is None:
        return Cond(PREDICTOR, "Unknown", "InferenceServicePending",
                    "the InferenceService reports no Ready condition yet")
    value = ready.get("status", "Unknown")
    if value not in ("True", "False", "Unknown"):
        value = "Unknown"
    if value == "True":
        url = status.get("url") or (status.get("address") or {}).get("url") or ""
        return Cond(PREDICTOR, "True", "InferenceServiceReady", f"predictor ready{(' at ' + url) if url else ''}")
    reason = str(ready.get("reason") or "InferenceServiceNotReady")
    if not reason[:1].isalpha():
        reason = "InferenceServiceNotReady"
    return Cond(PREDICTOR, value, reason, str(ready.get("message") or "the InferenceService is not ready"))


def deployment_ready(dep: dict[str, Any]) -> tuple[bool, str]:
    name = dep.get("metadata", {}).get("name", "?")
    want = int((dep.get("spec") or {}).get("replicas", 1))
    st = dep.get("status") or {}
    gen = int(dep.get("metadata", {}).get("generation", 0))
    if int(st.get("observedGeneration", 0)) < gen:
        return False, f"{name}: rollout of generation {gen} not observed yet"
    ready = int(st.get("readyReplicas", 0) or 0)
    updated = int(st.get("updatedReplicas", 0) or 0)
    if ready < want or updated < want:
        return False, f"{name}: {ready}/{want} ready, {updated}/{want} updated"
    return True, f"{name}: {ready}/{want} ready"


def workers_condition(deployments: list[dict[str, Any] | None]) -> Cond:
    if any(d is None for d in deployments):
        return Cond(WORKERS, "Unknown", "DeploymentMissing", "a worker Deployment does not exist yet")
    results = [deployment_ready(d) for d in deployments if d is not None]
    if all(ok for ok, _ in results):
        return Cond(WORKERS, "True", "DeploymentsAvailable", "; ".join(m for _, m in results))
    return Cond(WORKERS, "False", "DeploymentsProgressing", "; ".join(m for ok, m in results if not ok))


def ready_condition(parts: list[Cond]) -> Cond:
    """Ready is True when every part is True; False when any is False (reason of the first); else Unknown."""
    false = [c for c in parts if c.status == "False"]
    unknown = [c for c in parts if c.status == "Unknown"]
    if false:
        return Cond(READY, "False", false[0].reason,
                    "; ".join(f"{c.type}: {c.reason}" for c in false + unknown))
    if unknown:
        return Cond(READY, "Unknown", unknown[0].reason, "; ".join(f"{c.type}: {c.reason}" for c in unknown))
    return Cond(READY, "True", "AllComponentsReady",
                "topics, database schema, collections, predictor and workers are ready")
