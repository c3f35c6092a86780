DROP INDEX checkouts_expiry_watch;
CREATE INDEX checkouts_state ON checkouts (state, updated_at);
ALTER TABLE checkouts DROP COLUMN expiry_watch;
