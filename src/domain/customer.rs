//! Customer identity: which local customer an event or a request belongs to (pure).
//!
//! A local customer links the app's user (`customer_ref`, from intent metadata or the app
//! API) to its Stripe customer (`cus_…`). Events name either, both or neither (then perhaps
//! an email); the database says which local customers those names match; [`identify`]
//! decides. The callers (applying an event, saving a card, the app API) look the names up,
//! call it, and carry out the decision.

/// A local customer, as far as identity goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub id: i64,
    pub customer_ref: Option<String>,
    pub stripe_customer_id: Option<String>,
}

/// What an event or a request says about who the customer is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Names<'a> {
    /// The connected account the customer belongs to (`None`: the platform). A customer_ref
    /// or an email names a customer within its account only; [`identify`] decides among the
    /// customers the caller found in that account.
    pub account: Option<&'a str>,
    pub stripe_customer_id: Option<&'a str>,
    pub customer_ref: Option<&'a str>,
    pub email: Option<&'a str>,
}

/// The local customers those names match (looked up by the caller).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    pub by_stripe_id: Option<Known>,
    pub by_ref: Option<Known>,
    pub by_email: Option<Known>,
}

/// Whether an email alone may create a customer. Events name emails of people who may never
/// have been the app's users, so they only find; saving a card whose intent named nobody
/// finds or creates by the card's billing email.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByEmail {
    FindOnly,
    FindOrCreate,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// This customer; record the ids it lacks.
    Existing {
        id: i64,
        link_ref: Option<String>,
        link_stripe_id: Option<String>,
    },
    /// No local customer matches: create one with these.
    New {
        customer_ref: Option<String>,
        stripe_customer_id: Option<String>,
        email: Option<String>,
        /// The named `customer_ref` already belongs to this customer, linked to another Stripe
        /// customer: the new one is recorded apart, without the ref (worth a warning).
        ref_taken_by: Option<i64>,
    },
    /// Nothing (usable) names a customer.
    Unknown,
}

/// Decides which local customer `names` refer to, given what the database `found`.
///
/// The Stripe customer id wins over the ref, the ref over the email. Ids are linked when an
/// event names both and the customer lacks one, never overwritten: a ref already held by
/// another customer stays where it is.
pub fn identify(names: &Names<'_>, found: &Found, by_email: ByEmail) -> Identity {
    let owned = |s: Option<&str>| s.map(str::to_owned);
    if let Some(stripe_id) = names.stripe_customer_id {
        if let Some(customer) = &found.by_stripe_id {
            let link_ref = match (&customer.customer_ref, names.customer_ref) {
                (None, Some(r)) if found.by_ref.is_none() => Some(r.to_owned()),
                _ => None,
            };
            return Identity::Existing {
                id: customer.id,
                link_ref,
                link_stripe_id: None,
            };
        }
        if let (Some(_), Some(by_ref)) = (names.customer_ref, &found.by_ref) {
            if by_ref.stripe_customer_id.is_none() {
                return Identity::Existing {
                    id: by_ref.id,
                    link_ref: None,
                    link_stripe_id: Some(stripe_id.to_owned()),
                };
            }
            return Identity::New {
                customer_ref: None,
                stripe_customer_id: Some(stripe_id.to_owned()),
                email: owned(names.email),
                ref_taken_by: Some(by_ref.id),
            };
        }
        return Identity::New {
            customer_ref: owned(names.customer_ref),
            stripe_customer_id: Some(stripe_id.to_owned()),
            email: owned(names.email),
            ref_taken_by: None,
        };
    }
    if let Some(customer_ref) = names.customer_ref {
        return match &found.by_ref {
            Some(customer) => Identity::Existing {
                id: customer.id,
                link_ref: None,
                link_stripe_id: None,
            },
            None => Identity::New {
                customer_ref: Some(customer_ref.to_owned()),
                stripe_customer_id: None,
                email: owned(names.email),
                ref_taken_by: None,
            },
        };
    }
    match (names.email, &found.by_email, by_email) {
        (Some(_), Some(customer), _) => Identity::Existing {
            id: customer.id,
            link_ref: None,
            link_stripe_id: None,
        },
        (Some(email), None, ByEmail::FindOrCreate) => Identity::New {
            customer_ref: None,
            stripe_customer_id: None,
            email: Some(email.to_owned()),
            ref_taken_by: None,
        },
        _ => Identity::Unknown,
    }
}

/// What to do with a Stripe customer just created for a local one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewStripeCustomer {
    /// Record it on the local customer.
    Link,
    /// The local customer already has exactly this one: nothing to do.
    AlreadyLinked,
    /// The local customer has another one (linked meanwhile, say by an event): keep that; the
    /// new one stays unused.
    KeepExisting(String),
    /// Another local customer holds this Stripe id: two local customers would share one
    /// Stripe customer, which retrying cannot fix.
    HeldBy(i64),
}

