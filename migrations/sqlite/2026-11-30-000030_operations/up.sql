-- Operations (admin API, CLI, reconciliation).

-- The admin API and `payhook events list` page through events newest `created` first (ties
-- by id); without this index every page sorted the whole inbox. `created` mostly grows, so
-- admission appends to the index's right edge.
CREATE INDEX webhook_events_created ON webhook_events (created, id);

-- Reconciliation with Stripe's Events API: one row per scope ('platform' today; Connect
-- accounts later), holding the cursor and the lease that lets one pass run at a time across
-- instances (a conditional UPDATE takes it, as the outbox's claims do).
CREATE TABLE reconcile_cursors (
    scope           TEXT PRIMARY KEY NOT NULL,
    cursor_at       BIGINT,                          -- events created before this were listed (unix s); NULL: never
    locked_until_ms BIGINT NOT NULL DEFAULT 0,       -- lease: a pass holds it until then
    locked_by       TEXT,
    updated_at      BIGINT NOT NULL
);
