//! The one way an event's bytes become an inbox row, whoever found the event: the webhook
//! handler (after verifying the signature), and reconciliation (events listed by Stripe's
//! Events API with payhook's own key). Both then hand the row to the same
//! [`crate::inbox::admission::Admitter`], whose insert-if-absent on the event id makes an
//! event found twice (delivered and reconciled, or listed by two passes) a no-op.

use crate::store::events::NewWebhookEvent;
use crate::stripe::envelope::{parse_envelope, EnvelopeError};

/// The row to admit for the event `body` (the exact bytes, stored as they are), received
/// at `now` (local seconds).
pub fn inbox_row(body: &[u8], now: i64) -> Result<NewWebhookEvent, EnvelopeError> {
    let envelope = parse_envelope(body)?;
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
    })
}
