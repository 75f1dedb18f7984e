-- The event store: the postgres-es `events`/`snapshots` layout, extended with a global position,
-- the writing transaction's id, a recorded-at time and an event id (docs/architecture.md).
-- Columns with defaults are filled by PostgreSQL, so a plain postgres-es insert still works.

CREATE TABLE events (
    position         bigint GENERATED ALWAYS AS IDENTITY,
    aggregate_type   text        NOT NULL,
    aggregate_id     text        NOT NULL,
    sequence         bigint      NOT NULL CHECK (sequence >= 1),
    event_type       text        NOT NULL,
    event_version    text        NOT NULL,
    payload          jsonb       NOT NULL,
    metadata         jsonb       NOT NULL,
    event_id         text        NOT NULL DEFAULT ('evt_' || replace(gen_random_uuid()::text, '-', '')),
    transaction_id   xid8        NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- tenant of the event, for audit queries scoped to one establishment
    establishment_id text GENERATED ALWAYS AS (metadata ->> 'establishment_id') STORED,
    CONSTRAINT events_pkey PRIMARY KEY (aggregate_type, aggregate_id, sequence),
    CONSTRAINT events_position_key UNIQUE (position),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);

-- commit-safe reading order for projectors: (transaction_id, position)
CREATE INDEX events_commit_order ON events (transaction_id, position);
CREATE INDEX events_by_establishment ON events (establishment_id, position)
    WHERE establishment_id IS NOT NULL;
CREATE INDEX events_by_time ON events (recorded_at);

-- The log is append-only: history is never rewritten.
CREATE FUNCTION events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER events_no_update_or_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_append_only();

-- Aggregate snapshots (postgres-es layout; one row per stream, replaced as the stream grows).
CREATE TABLE snapshots (
    aggregate_type   text   NOT NULL,
    aggregate_id     text   NOT NULL,
    last_sequence    bigint NOT NULL CHECK (last_sequence >= 0),
    current_snapshot bigint NOT NULL CHECK (current_snapshot >= 0),
    payload          jsonb  NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);

-- Idempotency keys, claimed in the same transaction as the append they guard.
CREATE TABLE idempotency_keys (
    key            text        PRIMARY KEY,
    request_hash   text        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    response       jsonb       NOT NULL DEFAULT 'null',
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- Uniqueness rules that span aggregates (e-mail, phone number, host port, CallSid),
-- taken and released in the same transaction as the events that make them.
CREATE TABLE unique_claims (
    scope      text        NOT NULL,
    value      text        NOT NULL,
    owner_type text        NOT NULL,
    owner_id   text        NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT unique_claims_pkey PRIMARY KEY (scope, value)
);
CREATE INDEX unique_claims_by_owner ON unique_claims (owner_type, owner_id);

-- Where each projector is in the log; written in the same transaction as its read model.
CREATE TABLE projector_checkpoints (
    name           text        PRIMARY KEY,
    last_txid      xid8        NOT NULL DEFAULT '0',
    last_position  bigint      NOT NULL DEFAULT 0,
    events_applied bigint      NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
