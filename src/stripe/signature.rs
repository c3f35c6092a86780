//! `Stripe-Signature` parsing, verification and signing (pure: no I/O, no clock).
//!
//! The header is `t=<unix>,v1=<hex>[,v1=<hex>…][,v0=…]`; the expected signature is
//! `hex(HMAC-SHA256(secret, "<t>.<raw body>"))` with the secret's full text (including
//! `whsec_`) as the key. Any `v1` matching any configured secret is accepted, so a rotation
//! (Stripe signs with the old and the new secret for up to 24 h) never drops an event. The
//! signature is checked before the age so a forged request learns nothing about our clock.
//!
//! # The same verdict as Stripe's official libraries
//! A header passes here exactly when it passes both stripe-python
//! (`stripe/_webhook.py`, `WebhookSignature.verify_header`) and stripe-node
//! (`src/Webhooks.ts`, `signature.verifyHeader`), as read in stripe-python 16.1.0 and
//! stripe-node 23.1.0; where the two disagree, it is refused.
//! Being more lenient than the reference implementations would make this security check
//! weaker than the one Stripe documents. Each rule below names the behaviour it mirrors;
//! `tests/signature_parity.rs` runs both libraries (versions pinned in
//! `.ci/signature-oracle/`) on the same cases and holds this module to it.
//!
//! It is stricter than both libraries only on input Stripe never sends, where mirroring would
//! take a reimplementation of Python's `int()` and JavaScript's number formatting:
//! - a `t` value that is not plain ASCII digits (`+5`, ` 5`, `5 `, `-5`, `0_0`, `٥`), or is above
//!   2^53 − 1, even where both libraries happen to read the same number from it;
//! - a first and a last `t` with different values (stripe-python signs the first, stripe-node
//!   the last; both pass only when the header carries a `v1` over each);
//! - a body that starts with a UTF-8 byte-order mark (stripe-node drops it before signing,
//!   stripe-python keeps it; both pass only when the header carries a `v1` over each text);
//! - a clock exactly on a whole second at age == tolerance (see [`verify`]).
//!
//! Outside this module, the HTTP layer also refuses header bytes outside visible ASCII,
//! which the libraries would read as Latin-1; Stripe's headers are ASCII.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::WebhookSecret;

type HmacSha256 = Hmac<Sha256>;

/// The length of a hex-encoded SHA-256 MAC.
const SIGNATURE_HEX_LEN: usize = 64;

/// `Number.MAX_SAFE_INTEGER`. Above it stripe-node's `parseInt` rounds `t` to a nearby double
/// and signs that double's text (`9007199254740993` → `9007199254740992`, `1e21` →
/// `1e+21`), while stripe-python signs the exact integer.
const MAX_TIMESTAMP: i64 = (1 << 53) - 1;

/// Python's `int()` refuses strings of more digits than this (the default
/// `sys.get_int_max_str_digits()` since 3.11), leading zeros included; stripe-python then
/// rejects the header.
const MAX_TIMESTAMP_DIGITS: usize = 4300;

/// The UTF-8 byte-order mark, which stripe-node's `TextDecoder` drops from the body.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

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

/// A parsed header: the timestamp both libraries sign, and the `v1` values they compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader<'a> {
    pub timestamp: i64,
    /// The `v1` values, in header order, that stripe-python reaches (see [`parse_header`]);
    /// never empty. They are compared as text, so only lower-case hex can match.
    pub v1: Vec<&'a str>,
}

