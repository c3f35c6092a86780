//! The way in: verified events are admitted durably (group commit), then applied in the
//! background by the processor; the sweeper expires checkouts that never complete.
//!
//! - [`admission`]: group commit of verified events into `webhook_events`.
//! - [`ingest`]: an event's bytes as an inbox row, for every way in.
//! - [`reconcile`]: events found through Stripe's Events API, admitted like deliveries.
//! - [`processor`]: claims due events and applies them, with retries.
//! - [`sweeper`]: expires quiet checkouts.

pub mod admission;
pub mod ingest;
pub mod processor;
pub mod reconcile;
pub mod sweeper;
