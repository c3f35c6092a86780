//! `Stripe-Signature` parsing, verification and signing (pure: no I/O, no clock).
//!
//! Verification follows Stripe's official libraries: the header is
//! `t=<unix>,v1=<hex>[,v1=<hex>…][,v0=…]`; the expected signature is
//! `hex(HMAC-SHA256(secret, "<t>.<raw body>"))` with the secret's full text (including
//! `whsec_`) as the key. Any `v1` matching any configured secret is accepted, so a rotation
//! (Stripe signs with the old and the new secret for up to 24 h) never drops an event.
//! Other schemes (`v0`, future ones) are ignored. The signature is checked before the age so a
//! forged request learns nothing about our clock, and a timestamp in the future is accepted,
//! as stripe-node and stripe-python do. Comparison is constant-time.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::WebhookSecret;

type HmacSha256 = Hmac<Sha256>;

/// The length of a hex-encoded SHA-256 MAC.
const SIGNATURE_HEX_LEN: usize = 64;

/// Each way a delivery can fail verification; the HTTP layer names the kind in its 400 body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    MissingHeader,
    #[error("the Stripe-Signature header is malformed")]
    MalformedHeader,
    #[error("the Stripe-Signature header has no v1 signature")]
    NoV1Signature,
    #[error("no v1 signature matches a configured webhook secret")]
    NoMatch,
    #[error("the signature timestamp is outside the tolerance")]
    StaleTimestamp,
}

impl SignatureError {
    /// Stable machine-readable name, used in JSON error bodies and metrics.
    pub fn kind(self) -> &'static str {
        match self {
            Self::MissingHeader => "missing_signature_header",
            Self::MalformedHeader => "malformed_signature_header",
            Self::NoV1Signature => "no_v1_signature",
            Self::NoMatch => "signature_mismatch",
            Self::StaleTimestamp => "stale_timestamp",
        }
    }
}

/// A parsed header: the timestamp and the decoded `v1` signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    pub timestamp: i64,
    pub v1: Vec<[u8; 32]>,
}

/// Parses a `Stripe-Signature` header value.
///
/// Malformed `v1` values are skipped rather than fatal, like the official libraries: one
/// garbage entry must not hide a valid signature next to it.
pub fn parse_header(header: &str) -> Result<SignatureHeader, SignatureError> {
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for item in header.split(',') {
        let Some((key, value)) = item.trim().split_once('=') else {
            continue;
        };
        match key {
            "t" => {
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::MalformedHeader)?,
                )
            }
            "v1" => {
                let mut sig = [0u8; 32];
                if value.len() == SIGNATURE_HEX_LEN && hex::decode_to_slice(value, &mut sig).is_ok()
                {
                    v1.push(sig);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::MalformedHeader)?;
    if v1.is_empty() {
        return Err(SignatureError::NoV1Signature);
    }
    Ok(SignatureHeader { timestamp, v1 })
}

fn mac(secret: &[u8], timestamp: i64, payload: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac
}

/// Verifies `payload` against the header with any of `secrets`.
///
/// Returns the index of the secret that matched, so operators can see when a rotation is
/// complete (no delivery matches the old secret any more).
pub fn verify(
    payload: &[u8],
    header: Option<&str>,
    secrets: &[WebhookSecret],
    tolerance_secs: i64,
    now: i64,
) -> Result<usize, SignatureError> {
    let header = parse_header(header.ok_or(SignatureError::MissingHeader)?)?;
    let mut matched = None;
    for (index, secret) in secrets.iter().enumerate() {
        let expected = mac(secret.expose().as_bytes(), header.timestamp, payload)
            .finalize()
            .into_bytes();
        // Every candidate is compared, even after a match, so timing does not reveal which
        // secret or which v1 entry matched.
        for candidate in &header.v1 {
            if bool::from(expected.as_slice().ct_eq(candidate)) && matched.is_none() {
                matched = Some(index);
            }
        }
    }
    let index = matched.ok_or(SignatureError::NoMatch)?;
    if tolerance_secs > 0 && now.saturating_sub(header.timestamp) > tolerance_secs {
        return Err(SignatureError::StaleTimestamp);
    }
    Ok(index)
}

/// Computes the hex `v1` signature exactly as Stripe does.
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    hex::encode(
        mac(secret.as_bytes(), timestamp, payload)
            .finalize()
            .into_bytes(),
    )
}

