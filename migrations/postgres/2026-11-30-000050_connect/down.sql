-- Fails if one customer_ref is used in two accounts.
ALTER TABLE checkouts DROP COLUMN account;
DROP INDEX customers_account_ref;
ALTER TABLE customers ADD CONSTRAINT customers_customer_ref_key UNIQUE (customer_ref);
ALTER TABLE customers DROP COLUMN account;
