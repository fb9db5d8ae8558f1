"""The k8s tier: a real etcd + kube-apiserver on loopback, envtest-style (no kubelet: objects are real, pods
never run).

Binaries come from ``scripts/k8s-assets.sh`` (``make k8s-assets``; ``make test`` runs it first): it prefers
``$KUBEBUILDER_ASSETS`` and binaries on PATH, else builds kube-apiserver v1.20.2 from Debian's source package,
and fetches helm/kubectl; it records the paths in ``~/.cache/medsearch/k8s/assets.env`` (or under
``$MEDSEARCH_K8S_CACHE``). Without them every k8s test skips, naming the command to run.

Fixtures other test modules may reuse:

``kube`` (session)
    A running API server. Attributes: ``.server`` (https URL), ``.token`` (admin bearer token, group
    ``system:masters``), ``.kubeconfig`` (Path of an admin kubeconfig), ``.ca_file``; methods
    ``api_client()`` (an authenticated ``kubernetes.client.ApiClient``), ``kubeconfig_for(user)`` (a kubeconfig
    of a further static-token user, with no rights until you bind some: ``"operator"`` is predefined),
    ``token_for(user)``, ``apply_manifest(dict)`` / ``create_namespace(name)`` helpers. The cluster is shared by
    the whole session: create namespaced objects in namespaces of your own, and remove cluster-scoped objects
    (CRDs, ClusterRoles) you create when your module ends. Namespaces cannot be deleted (no namespace
    controller runs), so use unique names.
``helm_binary`` (session)
    Path of helm v3.19 fetched by ``scripts/k8s-assets.sh``; skips when it is missing.
``kubectl_binary`` (session)
    Path of a kubectl: the one fetched with helm, else one on PATH; skips when there is none.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from medsearch_dev.localstack.procs import free_port, stop_process, wait_until

REPO = Path(__file__).resolve().parents[2]
ASSETS_HINT = "run `make k8s-assets` (scripts/k8s-assets.sh) to build/fetch kube-apiserver, etcd and helm"


def _cache_root() -> Path:
    env = os.environ.get("MEDSEARCH_K8S_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "medsearch" / "k8s"


def k8s_assets() -> dict[str, str]:
    """KUBE_APISERVER, ETCD, HELM, KUBECTL paths ('' when unknown): the script's record, then env and PATH."""
    found = {"KUBE_APISERVER": "", "ETCD": "", "HELM": "", "KUBECTL": ""}
    record = _cache_root() / "assets.env"
    if record.exists():
        for line in record.read_text().splitlines():
            key, _, value = line.partition("=")
            if key in found and value and Path(value).exists():
                found[key] = value
    kb = os.environ.get("KUBEBUILDER_ASSETS")
    for key, exe in (("KUBE_APISERVER", "kube-apiserver"), ("ETCD", "etcd"), ("KUBECTL", "kubectl")):
        if kb and (Path(kb) / exe).exists() and not found[key]:
            found[key] = str(Path(kb) / exe)
        if not found[key]:
            found[key] = shutil.which(exe) or ""
    return found


@dataclass
class KubeCluster:
    server: str
    token: str
    kubeconfig: Path
    ca_file: Path
    workdir: Path
    user_tokens: dict[str, str] = field(default_factory=dict)

    def token_for(self, user: str) -> str:
        return self.user_tokens[user]

    def _write_kubeconfig(self, path: Path, user: str, token: str) -> Path:
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "envtest", "cluster": {"server": self.server,
                                                          "certificate-authority": str(self.ca_file)}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "envtest", "context": {"cluster": "envtest", "user": user}}],
            "current-context": "envtest",
        }
        path.write_text(yaml.safe_dump(cfg))
        path.chmod(0o600)
        return path

    def kubeconfig_for(self, user: str) -> Path:
        return self._write_kubeconfig(self.workdir / f"kubeconfig-{user}", user, self.token_for(user))

    def api_client(self) -> Any:
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=configuration)
        return client.ApiClient(configuration)

    def create_namespace(self, name: str) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        try:
            client.CoreV1Api(self.api_client()).create_namespace({"metadata": {"name": name}})
        except ApiException as err:
            if err.status != 409:
                raise

    def dynamic(self) -> Any:
        """A ``kubernetes.dynamic.DynamicClient`` (discovery-based access to any kind, custom ones included)."""
        from kubernetes import dynamic

        return dynamic.DynamicClient(self.api_client())

    def apply_manifest(self, manifest: dict[str, Any], field_manager: str = "medsearch-tests") -> Any:
        """Create or update any object with the dynamic client (server-side apply)."""
        from kubernetes import dynamic

        dyn = dynamic.DynamicClient(self.api_client())
        res = dyn.resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])
        return dyn.server_side_apply(res, body=manifest, name=manifest["metadata"]["name"],
                                     namespace=manifest["metadata"].get("namespace"),
                                     field_manager=field_manager, force_conflicts=True)


