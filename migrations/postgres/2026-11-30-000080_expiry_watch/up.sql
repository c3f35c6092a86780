-- The sweeper's index without the columns every transition changes (issue 13).
-- `checkouts_state (state, updated_at)` changed with every applied event, so every update of
-- a checkout rewrote that index and, on PostgreSQL, could never be a HOT update: each one
-- added entries to all six indexes of the table (40 µs of the database's time per event in
-- a drain's statement profile). `expiry_watch` is when the checkout was last known to be
-- quiet in a state that can expire: set when it enters such a state, left alone by every
-- later event, and moved on or cleared only by the sweeper, which reads the checkout itself
-- before deciding. It is never later than `updated_at` (unless instances' clocks disagree,
-- and then by no more than they do), so a checkout quiet since T has a watch at or before T
-- and the sweeper finds it.
ALTER TABLE checkouts ADD COLUMN expiry_watch BIGINT;
UPDATE checkouts SET expiry_watch = updated_at
  WHERE state IN ('pending', 'requires_action', 'failed');
DROP INDEX checkouts_state;
CREATE INDEX checkouts_expiry_watch ON checkouts (expiry_watch) WHERE expiry_watch IS NOT NULL;
-- Room on each page for the new version of an updated row: a HOT update needs it on the
-- same page. Applies to pages written from now on.
ALTER TABLE checkouts SET (fillfactor = 80);
