-- Agents, versions, telephony policies and the phone-number routing model
-- (docs/agents-and-routing.md).
--
-- Projector `agents`: rm_agents, rm_agent_versions.
-- Projector `routing`: rm_telephony, rm_routing_agents, rm_routing (the routing model of
-- PRD Appendix E.4, loaded into memory by the server).

CREATE TABLE rm_agents (
    id                text        PRIMARY KEY,
    establishment_id  text        NOT NULL,
    name              text        NOT NULL,
    description       text        NOT NULL DEFAULT '',
    active_version_id text,
    created_by        text        NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);
CREATE INDEX rm_agents_by_establishment ON rm_agents (establishment_id, created_at, id);

CREATE TABLE rm_agent_versions (
    id               text        PRIMARY KEY,
    agent_id         text        NOT NULL,
    establishment_id text        NOT NULL,
    number           integer     NOT NULL CHECK (number >= 1),
    name             text        NOT NULL,
    status           text        NOT NULL CHECK (status IN ('draft', 'published', 'archived')),
    prompt           text        NOT NULL,
    model            jsonb       NOT NULL,
    tools            jsonb       NOT NULL,
    policies         jsonb       NOT NULL,
    ever_published   boolean     NOT NULL DEFAULT false,
    created_by       text        NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    -- first publish, and the last time it became the active version
    published_at     timestamptz,
    activated_at     timestamptz,
    CONSTRAINT rm_agent_versions_number_key UNIQUE (agent_id, number)
);

-- One telephony policy per establishment (defaults until an admin changes them).
CREATE TABLE rm_telephony (
    establishment_id          text        PRIMARY KEY,
    timezone                  text        NOT NULL,
    inbound_numbers           jsonb       NOT NULL DEFAULT '[]',
    handoff_e164              text,
    max_call_duration_seconds integer     NOT NULL,
    business_hours            jsonb       NOT NULL DEFAULT '[]',
    blacklist_e164            jsonb       NOT NULL DEFAULT '[]',
    updated_at                timestamptz NOT NULL
);

-- The routing projector's own copy of each agent's active version (projectors never read each
-- other's tables: they advance independently).
CREATE TABLE rm_routing_agents (
    agent_id          text PRIMARY KEY,
    establishment_id  text NOT NULL,
    active_version_id text
);

-- The routing model: to_e164 → establishment, agent, active version and telephony policy.
-- One self-contained row per inbound number, so the in-memory index loads it as is.
CREATE TABLE rm_routing (
    to_e164                   text        PRIMARY KEY,
    provider                  text        NOT NULL,
    establishment_id          text        NOT NULL,
    agent_id                  text        NOT NULL,
    active_version_id         text,
    timezone                  text        NOT NULL,
    handoff_e164              text,
    max_call_duration_seconds integer     NOT NULL,
    business_hours            jsonb       NOT NULL,
    blacklist_e164            jsonb       NOT NULL,
    updated_at                timestamptz NOT NULL
);
CREATE INDEX rm_routing_by_establishment ON rm_routing (establishment_id);
CREATE INDEX rm_routing_by_agent ON rm_routing (agent_id);
