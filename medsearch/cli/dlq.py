"""``medsearch dlq list|replay``: what the workers dead-lettered and why; re-publish it once the cause is fixed."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from medsearch.contracts.naming import IndexNames

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

_INDEX = typer.Option(None, "--index", "-i", help="Index name (default: $MEDSEARCH_INDEX).")
_BOOTSTRAP = typer.Option(None, "--bootstrap", help="Kafka bootstrap servers (default: $MEDSEARCH_KAFKA_BOOTSTRAP).")
_STAGE = typer.Option(None, "--stage", help="Only this failure stage (repeatable): fetch, decode, embed, ...")
_MATCH = typer.Option(None, "--match", help="Only errors containing this text (case-insensitive).")
_OFFSET = typer.Option(None, "--offset", help="Only this record, as PARTITION:OFFSET or OFFSET (repeatable).")
_TIMEOUT = typer.Option(30.0, "--timeout", help="Seconds to wait for the broker while reading.")


def _resolve(index: str | None, bootstrap: str | None) -> tuple[IndexNames, str, str, dict[str, Any]]:
    """Index name, bootstrap servers, object store URL (flags, else the environment's settings) and the Kafka
    TLS/SASL options."""
    from medsearch.cli.common import kafka_security, resolve_index

    name, settings = resolve_index(index)
    return name, bootstrap or settings.kafka_bootstrap, settings.object_store_url, kafka_security(settings)


def _read(index: IndexNames, bootstrap: str, timeout: float, security: dict[str, Any]) -> list[Any]:
    from medsearch.dlq import DlqError, read

    try:
        return read(bootstrap, index, timeout=timeout, security=security)
    except DlqError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(1) from None


def _list_ledger(index: str | None, stages: list[str], match: str | None, as_json: bool, limit: int) -> None:
    from collections import Counter

    from medsearch.cli.common import ledger_for, resolve_index
    from medsearch.pgstore import DatabaseError

    name, settings = resolve_index(index)
    ledger = ledger_for(name, settings)
    try:
        counts = ledger.counts()
        dead = ledger.dead(limit=100_000)
    except DatabaseError as err:
        console.print(f"[red]error:[/red] {err} (the ingest ledger is in PostgreSQL: set MEDSEARCH_POSTGRES_DSN)")
        raise typer.Exit(1) from None
    finally:
        ledger.close()
    needle = match.lower() if match else None
    dead = [d for d in dead if (not stages or d["stage"] in stages)
            and (needle is None or needle in (d["reason"] or "").lower())]
    groups = Counter((d["kind"], d["stage"] or "", (d["reason"] or "").split(":")[0][:80]) for d in dead)
    summary: dict[str, Any] = {"index": str(name), "states": counts, "dead": len(dead),
               "groups": [{"kind": k, "stage": s, "reason": r, "count": n} for (k, s, r), n in groups.most_common()]}
    if as_json:
        out.print_json(json.dumps({"summary": summary, "entries": dead[:limit]}))
        return
    table = Table(title=f"{name} ingest ledger: {counts['published']} published, {counts['indexed']} indexed, "
                        f"{counts['dead']} dead")
    for col in ("kind", "stage", "reason", "count"):
        table.add_column(col, justify="right" if col == "count" else "left")
    for g in summary["groups"]:
        table.add_row(g["kind"], g["stage"], g["reason"], str(g["count"]))
    out.print(table)


def register(app: typer.Typer) -> None:
    dlq = typer.Typer(
        help="The dead-letter queue <index>.dlq: list what failed and why, replay it once the cause is fixed.",
        no_args_is_help=True,
    )

    @dlq.command("list")
    def list_(
        index: str | None = _INDEX,
        bootstrap: str | None = _BOOTSTRAP,
        stage: list[str] | None = _STAGE,
        match: str | None = _MATCH,
        offset: list[str] | None = _OFFSET,
        as_json: bool = typer.Option(False, "--json", help="Print {summary, entries} as JSON on stdout."),
        limit: int = typer.Option(50, "--limit", min=0, help="Show at most this many entries (0 = summary only)."),
        timeout: float = _TIMEOUT,
        from_ledger: bool = typer.Option(
            False, "--ledger",
            help="Read the ingest ledger (PostgreSQL, $MEDSEARCH_POSTGRES_DSN) instead of the topic: what is dead "
            "now (rows indexed since, e.g. replayed, are not listed), counts by state, stage and reason.",
        ),
    ) -> None:
        """Dead letters with their stage and reason (report ids and object URIs, never report text), grouped
        counts, and how many can be replayed."""
        from medsearch.dlq import entry_dict, plan, select, summarize

        if from_ledger:
            _list_ledger(index, stage or [], match, as_json, limit)
            return
        name, servers, _, security = _resolve(index, bootstrap)
        entries = select(_read(name, servers, timeout, security), stages=stage or (), match=match, refs=offset or ())
        summary = summarize(entries, name)
        if as_json:
            shown = [{**entry_dict(e), "replayable": plan(e, name).message is not None} for e in entries[:limit]]
            out.print_json(json.dumps({"summary": summary, "entries": shown}))
            return
        title = f"{name.dlq_topic}: {summary['total']} dead letters, {summary['replayable']} replayable"
        if not entries:
            out.print(title)
            return
        groups = Table(title=title)
        for col in ("source topic", "stage", "reason", "count"):
            groups.add_column(col, justify="right" if col == "count" else "left")
        for g in summary["groups"]:
            groups.add_row(g["topic"], g["stage"], g["reason"], str(g["count"]))
        out.print(groups)
        if limit and entries:
            table = Table(show_header=True)
            for col in ("offset", "failed at", "stage", "subject", "error"):
                table.add_column(col, overflow="fold")
            for e in entries[:limit]:
                letter = e.letter
                table.add_row(e.ref, (letter.failed_at or "")[:19] if letter else "", letter.stage if letter else "?",
                              e.subject, (letter.error if letter else e.problem or "")[:160])
            out.print(table)
            if len(entries) > limit:
                console.print(f"{len(entries) - limit} more (raise --limit, or narrow with --stage/--match)")

    @dlq.command("replay")
    def replay_(
        index: str | None = _INDEX,
        bootstrap: str | None = _BOOTSTRAP,
        stage: list[str] | None = _STAGE,
        match: str | None = _MATCH,
        offset: list[str] | None = _OFFSET,
        all_: bool = typer.Option(False, "--all", help="Replay every replayable dead letter."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be replayed; send nothing."),
        as_json: bool = typer.Option(False, "--json", help="Print the outcome as JSON on stdout."),
        timeout: float = _TIMEOUT,
    ) -> None:
        """Re-publish the selected dead letters' original messages to the topic they came from (after fixing
        the cause). Needs --stage, --match, --offset or --all. Safe to repeat: workers upsert by id; a message
        that fails again is dead-lettered again."""
        from medsearch.dlq import plan, replay, select
        from medsearch.producer import Publisher, PublishError

        if not (all_ or stage or match or offset):
            console.print("[red]error:[/red] choose what to replay: --stage, --match, --offset or --all")
            raise typer.Exit(2)
        name, servers, store_url, security = _resolve(index, bootstrap)
        entries = select(_read(name, servers, timeout, security), stages=stage or (), match=match, refs=offset or ())
        plans = [plan(e, name) for e in entries]
        ready = [p for p in plans if p.message is not None]
        skipped = [p for p in plans if p.message is None]
        sent = 0
        if ready and not dry_run:
            try:
                publisher = Publisher(bootstrap=servers, object_store_url=store_url, index=name, source="dlq-replay",
                                      security=security)
                try:
                    sent = replay(ready, publisher)
                finally:
                    publisher.close()
            except PublishError as err:
                console.print(f"[red]error:[/red] {err} (nothing counts as replayed)")
                raise typer.Exit(1) from None
        result: dict[str, Any] = {
            "index": str(name), "selected": len(entries), "replayed": sent,
            "would_replay": len(ready) if dry_run else 0,
            "skipped": [{"offset": p.entry.ref, "subject": p.entry.subject, "reason": p.reason} for p in skipped],
        }  # fmt: skip
        if as_json:
            out.print_json(json.dumps(result))
        else:
            verb = "would replay" if dry_run else "replayed"
            console.print(f"{verb} {len(ready) if dry_run else sent} of {len(entries)} selected dead letters")
            for s in result["skipped"]:
                console.print(f"[yellow]skipped[/yellow] {s['offset']} {s['subject']}: {s['reason']}")
        if not entries:
            console.print("nothing selected")

    app.add_typer(dlq, name="dlq")
