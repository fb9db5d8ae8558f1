"""Readiness probes of the services medsearch talks to, shared by the gateway's ``/readyz`` and the local stack.

Each answers True or False and never raises: a failing probe means "not ready yet".
"""

from __future__ import annotations

from typing import Any


def milvus_ready(uri: str) -> bool:
    """Milvus at ``uri`` lists its collections within a few seconds."""
    from pymilvus import MilvusClient

    try:
        client = MilvusClient(uri=uri, timeout=3)
        client.list_collections()
        client.close()
        return True
    except Exception:  # any connection/protocol failure means "not ready yet"  # noqa: BLE001
        return False


def http_ready(url: str, timeout: float = 2.0) -> bool:
    """``GET url`` answers 200 within ``timeout`` seconds."""
    import httpx

    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def kafka_ready(bootstrap: str, *, security: dict[str, Any] | None = None, client_id: str = "medsearch-readiness",
                timeout_ms: int = 3000) -> bool:
    """The broker answers a metadata request within ``timeout_ms``; ``security``: the TLS/SASL options of
    :func:`medsearch.provision.kafka_admin` (a secured cluster must not read as unreachable)."""
    from kafka.errors import KafkaError

    from medsearch.provision import ProvisionError, kafka_admin

    try:
        admin = kafka_admin(bootstrap, client_id=client_id, timeout_ms=timeout_ms, security=security)
    except (ProvisionError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()
