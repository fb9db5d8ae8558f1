"""What every worker process starts from, assembled once: settings (process-level: where the services are, log
level, metrics port, consumer tuning), the index spec (index-level: batch size, attempts, NLP backend, the embedding
model), logging, the metrics endpoint, SIGTERM/SIGINT handlers, the ingest ledger and the consume loop.

A worker's ``run`` is ``with worker_runtime(kind, ...) as rt:`` its own start-up (model server, NLP models, the
writer), then ``rt.consume(handler)``. The handlers are installed when the runtime is entered, so that a SIGTERM
during the start-up (waiting for the model server) stops the worker as well as one during the loop.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from prometheus_client import CollectorRegistry, start_http_server

from medsearch.contracts.naming import IndexNames
from medsearch.contracts.settings import WorkerSettings
from medsearch.contracts.spec import MedicalSearchIndexSpec, WorkerKind, WorkerSpec
from medsearch.signals import stopping_on_signals
from medsearch_workers.consumer import Handler, WorkerMetrics, run_consumer

if TYPE_CHECKING:
    from medsearch.ledger import Ledger
    from medsearch_workers.writers import SystemOfRecordWriter

log = logging.getLogger("medsearch.workers.runtime")

class RuntimeParts(TypedDict, total=False):
    """What a caller (a test, a benchmark) may hand a worker's ``run`` instead of the defaults."""

    stop: threading.Event  # set to stop the worker (default: its own, set by SIGTERM/SIGINT)
    spec: MedicalSearchIndexSpec  # default: from MEDSEARCH_INDEX_SPEC_FILE
    metrics: WorkerMetrics  # default: a registry of its own
    consumer_options: dict[str, Any]  # extra KafkaConsumer keyword arguments


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


def load_spec(settings: WorkerSettings) -> MedicalSearchIndexSpec:
    """The index spec from ``MEDSEARCH_INDEX_SPEC_FILE`` when set, else the defaults: the only source of the
    index-level options of a worker."""
    from medsearch.contracts.spec import default_index, load_index_file

    if settings.index_spec_file:
        idx = load_index_file(settings.index_spec_file)
        if idx.metadata.name != settings.index:
            log.warning("MEDSEARCH_INDEX_SPEC_FILE names index %r; serving %r", idx.metadata.name, settings.index)
        return idx.spec
    return default_index(settings.index).spec


def serve_metrics(port: int, registry: CollectorRegistry | None = None, addr: str = "0.0.0.0") -> None:
    """Expose ``/metrics`` on ``port`` (a daemon thread)."""
    if registry is None:
        start_http_server(port, addr=addr)
    else:
        start_http_server(port, addr=addr, registry=registry)


def worker_ledger(settings: WorkerSettings) -> Ledger:
    """The ingest ledger of the worker's index (its own PostgreSQL connection)."""
    from medsearch.ledger import Ledger

    return Ledger(settings.postgres_dsn, settings.index_names(), password=settings.postgres_secret())


@dataclass
class WorkerRuntime:
    """One worker process: ``kind`` (``dicom`` / ``report``), its settings, stop event, names, spec and metrics.
    Entered (``with``), it serves the metrics, installs the signal handlers and, on leaving, closes what was
    registered with :meth:`closing` (last first)."""

    kind: WorkerKind
    settings: WorkerSettings
    stop: threading.Event
    names: IndexNames
    spec: MedicalSearchIndexSpec
    metrics: WorkerMetrics
    consumer_options: dict[str, Any] = field(default_factory=dict)
    _exit: ExitStack = field(default_factory=ExitStack, repr=False)

    @property
    def worker(self) -> WorkerSpec:
        """The spec's options of this kind of worker (``spec.workers.<kind>``)."""
        return self.spec.workers.of(self.kind)

    def __enter__(self) -> WorkerRuntime:
        s = self.settings
        if s.worker_metrics_port:
            serve_metrics(s.worker_metrics_port, self.metrics.registry, addr=s.worker_metrics_host)
            log.info("metrics on %s:%d/metrics", s.worker_metrics_host, s.worker_metrics_port)
        self._exit.enter_context(stopping_on_signals(
            self.stop, lambda name: log.info("signal %s received: stopping after the current batch", name)))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._exit.close()

    def closing(self, close: Callable[[], Any]) -> None:
        """Call ``close`` when the runtime is left (clients, writers)."""
        self._exit.callback(close)

    def index_writer(self) -> SystemOfRecordWriter:
        """This kind's writer (PostgreSQL, then Milvus), closed when the runtime is left."""
        from medsearch_workers.writers import index_writer

        writer = index_writer(self.settings, self.kind)
        self.closing(writer.close)
        return writer

    def consume(self, handler: Handler) -> None:
        """Consume this kind's topic with ``handler`` until stopped, with the spec's batch size, attempts and poll
        interval."""
        n = self.names
        topic, group = ((n.dicom_topic, n.dicom_consumer_group) if self.kind == "dicom"
                        else (n.reports_topic, n.report_consumer_group))
        ledger = worker_ledger(self.settings)
        try:
            run_consumer(settings=self.settings, topic=topic, group_id=group, dlq_topic=n.dlq_topic, handler=handler,
                         worker_name=f"{self.kind}-worker-{os.getpid()}", ledger=ledger, dicom_topic=n.dicom_topic,
                         max_attempts=self.worker.max_attempts, batch_size=self.worker.batch_size,
                         max_poll_interval_seconds=self.worker.max_poll_interval_seconds, stop=self.stop,
                         metrics=self.metrics, consumer_options=self.consumer_options)
        finally:
            ledger.close()


def worker_runtime(kind: WorkerKind, settings: WorkerSettings | None = None,
                   **parts: Unpack[RuntimeParts]) -> WorkerRuntime:
    """Fill in the defaults: settings from the environment, the spec from ``MEDSEARCH_INDEX_SPEC_FILE``."""
    settings = settings if settings is not None else WorkerSettings()
    spec = parts.get("spec")
    return WorkerRuntime(
        kind,
        settings,
        parts.get("stop") or threading.Event(),
        settings.index_names(),
        spec if spec is not None else load_spec(settings),
        parts.get("metrics") or WorkerMetrics(kind),
        dict(parts.get("consumer_options") or {}),
    )


def main(run: Callable[[WorkerSettings], None]) -> None:
    """A worker's entry point: settings from the environment, logging, then ``run``."""
    settings = WorkerSettings()
    setup_logging(settings)
    run(settings)
