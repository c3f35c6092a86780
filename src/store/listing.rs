//! What operators read and requeue (admin API, CLI, `/metrics`): pages of events and outbox
//! items, newest first, and the counts the metrics mirror.
//!
//! Pages use keyset pagination (`starting_after` names the last row of the previous page),
//! as Stripe's lists do: a page costs the same however deep it is, and rows added meanwhile
//! never shift a page. Events are ordered by `(created, id)` descending, which the
//! `webhook_events_created` index serves; outbox items by id descending (the primary key).

use diesel::prelude::*;

use super::events::EventStatus;
use super::outbox::{OutboxRow, OutboxStatus};
use super::schema::outbox::dsl as odsl;
use super::schema::webhook_events::dsl;
use super::{Conn, StoreResult};
use crate::with_conn;

/// An event without its payload, as lists show it.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = super::schema::webhook_events)]
pub struct EventSummaryRow {
    pub id: String,
    pub event_type: String,
    pub api_version: Option<String>,
    pub created: i64,
    pub livemode: bool,
    pub account: Option<String>,
    pub object_id: Option<String>,
    pub received_at: i64,
    pub status: EventStatus,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub processed_at: Option<i64>,
    pub endpoint: String,
}

/// Which event types a list shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeFilter {
    Exact(String),
    /// `payment_intent.*`: every type starting with the prefix (`payment_intent.`).
    Prefix(String),
}

impl TypeFilter {
    /// As Stripe's `type` parameter: a trailing `*` matches any suffix.
    pub fn parse(text: &str) -> Self {
        match text.strip_suffix('*') {
            Some(prefix) => Self::Prefix(prefix.to_owned()),
            None => Self::Exact(text.to_owned()),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub status: Option<EventStatus>,
    pub event_type: Option<TypeFilter>,
    pub object_id: Option<String>,
    /// The endpoint the events came through (`default` for `/webhooks/stripe`).
    pub endpoint: Option<String>,
}

/// `LIKE` pattern matching `prefix` followed by anything, with `\` as the escape character.
fn like_prefix(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Up to `limit` events matching `filter`, newest `created` first (ties: higher id first),
/// after the event at `(created, id)` when given.
pub fn list_events(
    conn: &mut Conn,
    filter: &EventFilter,
    after: Option<(i64, &str)>,
    limit: i64,
) -> StoreResult<Vec<EventSummaryRow>> {
    macro_rules! query {
        ($db:ty) => {{
            let mut query = dsl::webhook_events
                .select(EventSummaryRow::as_select())
                .order((dsl::created.desc(), dsl::id.desc()))
                .limit(limit)
                .into_boxed::<$db>();
            if let Some(status) = filter.status {
                query = query.filter(dsl::status.eq(status));
            }
            match &filter.event_type {
                Some(TypeFilter::Exact(t)) => query = query.filter(dsl::event_type.eq(t.clone())),
                Some(TypeFilter::Prefix(p)) => {
                    query = query.filter(dsl::event_type.like(like_prefix(p)).escape('\\'))
                }
                None => {}
            }
            if let Some(object_id) = &filter.object_id {
                query = query.filter(dsl::object_id.eq(object_id.clone()));
            }
            if let Some(endpoint) = &filter.endpoint {
                query = query.filter(dsl::endpoint.eq(endpoint.clone()));
            }
            if let Some((created, id)) = after {
                query = query.filter(
                    dsl::created
                        .lt(created)
                        .or(dsl::created.eq(created).and(dsl::id.lt(id.to_owned()))),
                );
            }
            query
        }};
    }
    Ok(match conn {
        Conn::Sqlite(c) => query!(diesel::sqlite::Sqlite).load(&mut **c)?,
        Conn::Postgres(c) => query!(diesel::pg::Pg).load(&mut **c)?,
    })
}

/// Which outbox kinds a list covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindSet<'a> {
    Is(&'a str),
    IsNot(&'a str),
}

impl KindSet<'_> {
    pub fn contains(self, kind: &str) -> bool {
        match self {
            Self::Is(k) => kind == k,
            Self::IsNot(k) => kind != k,
        }
    }
}

/// Up to `limit` outbox items of `kinds` (in `status`, when given), newest first, with ids
/// below `before_id` when given.
pub fn list_items(
    conn: &mut Conn,
    kinds: KindSet<'_>,
    status: Option<OutboxStatus>,
    before_id: Option<i64>,
    limit: i64,
) -> StoreResult<Vec<OutboxRow>> {
    macro_rules! query {
        ($db:ty) => {{
            let mut query = odsl::outbox
                .select(OutboxRow::as_select())
                .order(odsl::id.desc())
                .limit(limit)
                .into_boxed::<$db>();
            query = match kinds {
                KindSet::Is(k) => query.filter(odsl::kind.eq(k.to_owned())),
                KindSet::IsNot(k) => query.filter(odsl::kind.ne(k.to_owned())),
            };
            if let Some(status) = status {
                query = query.filter(odsl::status.eq(status));
            }
            if let Some(id) = before_id {
                query = query.filter(odsl::id.lt(id));
            }
            query
        }};
    }
    Ok(match conn {
        Conn::Sqlite(c) => query!(diesel::sqlite::Sqlite).load(&mut **c)?,
        Conn::Postgres(c) => query!(diesel::pg::Pg).load(&mut **c)?,
    })
}

/// Puts the failed item `id` (of `kinds`) back in the queue with a fresh count of tries,
/// resuming at the step it stopped at; returns whether it was failed (and so requeued).
pub fn requeue_failed_item(conn: &mut Conn, id: i64, kinds: KindSet<'_>) -> StoreResult<bool> {
    let Some(item) = super::outbox::find_item(conn, id)? else {
        return Ok(false);
    };
    if !kinds.contains(&item.kind) {
        return Ok(false);
    }
    let n = with_conn!(conn, c => diesel::update(
            odsl::outbox.find(id).filter(odsl::status.eq(OutboxStatus::Failed)),
        )
        .set((
            odsl::status.eq(OutboxStatus::Pending),
            odsl::attempts.eq(0),
            odsl::next_attempt_at_ms.eq(0),
            odsl::locked_until_ms.eq(0),
            odsl::locked_by.eq(None::<String>),
        ))
        .execute(c))?;
    Ok(n == 1)
}

/// How many outbox items there are of each kind and status.
pub fn count_items_by_kind_and_status(
    conn: &mut Conn,
) -> StoreResult<Vec<(String, OutboxStatus, i64)>> {
    Ok(with_conn!(conn, c => odsl::outbox
        .group_by((odsl::kind, odsl::status))
        .select((odsl::kind, odsl::status, diesel::dsl::count_star()))
        .load(c))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_filters_follow_stripes_wildcard_and_escape_like() {
        assert_eq!(
            TypeFilter::parse("payment_intent.*"),
            TypeFilter::Prefix("payment_intent.".into())
        );
        assert_eq!(
            TypeFilter::parse("charge.succeeded"),
            TypeFilter::Exact("charge.succeeded".into())
        );
        assert_eq!(like_prefix("a_b%c\\"), "a\\_b\\%c\\\\%");
    }
}
