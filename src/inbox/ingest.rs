//! The one way an event's bytes become an inbox row, whoever found the event: the webhook
//! handler (after verifying the signature), and reconciliation (events listed by Stripe's
//! Events API with payhook's own key). Both then hand the row to the same
//! [`crate::inbox::admission::Admitter`], whose insert-if-absent on the event id makes an
//! event found twice (delivered and reconciled, or listed by two passes) a no-op.

use sha2::{Digest, Sha256};

use crate::config::EndpointName;
use crate::store::events::{EventStatus, NewWebhookEvent};
use crate::stripe::envelope::{check_storable, parse_envelope, EnvelopeError};
use crate::stripe::thin::parse_thin_event;

/// The row to admit for the event `body` (the exact bytes, stored as they are), received
/// at `now` (local seconds), pending, recorded as the default endpoint's without a matched
/// secret (the webhook handler sets both for a delivery). `latest_created` bounds the event's
/// `created`: Stripe creates an event before it signs or lists it, so a later `created` is
/// forged or broken (and would make every later real event of its object `stale`). The
/// webhook passes the signature's `t` plus the tolerance, reconciliation its own clock plus
/// the same.
///
/// A thin event (no `data.object`, `"object": "v2.core.event"`) is stored with its
/// `context` as the account, its related object as the object, and its RFC 3339 `created`
/// in unix seconds, so the processor orders it with the snapshot events of that object.
pub fn inbox_row(
    body: &[u8],
    now: i64,
    latest_created: i64,
) -> Result<NewWebhookEvent, EnvelopeError> {
    let mut envelope = parse_envelope(body)?;
    // Snapshot events always carry `data.object`; only then is a second parse needed.
    if envelope.object_id.is_none() {
        if let Some(thin) = parse_thin_event(body) {
            // The same door as the snapshot fields: only storable strings are kept.
            if let Some(context) = &thin.context {
                check_storable("context", context)?;
            }
            if let Some(related) = &thin.related_object {
                check_storable("related_object.id", &related.id)?;
                check_storable("related_object.type", &related.object_type)?;
            }
            envelope.created = thin.created;
            envelope.account = thin.context;
            envelope.api_version = None;
            if let Some(related) = thin.related_object {
                envelope.object_id = Some(related.id);
                envelope.object_type = Some(related.object_type);
            }
        }
    }
    if let Some(created) = envelope.created.filter(|&c| c > latest_created) {
        return Err(EnvelopeError::BadCreated(format!(
            "{created} is later than the signature allows ({latest_created})"
        )));
    }
    // serde_json accepted the body, so it is UTF-8; the check costs little and keeps the
    // stored text exactly the signed bytes.
    let text = std::str::from_utf8(body).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
    Ok(NewWebhookEvent {
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
        endpoint: EndpointName::DEFAULT.to_owned(),
        secret_index: None,
        status: EventStatus::Pending,
        last_error: None,
    })
}

/// The SHA-256 of a body, in hex: what a log line may say about a body instead of the body.
pub fn body_digest(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_may_not_be_later_than_the_signature_allows() {
        let body = br#"{"id":"evt_1","type":"a.b","created":1000}"#;
        assert_eq!(
            inbox_row(body, 5, 1000).expect("at the bound").created,
            1000
        );
        let err = inbox_row(body, 5, 999).unwrap_err();
        assert_eq!(err.kind(), "invalid_created");
        let absent = br#"{"id":"evt_1","type":"a.b"}"#;
        assert_eq!(inbox_row(absent, 5, 0).expect("absent").created, 5);
    }
}
