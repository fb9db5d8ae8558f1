"""The ``medsearch`` command. Each subcommand group lives in its own module under ``medsearch.cli`` and exposes
``register(app)``; heavy imports happen inside the commands, so ``medsearch --help`` stays fast."""

from __future__ import annotations

import importlib
import logging
import warnings

import typer

app = typer.Typer(
    name="medsearch",
    help="Search medical images and radiology reports: local stack, ingest, embeddings and clinical NLP.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Modules registering subcommands, in --help order. Each imports only medsearch core at module level.
_COMMAND_MODULES = [
    "medsearch.cli.stack",
    "medsearch.cli.ingest",
    "medsearch.cli.receive",
    "medsearch.cli.dlq",
    "medsearch.cli.reindex",
    "medsearch.cli.audit",
    "medsearch.cli.embed",
    "medsearch.cli.nlp",
    "medsearch.cli.config",
]


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(app)


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