/// A complete `Stripe-Signature` header value for `payload`, as Stripe would send it.
pub fn header_for(payload: &[u8], secret: &str, timestamp: i64) -> String {
    format!("t={timestamp},v1={}", sign(payload, secret, timestamp))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"payment_intent.created"}"#;
    const NOW: i64 = 1_700_000_000;

    fn secrets(list: &[&str]) -> Vec<WebhookSecret> {
        list.iter()
            .map(|s| WebhookSecret::new((*s).to_owned()))
            .collect()
    }

    #[test]
    fn signature_matches_stripes_published_algorithm() {
        // Independent computation with the documented recipe: HMAC-SHA256 over "t.payload".
        let mut mac = HmacSha256::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(format!("{NOW}.").as_bytes());
        mac.update(BODY);
        assert_eq!(
            sign(BODY, SECRET, NOW),
            hex::encode(mac.finalize().into_bytes())
        );
    }

    #[test]
    fn a_valid_signature_is_accepted() {
        let header = header_for(BODY, SECRET, NOW);
        assert_eq!(
            verify(BODY, Some(&header), &secrets(&[SECRET]), 300, NOW),
            Ok(0)
        );
    }

    #[test]
    fn any_of_several_v1_signatures_may_match() {
        let good = sign(BODY, SECRET, NOW);
        let header = format!(
            "t={NOW},v1={},v1={good},v0={}",
            "0".repeat(64),
            "1".repeat(64)
        );
        assert_eq!(
            verify(BODY, Some(&header), &secrets(&[SECRET]), 300, NOW),
            Ok(0)
        );
    }

    #[test]
    fn rotated_secrets_report_which_one_matched() {
        let header = header_for(BODY, "whsec_new", NOW);
        let configured = secrets(&["whsec_old", "whsec_new"]);
        assert_eq!(verify(BODY, Some(&header), &configured, 300, NOW), Ok(1));
    }

    #[test]
    fn a_one_byte_tamper_is_rejected() {
        let header = header_for(BODY, SECRET, NOW);
        let mut tampered = BODY.to_vec();
        tampered[10] ^= 1;
        assert_eq!(
            verify(&tampered, Some(&header), &secrets(&[SECRET]), 300, NOW),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn timestamps_older_than_the_tolerance_are_rejected_but_future_ones_are_not() {
        let old = header_for(BODY, SECRET, NOW - 301);
        assert_eq!(
            verify(BODY, Some(&old), &secrets(&[SECRET]), 300, NOW),
            Err(SignatureError::StaleTimestamp)
        );
        let edge = header_for(BODY, SECRET, NOW - 300);
        assert!(verify(BODY, Some(&edge), &secrets(&[SECRET]), 300, NOW).is_ok());
        let future = header_for(BODY, SECRET, NOW + 3600);
        assert!(verify(BODY, Some(&future), &secrets(&[SECRET]), 300, NOW).is_ok());
    }

    #[test]
    fn the_signature_is_checked_before_the_age() {
        let header = header_for(BODY, "whsec_other", NOW - 10_000);
        assert_eq!(
            verify(BODY, Some(&header), &secrets(&[SECRET]), 300, NOW),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn header_errors_have_distinct_kinds() {
        let s = secrets(&[SECRET]);
        assert_eq!(
            verify(BODY, None, &s, 300, NOW),
            Err(SignatureError::MissingHeader)
        );
        assert_eq!(
            verify(BODY, Some("garbage"), &s, 300, NOW),
            Err(SignatureError::MalformedHeader)
        );
        assert_eq!(
            verify(BODY, Some("t=abc,v1=00"), &s, 300, NOW),
            Err(SignatureError::MalformedHeader)
        );
        assert_eq!(
            verify(
                BODY,
                Some(&format!("t={NOW},v0={}", "a".repeat(64))),
                &s,
                300,
                NOW
            ),
            Err(SignatureError::NoV1Signature)
        );
        assert_eq!(
            verify(BODY, Some(&format!("t={NOW},v1=zz")), &s, 300, NOW),
            Err(SignatureError::NoV1Signature)
        );
    }

    #[test]
    fn error_kinds_are_distinct() {
        use std::collections::HashSet;
        let kinds: HashSet<_> = [
            SignatureError::MissingHeader,
            SignatureError::MalformedHeader,
            SignatureError::NoV1Signature,
            SignatureError::NoMatch,
            SignatureError::StaleTimestamp,
        ]
        .iter()
        .map(|e| e.kind())
        .collect();
        assert_eq!(kinds.len(), 5);
    }
}