/// Parses a `Stripe-Signature` header value as both official libraries do.
///
/// A `v1` value that is not a signature (short, long, upper-case, not hex) is kept: it simply
/// matches nothing, as in both libraries, and one garbage entry does not hide a valid
/// signature next to it.
pub fn parse_header(header: &str) -> Result<SignatureHeader<'_>, SignatureError> {
    // Both: an empty header is reported as no header at all.
    if header.is_empty() {
        return Err(SignatureError::MissingHeader);
    }
    let mut first_t = None;
    let mut last_t = None;
    let mut v1 = Vec::new();
    let mut has_non_ascii_v1 = false;
    // Both split on every `,` and compare keys byte-exact with nothing trimmed, so ` v1`,
    // `V1`, `v1 ` or `T` are unknown schemes, ignored like `v0`.
    for item in header.split(',') {
        let (key, value) = split_item(item);
        match key {
            "t" => {
                // stripe-python takes `item.split("=", 2)[1]` of every `t` item, which raises
                // IndexError on an item without `=`.
                let value = value.ok_or(SignatureError::MalformedHeader)?;
                // stripe-python signs the first `t`, stripe-node the last (each `t` item
                // overwrites the one before); what lies between is read by neither.
                first_t.get_or_insert(value);
                last_t = Some(value);
            }
            "v1" => {
                // stripe-python: IndexError as for `t`; stripe-node: `secureCompare` throws
                // "must receive two arguments" on a missing (`undefined`) or empty value.
                let value = value
                    .filter(|v| !v.is_empty())
                    .ok_or(SignatureError::MalformedHeader)?;
                if !value.is_ascii() {
                    // stripe-node compares every value: equal UTF-16 length first, then
                    // `crypto.timingSafeEqual` on the UTF-8 bytes, which throws when a
                    // non-ASCII value made them differ.
                    if value.encode_utf16().count() == SIGNATURE_HEX_LEN {
                        return Err(SignatureError::MalformedHeader);
                    }
                    // stripe-python compares in order and stops at the first match;
                    // `hmac.compare_digest` raises TypeError on a non-ASCII string, so values
                    // from here on count only if an earlier one matched.
                    has_non_ascii_v1 = true;
                } else if !has_non_ascii_v1 {
                    v1.push(value);
                }
            }
            _ => {}
        }
    }
    // Both refuse a header without `t` (stripe-python: IndexError; stripe-node: timestamp
    // stays -1) before looking at the signatures.
    let (Some(first_t), Some(last_t)) = (first_t, last_t) else {
        return Err(SignatureError::MalformedHeader);
    };
    let timestamp = parse_timestamp(first_t)?;
    // Stricter than the libraries (module docs): both pass a header whose first and last `t`
    // differ only if it carries a `v1` over each, which Stripe never sends.
    if parse_timestamp(last_t)? != timestamp {
        return Err(SignatureError::MalformedHeader);
    }
    if v1.is_empty() {
        // No `v1` at all (both: "No signatures found with expected scheme"), or only values
        // behind a non-ASCII one, which stripe-python never reaches.
        return Err(SignatureError::NoV1Signature);
    }
    Ok(SignatureHeader { timestamp, v1 })
}

/// Splits one header item as both libraries do: the key is the text before the first `=`,
/// the value the text between the first and the second `=` (stripe-python
/// `item.split("=", 2)[1]`, stripe-node `item.split('=')[1]`), `None` without any `=`.
fn split_item(item: &str) -> (&str, Option<&str>) {
    match item.split_once('=') {
        Some((key, rest)) => (
            key,
            Some(rest.split_once('=').map_or(rest, |(value, _)| value)),
        ),
        None => (item, None),
    }
}

/// Reads a `t` value: plain ASCII digits, leading zeros allowed, at most 2^53 − 1.
///
/// stripe-python reads `t` with `int()`, which also takes surrounding whitespace, a sign,
/// `_` between digits and non-ASCII digits; stripe-node with `parseInt(t, 10)`, which takes
/// leading whitespace and a sign and stops at the first other character (`1_7` is 1, `abc`
/// is NaN, and the header is then signed over `"NaN."`). On plain digits they read the same
/// number; on anything else they often do not, and Stripe sends plain digits. Leading zeros
/// are fine: both sign the number's own text (`%d`, `${n}`), which is what [`verify`] signs.
fn parse_timestamp(text: &str) -> Result<i64, SignatureError> {
    if text.is_empty()
        || text.len() > MAX_TIMESTAMP_DIGITS
        || !text.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(SignatureError::MalformedHeader);
    }
    // Leading zeros are skipped so that a long run of them cannot overflow the parse.
    let digits = text.trim_start_matches('0');
    let value = if digits.is_empty() {
        0
    } else {
        digits
            .parse::<i64>()
            .map_err(|_| SignatureError::MalformedHeader)?
    };
    if value > MAX_TIMESTAMP {
        return Err(SignatureError::MalformedHeader);
    }
    Ok(value)
}

