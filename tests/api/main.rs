//! Integration tests: the real HTTP app on 127.0.0.1:0 against a real, fresh database per test.

// A panic is the failure report in tests.
#![allow(clippy::unwrap_used)]

mod admin;
mod admission;
mod app_api;
mod app_flows;
mod app_support;
mod checkpoints;
mod cli;
mod connect;
mod endpoints;
mod fake_stripe;
mod fuzz;
mod hardening;
mod helpers;
mod metrics;
mod notifications;
mod ops_cli;
mod ordering;
mod outbox_claims;
mod pg_outage;
mod processing;
mod queue;
mod real_events;
mod reconcile;
mod replay;
mod resync;
mod scale_out;
mod schema;
mod set_wise;
mod signature;
mod stripe_faults;
mod stripe_flows;
mod survival;
mod thin_events;
mod upgrade;
