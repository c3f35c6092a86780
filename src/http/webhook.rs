//! `POST /webhooks/stripe`: read the raw body, verify, parse the envelope, store, answer.
//!
//! The signature covers the exact bytes, so the body is read raw (never parsed and
//! re-serialised first), with the size limit enforced while reading. 200 is sent only after
//! the event's row is committed; a duplicate is 200 too.

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use log::{debug, warn};

use super::{AppState, WebhookError};
use crate::inbox::admission::Admission;
use crate::store::events::NewWebhookEvent;
use crate::store::now_secs;
use crate::stripe::envelope::parse_envelope;
use crate::stripe::signature;

pub async fn receive(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebhookError> {
    let result = handle(&req, payload, &state).await;
    if let Err(e) = &result {
        let peer = req.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        warn!("webhook from {peer} rejected: {} ({e})", e.kind());
    }
    result
}

async fn handle(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<HttpResponse, WebhookError> {
    let body = tokio::time::timeout(
        state.body_timeout,
        read_body(req, payload, state.max_body_bytes),
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
    let secret_index = signature::verify(&body, header, &state.secrets, state.tolerance_secs, now)?;
    let envelope = parse_envelope(&body)?;
    // serde_json accepted the body, so it is UTF-8; the check costs little and keeps the
    // stored text exactly the signed bytes.
    let text = std::str::from_utf8(&body)
        .map_err(|e| crate::stripe::envelope::EnvelopeError::NotJson(e.to_string()))?;
    let event_id = envelope.id.to_string();
    let event_type = envelope.event_type.clone();
    let admission = state
        .admitter
        .admit(NewWebhookEvent {
            id: envelope.id.into_string(),
            event_type: envelope.event_type,
            api_version: envelope.api_version,
            created: envelope.created.unwrap_or(now),
            livemode: envelope.livemode,
            account: envelope.account,
            object_id: envelope.object_id,
            object_type: envelope.object_type,
            payload: text.to_owned(),
            received_at: now,
        })
        .await
        .map_err(|e| {
            warn!("event {event_id} not stored: {e}");
            WebhookError::Unavailable
        })?;
    let duplicate = admission == Admission::Duplicate;
    debug!(
        "event {event_id} ({event_type}) admitted, secret #{secret_index}, duplicate: {duplicate}"
    );
    // Fixed answers, written once: no JSON serialisation per delivery.
    let answer: &'static str = if duplicate {
        r#"{"received":true,"duplicate":true}"#
    } else {
        r#"{"received":true,"duplicate":false}"#
    };
    Ok(HttpResponse::Ok()
        .content_type(actix_web::http::header::ContentType::json())
        .body(answer))
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
