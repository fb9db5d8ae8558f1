"""``medsearch ingest PATH... --index NAME``: upload DICOM files and publish them (and reports) for indexing."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    counts = Counter(r["status"] for r in results)
    by_kind = Counter(f"{r['kind']}:{r['status']}" for r in results)
    return {
        "published": counts.get("published", 0),
        "duplicate": counts.get("duplicate", 0),
        "pending": counts.get("pending", 0),
        "republished": counts.get("republished", 0),
        "rejected": counts.get("rejected", 0),
        "would_publish": counts.get("would_publish", 0),
        "by_kind": dict(sorted(by_kind.items())),
        "rejections": [{"file": r["file"], "reason": r["reason"]} for r in results if r["status"] == "rejected"],
    }


def _print_summary(summary: dict[str, Any], dry_run: bool) -> None:
    table = Table(title="medsearch ingest" + (" (dry run)" if dry_run else ""), show_header=True)
    table.add_column("outcome")
    table.add_column("dicom", justify="right")
    table.add_column("reports", justify="right")
    for status in ("would_publish", "published", "republished", "pending", "duplicate", "rejected"):
        d = summary["by_kind"].get(f"dicom:{status}", 0)
        r = summary["by_kind"].get(f"report:{status}", 0)
        if d or r or status in ("published", "rejected"):
            table.add_row(status.replace("_", " "), str(d), str(r))
    console.print(table)
    for rej in summary["rejections"]:
        console.print(f"[yellow]rejected[/yellow] {rej['file']}: {rej['reason']}")


def register(app: typer.Typer) -> None:
    @app.command("ingest")
    def ingest(
        paths: list[Path] = typer.Argument(
            None, help="DICOM files, report files (.txt/.json/.jsonl) or folders.", show_default=False
        ),
        index: str | None = typer.Option(None, "--index", "-i", help="Index name (default: $MEDSEARCH_INDEX)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="List what would be published; change nothing."),
        bootstrap: str | None = typer.Option(
            None, "--bootstrap", help="Kafka bootstrap servers (default: $MEDSEARCH_KAFKA_BOOTSTRAP)."
        ),
        store_url: str | None = typer.Option(
            None, "--store", help="Object store URL, file:// or s3:// (default: $MEDSEARCH_OBJECT_STORE_URL)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
        from_dicomweb: str | None = typer.Option(
            None, "--from-dicomweb", metavar="URL",
            help="Pull from a DICOMweb server (QIDO-RS + WADO-RS) instead of PATHs, e.g. "
            "http://pacs:8042/dicom-web. Resumable; never re-imports. Authorization header: "
            "$MEDSEARCH_DICOMWEB_AUTHORIZATION.",
        ),
        since: str | None = typer.Option(
            None, "--since", metavar="DATE", help="With --from-dicomweb: only studies from DATE (YYYY-MM-DD) on."
        ),
        follow: float | None = typer.Option(
            None, "--follow", metavar="SECONDS", min=1.0,
            help="With --from-dicomweb: keep following the server, a pass every SECONDS, until SIGINT/SIGTERM.",
        ),
        resume: bool = typer.Option(
            False, "--resume",
            help="Publish again what the ingest ledger holds as published but not indexed for longer than "
            "--republish-after (e.g. lost in a broker restart); PATHs are optional.",
        ),
        republish_after: float | None = typer.Option(
            None, "--republish-after", metavar="SECONDS", min=0.0,
            help="Default: $MEDSEARCH_INGEST_REPUBLISH_AFTER_SECONDS (300).",
        ),
    ) -> None:
        """Walk PATHs: DICOM files (recognised by content) are uploaded to the object store and published on
        <index>.dicom; reports (.txt: id = file name, .json/.jsonl: {report_id, text, study_uid, report_date}) on
        <index>.reports. Content already published (same sha256) is skipped. With --from-dicomweb URL, pull the
        studies of a DICOMweb server (an Orthanc, a dcm4chee...) instead."""
        if from_dicomweb is not None:
            from medsearch.cli.pull import pull_dicomweb

            if paths:
                console.print("[red]error:[/red] give either PATHs or --from-dicomweb, not both")
                raise typer.Exit(2)
            pull_dicomweb(from_dicomweb, since=since, index=index, bootstrap=bootstrap, store_url=store_url,
                          as_json=as_json, dry_run=dry_run, follow=follow)
            return
        if since is not None or follow is not None:
            console.print("[red]error:[/red] --since and --follow only apply to --from-dicomweb")
            raise typer.Exit(2)
        if not paths and not resume:
            console.print("[red]error:[/red] give PATHs to ingest, --resume, or --from-dicomweb URL")
            raise typer.Exit(2)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from medsearch.cli.common import open_publisher, resolve_index
        from medsearch.producer import DicomFile, Publisher, PublishError, Rejected, ReportItem, classify, iter_files
        from medsearch.store import StoreError

        index_name, settings = resolve_index(index)
        try:
            files = list(iter_files(paths or []))
        except FileNotFoundError as err:
            console.print(f"[red]error:[/red] {err}")
            raise typer.Exit(2) from None

        from medsearch.ledger import Ledger

        publisher: Publisher | None = None
        ledger: Ledger | None = None
        if not dry_run:
            publisher, ledger = open_publisher(index_name, settings, source="cli", bootstrap=bootstrap,
                                               store_url=store_url, republish_after=republish_after)

        results: list[dict[str, Any]] = []
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=no_progress or as_json,
            transient=True,
        )
        try:
            with progress:
                task = progress.add_task("ingest" if not dry_run else "scan", total=len(files))
                for path in files:
                    for item in classify(path):
                        if isinstance(item, Rejected):
                            results.append(
                                {"kind": "file", "file": str(item.path), "status": "rejected", "reason": item.reason}
                            )
                            continue
                        kind = "dicom" if isinstance(item, DicomFile) else "report"
                        if publisher is None:
                            results.append(
                                {"kind": kind, "file": str(item.path), "status": "would_publish", "reason": None}
                            )
                            if not as_json:
                                what = f"report {item.report_id}" if isinstance(item, ReportItem) else "DICOM"
                                out.print(f"would publish {what}: {item.path}")
                            continue
                        if isinstance(item, DicomFile):
                            res = publisher.publish_dicom(item.data, filename=str(item.path))
                        else:
                            assert isinstance(item, ReportItem)
                            res = publisher.publish_report(
                                report_id=item.report_id, text=item.text, study_uid=item.study_uid,
                                report_date=item.report_date,
                            )
                        results.append(
                            {"kind": kind, "file": str(item.path), "status": res.status, "reason": res.reason}
                        )
                    progress.advance(task)
            if publisher is not None:
                if resume:
                    n = publisher.resume()
                    results.extend({"kind": "ledger", "file": "", "status": "republished", "reason": None}
                                   for _ in range(n))
                publisher.close()
        except PublishError as err:
            console.print(f"[red]error:[/red] {err}")
            raise typer.Exit(1) from None
        except StoreError as err:
            console.print(f"[red]error:[/red] object store: {err}")
            raise typer.Exit(1) from None
        finally:
            if ledger is not None:
                ledger.close()

        summary = _summary(results)
        if as_json:
            out.print_json(json.dumps(summary))
        else:
            _print_summary(summary, dry_run)
