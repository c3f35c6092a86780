//! Secret values and their shapes: redacting types, and the checks that catch a secret pasted
//! into the wrong variable.
//!
//! Each secret lives in a type whose `Debug` prints `[redacted]`, so no log line or error body
//! can carry one by accident; `expose()` is called only where the secret is used. The shape
//! checks never quote the value either: a message names the variable and the entry's position.

use std::fmt;

use base64::Engine as _;

macro_rules! secret_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: String) -> Self {
                Self(value)
            }
            /// The secret itself: call only where it is used (HMAC key, Authorization header).
            pub fn expose(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }
    };
}

secret_type!(
    /// A webhook endpoint's signing secret (`whsec_…`).
    WebhookSecret
);
secret_type!(
    /// A Stripe API secret key (`sk_…` or a restricted `rk_…`).
    ApiKey
);
secret_type!(
    /// A bearer token of the app API (`API_TOKEN`).
    ApiToken
);
secret_type!(
    /// A bearer token of the admin API (`ADMIN_TOKEN`).
    AdminToken
);

/// A Standard Webhooks signing secret for notifications to the app (`NOTIFY_SECRET`):
/// `whsec_` + base64 of 24 to 64 random bytes. Holds the decoded key, which is what signs.
#[derive(Clone, PartialEq, Eq)]
pub struct NotifySecret(Vec<u8>);

impl NotifySecret {
    pub const MIN_BYTES: usize = 24;
    pub const MAX_BYTES: usize = 64;

    /// Decodes `whsec_<base64>`; the error says what is wrong without quoting the value.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let Some(encoded) = raw.strip_prefix("whsec_") else {
            return Err("does not start with whsec_".into());
        };
        let key = base64::engine::general_purpose::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::general_purpose::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        )
        .decode(encoded)
        .map_err(|_| "is not valid base64 after whsec_".to_owned())?;
        if !(Self::MIN_BYTES..=Self::MAX_BYTES).contains(&key.len()) {
            return Err(format!(
                "decodes to {} bytes; it must be {} to {}",
                key.len(),
                Self::MIN_BYTES,
                Self::MAX_BYTES
            ));
        }
        Ok(Self(key))
    }

    /// The HMAC key: call only where it signs.
    pub fn key(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for NotifySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NotifySecret([redacted])")
    }
}

/// Splits `STRIPE_WEBHOOK_SECRET` on commas, skipping empty entries: several secrets are
/// accepted during a rotation. Lenient, for values already checked (tests, `replay`); the
/// configuration loader refuses empty entries instead (see [`split_list`]).
pub fn parse_webhook_secrets(raw: &str) -> Vec<WebhookSecret> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| WebhookSecret::new(s.to_owned()))
        .collect()
}

/// Splits a comma-separated list (rotation), trimming each entry. An empty entry is refused:
/// `a,,b` is more likely a template that lost a value than a wish for two.
pub fn split_list(raw: &str) -> Result<Vec<&str>, String> {
    let entries: Vec<&str> = raw.split(',').map(str::trim).collect();
    match entries.iter().position(|e| e.is_empty()) {
        Some(n) => Err(format!("entry #{} is empty", n + 1)),
        None => Ok(entries),
    }
}

/// What a webhook signing secret looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookSecretShape {
    /// `whsec_…`, as Stripe issues them.
    SigningSecret,
    /// A Stripe API key (`sk_…`, `rk_…`) or publishable key (`pk_…`): refused.
    ApiKey,
    /// Anything else: accepted with a warning (a secret from a fake or an older tool).
    Unusual,
}

pub fn webhook_secret_shape(secret: &str) -> WebhookSecretShape {
    if secret.starts_with("whsec_") {
        WebhookSecretShape::SigningSecret
    } else if ["sk_", "rk_", "pk_"].iter().any(|p| secret.starts_with(p)) {
        WebhookSecretShape::ApiKey
    } else {
        WebhookSecretShape::Unusual
    }
}

