//! The Stripe event envelope: the few fields admission stores beside the raw payload.
//!
//! Admission parses the envelope on the hot path and must accept every API version (2018 to
//! today): only `id` and `type` are required. What it accepts, the apply step must be able
//! to read, and the database must be able to store, on both backends. So the door refuses:
//! - a body the apply step's parser refuses: the whole body is read as apply reads it (as a
//!   `serde_json::Value`, without building one: see [`super::json_walk`]), so nesting deeper
//!   than serde_json's recursion limit and lone UTF-16 surrogates (`"\ud800"`) are refused
//!   here, not found later as a `failed` event;
//! - a stored envelope string (see [`check_storable`]) that PostgreSQL cannot store (a NUL)
//!   or that is oversized or unprintable, whichever backend runs;
//! - a `created` that is not a non-negative integer;
//! - an object that is not what the event type names (see [`OBJECT_OF_TYPE`]).

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::ids::EventId;
use super::json_walk::{Scalar, Skip};

/// The longest envelope string payhook stores (type, object id, account, API version).
pub const MAX_FIELD_BYTES: usize = 255;

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
    #[error("envelope field `{field}` {why}")]
    BadField {
        field: &'static str,
        why: &'static str,
    },
    #[error("`created` {0}")]
    BadCreated(String),
    #[error("a `{event_type}` event carries {found}")]
    ObjectMismatch { event_type: String, found: String },
}

impl EnvelopeError {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotJson(_) => "malformed_json",
            Self::MissingId => "missing_event_id",
            Self::MissingType => "missing_event_type",
            Self::BadId(_) => "invalid_event_id",
            Self::BadField { .. } => "invalid_envelope_field",
            Self::BadCreated(_) => "invalid_created",
            Self::ObjectMismatch { .. } => "object_type_mismatch",
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

/// The event families payhook applies, with the object each must carry: `data.object.object`
/// and the prefixes of `data.object.id`. A `payment_intent.succeeded` carrying a setup
/// intent would otherwise move a setup checkout. Legacy cards (`card_`) and sources (`src_`)
/// arrive as payment methods in Stripe's own events.
pub const OBJECT_OF_TYPE: &[(&str, &str, &[&str])] = &[
    ("payment_intent.", "payment_intent", &["pi_"]),
    ("setup_intent.", "setup_intent", &["seti_"]),
    (
        "payment_method.",
        "payment_method",
        &["pm_", "card_", "src_"],
    ),
];

/// The one rule for an envelope string payhook stores and indexes, whichever the backend:
/// at most [`MAX_FIELD_BYTES`], and no control character (PostgreSQL refuses NUL in text;
/// the others end up in log lines and admin output).
pub fn check_storable(field: &'static str, value: &str) -> Result<(), EnvelopeError> {
    if value.len() > MAX_FIELD_BYTES {
        return Err(EnvelopeError::BadField {
            field,
            why: "is longer than 255 bytes",
        });
    }
    if value.chars().any(char::is_control) {
        return Err(EnvelopeError::BadField {
            field,
            why: "contains a control character",
        });
    }
    Ok(())
}

/// Parses the envelope of a verified body. Only `id` and `type` are required: everything else
/// is optional because Stripe's shapes differ across API versions; an optional field of an
/// unexpected type (`account: 7`) is taken as absent, except `created`, which orders events.
pub fn parse_envelope(body: &[u8]) -> Result<Envelope, EnvelopeError> {
    // serde would read a struct from a JSON array too; an event is always an object.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(EnvelopeError::NotJson("not a JSON object".into()));
    }
    // The whole body is read as the apply step reads it (module docs), in one pass that
    // keeps only the envelope's fields (see `super::json_walk`).
    let top: Top =
        serde_json::from_slice(body).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
    let id = top
        .id
        .as_ref()
        .and_then(Scalar::as_str)
        .ok_or(EnvelopeError::MissingId)?;
    let id = EventId::parse(id).map_err(|e| EnvelopeError::BadId(e.to_string()))?;
    let event_type = top
        .event_type
        .as_ref()
        .and_then(Scalar::non_empty_str)
        .ok_or(EnvelopeError::MissingType)?;
    check_storable("type", event_type)?;
    let stored = |value: Option<&Scalar>, field: &'static str| {
        value
            .and_then(Scalar::non_empty_str)
            .map(|s| check_storable(field, s).map(|()| s.to_owned()))
            .transpose()
    };
    let object = top.data.as_ref().and_then(|data| data.object.as_ref());
    let envelope = Envelope {
        id,
        event_type: event_type.to_owned(),
        // A thin (v2) event dates itself in RFC 3339: read by `super::thin` (see
        // `crate::inbox::ingest`), not here.
        created: if top.object.as_ref().and_then(Scalar::as_str)
            == Some(super::thin::THIN_EVENT_OBJECT)
        {
            None
        } else {
            parse_created(top.created.as_ref())?
        },
        api_version: stored(top.api_version.as_ref(), "api_version")?,
        livemode: top
            .livemode
            .as_ref()
            .and_then(Scalar::as_bool)
            .unwrap_or(false),
        account: stored(top.account.as_ref(), "account")?,
        object_id: stored(object.and_then(|o| o.id.as_ref()), "data.object.id")?,
        object_type: stored(object.and_then(|o| o.object.as_ref()), "data.object.object")?,
    };
    check_object_matches_type(&envelope)?;
    Ok(envelope)
}

