-- The ingest ledger: one row per published object (DICOM) and report, written by the publisher before it
-- publishes (a transactional outbox) and marked indexed by the workers in the transaction of their writes.
-- Holds claim checks (URIs, hashes, ids) and the message to re-publish; never report text.
CREATE TABLE ingest_ledger (
    kind         text NOT NULL CHECK (kind IN ('dicom', 'report')),
    key          text NOT NULL,                       -- the publisher's content sha256 (duplicate detection)
    subject      text NOT NULL,                       -- the report id; the object's sha256 for DICOM
    sha256       text NOT NULL,                       -- sha256 of the stored object (the claim check)
    uri          text NOT NULL,
    topic        text NOT NULL,
    message_key  text,                                -- the Kafka key it was published with
    message      jsonb NOT NULL,                      -- the message, to publish again
    state        text NOT NULL CHECK (state IN ('published', 'indexed', 'dead')),
    stage        text,
    reason       text,
    attempts     integer NOT NULL DEFAULT 0,          -- times published
    published_at timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, key)
);
CREATE INDEX ingest_ledger_claim ON ingest_ledger (kind, sha256, subject);
CREATE INDEX ingest_ledger_pending ON ingest_ledger (state, published_at);
