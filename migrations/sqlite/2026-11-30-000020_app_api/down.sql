DROP INDEX checkouts_customer;
DROP INDEX checkouts_created;
ALTER TABLE checkouts DROP COLUMN notify_sequence;
DROP TABLE app_checkouts;
