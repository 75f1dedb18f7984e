-- Events a projector (or the analysis consumer) could not apply (docs/architecture.md,
-- "Poison events"). When a batch keeps failing, the projector applies it event by event, sets
-- each failing event aside here and moves its checkpoint past it, so one bad event stalls
-- nobody. A row that is not resolved marks its stream's read model as degraded for that
-- projector (`degraded` in GET /calls/{id}); `POST /admin/dead-letters/{id}/retry` applies the
-- event again and resolves the row when it succeeds. A rebuild skips unresolved rows' events
-- (as the live projector did) and applies resolved ones in their place in the log.

CREATE TABLE projector_dead_letters (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- the projector's name (its checkpoint key)
    projector        text        NOT NULL,
    -- the event: its place in the log and what it is
    event_position   bigint      NOT NULL,
    event_txid       xid8        NOT NULL,
    event_id         text        NOT NULL,
    aggregate_type   text        NOT NULL,
    aggregate_id     text        NOT NULL,
    establishment_id text,
    event_type       text        NOT NULL,
    -- the last failure (truncated)
    error            text        NOT NULL,
    -- attempts so far (batch attempts, the isolated one, and retries)
    attempts         integer     NOT NULL,
    first_failed_at  timestamptz NOT NULL,
    last_failed_at   timestamptz NOT NULL,
    resolved         boolean     NOT NULL DEFAULT false,
    resolved_at      timestamptz,
    UNIQUE (projector, event_position)
);
-- "is this stream degraded?" and the list of unresolved rows
CREATE INDEX projector_dead_letters_open ON projector_dead_letters (aggregate_type, aggregate_id)
    WHERE NOT resolved;
CREATE INDEX projector_dead_letters_newest ON projector_dead_letters (last_failed_at DESC, id DESC);
