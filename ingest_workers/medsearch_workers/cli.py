"""``medsearch nlp analyze``: radiology report NLP (sections, NER, assertion status, ICD-10-CM codes).

    medsearch nlp analyze --input IN.jsonl --output OUT.jsonl [--backend lexicon|transformers] [--model M]
    medsearch nlp analyze --text "No pleural effusion. The cardiac silhouette is enlarged."

Input lines: ``{"id": ..., "text": ...}`` (``report_id`` is accepted for ``id``). Output lines: ``{"id",
"entities", "icd10_positive", "icd10_negative", "icd10_uncertain", ...}`` (the full analysis). Registered on the
``medsearch`` command through this distribution's ``medsearch.cli`` entry point ``nlp``; the NLP (the ``report``
extra) is imported inside the command, so ``medsearch --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from medsearch_workers.nlp.types import ReportAnalysis

BATCH = 16


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise typer.BadParameter(f"{path}:{n}: not JSON ({err.msg})", param_hint="--input") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise typer.BadParameter(f"{path}:{n}: expected an object with a string 'text'", param_hint="--input")
            if "id" not in obj and "report_id" not in obj:
                raise typer.BadParameter(f"{path}:{n}: missing 'id'", param_hint="--input")
            yield n, obj


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def _print_table(text: str, analysis: ReportAnalysis) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="Entities", show_lines=False)
    for col in ("text", "section", "category", "assertion", "traits", "code", "ICD-10-CM candidates"):
        table.add_column(col, overflow="fold")
    for e in analysis.entities:
        traits = ", ".join(t.name for t in e.traits)
        code = f"{e.code} {e.icd10[0].description}" if e.code and e.icd10 else (e.code or "")
        cands = ", ".join(f"{c.code} ({c.score:.2f})" for c in e.icd10[:5])
        table.add_row(e.text, e.section, e.category.replace("_", " ").lower(), e.assertion, traits, code, cands)
    console.print(table)
    for key in ("icd10_positive", "icd10_negative", "icd10_uncertain"):
        console.print(f"[bold]{key}[/bold]: {', '.join(getattr(analysis, key)) or '-'}")
    for key in ("positive_signs", "negative_signs", "positive_diagnoses", "negative_diagnoses",
                "positive_symptoms", "negative_symptoms"):  # fmt: skip
        values = getattr(analysis, key)
        if values:
            console.print(f"{key}: {', '.join(values)}")
    console.print(f"sections: {', '.join(analysis.sections) or '-'}")


def register(app: typer.Typer) -> None:
    nlp_app = typer.Typer(help="Radiology report NLP: sections, entities, negation/uncertainty, ICD-10-CM codes.")
    app.add_typer(nlp_app, name="nlp")

    @nlp_app.command("analyze")
    def analyze(
        input: Path | None = typer.Option(
            None, "--input", "-i", help="JSONL of {id, text}.", exists=True, dir_okay=False, readable=True
        ),
        output: Path | None = typer.Option(None, "--output", "-o", help="JSONL to write (default: stdout)."),
        text: str | None = typer.Option(None, "--text", "-t", help="Analyze this text and print a table."),
        backend: str = typer.Option("lexicon", "--backend", help="lexicon (offline default) | transformers."),
        model: str | None = typer.Option(
            None, "--model", help="Hugging Face token-classification model name or local path (transformers)."
        ),
        no_link: bool = typer.Option(
            False, "--no-link", help="Lexical ICD-10-CM codes only (skip MiniLM candidate ranking; faster)."
        ),
        indication_positive: bool = typer.Option(
            False, "--indication-positive", help="Let INDICATION/HISTORY produce positive findings."
        ),
        as_json: bool = typer.Option(False, "--json", help="With --text: print the analysis as JSON."),
    ) -> None:
        """Analyze reports: entities with assertion traits and ranked ICD-10-CM codes, plus per-report roll-ups."""
        if (input is None) == (text is None):
            raise typer.BadParameter("give exactly one of --input FILE or --text TEXT")
        if backend not in ("lexicon", "transformers"):
            raise typer.BadParameter(f"unknown backend {backend!r} (lexicon | transformers)", param_hint="--backend")
        if backend == "transformers" and not model:
            raise typer.BadParameter("the transformers backend needs --model NAME_OR_PATH", param_hint="--model")
        try:
            from medsearch_workers.nlp import Analyzer, get_backend
        except ImportError as err:
            typer.echo(f"error: the NLP needs medsearch-workers[report] installed ({err})", err=True)
            raise typer.Exit(2) from None
        try:
            analyzer = Analyzer(get_backend(backend, model), link=not no_link, indication_positive=indication_positive)
        except (ImportError, OSError, ValueError) as err:  # ImportError: transformers/torch missing (the ner extra)
            typer.echo(f"error: cannot load the {backend} backend: {err}", err=True)
            raise typer.Exit(2) from None
        if text is not None:
            result = analyzer.analyze(text)
            if as_json:
                sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
            else:
                _print_table(text, result)
            return
        assert input is not None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        total = _count_lines(input)
        out = output.open("w", encoding="utf-8") if output else sys.stdout
        written = 0
        try:
            with Progress(
                TextColumn("analyzing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                disable=output is None or not sys.stderr.isatty(), transient=False,
            ) as progress:  # fmt: skip
                task = progress.add_task("reports", total=total)
                batch: list[dict[str, Any]] = []

                def flush() -> None:
                    nonlocal written
                    results = analyzer.analyze_many([b["text"] for b in batch])
                    for obj, res in zip(batch, results, strict=True):
                        rid = obj.get("id", obj.get("report_id"))
                        out.write(json.dumps({"id": rid, **res.to_dict()}) + "\n")
                        written += 1
                    progress.advance(task, len(batch))
                    batch.clear()

                for _, obj in _read_jsonl(input):
                    batch.append(obj)
                    if len(batch) >= BATCH:
                        flush()
                if batch:
                    flush()
        finally:
            if output:
                out.close()
        if output:
            typer.echo(f"{written} reports analyzed → {output}", err=True)
