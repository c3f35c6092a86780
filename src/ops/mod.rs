//! The operator's verbs, one implementation each, shared by the admin API (`/admin/v1`) and
//! the CLI (`payhook events …`, `reconcile`, `resync`): list, show and retry events; list and
//! retry outbox work; resync one Stripe object. Reconciliation itself is
//! [`crate::inbox::reconcile`] (it is a way in); the HTTP and CLI layers only parse their
//! arguments into the types here and print what comes back.
//!
//! - [`events`]: the inbox, newest first, filtered; retry of failed and dead events.
//! - [`outbox`]: actions (Stripe side effects) and notifications (the `notify` kind).
//! - [`resync`]: fetch a `pi_`/`seti_`/`pm_` from Stripe and apply it as observed state.

pub mod events;
pub mod outbox;
pub mod resync;

use serde::Serialize;

/// A request an operator got wrong: which field, and why (the API's `422 invalid_request`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidRequest {
    pub field: &'static str,
    pub message: String,
}

impl InvalidRequest {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// A page of a list, as Stripe's lists are: newest first, `has_more` when a next page exists.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub has_more: bool,
}

impl<T> Page<T> {
    /// `rows` fetched with one more than `limit`: the extra row only says a next page exists.
    fn from_rows(mut rows: Vec<T>, limit: i64) -> Self {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let has_more = rows.len() > limit;
        rows.truncate(limit);
        Self {
            data: rows,
            has_more,
        }
    }
}

/// `limit` as the contract has it: 1 to 100, default 20.
pub fn page_limit(limit: Option<i64>) -> Result<i64, InvalidRequest> {
    match limit {
        None => Ok(20),
        Some(n) if (1..=100).contains(&n) => Ok(n),
        Some(n) => Err(InvalidRequest::new(
            "limit",
            format!("{n} is out of range: 1 to 100"),
        )),
    }
}

/// A stored-state word given by an operator (`status=failed`), as its enum.
fn parse_word<T: std::str::FromStr>(
    field: &'static str,
    text: &str,
    allowed: &[&str],
) -> Result<T, InvalidRequest> {
    text.parse().map_err(|_| {
        InvalidRequest::new(
            field,
            format!("`{text}` is not one of {}", allowed.join(", ")),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_one_to_a_hundred_default_twenty() {
        assert_eq!(page_limit(None), Ok(20));
        assert_eq!(page_limit(Some(1)), Ok(1));
        assert_eq!(page_limit(Some(100)), Ok(100));
        assert_eq!(page_limit(Some(0)).unwrap_err().field, "limit");
        assert!(page_limit(Some(101)).is_err());
    }

    #[test]
    fn a_page_drops_the_row_that_only_says_more_exist() {
        let page = Page::from_rows(vec![1, 2, 3], 2);
        assert_eq!(page.data, vec![1, 2]);
        assert!(page.has_more);
        assert!(!Page::from_rows(vec![1, 2], 2).has_more);
    }
}

/// Why an operator's verb did not do what was asked. Each maps to one answer of the admin
/// API (see `crate::http::admin`) and one exit of the CLI.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    #[error("{0}")]
    NotFound(String),
    /// The request clashes with the object's state; `code` names the clash.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("the database is unavailable: {0}")]
    Store(#[from] crate::store::StoreError),
    /// Stripe answered with an error, or not at all.
    #[error("Stripe: {0}")]
    Stripe(#[from] crate::stripe::client::ApiError),
    /// The verb calls Stripe and no key is configured.
    #[error("STRIPE_SECRET_KEY is not set: payhook cannot call Stripe")]
    NoStripeKey,
}

impl OpsError {
    fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
        }
    }
}

impl From<diesel::result::Error> for OpsError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Store(e.into())
    }
}

impl From<crate::inbox::reconcile::ReconcileError> for OpsError {
    fn from(e: crate::inbox::reconcile::ReconcileError) -> Self {
        use crate::inbox::reconcile::ReconcileError as R;
        match e {
            R::Busy | R::LeaseLost => Self::conflict("reconcile_in_progress", e.to_string()),
            R::Stripe(e) => Self::Stripe(e),
            R::BadPage(message) => Self::Stripe(crate::stripe::client::ApiError::Permanent {
                status: None,
                code: None,
                message: format!("the event list did not parse: {message}"),
            }),
            R::Store(e) => Self::Store(e),
            R::Admit(e) => Self::Store(crate::store::StoreError::Task(e.to_string())),
        }
    }
}

/// The database counts `/metrics` mirrors, read at scrape time.
pub fn database_gauges(
    conn: &mut crate::store::Conn,
) -> crate::store::StoreResult<crate::metrics::DatabaseGauges> {
    use crate::store::{events, listing};
    let mut gauges = crate::metrics::DatabaseGauges {
        events_pending: events::count_pending_events(conn)?,
        ..Default::default()
    };
    for (kind, status, n) in listing::count_items_by_kind_and_status(conn)? {
        if outbox::Group::Notifications.kinds().contains(&kind) {
            gauges.notifications.push((status, n));
        } else {
            gauges.actions.push((status, n));
        }
    }
    Ok(gauges)
}
