-- Several webhook endpoints (API.md section 4): each stored event records the endpoint it
-- came through and which of that endpoint's secrets matched (NULL: not a delivery, e.g. an
-- event listed by reconciliation). Rows stored before this migration came through the only
-- endpoint there was, `default`.
ALTER TABLE webhook_events ADD COLUMN endpoint TEXT NOT NULL DEFAULT 'default';
ALTER TABLE webhook_events ADD COLUMN secret_index INTEGER;
