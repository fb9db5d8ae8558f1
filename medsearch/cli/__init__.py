"""The ``medsearch`` command. Each subcommand group lives in its own module under ``medsearch.cli`` and exposes
``register(app)``; heavy imports happen inside the commands, so ``medsearch --help`` stays fast.

The commands backed by a deployable or by the development tools come from those distributions through the
``medsearch.cli`` entry-point group (each entry point is a ``register(app)`` function): ``embed`` from
medsearch-model-server, ``nlp`` from medsearch-workers, ``up``/``down``/``status``/``token``/``demo`` from
medsearch-dev. The core never imports them; a command whose distribution is missing says what to install.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points

import typer

ENTRY_POINT_GROUP = "medsearch.cli"

app = typer.Typer(
    name="medsearch",
    help="Search medical images and radiology reports: local stack, ingest, embeddings and clinical NLP.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Modules registering subcommands, in --help order. Each imports only medsearch core at module level.
_COMMAND_MODULES = [
    "medsearch.cli.ingest",
    "medsearch.cli.receive",
    "medsearch.cli.dlq",
    "medsearch.cli.reindex",
    "medsearch.cli.audit",
    "medsearch.cli.config",
]

# Commands that other distributions provide through ENTRY_POINT_GROUP: the entry point's name and what to install.
_LOCAL_STACK = ("stack", "medsearch-dev (the local stack: `pip install -e ./dev`)")
PLUGIN_COMMANDS = {
    "up": _LOCAL_STACK,
    "down": _LOCAL_STACK,
    "status": _LOCAL_STACK,
    "token": _LOCAL_STACK,
    "demo": _LOCAL_STACK,
    "embed": ("embed", "medsearch-model-server (`pip install -e ./model_server`)"),
    "nlp": ("nlp", "medsearch-workers[report] (`pip install -e './ingest_workers[report]'`)"),
}


def command_names(target: typer.Typer) -> set[str]:
    """The names of the commands and command groups registered on ``target``."""
    names = {c.name or (c.callback.__name__.replace("_", "-") if c.callback else "")
             for c in target.registered_commands}
    names |= {g.name or "" for g in target.registered_groups}
    return names - {""}


def _missing(name: str, install: str, reason: str = "") -> Callable[..., None]:
    def command(ctx: typer.Context) -> None:
        detail = f" ({reason})" if reason else ""
        typer.echo(f"error: `medsearch {name}` is not installed here: install {install}{detail}", err=True)
        raise typer.Exit(2)

    command.__doc__ = f"[not installed: needs {install.split(' ')[0]}]"
    return command


def register_plugins(target: typer.Typer, plugins: list[EntryPoint] | None = None) -> dict[str, str]:
    """Call every ``register(app)`` of ``plugins`` (default: the installed ``medsearch.cli`` entry points), then
    add a stand-in for each of :data:`PLUGIN_COMMANDS` still missing that exits 2 naming the distribution to
    install. Returns the entry points that failed to load, by name, with the reason."""
    failed: dict[str, str] = {}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP) if plugins is None else plugins, key=lambda e: e.name):
        try:
            ep.load()(target)
        except ImportError as err:  # a distribution installed without what its commands import
            failed[ep.name] = f"{ep.value}: {err}"
    present = command_names(target)
    for name, (ep_name, install) in PLUGIN_COMMANDS.items():
        if name not in present:
            target.command(
                name, context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
                add_help_option=False,
            )(_missing(name, install, failed.get(ep_name, "")))
    return failed


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(app)
    register_plugins(app)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug details."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        # Client libraries log every connection at INFO; keep the CLI's own output readable.
        for noisy in ("pymilvus", "httpx", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        # kafka-python warns about things the CLI does on purpose (offset reads without a consumer group).
        logging.getLogger("kafka").setLevel(logging.ERROR)
        # pydicom warns about every slightly non-conformant test file it still reads correctly. Its config
        # module sets the logger's level when imported, so import it first.
        import pydicom.config  # noqa: F401  # imported for its side effect on the "pydicom" logger

        logging.getLogger("pydicom").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom\..*")


_register_all()


def main() -> None:
    app()
