-- Fails if one Idempotency-Key was used in two accounts.
DROP INDEX checkouts_account;
DROP INDEX app_checkouts_account_key;
ALTER TABLE app_checkouts ADD CONSTRAINT app_checkouts_idempotency_key_key UNIQUE (idempotency_key);
ALTER TABLE app_checkouts DROP COLUMN account;
