"""Conditions and one reconcile pass, with a fake API server and fake Kafka/Milvus admin clients."""

from __future__ import annotations

from typing import Any

import pytest
from medsearch_operator import status as st
from medsearch_operator.kube import KubeError, resource_path
from medsearch_operator.reconcile import Services, backoff_seconds, reconcile, teardown
from medsearch_operator.settings import OperatorSettings

from medsearch.contracts.naming import IndexNames, names_for
from medsearch.provision import ProvisionError

N = names_for("idx", "ns")  # the names of body(): index idx in namespace ns

SETTINGS = OperatorSettings(kafka_bootstrap="k:9092", milvus_uri="http://m:19530")
T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


# ------------------------------------------------------------------------------------------- conditions


def test_first_visit_is_unknown_everywhere() -> None:
    conds = st.initial_conditions(3, T0)
    assert [c["type"] for c in conds] == list(st.ALL_TYPES)
    assert {c["status"] for c in conds} == {"Unknown"}
    assert all(c["observedGeneration"] == 3 and c["lastTransitionTime"] == T0 for c in conds)


def test_transition_time_moves_only_when_status_changes() -> None:
    first = st.merge_conditions([], [st.Cond("TopicsReady", "False", "BrokerUnreachable", "down")], 1, T0)
    same = st.merge_conditions(first, [st.Cond("TopicsReady", "False", "BrokerUnreachable", "still down")], 2, T1)
    assert same[0]["lastTransitionTime"] == T0 and same[0]["message"] == "still down"
    assert same[0]["observedGeneration"] == 2
    healed = st.merge_conditions(same, [st.Cond("TopicsReady", "True", "TopicsReady", "ok")], 2, T1)
    assert healed[0]["lastTransitionTime"] == T1
    assert st.transitions(same, healed) == healed
    assert st.transitions(healed, healed) == []


def test_ready_summarises_the_parts() -> None:
    ok = [st.Cond(t, "True", "Fine", "") for t in st.PART_TYPES]
    assert st.ready_condition(ok).status == "True"
    one_unknown = [*ok[:3], st.Cond(st.WORKERS, "Unknown", "DeploymentMissing", "")]
    assert (st.ready_condition(one_unknown).status, st.ready_condition(one_unknown).reason) == (
        "Unknown", "DeploymentMissing")
    broken = [st.Cond(st.TOPICS, "False", "BrokerUnreachable", ""), *ok[1:3], one_unknown[3]]
    r = st.ready_condition(broken)
    assert (r.status, r.reason) == ("False", "BrokerUnreachable")
    assert "WorkersReady: DeploymentMissing" in r.message


@pytest.mark.parametrize(
    ("isvc", "expected"),
    [
        (None, ("Unknown", "InferenceServiceMissing")),
        ({"status": {}}, ("Unknown", "InferenceServicePending")),
        ({"status": {"conditions": [{"type": "Ready", "status": "True"}], "url": "http://x"}},
         ("True", "InferenceServiceReady")),
        ({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "RevisionMissing",
                                     "message": "no revision"}]}}, ("False", "RevisionMissing")),
        ({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "1bad"}]}},
         ("False", "InferenceServiceNotReady")),
    ],
)
def test_predictor_condition_mirrors_the_inference_service(isvc: Any, expected: tuple[str, str]) -> None:
    c = st.predictor_condition(isvc)
    assert (c.status, c.reason) == expected


def _dep(name: str, replicas: int, ready: int, gen: int = 2, observed: int = 2) -> dict[str, Any]:
    return {"metadata": {"name": name, "generation": gen}, "spec": {"replicas": replicas},
            "status": {"observedGeneration": observed, "readyReplicas": ready, "updatedReplicas": ready}}


def test_workers_condition_from_deployment_status() -> None:
    assert st.workers_condition([_dep("a", 2, 2), _dep("b", 0, 0)]).status == "True"
    stale = st.workers_condition([_dep("a", 2, 2, gen=3, observed=2), _dep("b", 1, 1)])
    assert (stale.status, stale.reason) == ("False", "DeploymentsProgressing") and "generation 3" in stale.message
    short = st.workers_condition([_dep("a", 2, 1), _dep("b", 1, 1)])
    assert "a: 1/2 ready" in short.message
    assert st.workers_condition([None, _dep("b", 1, 1)]).status == "Unknown"


