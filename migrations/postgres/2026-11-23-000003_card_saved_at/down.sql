ALTER TABLE payment_methods DROP COLUMN saved_at;
