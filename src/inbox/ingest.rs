//! The one way an event's bytes become an inbox row, whoever found the event: the webhook
//! handler (after verifying the signature), and reconciliation (events listed by Stripe's
//! Events API with payhook's own key). Both then hand the row to the same
//! [`crate::inbox::admission::Admitter`], whose insert-if-absent on the event id makes an
//! event found twice (delivered and reconciled, or listed by two passes) a no-op.

use crate::config::EndpointName;
use crate::store::events::{EventStatus, NewWebhookEvent};
use crate::stripe::envelope::{parse_envelope, EnvelopeError};
use crate::stripe::thin::parse_thin_event;

/// The row to admit for the event `body` (the exact bytes, stored as they are), received
/// at `now` (local seconds), pending, recorded as the default endpoint's without a matched
/// secret (the webhook handler sets both for a delivery).
///
/// A thin event (no `data.object`, `"object": "v2.core.event"`) is stored with its
/// `context` as the account, its related object as the object, and its RFC 3339 `created`
/// in unix seconds, so the processor orders it with the snapshot events of that object.
pub fn inbox_row(body: &[u8], now: i64) -> Result<NewWebhookEvent, EnvelopeError> {
    let mut envelope = parse_envelope(body)?;
    // Snapshot events always carry `data.object`; only then is a second parse needed.
    if envelope.object_id.is_none() {
        if let Some(thin) = parse_thin_event(body) {
            envelope.created = thin.created;
            envelope.account = thin.context;
            envelope.api_version = None;
            if let Some(related) = thin.related_object {
                envelope.object_id = Some(related.id);
                envelope.object_type = Some(related.object_type);
            }
        }
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
