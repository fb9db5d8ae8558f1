"""``medsearch nlp analyze`` through the real CLI app (lexicon backend, lexical codes only for speed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medsearch.cli import app


def test_analyze_jsonl_file(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(
        json.dumps({"id": "a", "text": "FINDINGS: Small left pleural effusion. No pneumothorax."}) + "\n\n"
        + json.dumps({"report_id": "b", "text": "Heart size is normal. Possible right lower lobe pneumonia."}) + "\n"
    )  # fmt: skip
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["nlp", "analyze", "--input", str(src), "--output", str(out), "--no-link"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in lines] == ["a", "b"]
    assert lines[0]["icd10_positive"] == ["J90"] and lines[0]["icd10_negative"] == ["J93.9"]
    assert lines[1]["icd10_negative"] == ["I51.7"] and lines[1]["icd10_uncertain"] == ["J18.9"]
    assert all({"text", "start", "end", "category", "traits", "icd10"} <= set(e) for e in lines[0]["entities"])


def test_analyze_text_table_and_json() -> None:
    runner = CliRunner()
    table = runner.invoke(app, ["nlp", "analyze", "--text", "No pneumothorax. Mild cardiomegaly.", "--no-link"])
    assert table.exit_code == 0, table.output
    assert "pneumothorax" in table.output and "NEGATION" in table.output and "I51.7" in table.output
    as_json = runner.invoke(app, ["nlp", "analyze", "--text", "Mild cardiomegaly.", "--no-link", "--json"])
    assert json.loads(as_json.stdout)["icd10_positive"] == ["I51.7"]


def test_bad_input_is_reported(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "a"}\n')
    result = CliRunner().invoke(app, ["nlp", "analyze", "--input", str(src), "--no-link"])
    assert result.exit_code != 0 and "in.jsonl:1" in result.output
    both = CliRunner().invoke(app, ["nlp", "analyze", "--no-link"])
    assert both.exit_code != 0 and "exactly one of" in both.output
    no_model = CliRunner().invoke(app, ["nlp", "analyze", "--text", "x", "--backend", "transformers"])
    assert no_model.exit_code != 0 and "--model" in no_model.output


def test_transformers_backend_without_torch_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """The report image has no torch: the optional transformers NER backend says which extra brings it."""
    from medsearch_workers.nlp import analyzer

    monkeypatch.setitem(sys.modules, "torch", None)  # as if not installed
    analyzer._transformer_backend.cache_clear()
    result = CliRunner().invoke(app, ["nlp", "analyze", "--text", "No effusion.", "--backend", "transformers",
                                      "--model", "some-model"])
    assert result.exit_code == 2, result.output
    assert "medsearch-workers[ner]" in result.output and "lexicon backend needs neither" in result.output