/// Decides how to record `stripe_id`, created for `local`; `holder` is the local customer
/// that already has that Stripe id, if any.
pub fn link_new_stripe_customer(
    local: &Known,
    stripe_id: &str,
    holder: Option<&Known>,
) -> NewStripeCustomer {
    match local.stripe_customer_id.as_deref() {
        Some(existing) if existing == stripe_id => NewStripeCustomer::AlreadyLinked,
        Some(existing) => NewStripeCustomer::KeepExisting(existing.to_owned()),
        None => match holder {
            Some(other) if other.id != local.id => NewStripeCustomer::HeldBy(other.id),
            _ => NewStripeCustomer::Link,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(id: i64, customer_ref: Option<&str>, stripe: Option<&str>) -> Known {
        Known {
            id,
            customer_ref: customer_ref.map(str::to_owned),
            stripe_customer_id: stripe.map(str::to_owned),
        }
    }

    fn names<'a>(stripe: Option<&'a str>, r: Option<&'a str>, email: Option<&'a str>) -> Names<'a> {
        Names {
            account: None,
            stripe_customer_id: stripe,
            customer_ref: r,
            email,
        }
    }

    #[test]
    fn a_known_stripe_id_finds_its_customer_and_links_a_free_ref() {
        let found = Found {
            by_stripe_id: Some(known(1, None, Some("cus_1"))),
            ..Found::default()
        };
        assert_eq!(
            identify(
                &names(Some("cus_1"), Some("u1"), None),
                &found,
                ByEmail::FindOnly
            ),
            Identity::Existing {
                id: 1,
                link_ref: Some("u1".into()),
                link_stripe_id: None
            }
        );
    }

    #[test]
    fn a_ref_held_elsewhere_is_never_moved() {
        let found = Found {
            by_stripe_id: Some(known(1, None, Some("cus_1"))),
            by_ref: Some(known(2, Some("u1"), None)),
            ..Found::default()
        };
        assert_eq!(
            identify(
                &names(Some("cus_1"), Some("u1"), None),
                &found,
                ByEmail::FindOnly
            ),
            Identity::Existing {
                id: 1,
                link_ref: None,
                link_stripe_id: None
            }
        );
    }

    #[test]
    fn a_new_stripe_id_joins_the_refs_customer_unless_it_has_another() {
        let free = Found {
            by_ref: Some(known(2, Some("u1"), None)),
            ..Found::default()
        };
        assert_eq!(
            identify(
                &names(Some("cus_9"), Some("u1"), None),
                &free,
                ByEmail::FindOnly
            ),
            Identity::Existing {
                id: 2,
                link_ref: None,
                link_stripe_id: Some("cus_9".into())
            }
        );
        let taken = Found {
            by_ref: Some(known(2, Some("u1"), Some("cus_1"))),
            ..Found::default()
        };
        assert_eq!(
            identify(
                &names(Some("cus_9"), Some("u1"), Some("a@b")),
                &taken,
                ByEmail::FindOnly
            ),
            Identity::New {
                customer_ref: None,
                stripe_customer_id: Some("cus_9".into()),
                email: Some("a@b".into()),
                ref_taken_by: Some(2)
            }
        );
    }

    #[test]
    fn unknown_names_create_a_customer_but_an_email_only_when_allowed() {
        assert!(matches!(
            identify(
                &names(Some("cus_9"), None, None),
                &Found::default(),
                ByEmail::FindOnly
            ),
            Identity::New {
                stripe_customer_id: Some(_),
                customer_ref: None,
                ..
            }
        ));
        assert!(matches!(
            identify(
                &names(None, Some("u1"), None),
                &Found::default(),
                ByEmail::FindOnly
            ),
            Identity::New {
                customer_ref: Some(_),
                stripe_customer_id: None,
                ..
            }
        ));
        let email_only = names(None, None, Some("a@b"));
        assert_eq!(
            identify(&email_only, &Found::default(), ByEmail::FindOnly),
            Identity::Unknown
        );
        assert!(matches!(
            identify(&email_only, &Found::default(), ByEmail::FindOrCreate),
            Identity::New { email: Some(_), .. }
        ));
        let by_email = Found {
            by_email: Some(known(3, None, None)),
            ..Found::default()
        };
        assert!(matches!(
            identify(&email_only, &by_email, ByEmail::FindOnly),
            Identity::Existing { id: 3, .. }
        ));
        assert_eq!(
            identify(&Names::default(), &Found::default(), ByEmail::FindOrCreate),
            Identity::Unknown
        );
    }

    #[test]
    fn a_ref_alone_finds_its_customer() {
        let found = Found {
            by_ref: Some(known(4, Some("u4"), Some("cus_4"))),
            ..Found::default()
        };
        assert_eq!(
            identify(
                &names(None, Some("u4"), Some("x@y")),
                &found,
                ByEmail::FindOnly
            ),
            Identity::Existing {
                id: 4,
                link_ref: None,
                link_stripe_id: None
            }
        );
    }

    #[test]
    fn a_created_stripe_customer_is_linked_once_and_never_shared() {
        let local = known(1, None, None);
        assert_eq!(
            link_new_stripe_customer(&local, "cus_1", None),
            NewStripeCustomer::Link
        );
        assert_eq!(
            link_new_stripe_customer(&local, "cus_1", Some(&known(2, None, Some("cus_1")))),
            NewStripeCustomer::HeldBy(2)
        );
        let linked = known(1, None, Some("cus_1"));
        assert_eq!(
            link_new_stripe_customer(&linked, "cus_1", Some(&linked)),
            NewStripeCustomer::AlreadyLinked
        );
        assert_eq!(
            link_new_stripe_customer(&linked, "cus_2", None),
            NewStripeCustomer::KeepExisting("cus_1".into())
        );
    }
}
