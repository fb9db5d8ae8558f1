"""The charts render, lint and validate: every ci/*-values.yaml, core kinds with kubernetes-validate (strict),
MedicalSearchIndex objects against the operator's CRD schema, restricted security settings everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from chartkit import (
    CHARTS,
    CRDS_CHART,
    MAIN_CHART,
    OPERATOR_CRD,
    HelmError,
    by_kind,
    crd_validator,
    helm,
    one,
    pod_spec,
    render,
    schema_errors,
    validate_core,
)

CI_VALUES = sorted((MAIN_CHART / "ci").glob("*-values.yaml"))
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "Pod")
CRD_KINDS = ("MedicalSearchIndex", "CustomResourceDefinition")


def test_ci_values_cover_the_documented_scenarios() -> None:
    names = {p.name for p in CI_VALUES}
    assert {"minimal-values.yaml", "external-services-values.yaml", "gpu-predictor-values.yaml",
            "ingress-oidc-values.yaml"} <= names


@pytest.mark.parametrize("chart", ["medsearch", "medsearch-crds"])
def test_lint_strict_checkout_as_is(helm_bin: str, chart: str) -> None:
    """The charts users install from a checkout lint as they are: no dependency to fetch, no network."""
    meta = yaml.safe_load((CHARTS / chart / "Chart.yaml").read_text())
    assert not meta.get("dependencies"), f"{chart} must install from a checkout without `helm dependency build`"
    out = helm(helm_bin, "lint", "--strict", str(CHARTS / chart))
    assert "0 chart(s) failed" in out


def test_lint_strict_umbrella_chart(helm_bin: str, staged: dict[str, Path]) -> None:
    out = helm(helm_bin, "lint", "--strict", str(staged["medsearch-stack"]))
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_lint_strict_ci_values(helm_bin: str, staged: dict[str, Path], values: Path) -> None:
    out = helm(helm_bin, "lint", "--strict", str(staged["medsearch"]), "--values", str(values))
    assert "0 chart(s) failed" in out


def _check_restricted(obj: dict[str, Any]) -> list[str]:
    """Restricted Pod Security Standard + resources + probes; returns the problems found."""
    problems = []
    where = f"{obj['kind']}/{obj['metadata']['name']}"
    spec = pod_spec(obj)
    psc = spec.get("securityContext", {})
    if not psc.get("runAsNonRoot"):
        problems.append(f"{where}: pod runAsNonRoot")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{where}: pod seccompProfile RuntimeDefault")
    for c in spec.get("initContainers", []) + spec["containers"]:
        cw = f"{where} container {c['name']}"
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{cw}: allowPrivilegeEscalation false")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{cw}: readOnlyRootFilesystem")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{cw}: capabilities drop ALL")
        if sc.get("privileged"):
            problems.append(f"{cw}: privileged")
        res = c.get("resources") or {}
        if not res.get("requests") or not res.get("limits", {}).get("memory"):
            problems.append(f"{cw}: resources requests and a memory limit")
        if obj["kind"] != "Pod" and not (c.get("livenessProbe") and c.get("readinessProbe")):
            problems.append(f"{cw}: liveness and readiness probes")
        if ":" not in c["image"]:
            problems.append(f"{cw}: image without tag {c['image']}")
    if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
        problems.append(f"{where}: host namespaces")
    return problems


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda p: p.name if p else "defaults")
def test_template_validates(helm_bin: str, staged: dict[str, Path], values: Path | None) -> None:
    objs = render(helm_bin, staged["medsearch"], values_files=[values] if values else [])
    assert {"ConfigMap", "Secret", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service",
            "Pod"} <= {o["kind"] for o in objs}
    msi_validator = crd_validator(yaml.safe_load(OPERATOR_CRD.read_text()), "v1alpha1")
    problems: list[str] = []
    for obj in objs:
        if obj["kind"] == "MedicalSearchIndex":
            problems += [f"MedicalSearchIndex/{obj['metadata']['name']}: {e}"
                         for e in schema_errors(msi_validator, obj)]
            continue
        validate_core(obj)   # raises kubernetes_validate.ValidationError / SchemaNotFoundError
        if obj["kind"] in WORKLOAD_KINDS:
            problems += _check_restricted(obj)
        labels = obj["metadata"].get("labels", {})
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by",
                    "helm.sh/chart"):
            if key not in labels:
                problems.append(f"{obj['kind']}/{obj['metadata']['name']}: label {key}")
    assert not problems, "\n".join(problems)


def test_every_deployment_restarts_on_config_change(helm_bin: str, staged: dict[str, Path]) -> None:
    before = {d["metadata"]["name"]: d for d in by_kind(render(helm_bin, staged["medsearch"]), "Deployment")}
    after = {d["metadata"]["name"]: d for d in by_kind(
        render(helm_bin, staged["medsearch"], sets={"externalKafka.brokerList": "other-kafka:9092",
                                                    "externalMilvus.token": "root:Milvus"}), "Deployment")}
    assert before.keys() == after.keys() and len(before) == 2
    for name in before:
        a = before[name]["spec"]["template"]["metadata"]["annotations"]
        b = after[name]["spec"]["template"]["metadata"]["annotations"]
        assert a["checksum/config"] != b["checksum/config"], name
        assert a["checksum/secret"] != b["checksum/secret"], name
        # selectors are immutable in a Deployment: they must never depend on values
        assert before[name]["spec"]["selector"] == after[name]["spec"]["selector"]


def test_selector_labels_are_the_helm_create_ones_plus_component(helm_bin: str, staged: dict[str, Path]) -> None:
    objs = render(helm_bin, staged["medsearch"], release="prod", sets={"gateway.podLabels.team": "radiology"})
    for d in by_kind(objs, "Deployment"):
        sel = d["spec"]["selector"]["matchLabels"]
        assert set(sel) == {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"}
        assert sel["app.kubernetes.io/instance"] == "prod"
        assert sel.items() <= d["spec"]["template"]["metadata"]["labels"].items()
    svc = one(objs, "Service", "-gateway")
    assert svc["spec"]["selector"] == one(objs, "Deployment", "-gateway")["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize(("sets", "message"), [
    ({"gateway.replicCount": 3}, "replicCount"),
    ({"operator.image.repositry": "x"}, "repositry"),
    ({"externalKafka.securityProtocol": "TLS"}, "securityProtocol"),
    ({"config.logLevel": "verbose"}, "logLevel"),
    ({"defaultIndex.name": "Not_A_Dns_Name"}, "defaultIndex"),
    ({"gateway.auth.staticTokens.enabled": True, "gateway.auth.staticTokens.tokens[0].token": "short",
      "gateway.auth.staticTokens.tokens[0].role": "reader"}, "token"),
    ({"milvsu.enabled": True}, "milvsu"),
    ({"operator.replicaCount": 2}, "replicaCount"),
])
def test_values_schema_rejects_typos_and_bad_values(helm_bin: str, staged: dict[str, Path], sets: dict[str, Any],
                                                     message: str) -> None:
    with pytest.raises(HelmError, match=message):
        render(helm_bin, staged["medsearch"], sets=sets)


@pytest.mark.parametrize(("sets", "message"), [
    ({"gateway.auth.oidc.enabled": True}, "oidc.issuer is required"),
    ({"gateway.auth.staticTokens.enabled": True}, "set tokens or existingSecret"),
    ({"externalS3.accessKey": "AKIA"}, "secretKey is required"),
    ({"gateway.autoscaling.enabled": True, "gateway.autoscaling.targetCPUUtilizationPercentage": None},
     "targetCPUUtilizationPercentage and/or"),
])
def test_inconsistent_values_fail_with_a_named_field(helm_bin: str, staged: dict[str, Path], sets: dict[str, Any],
                                                     message: str) -> None:
    with pytest.raises(HelmError, match=message):
        render(helm_bin, staged["medsearch"], sets=sets)


def test_images_are_injected_from_values(helm_bin: str, staged: dict[str, Path]) -> None:
    digest = "sha256:" + "ab" * 32
    objs = render(helm_bin, staged["medsearch"], sets={
        "gateway.image.repository": "registry.test/ms/api", "gateway.image.tag": "dev1",
        "operator.image.repository": "registry.test/ms/operator", "operator.image.digest": digest,
        "workers.image.repository": "registry.test/ms/workers", "workers.image.tag": "w1",
        "modelServer.image.repository": "registry.test/ms/model", "modelServer.image.tag": "m1-cuda",
        "modelServer.image.pullPolicy": "Always"})
    gw = pod_spec(one(objs, "Deployment", "-gateway"))["containers"][0]
    op = pod_spec(one(objs, "Deployment", "-operator"))["containers"][0]
    assert gw["image"] == "registry.test/ms/api:dev1"
    assert op["image"] == f"registry.test/ms/operator:0.1.0@{digest}"
    env = {e["name"]: e.get("value") for e in op["env"]}
    assert env["MEDSEARCH_OPERATOR_WORKER_IMAGE"] == "registry.test/ms/workers:w1"
    assert env["MEDSEARCH_OPERATOR_PREDICTOR_IMAGE"] == "registry.test/ms/model:m1-cuda"
    assert env["MEDSEARCH_OPERATOR_IMAGE_PULL_POLICY"] == "IfNotPresent"   # the workers image's policy
    test_pod = one(objs, "Pod")
    assert test_pod["spec"]["containers"][0]["image"] == gw["image"]


def test_no_image_is_hard_coded_in_templates() -> None:
    for tpl in (MAIN_CHART / "templates").rglob("*.yaml"):
        for line in tpl.read_text().splitlines():
            if line.strip().startswith("image:"):
                assert "medsearch.image" in line, f"{tpl.name}: hard-coded image: {line.strip()}"


def test_settings_env_names_exist_in_the_settings_models(helm_bin: str, staged: dict[str, Path]) -> None:
    """Every MEDSEARCH_* variable the chart sets is a field of the component's settings model."""
    from medsearch_operator.settings import OperatorSettings

    from medsearch.contracts.settings import ApiSettings, WorkerSettings

    def names(model: Any) -> set[str]:
        prefix = model.model_config["env_prefix"]
        return {(prefix + f).upper() for f in model.model_fields}

    objs = render(helm_bin, staged["medsearch"], values_files=[MAIN_CHART / "ci" / "ingress-oidc-values.yaml"],
                  sets={"externalMilvus.token": "t", "gateway.corsOrigins[0]": "https://a.example"})
    cm = one(objs, "ConfigMap", "-config")["data"]
    secret = one(objs, "Secret", "-secrets")["stringData"]
    known_shared = names(ApiSettings) & names(OperatorSettings)
    unknown = [k for k in [*cm, *secret] if k.startswith("MEDSEARCH_") and k not in known_shared]
    gw_env = [e["name"] for e in pod_spec(one(objs, "Deployment", "-gateway"))["containers"][0]["env"]]
    unknown += [k for k in gw_env if k.startswith("MEDSEARCH_") and k not in names(ApiSettings)]
    op_env = [e["name"] for e in pod_spec(one(objs, "Deployment", "-operator"))["containers"][0]["env"]]
    unknown += [k for k in op_env if k.startswith("MEDSEARCH_") and k not in names(OperatorSettings)]
    extra = one(render(helm_bin, staged["medsearch"], values_files=[MAIN_CHART / "ci" /
                                                                    "external-services-values.yaml"]),
                "ConfigMap", "-config")["data"]
    unknown += [k for k in extra if k.startswith("MEDSEARCH_") and k not in names(ApiSettings) | names(WorkerSettings)]
    assert not unknown, f"chart sets variables no settings model reads: {unknown}"
    assert {"MEDSEARCH_OIDC_ISSUER", "MEDSEARCH_API_TOKENS_FILE", "MEDSEARCH_CORS_ORIGINS"} <= set(gw_env)


