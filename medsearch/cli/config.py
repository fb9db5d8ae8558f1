"""``medsearch config``: settings documentation and the effective configuration."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    config = typer.Typer(help="Configuration: documentation and effective values.", no_args_is_help=True)

    @config.command("docs")
    def docs() -> None:
        """Print docs/configuration.md, generated from the settings models."""
        from medsearch.configdoc import render

        typer.echo(render(), nl=False)
        typer.echo("")

    @config.command("show")
    def show() -> None:
        """Print the settings this environment resolves to (secrets hidden)."""
        from medsearch.contracts.settings import ApiSettings, ModelServerSettings, WorkerSettings

        data = {
            "api": json.loads(ApiSettings().model_dump_json()),
            "worker": json.loads(WorkerSettings().model_dump_json()),
            "model_server": json.loads(ModelServerSettings().model_dump_json()),
        }
        typer.echo(json.dumps(data, indent=2))

    app.add_typer(config, name="config")
