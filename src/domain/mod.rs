//! Pure domain rules: no I/O, no clock, no database. Callers pass values in and act on the
//! decisions that come out, so every rule is unit-tested here and lives in one place.
//!
//! - [`checkout`]: the checkout state machine.
//! - [`customer`]: which local customer an event or a request belongs to.
//! - [`observed`]: the checkout state a fetched intent's Stripe status stands for.
//! - [`cards`]: a card's lifecycle, the default card, which copy of a card stays.
//! - [`app_request`]: the app API's request bodies: validation, idempotency fingerprint.

pub mod app_request;
pub mod cards;
pub mod checkout;
pub mod customer;
pub mod observed;