/// The refusal for an API key given as the signing secret in `var`.
pub fn api_key_as_webhook_secret(var: &str) -> String {
    format!(
        "this is a Stripe API key (sk_/rk_/pk_…), not a webhook signing secret: {var} takes \
         the endpoint's signing secret (whsec_…, Dashboard > Developers > Webhooks > the \
         endpoint > Signing secret); the API key (sk_… or rk_…) goes in STRIPE_SECRET_KEY"
    )
}

/// Whether `key` looks like a Stripe secret or restricted API key.
pub fn is_api_key_shape(key: &str) -> bool {
    key.starts_with("sk_") || key.starts_with("rk_")
}

/// A bearer token must be sendable in an `Authorization` header as it is.
pub fn check_token(token: &str) -> Result<(), String> {
    if token.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err("contains a character that is not printable ASCII".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = WebhookSecret::new("whsec_abc".into());
        assert_eq!(format!("{s:?}"), "WebhookSecret([redacted])");
        let k = ApiKey::new("sk_test_abc".into());
        assert!(!format!("{k:?}").contains("sk_test"));
        let t = ApiToken::new("tok_abc".into());
        assert!(!format!("{t:?}").contains("tok_abc"));
        let n = NotifySecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("valid");
        assert_eq!(format!("{n:?}"), "NotifySecret([redacted])");
    }

    #[test]
    fn rotated_secrets_are_comma_separated() {
        let secrets = parse_webhook_secrets(" whsec_a, whsec_b ,,");
        assert_eq!(
            secrets
                .iter()
                .map(WebhookSecret::expose)
                .collect::<Vec<_>>(),
            ["whsec_a", "whsec_b"]
        );
        assert_eq!(split_list(" a, b "), Ok(vec!["a", "b"]));
        assert_eq!(split_list("a,,b"), Err("entry #2 is empty".into()));
        assert_eq!(split_list("a,"), Err("entry #2 is empty".into()));
    }

    #[test]
    fn notify_secrets_are_whsec_and_24_to_64_bytes_of_base64() {
        // 24 bytes, the Standard Webhooks example.
        let s = NotifySecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("24 bytes");
        assert_eq!(s.key().len(), 24);
        let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
        assert!(NotifySecret::parse(&format!("whsec_{}", b64(64))).is_ok());
        assert!(NotifySecret::parse(&format!("whsec_{}", b64(32).trim_end_matches('='))).is_ok());
        for (raw, why) in [
            (format!("whsec_{}", b64(23)), "23 bytes"),
            (format!("whsec_{}", b64(65)), "65 bytes"),
            (b64(32), "whsec_"),
            ("whsec_not*base64".into(), "base64"),
        ] {
            let err = NotifySecret::parse(&raw).expect_err(&raw);
            assert!(err.contains(why), "{err}");
            assert!(!err.contains(&raw), "{err}");
        }
    }

    #[test]
    fn api_keys_are_told_apart_from_signing_secrets() {
        assert_eq!(
            webhook_secret_shape("whsec_x"),
            WebhookSecretShape::SigningSecret
        );
        for key in ["sk_test_x", "sk_live_x", "rk_live_x", "pk_test_x"] {
            assert_eq!(webhook_secret_shape(key), WebhookSecretShape::ApiKey);
        }
        assert_eq!(webhook_secret_shape("secret"), WebhookSecretShape::Unusual);
        assert!(is_api_key_shape("sk_test_x") && is_api_key_shape("rk_live_x"));
        assert!(!is_api_key_shape("pk_test_x") && !is_api_key_shape("whsec_x"));
        let message = api_key_as_webhook_secret("STRIPE_WEBHOOK_SECRET");
        assert!(message.contains("whsec_") && message.contains("STRIPE_SECRET_KEY"));
    }

    #[test]
    fn tokens_must_be_printable_ascii() {
        assert!(check_token("abc-DEF_123.~+/=").is_ok());
        assert!(check_token("has space").is_err());
        assert!(check_token("tab\t").is_err());
        assert!(check_token("é").is_err());
    }
}
