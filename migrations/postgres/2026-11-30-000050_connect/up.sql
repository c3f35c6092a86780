-- Connect (API.md section 4): customers and checkouts belong to an account. The platform's
-- rows have account '' (not NULL): a unique index treats NULLs as distinct, so (account,
-- customer_ref) would not keep one platform customer per customer_ref; '' keeps the index
-- working the same way on both backends.
ALTER TABLE customers ADD COLUMN account TEXT NOT NULL DEFAULT '';
ALTER TABLE customers DROP CONSTRAINT customers_customer_ref_key;
CREATE UNIQUE INDEX customers_account_ref ON customers (account, customer_ref);
ALTER TABLE checkouts ADD COLUMN account TEXT NOT NULL DEFAULT '';
