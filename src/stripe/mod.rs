//! The Stripe boundary: everything that knows Stripe's formats and API.
//!
//! - [`ids`]: id newtypes, prefix checked at parse time.
//! - [`signature`]: `Stripe-Signature` parse, verify, sign (pure).
//! - [`envelope`]: the event fields admission stores beside the raw payload (pure).
//! - [`payload`]: typed views of intents and payment methods, and the handled event types (pure).
//! - [`client`]: the Stripe API calls payhook makes, errors classified retryable or permanent.
//! - [`intents`]: the app API's intent calls (create, charge off-session, cancel).
//! - [`rate_limit`]: the token bucket every Stripe call of the process draws from.
//! - [`rest`]: GETs that need Stripe's headers or raw JSON (Events API, resync).
//! - [`gateway`]: the client behind the token bucket: the way every call goes out.
//! - [`thin`]: thin (v2) event notifications (pure).
//! - [`objects`]: where the objects payhook fetches are served (pure).

pub mod client;
pub mod envelope;
pub mod gateway;
pub mod ids;
pub mod intents;
mod json;
pub mod json_walk;
pub mod objects;
pub mod payload;
pub mod rate_limit;
pub mod rest;
pub mod signature;
pub mod thin;
