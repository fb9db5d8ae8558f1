"""Pure parts of the batch consumer: failures, backoff, dead letters of messages that never finished, stage hook,
metrics."""

from __future__ import annotations

from typing import Any

import pytest
from medsearch_workers.consumer import (
    Failure,
    Incoming,
    TransientError,
    WorkerMetrics,
    backoff_seconds,
    crash_failure,
    reached,
)


def _msg(i: int) -> Incoming:
    return Incoming(raw=f"m{i}".encode(), key=None, topic="t.dicom", partition=0, offset=i)


def test_failure_stage_must_be_a_dead_letter_stage() -> None:
    Failure(_msg(0), "decode", "x")
    with pytest.raises(ValueError, match="stage"):
        Failure(_msg(0), "nonsense", "x")


def test_backoff_grows_and_is_capped() -> None:
    assert [backoff_seconds(a, 3.0) for a in (1, 2, 3, 4, 10)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_message_that_never_finished_is_dead_lettered_at_the_stage_it_died_in() -> None:
    from medsearch.ledger import Attempt

    died = crash_failure(_msg(3), Attempt(3, "decode", None))
    assert died.stage == "decode" and died.message.offset == 3
    assert "handled 3 times without finishing, last in stage decode" in died.error
    assert "the worker died" in died.error
    raised = crash_failure(_msg(1), Attempt(3, "write", "KeyError: 'boom'"))
    assert raised.stage == "write" and raised.error.endswith("last error: KeyError: 'boom'")
    assert crash_failure(_msg(1), Attempt(2, "preprocess", None)).stage == "decode_message"  # not a DLQ stage


def test_stages_reach_the_hook_only_while_one_is_set() -> None:
    from medsearch_workers import consumer

    reached("decode")  # no hook: nothing happens
    seen: list[str] = []
    token = consumer._stage_hook.set(seen.append)
    try:
        reached("fetch")
        reached("preprocess")  # not a dead-letter stage: not recorded
        reached("write")
    finally:
        consumer._stage_hook.reset(token)
    reached("embed")
    assert seen == ["fetch", "write"]


def test_max_attempts_is_at_least_two() -> None:
    from medsearch.contracts.spec import WorkerSpec

    assert WorkerSpec().max_attempts == 3
    with pytest.raises(ValueError):
        WorkerSpec(max_attempts=1)  # the last attempt is made alone, so at least two


def test_transient_errors_name_their_stage() -> None:
    assert TransientError("milvus down").stage == "write"
    assert TransientError("model server down", stage="embed").stage == "embed"


def test_metrics_have_their_own_registry() -> None:
    a, b = WorkerMetrics("a"), WorkerMetrics("a")
    a.consumed(3)
    a.indexed(2)
    a.dead_lettered("decode")
    a.observe_batch(0.2)
    a.set_lag(7)
    assert a.value("medsearch_worker_consumed_total") == 3
    assert a.value("medsearch_worker_indexed_total") == 2
    assert a.value("medsearch_worker_dead_lettered_total", stage="decode") == 1
    assert a.value("medsearch_worker_consumer_lag") == 7
    assert a.value("medsearch_worker_batch_seconds_count") == 1
    assert b.value("medsearch_worker_consumed_total") == 0


def test_setup_logging_quiets_pydicom_decoder_tracebacks_unless_debugging() -> None:
    import logging

    from medsearch_workers.runtime import setup_logging

    from medsearch.contracts.settings import WorkerSettings

    setup_logging(WorkerSettings(log_level="INFO"))
    assert logging.getLogger("pydicom").getEffectiveLevel() == logging.CRITICAL
    logging.getLogger("pydicom").setLevel(logging.NOTSET)
    setup_logging(WorkerSettings(log_level="DEBUG"))
    assert logging.getLogger("pydicom").getEffectiveLevel() < logging.CRITICAL


class _Ledger:
    """Records the ledger calls of the dead-letter sink (the SQL is covered against PostgreSQL in
    test_consumer_kafka.py)."""

    def __init__(self, calls: list[str], fail: bool = False) -> None:
        self.calls, self.fail = calls, fail

    def dead_letter(self, letters: list[object]) -> None:
        if self.fail:
            raise RuntimeError("PostgreSQL is down")
        self.calls.append(f"ledger.dead_letter({len(letters)})")

    def sent(self, deliveries: list[object]) -> None:
        self.calls.append(f"ledger.sent({len(deliveries)})")


class _Producer:
    def __init__(self, calls: list[str], ack: bool = True) -> None:
        self.calls, self.ack = calls, ack

    def send(self, topic: str, key: bytes | None = None, value: bytes = b"") -> object:
        self.calls.append(f"send({topic})")
        ack = self.ack

        class _Future:
            def get(self, timeout: float | None = None) -> None:
                if not ack:
                    raise TimeoutError("not acknowledged")

        return _Future()

    def flush(self, timeout: float | None = None) -> None:
        self.calls.append("flush")


def test_the_ledger_marks_dead_letters_before_they_are_published_and_forgets_them_once_acknowledged() -> None:
    from medsearch_workers.consumer import _DeadLetterSink

    failure = Failure(Incoming(b'{"not": "a message"}', None, "t.dicom", 0, 4), "fetch", "object not found")

    def sink(calls: list[str], *, ack: bool = True, ledger_down: bool = False) -> _DeadLetterSink:
        return _DeadLetterSink(_Producer(calls, ack), "t.dlq", "w", None, _Ledger(calls, ledger_down),  # type: ignore[arg-type]  # recording doubles
                               "t.dicom", "t.dicom")

    calls: list[str] = []
    sink(calls).send([failure], attempts=1)
    assert calls == ["ledger.dead_letter(1)", "send(t.dlq)", "flush", "ledger.sent(1)"]

    calls = []
    with pytest.raises(TransientError, match="not acknowledged"):
        sink(calls, ack=False).send([failure], attempts=1)
    assert calls == ["ledger.dead_letter(1)", "send(t.dlq)", "flush"]  # left in the outbox for the retry

    calls = []
    with pytest.raises(TransientError, match="ingest ledger"):
        sink(calls, ledger_down=True).send([failure], attempts=1)
    assert calls == []  # nothing published that the ledger does not hold


class _Record:
    def __init__(self, offset: int, value: bytes) -> None:
        self.topic, self.partition, self.offset, self.key, self.value = "t.dicom", 0, offset, None, value


class _Consumer:
    """A KafkaConsumer double: one poll answer, then nothing; records commits and seeks."""

    def __init__(self, records: list[_Record]) -> None:
        from kafka import TopicPartition

        self.tp = TopicPartition("t.dicom", 0)
        self.records, self.commits, self.seeks = records, [], []  # type: ignore[var-annotated]  # test double

    def poll(self, timeout_ms: int = 0, max_records: int = 0) -> dict[object, list[_Record]]:
        out, self.records = self.records[:max_records], self.records[max_records:]
        return {self.tp: out} if out else {}

    def commit(self, offsets: dict[object, object]) -> None:
        self.commits.append({tp.partition: om.offset for tp, om in offsets.items()})  # type: ignore[attr-defined]

    def assignment(self) -> set[object]:
        return {self.tp}

    def seek(self, tp: object, offset: int) -> None:
        self.seeks.append(offset)

    def highwater(self, tp: object) -> None:
        return None


class _LoopLedger(_Ledger):
    """The ingest ledger's calls as the loop makes them (no unfinished attempts)."""

    def attempts_of(self, deliveries: list[object]) -> dict[object, object]:
        self.calls.append(f"attempts_of({len(deliveries)})")
        return {}

    def begin(self, deliveries: list[object]) -> None:
        self.calls.append(f"begin({len(deliveries)})")

    def undo(self, deliveries: list[object]) -> None:
        self.calls.append(f"undo({len(deliveries)})")

    def done(self, deliveries: list[object]) -> None:
        self.calls.append(f"done({len(deliveries)})")


def test_the_loop_polls_handles_dead_letters_then_commits_and_rewinds_a_batch_on_a_transient_error() -> None:
    import threading

    from medsearch_workers.consumer import ConsumeLoop, _DeadLetterSink

    from medsearch.contracts.settings import WorkerSettings

    calls: list[str] = []
    consumer = _Consumer([_Record(i, f"m{i}".encode()) for i in range(5)])
    ledger = _LoopLedger(calls)
    metrics = WorkerMetrics("w")
    outages = ["model server down"]

    def handler(batch: list[Incoming]) -> list[Failure]:
        calls.append(f"handle({[m.offset for m in batch]})")
        if outages:
            raise TransientError(outages.pop(), stage="embed")
        return [Failure(m, "decode", "not_an_image: test") for m in batch if m.offset == 1]

    sink = _DeadLetterSink(_Producer(calls), "t.dlq", "w", metrics, ledger, "t.dicom", "t.dicom")  # type: ignore[arg-type]  # recording doubles
    stop = threading.Event()
    loop = ConsumeLoop(consumer=consumer, sink=sink, handler=handler, ledger=ledger,  # type: ignore[arg-type]  # doubles
                       settings=WorkerSettings(worker_retry_max_seconds=0.01), max_attempts=3, batch_size=3,
                       worker_name="w", stop=stop, metrics=metrics)
    first = loop.poll()
    assert [m.offset for m in first] == [0, 1, 2] and metrics.value("medsearch_worker_consumed_total") == 3
    loop.handle(first)  # the outage: the attempts undone, the batch rewound, nothing committed
    assert calls == ["attempts_of(3)", "begin(3)", "handle([0, 1, 2])", "undo(3)"]
    assert consumer.seeks == [0] and consumer.commits == []
    assert metrics.value("medsearch_worker_batch_retries_total", kind="transient") == 1
    calls.clear()
    loop.handle(first)  # re-delivered: handled, its failure dead-lettered, then committed
    assert calls == ["attempts_of(3)", "begin(3)", "handle([0, 1, 2])", "ledger.dead_letter(1)", "send(t.dlq)",
                     "flush", "ledger.sent(1)", "done(3)"]
    assert consumer.commits == [{0: 3}]
    assert metrics.value("medsearch_worker_indexed_total") == 2
    assert metrics.value("medsearch_worker_dead_lettered_total", stage="decode") == 1
    assert [m.offset for m in loop.poll()] == [3, 4] and loop.poll() == []


def test_the_consumer_is_made_with_the_specs_batch_size_and_poll_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import kafka
    from medsearch_workers.consumer import run_consumer

    from medsearch.contracts.settings import WorkerSettings

    made: list[dict[str, Any]] = []
    stop = threading.Event()

    def consumer(*topics: str, **options: Any) -> None:
        made.append({"topics": topics, **options})
        stop.set()  # the first try is enough: the worker stops instead of waiting for a broker
        raise kafka.errors.NoBrokersAvailable()

    monkeypatch.setattr(kafka, "KafkaConsumer", consumer)
    run_consumer(settings=WorkerSettings(), topic="t.reports", group_id="g", dlq_topic="t.dlq",
                 handler=lambda batch: [], worker_name="w", ledger=None, dicom_topic="t.dicom",  # type: ignore[arg-type]  # never reached
                 batch_size=7, max_poll_interval_seconds=45, stop=stop)
    [options] = made
    assert options["topics"] == ("t.reports",) and options["group_id"] == "g"
    assert (options["max_poll_records"], options["max_poll_interval_ms"]) == (7, 45_000)
    assert options["enable_auto_commit"] is False
