"""``medsearch up | down | status | token | demo``: the local stack.

Registered on the ``medsearch`` command through the ``medsearch.cli`` entry point ``stack``. :func:`locate` is the
``medsearch.local_stack`` entry point through which ``medsearch reindex``, ``audit``, ``ingest`` and ``dlq`` find
a running local stack's PostgreSQL and Milvus.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from medsearch.contracts.settings import default_data_dir
from medsearch.contracts.spec import MedicalSearchIndex, SpecError, default_index, load_index_file

if TYPE_CHECKING:
    from medsearch_dev.localstack.stack import Ports, StackPaths

log = logging.getLogger(__name__)
WEIGHTS_HELP = "Embedding weights: imagenet | random | PATH | URI (default: the index's spec.embedding.weights)."
INDEX_HELP = "MedicalSearchIndex YAML (default: an index named 'demo' with default settings)."
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

DATA_DIR_HELP = (
    "Data directory (logs, PostgreSQL and Milvus data, objects, token). "
    "Default: $MEDSEARCH_DATA_DIR or ~/.local/share/medsearch."
)
# The options several commands share.
_INDEX_FILE = typer.Option(None, "--index", help=INDEX_HELP)
_DATA_DIR = typer.Option(None, "--data-dir", envvar="MEDSEARCH_DATA_DIR", help=DATA_DIR_HELP)
_WEIGHTS = typer.Option(None, help=WEIGHTS_HELP)
_BACKEND = typer.Option("auto", help="Model server backend: auto | torch | onnx.")
_PORT_OFFSET = typer.Option(0, "--port-offset", help="Add N to every default port (run two stacks).")


def _data_dir(value: Path | None) -> Path:
    return (value or default_data_dir()).expanduser().resolve()


def _paths(data_dir: Path | None) -> StackPaths:
    from medsearch_dev.localstack.stack import StackPaths

    return StackPaths(_data_dir(data_dir))


def locate(data_dir: Path | None, index: str) -> tuple[str, str | None, str, Any] | None:
    """(DSN, password, Milvus URI, spec) of a running local stack serving ``index``, else None."""
    from medsearch_dev.localstack import postgres as pg
    from medsearch_dev.localstack.stack import StackError, StackPaths, is_running, read_state

    paths = StackPaths((data_dir or default_data_dir()).expanduser())
    if not is_running(paths):
        return None
    try:
        state = read_state(paths)
    except StackError:
        return None
    ports = state.get("ports") or {}
    if state.get("index") != index or not ports.get("postgres"):
        return None
    spec = load_index_file(paths.index_spec).spec if paths.index_spec.exists() else None
    return (pg.dsn(ports["postgres"]), pg.password(paths.data_dir), f"http://127.0.0.1:{ports['milvus']}", spec)


def _load_index(index_file: Path | None) -> MedicalSearchIndex:
    if index_file is None:
        return default_index("demo")
    try:
        return load_index_file(index_file)
    except SpecError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None


def imagenet_weights_available() -> bool:
    """True when torchvision has DenseNet121 ImageNet weights cached or can reach its download host."""
    import os

    hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
    if any(hub.glob("densenet121-*.pth")):
        return True
    try:
        with socket.create_connection(("download.pytorch.org", 443), timeout=3):
            return True
    except OSError:
        return False


def resolve_weights(requested: str | None, index: MedicalSearchIndex, *, allow_random_fallback: bool) -> str:
    """The weights the model server gets: the flag, else the index spec's ``embedding.weights``.

    ImageNet weights that are neither cached nor downloadable become ``random`` only for the demo, and loudly;
    ``up`` refuses instead, so a real deployment never runs on random weights by accident.
    """
    weights = requested or index.spec.embedding.weights
    if weights != "imagenet" or imagenet_weights_available():
        return weights
    if not allow_random_fallback:
        console.print(
            "[red]error:[/red] the index asks for ImageNet DenseNet121 weights, which are not cached and cannot be "
            "downloaded (offline). Pass --weights PATH|URI with your own weights, or --weights random for a "
            "structural demo."
        )
        raise typer.Exit(2)
    console.print(
        "[bold yellow]WARNING:[/bold yellow] ImageNet weights for DenseNet121 are not cached and cannot be downloaded "
        "(offline): the model server will use [bold]random[/bold] (seeded) weights. Image similarity is then only "
        "a structural demo, not a clinical one. Pass --weights imagenet|PATH|URI to choose."
    )
    return "random"


def _ports(offset: int, kafka: int | None, milvus: int | None, model: int | None, api: int | None,
           postgres: int | None = None, dicom: int | None = None) -> Ports:
    from medsearch_dev.localstack.stack import Ports

    d = Ports()
    return Ports(
        kafka=kafka or d.kafka + offset,
        milvus=milvus or d.milvus + offset,
        model_http=model or d.model_http + offset,
        model_grpc=(model + 1) if model else d.model_grpc + offset,
        api=api or d.api + offset,
        postgres=postgres or 0,
        dicom=dicom or d.dicom + offset,
    )


def _wait_for_signal(paths: StackPaths) -> None:
    """Block until Ctrl-C / SIGTERM or until supervisord disappears."""
    from medsearch.cli.common import stop_on_signals
    from medsearch_dev.localstack.stack import supervisor_pid

    stop = stop_on_signals()
    console.print("[dim]Press Ctrl-C to stop the stack.[/dim]")
    while not stop.wait(1.0):
        if supervisor_pid(paths) is None:
            console.print("[red]the local stack stopped unexpectedly[/red]")
            return


def _start(
    *, index: MedicalSearchIndex, data_dir: Path | None, weights: str | None, backend: str, ports: Ports,
    demo: bool,
) -> StackPaths:
    """Start the stack. For the demo, an already running stack is reused and missing ImageNet weights fall back
    (loudly) to random ones."""
    from medsearch_dev.localstack.stack import StackError, is_running, start_stack

    paths = _paths(data_dir)
    if demo and is_running(paths):
        console.print(f"[green]✓[/green] reusing the local stack already running from {paths.data_dir}")
        return paths
    weights = resolve_weights(weights, index, allow_random_fallback=demo)
    t0 = time.monotonic()
    started: dict[str, float] = {}

    def progress(name: str, msg: str) -> None:
        if msg == "starting":
            started[name] = time.monotonic()
            console.print(f"[cyan]…[/cyan] {name}: starting")
        else:
            dt = time.monotonic() - started.get(name, t0)
            console.print(f"[green]✓[/green] {name}: {msg} ({dt:.1f}s)")

    try:
        start_stack(paths=paths, index=index, ports=ports, weights=weights, backend=backend, progress=progress)
    except StackError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(1) from None
    console.print(f"[green]✓[/green] local stack up in {time.monotonic() - t0:.1f}s (logs in {paths.logs})")
    return paths


def _print_urls(paths: StackPaths) -> None:
    from medsearch_dev.localstack.stack import ensure_token, read_state

    state = read_state(paths)
    api = next((s["url"] for s in state["services"] if s["name"] == "api"), None)
    table = Table(show_header=False, box=None)
    if api:
        table.add_row("Web", f"{api}/")
        table.add_row("GraphQL", f"{api}/graphql")
    for s in state["services"]:
        if s["name"] != "api" and s["url"]:
            table.add_row(s["name"], s["url"])
    table.add_row("Token", ensure_token(paths))
    table.add_row("Index", state["index"])
    table.add_row("Data dir", state["data_dir"])
    out.print(table)


def register(app: typer.Typer) -> None:
    @app.command()
    def up(
        index_file: Path | None = _INDEX_FILE,
        data_dir: Path | None = _DATA_DIR,
        detach: bool = typer.Option(False, "--detach", "-d", help="Return once every service is healthy."),
        weights: str | None = _WEIGHTS,
        backend: str = _BACKEND,
        port_offset: int = _PORT_OFFSET,
        kafka_port: int | None = typer.Option(None, help="Broker port (default 9092)."),
        milvus_port: int | None = typer.Option(None, help="Milvus port (default 19530)."),
        model_port: int | None = typer.Option(None, help="Model server HTTP port (default 8080; gRPC is +1)."),
        api_port: int | None = typer.Option(None, help="Gateway port (default 8000)."),
        postgres_port: int | None = typer.Option(None, help="PostgreSQL port (default: a free port)."),
        dicom_port: int | None = typer.Option(None, help="DICOM receiver port, AE MEDSEARCH (default 11112)."),
    ) -> None:
        """Start the local stack (broker, PostgreSQL, Milvus, model server, workers, gateway, DICOM receiver) on
        loopback."""
        index = _load_index(index_file)
        ports = _ports(port_offset, kafka_port, milvus_port, model_port, api_port, postgres_port, dicom_port)
        paths = _start(index=index, data_dir=data_dir, weights=weights, backend=backend, ports=ports, demo=False)
        _print_urls(paths)
        if not detach:
            _wait_for_signal(paths)
            _stop(paths)

    @app.command()
    def down(
        data_dir: Path | None = _DATA_DIR,
    ) -> None:
        """Stop a detached local stack."""
        paths = _paths(data_dir)
        if not _stop(paths):
            console.print(f"no local stack is running from {paths.data_dir}")

    @app.command()
    def status(
        data_dir: Path | None = _DATA_DIR,
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Each service with its URL and health, and per index the counts of images, reports and dead letters."""
        from medsearch_dev.localstack.stack import StackError, stack_status

        paths = _paths(data_dir)
        try:
            st = stack_status(paths)
        except StackError as err:
            if as_json:
                out.print_json(json.dumps({"running": False, "data_dir": str(paths.data_dir), "services": [],
                                           "indexes": [], "error": str(err)}))
            else:
                console.print(str(err))
            raise typer.Exit(1) from None
        if as_json:
            out.print_json(json.dumps(st))
        else:
            table = Table("service", "url", "state", "health")
            for s in st["services"]:
                table.add_row(s["name"], s["url"], s["state"],
                              "[green]healthy[/green]" if s["healthy"] else "[red]unhealthy[/red]")
            out.print(table)
            counts = Table("index", "images", "reports", "Milvus images", "Milvus reports", "dead letters")
            for i in st["indexes"]:
                counts.add_row(i["index"], str(i["images"]), str(i["reports"]), str(i.get("milvus_images")),
                               str(i.get("milvus_reports")), str(i["dead_letters"]))
            out.print(counts)
        if not st["running"] or not all(s["healthy"] for s in st["services"]):
            raise typer.Exit(1)

    @app.command()
    def token(
        data_dir: Path | None = _DATA_DIR,
    ) -> None:
        """Print the local API token (<data-dir>/token, created on first use with mode 600)."""
        from medsearch_dev.localstack.stack import ensure_token

        out.print(ensure_token(_paths(data_dir)), highlight=False)

    @app.command()
    def demo(
        index_file: Path | None = _INDEX_FILE,
        data_dir: Path | None = _DATA_DIR,
        detach: bool = typer.Option(False, "--detach", "-d", help="Return once the data is loaded."),
        weights: str | None = _WEIGHTS,
        backend: str = _BACKEND,
        samples: Path | None = typer.Option(None, help="Sample manifest (default: the bundled samples/manifest.json)."),
        port_offset: int = _PORT_OFFSET,
        timeout: float = typer.Option(600.0, help="Seconds to wait for the sample data to be indexed."),
    ) -> None:
        """`up` + load the sample data + print the URLs and a token (what `make demo` runs)."""
        index = _load_index(index_file)
        ports = _ports(port_offset, None, None, None, None)
        paths = _start(index=index, data_dir=data_dir, weights=weights, backend=backend, ports=ports, demo=True)
        from medsearch_dev.localstack.demo import DemoError, load_samples

        try:
            load_samples(paths, manifest=samples, timeout=timeout, console=console)
        except DemoError as err:
            console.print(f"[red]error:[/red] {err}")
            if not detach:
                _stop(paths)
            raise typer.Exit(1) from None
        _print_urls(paths)
        if not detach:
            _wait_for_signal(paths)
            _stop(paths)


def _stop(paths: StackPaths) -> bool:
    from medsearch_dev.localstack.stack import stop_stack

    console.print("stopping the local stack…")
    stopped: bool = stop_stack(paths)
    if stopped:
        console.print("[green]✓[/green] stopped")
    sys.stdout.flush()
    return stopped
