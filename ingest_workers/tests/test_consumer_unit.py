"""Pure parts of the batch consumer: failures, backoff, dead letters of messages that never finished, stage hook,
metrics."""

from __future__ import annotations

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
