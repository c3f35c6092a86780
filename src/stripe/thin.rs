//! Thin (v2) events: a notification of a few fields (`"object": "v2.core.event"`) instead of
//! a snapshot. It names its object in `related_object`, its connected account in `context`
//! (where a snapshot event has `account`) and dates itself in RFC 3339 (where a snapshot
//! event has unix seconds). The data is fetched: `GET /v2/core/events/{id}` with
//! `Stripe-Context`, then the related object itself.

use serde::Deserialize;
use serde_json::Value;

/// The `object` of a thin event.
pub const THIN_EVENT_OBJECT: &str = "v2.core.event";

/// The object a thin event is about.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RelatedObject {
    pub id: String,
    #[serde(rename = "type")]
    pub object_type: String,
    /// Where Stripe serves it (`/v1/payment_intents/pi_…`).
    #[serde(default)]
    pub url: Option<String>,
}

/// The fields of a thin event payhook reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThinEvent {
    pub id: String,
    pub event_type: String,
    /// Unix seconds; `None` when absent or not RFC 3339.
    pub created: Option<i64>,
    pub livemode: bool,
    /// The connected account it belongs to (`Stripe-Context` for every call about it).
    pub context: Option<String>,
    pub related_object: Option<RelatedObject>,
}

#[derive(Deserialize)]
struct RawThin {
    object: Option<String>,
    id: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    #[serde(default)]
    created: Option<Value>,
    #[serde(default)]
    livemode: Option<Value>,
    #[serde(default)]
    context: Option<Value>,
    #[serde(default)]
    related_object: Option<Value>,
}

/// The thin event in `body`, or `None` when `body` is not one (no `"object":
/// "v2.core.event"`, or no string `id` and `type`).
pub fn parse_thin_event(body: &[u8]) -> Option<ThinEvent> {
    let raw: RawThin = serde_json::from_slice(body).ok()?;
    if raw.object.as_deref() != Some(THIN_EVENT_OBJECT) {
        return None;
    }
    Some(ThinEvent {
        id: raw.id?,
        event_type: raw.event_type?,
        created: raw.created.as_ref().and_then(unix_seconds),
        livemode: raw
            .livemode
            .as_ref()
            .and_then(Value::as_bool)
            .unwrap_or(false),
        context: raw
            .context
            .as_ref()
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .map(str::to_owned),
        related_object: raw
            .related_object
            .and_then(|r| serde_json::from_value(r).ok()),
    })
}

/// `created` of a thin event: RFC 3339 (`2026-11-30T10:00:00.123Z`) in unix seconds;
/// a number is taken as unix seconds already.
fn unix_seconds(created: &Value) -> Option<i64> {
    match created {
        Value::String(text) => {
            let at = humantime::parse_rfc3339_weak(text).ok()?;
            let secs = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
            i64::try_from(secs).ok()
        }
        other => other.as_i64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thin_event_is_read_with_its_context_and_related_object() {
        let body = br#"{"id":"evt_test_1","object":"v2.core.event","type":"v1.payment_intent.succeeded",
            "created":"2026-11-30T10:00:01.250Z","livemode":false,"context":"acct_A",
            "related_object":{"id":"pi_1","type":"payment_intent","url":"/v1/payment_intents/pi_1"}}"#;
        let thin = parse_thin_event(body).expect("a thin event");
        assert_eq!(thin.created, Some(1_796_032_801));
        assert_eq!(thin.context.as_deref(), Some("acct_A"));
        let related = thin.related_object.expect("related object");
        assert_eq!(
            (related.id.as_str(), related.object_type.as_str()),
            ("pi_1", "payment_intent")
        );
    }

    #[test]
    fn snapshot_events_are_not_thin() {
        assert_eq!(
            parse_thin_event(br#"{"id":"evt_1","object":"event","type":"a.b"}"#),
            None
        );
        let ping = parse_thin_event(
            br#"{"id":"evt_2","object":"v2.core.event","type":"v2.core.event_destination.ping","context":null}"#,
        )
        .expect("thin");
        assert_eq!(ping.context, None);
        assert_eq!(ping.created, None);
    }
}
