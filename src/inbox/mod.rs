//! The way in: verified events are admitted durably (group commit), then applied in the
//! background by the processor; the sweeper expires checkouts that never complete.
//!
//! - [`admission`]: group commit of verified events into `webhook_events`.
//! - [`processor`]: claims due events and applies them, with retries.
//! - [`sweeper`]: expires quiet checkouts.

pub mod admission;
pub mod processor;
pub mod sweeper;
