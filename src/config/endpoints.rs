//! Webhook endpoints: the default one (`/webhooks/stripe`) and those named in
//! `STRIPE_ENDPOINTS`, each with its own secrets, kind and livemode policy.
//!
//! A named endpoint's settings live in variables whose names are built from its name
//! (`STRIPE_ENDPOINT_<NAME>_SECRET`), so the name's alphabet is checked before any variable is
//! read: lower-case letters, digits and `-`, which map one to one onto upper-case variable
//! names (`-` → `_`).

use std::fmt;

use super::secrets::WebhookSecret;

/// An endpoint's name: `default`, or one of `STRIPE_ENDPOINTS`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointName(String);

impl EndpointName {
    pub const DEFAULT: &'static str = "default";
    /// Long enough for any sensible name, short enough for a URL segment and a variable name.
    pub const MAX_LEN: usize = 64;

    /// The default endpoint's name (served at `/webhooks/stripe`).
    pub fn default_endpoint() -> Self {
        Self(Self::DEFAULT.to_owned())
    }

    /// A name from `STRIPE_ENDPOINTS`: lower-case letters, digits, `-`; not `default`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(format!(
                "endpoint names are 1 to {} characters long",
                Self::MAX_LEN
            ));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!(
                "`{raw}` is not a valid endpoint name (lower-case letters, digits and `-` only)"
            ));
        }
        if raw == Self::DEFAULT {
            return Err(
                "`default` is the endpoint of STRIPE_WEBHOOK_SECRET at /webhooks/stripe; name \
                 the others differently"
                    .into(),
            );
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_default(&self) -> bool {
        self.0 == Self::DEFAULT
    }

    /// The name of one of this endpoint's variables: `STRIPE_ENDPOINT_<NAME>_<suffix>`.
    pub fn var(&self, suffix: &str) -> String {
        format!(
            "STRIPE_ENDPOINT_{}_{suffix}",
            self.0.to_ascii_uppercase().replace('-', "_")
        )
    }
}

impl fmt::Display for EndpointName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whose events an endpoint receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EndpointKind {
    /// Events of the platform account (no `account` field).
    Account,
    /// Events of connected accounts (they carry `account`).
    Connect,
}

/// Which events an endpoint takes by their `livemode`; the others are stored as `ignored`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LivemodePolicy {
    Any,
    Live,
    Test,
}

impl LivemodePolicy {
    pub fn accepts(self, livemode: bool) -> bool {
        match self {
            Self::Any => true,
            Self::Live => livemode,
            Self::Test => !livemode,
        }
    }
}

/// One webhook endpoint, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    pub name: EndpointName,
    /// Its signing secrets; several while rotating. Never empty.
    pub secrets: Vec<WebhookSecret>,
    pub kind: EndpointKind,
    pub livemode: LivemodePolicy,
}

/// What an endpoint makes of a verified event, by its kind and livemode policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointVerdict {
    /// Store it to be applied.
    Apply,
    /// Store it as `ignored` (acknowledged, so Stripe does not disable the endpoint), with
    /// this reason.
    IgnoreLivemode(&'static str),
}

/// An event of a connected account on an `account` endpoint, or a platform event on a
/// `connect` endpoint: the endpoint is configured against another Stripe endpoint's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WrongEndpointKind {
    #[error("the event belongs to a connected account (it has `account`), but this endpoint's kind is `account`")]
    ConnectedEventOnAccountEndpoint,
    #[error("the event belongs to the platform account (it has no `account`), but this endpoint's kind is `connect`")]
    PlatformEventOnConnectEndpoint,
}

impl EndpointConfig {
    /// The rules of API.md section 4, in their order: the kind first (an event of the wrong
    /// account is refused), then the livemode (an event of the wrong mode is ignored).
    /// `account` is the event's `account` (its `context` for a thin event).
    pub fn verdict(
        &self,
        account: Option<&str>,
        livemode: bool,
    ) -> Result<EndpointVerdict, WrongEndpointKind> {
        match (self.kind, account.is_some()) {
            (EndpointKind::Account, true) => {
                return Err(WrongEndpointKind::ConnectedEventOnAccountEndpoint)
            }
            (EndpointKind::Connect, false) => {
                return Err(WrongEndpointKind::PlatformEventOnConnectEndpoint)
            }
            _ => {}
        }
        if self.livemode.accepts(livemode) {
            return Ok(EndpointVerdict::Apply);
        }
        Ok(EndpointVerdict::IgnoreLivemode(if livemode {
            "livemode: a live-mode event on an endpoint that takes test-mode events only"
        } else {
            "livemode: a test-mode event on an endpoint that takes live-mode events only"
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_onto_variable_names() {
        let name = EndpointName::parse("eu-connect-2").expect("valid");
        assert_eq!(name.var("SECRET"), "STRIPE_ENDPOINT_EU_CONNECT_2_SECRET");
        assert!(!name.is_default());
        assert!(EndpointName::default_endpoint().is_default());
    }

    #[test]
    fn bad_names_are_refused() {
        for raw in ["", "EU", "eu_2", "eu 2", "default", "é", &"a".repeat(65)] {
            assert!(EndpointName::parse(raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn the_kind_rule_comes_before_the_livemode_rule() {
        let endpoint = |kind, livemode| EndpointConfig {
            name: EndpointName::default_endpoint(),
            secrets: Vec::new(),
            kind,
            livemode,
        };
        let live_connect = endpoint(EndpointKind::Connect, LivemodePolicy::Live);
        assert_eq!(
            live_connect.verdict(None, false),
            Err(WrongEndpointKind::PlatformEventOnConnectEndpoint)
        );
        assert_eq!(
            live_connect.verdict(Some("acct_1"), true),
            Ok(EndpointVerdict::Apply)
        );
        assert!(matches!(
            live_connect.verdict(Some("acct_1"), false),
            Ok(EndpointVerdict::IgnoreLivemode(_))
        ));
        let account = endpoint(EndpointKind::Account, LivemodePolicy::Any);
        assert_eq!(
            account.verdict(Some("acct_1"), true),
            Err(WrongEndpointKind::ConnectedEventOnAccountEndpoint)
        );
        assert_eq!(account.verdict(None, false), Ok(EndpointVerdict::Apply));
    }

    #[test]
    fn livemode_policies() {
        assert!(LivemodePolicy::Any.accepts(true) && LivemodePolicy::Any.accepts(false));
        assert!(LivemodePolicy::Live.accepts(true) && !LivemodePolicy::Live.accepts(false));
        assert!(LivemodePolicy::Test.accepts(false) && !LivemodePolicy::Test.accepts(true));
    }
}
