-- Stripe time (event.created) of the succeeded intent that saved this card: the newest saved
-- card is its customer's default, whatever order the saves ran in.
ALTER TABLE payment_methods ADD COLUMN saved_at BIGINT;