# ---------------------------------------------------------------------------------------------- reconcile


class FakeKube:
    def __init__(self, missing_kinds: tuple[str, ...] = ()) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.missing = missing_kinds
        self.applies = 0

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.applies += 1
        if manifest["kind"] in self.missing:
            raise KubeError(404, f"{manifest['kind']} is not served")
        key = (manifest["kind"], manifest["metadata"]["name"])
        old = self.objects.get(key, {})
        obj = {**manifest, "metadata": {**manifest["metadata"], "generation": 1}, "status": old.get("status", {})}
        self.objects[key] = obj
        return obj

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        return self.objects.pop((kind, name), None) is not None


class FakeAdmin:
    """Enough of kafka-python's KafkaAdminClient for provision.ensure_topics."""

    def __init__(self, partitions: dict[str, int] | None = None) -> None:
        self.topics = dict(partitions or {})
        self.closed = False

    def list_topics(self) -> list[str]:
        return list(self.topics)

    def describe_topics(self, names: list[str]) -> list[dict[str, Any]]:
        return [{"name": n, "error_code": 0, "partitions": [{}] * self.topics[n]} for n in names]

    def create_topics(self, new: list[Any], validate_only: bool = False) -> None:
        for t in new:
            self.topics[t.name] = t.num_partitions

    def delete_topics(self, names: list[str]) -> None:
        for n in names:
            self.topics.pop(n)

    def close(self) -> None:
        self.closed = True


class FakeMilvus:
    def __init__(self) -> None:
        self.collections: dict[str, str] = {}
        self.loaded: set[str] = set()

    def has_collection(self, name: str) -> bool:
        return name in self.collections

    def create_collection(self, name: str, schema: Any, index_params: Any) -> None:
        self.collections[name] = "COSINE"

    def create_index(self, name: str, index_params: Any) -> None:
        assert name in self.collections

    def load_collection(self, name: str) -> None:
        self.loaded.add(name)

    def get_load_state(self, name: str) -> dict[str, Any]:
        from pymilvus.client.types import LoadState

        if name not in self.collections:
            return {"state": LoadState.NotExist}
        return {"state": LoadState.Loaded if name in self.loaded else LoadState.NotLoad}

    def describe_collection(self, name: str) -> dict[str, Any]:
        return {"fields": []}

    def describe_index(self, name: str, index_name: str) -> dict[str, Any]:
        return {"metric_type": self.collections[name]}

    def query(self, name: str, filter: str, output_fields: list[str]) -> list[dict[str, int]]:
        return [{"count(*)": 5 if name.endswith("_images") else 2}]

    def drop_collection(self, name: str) -> None:
        del self.collections[name]

    def close(self) -> None:
        pass


def body(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "idx", "namespace": "ns", "uid": "u1", "generation": 4},
            "spec": spec or {"kafka": {"partitions": 2}}, "status": status or {}}


def unreachable() -> Any:
    raise ProvisionError("BrokerUnreachable", "Kafka at k:9092 is unreachable")


def test_reconcile_creates_everything_and_reports_counts() -> None:
    kube, admin, milvus = FakeKube(), FakeAdmin(), FakeMilvus()
    out = reconcile(body(), kube, Services(lambda: admin, lambda: milvus), SETTINGS, now=T0)  # type: ignore[arg-type]
    assert admin.topics == {"ns.idx.dicom": 2, "ns.idx.reports": 2, "ns.idx.dlq": 2} and admin.closed
    assert set(milvus.collections) == set(N.collections)
    assert (out.status["topics"], out.status["collections"]) == (list(N.topics), list(N.collections))
    assert kube.applies == 6  # ConfigMap, two worker Deployments, InferenceService, two NetworkPolicies
    conds = {c["type"]: c for c in out.status["conditions"]}
    assert conds["TopicsReady"]["status"] == "True" and conds["CollectionsReady"]["status"] == "True"
    assert conds["PredictorReady"]["reason"] == "InferenceServicePending"
    assert conds["WorkersReady"]["status"] == "False"
    assert conds["Ready"]["status"] == "False"
    assert out.status["observedGeneration"] == 4 and out.status["images"] == 5 and out.status["reports"] == 2
    assert not out.retry
    again = reconcile({**body(), "status": out.status}, kube, Services(lambda: admin, lambda: milvus), SETTINGS,
                      now=T1)  # type: ignore[arg-type]
    assert again.transitions == []  # idempotent: nothing changed, nothing to announce
    assert {c["lastTransitionTime"] for c in again.status["conditions"]} == {T0}


