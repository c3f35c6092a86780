-- Connect for the app API's writes (API.md section 4): a checkout or an off-session charge
-- the app asks for with `Stripe-Account: acct_…` is made in that account, so what the app
-- asked for belongs to an account too ('' for the platform, as in `customers` and
-- `checkouts`), and an Idempotency-Key is the app's key within one account: the same key in
-- two accounts is two requests (Stripe scopes its own keys the same way).
--
-- SQLite cannot drop the inline UNIQUE of idempotency_key, so `app_checkouts` is rebuilt.
-- No table references it (it only references `customers`), so this runs in the migration's
-- own transaction with foreign keys on.
CREATE TABLE app_checkouts_connect (
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
    idempotency_key     TEXT,                        -- the app's Idempotency-Key, unique per account
    request_hash        TEXT NOT NULL,               -- route + normalised body: same key, other body → 409
    intent_id           TEXT UNIQUE,                 -- NULL until Stripe answered
    client_secret       TEXT,                        -- only ever sent to the app, never logged
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    account             TEXT NOT NULL DEFAULT ''     -- acct_...; '' for the platform
);
INSERT INTO app_checkouts_connect (id, kind, customer_id, customer_ref, email, amount, currency,
                                   save_card, off_session, description, metadata,
                                   payment_method_id, idempotency_key, request_hash, intent_id,
                                   client_secret, created_at, updated_at, account)
    SELECT id, kind, customer_id, customer_ref, email, amount, currency, save_card, off_session,
           description, metadata, payment_method_id, idempotency_key, request_hash, intent_id,
           client_secret, created_at, updated_at, ''
    FROM app_checkouts;
DROP TABLE app_checkouts;
ALTER TABLE app_checkouts_connect RENAME TO app_checkouts;
CREATE UNIQUE INDEX app_checkouts_account_key ON app_checkouts (account, idempotency_key);
-- Checkouts per account: the app API lists one account's checkouts newest first, and a
-- reconciliation pass finds the connected accounts payhook knows by skipping through this
-- index (one probe per account, never a scan of the table).
CREATE INDEX checkouts_account ON checkouts (account, created_at, id);
