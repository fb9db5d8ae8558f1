"""Option handling shared by the commands that talk to an index's Kafka topics (``ingest``, ``dlq``,
``receive``): the index and its settings, the Kafka security options, the ingest ledger and a publisher on it."""

from __future__ import annotations

import logging
import threading
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from medsearch.contracts.naming import IndexNames, IndexRef, names_of

if TYPE_CHECKING:
    from medsearch.contracts.settings import ServiceSettings
    from medsearch.ledger import Ledger
    from medsearch.producer import Publisher

console = Console(stderr=True, soft_wrap=True)


def resolve_index(index: str | None) -> tuple[IndexNames, ServiceSettings]:
    """The index (``--index``, else ``$MEDSEARCH_INDEX``; scoped by ``$MEDSEARCH_INDEX_NAMESPACE`` when set, as in
    a cluster's pods), validated, and the environment's :class:`~medsearch.contracts.settings.ServiceSettings`;
    exits 2 with the reason on a bad name."""
    from medsearch.contracts.naming import names_for
    from medsearch.contracts.settings import ServiceSettings
    from medsearch.contracts.spec import SpecError

    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        # kafka-python logs every failed connection attempt; the commands' own errors say what to do.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    settings = ServiceSettings()
    name = index or settings.index
    try:
        return names_for(name, settings.index_namespace), settings
    except (SpecError, ValueError) as err:
        console.print(f"[red]error:[/red] --index: {err}")
        raise typer.Exit(2) from None


def kafka_security(settings: ServiceSettings) -> dict[str, Any]:
    """The TLS/SASL options of ``settings`` for kafka-python; exits 2 naming the setting when they contradict."""
    from medsearch.kafka_security import KafkaSecurityError, kafka_security_options

    try:
        return kafka_security_options(settings)
    except KafkaSecurityError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None


def ledger_for(index: IndexNames, settings: ServiceSettings) -> Ledger:
    """The index's ingest ledger: at ``MEDSEARCH_POSTGRES_DSN`` when it is set (services of the local stack, such as
    its DICOM receiver, are started with it), else in the running local stack's PostgreSQL when it serves ``index``
    (as ``medsearch reindex`` finds it), else at the default DSN. Connects on first use."""
    import os

    from medsearch.ledger import Ledger

    local = None if os.environ.get("MEDSEARCH_POSTGRES_DSN") else local_stack(None, index)
    if local is not None:
        return Ledger(local[0], index, password=local[1])
    return Ledger(settings.postgres_dsn, index, password=settings.postgres_secret())


def open_publisher(index: IndexNames, settings: ServiceSettings, *, source: str, bootstrap: str | None = None,
                   store_url: str | None = None, republish_after: float | None = None) -> tuple[Publisher, Ledger]:
    """A publisher into ``index`` (``bootstrap``, ``store_url``, ``republish_after``: else the settings') and the
    index's ingest ledger it records in before publishing, checked reachable; exits 1 saying what to check when
    the broker or the ledger cannot be reached (2 when the Kafka security settings contradict)."""
    from medsearch.producer import Publisher, PublishError

    security = kafka_security(settings)
    ledger = ledger_for(index, settings)
    try:
        publisher = Publisher(
            bootstrap=bootstrap or settings.kafka_bootstrap, object_store_url=store_url or settings.object_store_url,
            index=index, source=source, security=security, ledger=ledger,
            republish_after=settings.ingest_republish_after_seconds if republish_after is None else republish_after,
        )
    except PublishError as err:
        ledger.close()
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(1) from None
    try:
        ledger.counts()
    except Exception as err:  # noqa: BLE001 - DatabaseError: say what to check
        publisher.close()
        ledger.close()
        console.print(f"[red]error:[/red] {err}: the ingest ledger is in PostgreSQL; start the local stack "
                      "(medsearch up) or set MEDSEARCH_POSTGRES_DSN, and provision the index")
        raise typer.Exit(1) from None
    return publisher, ledger


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (replacing their handlers for the rest of the process): a long-running
    command's way to stop."""
    from medsearch.signals import install_stop_handlers

    stop = threading.Event()
    install_stop_handlers(stop)
    return stop


LOCAL_STACK_GROUP = "medsearch.local_stack"


def local_stack(data_dir: Path | None, index: IndexRef) -> tuple[str, str | None, str, Any] | None:
    """(PostgreSQL DSN, password, Milvus URI, index spec or None) of a running local stack that serves ``index``,
    else None. The local stack lives in the development tools (medsearch-dev), which provide the lookup through
    the ``medsearch.local_stack`` entry point ``locate``; without them there is no local stack to find. The local
    stack serves unscoped indexes only: an index with a namespace lives in a cluster."""
    names = names_of(index)
    if names.namespace is not None:
        return None
    for ep in entry_points(group=LOCAL_STACK_GROUP, name="locate"):
        found: tuple[str, str | None, str, Any] | None = ep.load()(data_dir, names.index)
        return found
    return None
