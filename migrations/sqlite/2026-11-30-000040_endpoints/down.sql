ALTER TABLE webhook_events DROP COLUMN secret_index;
ALTER TABLE webhook_events DROP COLUMN endpoint;
