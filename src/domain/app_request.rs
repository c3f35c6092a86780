//! The app API's request bodies, parsed at the boundary (pure): what a valid checkout or
//! charge request is, the field a refusal names, and the fingerprint that tells a retry of a
//! request (same `Idempotency-Key`, same body) from a reuse of its key for another body.
//!
//! Limits follow Stripe's own where Stripe has one (amount up to 99 999 999 in the smallest
//! unit, metadata of 50 keys of at most 40 characters with values of at most 500, descriptions
//! of at most 1 000 characters), so a request payhook accepts is one Stripe accepts too.
//! Unknown fields are refused, as Stripe refuses unknown parameters.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::checkout::CheckoutKind;

/// A refused request: the field at fault (`body` for the whole) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidRequest {
    pub field: String,
    pub message: String,
}

fn invalid(field: &str, message: impl Into<String>) -> InvalidRequest {
    InvalidRequest {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// `POST /api/v1/checkouts`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckoutRequest {
    pub mode: CheckoutKind,
    pub customer_ref: Option<String>,
    pub email: Option<String>,
    pub amount: Option<i64>,
    pub currency: Option<String>,
    pub save_card: bool,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

/// `POST /api/v1/customers/{customer_ref}/charges`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChargeRequest {
    pub amount: i64,
    pub currency: String,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

pub const MAX_AMOUNT: i64 = 99_999_999;
const METADATA_KEYS: usize = 50;
const METADATA_KEY_CHARS: usize = 40;
const METADATA_VALUE_CHARS: usize = 500;
const DESCRIPTION_CHARS: usize = 1000;
const REF_CHARS: usize = 255;
const EMAIL_CHARS: usize = 512;
/// Set by payhook on every intent; the app cannot set them.
const RESERVED_METADATA: [&str; 2] = ["checkout_id", "customer_ref"];

/// Checks a `customer_ref` (from a body or a path): 1 to 255 printable characters.
pub fn check_customer_ref(field: &str, value: &str) -> Result<(), InvalidRequest> {
    if value.is_empty() || value.chars().count() > REF_CHARS {
        return Err(invalid(
            field,
            format!("must be 1 to {REF_CHARS} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

fn object(body: &[u8]) -> Result<Map<String, Value>, InvalidRequest> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(invalid("body", "must be a JSON object")),
        Err(e) => Err(invalid("body", format!("is not valid JSON: {e}"))),
    }
}

fn only_known(map: &Map<String, Value>, known: &[&str]) -> Result<(), InvalidRequest> {
    match map.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(invalid(k, "is not a known parameter")),
        None => Ok(()),
    }
}

/// A field that may be absent or null.
fn optional<'a>(map: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    map.get(field).filter(|v| !v.is_null())
}

fn string(map: &Map<String, Value>, field: &str) -> Result<Option<String>, InvalidRequest> {
    match optional(map, field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(field, "must be a string")),
    }
}

fn amount(map: &Map<String, Value>) -> Result<Option<i64>, InvalidRequest> {
    match optional(map, "amount") {
        None => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if (1..=MAX_AMOUNT).contains(&n) => Ok(Some(n)),
            _ => Err(invalid(
                "amount",
                format!(
                    "must be a whole number from 1 to {MAX_AMOUNT} (the currency's smallest unit)"
                ),
            )),
        },
    }
}

fn currency(map: &Map<String, Value>) -> Result<Option<String>, InvalidRequest> {
    match string(map, "currency")? {
        None => Ok(None),
        Some(c) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()) => {
            Ok(Some(c.to_ascii_lowercase()))
        }
        Some(_) => Err(invalid(
            "currency",
            "must be a three-letter ISO code, e.g. usd",
        )),
    }
}

fn description(map: &Map<String, Value>) -> Result<Option<String>, InvalidRequest> {
    match string(map, "description")? {
        Some(d) if d.chars().count() > DESCRIPTION_CHARS => Err(invalid(
            "description",
            format!("must be at most {DESCRIPTION_CHARS} characters"),
        )),
        other => Ok(other),
    }
}

