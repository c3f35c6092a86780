DROP INDEX webhook_events_claim;
CREATE INDEX webhook_events_pending ON webhook_events (status, next_attempt_at_ms, created);
