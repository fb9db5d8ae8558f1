"""Option handling shared by the commands that talk to an index's Kafka topics (``ingest``, ``dlq``)."""

from __future__ import annotations

import logging
from typing import Any

import typer
from rich.console import Console

console = Console(stderr=True, soft_wrap=True)


def resolve_index(index: str | None) -> tuple[str, Any]:
    """The index name (``--index``, else ``$MEDSEARCH_INDEX``), validated, and the environment's
    :class:`~medsearch.contracts.settings.ServiceSettings`; exits 2 with the reason on a bad name."""
    from medsearch.contracts.settings import ServiceSettings
    from medsearch.contracts.spec import SpecError, validate_index_name

    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        # kafka-python logs every failed connection attempt; the commands' own errors say what to do.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    settings = ServiceSettings()
    name = index or settings.index
    try:
        validate_index_name(name)
    except (SpecError, ValueError) as err:
        console.print(f"[red]error:[/red] --index: {err}")
        raise typer.Exit(2) from None
    return name, settings


def kafka_security(settings: Any) -> dict[str, Any]:
    """The TLS/SASL options of ``settings`` for kafka-python; exits 2 naming the setting when they contradict."""
    from medsearch.kafka_security import KafkaSecurityError, kafka_security_options

    try:
        return kafka_security_options(settings)
    except KafkaSecurityError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None


def ledger_for(index: str, settings: Any) -> Any:
    """The index's ingest ledger: at ``MEDSEARCH_POSTGRES_DSN`` when it is set (services of the local stack, such as
    its DICOM receiver, are started with it), else in the running local stack's PostgreSQL when it serves ``index``
    (as ``medsearch reindex`` finds it), else at the default DSN. Connects on first use."""
    import os

    from medsearch.cli.reindex import _local_stack
    from medsearch.ledger import Ledger

    local = None if os.environ.get("MEDSEARCH_POSTGRES_DSN") else _local_stack(None, index)
    if local is not None:
        return Ledger(local[0], index, password=local[1])
    return Ledger(settings.postgres_dsn, index, password=settings.postgres_secret())
