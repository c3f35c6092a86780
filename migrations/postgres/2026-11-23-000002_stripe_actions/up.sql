-- The outbox: Stripe side effects, written in the same transaction as the state change
-- that asks for them and performed later by the action worker (src/actions.rs).

CREATE TABLE stripe_actions (
    id                  BIGSERIAL PRIMARY KEY,
    kind                TEXT NOT NULL,               -- save_card
    idempotency_key     TEXT NOT NULL UNIQUE,        -- save_card:{intent_id}; prefix of every call's key
    checkout_id         TEXT REFERENCES checkouts (id),
    customer_id         BIGINT REFERENCES customers (id), -- NULL until resolved
    payment_method_id   TEXT NOT NULL,
    status              TEXT NOT NULL DEFAULT 'pending', -- pending|done|failed
    step                TEXT NOT NULL,               -- the next step to run (progress survives crashes)
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
-- The worker's claim: due pending actions, oldest first.
CREATE INDEX stripe_actions_due ON stripe_actions (status, next_attempt_at_ms, id);
-- "Does this customer already have a leased action?"
CREATE INDEX stripe_actions_customer ON stripe_actions (customer_id, locked_until_ms);

-- What became of the card a checkout saved: NULL (nothing to save), pending, saved, failed.
ALTER TABLE checkouts ADD COLUMN card_status TEXT;
ALTER TABLE checkouts ADD COLUMN card_error_code TEXT;
ALTER TABLE checkouts ADD COLUMN card_error TEXT;
