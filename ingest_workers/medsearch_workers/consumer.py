"""Batch consumer framework shared by the DICOM and report workers.

Kafka I/O lives here; the per-message logic lives in a ``Handler`` (a plain function over a batch), so it can
be unit-tested without a broker.

Delivery contract (at-least-once, idempotent writes, nothing stuck):

* a batch is polled; before the handler sees it, one attempt per message is recorded in the index's ingest ledger
  (PostgreSQL, ``delivery_attempts``); the handler writes its results (upserts keyed by data-derived ids) and
  returns the *permanent* failures;
* the failures' ledger rows are marked dead and their dead letters stored in the outbox in one transaction, then
  published and flushed; only then are the batch's offsets committed (and the attempts forgotten);
* a ``TransientError`` from the handler (a service is down) does not count as an attempt and commits nothing: the
  consumer seeks back and retries with exponential backoff, keeping its group membership alive by polling; forever,
  or until ``worker_retry_budget_seconds`` when set, after which the batch's messages are dead-lettered at the
  failing stage (replayable once the service is back);
* a batch holding a message with an unfinished attempt (the worker died handling it: out of memory, SIGKILL; or
  the handler raised) is handled message by message, each committed on its own, its stages recorded: a message
  whose handlings never finished ``max_attempts`` times (spec ``workers.<kind>.maxAttempts``) is dead-lettered
  with the last stage and error without being handled again, so one poison message cannot block a partition,
  even one that kills the process;
* ``stop.set()`` (the runtime's SIGTERM / SIGINT handlers, :mod:`medsearch_workers.runtime`) ends the loop after
  the current handler call; a batch interrupted while backing off is abandoned without a commit.

The loop is :class:`ConsumeLoop` (poll → handle → dead-letter → commit); :func:`run_consumer` connects the Kafka
clients and runs it; the process around it (settings, spec, logging, metrics endpoint, signals, ledger) is
:mod:`medsearch_workers.runtime`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from medsearch.contracts.messages import DeadLetter
from medsearch.contracts.settings import WorkerSettings
from medsearch.contracts.spec import WorkerSpec
from medsearch.kafka_security import kafka_security_options

if TYPE_CHECKING:
    from medsearch.ledger import Attempt, Delivery, Ledger

log = logging.getLogger("medsearch.workers.consumer")

STAGES: tuple[str, ...] = get_args(DeadLetter.model_fields["stage"].annotation)


@dataclass(frozen=True)
class Incoming:
    """One Kafka record handed to a handler."""

    raw: bytes
    key: bytes | None
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Failure:
    """A permanent failure of one message; ``stage`` is one of the DeadLetter stage literals."""

    message: Incoming
    stage: str
    error: str

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"Failure.stage {self.stage!r} is not one of {', '.join(STAGES)}")


class TransientError(Exception):
    """Raised by a handler when a dependency is unavailable: the whole batch is retried, nothing is committed.
    ``stage``: where (a DeadLetter stage), for the dead letters of a batch that outlives the retry budget."""

    def __init__(self, message: str, *, stage: str = "write") -> None:
        super().__init__(message)
        self.stage = stage


Handler = Callable[[list[Incoming]], list[Failure]]

_DEFAULTS = WorkerSpec()  # batch size, attempts and poll interval of a consumer not given the spec's


class WorkerMetrics:
    """Prometheus metrics of one worker process (own registry, so tests can create several)."""

    def __init__(self, worker_name: str, registry: CollectorRegistry | None = None) -> None:
        self.worker_name = worker_name
        self.registry = registry if registry is not None else CollectorRegistry()
        counter = self._counter
        self._consumed = counter("medsearch_worker_consumed", "Messages received from Kafka (re-deliveries included).")
        self._indexed = counter("medsearch_worker_indexed", "Messages processed and written, offsets committed.")
        self._dead_lettered = counter("medsearch_worker_dead_lettered", "Messages sent to the dead-letter topic.",
                                      "stage")
        self._retries = counter("medsearch_worker_batch_retries",
                                "Batches retried after a transient or unexpected error.", "kind")
        self._batch_seconds = Histogram(
            "medsearch_worker_batch_seconds",
            "Handler time per batch (successful batches).",
            ["worker"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self._lag = Gauge("medsearch_worker_consumer_lag",
                          "Messages behind the partition end (sum over assigned partitions).", ["worker"],
                          registry=self.registry)

    def _counter(self, name: str, documentation: str, *labels: str) -> Counter:
        return Counter(name, documentation, ["worker", *labels], registry=self.registry)

    def consumed(self, n: int) -> None:
        self._consumed.labels(self.worker_name).inc(n)

    def indexed(self, n: int) -> None:
        self._indexed.labels(self.worker_name).inc(n)

    def dead_lettered(self, stage: str, n: int = 1) -> None:
        self._dead_lettered.labels(self.worker_name, stage).inc(n)

    def retried(self, kind: str) -> None:
        self._retries.labels(self.worker_name, kind).inc()

    def observe_batch(self, seconds: float) -> None:
        self._batch_seconds.labels(self.worker_name).observe(seconds)

    def set_lag(self, lag: int) -> None:
        self._lag.labels(self.worker_name).set(lag)

    def value(self, name: str, **labels: str) -> float:
        """Current value of a sample (tests, bench): e.g. ``value("medsearch_worker_indexed_total")``."""
        got = self.registry.get_sample_value(name, {"worker": self.worker_name, **labels})
        return float(got or 0.0)


def backoff_seconds(attempt: int, ceiling: float, base: float = 0.5) -> float:
    """Exponential backoff: 0.5, 1, 2, 4 ... seconds, capped at ``ceiling`` (attempt counts from 1)."""
    return float(min(ceiling, base * (2 ** max(0, attempt - 1))))


def kafka_timeouts(settings: WorkerSettings) -> dict[str, Any]:
    """Consumer group timeouts from ``MEDSEARCH_WORKER_SESSION_TIMEOUT_MS`` / ``MEDSEARCH_WORKER_HEARTBEAT_MS``."""
    out: dict[str, Any] = {}
    if settings.worker_session_timeout_ms is not None:
        out["session_timeout_ms"] = settings.worker_session_timeout_ms
    if settings.worker_heartbeat_ms is not None:
        out["heartbeat_interval_ms"] = settings.worker_heartbeat_ms
    return out


def _kafka_common(settings: WorkerSettings) -> dict[str, Any]:
    return {
        "bootstrap_servers": [s.strip() for s in settings.kafka_bootstrap.split(",") if s.strip()],
        **kafka_security_options(settings),
    }


def _connect(factory: Callable[[], Any], what: str, stop: threading.Event, ceiling: float) -> Any | None:
    """Build a Kafka client, waiting for the broker with backoff instead of crashing; None if stopped."""
    attempt = 0
    while not stop.is_set():
        attempt += 1
        try:
            return factory()
        except Exception as err:  # noqa: BLE001 - kafka-python raises several types for an unreachable broker
            delay = backoff_seconds(attempt, ceiling)
            log.warning("%s: broker not reachable (%s); retrying in %.1fs", what, err, delay)
            stop.wait(delay)
    return None


class _DeadLetterSink:
    """Dead letters through the ledger's outbox: their ledger rows are marked dead and the letters stored in one
    PostgreSQL transaction, then published and flushed, then taken out of the outbox. A failure before the broker's
    acknowledgement raises TransientError (the batch is retried: nothing was committed, and marking again is a
    no-op); what a crash leaves in the outbox is published by :meth:`drain` when a worker starts."""

    def __init__(self, producer: Any, topic: str, worker_name: str, metrics: WorkerMetrics | None,
                 ledger: Ledger, dicom_topic: str, source_topic: str) -> None:
        self.source_topic = source_topic
        self.producer = producer
        self.topic = topic
        self.worker_name = worker_name
        self.metrics = metrics
        self.ledger = ledger
        self.dicom_topic = dicom_topic

    def send(self, failures: list[Failure], attempts: int) -> None:
        """Mark, publish and flush; raises TransientError when the ledger or the broker does not answer."""
        from medsearch.ledger import OutboxLetter, ledger_row_of

        if not failures:
            return
        letters: list[OutboxLetter] = []
        for f in failures:
            d = delivery_of(f.message)
            letter = DeadLetter.for_message(
                f.message.raw, topic=f.message.topic, stage=f.stage, error=f.error, attempts=max(1, attempts),
                worker=self.worker_name,
            )
            letters.append(OutboxLetter(d, self.topic, f.message.key, letter.to_bytes(),
                                        ledger_row_of(f.message.raw, f.message.topic, self.dicom_topic), f.stage,
                                        f.error))
        try:
            self.ledger.dead_letter(letters)
        except Exception as err:  # DatabaseError: the ledger is down, retry the batch
            raise TransientError(f"ingest ledger: {err}") from err
        self._publish([(lt.delivery, lt.dlq_topic, lt.key, lt.letter) for lt in letters])
        for f in failures:
            log.warning(
                "dead-lettered %s[%d]@%d stage=%s: %s",
                f.message.topic,
                f.message.partition,
                f.message.offset,
                f.stage,
                f.error,
            )
            if self.metrics is not None:
                self.metrics.dead_lettered(f.stage)

    def _publish(self, letters: list[tuple[Delivery, str, bytes | None, bytes]]) -> None:
        futures = [self.producer.send(topic, key=key, value=value) for _, topic, key, value in letters]
        try:
            self.producer.flush(timeout=30)
            for fut in futures:
                fut.get(timeout=30)
        except Exception as err:
            raise TransientError(f"dead-letter topic {self.topic}: not acknowledged ({err})") from err
        try:
            self.ledger.sent([d for d, *_ in letters])
        except Exception as err:  # noqa: BLE001 - published: at worst the next start publishes them once more
            log.warning("dead letters published but still in the outbox (%s): the next start sends them again", err)

    def drain(self) -> int:
        """Publish what an earlier worker left in the outbox (it died between the ledger and the broker); raises
        TransientError when the ledger or the broker does not answer (called again later)."""
        try:
            left = self.ledger.outbox()
        except Exception as err:  # DatabaseError
            raise TransientError(f"dead-letter outbox not readable ({err})") from err
        mine = [x for x in left if x[0].topic == self.source_topic]
        if mine:
            self._publish(mine)
            log.warning("published %d dead letters left in the outbox by an earlier worker", len(mine))
        return len(mine)


def delivery_of(msg: Incoming) -> Delivery:
    from medsearch.ledger import Delivery

    return Delivery.of(msg.topic, msg.partition, msg.offset, msg.raw)


# The stage the current handling reached, recorded in the ledger for messages handled alone (see ``reached``).
_stage_hook: ContextVar[Callable[[str], None] | None] = ContextVar("medsearch_stage_hook", default=None)


def reached(stage: str) -> None:
    """Handlers call this on entering a stage (a DeadLetter stage literal). For a message handled alone after a
    crash or a failure, the stage is recorded durably, so that the dead letter of a message that kills the worker
    names the stage it died in; otherwise it costs nothing."""
    hook = _stage_hook.get()
    if hook is not None and stage in STAGES:
        hook(stage)


def crash_failure(msg: Incoming, attempt: Attempt) -> Failure:
    """The dead letter of a message whose handlings never finished: the worker died (out of memory, killed) or
    failed every time."""
    stage = attempt.stage if attempt.stage in STAGES else "decode_message"
    last = f"; last error: {attempt.error}" if attempt.error else "; the worker died (killed or out of memory)"
    return Failure(msg, stage, f"handled {attempt.attempts} times without finishing, last in stage {stage}{last}")


class ConsumeLoop:
    """One consumer's loop: :meth:`poll` a batch, :meth:`handle` it (durable attempts, backoff, isolation),
    :meth:`dead_letter` its permanent failures, :meth:`commit` its offsets (see the module docstring)."""

    def __init__(self, *, consumer: Any, sink: _DeadLetterSink, handler: Handler, ledger: Ledger,
                 settings: WorkerSettings, max_attempts: int, batch_size: int, worker_name: str, stop: threading.Event,
                 metrics: WorkerMetrics | None) -> None:
        from kafka import TopicPartition

        self.consumer = consumer
        self.sink = sink
        self.handler = handler
        self.ledger = ledger
        self.settings = settings
        self.max_attempts = max_attempts
        self.batch_size = batch_size
        self.worker_name = worker_name
        self.stop = stop
        self.metrics = metrics
        self.tp = TopicPartition
        self.transient_attempt = 0
        self.transient_since: float | None = None
        self._last_lag = 0.0
        self._drained, self._next_drain = False, 0.0

    def run(self) -> None:
        """Until stopped: publish what an earlier worker left in the outbox (once), poll, handle."""
        while not self.stop.is_set():
            self._drain_outbox()
            batch = self.poll()
            if batch:
                self.handle(batch)

    def _drain_outbox(self) -> None:
        if self._drained or time.monotonic() < self._next_drain:
            return
        try:
            self.sink.drain()
            self._drained = True
        except TransientError as err:
            ceiling = self.settings.worker_retry_max_seconds
            self._next_drain = time.monotonic() + ceiling
            log.warning("%s: %s; tried again in %.0fs", self.worker_name, err, ceiling)

    def poll(self) -> list[Incoming]:
        """The next batch (empty when none came, or when the broker did not answer: backing off)."""
        from kafka.errors import KafkaError

        try:
            polled = self.consumer.poll(timeout_ms=self.settings.worker_max_wait_ms or 100,
                                        max_records=self.batch_size)
        except KafkaError as err:
            self.transient_attempt += 1
            delay = backoff_seconds(self.transient_attempt, self.settings.worker_retry_max_seconds)
            log.warning("%s: poll failed (%s); retrying in %.1fs", self.worker_name, err, delay)
            self.stop.wait(delay)
            return []
        if self.metrics is not None and time.monotonic() - self._last_lag > 2.0:
            self._last_lag = time.monotonic()
            self.metrics.set_lag(_lag(self.consumer))
        batch = [
            Incoming(raw=rec.value if rec.value is not None else b"", key=rec.key, topic=rec.topic,
                     partition=rec.partition, offset=rec.offset)
            for records in (polled or {}).values()
            for rec in records
        ]
        if batch and self.metrics is not None:
            self.metrics.consumed(len(batch))
        return batch

    def _backoff(self, batch: list[Incoming], kind: str, err: BaseException) -> None:
        _rewind(self.consumer, batch, self.tp)
        self.transient_attempt += 1
        delay = backoff_seconds(self.transient_attempt, self.settings.worker_retry_max_seconds)
        log.warning("%s: %s error (%s); %d messages retried in %.1fs (attempt %d)", self.worker_name, kind, err,
                    len(batch), delay, self.transient_attempt)
        if self.metrics is not None:
            self.metrics.retried(kind)
        self.stop.wait(delay)

    def commit(self, batch: list[Incoming]) -> bool:
        """Commit the batch's offsets, then forget its attempts; False when the commit failed (re-delivered)."""
        from kafka.errors import CommitFailedError, KafkaError
        from kafka.structs import OffsetAndMetadata

        offsets: dict[Any, Any] = {}
        for msg in batch:
            tp = self.tp(msg.topic, msg.partition)
            nxt = msg.offset + 1
            if tp not in offsets or offsets[tp].offset < nxt:
                offsets[tp] = OffsetAndMetadata(nxt, "", -1)
        try:
            self.consumer.commit(offsets=offsets)
        except (CommitFailedError, KafkaError) as err:
            # Rebalanced away (or broker gone): the batch will be re-delivered; writes are idempotent.
            log.warning("%s: commit failed (%s); the batch will be re-delivered", self.worker_name, err)
            self.transient_attempt += 1
            return False
        try:
            self.ledger.done([delivery_of(m) for m in batch])
        except Exception as err:  # noqa: BLE001 - stale rows only matter if the same message comes again
            log.warning("%s: attempts not cleared (%s)", self.worker_name, err)
        self.transient_attempt = 0
        self.transient_since = None
        return True

    def _over_budget(self, batch: list[Incoming], err: TransientError) -> list[Failure] | None:
        """Past ``worker_retry_budget_seconds`` of transient errors: the batch's messages as failures at the
        failing stage (replayable once the dependency is back); else None."""
        budget = self.settings.worker_retry_budget_seconds
        now = time.monotonic()
        if self.transient_since is None:
            self.transient_since = now
        if budget <= 0 or now - self.transient_since < budget:
            return None
        stage = err.stage if err.stage in STAGES else "write"
        reason = f"{err} (still failing after the retry budget of {budget:g}s)"
        return [Failure(m, stage, reason) for m in batch]

    def handle(self, batch: list[Incoming]) -> None:
        """Handle one polled batch: together when none of its messages has an unfinished handling, else alone."""
        from medsearch.pgstore import DatabaseError

        deliveries = [delivery_of(m) for m in batch]
        try:
            prior = {d: a for d, a in self.ledger.attempts_of(deliveries).items() if a.attempts > 0}
        except DatabaseError as err:
            self._backoff(batch, "transient", err)
            return
        if prior:
            self._isolated(batch, prior)
            return
        started = time.perf_counter()
        try:
            self.ledger.begin(deliveries)
            failures = self.handler(batch)
        except (TransientError, DatabaseError) as err:
            self._undo(deliveries)
            over = self._over_budget(batch, err) if isinstance(err, TransientError) else None
            if over is None:
                self._backoff(batch, "transient", err)
                return
            failures = over
        except Exception as err:  # a bug or a poison message: the next poll handles them alone
            self._note(deliveries, err)
            log.exception("%s: unexpected error in a batch of %d; its messages are handled alone next",
                          self.worker_name, len(batch))
            self._backoff(batch, "unexpected", err)
            return
        if not self.dead_letter(batch, failures, 1):
            return
        elapsed = time.perf_counter() - started
        if self.commit(batch):
            if self.metrics is not None:
                self.metrics.observe_batch(elapsed)
                self.metrics.indexed(len(batch) - len(failures))
            log.info("%s: batch of %d done in %.2fs (%d dead-lettered)", self.worker_name, len(batch), elapsed,
                     len(failures))

    def dead_letter(self, batch: list[Incoming], failures: list[Failure], attempts: int) -> bool:
        """Dead-letter ``failures``; False (the batch rewound, backing off) when the ledger or the DLQ is down."""
        try:
            self.sink.send(failures, attempts=attempts)
        except TransientError as err:
            self._backoff(batch, "transient", err)
            return False
        return True

    def _undo(self, deliveries: list[Delivery]) -> None:
        try:
            self.ledger.undo(deliveries)
        except Exception as err:  # noqa: BLE001 - the ledger is down too: the attempt counts, harmlessly
            log.warning("%s: attempt not undone (%s)", self.worker_name, err)

    def _note(self, deliveries: list[Delivery], err: BaseException) -> None:
        try:
            self.ledger.failed(deliveries, f"{type(err).__name__}: {err}")
        except Exception as e:  # noqa: BLE001 - the count was recorded before; the reason is a nicety
            log.warning("%s: error not recorded (%s)", self.worker_name, e)

    def _alone(self, msg: Incoming, d: Delivery) -> list[Failure]:
        """Handle one message, recording the stages it reaches."""

        def hook(stage: str) -> None:
            self.ledger.reached(d, stage)

        self.ledger.begin([d])
        token = _stage_hook.set(hook)
        try:
            return self.handler([msg])
        finally:
            _stage_hook.reset(token)

    def _isolated(self, batch: list[Incoming], prior: dict[Delivery, Attempt]) -> None:
        """Message by message, each committed on its own: a message whose handlings never finished
        ``max_attempts`` times is dead-lettered without being handled again; the others are handled alone, their
        stages recorded, and one that raises again is dead-lettered once it reaches ``max_attempts``."""
        from medsearch.ledger import Attempt
        from medsearch.pgstore import DatabaseError

        for pos, msg in enumerate(batch):
            rest = batch[pos:]
            if self.stop.is_set():
                _rewind(self.consumer, rest, self.tp)
                return
            d = delivery_of(msg)
            before = prior.get(d, Attempt(0, None, None))
            attempts = before.attempts
            failures: list[Failure]
            if attempts >= self.max_attempts:
                failures = [crash_failure(msg, before)]
                log.warning("%s: %s[%d]@%d was handled %d times without finishing: dead-lettered", self.worker_name,
                            msg.topic, msg.partition, msg.offset, attempts)
            else:
                attempts += 1
                try:
                    failures = self._alone(msg, d)
                except (TransientError, DatabaseError) as err:
                    self._undo([d])
                    over = self._over_budget([msg], err) if isinstance(err, TransientError) else None
                    if over is None:
                        self._backoff(rest, "transient", err)
                        return
                    failures = over
                except Exception as err:  # counted; dead-lettered at the last attempt
                    self._note([d], err)
                    log.exception("%s: unexpected error handling %s[%d]@%d alone (attempt %d/%d)", self.worker_name,
                                  msg.topic, msg.partition, msg.offset, attempts, self.max_attempts)
                    if attempts < self.max_attempts:
                        self._backoff(rest, "unexpected", err)
                        return
                    try:
                        now = self.ledger.attempts_of([d]).get(d)
                    except DatabaseError:
                        now = None
                    stage = getattr(err, "stage", None) or (now.stage if now else None)
                    failures = [crash_failure(msg, Attempt(attempts, stage, f"{type(err).__name__}: {err}"))]
            if not self.dead_letter(rest, failures, max(1, attempts)):
                return
            if not self.commit([msg]):
                _rewind(self.consumer, batch[pos + 1:], self.tp)
                return
            if self.metrics is not None:
                self.metrics.indexed(1 - len(failures))


