-- Agent runtimes (docs/runtimes.md).
-- rm_runtimes: read model of the Runtime aggregate (projector `runtimes`).
-- runtime_health: the latest poll of each runtime, written by the health refresher; plain
--   state, not a projection (a poll is not a domain fact; health *changes* are events).
-- runtime_host: this database's Docker label value, created at first start.

CREATE TABLE rm_runtimes (
    id                text        PRIMARY KEY,
    establishment_id  text        NOT NULL UNIQUE,
    image             text        NOT NULL,
    container_name    text        NOT NULL,
    container_id      text,
    host_port         integer     NOT NULL UNIQUE,
    base_url          text        NOT NULL,
    media_stream_url  text,
    -- names of the provisioning env variables; their values are only in the sealed state
    env_keys          jsonb       NOT NULL DEFAULT '[]',
    -- SHA-256 of the runtime token (RuntimePrincipal looks runtimes up by it)
    token_hash        text,
    status            text        NOT NULL,
    -- the Docker operation the worker has to carry out (create, start, stop, restart)
    pending_op        text,
    draining          boolean     NOT NULL DEFAULT false,
    ready             boolean     NOT NULL DEFAULT false,
    ready_issues      jsonb       NOT NULL DEFAULT '[]',
    last_error        text,
    -- the aggregate state this row was derived from (the projector folds events onto it)
    state             jsonb       NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    status_changed_at timestamptz NOT NULL
);
CREATE UNIQUE INDEX rm_runtimes_by_token ON rm_runtimes (token_hash) WHERE token_hash IS NOT NULL;
CREATE INDEX rm_runtimes_pending ON rm_runtimes (id) WHERE pending_op IS NOT NULL;

CREATE TABLE runtime_health (
    runtime_id          text        PRIMARY KEY,
    checked_at          timestamptz NOT NULL,
    ready               boolean     NOT NULL,
    issues              jsonb       NOT NULL DEFAULT '[]',
    active_calls        bigint,
    total_calls_handled bigint,
    version             text,
    draining            boolean
);

CREATE TABLE runtime_host (
    id          boolean     PRIMARY KEY DEFAULT true CHECK (id),
    instance_id text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
