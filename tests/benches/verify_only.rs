//! The verify-only reference receiver for `tests/benches/ack-ratio.sh` (issue 13): what
//! acknowledging would cost if storing were free.
//!
//! It reads its settings from the environment as `payhook serve` does, runs on payhook's own
//! HTTP server ([`payhook::startup::build_server`]: workers, timeouts, keep-alive, backlog) and
//! reads each delivery through payhook's own door ([`payhook::http::read_verified`]: body
//! limit, body timeout, signature), then answers payhook's acknowledgement without storing
//! anything. Neither the server settings nor the verification can drift from `serve`'s.
//!
//!   cargo build --release --example verify-only
//!   STRIPE_WEBHOOK_SECRET=whsec_… BIND=127.0.0.1:39001 target/release/examples/verify-only

use std::net::TcpListener;

use actix_web::{web, HttpRequest, HttpResponse};
use anyhow::Context;

use payhook::config::{loader, ProcessEnv, WebhookSecret};
use payhook::http::{read_verified, Door, WebhookError};

struct Reference {
    secrets: Vec<WebhookSecret>,
    tolerance_secs: i64,
    max_body_bytes: usize,
    body_timeout: std::time::Duration,
}

async fn receive(
    req: HttpRequest,
    payload: web::Payload,
    reference: web::Data<Reference>,
) -> Result<HttpResponse, WebhookError> {
    let door = Door {
        secrets: &reference.secrets,
        tolerance_secs: reference.tolerance_secs,
        max_body_bytes: reference.max_body_bytes,
        body_timeout: reference.body_timeout,
    };
    read_verified(&req, payload, door).await?;
    Ok(HttpResponse::Ok()
        .content_type(actix_web::http::header::ContentType::json())
        .body(r#"{"received":true,"duplicate":false}"#))
}

async fn ready() -> HttpResponse {
    HttpResponse::Ok().finish()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = loader::load(&ProcessEnv)?.config;
    let reference = web::Data::new(Reference {
        secrets: config.webhook_secrets.clone(),
        tolerance_secs: config.tolerance_secs,
        max_body_bytes: config.max_body_bytes,
        body_timeout: config.client_request_timeout,
    });
    let listener =
        TcpListener::bind(config.bind).with_context(|| format!("binding {}", config.bind))?;
    eprintln!(
        "verify-only reference on {}: POST /webhooks/stripe",
        listener.local_addr()?
    );
    let server = payhook::startup::build_server(&config, listener, move |cfg| {
        cfg.app_data(reference.clone())
            .route("/webhooks/stripe", web::post().to(receive))
            .route("/readyz", web::get().to(ready));
    })?;
    server.await?;
    Ok(())
}
