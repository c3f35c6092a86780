//! The Stripe event envelope: the few fields admission stores beside the raw payload.
//!
//! Admission parses only the envelope, borrowing from the raw bytes: it is on the hot path and
//! must accept every API version (2018 to today). Only `id` and `type` are required.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use super::ids::EventId;
use super::json::{as_i64, str_field};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("body is not a JSON object: {0}")]
    NotJson(String),
    #[error("event has no string `id`")]
    MissingId,
    #[error("event has no string `type`")]
    MissingType,
    #[error("event id is invalid: {0}")]
    BadId(String),
}

impl EnvelopeError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotJson(_) => "malformed_json",
            Self::MissingId => "missing_event_id",
            Self::MissingType => "missing_event_type",
            Self::BadId(_) => "invalid_event_id",
        }
    }
}

/// The envelope fields stored beside the raw payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub id: EventId,
    pub event_type: String,
    /// Seconds since the epoch; `None` when an (unusual) payload omits it.
    pub created: Option<i64>,
    pub api_version: Option<String>,
    pub livemode: bool,
    /// Connect account the event belongs to, if any.
    pub account: Option<String>,
    pub object_id: Option<String>,
    pub object_type: Option<String>,
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "type")]
    event_type: Option<Cow<'a, str>>,
    #[serde(default)]
    created: Option<Value>,
    #[serde(borrow, default)]
    api_version: Option<Cow<'a, str>>,
    #[serde(default)]
    livemode: Option<Value>,
    #[serde(borrow, default)]
    account: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<RawData<'a>>,
}

#[derive(Deserialize)]
struct RawData<'a> {
    #[serde(borrow, default)]
    object: Option<RawObject<'a>>,
}

#[derive(Deserialize)]
struct RawObject<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    object: Option<Cow<'a, str>>,
}

/// Parses the envelope of a verified body. Only `id` and `type` are required: everything else
/// is optional because Stripe's shapes differ across API versions.
pub fn parse_envelope(body: &[u8]) -> Result<Envelope, EnvelopeError> {
    // serde would read a struct from a JSON array too; an event is always an object.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(EnvelopeError::NotJson("not a JSON object".into()));
    }
    // A lenient second pass: fields of unexpected types (e.g. `account: null` or a number)
    // must not fail the whole envelope, so typed fields fall back through `Value`.
    let raw: RawEnvelope<'_> = match serde_json::from_slice(body) {
        Ok(raw) => raw,
        Err(_) => return parse_envelope_loosely(body),
    };
    let id = raw.id.ok_or(EnvelopeError::MissingId)?;
    let event_type = raw.event_type.ok_or(EnvelopeError::MissingType)?;
    if event_type.is_empty() {
        return Err(EnvelopeError::MissingType);
    }
    let (object_id, object_type) = match raw.data.and_then(|d| d.object) {
        Some(o) => (o.id.map(Cow::into_owned), o.object.map(Cow::into_owned)),
        None => (None, None),
    };
    Ok(Envelope {
        id: EventId::parse(&id).map_err(|e| EnvelopeError::BadId(e.to_string()))?,
        event_type: event_type.into_owned(),
        created: raw.created.as_ref().and_then(as_i64),
        api_version: raw.api_version.map(Cow::into_owned),
        livemode: raw
            .livemode
            .as_ref()
            .and_then(Value::as_bool)
            .unwrap_or(false),
        account: raw.account.map(Cow::into_owned),
        object_id,
        object_type,
    })
}

