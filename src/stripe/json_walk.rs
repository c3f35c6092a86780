//! Reading JSON exactly as `serde_json::Value` reads it, without building the tree.
//!
//! Admission must accept precisely what the apply step (which parses `Value`s) can parse, but
//! building a `Value` of every delivered body costs an allocation per string, number and map
//! node on the hot path. Walking the body through serde_json's own `deserialize_any` gives the
//! same verdicts for free: the same recursion limit (each array or object is entered through
//! `deserialize_any`, as `Value` enters it), the same string checks (every string and key is
//! unescaped by the same `parse_str`, so lone UTF-16 surrogates and control characters are
//! refused), and the same number parsing (`1e400` is out of range either way). serde's
//! `IgnoredAny` would not do: serde_json skips it with a loop that has no depth limit and
//! does not decode `\u` escapes.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON value read to its end and dropped.
pub struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_none<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Skip, D::Error> {
        Skip::deserialize(deserializer)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_key::<Skip>()?.is_some() {
            map.next_value::<Skip>()?;
        }
        Ok(Skip)
    }
}

/// A JSON value read to its end, keeping it only when it is a scalar: what a lenient reader
/// of one field needs (a field of an unexpected type degrades to absent, not to an error).
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    Null,
    Bool(bool),
    /// An integer ≥ 0 (serde_json reads `-5` as a signed, `5` as an unsigned integer).
    UInt(u64),
    Int(i64),
    Float(f64),
    Str(Cow<'a, str>),
    /// An array or an object (read and dropped).
    Composite,
}

impl<'a> Scalar<'a> {
    /// The string, if it is a non-empty one (as `json::str_field` reads a `Value`).
    pub fn non_empty_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) if !s.is_empty() => Some(s),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The value as `Value::as_u64` reads it: a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Self::UInt(n) => Some(*n),
            Self::Int(n) => u64::try_from(*n).ok(),
            _ => None,
        }
    }
}

impl fmt::Display for Scalar<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::Null => f.write_str("null"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::UInt(n) => write!(f, "{n}"),
            Self::Int(n) => write!(f, "{n}"),
            Self::Float(x) => write!(f, "{x}"),
            Self::Str(s) => write!(f, "{s:?}"),
            Self::Composite => f.write_str("an array or object"),
        }
    }
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Int(n))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(Scalar::UInt(n))
    }
    fn visit_f64<E>(self, x: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Float(x))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(s)))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        Scalar::deserialize(deserializer)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        SkipVisitor.visit_seq(seq).map(|Skip| Scalar::Composite)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        SkipVisitor.visit_map(map).map(|Skip| Scalar::Composite)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// The walk and `Value` agree on every input below: the cases `IgnoredAny` gets wrong.
    #[test]
    fn skip_refuses_what_value_refuses() {
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let cases: Vec<String> = vec![
            deep(127),
            deep(128),
            deep(129),
            deep(5_000),
            r#"{"a":"\ud800"}"#.into(),
            r#"{"\udc00":1}"#.into(),
            r#"["\ud83d\ude00"]"#.into(),
            "[1e400]".into(),
            "[-1e400]".into(),
            "[1e-400]".into(),
            "[18446744073709551616]".into(),
            "[-0]".into(),
            "[\"a\u{1}\"]".into(),
            r#"{"a":1,"a":2}"#.into(),
            r#"["\x"]"#.into(),
            "[1,]".into(),
            "{} x".into(),
        ];
        for case in cases {
            let by_value = serde_json::from_str::<Value>(&case).is_ok();
            let by_walk = serde_json::from_str::<Skip>(&case).is_ok();
            assert_eq!(by_walk, by_value, "{case}");
        }
        assert!(serde_json::from_str::<serde::de::IgnoredAny>(&deep(5_000)).is_ok());
    }

    #[test]
    fn scalars_are_kept_and_composites_dropped() {
        fn read(s: &str) -> Scalar<'_> {
            serde_json::from_str(s).unwrap()
        }
        assert_eq!(read("null"), Scalar::Null);
        assert_eq!(read("-5"), Scalar::Int(-5));
        assert_eq!(read("5").as_u64(), Some(5));
        assert_eq!(read("-0").as_u64(), None, "serde_json reads -0 as a float");
        assert_eq!(read(r#""a\nb""#).as_str(), Some("a\nb"));
        assert_eq!(read(r#""""#).non_empty_str(), None);
        assert_eq!(read(r#"{"a":[1]}"#), Scalar::Composite);
    }
}
