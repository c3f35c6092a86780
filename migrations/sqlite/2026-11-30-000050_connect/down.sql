-- Fails if one customer_ref is used in two accounts: which one would keep it is not for a
-- migration to decide.
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE customers_platform (
    id                          INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    customer_ref                TEXT UNIQUE,
    email                       TEXT,
    stripe_customer_id          TEXT UNIQUE,
    default_payment_method_id   TEXT,
    created_at                  BIGINT NOT NULL,
    updated_at                  BIGINT NOT NULL
);
INSERT INTO customers_platform (id, customer_ref, email, stripe_customer_id,
                                default_payment_method_id, created_at, updated_at)
    SELECT id, customer_ref, email, stripe_customer_id, default_payment_method_id,
           created_at, updated_at
    FROM customers;
DROP TABLE customers;
ALTER TABLE customers_platform RENAME TO customers;
ALTER TABLE checkouts DROP COLUMN account;
COMMIT;
PRAGMA foreign_keys = ON;
