//! HTTP surface: the webhook endpoint, health checks, the app API ([`api`]), `/metrics` and
//! the admin API ([`admin`]). Handlers stay thin: they verify, hand off and map errors; the
//! domain lives outside `http/`.

pub mod admin;
pub mod api;
mod error;
mod health;
mod metrics;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;

pub use error::WebhookError;
pub use webhook::{read_verified, Door, Verified};

use crate::config::WebhookSecret;
use crate::health::Health;
use crate::inbox::admission::Admitter;
use crate::metrics::{Metrics, WebhookMetrics};
use crate::store::Pool;

/// Shared by every handler.
pub struct AppState {
    pub secrets: Arc<Vec<WebhookSecret>>,
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
    /// The webhook path's metric handles, created once.
    pub webhook_metrics: WebhookMetrics,
    pub admin: admin::AdminState,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/webhooks/stripe", web::post().to(webhook::receive))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(metrics::metrics))
        .configure(api::routes)
        .configure(admin::routes);
}
