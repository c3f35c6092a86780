-- One outbox for every kind of work (saving a card, charging one, notifying the app): the
-- runner (src/outbox/runner.rs) claims, leases, retries and records items without knowing
-- their kind; each kind keeps its own data as JSON in `data` and its progress in `step`.
-- Existing stripe_actions rows move over unchanged: same id, idempotency key and step, so a
-- save_card interrupted across the upgrade resumes with the same keys at Stripe.

CREATE TABLE outbox (
    id                  BIGSERIAL PRIMARY KEY,
    kind                TEXT NOT NULL,               -- save_card | ...
    idempotency_key     TEXT NOT NULL UNIQUE,        -- one item per key; prefix of its calls' keys
    lane                TEXT,                        -- items of one lane never run at once (customer:{id})
    checkout_id         TEXT REFERENCES checkouts (id),
    data                TEXT NOT NULL,               -- the kind's own JSON
    status              TEXT NOT NULL DEFAULT 'pending', -- pending|done|failed
    step                TEXT NOT NULL,               -- the kind's next step (progress survives crashes)
    attempts            INTEGER NOT NULL DEFAULT 0,  -- failed tries so far
    next_attempt_at_ms  BIGINT NOT NULL DEFAULT 0,
    locked_until_ms     BIGINT NOT NULL DEFAULT 0,   -- lease: claimed by locked_by until then
    locked_by           TEXT,
    last_error_code     TEXT,
    last_error          TEXT,
    result              TEXT,                        -- JSON summary of what was done
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);

INSERT INTO outbox (id, kind, idempotency_key, lane, checkout_id, data, status, step, attempts,
                    next_attempt_at_ms, locked_until_ms, locked_by, last_error_code, last_error,
                    result, created_at, updated_at)
SELECT id, kind, idempotency_key,
       CASE WHEN customer_id IS NULL THEN NULL ELSE 'customer:' || customer_id END,
       checkout_id,
       json_build_object('payment_method_id', payment_method_id, 'customer_id', customer_id)::text,
       status, step, attempts, next_attempt_at_ms, locked_until_ms, locked_by,
       last_error_code, last_error, result, created_at, updated_at
FROM stripe_actions;

DROP TABLE stripe_actions;
-- The rows kept their ids: the sequence continues after them.
SELECT setval(pg_get_serial_sequence('outbox', 'id'), COALESCE((SELECT MAX(id) FROM outbox), 0) + 1, false);

-- The runner's claim: due pending items, oldest first.
CREATE INDEX outbox_due ON outbox (status, next_attempt_at_ms, id);
-- "Does this lane already have a leased item?"
CREATE INDEX outbox_lane ON outbox (lane, locked_until_ms);

-- Every run of an item's step, whatever its outcome: what an operator reads to see why an
-- item is late or failed (latency, the remote status code, the error).
CREATE TABLE outbox_attempts (
    id              BIGSERIAL PRIMARY KEY,
    item_id         BIGINT NOT NULL REFERENCES outbox (id),
    step            TEXT NOT NULL,
    started_at_ms   BIGINT NOT NULL,
    duration_ms     BIGINT NOT NULL,
    outcome         TEXT NOT NULL,                   -- ok|retryable|permanent
    status_code     INTEGER,                         -- the remote answer's HTTP status, if any
    error_code      TEXT,
    error           TEXT
);
CREATE INDEX outbox_attempts_item ON outbox_attempts (item_id, id);

-- What became of a checkout's card is the state of its save_card item: the copy kept on the
-- checkout (card_status, card_error_code, card_error) could only drift from it.
CREATE INDEX outbox_checkout ON outbox (checkout_id);
ALTER TABLE checkouts DROP COLUMN card_status;
ALTER TABLE checkouts DROP COLUMN card_error_code;
ALTER TABLE checkouts DROP COLUMN card_error;
