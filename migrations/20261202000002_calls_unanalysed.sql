-- Calls whose analysis (summary, or sentiment over every segment) is incomplete: live calls and
-- ended calls a stop caught between their end and their analysis. The analysis worker rescans
-- the ended ones at start-up and periodically (projections/src/calls/queries.rs,
-- `ended_without_analysis`); rows leave the index once analysed, so the scan stays cheap.
CREATE INDEX rm_calls_unanalysed ON rm_calls (updated_at)
    WHERE summary IS NULL
       OR segments > coalesce((sentiment->>'segments_considered')::bigint, 0);
