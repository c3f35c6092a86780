ALTER TABLE checkouts ADD COLUMN card_status TEXT;
ALTER TABLE checkouts ADD COLUMN card_error_code TEXT;
ALTER TABLE checkouts ADD COLUMN card_error TEXT;
UPDATE checkouts SET
    card_status = (SELECT CASE o.status WHEN 'done' THEN 'saved' ELSE o.status END FROM outbox o
                   WHERE o.kind = 'save_card' AND o.checkout_id = checkouts.id),
    card_error_code = (SELECT o.last_error_code FROM outbox o
                       WHERE o.kind = 'save_card' AND o.checkout_id = checkouts.id AND o.status = 'failed'),
    card_error = (SELECT o.last_error FROM outbox o
                  WHERE o.kind = 'save_card' AND o.checkout_id = checkouts.id AND o.status = 'failed');
CREATE TABLE stripe_actions (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    kind                TEXT NOT NULL,
    idempotency_key     TEXT NOT NULL UNIQUE,
    checkout_id         TEXT REFERENCES checkouts (id),
    customer_id         BIGINT REFERENCES customers (id),
    payment_method_id   TEXT NOT NULL,
    status              TEXT NOT NULL DEFAULT 'pending',
    step                TEXT NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms  BIGINT NOT NULL DEFAULT 0,
    locked_until_ms     BIGINT NOT NULL DEFAULT 0,
    locked_by           TEXT,
    last_error_code     TEXT,
    last_error          TEXT,
    result              TEXT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);
INSERT INTO stripe_actions (id, kind, idempotency_key, checkout_id, customer_id, payment_method_id,
                            status, step, attempts, next_attempt_at_ms, locked_until_ms, locked_by,
                            last_error_code, last_error, result, created_at, updated_at)
SELECT id, kind, idempotency_key, checkout_id, json_extract(data, '$.customer_id'),
       json_extract(data, '$.payment_method_id'), status, step, attempts, next_attempt_at_ms,
       locked_until_ms, locked_by, last_error_code, last_error, result, created_at, updated_at
FROM outbox WHERE kind = 'save_card';
CREATE INDEX stripe_actions_due ON stripe_actions (status, next_attempt_at_ms, id);
CREATE INDEX stripe_actions_customer ON stripe_actions (customer_id, locked_until_ms);
DROP TABLE outbox_attempts;
DROP TABLE outbox;
