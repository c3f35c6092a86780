//! Stripe identifiers as newtypes, checked at the boundary.
//!
//! Stripe's own ids carry a type prefix (`evt_`, `pi_`, …). Parsing checks the prefix and a
//! sane length/charset once, so the rest of the code can never mix up a customer id with a
//! payment-method id. The check is deliberately lenient about the part after the prefix:
//! real payloads from test fixtures contain ids such as `evt_000` or `seti_1MLn4...`, and
//! payhook must never reject a correctly signed event because an id looks unusual.

use std::fmt;

/// Longest id we accept; Stripe's are well under 100 characters.
const MAX_ID_LEN: usize = 255;

/// Why a string is not an id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {reason}")]
pub struct IdError {
    kind: &'static str,
    reason: &'static str,
}

fn check(kind: &'static str, prefixes: &[&str], raw: &str) -> Result<(), IdError> {
    if raw.len() > MAX_ID_LEN {
        return Err(IdError {
            kind,
            reason: "too long",
        });
    }
    // Printable ASCII only: ids end up in log lines and SQL text columns.
    if !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(IdError {
            kind,
            reason: "not printable ASCII",
        });
    }
    match prefixes.iter().find(|p| raw.starts_with(**p)) {
        Some(p) if raw.len() > p.len() => Ok(()),
        Some(_) => Err(IdError {
            kind,
            reason: "nothing after the prefix",
        }),
        None => Err(IdError {
            kind,
            reason: "wrong prefix",
        }),
    }
}

macro_rules! stripe_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, [$($prefix:literal),+]) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, IdError> {
                check($kind, &[$($prefix),+], raw)?;
                Ok(Self(raw.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

stripe_id!(
    /// `evt_…`: an Event.
    EventId, "event id", ["evt_"]
);
stripe_id!(
    /// `pi_…`: a PaymentIntent.
    PaymentIntentId, "payment intent id", ["pi_"]
);
stripe_id!(
    /// `seti_…`: a SetupIntent.
    SetupIntentId, "setup intent id", ["seti_"]
);
stripe_id!(
    /// `pm_…`, or the older `card_…`/`src_`/`ba_` objects Stripe still reports as payment methods.
    PaymentMethodId, "payment method id", ["pm_", "card_", "src_", "ba_"]
);
stripe_id!(
    /// `cus_…`: a Customer at Stripe.
    CustomerId, "customer id", ["cus_"]
);
stripe_id!(
    /// `acct_…`: a connected account (Connect), named by events' `account`, thin events'
    /// `context` and the `Stripe-Account` header.
    AccountId, "account id", ["acct_"]
);

/// The intent a checkout follows: the two kinds share one state machine.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IntentId {
    Payment(PaymentIntentId),
    Setup(SetupIntentId),
}

impl IntentId {
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        if raw.starts_with("seti_") {
            SetupIntentId::parse(raw).map(Self::Setup)
        } else {
            PaymentIntentId::parse(raw).map(Self::Payment)
        }
    }
    pub fn as_str(&self) -> &str {
        match self {
            Self::Payment(id) => id.as_str(),
            Self::Setup(id) => id.as_str(),
        }
    }
    pub fn kind(&self) -> crate::domain::checkout::CheckoutKind {
        match self {
            Self::Payment(_) => crate::domain::checkout::CheckoutKind::Payment,
            Self::Setup(_) => crate::domain::checkout::CheckoutKind::Setup,
        }
    }
}

impl fmt::Display for IntentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_their_prefix_and_reject_others() {
        assert!(EventId::parse("evt_1NG8Du2eZvKYlo2CUI79vXWy").is_ok());
        assert!(EventId::parse("evt_000").is_ok());
        assert!(EventId::parse("pi_123").is_err());
        assert!(EventId::parse("evt_").is_err());
        assert!(EventId::parse("evt_a b").is_err());
        assert!(EventId::parse(&format!("evt_{}", "a".repeat(300))).is_err());
    }

    #[test]
    fn legacy_card_objects_are_payment_methods() {
        assert!(PaymentMethodId::parse("card_1LVXJrH4tiDZlIUaDiJElAN9").is_ok());
        assert!(PaymentMethodId::parse("pm_1RWGX3Q8iJWBZFaM6l9fORzc").is_ok());
        assert!(PaymentMethodId::parse("cus_1").is_err());
    }

    #[test]
    fn intent_ids_tell_their_kind() {
        assert!(matches!(
            IntentId::parse("seti_1MLn4..."),
            Ok(IntentId::Setup(_))
        ));
        assert!(matches!(
            IntentId::parse("pi_000"),
            Ok(IntentId::Payment(_))
        ));
        assert!(IntentId::parse("ch_123").is_err());
    }
}
