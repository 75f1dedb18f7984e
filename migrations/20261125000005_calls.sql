-- Read models of calls (projector `calls`): the call list the UI polls, each call's timeline,
-- transcript segments and tool log. Written only by the projector; rebuilt from the log.

CREATE TABLE rm_calls (
    id                  text        PRIMARY KEY,
    establishment_id    text        NOT NULL,
    provider            text        NOT NULL,
    provider_call_sid   text,
    direction           text        NOT NULL,
    from_party          text        NOT NULL,
    to_party            text        NOT NULL,
    agent_id            text,
    agent_version_id    text,
    status              text        NOT NULL,
    active              boolean     NOT NULL,
    opened_by           text        NOT NULL,
    started_at          timestamptz NOT NULL,
    answered_at         timestamptz,
    ended_at            timestamptz,
    -- Twilio's CallDuration when known, else the runtime's
    duration_seconds    integer,
    duration_source     text,
    routing             jsonb,
    answered_by         text,
    machine_detection_ms integer,
    placement           jsonb,
    handoff             jsonb,
    requested_by        jsonb,
    metadata            jsonb,
    sentiment           jsonb,
    summary             jsonb,
    recording           jsonb,
    segments            bigint      NOT NULL DEFAULT 0,
    expected_segments   bigint,
    tool_calls          integer     NOT NULL DEFAULT 0,
    runtime_errors      integer     NOT NULL DEFAULT 0,
    runtime_started     boolean     NOT NULL DEFAULT false,
    runtime_ended       boolean     NOT NULL DEFAULT false,
    reaped_reason       text,
    updated_at          timestamptz NOT NULL
);
CREATE INDEX rm_calls_history ON rm_calls (establishment_id, started_at DESC, id DESC);
CREATE INDEX rm_calls_by_agent ON rm_calls (agent_id, started_at DESC);
CREATE INDEX rm_calls_active ON rm_calls (establishment_id, started_at DESC) WHERE active;
CREATE UNIQUE INDEX rm_calls_provider_sid ON rm_calls (provider, provider_call_sid)
    WHERE provider_call_sid IS NOT NULL;

-- Lifecycle of a call, one row per lifecycle event (not per transcript segment).
CREATE TABLE rm_call_timeline (
    call_id  text        NOT NULL,
    sequence bigint      NOT NULL,
    at       timestamptz NOT NULL,
    kind     text        NOT NULL,
    detail   jsonb       NOT NULL,
    PRIMARY KEY (call_id, sequence)
);

CREATE TABLE rm_transcript_segments (
    call_id     text        NOT NULL,
    -- arrival order within the call: the poll cursor
    ordinal     bigint      NOT NULL,
    segment_id  text        NOT NULL,
    speaker     text        NOT NULL,
    text        text        NOT NULL,
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz NOT NULL,
    confidence  double precision,
    PRIMARY KEY (call_id, ordinal)
);
CREATE INDEX rm_transcript_segments_order ON rm_transcript_segments (call_id, started_at, segment_id);

CREATE TABLE rm_tool_log (
    call_id          text        NOT NULL,
    -- event sequence of the tool_called (or of an unpaired tool_result)
    sequence         bigint      NOT NULL,
    establishment_id text        NOT NULL,
    invocation       integer,
    tool_name        text        NOT NULL,
    arguments        jsonb,
    called_at        timestamptz,
    result           jsonb,
    error            jsonb,
    result_at        timestamptz,
    latency_ms       bigint,
    PRIMARY KEY (call_id, sequence)
);
CREATE INDEX rm_tool_log_invocation ON rm_tool_log (call_id, invocation);
CREATE INDEX rm_tool_log_by_establishment ON rm_tool_log (establishment_id, called_at DESC);
