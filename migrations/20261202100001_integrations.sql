-- Integrations (docs/integrations.md, ADR 0009).
--
-- Credentials at rest use envelope encryption: each integration has a random data key, stored
-- only wrapped (AES-256-GCM) by the master key `SECRETS_KEY` whose id is kept beside it, so a
-- master-key rotation (`control-plane secrets rotate`) re-wraps these rows and touches nothing
-- else. Credentials are sealed with the data key into `integration_secrets`, one row per
-- version; events reference a row by id, never its content. These two tables are not read
-- models: they are written by the integrations use cases and never exposed.
CREATE TABLE integration_data_keys (
    integration_id text        PRIMARY KEY,
    master_key_id  text        NOT NULL,
    wrapped_key    text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    rewrapped_at   timestamptz
);

CREATE TABLE integration_secrets (
    id             text        PRIMARY KEY,
    integration_id text        NOT NULL,
    sealed         text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX integration_secrets_by_integration ON integration_secrets (integration_id, created_at);

-- Read model of integrations (written only by the integrations projector).
CREATE TABLE rm_integrations (
    id               text        PRIMARY KEY,
    establishment_id text        NOT NULL,
    type             text        NOT NULL,
    display_name     text        NOT NULL,
    status           text        NOT NULL,
    enabled          boolean     NOT NULL,
    scopes           jsonb       NOT NULL DEFAULT '[]',
    redirect_url     text,
    last_error       text,
    last_used_at     timestamptz,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    state            jsonb       NOT NULL
);
CREATE INDEX rm_integrations_by_establishment ON rm_integrations (establishment_id, created_at, id);

-- Tool-proxy invocations beside the runtime-reported tool calls.
ALTER TABLE rm_tool_log
    ADD COLUMN source             text NOT NULL DEFAULT 'runtime',
    ADD COLUMN tool_call_id       text,
    ADD COLUMN operation          text,
    ADD COLUMN integration_id     text,
    ADD COLUMN credential_version integer,
    ADD COLUMN provider_status    integer;
CREATE UNIQUE INDEX rm_tool_log_proxy ON rm_tool_log (call_id, tool_call_id)
    WHERE tool_call_id IS NOT NULL;
