"""The committed SDLs equal the printed schemas: api/schema.graphql (what the web client builds against) and
api/compat-schema.graphql (the seed client's names and shapes)."""

from __future__ import annotations

from pathlib import Path

from medsearch_api.compat import compat_schema
from medsearch_api.schema import schema

SDL = Path(__file__).resolve().parents[1] / "schema.graphql"
COMPAT_SDL = Path(__file__).resolve().parents[1] / "compat-schema.graphql"


def test_committed_sdl_matches_schema() -> None:
    printed = schema.as_str().rstrip() + "\n"
    assert SDL.read_text(encoding="utf-8") == printed, (
        "api/schema.graphql is stale: regenerate it with "
        "`python -m medsearch_api --export-schema > api/schema.graphql`"
    )


def test_committed_compat_sdl_matches_compat_schema() -> None:
    printed = compat_schema.as_str().rstrip() + "\n"
    assert COMPAT_SDL.read_text(encoding="utf-8") == printed, (
        "api/compat-schema.graphql is stale: regenerate it with "
        "`python -m medsearch_api --export-schema --compat > api/compat-schema.graphql`"
    )


def test_docs_embed_current_sdl() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "api.md"
    text = docs.read_text(encoding="utf-8")
    block = text.split("## Schema (SDL)", 1)[1].split("```graphql\n", 1)[1].split("```", 1)[0]
    assert block == schema.as_str().rstrip() + "\n", "docs/api.md's SDL block is stale"
