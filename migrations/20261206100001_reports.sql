-- Reports (issue 13): rollups of calls by establishment, agent, version and UTC bucket, kept
-- exact under late events by a per-call contribution row (docs/reports.md, ADR 0011).

-- What each call currently contributes to its buckets: the facts its figures derive from.
-- A new event of the call changes these facts; the projector subtracts the old contribution
-- and adds the new one in the same transaction.
CREATE TABLE rm_report_calls (
    call_id              text        PRIMARY KEY,
    establishment_id     text        NOT NULL,
    agent_id             text        NOT NULL,   -- '' when the call has none (yet)
    agent_version_id     text        NOT NULL,   -- likewise
    started_at           timestamptz NOT NULL,   -- CallOpened.at: the call counts here
    direction            text        NOT NULL,
    status               text        NOT NULL,
    answered             boolean     NOT NULL,
    handoff              boolean     NOT NULL,
    duration_seconds     integer,
    duration_from_twilio boolean     NOT NULL,
    sentiment_label      text,
    sentiment_micro      bigint,                 -- polarity in [-1, 1] × 1e6, rounded
    tool_calls           integer     NOT NULL,
    tool_errors          integer     NOT NULL,
    summarised           boolean     NOT NULL
);

-- Sums of the contributions. grain 0: 15-minute UTC buckets (every time zone's local
-- midnight and hour falls on one); grain 1: UTC days (the middle of long ranges).
CREATE TABLE rm_report_rollups (
    establishment_id  text        NOT NULL,
    grain             smallint    NOT NULL,
    bucket_start      timestamptz NOT NULL,
    agent_id          text        NOT NULL,
    agent_version_id  text        NOT NULL,
    calls             bigint      NOT NULL,
    inbound           bigint      NOT NULL,
    outbound          bigint      NOT NULL,
    answered          bigint      NOT NULL,
    missed            bigint      NOT NULL,
    failed            bigint      NOT NULL,
    handoffs          bigint      NOT NULL,
    handled           bigint      NOT NULL,   -- answered calls with a known duration
    handle_seconds    bigint      NOT NULL,
    timed             bigint      NOT NULL,   -- calls with a known duration
    duration_seconds  bigint      NOT NULL,
    positive          bigint      NOT NULL,
    neutral           bigint      NOT NULL,
    negative          bigint      NOT NULL,
    sentiment_micro   bigint      NOT NULL,   -- sum of polarity × 1e6 over calls with sentiment
    tool_calls        bigint      NOT NULL,
    tool_errors       bigint      NOT NULL,
    summarised        bigint      NOT NULL,
    inbound_minutes   bigint      NOT NULL,   -- per call rounded up to the minute
    outbound_minutes  bigint      NOT NULL,
    histogram         int4[]      NOT NULL,   -- handle time per bin (docs/reports.md)
    PRIMARY KEY (establishment_id, grain, bucket_start, agent_id, agent_version_id)
);

-- Element-wise sum of two histograms of the same length.
CREATE FUNCTION rm_histogram_add(a int4[], b int4[]) RETURNS int4[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i), '{}')
    FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i)
$$;
