-- Fails if one Idempotency-Key was used in two accounts.
DROP INDEX checkouts_account;
CREATE TABLE app_checkouts_platform (
    id                  TEXT PRIMARY KEY NOT NULL,
    kind                TEXT NOT NULL,
    customer_id         BIGINT REFERENCES customers (id),
    customer_ref        TEXT,
    email               TEXT,
    amount              BIGINT,
    currency            TEXT,
    save_card           BOOLEAN NOT NULL DEFAULT FALSE,
    off_session         BOOLEAN NOT NULL DEFAULT FALSE,
    description         TEXT,
    metadata            TEXT,
    payment_method_id   TEXT,
    idempotency_key     TEXT UNIQUE,
    request_hash        TEXT NOT NULL,
    intent_id           TEXT UNIQUE,
    client_secret       TEXT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);
INSERT INTO app_checkouts_platform (id, kind, customer_id, customer_ref, email, amount, currency,
                                    save_card, off_session, description, metadata,
                                    payment_method_id, idempotency_key, request_hash, intent_id,
                                    client_secret, created_at, updated_at)
    SELECT id, kind, customer_id, customer_ref, email, amount, currency, save_card, off_session,
           description, metadata, payment_method_id, idempotency_key, request_hash, intent_id,
           client_secret, created_at, updated_at
    FROM app_checkouts;
DROP TABLE app_checkouts;
ALTER TABLE app_checkouts_platform RENAME TO app_checkouts;
