"""``medsearch reindex``: rebuild an index's Milvus collections from PostgreSQL, the system of record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from medsearch.cli.common import local_stack, resolve_index

console = Console(stderr=True, soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command()
    def reindex(
        index: str | None = typer.Option(None, "--index", help="Index name (default: $MEDSEARCH_INDEX)."),
        only: list[str] = typer.Option([], "--only", help="Rebuild only this collection: images | reports "
                                       "(repeatable; default both)."),
        index_file: Path | None = typer.Option(None, "--index-file", help="MedicalSearchIndex YAML whose spec the "
                                               "collections are created from (default: the local stack's, else "
                                               "the defaults)."),
        data_dir: Path | None = typer.Option(None, "--data-dir", envvar="MEDSEARCH_DATA_DIR",
                                             help="Local stack data directory (its PostgreSQL and Milvus are used "
                                             "when it serves the index)."),
        batch: int = typer.Option(1000, min=1, max=10000, help="Rows per read and write."),
    ) -> None:
        """Drop and rebuild the Milvus collections of an index from PostgreSQL (no re-embedding). Uses the
        running local stack when it serves the index, else MEDSEARCH_POSTGRES_DSN / MEDSEARCH_MILVUS_URI. Also
        the way to apply an index-type or metric change."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from medsearch import pgstore
        from medsearch.contracts.spec import default_index, load_index_file
        from medsearch.provision import ProvisionError, milvus_client
        from medsearch.reindex import KINDS, rebuild

        name, settings = resolve_index(index)
        bad = [k for k in only if k not in KINDS]
        if bad:
            console.print(f"[red]error:[/red] --only: {', '.join(bad)} is not one of {', '.join(KINDS)}")
            raise typer.Exit(2)
        local = local_stack(data_dir, name)
        if local is not None:
            dsn, password, milvus_uri, spec = local
        else:
            dsn, password, milvus_uri, spec = (settings.postgres_dsn, settings.postgres_secret(),
                                               settings.milvus_uri, None)
        if index_file is not None:
            spec = load_index_file(index_file).spec
        spec = spec or default_index(name).spec
        token = settings.milvus_token.get_secret_value() if settings.milvus_token else None
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=console) as bar:
            tasks: dict[str, Any] = {}

            def progress(kind: str, done: int, total: int) -> None:
                if kind not in tasks:
                    tasks[kind] = bar.add_task(f"{name} {kind}", total=total or None)
                bar.update(tasks[kind], completed=done)

            try:
                with pgstore.connect(dsn, password) as conn:
                    client = milvus_client(milvus_uri, token, timeout=60)
                    try:
                        result = rebuild(conn, client, name, spec, kinds=only or KINDS, batch=batch,
                                         progress=progress)
                    finally:
                        client.close()
            except (pgstore.DatabaseError, ProvisionError) as err:
                console.print(f"[red]error:[/red] {err}")
                raise typer.Exit(1) from None
        for kind, n in result.written.items():
            skipped = result.skipped.get(kind, 0)
            note = f" ({skipped} rows without a vector skipped)" if skipped else ""
            console.print(f"[green]✓[/green] {name} {kind}: {n} rows rebuilt from PostgreSQL{note}")