def _write_sa_keys(workdir: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv = workdir / "sa.key"
    pub = workdir / "sa.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def _readyz(server: str, token: str, ca: Path) -> bool:
    import httpx

    try:
        r = httpx.get(f"{server}/readyz", headers={"Authorization": f"Bearer {token}"}, verify=str(ca), timeout=2)
        return r.status_code == 200 and r.text.strip() == "ok"
    except (httpx.HTTPError, OSError):
        return False


@pytest.fixture(scope="session")
def k8s_binaries() -> dict[str, str]:
    return k8s_assets()


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory, k8s_binaries: dict[str, str]) -> Iterator[KubeCluster]:
    apiserver, etcd = k8s_binaries["KUBE_APISERVER"], k8s_binaries["ETCD"]
    if not apiserver or not etcd:
        pytest.skip(f"kube-apiserver/etcd not found: {ASSETS_HINT}")
    work = tmp_path_factory.mktemp("kube")
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    etcd_log = open(work / "etcd.log", "ab")
    etcd_proc = subprocess.Popen(
        [etcd, "--name", "envtest", "--data-dir", str(work / "etcd"),
         "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
         "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
         "--initial-cluster", f"envtest=http://127.0.0.1:{peer_port}",
         "--listen-metrics-urls", f"http://127.0.0.1:{free_port()}"],
        stdout=etcd_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    api_proc = None
    api_log = open(work / "kube-apiserver.log", "ab")
    try:
        import httpx

        wait_until(lambda: _etcd_healthy(httpx, etcd_url), timeout=30, what="etcd", proc=etcd_proc)
        admin_token = secrets.token_hex(16)
        users = {"admin": admin_token, "operator": secrets.token_hex(16)}
        (work / "tokens.csv").write_text(
            f'{admin_token},admin,admin-uid,"system:masters"\n'
            f"{users['operator']},medsearch-operator-test,operator-uid\n")
        sa_key, sa_pub = _write_sa_keys(work)
        certs = work / "certs"
        certs.mkdir()
        api_proc = subprocess.Popen(
            [apiserver, f"--etcd-servers={etcd_url}", "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
             f"--secure-port={api_port}", f"--cert-dir={certs}", f"--token-auth-file={work / 'tokens.csv'}",
             "--authorization-mode=RBAC", "--service-account-issuer=https://kubernetes.default.svc",
             f"--service-account-key-file={sa_pub}", f"--service-account-signing-key-file={sa_key}",
             "--endpoint-reconciler-type=none", "--allow-privileged=true", "--disable-admission-plugins=ServiceAccount",
             "--enable-priority-and-fairness=false", "--profiling=false"],
            stdout=api_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        server = f"https://127.0.0.1:{api_port}"
        ca = certs / "apiserver.crt"
        wait_until(lambda: ca.exists() and _readyz(server, admin_token, ca), timeout=90, what="kube-apiserver",
                   proc=api_proc, interval=0.5)
        cluster = KubeCluster(server=server, token=admin_token, kubeconfig=work / "kubeconfig", ca_file=ca,
                              workdir=work, user_tokens=users)
        cluster._write_kubeconfig(cluster.kubeconfig, "admin", admin_token)
        yield cluster
    finally:
        if api_proc is not None:
            stop_process(api_proc)
        stop_process(etcd_proc)
        etcd_log.close()
        api_log.close()


def _etcd_healthy(httpx: Any, url: str) -> bool:
    try:
        return bool(httpx.get(f"{url}/health", timeout=2).json().get("health") == "true")
    except (httpx.HTTPError, OSError, ValueError):
        return False


@pytest.fixture(scope="session")
def helm_binary(k8s_binaries: dict[str, str]) -> Path:
    if not k8s_binaries["HELM"]:
        pytest.skip(f"helm not found: {ASSETS_HINT}")
    return Path(k8s_binaries["HELM"])


@pytest.fixture(scope="session")
def kubectl_binary(k8s_binaries: dict[str, str]) -> Path:
    if not k8s_binaries["KUBECTL"]:
        pytest.skip(f"kubectl not found: {ASSETS_HINT}")
    return Path(k8s_binaries["KUBECTL"])
