"""Batch consumer framework shared by the DICOM and report workers.

Kafka I/O lives here; the per-message logic lives in a ``Handler`` (a plain function over a batch), so it can
be unit-tested without a broker.

Delivery contract (at-least-once, idempotent writes):

* a batch is polled, handed to the handler, which writes its results (upserts keyed by data-derived ids) and
  returns the *permanent* failures;
* the failures are published to the dead-letter topic and flushed; only then are the batch's offsets committed;
* a ``TransientError`` from the handler (a service is down) commits nothing: the consumer seeks back to the
  batch start and retries with exponential backoff, forever, keeping its group membership alive by polling;
* any other exception is retried ``worker_max_attempts`` times; then the batch is split into single messages and
  the messages that still fail are dead-lettered (so one poison message cannot block a partition);
* SIGTERM / SIGINT (or ``stop.set()``) ends the loop after the current handler call; a batch interrupted while
  backing off is abandoned without a commit.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from medsearch.contracts.messages import DeadLetter
from medsearch.contracts.naming import IndexNames
from medsearch.contracts.settings import WorkerSettings
from medsearch.contracts.spec import MedicalSearchIndexSpec, WorkerSpec
from medsearch.kafka_security import kafka_security_options

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
    """Raised by a handler when a dependency is unavailable: the whole batch is retried, nothing is committed."""


Handler = Callable[[list[Incoming]], list[Failure]]


class WorkerMetrics:
    """Prometheus metrics of one worker process (own registry, so tests can create several)."""

    def __init__(self, worker_name: str, registry: CollectorRegistry | None = None) -> None:
        self.worker_name = worker_name
        self.registry = registry if registry is not None else CollectorRegistry()
        labels = ["worker"]
        self._consumed = Counter(
            "medsearch_worker_consumed",
            "Messages received from Kafka (re-deliveries included).",
            labels,
            registry=self.registry,
        )
        self._indexed = Counter(
            "medsearch_worker_indexed",
            "Messages processed and written, offsets committed.",
            labels,
            registry=self.registry,
        )
        self._dead_lettered = Counter(
            "medsearch_worker_dead_lettered",
            "Messages sent to the dead-letter topic.",
            [*labels, "stage"],
            registry=self.registry,
        )
        self._retries = Counter(
            "medsearch_worker_batch_retries",
            "Batches retried after a transient or unexpected error.",
            [*labels, "kind"],
            registry=self.registry,
        )
        self._batch_seconds = Histogram(
            "medsearch_worker_batch_seconds",
            "Handler time per batch (successful batches).",
            labels,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self._lag = Gauge(
            "medsearch_worker_consumer_lag",
            "Messages behind the partition end (sum over assigned partitions).",
            labels,
            registry=self.registry,
        )

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


def setup_logging(settings: WorkerSettings) -> None:
    """A worker process's logging: the settings' level; client libraries' per-connection logs quieted."""
    logging.basicConfig(
        level=getattr(logging, settings.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("kafka", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if settings.log_level != "DEBUG":
        # pydicom logs a traceback at ERROR for every decoder plugin that fails on a file; the worker reports
        # the file once, as a dead letter with the combined reason. Its config module resets the logger's level
        # when imported, so import it first.
        import pydicom.config  # noqa: F401  # imported for its side effect on the "pydicom" logger

        logging.getLogger("pydicom").setLevel(logging.CRITICAL)


def load_spec(index: str) -> MedicalSearchIndexSpec:
    """The index spec from ``MEDSEARCH_INDEX_SPEC_FILE`` when set, else the defaults."""
    from medsearch.contracts.spec import default_index, load_index_file

    path = os.environ.get("MEDSEARCH_INDEX_SPEC_FILE")
    if path:
        idx = load_index_file(path)
        if idx.metadata.name != index:
            log.warning("MEDSEARCH_INDEX_SPEC_FILE names index %r; serving %r", idx.metadata.name, index)
        return idx.spec
    return default_index(index).spec


def spec_batch_size(worker: WorkerSpec) -> int | None:
    """The spec's batch size, unless ``MEDSEARCH_WORKER_BATCH_SIZE`` overrides it (None: use the settings')."""
    return None if "MEDSEARCH_WORKER_BATCH_SIZE" in os.environ else worker.batch_size


@dataclass(frozen=True)
class WorkerRuntime:
    """What every worker's ``run`` starts from: settings, stop event, names, spec and metrics (served)."""

    settings: WorkerSettings
    stop: threading.Event
    names: IndexNames
    spec: MedicalSearchIndexSpec
    metrics: WorkerMetrics


def worker_runtime(
    kind: str,
    settings: WorkerSettings | None = None,
    stop: threading.Event | None = None,
    spec: MedicalSearchIndexSpec | None = None,
    metrics: WorkerMetrics | None = None,
) -> WorkerRuntime:
    """Fill in the defaults and start the metrics endpoint when ``MEDSEARCH_WORKER_METRICS_PORT`` is set."""
    settings = settings if settings is not None else WorkerSettings()
    spec = spec if spec is not None else load_spec(settings.index)
    metrics = metrics if metrics is not None else WorkerMetrics(kind)
    if settings.worker_metrics_port:
        serve_metrics(settings.worker_metrics_port, metrics.registry, addr=settings.worker_metrics_host)
        log.info("metrics on %s:%d/metrics", settings.worker_metrics_host, settings.worker_metrics_port)
    return WorkerRuntime(settings, stop if stop is not None else threading.Event(), settings.index_names(), spec,
                         metrics)


def serve_metrics(port: int, registry: CollectorRegistry | None = None, addr: str = "0.0.0.0") -> None:
    """Expose ``/metrics`` on ``port`` (a daemon thread)."""
    if registry is None:
        start_http_server(port, addr=addr)
    else:
        start_http_server(port, addr=addr, registry=registry)


def backoff_seconds(attempt: int, ceiling: float, base: float = 0.5) -> float:
    """Exponential backoff: 0.5, 1, 2, 4 ... seconds, capped at ``ceiling`` (attempt counts from 1)."""
    return float(min(ceiling, base * (2 ** max(0, attempt - 1))))


@contextmanager
def _signals_set(stop: threading.Event) -> Iterator[None]:
    """Install SIGTERM/SIGINT handlers that set ``stop`` (main thread only), restore them afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _handler(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s received: stopping after the current batch", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, _handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


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
    def __init__(self, producer: Any, topic: str, worker_name: str, metrics: WorkerMetrics | None,
                 on_dead: Callable[[list[Failure]], None] | None = None) -> None:
        self.on_dead = on_dead
        self.producer = producer
        self.topic = topic
        self.worker_name = worker_name
        self.metrics = metrics

    def send(self, failures: list[Failure], attempts: int) -> None:
        """Publish and flush; raises TransientError when the broker does not acknowledge."""
        if not failures:
            return
        futures = []
        for f in failures:
            letter = DeadLetter.for_message(
                f.message.raw,
                topic=f.message.topic,
                stage=f.stage,
                error=f.error,
                attempts=attempts,
                worker=self.worker_name,
            )
            futures.append(self.producer.send(self.topic, key=f.message.key, value=letter.to_bytes()))
        try:
            self.producer.flush(timeout=30)
            for fut in futures:
                fut.get(timeout=30)
        except Exception as err:
            raise TransientError(f"dead-letter topic {self.topic}: not acknowledged ({err})") from err
        if self.on_dead is not None:
            try:
                self.on_dead(failures)
            except Exception as err:  # the ledger is down: retry the batch (dead letters are then sent again)
                raise TransientError(f"ingest ledger: {err}") from err
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


def _run_isolated(batch: list[Incoming], handler: Handler, attempts: int) -> list[Failure]:
    """After repeated unexpected errors: run message by message, turning the ones that still raise into failures.

    A TransientError from a single message still propagates (the whole batch is then retried).
    """
    failures: list[Failure] = []
    for msg in batch:
        try:
            failures.extend(handler([msg]))
        except TransientError:
            raise
        except Exception as err:  # noqa: BLE001 - a poison message must not block the partition
            stage = getattr(err, "stage", None)
            failures.append(
                Failure(
                    msg,
                    stage if stage in STAGES else "write",
                    f"unexpected error after {attempts} attempts: {type(err).__name__}: {err}",
                )
            )
    return failures


def process_batch(
    batch: list[Incoming],
    handler: Handler,
    *,
    unexpected_attempt: int,
    max_attempts: int,
) -> list[Failure]:
    """Run the handler once; raise TransientError (retry) or return the failures to dead-letter.

    Unexpected exceptions propagate until ``unexpected_attempt >= max_attempts``; then messages are isolated.
    """
    if unexpected_attempt >= max_attempts:
        return _run_isolated(batch, handler, unexpected_attempt)
    return handler(batch)


def run_consumer(
    *,
    settings: WorkerSettings,
    topic: str,
    group_id: str,
    dlq_topic: str,
    handler: Handler,
    worker_name: str,
    batch_size: int | None = None,
    stop: threading.Event | None = None,
    metrics: WorkerMetrics | None = None,
    consumer_options: dict[str, Any] | None = None,
    on_dead: Callable[[list[Failure]], None] | None = None,
) -> None:
    """Consume ``topic`` in group ``group_id`` until stopped (see the module docstring for the contract).

    ``on_dead`` is called with the failures once their dead letters are acknowledged (the ingest ledger's rows
    are marked dead); an exception from it retries the batch.

    ``consumer_options`` are extra ``KafkaConsumer`` keyword arguments; group timeouts also come from
    ``MEDSEARCH_WORKER_SESSION_TIMEOUT_MS`` / ``MEDSEARCH_WORKER_HEARTBEAT_MS`` (short ones in tests).
    """
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.errors import CommitFailedError, KafkaError
    from kafka.structs import OffsetAndMetadata

    stop = stop if stop is not None else threading.Event()
    size = batch_size or settings.worker_batch_size
    ceiling = settings.worker_retry_max_seconds
    common = _kafka_common(settings)
    options: dict[str, Any] = {
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": size,
        "max_poll_interval_ms": 600_000,
        "client_id": worker_name,
    }
    options.update(kafka_timeouts(settings))
    options.update(consumer_options or {})

    with _signals_set(stop):
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
        sink = _DeadLetterSink(producer, dlq_topic, worker_name, metrics, on_dead)
        log.info("%s: consuming %s as group %s (batch %d)", worker_name, topic, group_id, size)
        transient_attempt = 0
        unexpected_attempt = 0
        last_lag = 0.0
        try:
            while not stop.is_set():
                try:
                    polled = consumer.poll(timeout_ms=settings.worker_max_wait_ms or 100, max_records=size)
                except KafkaError as err:
                    transient_attempt += 1
                    delay = backoff_seconds(transient_attempt, ceiling)
                    log.warning("%s: poll failed (%s); retrying in %.1fs", worker_name, err, delay)
                    stop.wait(delay)
                    continue
                if metrics is not None and time.monotonic() - last_lag > 2.0:
                    last_lag = time.monotonic()
                    metrics.set_lag(_lag(consumer))
                if not polled:
                    continue
                batch = [
                    Incoming(
                        raw=rec.value if rec.value is not None else b"",
                        key=rec.key,
                        topic=rec.topic,
                        partition=rec.partition,
                        offset=rec.offset,
                    )
                    for records in polled.values()
                    for rec in records
                ]
                if metrics is not None:
                    metrics.consumed(len(batch))
                started = time.perf_counter()
                try:
                    failures = process_batch(
                        batch,
                        handler,
                        unexpected_attempt=unexpected_attempt + 1,
                        max_attempts=settings.worker_max_attempts,
                    )
                    sink.send(failures, attempts=max(1, unexpected_attempt + 1, transient_attempt + 1))
                except TransientError as err:
                    transient_attempt += 1
                    delay = backoff_seconds(transient_attempt, ceiling)
                    log.warning(
                        "%s: transient error (%s); batch of %d retried in %.1fs (attempt %d)",
                        worker_name,
                        err,
                        len(batch),
                        delay,
                        transient_attempt,
                    )
                    if metrics is not None:
                        metrics.retried("transient")
                    _rewind(consumer, batch, TopicPartition)
                    stop.wait(delay)
                    continue
                except Exception as err:
                    unexpected_attempt += 1
                    delay = backoff_seconds(unexpected_attempt, ceiling)
                    log.exception(
                        "%s: unexpected error in batch of %d (attempt %d/%d); retrying in %.1fs: %s",
                        worker_name,
                        len(batch),
                        unexpected_attempt,
                        settings.worker_max_attempts,
                        delay,
                        err,
                    )
                    if metrics is not None:
                        metrics.retried("unexpected")
                    _rewind(consumer, batch, TopicPartition)
                    stop.wait(delay)
                    continue
                elapsed = time.perf_counter() - started
                offsets: dict[Any, Any] = {}
                for msg in batch:
                    tp = TopicPartition(msg.topic, msg.partition)
                    nxt = msg.offset + 1
                    if tp not in offsets or offsets[tp].offset < nxt:
                        offsets[tp] = OffsetAndMetadata(nxt, "", -1)
                try:
                    consumer.commit(offsets=offsets)
                except (CommitFailedError, KafkaError) as err:
                    # Rebalanced away (or broker gone): the batch will be re-delivered; writes are idempotent.
                    log.warning("%s: commit failed (%s); the batch will be re-delivered", worker_name, err)
                    transient_attempt += 1
                    continue
                transient_attempt = 0
                unexpected_attempt = 0
                if metrics is not None:
                    metrics.observe_batch(elapsed)
                    metrics.indexed(len(batch) - len(failures))
                log.info(
                    "%s: batch of %d done in %.2fs (%d dead-lettered)", worker_name, len(batch), elapsed, len(failures)
                )
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


def ledger_dead_marker(settings: WorkerSettings) -> tuple[Callable[[list[Failure]], None], Callable[[], None]]:
    """(on_dead for :func:`run_consumer`, close): marks the ingest ledger's rows of dead-lettered messages."""
    from medsearch.ledger import Ledger, mark_dead_letters

    names = settings.index_names()
    ledger = Ledger(settings.postgres_dsn, names, password=settings.postgres_secret())
    dicom_topic = names.dicom_topic

    def on_dead(failures: list[Failure]) -> None:
        mark_dead_letters(ledger, dicom_topic, [(f.message.raw, f.message.topic, f.stage, f.error) for f in failures])

    return on_dead, ledger.close
