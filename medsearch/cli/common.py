"""Option handling shared by the commands that talk to an index's Kafka topics (``ingest``, ``dlq``)."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from pathlib import Path
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
    """The index's ingest ledger: in the running local stack's PostgreSQL when it serves ``index`` (as
    ``medsearch reindex`` finds it), else at ``MEDSEARCH_POSTGRES_DSN``. Connects on first use."""
    from medsearch.ledger import Ledger

    local = local_stack(None, index)
    if local is not None:
        return Ledger(local[0], index, password=local[1])
    return Ledger(settings.postgres_dsn, index, password=settings.postgres_secret())


LOCAL_STACK_GROUP = "medsearch.local_stack"


def local_stack(data_dir: Path | None, index: str) -> tuple[str, str | None, str, Any] | None:
    """(PostgreSQL DSN, password, Milvus URI, index spec or None) of a running local stack that serves ``index``,
    else None. The local stack lives in the development tools (medsearch-dev), which provide the lookup through
    the ``medsearch.local_stack`` entry point ``locate``; without them there is no local stack to find."""
    for ep in entry_points(group=LOCAL_STACK_GROUP, name="locate"):
        found: tuple[str, str | None, str, Any] | None = ep.load()(data_dir, index)
        return found
    return None
