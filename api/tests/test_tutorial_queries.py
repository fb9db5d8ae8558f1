"""Every GraphQL operation in docs/tutorial.md is valid against the schema it is sent to (docs stay true)."""

from __future__ import annotations

import re
from pathlib import Path

from graphql import parse, validate
from medsearch_api.compat import compat_schema
from medsearch_api.schema import schema

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorial.md"


def test_tutorial_operations_validate() -> None:
    text = TUTORIAL.read_text(encoding="utf-8")
    blocks = re.findall(r"^### (.+?)\n.*?```graphql\n(.*?)```", text, flags=re.S | re.M)
    ops = re.findall(r"```graphql\n(.*?)```", text, flags=re.S)
    assert len(ops) >= 12
    compat_titles = {title for title, _ in blocks if "compat" in title.lower()}
    for op in ops:
        is_compat = any(op in body for title, body in blocks if title in compat_titles)
        target = compat_schema if is_compat else schema
        errors = validate(target._schema, parse(op))
        assert not errors, f"{op.strip()[:80]}: {errors}"
