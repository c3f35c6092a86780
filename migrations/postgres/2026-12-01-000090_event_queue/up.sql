-- The processor's queue in a table of its own (issue 13). The claim index of
-- `webhook_events` held `status`, so recording an outcome changed an indexed column: the
-- update could never be HOT, and added entries to all four indexes of the table (a fifth of
-- the database's time in a PostgreSQL drain's statement profile). Now a row of
-- `webhook_event_queue` exists exactly while its event is pending (src/store/events.rs keeps
-- that rule, and is the only writer of both tables): the processor claims from the queue in
-- the same order as before (Stripe's time, then arrival, then id: the primary key), deletes
-- the row when it records the outcome, and the outcome's update of `webhook_events` touches
-- no indexed column. No foreign key: checking one at admission would lock the event's row.
CREATE TABLE webhook_event_queue (
    created             BIGINT NOT NULL,
    received_at         BIGINT NOT NULL,
    id                  TEXT NOT NULL,
    object_id           TEXT,
    next_attempt_at_ms  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (created, received_at, id)
);
INSERT INTO webhook_event_queue (created, received_at, id, object_id, next_attempt_at_ms)
  SELECT created, received_at, id, object_id, next_attempt_at_ms
  FROM webhook_events WHERE status = 'pending';
DROP INDEX webhook_events_claim;
-- Room on each page for the new version of every row on it: a HOT update needs room on the
-- same page, and a batch records the outcome of every event a page holds (they arrived
-- together). Applies to pages written from now on; the table takes about twice the space.
ALTER TABLE webhook_events SET (fillfactor = 50);