def test_broker_outage_is_a_false_condition_and_a_retry() -> None:
    out = reconcile(body(), FakeKube(), Services(unreachable, FakeMilvus), SETTINGS, now=T0)  # type: ignore[arg-type]
    conds = {c["type"]: c for c in out.status["conditions"]}
    assert (conds["TopicsReady"]["status"], conds["TopicsReady"]["reason"]) == ("False", "BrokerUnreachable")
    assert conds["CollectionsReady"]["status"] == "True"
    assert conds["Ready"]["reason"] == "BrokerUnreachable"
    assert out.retry


def test_database_is_provisioned_by_the_shared_code_and_an_outage_is_a_retry() -> None:
    from medsearch.provision import EnsureResult, ProvisionError

    calls: list[IndexNames] = []

    def ensure(index: IndexNames, spec: Any) -> EnsureResult:
        calls.append(index)
        return EnsureResult(created=[f"{index.pg_schema} migration 1"])

    out = reconcile(body(), FakeKube(), Services(FakeAdmin, FakeMilvus, ensure), SETTINGS,  # type: ignore[arg-type]
                    now=T0)
    db = next(c for c in out.status["conditions"] if c["type"] == "DatabaseReady")
    assert calls == [N] and (db["status"], db["reason"]) == ("True", "DatabaseReady")
    assert out.status["databaseSchema"] == N.pg_schema

    def down(index: str, spec: Any) -> EnsureResult:
        raise ProvisionError("DatabaseUnreachable", "PostgreSQL at postgresql://x is unreachable")

    out = reconcile(body(), FakeKube(), Services(FakeAdmin, FakeMilvus, down), SETTINGS,  # type: ignore[arg-type]
                    now=T0)
    conds = {c["type"]: c for c in out.status["conditions"]}
    assert (conds["DatabaseReady"]["status"], conds["DatabaseReady"]["reason"]) == ("False", "DatabaseUnreachable")
    assert conds["Ready"]["status"] == "False" and out.retry


def test_refused_shrink_names_the_field_without_retry_storm() -> None:
    admin = FakeAdmin(dict.fromkeys(N.topics, 4))
    out = reconcile(body(), FakeKube(), Services(lambda: admin, FakeMilvus), SETTINGS, now=T0)  # type: ignore[arg-type]
    topics = next(c for c in out.status["conditions"] if c["type"] == "TopicsReady")
    assert (topics["status"], topics["reason"]) == ("False", "PartitionShrinkRefused")
    assert topics["message"].startswith("spec.kafka.partitions:")
    assert admin.topics[N.dicom_topic] == 4
    assert not out.retry  # a spec problem waits for a spec change (and the periodic resync)


def test_missing_kserve_crd_is_named() -> None:
    out = reconcile(body(), FakeKube(missing_kinds=("InferenceService",)), Services(FakeAdmin, FakeMilvus),
                    SETTINGS, now=T0)  # type: ignore[arg-type]
    pred = next(c for c in out.status["conditions"] if c["type"] == "PredictorReady")
    assert pred["reason"] == "InferenceServiceCRDMissing" and "KServe" in pred["message"]
    assert out.retry