def test_gateway_env_parses_as_api_settings(helm_bin: str, staged: dict[str, Path],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The ConfigMap + Secret + env of the gateway build a valid ApiSettings (types, list JSON, bounds)."""
    from medsearch.contracts.settings import ApiSettings

    objs = render(helm_bin, staged["medsearch"], values_files=[MAIN_CHART / "ci" / "ingress-oidc-values.yaml"],
                  sets={"externalMilvus.token": "root:Milvus", "gateway.limits.maxUploadBytes": 134217728})
    env = dict(one(objs, "ConfigMap", "-config")["data"])
    env.update(one(objs, "Secret", "-secrets")["stringData"])
    env.update({e["name"]: e["value"] for e in pod_spec(one(objs, "Deployment", "-gateway"))["containers"][0]["env"]
                if "value" in e})
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = ApiSettings()
    assert s.api_host == "0.0.0.0" and s.api_port == 8000
    assert s.cors_origins == ["https://viewer.example.org"]
    assert s.max_upload_bytes == 134217728
    assert s.oidc_issuer == "https://keycloak.example.org/realms/hospital" and s.oidc_roles_claim == "medsearch_roles"
    assert s.milvus_token is not None and s.milvus_token.get_secret_value() == "root:Milvus"
    assert s.object_store_url == "s3://medsearch/objects"
    assert s.model_server_url == "http://demo-embedder-predictor.medsearch.svc.cluster.local"
    assert s.viewer_url_template == "http://localhost:3000/viewer?StudyInstanceUIDs={study}"  # the chart's default


def test_model_server_url_matches_the_operators_naming(helm_bin: str, staged: dict[str, Path]) -> None:
    from medsearch_operator.children import model_server_url

    objs = render(helm_bin, staged["medsearch"], namespace="radiology", sets={"config.index": "chest-xray"})
    assert one(objs, "ConfigMap")["data"]["MEDSEARCH_MODEL_SERVER_URL"] == model_server_url("chest-xray",
                                                                                             "radiology")


def test_umbrella_chart_wires_the_bundled_services(helm_bin: str, staged: dict[str, Path]) -> None:
    stack = yaml.safe_load((CHARTS / "medsearch-stack" / "values.yaml").read_text())
    objs = render(helm_bin, staged["medsearch-stack"], release="ms", namespace="data")
    data = one(objs, "ConfigMap")["data"]
    # The bundled services' fixed names (fullnameOverride) are what the medsearch chart is pointed at.
    assert data["MEDSEARCH_MILVUS_URI"] == f"http://{stack['milvus']['fullnameOverride']}:19530"
    assert data["MEDSEARCH_KAFKA_BOOTSTRAP"] == f"{stack['kafka']['fullnameOverride']}:9092"
    assert f"@{stack['postgresql']['fullnameOverride']}:5432/" in data["MEDSEARCH_POSTGRES_DSN"]
    gateway = one(objs, "Deployment", "-gateway")
    env = {e["name"]: e for e in pod_spec(gateway)["containers"][0]["env"]}
    ref = env["MEDSEARCH_POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == stack["postgresql"]["fullnameOverride"]  # the Secret the PostgreSQL chart creates


def test_external_services_and_secrets(helm_bin: str, staged: dict[str, Path]) -> None:
    objs = render(helm_bin, staged["medsearch"], values_files=[MAIN_CHART / "ci" / "external-services-values.yaml"])
    data = one(objs, "ConfigMap")["data"]
    assert data["MEDSEARCH_KAFKA_BOOTSTRAP"] == "kafka-0.kafka.data.svc:9093,kafka-1.kafka.data.svc:9093"
    assert data["MEDSEARCH_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert data["MEDSEARCH_OBJECT_STORE_URL"] == "s3://medsearch-objects/prod/objects"
    secret = one(objs, "Secret", "-secrets")["stringData"]
    assert secret == {"AWS_ACCESS_KEY_ID": "medsearch", "AWS_SECRET_ACCESS_KEY": "change-me-please",
                      "AWS_ENDPOINT_URL_S3": "http://minio.minio.svc:9000", "AWS_REGION": "us-east-1",
                      "AWS_DEFAULT_REGION": "us-east-1"}
    for dep in by_kind(objs, "Deployment"):
        env = {e["name"]: e for e in pod_spec(dep)["containers"][0]["env"]}
        assert env["MEDSEARCH_MILVUS_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "milvus-credentials",
                                                                               "key": "token"}
    policies = {p["metadata"]["name"]: p for p in by_kind(objs, "NetworkPolicy")}
    assert set(policies) == {"medsearch-gateway", "medsearch-operator"}
    gw = policies["medsearch-gateway"]["spec"]
    assert gw["policyTypes"] == ["Ingress", "Egress"]
    assert gw["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "ingress-nginx"}
    assert {"port": 53, "protocol": "UDP"} in gw["egress"][0]["ports"]
    assert policies["medsearch-operator"]["spec"]["ingress"] == []


def test_ingress_oidc_autoscaling(helm_bin: str, staged: dict[str, Path]) -> None:
    objs = render(helm_bin, staged["medsearch"], values_files=[MAIN_CHART / "ci" / "ingress-oidc-values.yaml"])
    ing = one(objs, "Ingress")
    assert ing["spec"]["tls"][0]["secretName"] == "medsearch-tls"
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "medsearch-gateway", "port": {"name": "http"}}
    gw = one(objs, "Deployment", "-gateway")
    assert "replicas" not in gw["spec"]   # the HPA owns the replica count
    hpa = one(objs, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert one(objs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    tokens = one(objs, "Secret", "-tokens")["stringData"]["tokens"]
    assert tokens.strip() == "ingest-0123456789abcdef ingester pacs-bridge"
    mounts = pod_spec(gw)["containers"][0]["volumeMounts"]
    assert {"name": "tokens", "mountPath": "/etc/medsearch/tokens", "readOnly": True} in mounts
    # watchNamespace: namespaced permissions move into a Role there; the ClusterRole keeps cluster-scoped ones
    role = one(objs, "Role")
    assert role["metadata"]["namespace"] == "radiology"
    cluster_resources = {r for rule in one(objs, "ClusterRole")["rules"] for r in rule["resources"]}
    assert cluster_resources <= {"customresourcedefinitions", "namespaces"}
    op_env = {e["name"]: e.get("value") for e in pod_spec(one(objs, "Deployment", "-operator"))["containers"][0]["env"]}
    assert op_env["MEDSEARCH_OPERATOR_NAMESPACE"] == "radiology"


def test_pdb_only_when_more_than_one_gateway_pod(helm_bin: str, staged: dict[str, Path]) -> None:
    assert not by_kind(render(helm_bin, staged["medsearch"], values_files=[MAIN_CHART / "ci" /
                                                                            "minimal-values.yaml"]),
                       "PodDisruptionBudget")
    assert by_kind(render(helm_bin, staged["medsearch"]), "PodDisruptionBudget")


def test_components_can_be_disabled(helm_bin: str, staged: dict[str, Path]) -> None:
    objs = render(helm_bin, staged["medsearch"], sets={"gateway.enabled": False, "networkPolicy.enabled": True})
    assert [d["metadata"]["name"] for d in by_kind(objs, "Deployment")] == ["medsearch-operator"]
    assert not by_kind(objs, "Pod") and not by_kind(objs, "Service")
    objs = render(helm_bin, staged["medsearch"], sets={"operator.enabled": False})
    assert not by_kind(objs, "ClusterRole") and [d["metadata"]["name"] for d in by_kind(objs, "Deployment")] == [
        "medsearch-gateway"]


def test_helm_test_hook_queries_readyz(helm_bin: str, staged: dict[str, Path]) -> None:
    objs = render(helm_bin, staged["medsearch"], release="r1", sets={"gateway.service.port": 8080})
    pod = one(objs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["containers"][0]["command"][-1] == "http://r1-medsearch-gateway:8080/readyz?scope=all"


def test_default_index_is_a_valid_medical_search_index(helm_bin: str, staged: dict[str, Path]) -> None:
    from medsearch.contracts.spec import parse_index

    objs = render(helm_bin, staged["medsearch"], values_files=[MAIN_CHART / "ci" / "gpu-predictor-values.yaml"])
    msi = one(objs, "MedicalSearchIndex")
    index = parse_index(msi)   # the shared pydantic model accepts it too
    assert index.name == "chest-xray" and index.spec.predictor.gpu == 1
    cm = one(objs, "ConfigMap")["data"]
    assert cm["MEDSEARCH_INDEX"] == "chest-xray"
    # The gateway scopes the index's names by the namespace the index is created in (the release's).
    assert msi["metadata"]["namespace"] == cm["MEDSEARCH_INDEX_NAMESPACE"] == "medsearch"
    bad = {**msi, "spec": {**msi["spec"], "predictor": {**msi["spec"]["predictor"], "gpu": 99}}}
    errors = schema_errors(crd_validator(yaml.safe_load(OPERATOR_CRD.read_text()), "v1alpha1"), bad)
    assert any("spec.predictor.gpu" in e for e in errors), errors   # the validator is not a rubber stamp


def test_crd_chart_renders_the_operators_crd(helm_bin: str, staged: dict[str, Path]) -> None:
    (crd,) = render(helm_bin, staged["medsearch-crds"])
    source = yaml.safe_load(OPERATOR_CRD.read_text())
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == source["metadata"]["name"]
    assert crd["spec"] == source["spec"]   # schema survives the template's round-trip unchanged
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    validate_core(crd)
    (crd,) = render(helm_bin, staged["medsearch-crds"], sets={"keep": False})
    assert "helm.sh/resource-policy" not in crd["metadata"].get("annotations", {})


def test_crd_chart_copy_equals_the_operators_crd() -> None:
    copy = CRDS_CHART / "files" / "medicalsearchindexes.yaml"
    assert copy.read_bytes() == OPERATOR_CRD.read_bytes(), (
        f"{copy.relative_to(CRDS_CHART.parents[1])} differs from operator/config/crd/medicalsearchindexes.yaml: "
        "run `python tests/render/chartkit.py sync`")


def test_one_url_signing_secret_for_every_gateway_replica(helm_bin: str, staged: dict[str, Path]) -> None:
    """Thumbnail URLs signed by one replica must verify on every other: all replicas read one Secret."""
    objs = render(helm_bin, staged["medsearch"], sets={"gateway.replicaCount": 3})
    gateway = one(objs, "Deployment", "-gateway")
    assert gateway["spec"]["replicas"] == 3
    env = {e["name"]: e for e in pod_spec(gateway)["containers"][0]["env"]}
    ref = env["MEDSEARCH_API_URL_SECRET"]["valueFrom"]["secretKeyRef"]
    secret = one(objs, "Secret", "-url-signing")
    assert ref["name"] == secret["metadata"]["name"]
    assert len(secret["data"][ref["key"]]) >= 48  # base64 of a 48-character random key
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    own = render(helm_bin, staged["medsearch"], sets={"gateway.urlSigning.existingSecret": "site-url-key"})
    assert not [s for s in by_kind(own, "Secret") if s["metadata"]["name"].endswith("-url-signing")]
    env = {e["name"]: e for e in pod_spec(one(own, "Deployment", "-gateway"))["containers"][0]["env"]}
    assert env["MEDSEARCH_API_URL_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "site-url-key"


def test_network_policies_are_on_by_default(helm_bin: str, staged: dict[str, Path]) -> None:
    objs = render(helm_bin, staged["medsearch"])
    names = {o["metadata"]["name"] for o in by_kind(objs, "NetworkPolicy")}
    assert names == {"medsearch-gateway", "medsearch-operator"}
    container = pod_spec(one(objs, "Deployment", "-operator"))["containers"][0]
    operator_env = {e["name"]: e.get("value") for e in container["env"]}
    # The operator creates the per-index worker and predictor policies (operator/medsearch_operator/children.py).
    assert operator_env["MEDSEARCH_OPERATOR_NETWORK_POLICIES"] == "true"
    off = render(helm_bin, staged["medsearch"], sets={"networkPolicy.enabled": False})
    assert not by_kind(off, "NetworkPolicy")
    container = pod_spec(one(off, "Deployment", "-operator"))["containers"][0]
    off_env = {e["name"]: e.get("value") for e in container["env"]}
    assert off_env["MEDSEARCH_OPERATOR_NETWORK_POLICIES"] == "false"


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool from Debian's prometheus package (scripts/ensure-promtool.sh installs it on demand)."""
    import subprocess

    proc = subprocess.run(["bash", str(CHARTS.parent / "scripts" / "ensure-promtool.sh")], capture_output=True,
                          text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"promtool unavailable: {proc.stderr[-2000:]}")
    return proc.stdout.strip().splitlines()[-1]


def _rule_file(helm_bin: str, staged: dict[str, Path], tmp_path: Path, annotations: bool = True) -> Path:
    objs = render(helm_bin, staged["medsearch"], sets={"monitoring.enabled": True})
    groups = one(objs, "PrometheusRule")["spec"]["groups"]
    if not annotations:  # the firing tests check expressions and labels, not the wording
        for group in groups:
            for rule in group["rules"]:
                rule.pop("annotations", None)
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    return path


def test_monitoring_objects_render_and_the_dashboard_is_valid_json(helm_bin: str, staged: dict[str, Path]) -> None:
    import json

    assert not [o for o in render(helm_bin, staged["medsearch"]) if "monitoring.coreos.com" in o["apiVersion"]]
    objs = render(helm_bin, staged["medsearch"], sets={"monitoring.enabled": True})
    assert {o["kind"] for o in objs if o["apiVersion"] == "monitoring.coreos.com/v1"} == {
        "ServiceMonitor", "PodMonitor", "PrometheusRule"}
    workers = one(objs, "PodMonitor", "-workers")["spec"]
    assert workers["podMetricsEndpoints"][0]["port"] == "metrics"
    assert workers["podTargetLabels"] == ["medsearch.io/index"]
    alerts = {r["alert"] for g in one(objs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]}
    assert alerts == {"MedsearchIngestLagGrowing", "MedsearchDeadLetters", "MedsearchPredictorErrors",
                      "MedsearchGatewaySlow", "MedsearchDatabaseUnavailable", "MedsearchMilvusUnavailable"}
    dashboard = json.loads(one(objs, "ConfigMap", "-dashboard")["data"]["medsearch.json"])
    assert dashboard["uid"] == "medsearch-overview" and len(dashboard["panels"]) >= 8


def test_prometheus_rules_pass_promtool(helm_bin: str, staged: dict[str, Path], promtool: str,
                                        tmp_path: Path) -> None:
    import subprocess

    path = _rule_file(helm_bin, staged, tmp_path)
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 6 rules found" in proc.stdout


def test_prometheus_rules_fire_on_the_series_they_watch(helm_bin: str, staged: dict[str, Path], promtool: str,
                                                         tmp_path: Path) -> None:
    """promtool's rule unit tests: a growing backlog alerts after 10 minutes, a draining one never does; a
    PostgreSQL readiness failure alerts; dead letters alert per stage."""
    import subprocess

    rules = _rule_file(helm_bin, staged, tmp_path, annotations=False)
    w = 'namespace="radiology", medsearch_io_index="chest", worker="dicom-worker"'
    tests = {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": [
        {"interval": "1m",
         "input_series": [
             {"series": f"medsearch_worker_consumer_lag{{{w}}}", "values": "2000+100x30"},
             {"series": f'medsearch_worker_consumer_lag{{{w.replace("chest", "abdomen")}}}',
              "values": "5000-100x30"},
             {"series": 'medsearch_api_dependency_up{namespace="radiology", dependency="postgres", pod="g-1"}',
              "values": "1 1 1 0 0 0 0 0 0 0"},
             {"series": f'medsearch_worker_dead_lettered_total{{{w}, stage="decode"}}', "values": "0+5x20"}],
         "alert_rule_test": [
             {"eval_time": "5m", "alertname": "MedsearchIngestLagGrowing", "exp_alerts": []},
             {"eval_time": "25m", "alertname": "MedsearchIngestLagGrowing", "exp_alerts": [
                 {"exp_labels": {"severity": "warning", "namespace": "radiology", "medsearch_io_index": "chest",
                                 "worker": "dicom-worker"}}]},
             {"eval_time": "8m", "alertname": "MedsearchDatabaseUnavailable", "exp_alerts": [
                 {"exp_labels": {"severity": "critical", "namespace": "radiology"}}]},
             {"eval_time": "15m", "alertname": "MedsearchDeadLetters", "exp_alerts": [
                 {"exp_labels": {"severity": "warning", "namespace": "radiology", "medsearch_io_index": "chest",
                                 "worker": "dicom-worker", "stage": "decode"}}]},
         ]}]}
    test_file = tmp_path / "rules_test.yaml"
    test_file.write_text(yaml.safe_dump(tests))
    proc = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_kafka_sasl_and_tls_reach_the_gateway_and_operator(helm_bin: str, staged: dict[str, Path]) -> None:
    objs = render(helm_bin, staged["medsearch"], sets={
        "externalKafka.securityProtocol": "SASL_SSL", "externalKafka.sasl.mechanism": "SCRAM-SHA-512",
        "externalKafka.sasl.username": "medsearch", "externalKafka.sasl.existingSecret": "kafka-user",
        "externalKafka.tls.caSecret": "kafka-ca"})
    data = one(objs, "ConfigMap", "-config")["data"]
    assert data["MEDSEARCH_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert data["MEDSEARCH_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert data["MEDSEARCH_KAFKA_SASL_USERNAME"] == "medsearch"
    cafile = data["MEDSEARCH_KAFKA_SSL_CAFILE"]
    for suffix in ("-gateway", "-operator"):
        spec = pod_spec(one(objs, "Deployment", suffix))
        container = spec["containers"][0]
        env = {e["name"]: e for e in container["env"]}
        assert env["MEDSEARCH_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "kafka-user", "key": "kafka-password"}
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "kafka-ca"]
        assert cafile == f"{mount['mountPath']}/ca.crt"
        (volume,) = [v for v in spec["volumes"] if v["name"] == "kafka-ca"]
        assert volume["secret"]["secretName"] == "kafka-ca"
    operator_env = {e["name"]: e.get("value") for e in pod_spec(one(objs, "Deployment", "-operator"))[
        "containers"][0]["env"]}
    assert operator_env["MEDSEARCH_OPERATOR_KAFKA_CA_SECRET"] == "kafka-ca"
    # A password given in values lands in the chart's Secret (which the operator hands to the workers).
    inline = render(helm_bin, staged["medsearch"], sets={"externalKafka.sasl.password": "pw"})
    assert one(inline, "Secret", "-secrets")["stringData"]["MEDSEARCH_KAFKA_SASL_PASSWORD"] == "pw"
