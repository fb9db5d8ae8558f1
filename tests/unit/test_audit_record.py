"""The audit record: ids de-duplicated in order, FHIR AuditEvent JSON, SQL built for the index's schema."""

from __future__ import annotations

import datetime as dt

import pytest

from medsearch.audit import AuditEvent, AuditTrail, from_row, insert_sql, list_sql
from medsearch.contracts.naming import names_for


def test_a_trail_becomes_one_event_without_duplicates_or_blanks() -> None:
    trail = AuditTrail()
    trail.read(reports=["r2", "r1", "r2", ""], studies=["1.2", "1.2"])
    trail.read(images=["1.2.1"], reports=["r1"])
    ev = trail.event(operation="graphql query searchReports", outcome=0, principal="alice", roles=["reader"])
    assert (ev.action, ev.report_ids, ev.image_ids, ev.study_uids) == ("R", ("r2", "r1"), ("1.2.1",), ("1.2",))
    trail.wrote(reports=["r9"])
    assert trail.event(operation="x", outcome=0, principal="a").action == "C"
    with pytest.raises(ValueError):
        AuditEvent(action="R", operation="x", outcome=3, principal="a")


def test_fhir_audit_event_json() -> None:
    ev = AuditEvent(action="R", operation="thumbnail", outcome=0, principal="bob", auth_method="signed-url",
                    client_addr="10.0.0.1", image_ids=("1.2.3.1",), study_uids=("1.2.3",), event_id=7,
                    recorded=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    j = ev.to_json("demo")
    assert j["resourceType"] == "AuditEvent" and j["id"] == "7" and j["action"] == "R" and j["outcome"] == "0"
    assert j["recorded"] == "2026-01-02T03:04:05+00:00" and j["source"]["site"] == "demo"
    assert j["agent"][0]["who"]["identifier"]["value"] == "bob" and j["agent"][0]["network"]["address"] == "10.0.0.1"
    assert [(e["type"]["code"], e["what"]["identifier"]["value"]) for e in j["entity"]] == [
        ("image", "1.2.3.1"), ("study", "1.2.3")]
    assert names_for("demo").audit_topic == "demo.audit"


def test_sql_and_rows() -> None:
    assert '"medsearch_demo"."audit_log"' in insert_sql("demo").as_string(None)
    stmt, params = list_sql("demo", principal="bob", limit=5)
    assert "principal = %s" in stmt.as_string(None) and params == ["bob", 5]
    row = (3, dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "R ", "op", 0, "", "bob", "token", ["reader"], "", "api",
           ["r1"], [], None)
    ev = from_row(row)
    assert (ev.event_id, ev.action, ev.report_ids, ev.study_uids, ev.roles) == (3, "R", ("r1",), (), ("reader",))
