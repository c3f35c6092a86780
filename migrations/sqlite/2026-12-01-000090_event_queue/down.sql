CREATE INDEX webhook_events_claim ON webhook_events (status, created, received_at, id);
DROP TABLE webhook_event_queue;
