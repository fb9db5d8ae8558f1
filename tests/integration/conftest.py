"""Fixtures of the integration tier: the test's index on the session's services (``make_index_env`` /
``index_env``) and that index with the report worker running (``report_worker``). The services themselves come
from ``medsearch_dev.testing``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ingest_env import IndexEnv
from medsearch_dev.localstack import procs

from medsearch.contracts.spec import parse_spec
from medsearch.provision import drop_schema


@pytest.fixture()
def make_index_env(
    kafka_bootstrap: str, milvus_uri: str, object_store_url: str, unique_index: str, service_logs: Path,
    postgres_dsn: str,
) -> Iterator[Callable[..., Any]]:
    """``make(cls=IndexEnv, **fields)``: the test's index (not yet provisioned: ``IndexEnv.provision``) as ``cls``,
    on the session's services unless ``fields`` say otherwise. Afterwards every worker it started stops and the
    index's PostgreSQL schema is dropped."""
    made: list[IndexEnv] = []

    def make(cls: type[IndexEnv] = IndexEnv, **fields: Any) -> IndexEnv:
        services = {"index": unique_index, "store_url": object_store_url, "bootstrap": kafka_bootstrap,
                    "milvus_uri": milvus_uri, "logs": service_logs, "dsn": postgres_dsn}
        env = cls(**{**services, **fields})
        made.append(env)
        return env

    yield make
    for env in made:
        env.stop_workers()
    drop_schema(postgres_dsn, unique_index)


@pytest.fixture()
def index_env(make_index_env: Callable[..., IndexEnv]) -> IndexEnv:
    return make_index_env()


@pytest.fixture()
def report_worker(index_env: IndexEnv) -> Iterator[str]:
    """The test's index (two partitions) with a report worker running (offline: the cached MiniLM); yields the
    index name. The worker must stop cleanly."""
    index_env.provision(parse_spec({"kafka": {"partitions": 2}}))
    proc = index_env.start_worker(HF_HUB_OFFLINE="1")
    yield index_env.index
    procs.stop_process(proc, timeout=20)
    assert proc.returncode in (0, -15), f"report worker exited with {proc.returncode}"