/// The envelope's fields of an event body, every other part read and dropped. A key given
/// twice counts once, with its last value, as in a `serde_json::Value` object.
#[derive(Default)]
struct Top<'a> {
    id: Option<Scalar<'a>>,
    event_type: Option<Scalar<'a>>,
    created: Option<Scalar<'a>>,
    api_version: Option<Scalar<'a>>,
    livemode: Option<Scalar<'a>>,
    account: Option<Scalar<'a>>,
    object: Option<Scalar<'a>>,
    data: Option<Data<'a>>,
}

/// `data`: only its `object` matters, when `data` is an object.
#[derive(Default)]
struct Data<'a> {
    object: Option<DataObject<'a>>,
}

/// `data.object`: its `id` and `object`, when it is an object.
#[derive(Default)]
struct DataObject<'a> {
    id: Option<Scalar<'a>>,
    object: Option<Scalar<'a>>,
}

/// Reads a JSON object field by field into `T`, or any other JSON value into `T::default()`,
/// through `deserialize_any` so that nesting counts against serde_json's recursion limit
/// exactly as it does for a `Value`.
macro_rules! object_reader {
    ($ty:ident, $what:literal, |$target:ident, $key:ident, $map:ident| $body:block) => {
        impl<'de> Deserialize<'de> for $ty<'de> {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct ObjectVisitor;
                impl<'de> Visitor<'de> for ObjectVisitor {
                    type Value = $ty<'de>;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_map<A: MapAccess<'de>>(
                        self,
                        mut $map: A,
                    ) -> Result<Self::Value, A::Error> {
                        let mut $target = $ty::default();
                        while let Some(key) = $map.next_key::<Scalar<'de>>()? {
                            let $key = key.as_str().unwrap_or_default();
                            $body
                        }
                        Ok($target)
                    }
                    fn visit_seq<A: SeqAccess<'de>>(
                        self,
                        mut seq: A,
                    ) -> Result<Self::Value, A::Error> {
                        while seq.next_element::<Skip>()?.is_some() {}
                        Ok($ty::default())
                    }
                    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                        Ok($ty::default())
                    }
                    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                        Ok($ty::default())
                    }
                    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                        Ok($ty::default())
                    }
                    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                        Ok($ty::default())
                    }
                    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                        Ok($ty::default())
                    }
                    fn visit_unit<E>(self) -> Result<Self::Value, E> {
                        Ok($ty::default())
                    }
                    fn visit_none<E>(self) -> Result<Self::Value, E> {
                        Ok($ty::default())
                    }
                }
                deserializer.deserialize_any(ObjectVisitor)
            }
        }
    };
}