def test_invalid_spec_is_reported_not_applied() -> None:
    kube = FakeKube()
    out = reconcile(body({"predictor": {"minReplicas": 3, "maxReplicas": 2}}), kube,
                    Services(unreachable, unreachable), SETTINGS, now=T0)  # type: ignore[arg-type]
    ready = next(c for c in out.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.predictor.maxReplicas" in ready["message"]
    assert kube.applies == 0 and not out.retry


def test_teardown_follows_the_deletion_policy_and_spares_a_same_named_index_elsewhere() -> None:
    other = names_for("idx", "other-ns")   # same name, another namespace: must survive
    admin, milvus = FakeAdmin(dict.fromkeys([*N.topics, *other.topics], 1)), FakeMilvus()
    milvus.collections = dict.fromkeys([*N.collections, *other.collections], "COSINE")
    dropped: list[IndexNames] = []
    services = Services(lambda: admin, lambda: milvus, drop_schema=lambda i: dropped.append(i) or [i.pg_schema])
    assert teardown(N, "Retain", services).topics == []
    assert len(admin.topics) == 6 and not dropped
    done = teardown(N, "Delete", services)
    assert sorted(done.topics) == ["ns.idx.dicom", "ns.idx.dlq", "ns.idx.reports"]
    assert done.schemas == [N.pg_schema] and dropped == [N]
    assert admin.topics == dict.fromkeys(other.topics, 1)
    assert milvus.collections == dict.fromkeys(other.collections, "COSINE")
    with pytest.raises(ProvisionError):
        teardown(N, "Delete", Services(unreachable, lambda: milvus))


def test_backoff_grows_and_is_capped() -> None:
    s = OperatorSettings(operator_retry_min_seconds=1, operator_retry_max_seconds=10)
    assert [backoff_seconds(r, s) for r in range(6)] == [1, 2, 4, 8, 10, 10]


def test_resource_paths() -> None:
    assert resource_path("v1", "ConfigMap", "ns", "a") == "/api/v1/namespaces/ns/configmaps/a"
    assert resource_path("apps/v1", "Deployment", "ns", "a") == "/apis/apps/v1/namespaces/ns/deployments/a"
    assert resource_path("medsearch.io/v1alpha1", "MedicalSearchIndex", "ns", "a", "status") == (
        "/apis/medsearch.io/v1alpha1/namespaces/ns/medicalsearchindexes/a/status")
    with pytest.raises(KubeError):
        resource_path("v1", "Secret", "ns", "a")


class _Resp:
    def __init__(self, status: int, data: bytes) -> None:
        self.status, self.data = status, data

    def read(self) -> None:
        pass


class _FakeApiClient:
    """The two methods of kubernetes.client.ApiClient that Kube uses."""

    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome
        self.calls: list[tuple[str, str, Any, Any]] = []

    def param_serialize(self, method: str, path: str, query_params: Any, header_params: Any, body: Any,
                        auth_settings: Any) -> tuple[str, str, Any, Any, None]:
        self.calls.append((method, path, query_params, header_params))
        return method, path, header_params, body, None

    def call_api(self, method: str, url: str, headers: Any, body: Any, post: Any, _request_timeout: Any) -> _Resp:
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome  # type: ignore[no-any-return]


def test_kube_apply_is_a_forced_server_side_apply_and_errors_are_typed() -> None:
    import json

    from medsearch_operator.kube import Kube
    from urllib3.exceptions import MaxRetryError

    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "ns"}}
    api = _FakeApiClient(_Resp(200, json.dumps(cm).encode()))
    assert Kube(api, "medsearch-operator").apply(cm) == cm
    method, path, query, headers = api.calls[0]
    assert (method, path) == ("PATCH", "/api/v1/namespaces/ns/configmaps/a")
    assert query == [("fieldManager", "medsearch-operator"), ("force", "true")]
    assert headers["Content-Type"] == "application/apply-patch+yaml"
    missing = Kube(_FakeApiClient(_Resp(404, b"")), "m")
    assert missing.get("v1", "ConfigMap", "ns", "a") is None
    with pytest.raises(KubeError) as err:
        missing.apply(cm)
    assert err.value.status == 404
    with pytest.raises(KubeError) as err:
        Kube(_FakeApiClient(_Resp(403, b'{"message": "configmaps is forbidden"}')), "m").apply(cm)
    assert err.value.status == 403 and "forbidden" in str(err.value)
    with pytest.raises(KubeError) as err:
        Kube(_FakeApiClient(MaxRetryError(None, "/x", "refused")), "m").apply(cm)  # type: ignore[arg-type]
    assert err.value.status == 0


