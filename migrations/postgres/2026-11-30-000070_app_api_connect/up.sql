-- Connect for the app API's writes (API.md section 4): a checkout or an off-session charge
-- the app asks for with `Stripe-Account: acct_…` is made in that account, so what the app
-- asked for belongs to an account too ('' for the platform, as in `customers` and
-- `checkouts`), and an Idempotency-Key is the app's key within one account: the same key in
-- two accounts is two requests (Stripe scopes its own keys the same way).
ALTER TABLE app_checkouts ADD COLUMN account TEXT NOT NULL DEFAULT '';
ALTER TABLE app_checkouts DROP CONSTRAINT app_checkouts_idempotency_key_key;
CREATE UNIQUE INDEX app_checkouts_account_key ON app_checkouts (account, idempotency_key);
-- Checkouts per account: the app API lists one account's checkouts newest first, and a
-- reconciliation pass finds the connected accounts payhook knows by skipping through this
-- index (one probe per account, never a scan of the table).
CREATE INDEX checkouts_account ON checkouts (account, created_at, id);