def run_consumer(
    *,
    settings: WorkerSettings,
    topic: str,
    group_id: str,
    dlq_topic: str,
    handler: Handler,
    worker_name: str,
    ledger: Ledger,
    dicom_topic: str,
    max_attempts: int = _DEFAULTS.max_attempts,
    batch_size: int = _DEFAULTS.batch_size,
    max_poll_interval_seconds: int = _DEFAULTS.max_poll_interval_seconds,
    stop: threading.Event | None = None,
    metrics: WorkerMetrics | None = None,
    consumer_options: dict[str, Any] | None = None,
) -> None:
    """Consume ``topic`` in group ``group_id`` until ``stop`` is set (see the module docstring for the contract;
    the signal handlers that set it are the runtime's, :mod:`medsearch_workers.runtime`).

    ``ledger``: the index's ingest ledger (durable attempts, dead rows, the dead-letter outbox); ``dicom_topic``
    tells its DICOM rows from its report rows; ``max_attempts``: handlings of one message that crashed or failed
    before it is dead-lettered, ``batch_size`` and ``max_poll_interval_seconds`` (all ``spec.workers.<kind>``; the
    defaults are the spec's).

    ``consumer_options`` are extra ``KafkaConsumer`` keyword arguments; group timeouts also come from
    ``MEDSEARCH_WORKER_SESSION_TIMEOUT_MS`` / ``MEDSEARCH_WORKER_HEARTBEAT_MS`` (short ones in tests).
    """
    from kafka import KafkaConsumer, KafkaProducer

    stop = stop if stop is not None else threading.Event()
    ceiling = settings.worker_retry_max_seconds
    common = _kafka_common(settings)
    options: dict[str, Any] = {
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": batch_size,
        "max_poll_interval_ms": max_poll_interval_seconds * 1000,
        "client_id": worker_name,
    }
    options.update(kafka_timeouts(settings))
    options.update(consumer_options or {})

    consumer = _connect(lambda: KafkaConsumer(topic, **common, **options), f"{worker_name} consumer", stop, ceiling)
    if consumer is None:
        return
    producer = _connect(
        lambda: KafkaProducer(**common, acks="all", linger_ms=5, client_id=f"{worker_name}-dlq"),
        f"{worker_name} dead-letter producer",
        stop,
        ceiling,
    )
    if producer is None:
        consumer.close()
        return
    sink = _DeadLetterSink(producer, dlq_topic, worker_name, metrics, ledger, dicom_topic, topic)
    loop = ConsumeLoop(consumer=consumer, sink=sink, handler=handler, ledger=ledger, settings=settings,
                       max_attempts=max_attempts, batch_size=batch_size, worker_name=worker_name, stop=stop,
                       metrics=metrics)
    log.info("%s: consuming %s as group %s (batch %d)", worker_name, topic, group_id, batch_size)
    try:
        loop.run()
    finally:
        log.info("%s: closing consumer", worker_name)
        try:
            producer.close(timeout=5)
        finally:
            consumer.close(autocommit=False)


def _rewind(consumer: Any, batch: list[Incoming], topic_partition: Any) -> None:
    """Seek every partition of the batch back to its first offset in the batch (re-delivery on next poll)."""
    first: dict[tuple[str, int], int] = {}
    for msg in batch:
        k = (msg.topic, msg.partition)
        first[k] = min(first.get(k, msg.offset), msg.offset)
    assigned = consumer.assignment()
    for (t, p), off in first.items():
        tp = topic_partition(t, p)
        if tp in assigned:
            consumer.seek(tp, off)


def _lag(consumer: Any) -> int:
    total = 0
    for tp in consumer.assignment():
        high = consumer.highwater(tp)
        if high is None:
            continue
        try:
            pos = consumer.position(tp, timeout_ms=100)
        except Exception:  # noqa: BLE001 - lag is best effort
            continue
        if pos is not None:
            total += max(0, high - pos)
    return total
