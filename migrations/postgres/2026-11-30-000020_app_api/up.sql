-- What the app asked for through the app API (/api/v1): one row per checkout or off-session
-- charge, written BEFORE any Stripe call. Its id is the checkout's id; the Stripe call that
-- creates the intent carries the key `checkout:{id}:intent`, so a retry or a crash resumes
-- with the same key and never makes a second intent. The state machine's row in `checkouts`
-- (same id) exists once the intent does: written by the API when Stripe answers, or by the
-- processor when a webhook of the intent (metadata checkout_id) comes first.
CREATE TABLE app_checkouts (
    id                  TEXT PRIMARY KEY NOT NULL,   -- chk_...
    kind                TEXT NOT NULL,               -- setup|payment (the object's "mode")
    customer_id         BIGINT REFERENCES customers (id),
    customer_ref        TEXT,                        -- the app's own user id
    email               TEXT,
    amount              BIGINT,
    currency            TEXT,
    save_card           BOOLEAN NOT NULL DEFAULT FALSE,
    off_session         BOOLEAN NOT NULL DEFAULT FALSE,
    description         TEXT,
    metadata            TEXT,                        -- the app's metadata (JSON object)
    payment_method_id   TEXT,                        -- the card an off-session charge uses
    idempotency_key     TEXT UNIQUE,                 -- the app's Idempotency-Key, if it sent one
    request_hash        TEXT NOT NULL,               -- route + normalised body: same key, other body → 409
    intent_id           TEXT UNIQUE,                 -- NULL until Stripe answered
    client_secret       TEXT,                        -- only ever sent to the app, never logged
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);

-- Notifications to the app carry a sequence per checkout (checkout.* and card.* share it),
-- incremented in the transaction that queues one.
ALTER TABLE checkouts ADD COLUMN notify_sequence BIGINT NOT NULL DEFAULT 0;
-- The app API lists checkouts newest first.
CREATE INDEX checkouts_created ON checkouts (created_at, id);
CREATE INDEX checkouts_customer ON checkouts (customer_id, created_at);
