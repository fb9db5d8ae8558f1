"""``medsearch audit``: list the PHI audit log of an index (who read or wrote which records, when, with what
outcome), from its PostgreSQL schema."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import typer
from rich.console import Console

from medsearch.cli.common import resolve_index

console = Console(stderr=True, soft_wrap=True)


def _since(value: str | None) -> dt.datetime | None:
    """An ISO date/time (UTC when no zone is given) or a duration back from now: ``30m``, ``12h``, ``7d``."""
    if value is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1:] in units and value[:-1].isdigit():
        return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=int(value[:-1]) * units[value[-1]])
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        console.print(f"[red]error:[/red] --since: {value!r} is neither an ISO date/time nor a duration like 12h")
        raise typer.Exit(2) from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _ids(values: tuple[str, ...], width: int = 3) -> str:
    shown = ", ".join(values[:width])
    return shown + (f" (+{len(values) - width})" if len(values) > width else "")


def register(app: typer.Typer) -> None:
    @app.command("audit")
    def audit(
        index: str | None = typer.Option(None, "--index", help="Index name (default: $MEDSEARCH_INDEX)."),
        since: str | None = typer.Option(None, "--since", help="Only records from this ISO date/time on, or this "
                                         "far back (30m, 12h, 7d)."),
        principal: str | None = typer.Option(None, "--principal", help="Only the records of this principal."),
        limit: int = typer.Option(100, "--limit", min=1, max=100000, help="At most this many, newest first."),
        as_json: bool = typer.Option(False, "--json", help="One FHIR AuditEvent JSON object per line."),
        data_dir: Path | None = typer.Option(None, "--data-dir", envvar="MEDSEARCH_DATA_DIR",
                                             help="Local stack data directory (its PostgreSQL is used when it "
                                             "serves the index)."),
    ) -> None:
        """List the audit log: one record per gateway request that read or wrote reports, images or studies
        (principal, operation, the record ids, time, outcome; never report or query text). Uses the running local
        stack when it serves the index, else MEDSEARCH_POSTGRES_DSN."""
        from medsearch import audit as core
        from medsearch import pgstore
        from medsearch.cli.common import local_stack

        name, settings = resolve_index(index)
        local = local_stack(data_dir, name)
        dsn, password = (local[0], local[1]) if local is not None else (settings.postgres_dsn,
                                                                       settings.postgres_secret())
        start = _since(since)
        try:
            with pgstore.connect(dsn, password) as conn:
                events = core.list_events(conn, name, since=start, principal=principal, limit=limit)
        except pgstore.DatabaseError as err:
            console.print(f"[red]error:[/red] {err}")
            raise typer.Exit(1) from None
        except Exception as err:  # psycopg errors: a schema not migrated yet, no audit_log table  # noqa: BLE001
            console.print(f"[red]error:[/red] the audit log of index {name} cannot be read: {type(err).__name__}: "
                          f"{err} (run `medsearch up` or the operator to migrate the schema)")
            raise typer.Exit(1) from None
        if as_json:
            for e in events:
                typer.echo(json.dumps(e.to_json(name), separators=(",", ":")))
            return
        from rich.table import Table

        table = Table(title=f"audit log of {name} ({len(events)} records, newest first)")
        for col in ("id", "recorded (UTC)", "principal", "action", "operation", "outcome", "reports", "images",
                    "studies", "client"):
            table.add_column(col, overflow="fold", no_wrap=col in ("operation", "recorded (UTC)"))
        for e in events:
            when = e.recorded.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if e.recorded else ""
            outcome = core.OUTCOME_NAMES[e.outcome] + (f" ({e.outcome_desc})" if e.outcome_desc else "")
            table.add_row(str(e.event_id), when, f"{e.principal} [{e.auth_method}]", e.action, e.operation, outcome,
                          _ids(e.report_ids), _ids(e.image_ids), _ids(e.study_uids), e.client_addr)
        Console(soft_wrap=True, width=200).print(table)
