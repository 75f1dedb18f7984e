-- Throttles of the unauthenticated endpoints (login, forgot-password, reset-password), shared by
-- every control-plane process: one fixed-window counter per key, bumped atomically before the
-- attempt is judged (api/src/auth/throttle.rs, docs/security.md). Not domain state.
CREATE TABLE rate_limits (
    key          text        PRIMARY KEY,
    window_start timestamptz NOT NULL,
    window_secs  integer     NOT NULL,
    hits         integer     NOT NULL
);
CREATE INDEX rate_limits_by_age ON rate_limits (window_start);