fn parse_envelope_loosely(body: &[u8]) -> Result<Envelope, EnvelopeError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
    let obj = value
        .as_object()
        .ok_or_else(|| EnvelopeError::NotJson("not an object".into()))?;
    let id = obj
        .get("id")
        .and_then(Value::as_str)
        .ok_or(EnvelopeError::MissingId)?;
    let event_type = obj
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or(EnvelopeError::MissingType)?;
    let object = value.pointer("/data/object");
    Ok(Envelope {
        id: EventId::parse(id).map_err(|e| EnvelopeError::BadId(e.to_string()))?,
        event_type: event_type.to_owned(),
        created: obj.get("created").and_then(as_i64),
        api_version: str_field(&value, "api_version").map(str::to_owned),
        livemode: obj
            .get("livemode")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        account: str_field(&value, "account").map(str::to_owned),
        object_id: object.and_then(|o| str_field(o, "id")).map(str::to_owned),
        object_type: object
            .and_then(|o| str_field(o, "object"))
            .map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_needs_only_id_and_type() {
        let env = parse_envelope(br#"{"id":"evt_1","type":"x.y"}"#).unwrap();
        assert_eq!(env.id.as_str(), "evt_1");
        assert_eq!(env.created, None);
        assert!(!env.livemode);
        assert_eq!(
            parse_envelope(br#"{"type":"x"}"#),
            Err(EnvelopeError::MissingId)
        );
        assert_eq!(
            parse_envelope(br#"{"id":"evt_1"}"#),
            Err(EnvelopeError::MissingType)
        );
        assert_eq!(
            parse_envelope(br#"{"id":"evt_1","type":""}"#),
            Err(EnvelopeError::MissingType)
        );
        assert!(matches!(
            parse_envelope(b"{nope"),
            Err(EnvelopeError::NotJson(_))
        ));
        assert!(matches!(
            parse_envelope(b"[1,2]"),
            Err(EnvelopeError::NotJson(_))
        ));
        assert!(matches!(
            parse_envelope(br#"{"id":"pi_1","type":"x"}"#),
            Err(EnvelopeError::BadId(_))
        ));
        assert_eq!(
            parse_envelope(br#"{"id":5,"type":"x"}"#),
            Err(EnvelopeError::MissingId)
        );
    }

    #[test]
    fn envelope_tolerates_oddly_typed_optional_fields() {
        let body = br#"{"id":"evt_1","type":"a.b","created":"12","account":7,"livemode":"yes",
            "api_version":null,"data":{"object":{"id":"pi_1","object":"payment_intent"}}}"#;
        let env = parse_envelope(body).unwrap();
        assert_eq!(env.created, Some(12));
        assert_eq!(env.account, None);
        assert_eq!(env.object_id.as_deref(), Some("pi_1"));
        assert_eq!(env.object_type.as_deref(), Some("payment_intent"));
    }
}

/// Properties over generated bodies: the envelope parser sees attacker-controlled bytes.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// JSON values shaped like (broken) events: the envelope's keys with any value types.
    fn event_like() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            "\\PC{0,12}".prop_map(Value::String),
            "evt_[A-Za-z0-9]{0,12}".prop_map(Value::String),
        ];
        let value = leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop::sample::select(vec![
                            "id",
                            "type",
                            "created",
                            "data",
                            "object",
                            "account",
                            "livemode",
                            "api_version",
                            "x",
                        ]),
                        inner
                    ),
                    0..6
                )
                .prop_map(|kv| Value::Object(
                    kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        });
        prop::collection::vec(
            (
                prop::sample::select(vec![
                    "id",
                    "type",
                    "created",
                    "data",
                    "api_version",
                    "livemode",
                    "account",
                    "object",
                ]),
                value,
            ),
            0..8,
        )
        .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5_000))]

        #[test]
        fn the_parser_never_panics_on_any_bytes(body in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_envelope(&body);
        }

        #[test]
        fn the_parser_never_panics_on_event_shaped_json(event in event_like()) {
            let body = serde_json::to_vec(&event).expect("serialize");
            if let Ok(envelope) = parse_envelope(&body) {
                // Whatever it accepts has the two required fields, as strings, in the JSON.
                prop_assert_eq!(event["id"].as_str(), Some(envelope.id.as_str()));
                prop_assert_eq!(event["type"].as_str(), Some(envelope.event_type.as_str()));
            }
        }
    }
}
