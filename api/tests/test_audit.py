"""The audit trail of GraphQL operations (schema run directly, an in-memory audit log)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from api_fakes import make_context
from medsearch_api.audit import AuditUnavailable
from medsearch_api.compat import compat_schema
from medsearch_api.schema import schema

from medsearch.audit import AuditEvent


class MemoryAudit:
    def __init__(self, fail: bool = False) -> None:
        self.events: list[AuditEvent] = []
        self.fail = fail

    async def write(self, event: AuditEvent) -> AuditEvent:
        if self.fail:
            raise AuditUnavailable("abc123")
        self.events.append(event)
        return event


def run(query: str, variables: dict[str, Any] | None = None, *, audit: MemoryAudit, s: Any = schema,
        roles: tuple[str, ...] = ("reader",)) -> Any:
    ctx = make_context(roles=roles)
    ctx.services.audit_log = audit
    return asyncio.run(s.execute(query, variable_values=variables or {}, context_value=ctx))


def test_a_search_is_one_record_with_the_returned_ids_and_no_text() -> None:
    audit = MemoryAudit()
    res = run('{ searchReports(query: "pneumothorax secretword") { edges { node { id text images { id } } } } }',
              audit=audit)
    assert res.errors is None
    ids = [e["node"]["id"] for e in res.data["searchReports"]["edges"]]
    images = [i["id"] for e in res.data["searchReports"]["edges"] for i in e["node"]["images"]]
    [ev] = audit.events
    assert ev.report_ids[:len(ids)] == tuple(ids) and set(images) <= set(ev.image_ids) and ev.action == "R"
    assert ev.operation == "graphql query searchReports" and ev.principal == "test" and ev.outcome == 0
    assert "secretword" not in repr(ev) and "pneumothorax" not in repr(ev)
    assert ev.to_json("demo")["entity"][0]["what"]["identifier"] == {"system": "urn:medsearch:report",
                                                                     "value": ids[0]}


@pytest.mark.parametrize("query", ['{ icd10Facets(query: "effusion") { code count } }',
                                   '{ entityFacets(kind: SIGN, query: "effusion") { term count } }'])
def test_aggregates_alone_are_not_audited(query: str) -> None:
    audit = MemoryAudit()
    res = run(query, audit=audit)
    assert res.errors is None and res.data and audit.events == []


def test_facets_over_named_reports_and_uploads_are_audited() -> None:
    audit = MemoryAudit()
    res = run('{ entityFacets(kind: SIGN, reportIds: ["r1", "r2"]) { term count } }', audit=audit)
    assert res.errors is None and audit.events[0].report_ids == ("r1", "r2")
    res = run('mutation { ingestReport(reportId: "n1", text: "No effusion.", studyUid: "1.2.9") { status } }',
              audit=audit, roles=("ingester",))
    assert res.errors is None
    ev = audit.events[-1]
    assert (ev.action, ev.report_ids, ev.study_uids) == ("C", ("n1",), ("1.2.9",)) and "effusion" not in repr(ev)
    assert ev.operation == "graphql mutation ingestReport"


def test_a_failed_audit_write_fails_the_operation() -> None:
    for s, q in ((schema, '{ report(id: "r1") { id text } }'), (compat_schema, '{ getReport(ReportId: "r1") '
                                                                              '{ ReportId Findings } }')):
        res = run(q, audit=MemoryAudit(fail=True), s=s)
        assert res.data is None
        assert [(e.extensions or {}).get("code") for e in res.errors] == ["SERVICE_UNAVAILABLE"]
        assert res.errors[0].extensions["reference"] == "abc123"
