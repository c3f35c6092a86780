DROP TABLE reconcile_cursors;
DROP INDEX webhook_events_created;
