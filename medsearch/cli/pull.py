"""``medsearch ingest --from-dicomweb URL [--since DATE]``: pull studies from a DICOMweb server."""

from __future__ import annotations

import datetime as dt
import json
import threading
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from medsearch.dicomnet.pull import PullSummary

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def pull_dicomweb(url: str, *, since: str | None, index: str | None, bootstrap: str | None, store_url: str | None,
                  as_json: bool, dry_run: bool, follow: float | None = None) -> None:
    import httpx

    from medsearch.cli.common import open_publisher, resolve_index, stop_on_signals
    from medsearch.dicomnet.pull import DicomwebPuller, PullError
    from medsearch.producer import PublishError
    from medsearch.store import StoreError

    if dry_run:
        console.print("[red]error:[/red] --dry-run is not supported with --from-dicomweb")
        raise typer.Exit(2)
    if not url.startswith(("http://", "https://")):
        console.print(f"[red]error:[/red] --from-dicomweb: {url!r} is not an http(s) URL")
        raise typer.Exit(2)
    day: dt.date | None = None
    if since:
        try:
            day = dt.date.fromisoformat(since)
        except ValueError:
            console.print(f"[red]error:[/red] --since: {since!r} is not a date (YYYY-MM-DD)")
            raise typer.Exit(2) from None
    index_name, settings = resolve_index(index)
    headers = {}
    if settings.dicomweb_authorization is not None:
        headers["Authorization"] = settings.dicomweb_authorization.get_secret_value()
    # recorded before published: a broker restart loses nothing
    publisher, ledger = open_publisher(index_name, settings, source="dicomweb-pull", bootstrap=bootstrap,
                                       store_url=store_url)
    stop = stop_on_signals() if follow is not None else threading.Event()
    failed = False
    with httpx.Client(headers=headers, timeout=httpx.Timeout(60.0, connect=10.0)) as http:
        puller = DicomwebPuller(url, publisher, http, progress=lambda msg: console.print(f"[dim]{msg}[/dim]"))
        while True:
            try:
                summary = puller.run(day)
            except (PullError, PublishError) as err:
                console.print(f"[red]error:[/red] {err} (the pull can be run again: it resumes where it stopped)")
                if follow is None:
                    raise typer.Exit(1) from None
                failed = True
            except StoreError as err:
                console.print(f"[red]error:[/red] object store: {err}")
                if follow is None:
                    raise typer.Exit(1) from None
                failed = True
            else:
                _report(url, summary, as_json)
                failed = bool(summary.failures)
            if follow is None or stop.wait(follow):
                break
    try:
        publisher.close()
    except PublishError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(1) from None
    finally:
        ledger.close()
    if failed:
        raise typer.Exit(1)


def _report(url: str, summary: PullSummary, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(summary.as_dict()))
        return
    console.print(
        f"pulled from {url}: {summary.studies_seen} studies ({summary.studies_skipped} already complete), "
        f"{summary.instances_published} instances published, {summary.instances_duplicate} duplicates, "
        f"{summary.instances_skipped} already imported"
    )
    for failure in summary.failures:
        console.print(f"[yellow]failed[/yellow] {failure}")
