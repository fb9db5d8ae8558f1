"""``medsearch receive``: the DICOM receiver (C-ECHO and C-STORE SCP) for one index."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console

console = Console(stderr=True, soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command("receive")
    def receive(
        index: str | None = typer.Option(None, "--index", "-i", help="Index name (default: $MEDSEARCH_INDEX)."),
        ae_title: str | None = typer.Option(
            None, "--ae-title", help="Our AE title (default: $MEDSEARCH_RECEIVER_AE_TITLE, MEDSEARCH)."
        ),
        host: str | None = typer.Option(None, "--host", help="Listen address (default: $MEDSEARCH_RECEIVER_HOST)."),
        port: int | None = typer.Option(
            None, "--port", "-p", help="DICOM port (default: $MEDSEARCH_RECEIVER_PORT, 11112).", min=1, max=65535
        ),
        allow: list[str] = typer.Option(
            [], "--allow", help="Calling AE title allowed to connect (repeatable; default: "
            "$MEDSEARCH_RECEIVER_ALLOWED_AETS; none: any)."
        ),
        bootstrap: str | None = typer.Option(
            None, "--bootstrap", help="Kafka bootstrap servers (default: $MEDSEARCH_KAFKA_BOOTSTRAP)."
        ),
        store_url: str | None = typer.Option(
            None, "--store", help="Object store URL, file:// or s3:// (default: $MEDSEARCH_OBJECT_STORE_URL)."
        ),
    ) -> None:
        """Receive DICOM instances from modalities and PACS (C-STORE) and publish them for indexing, exactly as
        `medsearch ingest` does (same object store layout, same duplicate detection). Answers C-ECHO. Runs until
        SIGINT/SIGTERM, letting open associations finish."""
        from pydantic import ValidationError

        from medsearch.cli.common import open_publisher, resolve_index, stop_on_signals
        from medsearch.contracts.settings import ReceiverSettings
        from medsearch.dicomnet.receiver import Receiver

        index_name, _ = resolve_index(index)
        overrides: dict[str, Any] = {"index": index_name.index}
        for key, value in (("receiver_ae_title", ae_title), ("receiver_host", host), ("receiver_port", port),
                           ("kafka_bootstrap", bootstrap), ("object_store_url", store_url)):
            if value is not None:
                overrides[key] = value
        if allow:
            overrides["receiver_allowed_aets"] = allow
        try:
            settings = ReceiverSettings(**overrides)
        except ValidationError as err:
            console.print(f"[red]error:[/red] {err}")
            raise typer.Exit(2) from None
        # what is acknowledged is recorded before it is published
        publisher, ledger = open_publisher(index_name, settings, source="dicom-receiver")
        receiver = Receiver(settings, publisher)
        try:
            if settings.receiver_metrics_port:
                from prometheus_client import start_http_server

                start_http_server(settings.receiver_metrics_port, addr=settings.receiver_metrics_host,
                                  registry=receiver.metrics.registry)
            receiver.start()
        except OSError as err:
            publisher.close()
            ledger.close()
            console.print(
                f"[red]error:[/red] cannot listen on {settings.receiver_host}:{settings.receiver_port}: {err.strerror}"
            )
            raise typer.Exit(1) from None
        stop = stop_on_signals()
        console.print(
            f"receiving as {settings.receiver_ae_title} on {settings.receiver_host}:{receiver.port} "
            f"for index {str(index_name)!r}"
        )
        while not stop.wait(0.5):
            pass
        receiver.stop()
        ledger.close()
        console.print(json.dumps(receiver.totals))
