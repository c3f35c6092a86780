-- Connect (API.md section 4): customers and checkouts belong to an account. The platform's
-- rows have account '' (not NULL): a unique index treats NULLs as distinct, so (account,
-- customer_ref) would not keep one platform customer per customer_ref; '' keeps the index
-- working the same way on both backends.
--
-- SQLite cannot drop the inline UNIQUE of customer_ref, so `customers` is rebuilt as SQLite's
-- documentation says (foreign keys off around a transaction of its own; see metadata.toml).
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE customers_connect (
    id                          INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    customer_ref                TEXT,                -- the app's own user id, unique per account
    email                       TEXT,
    stripe_customer_id          TEXT UNIQUE,         -- cus_... (unique across accounts at Stripe)
    default_payment_method_id   TEXT,
    created_at                  BIGINT NOT NULL,
    updated_at                  BIGINT NOT NULL,
    account                     TEXT NOT NULL DEFAULT ''  -- acct_...; '' for the platform
);
INSERT INTO customers_connect (id, customer_ref, email, stripe_customer_id,
                               default_payment_method_id, created_at, updated_at, account)
    SELECT id, customer_ref, email, stripe_customer_id, default_payment_method_id,
           created_at, updated_at, ''
    FROM customers;
DROP TABLE customers;
ALTER TABLE customers_connect RENAME TO customers;
CREATE UNIQUE INDEX customers_account_ref ON customers (account, customer_ref);
ALTER TABLE checkouts ADD COLUMN account TEXT NOT NULL DEFAULT '';
COMMIT;
PRAGMA foreign_keys = ON;
