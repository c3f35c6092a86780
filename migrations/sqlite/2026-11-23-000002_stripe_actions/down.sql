ALTER TABLE checkouts DROP COLUMN card_error;
ALTER TABLE checkouts DROP COLUMN card_error_code;
ALTER TABLE checkouts DROP COLUMN card_status;
DROP TABLE stripe_actions;
