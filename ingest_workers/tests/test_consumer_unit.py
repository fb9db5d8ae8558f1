"""Pure parts of the batch consumer: failures, backoff, poison-message isolation, metrics."""

from __future__ import annotations

import pytest
from medsearch_workers.consumer import (
    Failure,
    Incoming,
    TransientError,
    WorkerMetrics,
    backoff_seconds,
    process_batch,
)


def _msg(i: int) -> Incoming:
    return Incoming(raw=f"m{i}".encode(), key=None, topic="t.dicom", partition=0, offset=i)


def test_failure_stage_must_be_a_dead_letter_stage() -> None:
    Failure(_msg(0), "decode", "x")
    with pytest.raises(ValueError, match="stage"):
        Failure(_msg(0), "nonsense", "x")


def test_backoff_grows_and_is_capped() -> None:
    assert [backoff_seconds(a, 3.0) for a in (1, 2, 3, 4, 10)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_unexpected_errors_propagate_until_the_last_attempt_then_isolate_the_poison_message() -> None:
    def handler(batch: list[Incoming]) -> list[Failure]:
        if any(m.raw == b"m2" for m in batch):
            raise KeyError("boom")
        return []

    batch = [_msg(i) for i in range(4)]
    with pytest.raises(KeyError):
        process_batch(batch, handler, unexpected_attempt=1, max_attempts=3)
    failures = process_batch(batch, handler, unexpected_attempt=3, max_attempts=3)
    assert [f.message.offset for f in failures] == [2]
    assert failures[0].stage == "write" and "KeyError" in failures[0].error


def test_transient_errors_are_never_isolated() -> None:
    def handler(batch: list[Incoming]) -> list[Failure]:
        raise TransientError("down")

    with pytest.raises(TransientError):
        process_batch([_msg(0)], handler, unexpected_attempt=5, max_attempts=3)


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

    from medsearch_workers.consumer import setup_logging

    from medsearch.contracts.settings import WorkerSettings

    setup_logging(WorkerSettings(log_level="INFO"))
    assert logging.getLogger("pydicom").getEffectiveLevel() == logging.CRITICAL
    logging.getLogger("pydicom").setLevel(logging.NOTSET)
    setup_logging(WorkerSettings(log_level="DEBUG"))
    assert logging.getLogger("pydicom").getEffectiveLevel() < logging.CRITICAL
