"""pytest fixtures for the integration tier: real services as local processes on loopback.

Registered for every test directory by the repository's root ``conftest.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from medsearch.localstack import procs


@pytest.fixture(scope="session")
def service_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("service-logs")


@pytest.fixture(scope="session")
def kafka_bootstrap(service_logs: Path) -> Iterator[str]:
    """A real Tansu Kafka-protocol broker (memory storage); yields ``127.0.0.1:PORT``."""
    with procs.tansu(service_logs) as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory, service_logs: Path) -> Iterator[str]:
    """A real milvus-lite server; yields ``http://127.0.0.1:PORT``."""
    with procs.milvus_lite(tmp_path_factory.mktemp("milvus-data"), service_logs) as uri:
        yield uri


@pytest.fixture()
def object_store_url(tmp_path: Path) -> str:
    """A fresh ``file://`` object store root."""
    root = tmp_path / "objects"
    root.mkdir()
    return f"file://{root}"


@pytest.fixture()
def unique_index(request: pytest.FixtureRequest) -> str:
    """An index name unique to the test (topics and collections do not collide across tests)."""
    import hashlib

    return "t" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:10]