object_reader!(Top, "a Stripe event", |top, key, map| {
    match key {
        "id" => top.id = Some(map.next_value()?),
        "type" => top.event_type = Some(map.next_value()?),
        "created" => top.created = Some(map.next_value()?),
        "api_version" => top.api_version = Some(map.next_value()?),
        "livemode" => top.livemode = Some(map.next_value()?),
        "account" => top.account = Some(map.next_value()?),
        "object" => top.object = Some(map.next_value()?),
        "data" => top.data = Some(map.next_value()?),
        _ => {
            map.next_value::<Skip>()?;
        }
    }
});

object_reader!(Data, "an event's data", |data, key, map| {
    match key {
        "object" => data.object = Some(map.next_value()?),
        _ => {
            map.next_value::<Skip>()?;
        }
    }
});

object_reader!(DataObject, "an event's object", |object, key, map| {
    match key {
        "id" => object.id = Some(map.next_value()?),
        "object" => object.object = Some(map.next_value()?),
        _ => {
            map.next_value::<Skip>()?;
        }
    }
});

/// `created`: absent (or null), or a JSON integer ≥ 0. Not a float, a string or a negative
/// number: it orders an object's events, and a wrong one makes later events `stale`.
fn parse_created(created: Option<&Scalar>) -> Result<Option<i64>, EnvelopeError> {
    match created {
        None | Some(Scalar::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| i64::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| EnvelopeError::BadCreated(format!("is not an integer ≥ 0: {v}"))),
    }
}

