-- Times are unix seconds (BIGINT) unless the column name ends in _ms (unix milliseconds).
-- JSON payloads are TEXT: portable, and stored byte-for-byte as Stripe sent them.

CREATE TABLE webhook_events (
    id              TEXT PRIMARY KEY NOT NULL,       -- evt_...
    event_type      TEXT NOT NULL,
    api_version     TEXT,
    created         BIGINT NOT NULL,                 -- Stripe's event.created
    livemode        BOOLEAN NOT NULL DEFAULT FALSE,
    account         TEXT,
    object_id       TEXT,
    object_type     TEXT,
    payload         TEXT NOT NULL,
    received_at     BIGINT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending', -- pending|processed|ignored|failed|dead
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT,
    processed_at    BIGINT
);
-- The processor's claim: pending rows, oldest Stripe time first.
CREATE INDEX webhook_events_pending ON webhook_events (status, next_attempt_at_ms, created);
CREATE INDEX webhook_events_object ON webhook_events (object_id, created);

CREATE TABLE customers (
    id                          INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    customer_ref                TEXT UNIQUE,         -- the app's own user id
    email                       TEXT,
    stripe_customer_id          TEXT UNIQUE,         -- cus_...
    default_payment_method_id   TEXT,
    created_at                  BIGINT NOT NULL,
    updated_at                  BIGINT NOT NULL
);

CREATE TABLE payment_methods (
    id                  TEXT PRIMARY KEY NOT NULL,   -- pm_... (or a legacy card_...)
    customer_id         BIGINT REFERENCES customers (id),
    stripe_customer_id  TEXT,
    method_type         TEXT,
    brand               TEXT,
    last4               TEXT,
    exp_month           INTEGER,
    exp_year            INTEGER,
    fingerprint         TEXT,
    billing_email       TEXT,
    status              TEXT NOT NULL DEFAULT 'seen', -- seen|attached|default|superseded|detached
    attached_at         BIGINT,
    detached_at         BIGINT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);
CREATE INDEX payment_methods_customer ON payment_methods (customer_id, fingerprint);

CREATE TABLE checkouts (
    id                  TEXT PRIMARY KEY NOT NULL,   -- chk_...
    kind                TEXT NOT NULL,               -- payment|setup
    intent_id           TEXT NOT NULL UNIQUE,        -- pi_... / seti_...
    customer_id         BIGINT REFERENCES customers (id),
    stripe_customer_id  TEXT,
    payment_method_id   TEXT,
    amount              BIGINT,
    currency            TEXT,
    setup_future_usage  TEXT,
    state               TEXT NOT NULL,
    state_event_id      TEXT,
    state_event_created BIGINT NOT NULL,
    last_error_code     TEXT,
    decline_code        TEXT,
    last_error_message  TEXT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL              -- last applied change (the sweeper's clock)
);
CREATE INDEX checkouts_state ON checkouts (state, updated_at);

CREATE TABLE checkout_transitions (
    id              INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    checkout_id     TEXT NOT NULL REFERENCES checkouts (id),
    event_id        TEXT,                            -- NULL for the sweeper's expiry
    from_state      TEXT,
    to_state        TEXT NOT NULL,                   -- the state the event asked for
    outcome         TEXT NOT NULL,                   -- applied|refused
    reason          TEXT,                            -- stale|final|duplicate|expired, or a warning
    error_code      TEXT,
    decline_code    TEXT,
    event_created   BIGINT,
    at              BIGINT NOT NULL
);
CREATE INDEX checkout_transitions_checkout ON checkout_transitions (checkout_id, id);
