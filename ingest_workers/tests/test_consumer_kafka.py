"""The batch consumer against a real Tansu broker: commit after the handler, retries, dead letters, stop."""

from __future__ import annotations

import threading
import time

import pytest
from medsearch_workers.consumer import Failure, Incoming, TransientError, WorkerMetrics, run_consumer

from medsearch.contracts.messages import DeadLetter
from medsearch.contracts.settings import WorkerSettings

pytestmark = pytest.mark.integration

FAST = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for v in values:
        producer.send(topic, key=b"k", value=v)
    producer.flush()
    producer.close()


def _drain(bootstrap: str, topic: str, expect: int, timeout: float = 20.0) -> list[bytes]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(out) < expect and time.monotonic() < deadline:
        for recs in consumer.poll(timeout_ms=500).values():
            out.extend(r.value for r in recs)
    consumer.close()
    return out


def test_commit_after_handler_retry_and_dead_letter(kafka_bootstrap: str, unique_index: str) -> None:
    from medsearch.contracts.naming import names_for
    from medsearch.contracts.spec import MedicalSearchIndexSpec
    from medsearch.provision import ensure_topics, kafka_admin

    admin = kafka_admin(kafka_bootstrap)
    ensure_topics(admin, unique_index, MedicalSearchIndexSpec())
    admin.close()
    topic, dlq = names_for(unique_index).dicom_topic, names_for(unique_index).dlq_topic
    _produce(kafka_bootstrap, topic, [f"m{i}".encode() for i in range(7)] + [b"bad"])
    settings = WorkerSettings(kafka_bootstrap=kafka_bootstrap, worker_max_wait_ms=200, worker_retry_max_seconds=0.5)
    seen: list[bytes] = []
    calls = {"n": 0}
    stop = threading.Event()
    metrics = WorkerMetrics("test")

    def handler(batch: list[Incoming]) -> list[Failure]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise TransientError("model server down")
        seen.extend(m.raw for m in batch)
        if len(set(seen)) >= 8:
            stop.set()
        return [Failure(m, "decode", "not_an_image: test") for m in batch if m.raw == b"bad"]

    t = threading.Thread(
        target=run_consumer,
        kwargs={
            "settings": settings,
            "topic": topic,
            "group_id": f"g-{unique_index}",
            "dlq_topic": dlq,
            "handler": handler,
            "worker_name": "test",
            "batch_size": 4,
            "stop": stop,
            "metrics": metrics,
            "consumer_options": FAST,
        },
    )
    t.start()
    t.join(60)
    assert not t.is_alive()
    assert sorted(set(seen)) == sorted([f"m{i}".encode() for i in range(7)] + [b"bad"])
    letters = [DeadLetter.from_bytes(v) for v in _drain(kafka_bootstrap, dlq, 1)]
    assert [(d.stage, d.topic) for d in letters] == [("decode", topic)]
    assert metrics.value("medsearch_worker_dead_lettered_total", stage="decode") == 1
    assert metrics.value("medsearch_worker_batch_retries_total", kind="transient") == 1

    # A second consumer in the same group finds everything committed: the handler is not called again.
    again: list[bytes] = []
    stop2 = threading.Event()

    def handler2(batch: list[Incoming]) -> list[Failure]:
        again.extend(m.raw for m in batch)
        return []

    t2 = threading.Thread(
        target=run_consumer,
        kwargs={
            "settings": settings,
            "topic": topic,
            "group_id": f"g-{unique_index}",
            "dlq_topic": dlq,
            "handler": handler2,
            "worker_name": "test2",
            "stop": stop2,
            "consumer_options": FAST,
        },
    )
    t2.start()
    time.sleep(8)
    stop2.set()
    t2.join(30)
    assert again == []
