-- Reports (issue 13, second part): campaign figures and UTC-hour buckets (docs/reports.md,
-- ADR 0011).

-- What the campaign figures of a call derive from: whether a campaign placed it, AMD's answer
-- and whether the agent connected (abandonment).
ALTER TABLE rm_report_calls
    ADD COLUMN campaign        boolean NOT NULL DEFAULT false,
    ADD COLUMN answered_by     text,
    ADD COLUMN runtime_started boolean NOT NULL DEFAULT false;

-- Their sums. grain 2 (UTC hours) joins grains 0 (15 minutes) and 1 (UTC days).
ALTER TABLE rm_report_rollups
    ADD COLUMN dialled          bigint NOT NULL DEFAULT 0,   -- calls a campaign placed
    ADD COLUMN human_answered   bigint NOT NULL DEFAULT 0,   -- of them, finished, a person answered
    ADD COLUMN machine_answered bigint NOT NULL DEFAULT 0,   -- finished, a machine or fax answered
    ADD COLUMN abandoned        bigint NOT NULL DEFAULT 0;   -- a person answered, no agent connected

-- The new figures and grain come from the whole log: the `reports` projection starts over
-- (its checkpoint gone, the projector replays every call event into empty tables).
TRUNCATE rm_report_calls, rm_report_rollups;
DELETE FROM projector_checkpoints WHERE name = 'reports';
