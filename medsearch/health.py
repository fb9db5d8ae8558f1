"""Readiness probes of the services medsearch talks to, shared by the gateway's ``/readyz`` and the local stack.

Each answers True or False and never raises: a failing probe means "not ready yet".
"""

from __future__ import annotations


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