fn metadata(map: &Map<String, Value>) -> Result<BTreeMap<String, String>, InvalidRequest> {
    let Some(value) = optional(map, "metadata") else {
        return Ok(BTreeMap::new());
    };
    let Value::Object(entries) = value else {
        return Err(invalid("metadata", "must be an object of strings"));
    };
    if entries.len() > METADATA_KEYS {
        return Err(invalid(
            "metadata",
            format!("must have at most {METADATA_KEYS} keys"),
        ));
    }
    let mut out = BTreeMap::new();
    for (key, value) in entries {
        let field = format!("metadata[{key}]");
        if key.is_empty() || key.chars().count() > METADATA_KEY_CHARS {
            return Err(invalid(
                &field,
                format!("keys must be 1 to {METADATA_KEY_CHARS} characters"),
            ));
        }
        if RESERVED_METADATA.contains(&key.as_str()) {
            return Err(invalid(&field, "is set by payhook"));
        }
        let Value::String(value) = value else {
            return Err(invalid(&field, "must be a string"));
        };
        if value.chars().count() > METADATA_VALUE_CHARS {
            return Err(invalid(
                &field,
                format!("must be at most {METADATA_VALUE_CHARS} characters"),
            ));
        }
        out.insert(key.clone(), value.clone());
    }
    Ok(out)
}

/// Parses and checks a checkout request.
pub fn parse_checkout(body: &[u8]) -> Result<CheckoutRequest, InvalidRequest> {
    let map = object(body)?;
    only_known(
        &map,
        &[
            "mode",
            "customer_ref",
            "email",
            "amount",
            "currency",
            "save_card",
            "description",
            "metadata",
        ],
    )?;
    let mode = match string(&map, "mode")?.as_deref() {
        Some("setup") => CheckoutKind::Setup,
        Some("payment") => CheckoutKind::Payment,
        Some(_) => return Err(invalid("mode", "must be setup or payment")),
        None => return Err(invalid("mode", "is required (setup or payment)")),
    };
    let customer_ref = string(&map, "customer_ref")?;
    if let Some(r) = &customer_ref {
        check_customer_ref("customer_ref", r)?;
    }
    let email = string(&map, "email")?;
    if let Some(e) = &email {
        let (local, domain) = e.split_once('@').unwrap_or(("", ""));
        if local.is_empty()
            || domain.is_empty()
            || e.chars().count() > EMAIL_CHARS
            || e.chars().any(char::is_whitespace)
        {
            return Err(invalid("email", "must be an email address"));
        }
    }
    let save_card = match optional(&map, "save_card") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("save_card", "must be true or false")),
    };
    let (amount, currency) = (amount(&map)?, currency(&map)?);
    match mode {
        CheckoutKind::Setup => {
            if customer_ref.is_none() {
                return Err(invalid(
                    "customer_ref",
                    "is required for mode setup: the card is saved to this user",
                ));
            }
            for (field, given) in [
                ("amount", amount.is_some()),
                ("currency", currency.is_some()),
                ("save_card", optional(&map, "save_card").is_some()),
            ] {
                if given {
                    return Err(invalid(field, "is not allowed for mode setup"));
                }
            }
        }
        CheckoutKind::Payment => {
            if amount.is_none() {
                return Err(invalid("amount", "is required for mode payment"));
            }
            if currency.is_none() {
                return Err(invalid("currency", "is required for mode payment"));
            }
            if save_card && customer_ref.is_none() {
                return Err(invalid(
                    "customer_ref",
                    "is required with save_card: the card is saved to this user",
                ));
            }
        }
    }
    Ok(CheckoutRequest {
        mode,
        customer_ref,
        email,
        amount,
        currency,
        save_card: save_card || mode == CheckoutKind::Setup,
        description: description(&map)?,
        metadata: metadata(&map)?,
    })
}

/// Parses and checks an off-session charge request.
pub fn parse_charge(body: &[u8]) -> Result<ChargeRequest, InvalidRequest> {
    let map = object(body)?;
    only_known(&map, &["amount", "currency", "description", "metadata"])?;
    Ok(ChargeRequest {
        amount: amount(&map)?.ok_or_else(|| invalid("amount", "is required"))?,
        currency: currency(&map)?.ok_or_else(|| invalid("currency", "is required"))?,
        description: description(&map)?,
        metadata: metadata(&map)?,
    })
}

