//! Outbox work as operators see it, in two groups: actions (Stripe side effects: every kind
//! but `notify`) and notifications (the `notify` kind). The groups are defined by kind name,
//! not by a list of known kinds, so a kind added later lands in the right one by itself.

use serde::Serialize;

use super::{page_limit, parse_word, InvalidRequest, OpsError, Page};
use crate::store::listing::{self, KindSet};
use crate::store::outbox::{self, OutboxRow, OutboxStatus};
use crate::store::Conn;

/// The outbox kind of notifications to the app (API.md section 2).
pub const NOTIFY_KIND: &str = "notify";

/// Which outbox work a list or retry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// `/admin/v1/actions`: Stripe side effects.
    Actions,
    /// `/admin/v1/notifications`.
    Notifications,
}

impl Group {
    pub fn kinds(self) -> KindSet<'static> {
        match self {
            Self::Actions => KindSet::IsNot(NOTIFY_KIND),
            Self::Notifications => KindSet::Is(NOTIFY_KIND),
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Self::Actions => "action",
            Self::Notifications => "notification",
        }
    }
}

/// An outbox item as operators see it (the kind's data stays inside).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemSummary {
    pub id: i64,
    pub kind: String,
    pub status: OutboxStatus,
    /// Where the item resumes (or ended).
    pub step: String,
    pub attempts: i32,
    pub checkout_id: Option<String>,
    pub idempotency_key: String,
    pub last_error_code: Option<String>,
    pub last_error: Option<String>,
    /// When the next try is due (unix seconds); pending items only.
    pub next_attempt_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<OutboxRow> for ItemSummary {
    fn from(row: OutboxRow) -> Self {
        Self {
            next_attempt_at: (row.status == OutboxStatus::Pending)
                .then_some(row.next_attempt_at_ms.max(row.locked_until_ms) / 1000),
            id: row.id,
            kind: row.kind,
            status: row.status,
            step: row.step,
            attempts: row.attempts,
            checkout_id: row.checkout_id,
            idempotency_key: row.idempotency_key,
            last_error_code: row.last_error_code,
            last_error: row.last_error,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemQuery {
    pub status: Option<String>,
    pub limit: Option<i64>,
    pub starting_after: Option<String>,
}

/// Items of `group` matching `query`, newest first.
pub fn list(
    conn: &mut Conn,
    group: Group,
    query: &ItemQuery,
) -> Result<Page<ItemSummary>, OpsError> {
    let limit = page_limit(query.limit)?;
    let status = match &query.status {
        Some(s) => Some(parse_word("status", s, &["pending", "done", "failed"])?),
        None => None,
    };
    let before = match &query.starting_after {
        None => None,
        Some(id) => Some(id.parse::<i64>().map_err(|_| {
            InvalidRequest::new(
                "starting_after",
                format!("`{id}` is not an {} id", group.noun()),
            )
        })?),
    };
    let rows = listing::list_items(conn, group.kinds(), status, before, limit + 1)?;
    let page = Page::from_rows(rows, limit);
    Ok(Page {
        data: page.data.into_iter().map(ItemSummary::from).collect(),
        has_more: page.has_more,
    })
}

/// Puts a failed item back in the queue, resuming at its step with a fresh count of tries
/// and the same idempotency keys; any other status is a conflict.
pub fn retry(conn: &mut Conn, group: Group, id: &str) -> Result<ItemSummary, OpsError> {
    let noun = group.noun();
    let not_found = || OpsError::NotFound(format!("no such {noun}: {id}"));
    let id: i64 = id.parse().map_err(|_| not_found())?;
    conn.transaction(|conn| {
        let item = outbox::find_item(conn, id)?
            .filter(|item| group.kinds().contains(&item.kind))
            .ok_or_else(not_found)?;
        if !listing::requeue_failed_item(conn, id, group.kinds())? {
            return Err(OpsError::conflict(
                "not_retryable",
                format!(
                    "{noun} {id} is {}; only failed ones are retried",
                    item.status
                ),
            ));
        }
        let item = outbox::find_item(conn, id)?.ok_or_else(not_found)?;
        Ok(ItemSummary::from(item))
    })
}
