//! Lenient readers of `serde_json::Value` fields, shared by the envelope and payload views:
//! a missing or oddly typed field degrades to `None` instead of rejecting a signed event.

use serde_json::Value;

/// Numbers may arrive as integers, floats or (rarely, in hand-made fixtures) strings.
pub(crate) fn as_i64(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_f64().map(|f| f as i64))
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

pub(crate) fn str_field<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// An expandable field: Stripe sends either the id or the whole object.
pub(crate) fn id_or_object<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    match v.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s),
        Value::Object(o) => o.get("id").and_then(Value::as_str),
        _ => None,
    }
}