fn check_object_matches_type(envelope: &Envelope) -> Result<(), EnvelopeError> {
    let Some((_, object, prefixes)) = OBJECT_OF_TYPE
        .iter()
        .find(|(family, _, _)| envelope.event_type.starts_with(family))
    else {
        return Ok(());
    };
    let mismatch = |found: String| EnvelopeError::ObjectMismatch {
        event_type: envelope.event_type.clone(),
        found,
    };
    if let Some(found) = &envelope.object_type {
        if found != object {
            return Err(mismatch(format!("a `{found}` object")));
        }
    }
    if let Some(id) = &envelope.object_id {
        if !prefixes.iter().any(|p| id.starts_with(p)) {
            return Err(mismatch(format!("the object id `{id}`")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

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
        let body = br#"{"id":"evt_1","type":"a.b","created":12,"account":7,"livemode":"yes",
            "api_version":null,"data":{"object":{"id":"pi_1","object":"payment_intent"}}}"#;
        let env = parse_envelope(body).unwrap();
        assert_eq!(env.created, Some(12));
        assert_eq!(env.account, None);
        assert_eq!(env.object_id.as_deref(), Some("pi_1"));
        assert_eq!(env.object_type.as_deref(), Some("payment_intent"));
    }

    fn event_with(field: &str, value: &str) -> Vec<u8> {
        let mut event = serde_json::json!({"id":"evt_1","type":"payment_intent.created",
            "created": 1, "api_version": "2025-04-30.basil", "account": "acct_1",
            "data": {"object": {"id": "pi_1", "object": "payment_intent"}}});
        let value = Value::String(value.to_owned());
        match field {
            "data.object.id" => event["data"]["object"]["id"] = value,
            "data.object.object" => event["data"]["object"]["object"] = value,
            other => event[other] = value,
        }
        serde_json::to_vec(&event).unwrap()
    }

    #[test]
    fn stored_envelope_strings_follow_one_rule() {
        assert!(parse_envelope(&event_with("account", "acct_1")).is_ok());
        let long = format!("pi_{}", "x".repeat(MAX_FIELD_BYTES));
        for (field, value) in [
            ("type", "payment_intent.created\0"),
            ("type", "payment_intent.\u{1}created"),
            ("api_version", "2025\0"),
            ("api_version", long.as_str()),
            ("account", "acct_\u{0}1"),
            ("account", "acct_\u{7f}1"),
            ("data.object.id", "pi_1\0"),
            ("data.object.id", long.as_str()),
            ("data.object.object", "payment_intent\0"),
        ] {
            let err = parse_envelope(&event_with(field, value)).unwrap_err();
            assert_eq!(err.kind(), "invalid_envelope_field", "{field}: {err}");
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    #[test]
    fn created_is_a_non_negative_integer_or_absent() {
        let with = |created: &str| {
            parse_envelope(
                format!(r#"{{"id":"evt_1","type":"a.b","created":{created}}}"#).as_bytes(),
            )
        };
        assert_eq!(with("1700000000").unwrap().created, Some(1_700_000_000));
        assert_eq!(with("0").unwrap().created, Some(0));
        assert_eq!(with("null").unwrap().created, None);
        for bad in [
            "-5",
            "1e30",
            "1.5",
            "\"123\"",
            "true",
            "18446744073709551615",
        ] {
            let err = with(bad).unwrap_err();
            assert_eq!(err.kind(), "invalid_created", "{bad}");
        }
    }

    #[test]
    fn the_object_must_be_what_the_type_names() {
        let event = |t: &str, id: &str, object: &str| {
            parse_envelope(
                format!(
                    r#"{{"id":"evt_1","type":"{t}","data":{{"object":{{"id":"{id}","object":"{object}"}}}}}}"#
                )
                .as_bytes(),
            )
        };
        assert!(event("payment_intent.succeeded", "pi_1", "payment_intent").is_ok());
        assert!(event("setup_intent.succeeded", "seti_1", "setup_intent").is_ok());
        assert!(event("payment_method.attached", "card_1", "payment_method").is_ok());
        assert!(event("payment_method.attached", "pm_1", "payment_method").is_ok());
        assert!(event("customer.updated", "cus_1", "customer").is_ok());
        for (t, id, object) in [
            ("payment_intent.succeeded", "seti_1", "setup_intent"),
            ("payment_intent.succeeded", "pi_1", "setup_intent"),
            ("payment_intent.succeeded", "seti_1", "payment_intent"),
            ("setup_intent.succeeded", "pi_1", "payment_intent"),
            ("payment_method.detached", "cus_1", "payment_method"),
            ("payment_method.detached", "pm_1", "customer"),
        ] {
            let err = event(t, id, object).unwrap_err();
            assert_eq!(err.kind(), "object_type_mismatch", "{t} {id} {object}");
        }
    }

    #[test]
    fn what_admission_accepts_the_apply_step_can_parse() {
        let nested = |depth: usize| {
            format!(
                r#"{{"id":"evt_1","type":"a.b","data":{{"object":{{"x":{}1{}}}}}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            )
        };
        assert!(parse_envelope(nested(100).as_bytes()).is_ok());
        let deep = nested(200);
        assert!(
            serde_json::from_str::<Value>(&deep).is_err(),
            "apply refuses it"
        );
        assert_eq!(
            parse_envelope(deep.as_bytes()).unwrap_err().kind(),
            "malformed_json"
        );
        let surrogate = br#"{"id":"evt_1","type":"a.b","data":{"object":{"name":"\ud800"}}}"#;
        assert!(
            serde_json::from_slice::<Value>(surrogate).is_err(),
            "apply refuses it"
        );
        assert_eq!(
            parse_envelope(surrogate).unwrap_err().kind(),
            "malformed_json"
        );
        let pair = br#"{"id":"evt_1","type":"a.b","data":{"object":{"name":"\ud83d\ude00"}}}"#;
        assert!(parse_envelope(pair).is_ok());
    }
}

/// Properties over generated bodies: the envelope parser sees attacker-controlled bytes.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use serde_json::{json, Value};

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
                    "request",
                ]),
                value,
            ),
            0..8,
        )
        .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
    }

    /// The envelope as it was read before the one-pass reader: through a whole
    /// `serde_json::Value`, the tree the apply step builds. The reader must agree with it on
    /// every input (see `the_one_pass_reader_agrees_with_the_value_reader`).
    fn by_value(body: &[u8]) -> Result<Envelope, EnvelopeError> {
        use crate::stripe::json::str_field;
        if body.trim_ascii_start().first() != Some(&b'{') {
            return Err(EnvelopeError::NotJson("not a JSON object".into()));
        }
        let value: Value =
            serde_json::from_slice(body).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
        let obj = value.as_object().expect("an object");
        let id = obj
            .get("id")
            .and_then(Value::as_str)
            .ok_or(EnvelopeError::MissingId)?;
        let id = EventId::parse(id).map_err(|e| EnvelopeError::BadId(e.to_string()))?;
        let event_type = obj
            .get("type")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or(EnvelopeError::MissingType)?;
        check_storable("type", event_type)?;
        let object = value.pointer("/data/object");
        let stored = |parent: Option<&Value>, key: &str, field: &'static str| {
            parent
                .and_then(|p| str_field(p, key))
                .map(|s| check_storable(field, s).map(|()| s.to_owned()))
                .transpose()
        };
        let created = if obj.get("object").and_then(Value::as_str)
            == Some(crate::stripe::thin::THIN_EVENT_OBJECT)
        {
            None
        } else {
            match obj.get("created") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_u64()
                        .and_then(|n| i64::try_from(n).ok())
                        .ok_or_else(|| EnvelopeError::BadCreated(v.to_string()))?,
                ),
            }
        };
        let envelope = Envelope {
            id,
            event_type: event_type.to_owned(),
            created,
            api_version: stored(Some(&value), "api_version", "api_version")?,
            livemode: obj
                .get("livemode")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            account: stored(Some(&value), "account", "account")?,
            object_id: stored(object, "id", "data.object.id")?,
            object_type: stored(object, "object", "data.object.object")?,
        };
        check_object_matches_type(&envelope)?;
        Ok(envelope)
    }

    fn same_verdict(body: &[u8]) -> Result<(), TestCaseError> {
        match (parse_envelope(body), by_value(body)) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(a), Err(b)) => prop_assert_eq!(a.kind(), b.kind(), "{} / {}", a, b),
            (a, b) => prop_assert!(
                false,
                "{:?} against {:?} for {}",
                a,
                b,
                String::from_utf8_lossy(body)
            ),
        }
        Ok(())
    }

    /// Pieces that JSON readers disagree on, spliced into event-shaped bodies.
    const TRICKY: &[&str] = &[
        r#""\ud800""#,
        r#""\udc00\ud800""#,
        r#""\ud83d\ude00""#,
        r#""a\u0000b""#,
        "1e400",
        "-1e400",
        "1e-400",
        "-0",
        "18446744073709551616",
        "-9223372036854775809",
        "1.0",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
        r#"{"object":{"id":"pi_9","object":"payment_intent"}}"#,
        r#""payment_intent""#,
        r#""evt_9""#,
        "\"\u{1}\"",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5_000))]

        #[test]
        fn the_one_pass_reader_agrees_with_the_value_reader(
            event in event_like(),
            splice in prop::option::of((any::<prop::sample::Index>(), prop::sample::select(TRICKY))),
        ) {
            let body = serde_json::to_vec(&event).expect("serialize");
            same_verdict(&body)?;
            // A tricky piece in place of some value: after a `:` or a `[`, or anywhere.
            if let Some((at, piece)) = splice {
                let text = String::from_utf8(body).expect("utf-8");
                let cuts: Vec<usize> = text.match_indices([':', '[']).map(|(i, _)| i + 1).collect();
                let cut = if cuts.is_empty() { at.index(text.len() + 1) } else { cuts[at.index(cuts.len())] };
                if text.is_char_boundary(cut) {
                    let (head, tail) = text.split_at(cut);
                    // Replace the value that starts there when it is a scalar, else insert.
                    let end = tail.find([',', '}', ']']).filter(|&e| !tail[..e].contains(['{', '[', '"'])).unwrap_or(0);
                    let spliced = format!("{head}{piece}{}", &tail[end..]);
                    same_verdict(spliced.as_bytes())?;
                }
            }
        }

        #[test]
        fn the_one_pass_reader_agrees_on_any_bytes(body in prop::collection::vec(any::<u8>(), 0..200)) {
            same_verdict(&body)?;
        }

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
