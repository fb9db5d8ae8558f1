-- medsearch index schema, version 2: the PHI audit log (HIPAA §164.312(b)), one append-only row per gateway
-- request that read or wrote PHI-bearing records. Shaped after FHIR AuditEvent / DICOM PS3.15 A.5 (see
-- medsearch/audit.py and docs/security.md for the field mapping). Never holds report text, query text or
-- patient identifiers: only who, what operation, which record ids, when, and the outcome.

CREATE TABLE audit_log (
    event_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recorded      timestamptz NOT NULL DEFAULT clock_timestamp(),  -- AuditEvent.recorded / EventDateTime
    action        char(1) NOT NULL CHECK (action IN ('C', 'R', 'U', 'D', 'E')),  -- AuditEvent.action
    operation     text NOT NULL,                     -- AuditEvent.subtype: endpoint and operation names
    outcome       smallint NOT NULL CHECK (outcome IN (0, 4, 8, 12)),  -- AuditEvent.outcome / EventOutcomeIndicator
    outcome_desc  text NOT NULL DEFAULT '',          -- error codes only (never error messages: they echo input)
    principal     text NOT NULL,                     -- agent.who / UserID
    auth_method   text NOT NULL DEFAULT '',          -- token | oidc | anonymous | signed-url
    roles         text[] NOT NULL DEFAULT '{}',      -- agent.role
    client_addr   text NOT NULL DEFAULT '',          -- agent.network.address / NetworkAccessPointID
    source        text NOT NULL DEFAULT '',          -- AuditEvent.source.observer / AuditSourceIdentification
    report_ids    text[] NOT NULL DEFAULT '{}',      -- entity.what (reports); ParticipantObjectID
    image_ids     text[] NOT NULL DEFAULT '{}',      -- entity.what (SOPInstanceUIDs)
    study_uids    text[] NOT NULL DEFAULT '{}'       -- entity.what (StudyInstanceUIDs)
);
CREATE INDEX audit_log_recorded ON audit_log (recorded);
CREATE INDEX audit_log_principal ON audit_log (principal, recorded);

-- Append-only: rows are never changed or removed (retention is an export plus dropping the whole index).
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
