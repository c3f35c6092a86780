//! HTTP surface: the webhook endpoint, health checks, the app API ([`api`]), `/metrics` and
//! the admin API ([`admin`]). Handlers stay thin: they verify, hand off and map errors; the
//! domain lives outside `http/`.

pub mod admin;
pub mod api;
pub mod endpoints;
mod error;
mod health;
mod metrics;
pub mod stripe_account;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;

pub use error::WebhookError;
pub use webhook::{read_verified, Door, Verified};

use crate::health::Health;
use crate::inbox::admission::Admitter;
use crate::metrics::Metrics;
use crate::store::Pool;

/// Shared by every handler.
pub struct AppState {
    /// The webhook endpoints by name (secrets, kind, livemode policy, metric handles).
    pub endpoints: Arc<endpoints::WebhookEndpoints>,
    pub tolerance_secs: i64,
    pub max_body_bytes: usize,
    /// How long a client may take to send the body once its headers arrived (actix's own
    /// request timeout covers the headers only), so a trickling body cannot hold a
    /// connection and its buffer forever.
    pub body_timeout: Duration,
    pub admitter: Admitter,
    pub pool: Pool,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    pub admin: admin::AdminState,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/webhooks/stripe", web::post().to(webhook::receive))
        .route(
            "/webhooks/stripe/{name}",
            web::post().to(webhook::receive_named),
        )
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(metrics::metrics))
        .configure(api::routes)
        .configure(admin::routes);
}
