//! `POST /webhooks/stripe` and `POST /webhooks/stripe/{name}`: read the raw body, verify with
//! that endpoint's secrets, parse the envelope, apply the endpoint's rules, store, answer.
//!
//! The signature covers the exact bytes, so the body is read raw (never parsed and
//! re-serialised first), with the size limit enforced while reading. 200 is sent only after
//! the event's row is committed; a duplicate is 200 too.
//!
//! The endpoint's rules ([`crate::config::EndpointConfig::verdict`]): an event of the wrong
//! kind of account is refused (400, nothing stored); an event of a livemode the endpoint does
//! not take is stored as `ignored` and acknowledged, so Stripe does not disable the endpoint.

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use log::{debug, warn};

use super::endpoints::WebhookEndpoint;
use super::{AppState, WebhookError};
use crate::config::{EndpointName, EndpointVerdict, WebhookSecret};
use crate::inbox::admission::Admission;
use crate::inbox::ingest::{body_digest, inbox_row};
use crate::store::events::{self, EventStatus};
use crate::store::now_secs;
use crate::stripe::signature;

/// The default endpoint, `/webhooks/stripe`.
pub async fn receive(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebhookError> {
    receive_at(EndpointName::DEFAULT, req, payload, state).await
}

/// A named endpoint, `/webhooks/stripe/{name}`: `404 not_found` for a name not configured.
pub async fn receive_named(
    name: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebhookError> {
    receive_at(&name, req, payload, state).await
}

async fn receive_at(
    name: &str,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebhookError> {
    let started = std::time::Instant::now();
    let Some(endpoint) = state.endpoints.get(name) else {
        return Err(WebhookError::UnknownEndpoint);
    };
    let result = handle(&req, payload, &state, endpoint).await;
    let metrics = &endpoint.metrics;
    match result {
        // Fixed answers, written once: no JSON serialisation per delivery.
        Ok((Admission::Stored, EndpointVerdict::Apply)) => {
            metrics.accepted(started.elapsed());
            Ok(acknowledge(r#"{"received":true,"duplicate":false}"#))
        }
        Ok((Admission::Stored, EndpointVerdict::IgnoreLivemode(_))) => {
            metrics.accepted(started.elapsed());
            state.metrics.event_ignored_on_arrival(name);
            Ok(acknowledge(r#"{"received":true,"ignored":"livemode"}"#))
        }
        Ok((Admission::Duplicate, _)) => {
            metrics.duplicate(started.elapsed());
            Ok(acknowledge(r#"{"received":true,"duplicate":true}"#))
        }
        Err(e) => {
            metrics.rejected(e.kind());
            let peer = req.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            warn!("webhook from {peer} rejected: {} ({e})", e.kind());
            Err(e)
        }
    }
}

fn acknowledge(answer: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(actix_web::http::header::ContentType::json())
        .body(answer)
}

/// What a delivery is checked against before anything is stored: the body's size and time
/// limits and the signing secrets. `serve` and the verify-only reference receiver of
/// `tests/benches/verify_only.rs` both read deliveries through [`read_verified`], so the
/// reference cannot drift from the door it is compared with.
pub struct Door<'a> {
    pub secrets: &'a [WebhookSecret],
    pub tolerance_secs: i64,
    pub max_body_bytes: usize,
    pub body_timeout: std::time::Duration,
}

/// A delivery whose signature matched.
pub struct Verified {
    pub body: web::BytesMut,
    /// Which secret matched (rotation: 0 is the current one).
    pub secret_index: usize,
    /// The signature's `t`: Stripe signed the event then, so it was created before.
    pub signed_at: i64,
    /// Local time of the check, unix seconds.
    pub now: i64,
}

/// Reads the body within the door's limits and verifies its signature.
pub async fn read_verified(
    req: &HttpRequest,
    payload: web::Payload,
    door: Door<'_>,
) -> Result<Verified, WebhookError> {
    let body = tokio::time::timeout(
        door.body_timeout,
        read_body(req, payload, door.max_body_bytes),
    )
    .await
    .map_err(|_| WebhookError::BodyTimeout)??;
    let header = match req.headers().get("Stripe-Signature") {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| signature::SignatureError::MalformedHeader)?,
        ),
        None => None,
    };
    let now = now_secs();
    let (secret_index, signed_at) =
        signature::verify_signed_at(&body, header, door.secrets, door.tolerance_secs, now)?;
    Ok(Verified {
        body,
        secret_index,
        signed_at,
        now,
    })
}

async fn handle(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    endpoint: &WebhookEndpoint,
) -> Result<(Admission, EndpointVerdict), WebhookError> {
    let door = Door {
        secrets: &endpoint.config.secrets,
        tolerance_secs: state.tolerance_secs,
        max_body_bytes: state.max_body_bytes,
        body_timeout: state.body_timeout,
    };
    let Verified {
        body,
        secret_index,
        signed_at,
        now,
    } = read_verified(req, payload, door).await?;
    endpoint.metrics.secret_matched(secret_index);
    let mut row = inbox_row(
        &body,
        now,
        signed_at.saturating_add(state.tolerance_secs.max(0)),
    )?;
    let verdict = endpoint
        .config
        .verdict(row.account.as_deref(), row.livemode)?;
    row.endpoint = endpoint.config.name.as_str().to_owned();
    row.secret_index = i32::try_from(secret_index).ok();
    if let EndpointVerdict::IgnoreLivemode(reason) = verdict {
        row.status = EventStatus::Ignored;
        row.last_error = Some(reason.to_owned());
    }
    let (event_id, event_type) = (row.id.clone(), row.event_type.clone());
    let api_version = row.api_version.clone();
    let admission = state.admitter.admit(row).await.map_err(|e| {
        // The outage itself is logged once by admission (and `/readyz` reports it).
        debug!("event {event_id} not stored: {e}");
        WebhookError::Unavailable
    })?;
    let duplicate = admission == Admission::Duplicate;
    if let (false, Some(version)) = (duplicate, &api_version) {
        state.metrics.event_stored_with_api_version(version);
    }
    if duplicate {
        warn_if_body_differs(state, &event_id, body.freeze()).await;
    }
    debug!(
        "event {event_id} ({event_type}) admitted at endpoint {}, secret #{secret_index}, duplicate: {duplicate}",
        endpoint.config.name
    );
    Ok((admission, verdict))
}

/// A duplicate is acknowledged whatever its body, but one whose body differs from the stored
/// one is worth a line: a replay with altered content, or a sender other than Stripe using
/// a leaked secret. The digests identify the bodies without showing them.
async fn warn_if_body_differs(state: &AppState, event_id: &str, body: web::Bytes) {
    let id = event_id.to_owned();
    let stored = state
        .pool
        .run(move |conn| events::find_payload(conn, &id))
        .await;
    match stored {
        Ok(Some(stored)) if stored.as_bytes() != body.as_ref() => warn!(
            "event {event_id} delivered again with a different body: stored sha256 {}, \
             delivered sha256 {}; acknowledged as a duplicate, not applied",
            body_digest(stored.as_bytes()),
            body_digest(&body)
        ),
        Ok(_) => {}
        Err(e) => debug!("event {event_id}: comparing the duplicate's body failed: {e}"),
    }
}

/// Reads the body, refusing more than `limit` bytes (up front when Content-Length says so).
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, WebhookError> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(WebhookError::TooLarge { limit });
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(4096).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| WebhookError::BodyRead)?;
        if body.len() + chunk.len() > limit {
            return Err(WebhookError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
