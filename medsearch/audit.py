"""The PHI audit log: one append-only record per gateway request that read or wrote PHI-bearing records.

Stored in the index's own PostgreSQL schema (``<schema>.audit_log``, migration ``0003_audit.sql``), the system of
record, and optionally streamed to the Kafka topic ``<index>.audit``. A record names who (principal, roles,
client address), what (operation, action), which records (report ids, SOPInstanceUIDs, StudyInstanceUIDs), when
and the outcome; it never holds report text, query text or patient identifiers.

The shape follows FHIR R4 ``AuditEvent`` and DICOM PS3.15 A.5 (the audit message of the DICOM standard):

=================  ==============================  ==================================================
column             FHIR AuditEvent                 DICOM PS3.15 A.5 (RFC 3881 / ATNA)
=================  ==============================  ==================================================
recorded           recorded                        EventIdentification/@EventDateTime
action             action (C R U D E)              EventIdentification/@EventActionCode
operation          subtype                         EventIdentification/EventTypeCode
outcome            outcome (0 4 8 12)              EventIdentification/@EventOutcomeIndicator
outcome_desc       outcomeDesc (error codes only)  EventOutcomeDescription
principal, roles   agent.who, agent.role           ActiveParticipant/@UserID, RoleIDCode
client_addr        agent.network.address           ActiveParticipant/@NetworkAccessPointID
source             source.observer                 AuditSourceIdentification/@AuditSourceID
report_ids         entity.what (DocumentReference) ParticipantObjectIdentification (report)
image_ids          entity.what (SOP Instance UID)  ParticipantObjectIdentification (SOP instance)
study_uids         entity.what (Study UID)         ParticipantObjectIdentification (study)
=================  ==============================  ==================================================
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from medsearch.contracts.naming import IndexRef, names_of

if TYPE_CHECKING:
    from psycopg import sql

Action = Literal["C", "R", "U", "D", "E"]
# FHIR AuditEvent.outcome / DICOM EventOutcomeIndicator
SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE, MAJOR_FAILURE = 0, 4, 8, 12
OUTCOME_NAMES = {SUCCESS: "success", MINOR_FAILURE: "minor failure", SERIOUS_FAILURE: "serious failure",
                 MAJOR_FAILURE: "major failure"}
MAX_IDS = 10_000  # ids per kind kept in one record (a request returns at most a few pages)

COLUMNS = ("action", "operation", "outcome", "outcome_desc", "principal", "auth_method", "roles", "client_addr",
           "source", "report_ids", "image_ids", "study_uids")


def _unique(ids: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(i for i in ids if i))[:MAX_IDS]


@dataclass(frozen=True)
class AuditEvent:
    """One audit record (see the module docstring for how each field maps to FHIR and DICOM)."""

    action: Action
    operation: str
    outcome: int
    principal: str
    auth_method: str = ""
    roles: tuple[str, ...] = ()
    client_addr: str = ""
    source: str = ""
    outcome_desc: str = ""
    report_ids: tuple[str, ...] = ()
    image_ids: tuple[str, ...] = ()
    study_uids: tuple[str, ...] = ()
    recorded: dt.datetime | None = None  # set by PostgreSQL when written
    event_id: int | None = None

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOME_NAMES:
            raise ValueError(f"outcome must be one of {sorted(OUTCOME_NAMES)}")
        for name in ("report_ids", "image_ids", "study_uids", "roles"):
            object.__setattr__(self, name, _unique(getattr(self, name)))

    def params(self) -> list[Any]:
        return [list(v) if isinstance(v, tuple) else v for v in (getattr(self, c) for c in COLUMNS)]

    def to_json(self, index: str) -> dict[str, Any]:
        """A FHIR R4 ``AuditEvent`` resource (what ``<index>.audit`` carries and ``medsearch audit --json``
        prints)."""
        entities = [{"what": {"identifier": {"system": system, "value": v}}, "type": {"code": code}}
                    for system, code, values in (("urn:medsearch:report", "report", self.report_ids),
                                                 ("urn:dicom:uid:sop-instance", "image", self.image_ids),
                                                 ("urn:dicom:uid:study", "study", self.study_uids))
                    for v in values]
        out: dict[str, Any] = {
            "resourceType": "AuditEvent",
            "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110106" if self.action
                     in ("R", "E") else "110107", "display": "Export" if self.action in ("R", "E") else "Import"},
            "subtype": [{"system": "urn:medsearch:operation", "code": self.operation}],
            "action": self.action,
            "recorded": self.recorded.isoformat() if self.recorded else None,
            "outcome": str(self.outcome),
            "agent": [{"who": {"identifier": {"value": self.principal}}, "requestor": True,
                       "role": [{"text": r} for r in self.roles], "altId": self.auth_method or None,
                       "network": {"address": self.client_addr} if self.client_addr else None}],
            "source": {"observer": {"display": self.source or "medsearch-api"}, "site": index},
            "entity": entities,
        }
        if self.outcome_desc:
            out["outcomeDesc"] = self.outcome_desc
        if self.event_id is not None:
            out["id"] = str(self.event_id)
        return out

    def to_bytes(self, index: str) -> bytes:
        return json.dumps(self.to_json(index), separators=(",", ":")).encode()


def insert_sql(index: IndexRef) -> sql.Composed:
    """``INSERT ... RETURNING event_id, recorded`` of one :class:`AuditEvent` (params: :meth:`AuditEvent.params`)."""
    from psycopg import sql

    return sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING event_id, recorded").format(
        sql.Identifier(names_of(index).pg_schema, "audit_log"), sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
        sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS)))


def list_sql(index: IndexRef, *, since: dt.datetime | None = None, principal: str | None = None,
             limit: int = 100) -> tuple[Any, list[Any]]:
    """The newest ``limit`` records (optionally since a time, of one principal), newest first."""
    from psycopg import sql

    where: list[sql.Composable] = []
    params: list[Any] = []
    if since is not None:
        where.append(sql.SQL("recorded >= %s"))
        params.append(since)
    if principal is not None:
        where.append(sql.SQL("principal = %s"))
        params.append(principal)
    cond = sql.SQL(" AND ").join(where) if where else sql.SQL("TRUE")
    stmt = sql.SQL("SELECT event_id, recorded, {} FROM {} WHERE {} ORDER BY event_id DESC LIMIT %s").format(
        sql.SQL(", ").join(map(sql.Identifier, COLUMNS)), sql.Identifier(names_of(index).pg_schema, "audit_log"),
        cond)
    return stmt, [*params, limit]


def from_row(row: Sequence[Any]) -> AuditEvent:
    """An event from a row of :func:`list_sql` (``event_id, recorded, *COLUMNS``)."""
    values = dict(zip(("event_id", "recorded", *COLUMNS), row, strict=True))
    for k in ("roles", "report_ids", "image_ids", "study_uids"):
        values[k] = tuple(values[k] or ())
    values["action"] = str(values["action"]).strip()
    return AuditEvent(**values)


def list_events(conn: Any, index: IndexRef, *, since: dt.datetime | None = None, principal: str | None = None,
                limit: int = 100) -> list[AuditEvent]:
    stmt, params = list_sql(index, since=since, principal=principal, limit=limit)
    rows = conn.execute(stmt, params).fetchall()
    conn.rollback()
    return [from_row(r) for r in rows]


@dataclass
class AuditTrail:
    """What one request touched, collected as it runs (the gateway writes it as one :class:`AuditEvent`)."""

    action: Action = "R"
    operations: list[str] = field(default_factory=list)
    report_ids: list[str] = field(default_factory=list)
    image_ids: list[str] = field(default_factory=list)
    study_uids: list[str] = field(default_factory=list)
    phi: bool = False  # something PHI-bearing was read or written (also when no record matched)

    def read(self, *, reports: Iterable[str] = (), images: Iterable[str] = (), studies: Iterable[str] = ()) -> None:
        self.phi = True
        self.report_ids.extend(reports)
        self.image_ids.extend(images)
        self.study_uids.extend(studies)

    def wrote(self, *, reports: Iterable[str] = (), images: Iterable[str] = (), studies: Iterable[str] = ()) -> None:
        self.action = "C"
        self.read(reports=reports, images=images, studies=studies)

    def event(self, *, operation: str, outcome: int, principal: str, auth_method: str = "",
              roles: Iterable[str] = (), client_addr: str = "", source: str = "", outcome_desc: str = ""
              ) -> AuditEvent:
        return AuditEvent(action=self.action, operation=operation, outcome=outcome, principal=principal,
                          auth_method=auth_method, roles=tuple(sorted(roles)), client_addr=client_addr,
                          source=source, outcome_desc=outcome_desc, report_ids=tuple(self.report_ids),
                          image_ids=tuple(self.image_ids), study_uids=tuple(self.study_uids))