/// True for a secret both libraries refuse before computing anything: empty or only
/// `[ \t\r\n\f\v]` (stripe-python `secret.strip(" \t\r\n\f\v") == ""`, stripe-node
/// `isBlankWebhookSecret`).
fn is_blank(secret: &str) -> bool {
    secret
        .bytes()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'\x0c' | b'\x0b'))
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
///
/// `now` is whole seconds, the floor of a clock that has a fraction; see the age check below
/// for why that matters at the tolerance boundary.
pub fn verify(
    payload: &[u8],
    header: Option<&str>,
    secrets: &[WebhookSecret],
    tolerance_secs: i64,
    now: i64,
) -> Result<usize, SignatureError> {
    verify_signed_at(payload, header, secrets, tolerance_secs, now).map(|(index, _)| index)
}

/// As [`verify`], also returning the signed timestamp `t`: the event cannot have been created
/// after Stripe signed it (see [`crate::inbox::ingest::inbox_row`]).
pub fn verify_signed_at(
    payload: &[u8],
    header: Option<&str>,
    secrets: &[WebhookSecret],
    tolerance_secs: i64,
    now: i64,
) -> Result<(usize, i64), SignatureError> {
    let header = parse_header(header.ok_or(SignatureError::MissingHeader)?)?;
    // stripe-python decodes the body as strict UTF-8 and raises on anything else; stripe-node
    // decodes it with `TextDecoder`, which replaces invalid bytes and drops a leading BOM.
    // Both sign the raw bytes only when they are UTF-8 without a BOM (module docs).
    if payload.starts_with(UTF8_BOM) || std::str::from_utf8(payload).is_err() {
        return Err(SignatureError::NoMatch);
    }
    let mut matched = None;
    for (index, secret) in secrets.iter().enumerate() {
        if is_blank(secret.expose()) {
            continue;
        }
        // Both compare each `v1` as a string with the lower-case hex of the HMAC.
        let expected = sign(payload, secret.expose(), header.timestamp);
        // Every candidate is compared, even after a match, so timing does not reveal which
        // secret or which v1 entry matched. `ct_eq` answers a length difference at once (the
        // length of a signature is public) and compares equal lengths in constant time.
        for candidate in &header.v1 {
            if bool::from(candidate.as_bytes().ct_eq(expected.as_bytes())) && matched.is_none() {
                matched = Some(index);
            }
        }
    }
    let index = matched.ok_or(SignatureError::NoMatch)?;
    // The age, after the signature. Future timestamps pass in both libraries.
    // stripe-node: stale when `tolerance > 0 && floor(clock) - t > tolerance`.
    // stripe-python: stale when `tolerance and t < clock - tolerance`, with the fractional
    // clock `time.time()`; with `now = floor(clock)` and the clock past the second's start,
    // that is `now - t >= tolerance`. Python's rule is the stricter of the two, so it is the
    // intersection: at age == tolerance the delivery is refused (both libraries would accept
    // it only at an instant exactly on the second), a tolerance of 0 disables the check, and
    // a negative one, which disables only stripe-node's check, refuses all but future
    // timestamps.
    if tolerance_secs != 0 && now.saturating_sub(header.timestamp) >= tolerance_secs {
        return Err(SignatureError::StaleTimestamp);
    }
    Ok((index, header.timestamp))
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

    /// The verdict on `header` for BODY, one secret, a 300 s tolerance, at NOW.
    fn check(header: &str) -> Result<usize, SignatureError> {
        verify(BODY, Some(header), &secrets(&[SECRET]), 300, NOW)
    }

    fn good() -> String {
        sign(BODY, SECRET, NOW)
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
        assert_eq!(check(&header_for(BODY, SECRET, NOW)), Ok(0));
    }

    #[test]
    fn a_space_after_a_comma_hides_the_v1_signature() {
        // Reported: both libraries read the key " v1", an unknown scheme.
        assert_eq!(
            check(&format!("t={NOW}, v1={}", good())),
            Err(SignatureError::NoV1Signature)
        );
    }

    #[test]
    fn upper_case_hex_matches_nothing() {
        // Reported: both libraries compare strings with the lower-case hex.
        assert_eq!(
            check(&format!("t={NOW},v1={}", good().to_uppercase())),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn keys_and_values_are_read_byte_exact() {
        let g = good();
        for (header, expected) in [
            (format!(" t={NOW},v1={g}"), SignatureError::MalformedHeader),
            (format!("T={NOW},v1={g}"), SignatureError::MalformedHeader),
            (format!("t={NOW} ,v1={g}"), SignatureError::MalformedHeader),
            (format!("t={NOW},\tv1={g}"), SignatureError::NoV1Signature),
            (format!("t={NOW},V1={g}"), SignatureError::NoV1Signature),
            (format!("t={NOW},v1 ={g}"), SignatureError::NoV1Signature),
            (format!("t={NOW},v1= {g}"), SignatureError::NoMatch),
            (format!("t={NOW},v1={g} "), SignatureError::NoMatch),
        ] {
            assert_eq!(check(&header), Err(expected), "{header:?}");
        }
    }

    #[test]
    fn a_value_ends_at_the_second_equals_sign() {
        let g = good();
        assert_eq!(check(&format!("t={NOW}=5,v1={g}=extra")), Ok(0));
        assert_eq!(check(&format!("t={NOW},v1={g}==")), Ok(0));
    }

    #[test]
    fn a_t_or_v1_item_without_a_value_refuses_the_header() {
        let g = good();
        for header in [
            format!("t={NOW},v1={g},t"),
            format!("t={NOW},v1={g},v1"),
            format!("t={NOW},v1={g},v1="),
            format!("t={NOW},v1={g},v1==x"),
            format!("t=,v1={g}"),
        ] {
            assert_eq!(
                check(&header),
                Err(SignatureError::MalformedHeader),
                "{header:?}"
            );
        }
        // Empty items and other bare keys are ignored by both libraries.
        assert_eq!(check(&format!(",t={NOW},,v1={g},v0,x,")), Ok(0));
    }

    #[test]
    fn t_must_be_plain_ascii_digits() {
        // Each is signed over the number the text means, which does not make it acceptable.
        for (t, number) in [
            (format!("+{NOW}"), NOW),
            (format!(" {NOW}"), NOW),
            (format!("{NOW} "), NOW),
            (format!("{NOW}\t"), NOW),
            ("1_700_000_000".to_owned(), NOW),
            ("١٧٠٠٠٠٠٠٠٠".to_owned(), NOW),
            (format!("{NOW}.0"), NOW),
            ("0x10".to_owned(), 16),
            ("-0".to_owned(), 0),
            ("-5".to_owned(), -5),
            ("abc".to_owned(), 0),
        ] {
            let header = format!("t={t},v1={}", sign(BODY, SECRET, number));
            assert_eq!(
                verify(BODY, Some(&header), &secrets(&[SECRET]), 0, NOW),
                Err(SignatureError::MalformedHeader),
                "{header:?}"
            );
        }
    }

    #[test]
    fn leading_zeros_are_read_and_the_number_is_signed() {
        assert_eq!(check(&format!("t=000{NOW},v1={}", good())), Ok(0));
        // Signed over the text as written, it matches nothing.
        let mut literal = HmacSha256::new_from_slice(SECRET.as_bytes()).unwrap();
        literal.update(format!("000{NOW}.").as_bytes());
        literal.update(BODY);
        let literal = hex::encode(literal.finalize().into_bytes());
        assert_eq!(
            check(&format!("t=000{NOW},v1={literal}")),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn t_above_2_pow_53_minus_1_is_refused() {
        let at = |t: i64| {
            let header = format!("t={t},v1={}", sign(BODY, SECRET, t));
            verify(BODY, Some(&header), &secrets(&[SECRET]), 300, NOW)
        };
        assert_eq!(at(MAX_TIMESTAMP), Ok(0), "a future timestamp passes");
        assert_eq!(at(MAX_TIMESTAMP + 1), Err(SignatureError::MalformedHeader));
        assert_eq!(at(i64::MAX), Err(SignatureError::MalformedHeader));
        assert_eq!(
            check(&format!("t={},v1={}", "9".repeat(30), good())),
            Err(SignatureError::MalformedHeader)
        );
    }

    #[test]
    fn t_longer_than_pythons_int_limit_is_refused() {
        let padded = |len: usize| format!("{NOW:0>len$}");
        assert_eq!(check(&format!("t={},v1={}", padded(4300), good())), Ok(0));
        assert_eq!(
            check(&format!("t={},v1={}", padded(4301), good())),
            Err(SignatureError::MalformedHeader)
        );
    }

    #[test]
    fn the_first_and_the_last_t_must_agree() {
        let later = NOW + 1;
        let both = format!(
            "t={NOW},t={later},v1={},v1={}",
            good(),
            sign(BODY, SECRET, later)
        );
        assert_eq!(check(&both), Err(SignatureError::MalformedHeader));
        // Neither library reads a `t` between the first and the last.
        assert_eq!(
            check(&format!("t={NOW},t=junk,t=0{NOW},v1={}", good())),
            Ok(0)
        );
    }

    #[test]
    fn a_non_ascii_v1_value_counts_as_the_libraries_count_it() {
        let g = good();
        // stripe-python stops at it unless a match came first.
        assert_eq!(
            check(&format!("t={NOW},v1=é,v1={g}")),
            Err(SignatureError::NoV1Signature)
        );
        assert_eq!(check(&format!("t={NOW},v1={g},v1=é")), Ok(0));
        // stripe-node throws on one as long as a signature.
        assert_eq!(
            check(&format!("t={NOW},v1={g},v1={}", "é".repeat(64))),
            Err(SignatureError::MalformedHeader)
        );
        // 32 astral characters are 64 UTF-16 units.
        assert_eq!(
            check(&format!("t={NOW},v1={g},v1={}", "😀".repeat(32))),
            Err(SignatureError::MalformedHeader)
        );
    }

    #[test]
    fn v1_values_that_are_not_signatures_match_nothing() {
        let g = good();
        for bad in [
            "zz".to_owned(),
            g[..63].to_owned(),
            format!("{g}0"),
            format!("{}g", &g[..63]),
            "0".repeat(64),
        ] {
            assert_eq!(
                check(&format!("t={NOW},v1={bad}")),
                Err(SignatureError::NoMatch),
                "{bad}"
            );
            assert_eq!(check(&format!("t={NOW},v1={bad},v1={g}")), Ok(0), "{bad}");
        }
    }

    #[test]
    fn any_of_several_v1_signatures_may_match() {
        let header = format!(
            "t={NOW},v1={},v1={},v0={}",
            "0".repeat(64),
            good(),
            "1".repeat(64)
        );
        assert_eq!(check(&header), Ok(0));
    }

    #[test]
    fn the_body_must_be_utf8_without_a_byte_order_mark() {
        for body in [
            [UTF8_BOM, BODY].concat(),
            [BODY, b"\xff"].concat(),
            b"\xed\xa0\x80".to_vec(),
        ] {
            let header = header_for(&body, SECRET, NOW);
            assert_eq!(
                verify(&body, Some(&header), &secrets(&[SECRET]), 300, NOW),
                Err(SignatureError::NoMatch),
                "{body:?}"
            );
        }
        // A BOM later in the body is ordinary text.
        let body = [BODY, UTF8_BOM].concat();
        let header = header_for(&body, SECRET, NOW);
        assert_eq!(
            verify(&body, Some(&header), &secrets(&[SECRET]), 300, NOW),
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
    fn a_blank_secret_matches_nothing() {
        let configured = secrets(&[" \t", SECRET]);
        let header = header_for(BODY, " \t", NOW);
        assert_eq!(
            verify(BODY, Some(&header), &configured, 300, NOW),
            Err(SignatureError::NoMatch)
        );
        let header = header_for(BODY, SECRET, NOW);
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
    fn timestamps_as_old_as_the_tolerance_are_rejected_but_future_ones_are_not() {
        assert_eq!(
            check(&header_for(BODY, SECRET, NOW - 301)),
            Err(SignatureError::StaleTimestamp)
        );
        // The clock is past NOW's first instant, and stripe-python refuses there.
        assert_eq!(
            check(&header_for(BODY, SECRET, NOW - 300)),
            Err(SignatureError::StaleTimestamp)
        );
        assert_eq!(check(&header_for(BODY, SECRET, NOW - 299)), Ok(0));
        assert_eq!(check(&header_for(BODY, SECRET, NOW + 3600)), Ok(0));
    }

    #[test]
    fn a_zero_tolerance_accepts_any_age() {
        for t in [0, NOW - 86_400] {
            let header = header_for(BODY, SECRET, t);
            assert_eq!(
                verify(BODY, Some(&header), &secrets(&[SECRET]), 0, NOW),
                Ok(0)
            );
        }
    }

    #[test]
    fn a_negative_tolerance_refuses_all_but_future_timestamps() {
        let at = |t: i64| {
            let header = header_for(BODY, SECRET, t);
            verify(BODY, Some(&header), &secrets(&[SECRET]), -5, NOW)
        };
        assert_eq!(at(NOW), Err(SignatureError::StaleTimestamp));
        assert_eq!(at(NOW + 5), Err(SignatureError::StaleTimestamp));
        assert_eq!(at(NOW + 6), Ok(0));
    }

    #[test]
    fn the_signature_is_checked_before_the_age() {
        assert_eq!(
            check(&header_for(BODY, "whsec_other", NOW - 10_000)),
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
        assert_eq!(check(""), Err(SignatureError::MissingHeader));
        assert_eq!(check("garbage"), Err(SignatureError::MalformedHeader));
        assert_eq!(check("t=abc,v1=00"), Err(SignatureError::MalformedHeader));
        assert_eq!(
            check(&format!("v1={}", good())),
            Err(SignatureError::MalformedHeader)
        );
        assert_eq!(
            check(&format!("t={NOW},v0={}", "a".repeat(64))),
            Err(SignatureError::NoV1Signature)
        );
        assert_eq!(
            check(&format!("t={NOW},v1=zz")),
            Err(SignatureError::NoMatch)
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

/// Properties over generated headers and bodies: the parser sees attacker-controlled bytes.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Header-shaped strings: the pieces a parser cares about, glued in any order.
    fn header_like() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("t=".to_owned()),
            Just("v1=".to_owned()),
            Just("v0=".to_owned()),
            Just(",".to_owned()),
            Just("=".to_owned()),
            Just(" ".to_owned()),
            "[0-9a-f]{64}",
            "[0-9a-fA-F]{0,70}",
            "-?[0-9]{1,25}",
            "\\PC{0,8}",
            Just("\u{0}".to_owned()),
            Just("é".to_owned()),
        ];
        prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        #[test]
        fn the_header_parser_never_panics_on_any_string(header in "\\PC{0,200}") {
            let _ = parse_header(&header);
            let _ = verify(b"{}", Some(&header), &[WebhookSecret::new("whsec_x".into())], 300, 1_700_000_000);
        }

        #[test]
        fn the_header_parser_never_panics_on_header_like_strings(header in header_like()) {
            if let Ok(parsed) = parse_header(&header) {
                prop_assert!(!parsed.v1.is_empty());
            }
            let _ = verify(b"{}", Some(&header), &[WebhookSecret::new("whsec_x".into())], 300, 1_700_000_000);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5_000))]

        /// Any UTF-8 body (the libraries disagree on others, so payhook refuses them) that
        /// does not start with a byte-order mark (likewise) verifies when signed.
        #[test]
        fn whatever_is_signed_with_the_secret_verifies(
            body in "[^\u{feff}]\\PC{0,2000}|",
            secret in "whsec_[A-Za-z0-9]{1,40}",
            t in 0i64..4_000_000_000,
        ) {
            let header = header_for(body.as_bytes(), &secret, t);
            prop_assert_eq!(
                verify(body.as_bytes(), Some(&header), &[WebhookSecret::new(secret)], 0, t),
                Ok(0)
            );
        }
    }
}
