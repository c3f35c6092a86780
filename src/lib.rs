//! payhook turns Stripe webhooks into trustworthy local state.
//!
//! # Layout
//! - [`domain`]: pure rules (the checkout state machine); no I/O.
//! - [`stripe`]: the Stripe boundary: ids, signature, envelope, payload views, API client,
//!   rate limiter.
//! - [`inbox`]: the way in: admission (group commit), processor, sweeper, reconciliation.
//! - [`apply`]: one event's effects on checkouts, customers and payment methods.
//! - [`outbox`]: the way out: side effects performed by a worker with idempotency keys.
//! - [`app`]: the app's side below HTTP: checkouts, charges, the checkout object, notifications.
//! - [`http`]: actix-web handlers (webhooks, health, the app API).
//! - [`http`]: actix-web handlers: webhooks, health, `/metrics`, the admin API.
//! - [`metrics`]: every Prometheus family, registered once.
//! - [`ops`]: the operator's verbs (events, outbox work, resync), shared by the admin API
//!   and the CLI.
//! - [`store`]: diesel schema, pool for SQLite or PostgreSQL, repositories.
//! - [`config`]: typed configuration; secrets in redacting wrappers.
//! - [`startup`]: [`Application`]: wires everything, supervises the tasks.
//! - [`health`]: what `/readyz` reports.
//! - [`retry`]: exponential backoff with jitter, for every retry.
//! - [`replay`]: signs and POSTs event files to any endpoint.
//!
//! The path of one event: receive → verify → admit (200 after commit) → apply (background)
//! → act (outbox actions against the Stripe API, when a key is configured).

// Unit tests unwrap freely: a panic is the failure report there.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod app;
pub mod apply;
pub mod config;
pub mod domain;
pub mod health;
pub mod http;
pub mod inbox;
pub mod metrics;
pub mod ops;
pub mod outbox;
pub mod replay;
pub mod retry;
pub mod startup;
pub mod store;
pub mod stripe;
pub mod text_enum;

pub use startup::Application;
