//! Where Stripe serves the objects payhook fetches to apply as observed state (resync, thin
//! events): a path built from the id's prefix, never a URL taken from a payload, so
//! payhook's key is only ever sent to the paths it means.

/// The path (`/v1/payment_intents/pi_…`) and operation name (for logs and metrics) of the
/// PaymentIntent, SetupIntent or PaymentMethod `stripe_id`; `None` for any other id, or one
/// with characters a Stripe id never has (it is spliced into a URL path).
pub fn object_path(stripe_id: &str) -> Option<(String, &'static str)> {
    let plain = !stripe_id.is_empty()
        && stripe_id.len() <= 255
        && stripe_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !plain {
        return None;
    }
    let (prefix, operation) = if stripe_id.starts_with("pi_") {
        ("/v1/payment_intents/", "retrieve_payment_intent")
    } else if stripe_id.starts_with("seti_") {
        ("/v1/setup_intents/", "retrieve_setup_intent")
    } else if stripe_id.starts_with("pm_") {
        ("/v1/payment_methods/", "retrieve_payment_method")
    } else {
        return None;
    };
    Some((format!("{prefix}{stripe_id}"), operation))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_intents_and_payment_methods_with_plain_ids_have_a_path() {
        assert_eq!(
            object_path("pi_123").unwrap().0,
            "/v1/payment_intents/pi_123"
        );
        assert_eq!(object_path("seti_1").unwrap().0, "/v1/setup_intents/seti_1");
        assert_eq!(object_path("pm_1").unwrap().0, "/v1/payment_methods/pm_1");
        for bad in [
            "cus_1",
            "pi_1/../../v1/customers",
            "pi_1?x=1",
            "",
            "ed_test_1",
        ] {
            assert!(object_path(bad).is_none(), "{bad}");
        }
    }
}
