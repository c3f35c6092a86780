DROP TABLE checkout_transitions;
DROP TABLE checkouts;
DROP TABLE payment_methods;
DROP TABLE customers;
DROP TABLE webhook_events;
