-- Customer resolution looks a customer up by billing email within its account (the oldest
-- first) when an event names no customer_ref and no Stripe customer. Without an index that
-- lookup read the whole table: on PostgreSQL's backlog drain `customers` showed one
-- sequential scan per applied event (31 328 scans, 162 M rows read; BENCHMARKS.md, issue 13).
CREATE INDEX customers_account_email ON customers (account, email, id);