AUTOSCALED = {"kafka": {"partitions": 3},
              "workers": {"dicom": {"replicas": 2, "autoscaling": {"minReplicas": 1, "maxReplicas": 8,
                                                                   "lagThreshold": 50}}}}


def _conds(out: Any) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in out.status["conditions"]}


def test_autoscaling_with_keda_scaled_object_owns_the_replicas() -> None:
    kube, admin, milvus = FakeKube(), FakeAdmin(), FakeMilvus()
    services = Services(lambda: admin, lambda: milvus)
    out = reconcile(body(AUTOSCALED), kube, services, SETTINGS, now=T0)  # type: ignore[arg-type]
    scaled = kube.objects[("ScaledObject", "idx-dicom-worker-lag")]["spec"]
    assert scaled["scaleTargetRef"]["name"] == "idx-dicom-worker"
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (1, 3)  # capped at the 3 partitions
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == "medsearch-ns.idx-dicom"
    assert trigger["metadata"]["topic"] == "ns.idx.dicom" and trigger["metadata"]["lagThreshold"] == "50"
    assert "replicas" not in kube.objects[("Deployment", "idx-dicom-worker")]["spec"]  # KEDA's HPA owns it
    assert kube.objects[("Deployment", "idx-report-worker")]["spec"]["replicas"] == 1  # not autoscaled
    assert ("ScaledObject", "idx-report-worker-lag") not in kube.objects
    cond = _conds(out)["AutoscalingReady"]
    assert (cond["status"], cond["reason"]) == ("True", "ScaledObjectsApplied")
    # Autoscaling switched off again: the ScaledObject goes, fixed replicas come back, the condition says so.
    off = reconcile({**body({"kafka": {"partitions": 3}}), "status": out.status}, kube, services, SETTINGS,
                    now=T0)  # type: ignore[arg-type]
    assert ("ScaledObject", "idx-dicom-worker-lag") not in kube.objects
    assert kube.objects[("Deployment", "idx-dicom-worker")]["spec"]["replicas"] == 1
    assert _conds(off)["AutoscalingReady"]["reason"] == "NotRequested"


def test_autoscaling_without_keda_falls_back_to_fixed_replicas_and_says_why() -> None:
    kube, admin, milvus = FakeKube(missing_kinds=("ScaledObject",)), FakeAdmin(), FakeMilvus()
    out = reconcile(body(AUTOSCALED), kube, Services(lambda: admin, lambda: milvus), SETTINGS,
                    now=T0)  # type: ignore[arg-type]
    assert kube.objects[("Deployment", "idx-dicom-worker")]["spec"]["replicas"] == 2
    cond = _conds(out)["AutoscalingReady"]
    assert (cond["status"], cond["reason"]) == ("False", "KedaNotInstalled")
    assert "replicas" in cond["message"]
    assert not out.retry or "KEDA" not in " ".join(out.failures)  # a missing KEDA is no failure to retry


def test_no_autoscaling_condition_unless_asked_for() -> None:
    out = reconcile(body(), FakeKube(), Services(lambda: FakeAdmin(), FakeMilvus), SETTINGS,
                    now=T0)  # type: ignore[arg-type]
    assert "AutoscalingReady" not in _conds(out)


def test_predictor_standard_mode_and_scale_metric() -> None:
    from medsearch_operator import children as ch

    from medsearch.contracts.spec import parse_spec

    spec = parse_spec({"predictor": {"minReplicas": 1, "maxReplicas": 4, "deploymentMode": "Standard",
                                     "scaleMetric": "cpu", "scaleTarget": 70}})
    isvc = ch.build_inference_service(ch.Owner("idx", "ns", "u1"), spec, SETTINGS)
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    pred = isvc["spec"]["predictor"]
    assert (pred["minReplicas"], pred["maxReplicas"], pred["scaleMetric"], pred["scaleTarget"]) == (1, 4, "cpu", 70)
    with pytest.raises(Exception, match="scaleMetric"):
        parse_spec({"predictor": {"scaleTarget": 70}})
    with pytest.raises(Exception, match="above maxReplicas"):
        parse_spec({"workers": {"dicom": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}}})
