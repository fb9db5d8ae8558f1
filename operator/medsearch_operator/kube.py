"""The few Kubernetes API calls the operator makes: server-side apply, get, status patch.

A thin layer over the official client's authenticated transport (kubeconfig or in-cluster credentials); the
request paths come from a small table, so one code path serves core, apps and custom resources alike.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from medsearch.contracts.spec import API_GROUP, API_VERSION, KIND, PLURAL

PLURALS = {
    "ConfigMap": "configmaps",
    "Deployment": "deployments",
    "Service": "services",
    "InferenceService": "inferenceservices",
    "NetworkPolicy": "networkpolicies",
    "ScaledObject": "scaledobjects",
    KIND: PLURAL,
}


class KubeError(RuntimeError):
    """An API call failed. ``status`` is the HTTP status (0 when the server was unreachable)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def resource_path(api_version: str, kind: str, namespace: str, name: str | None = None,
                  subresource: str | None = None) -> str:
    try:
        plural = PLURALS[kind]
    except KeyError:
        raise KubeError(0, f"kind {kind!r} is not one the operator manages") from None
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{base}/namespaces/{quote(namespace)}/{plural}"
    if name:
        path += f"/{quote(name)}"
    if subresource:
        path += f"/{subresource}"
    return path


def _message(status: int, data: bytes) -> str:
    try:
        body = json.loads(data)
        return str(body.get("message") or body)
    except (ValueError, AttributeError):
        return data.decode("utf-8", "replace")[:500] or f"HTTP {status}"


class Kube:
    """Kubernetes API access for the operator (synchronous; kopf runs sync handlers in threads)."""

    def __init__(self, api_client: Any, field_manager: str, timeout: float = 30.0) -> None:
        self.api = api_client
        self.field_manager = field_manager
        self.timeout = timeout

    @classmethod
    def from_environment(cls, field_manager: str, kubeconfig: str | None = None) -> Kube:
        """In-cluster credentials when running in a pod, else the kubeconfig (``$KUBECONFIG`` or ~/.kube/config)."""
        import os

        from kubernetes import client, config

        kubeconfig = kubeconfig or os.environ.get("KUBECONFIG")  # the library reads it at import time only
        configuration = client.Configuration()
        try:
            if kubeconfig and not os.environ.get("KUBERNETES_SERVICE_HOST"):
                raise config.ConfigException("not in a pod: use the kubeconfig")
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]  # untyped library
        except config.ConfigException:
            config.load_kube_config(  # type: ignore[no-untyped-call]  # untyped library
                config_file=kubeconfig, client_configuration=configuration)
        return cls(client.ApiClient(configuration), field_manager)

    def request(self, method: str, path: str, *, body: Any = None, query: list[tuple[str, str]] | None = None,
                content_type: str = "application/json") -> dict[str, Any] | None:
        """One call; returns the decoded body, None on 404; raises :class:`KubeError` otherwise."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError as TransportError

        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            method, url, headers, body, post = self.api.param_serialize(
                method, path, query_params=query or [], header_params=headers, body=body,
                auth_settings=["BearerToken"])
            resp = self.api.call_api(method, url, headers, body, post, _request_timeout=self.timeout)
            resp.read()
        except ApiException as err:
            raise KubeError(int(err.status or 0), f"{method} {path}: {err.reason}") from err
        except (OSError, TransportError) as err:  # unreachable API server, TLS failures, timeouts
            raise KubeError(0, f"{method} {path}: {err}") from err
        if resp.status == 404:
            return None
        if resp.status >= 400:
            raise KubeError(resp.status, f"{method} {path}: HTTP {resp.status}: {_message(resp.status, resp.data)}")
        return json.loads(resp.data) if resp.data else {}

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply (``force``: the operator owns these fields). A 404 means the kind is not served."""
        meta = manifest["metadata"]
        path = resource_path(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
        out = self.request("PATCH", path, body=manifest, content_type="application/apply-patch+yaml",
                           query=[("fieldManager", self.field_manager), ("force", "true")])
        if out is None:
            raise KubeError(404, f"{manifest['apiVersion']}/{manifest['kind']} is not served by this cluster")
        return out

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.request("GET", resource_path(api_version, kind, namespace, name))

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete one object; False when it (or its kind) does not exist."""
        return self.request("DELETE", resource_path(api_version, kind, namespace, name)) is not None

    def patch_index_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any] | None:
        path = resource_path(f"{API_GROUP}/{API_VERSION}", KIND, namespace, name, "status")
        return self.request("PATCH", path, body={"status": status}, content_type="application/merge-patch+json")
