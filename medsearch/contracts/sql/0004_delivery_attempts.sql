-- Durable delivery attempts and the dead-letter outbox of the ingest workers (medsearch/ledger.py).
-- A worker records an attempt *before* it handles a message, so a message that kills the worker (out of memory,
-- SIGKILL) is counted across restarts and dead-lettered after spec.workers.<kind>.maxAttempts; the row is removed
-- once the message's offset is committed. Messages are told apart by their position and a digest of their bytes
-- (a memory-only broker restarts its offsets at 0).
CREATE TABLE delivery_attempts (
    topic      text NOT NULL,
    part       integer NOT NULL,
    "offset"   bigint NOT NULL,
    digest     text NOT NULL,                         -- sha256 of the message bytes
    attempts   integer NOT NULL DEFAULT 0,            -- handlings begun and never committed
    stage      text,                                  -- the last stage the message reached (isolated handling)
    error      text,                                  -- the last error (never report text)
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, part, "offset", digest)
);
-- Dead letters to publish on <index>.dlq, written in the transaction that marks their ledger rows dead and
-- deleted once the broker acknowledged them (a transactional outbox: the ledger and the DLQ never diverge; what a
-- crash left here is published again by the next worker).
CREATE TABLE dead_letter_outbox (
    topic       text NOT NULL,
    part        integer NOT NULL,
    "offset"    bigint NOT NULL,
    digest      text NOT NULL,
    dlq_topic   text NOT NULL,
    message_key bytea,
    letter      jsonb NOT NULL,                       -- the DeadLetter (report text redacted)
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, part, "offset", digest)
);
