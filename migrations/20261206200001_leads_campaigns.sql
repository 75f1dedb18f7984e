-- Leads, the do-not-call list and campaigns (docs/campaigns.md, ADR 0012). Read models only:
-- written by the leads and campaigns projectors, queried through projections/.

CREATE TABLE rm_leads (
    id               text        PRIMARY KEY,
    establishment_id text        NOT NULL,
    phone_e164       text        NOT NULL,
    name             text,
    email            text,
    timezone         text,
    status           text        NOT NULL,
    do_not_call      boolean     NOT NULL DEFAULT false,
    fields           jsonb       NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
-- Dedupe per (establishment, phone) (prd D.1): an import racing another merges into one row.
CREATE UNIQUE INDEX rm_leads_phone ON rm_leads (establishment_id, phone_e164);
CREATE INDEX rm_leads_queue ON rm_leads (establishment_id, status, created_at DESC, id DESC);
CREATE INDEX rm_leads_page ON rm_leads (establishment_id, created_at DESC, id DESC);

CREATE TABLE rm_lead_imports (
    job_id           text        PRIMARY KEY,
    establishment_id text        NOT NULL,
    status           text        NOT NULL,
    file_name        text        NOT NULL,
    bytes            bigint      NOT NULL,
    rows_total       bigint      NOT NULL DEFAULT 0,
    rows_imported    bigint      NOT NULL DEFAULT 0,
    rows_duplicate   bigint      NOT NULL DEFAULT 0,
    rows_rejected    bigint      NOT NULL DEFAULT 0,
    errors           jsonb       NOT NULL DEFAULT '[]',
    failure          text,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);

CREATE TABLE rm_do_not_call (
    establishment_id text        NOT NULL,
    phone_e164       text        NOT NULL,
    reason           text        NOT NULL,
    source           text        NOT NULL,
    added_at         timestamptz NOT NULL,
    PRIMARY KEY (establishment_id, phone_e164)
);

CREATE TABLE rm_campaigns (
    id               text        PRIMARY KEY,
    establishment_id text        NOT NULL,
    name             text        NOT NULL,
    status           text        NOT NULL,
    pause_reason     text,
    spec             jsonb       NOT NULL,
    created_at       timestamptz NOT NULL,
    started_at       timestamptz,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX rm_campaigns_by_establishment ON rm_campaigns (establishment_id, created_at DESC);
CREATE INDEX rm_campaigns_running ON rm_campaigns (status) WHERE status = 'running';

-- The campaign, lead and attempt of a campaign call, from the call's `requested_by`: the
-- dialer derives every lead's attempts and the campaign's busy slots from call state.
ALTER TABLE rm_calls
    ADD COLUMN campaign_id text GENERATED ALWAYS AS (requested_by->>'campaign_id') STORED,
    ADD COLUMN lead_id text GENERATED ALWAYS AS (requested_by->>'lead_id') STORED,
    ADD COLUMN attempt integer GENERATED ALWAYS AS ((requested_by->>'attempt')::integer) STORED;
CREATE INDEX rm_calls_by_campaign ON rm_calls (campaign_id, lead_id) WHERE campaign_id IS NOT NULL;
CREATE INDEX rm_calls_by_lead ON rm_calls (lead_id) WHERE lead_id IS NOT NULL;
