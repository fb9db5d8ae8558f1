"""The batch consumer against a real Tansu broker and the ingest ledger in a real PostgreSQL: commit after the handler,
retries, dead letters through the outbox, attempts counted in the ledger, stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from medsearch_dev.testing import send_raw
from medsearch_workers.consumer import Failure, Incoming, TransientError, WorkerMetrics, reached, run_consumer

from medsearch.contracts.messages import DeadLetter
from medsearch.contracts.settings import WorkerSettings
from medsearch.ledger import Ledger

pytestmark = pytest.mark.integration

FAST = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


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


@pytest.fixture()
def ledger(kafka_bootstrap: str, postgres_dsn: str, unique_index: str) -> Iterator[Ledger]:
    from medsearch.contracts.spec import MedicalSearchIndexSpec
    from medsearch.provision import drop_schema, ensure_schema, ensure_topics, kafka_admin

    admin = kafka_admin(kafka_bootstrap)
    ensure_topics(admin, unique_index, MedicalSearchIndexSpec())
    admin.close()
    ensure_schema(postgres_dsn, unique_index, MedicalSearchIndexSpec())
    led = Ledger(postgres_dsn, unique_index)
    yield led
    led.close()
    drop_schema(postgres_dsn, unique_index)


def _attempt_rows(dsn: str, index: str) -> list[tuple[int, int]]:
    from medsearch import pgstore
    from medsearch.contracts.naming import names_for

    with pgstore.connect(dsn) as conn:
        schema = names_for(index).pg_schema
        return [(int(o), int(n)) for o, n in conn.execute(
            f'SELECT "offset", attempts FROM {schema}.delivery_attempts ORDER BY 1').fetchall()]


def _consume(settings: WorkerSettings, index: str, handler: Any, ledger: Ledger, stop: threading.Event,
             **extra: Any) -> threading.Thread:
    from medsearch.contracts.naming import names_for

    names = names_for(index)
    kwargs = {"settings": settings, "topic": names.dicom_topic, "group_id": f"g-{index}", "dlq_topic": names.dlq_topic,
              "handler": handler, "worker_name": "test", "ledger": ledger, "dicom_topic": names.dicom_topic,
              "batch_size": 4, "stop": stop, "consumer_options": FAST, **extra}
    t = threading.Thread(target=run_consumer, kwargs=kwargs)
    t.start()
    return t


def test_commit_after_handler_retry_and_dead_letter(kafka_bootstrap: str, unique_index: str, ledger: Ledger) -> None:
    from medsearch.contracts.naming import names_for

    topic, dlq = names_for(unique_index).dicom_topic, names_for(unique_index).dlq_topic
    send_raw(kafka_bootstrap, topic, [f"m{i}".encode() for i in range(7)] + [b"bad"], key=b"k")
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

    t = _consume(settings, unique_index, handler, ledger, stop, metrics=metrics)
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

    t2 = _consume(settings, unique_index, handler2, ledger, stop2, worker_name="test2")
    time.sleep(8)
    stop2.set()
    t2.join(30)
    assert again == []


def test_a_message_that_keeps_raising_is_dead_lettered_after_max_attempts_counted_in_the_ledger(
    kafka_bootstrap: str, unique_index: str, ledger: Ledger, postgres_dsn: str,
) -> None:
    """The attempts live in PostgreSQL, not in the consumer: a second consumer (a restarted worker) goes on counting
    where the first stopped, and the message is dead-lettered at the stage it last reached, its neighbours
    committed."""
    from medsearch.contracts.naming import names_for

    names = names_for(unique_index)
    send_raw(kafka_bootstrap, names.dicom_topic, [b"a", b"b", b"poison", b"c", b"d"], key=b"k")
    settings = WorkerSettings(kafka_bootstrap=kafka_bootstrap, worker_max_wait_ms=200, worker_retry_max_seconds=0.3)
    handled: list[bytes] = []
    first_stop = threading.Event()

    def handler(batch: list[Incoming]) -> list[Failure]:
        for m in batch:
            reached("decode")
            if m.raw == b"poison":
                first_stop.set()  # the first consumer stops after its first failure: the count must survive it
                raise KeyError("boom")
        handled.extend(m.raw for m in batch)
        return []

    t = _consume(settings, unique_index, handler, ledger, first_stop, max_attempts=3)
    t.join(60)
    assert not t.is_alive()
    assert (2, 1) in _attempt_rows(postgres_dsn, unique_index)  # one failed attempt, durable
    stop = threading.Event()
    t = _consume(settings, unique_index, handler, ledger, stop, max_attempts=3)
    (raw,) = _drain(kafka_bootstrap, names.dlq_topic, 1, timeout=60)
    wait_for_handled = time.monotonic() + 30
    while set(handled) != {b"a", b"b", b"c", b"d"} and time.monotonic() < wait_for_handled:
        time.sleep(0.2)
    time.sleep(1)
    stop.set()
    t.join(30)
    letter = DeadLetter.from_bytes(raw)
    assert letter.stage == "decode" and letter.attempts == 3, letter
    assert "handled 3 times without finishing" in letter.error and "KeyError: 'boom'" in letter.error
    assert set(handled) == {b"a", b"b", b"c", b"d"}
    assert _attempt_rows(postgres_dsn, unique_index) == []
    assert ledger.outbox() == []


class _DownBroker:
    """A producer whose broker never acknowledges (what kafka-python's futures do when the broker is gone)."""

    def __init__(self) -> None:
        self.sent = 0

    def send(self, topic: str, key: bytes | None = None, value: bytes = b"") -> Any:
        from kafka.errors import KafkaTimeoutError

        self.sent += 1

        class _Never:
            def get(self, timeout: float | None = None) -> None:
                raise KafkaTimeoutError("not acknowledged")

        return _Never()

    def flush(self, timeout: float | None = None) -> None:
        pass


def test_dead_letters_go_through_the_outbox_marked_with_the_ledger(
    kafka_bootstrap: str, unique_index: str, ledger: Ledger, postgres_dsn: str,
) -> None:
    """The ledger row is marked dead and the letter stored in one transaction before anything is published; when
    the broker does not acknowledge, both stay (the batch is retried); the next worker publishes what the outbox
    holds. With the ledger down nothing is published at all."""
    from kafka import KafkaProducer
    from medsearch_workers.consumer import _DeadLetterSink

    from medsearch import store
    from medsearch.contracts.messages import DicomObject
    from medsearch.contracts.naming import names_for
    from medsearch.ledger import Entry

    names = names_for(unique_index)
    sha = store.sha256_hex(b"gone")
    msg = DicomObject(index=unique_index, uri=f"file:///nowhere/{sha}.dcm", sha256=sha)
    ledger.record(Entry("dicom", sha, sha, sha, msg.uri, names.dicom_topic, None, msg.to_bytes()))
    failure = Failure(Incoming(msg.to_bytes(), None, names.dicom_topic, 0, 7), "fetch", "object not found")

    down = _DownBroker()
    sink = _DeadLetterSink(down, names.dlq_topic, "test", None, ledger, names.dicom_topic, names.dicom_topic)
    with pytest.raises(TransientError, match="not acknowledged"):
        sink.send([failure], attempts=1)
    assert down.sent == 1
    (dead,) = ledger.dead()
    assert dead["stage"] == "fetch" and dead["reason"] == "object not found"
    ((delivery, dlq, _key, value),) = ledger.outbox()
    assert dlq == names.dlq_topic and delivery.offset == 7 and DeadLetter.from_bytes(value).stage == "fetch"
    with pytest.raises(TransientError):
        sink.send([failure], attempts=1)  # the batch retried: still one row, one letter
    assert len(ledger.outbox()) == 1 and ledger.counts()["dead"] == 1

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    try:
        restarted = _DeadLetterSink(producer, names.dlq_topic, "test", None, ledger, names.dicom_topic,
                                    names.dicom_topic)
        assert restarted.drain() == 1
    finally:
        producer.close()
    (raw,) = _drain(kafka_bootstrap, names.dlq_topic, 1)
    letter = DeadLetter.from_bytes(raw)
    assert letter.original["uri"] == msg.uri and letter.stage == "fetch"
    assert ledger.outbox() == []

    broken = Ledger("host=127.0.0.1 port=1 dbname=x user=x connect_timeout=1", unique_index)
    down2 = _DownBroker()
    sink2 = _DeadLetterSink(down2, names.dlq_topic, "test", None, broken, names.dicom_topic, names.dicom_topic)
    with pytest.raises(TransientError, match="ingest ledger"):
        sink2.send([failure], attempts=1)
    assert down2.sent == 0  # nothing published that the ledger does not hold
