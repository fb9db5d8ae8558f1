"""The shared finding vocabulary and the gateway's query understanding built on it."""

from __future__ import annotations

from medsearch.findings import concept_for_text, default_concepts, query_findings


def test_queries_name_findings_with_all_their_codes() -> None:
    assert query_findings("left pleural effusion")["pleural_effusion"] >= {"J90"}
    assert query_findings("enlarged heart") == {"cardiomegaly": frozenset({"I51.7"})}
    assert set(query_findings("pneumothorax and nodule")) == {"pneumothorax", "nodule_mass"}


def test_plain_words_name_no_finding() -> None:
    assert query_findings("noted normal") == {}
    assert query_findings("chest PA") == {}


def test_every_condition_concept_has_a_code_and_patterns() -> None:
    conditions = [c for c in default_concepts() if c.category == "MEDICAL_CONDITION"]
    assert len(conditions) > 20
    assert all(c.present is not None for c in conditions)
    assert concept_for_text("small right pneumothorax") is not None
