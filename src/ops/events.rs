//! Events as operators see them: pages of the inbox, one event with its payload, and a retry
//! of one that failed or died.

use serde::Serialize;
use serde_json::value::RawValue;

use super::{page_limit, parse_word, OpsError, Page};
use crate::store::events::{self, EventStatus, WebhookEvent};
use crate::store::listing::{self, EventFilter, EventSummaryRow, TypeFilter};
use crate::store::Conn;

/// An event in a list (`GET /admin/v1/events`, `payhook events list`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventSummary {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub status: EventStatus,
    pub attempts: i32,
    /// Stripe's `created` (unix seconds).
    pub created: i64,
    pub received_at: i64,
    pub last_error: Option<String>,
    pub object_id: Option<String>,
    pub livemode: bool,
    pub account: Option<String>,
    pub api_version: Option<String>,
    pub processed_at: Option<i64>,
    /// The endpoint it came through (`default` for `/webhooks/stripe`).
    pub endpoint: String,
}

impl From<EventSummaryRow> for EventSummary {
    fn from(row: EventSummaryRow) -> Self {
        Self {
            id: row.id,
            event_type: row.event_type,
            status: row.status,
            attempts: row.attempts,
            created: row.created,
            received_at: row.received_at,
            last_error: row.last_error,
            object_id: row.object_id,
            livemode: row.livemode,
            account: row.account,
            api_version: row.api_version,
            processed_at: row.processed_at,
            endpoint: row.endpoint,
        }
    }
}

impl From<&WebhookEvent> for EventSummary {
    fn from(row: &WebhookEvent) -> Self {
        Self {
            id: row.id.clone(),
            event_type: row.event_type.clone(),
            status: row.status,
            attempts: row.attempts,
            created: row.created,
            received_at: row.received_at,
            last_error: row.last_error.clone(),
            object_id: row.object_id.clone(),
            livemode: row.livemode,
            account: row.account.clone(),
            api_version: row.api_version.clone(),
            processed_at: row.processed_at,
            endpoint: row.endpoint.clone(),
        }
    }
}

/// One event with its payload: the JSON exactly as received (embedded, not re-encoded).
#[derive(Debug, Clone, Serialize)]
pub struct EventDetail {
    #[serde(flatten)]
    pub summary: EventSummary,
    pub payload: Box<RawValue>,
}

/// The filters and page of `GET /admin/v1/events` (and `payhook events list`), as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    pub status: Option<String>,
    pub event_type: Option<String>,
    pub object_id: Option<String>,
    pub endpoint: Option<String>,
    pub limit: Option<i64>,
    pub starting_after: Option<String>,
}

const STATUSES: &[&str] = &["pending", "processed", "ignored", "failed", "dead"];

/// Events matching `query`, newest `created` first.
pub fn list(conn: &mut Conn, query: &EventQuery) -> Result<Page<EventSummary>, OpsError> {
    let limit = page_limit(query.limit)?;
    let filter = EventFilter {
        status: match &query.status {
            Some(s) => Some(parse_word("status", s, STATUSES)?),
            None => None,
        },
        event_type: query.event_type.as_deref().map(TypeFilter::parse),
        object_id: query.object_id.clone(),
        endpoint: query.endpoint.clone(),
    };
    let after = match &query.starting_after {
        None => None,
        Some(id) => {
            let event = events::find_event(conn, id)?.ok_or_else(|| {
                super::InvalidRequest::new("starting_after", format!("no such event: {id}"))
            })?;
            Some((event.created, event.id))
        }
    };
    let rows = listing::list_events(
        conn,
        &filter,
        after.as_ref().map(|(c, id)| (*c, id.as_str())),
        limit + 1,
    )?;
    let page = Page::from_rows(rows, limit);
    Ok(Page {
        data: page.data.into_iter().map(EventSummary::from).collect(),
        has_more: page.has_more,
    })
}

/// The event `id` with its payload.
pub fn show(conn: &mut Conn, id: &str) -> Result<EventDetail, OpsError> {
    let event = events::find_event(conn, id)?
        .ok_or_else(|| OpsError::NotFound(format!("no such event: {id}")))?;
    Ok(detail(&event))
}

fn detail(event: &WebhookEvent) -> EventDetail {
    // Stored payloads are the JSON that was verified or listed; should one not parse, it is
    // shown as a JSON string rather than not at all.
    let payload = RawValue::from_string(event.payload.clone()).unwrap_or_else(|_| {
        let quoted = serde_json::to_string(&event.payload).unwrap_or_else(|_| "null".into());
        RawValue::from_string(quoted)
            .unwrap_or_else(|_| RawValue::from_string("null".to_owned()).expect("null is JSON"))
    });
    EventDetail {
        summary: EventSummary::from(event),
        payload,
    }
}

/// Puts a failed or dead event back in the queue with a fresh count of tries; any other
/// status is a conflict (a processed event is never applied twice).
pub fn retry(conn: &mut Conn, id: &str) -> Result<EventSummary, OpsError> {
    conn.transaction(|conn| {
        let event = events::find_event(conn, id)?
            .ok_or_else(|| OpsError::NotFound(format!("no such event: {id}")))?;
        if !matches!(event.status, EventStatus::Failed | EventStatus::Dead) {
            return Err(OpsError::conflict(
                "not_retryable",
                format!(
                    "event {id} is {}; only failed and dead events are retried",
                    event.status
                ),
            ));
        }
        events::requeue_events(
            conn,
            &[EventStatus::Failed, EventStatus::Dead],
            Some(&[id.to_owned()]),
        )?;
        let event = events::find_event(conn, id)?
            .ok_or_else(|| OpsError::NotFound(format!("no such event: {id}")))?;
        Ok(EventSummary::from(&event))
    })
}
