"""The entity record of medsearch.contracts: what the report worker stores is what the gateway reads back, and
reading tolerates rows whose entities are partial or mistyped (older writers)."""

from __future__ import annotations

import json

from medsearch.contracts.entities import EntityCode, EntityRecord, EntityTrait, stored_entities


def test_the_workers_entities_round_trip_through_the_stored_json() -> None:
    from medsearch_workers.nlp.types import Entity, IcdCandidate, Trait

    ent = Entity(text="effusion", start=10, end=18, category="MEDICAL_CONDITION", type="DX_NAME", score=0.912345,
                 section="FINDINGS", traits=[Trait("NEGATION", 0.98765)],
                 icd10=[IcdCandidate("J91.8", "Pleural effusion in other conditions", 0.55557)], concept="effusion",
                 name="pleural effusion", code="J91.8")
    stored = json.loads(json.dumps(ent.to_dict()))  # as a JSON column gives it back
    assert list(stored) == ["text", "start", "end", "category", "type", "score", "section", "traits", "icd10",
                            "assertion", "concept", "name", "code"]
    assert stored["score"] == 0.9123 and stored["assertion"] == "absent"
    assert stored["traits"] == [{"name": "NEGATION", "score": 0.9877}]
    back = EntityRecord.from_stored(stored)
    assert back == ent.to_record()
    assert back.icd10 == (EntityCode(code="J91.8", description="Pleural effusion in other conditions", score=0.5556),)


def test_partial_and_mistyped_entities_read_as_absent_fields() -> None:
    (e,) = stored_entities([{"text": "mass", "start": "4", "end": 7.0, "score": "high", "category": 3,
                             "traits": [{"name": "UNCERTAIN"}, "junk"], "icd10": [{"code": "R22.2"}, 5],
                             "extra": "ignored"}, "not an entity"])
    assert (e.text, e.start, e.end, e.score, e.category, e.section) == ("mass", 4, 7, None, "3", None)
    assert e.traits == (EntityTrait(name="UNCERTAIN", score=None),)
    assert e.icd10 == (EntityCode(code="R22.2", description="", score=None),)
    assert stored_entities(None) == () and stored_entities({"text": "x"}) == ()