/// What identifies a request for idempotency: where it went and its meaning (the parsed,
/// normalised body, so key order and spelling such as `USD`/`usd` do not matter).
pub fn request_fingerprint(route: &str, request: &impl Serialize) -> String {
    let body = serde_json::to_string(request).unwrap_or_default();
    let digest = Sha256::new()
        .chain_update(route.as_bytes())
        .chain_update([0u8])
        .chain_update(body.as_bytes())
        .finalize();
    hex::encode(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(body: &str) -> String {
        parse_checkout(body.as_bytes()).unwrap_err().field
    }

    #[test]
    fn valid_setup_and_payment_requests_parse() {
        let setup =
            parse_checkout(br#"{"mode":"setup","customer_ref":"user_42","email":"a@b.example"}"#)
                .unwrap();
        assert_eq!(setup.mode, CheckoutKind::Setup);
        assert!(setup.save_card);
        let payment = parse_checkout(
            br#"{"mode":"payment","amount":1099,"currency":"USD","save_card":true,"customer_ref":"u","metadata":{"order":"7"}}"#,
        )
        .unwrap();
        assert_eq!(payment.currency.as_deref(), Some("usd"));
        assert_eq!(payment.metadata.get("order").map(String::as_str), Some("7"));
    }

    #[test]
    fn refusals_name_the_field() {
        assert_eq!(field_of("[]"), "body");
        assert_eq!(field_of("{"), "body");
        assert_eq!(field_of(r#"{"customer_ref":"u"}"#), "mode");
        assert_eq!(field_of(r#"{"mode":"card"}"#), "mode");
        assert_eq!(field_of(r#"{"mode":"setup"}"#), "customer_ref");
        assert_eq!(
            field_of(r#"{"mode":"setup","customer_ref":"u","amount":5}"#),
            "amount"
        );
        assert_eq!(field_of(r#"{"mode":"payment","currency":"usd"}"#), "amount");
        assert_eq!(
            field_of(r#"{"mode":"payment","amount":0,"currency":"usd"}"#),
            "amount"
        );
        assert_eq!(
            field_of(r#"{"mode":"payment","amount":1.5,"currency":"usd"}"#),
            "amount"
        );
        assert_eq!(
            field_of(r#"{"mode":"payment","amount":100000000,"currency":"usd"}"#),
            "amount"
        );
        assert_eq!(
            field_of(r#"{"mode":"payment","amount":5,"currency":"dollars"}"#),
            "currency"
        );
        assert_eq!(
            field_of(r#"{"mode":"payment","amount":5,"currency":"usd","save_card":true}"#),
            "customer_ref"
        );
        assert_eq!(
            field_of(r#"{"mode":"payment","amount":5,"currency":"usd","save_card":"yes"}"#),
            "save_card"
        );
        assert_eq!(
            field_of(r#"{"mode":"payment","amount":5,"currency":"usd","bogus":1}"#),
            "bogus"
        );
        assert_eq!(
            field_of(
                r#"{"mode":"payment","amount":5,"currency":"usd","metadata":{"checkout_id":"x"}}"#
            ),
            "metadata[checkout_id]"
        );
        assert_eq!(
            field_of(r#"{"mode":"payment","amount":5,"currency":"usd","metadata":{"k":1}}"#),
            "metadata[k]"
        );
        assert_eq!(
            field_of(r#"{"mode":"setup","customer_ref":"u","email":"nope"}"#),
            "email"
        );
        assert_eq!(
            field_of(r#"{"mode":"setup","customer_ref":""}"#),
            "customer_ref"
        );
        assert_eq!(
            parse_charge(br#"{"amount":5}"#).unwrap_err().field,
            "currency"
        );
        assert_eq!(
            parse_charge(br#"{"currency":"usd"}"#).unwrap_err().field,
            "amount"
        );
    }

    #[test]
    fn the_fingerprint_ignores_spelling_but_not_meaning_or_route() {
        let a = parse_checkout(
            br#"{"mode":"payment","amount":5,"currency":"usd","metadata":{"a":"1","b":"2"}}"#,
        )
        .unwrap();
        let b = parse_checkout(
            br#"{"metadata":{"b":"2","a":"1"},"currency":"USD","amount":5,"mode":"payment"}"#,
        )
        .unwrap();
        let c = parse_checkout(
            br#"{"mode":"payment","amount":6,"currency":"usd","metadata":{"a":"1","b":"2"}}"#,
        )
        .unwrap();
        let route = "POST /api/v1/checkouts";
        assert_eq!(
            request_fingerprint(route, &a),
            request_fingerprint(route, &b)
        );
        assert_ne!(
            request_fingerprint(route, &a),
            request_fingerprint(route, &c)
        );
        assert_ne!(
            request_fingerprint(route, &a),
            request_fingerprint("other", &a)
        );
    }
}
