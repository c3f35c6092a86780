//! Thin (v2) events in the processor: they carry no snapshot, so applying one means fetching
//! it, which is never done inside the processor's transaction. An event about an object
//! payhook handles queues one `thin_event` outbox item (performed by
//! [`crate::outbox::thin_event`]: fetch the event, then the object, and apply the object as
//! observed state through [`super::fetched`], the state machine snapshot events go through);
//! any other (a `v2.core.event_destination.ping`, a type about objects payhook does not
//! keep) is stored for the record and `ignored`.

use super::Applied;
use crate::outbox::thin_event;
use crate::store::events::WebhookEvent;
use crate::store::{Conn, StoreResult};
use crate::stripe::objects::object_path;
use crate::stripe::thin::parse_thin_event;

/// Applies `event` if it is a thin event; `None` when it is not one.
pub fn apply_thin_event(
    conn: &mut Conn,
    event: &WebhookEvent,
    now: i64,
) -> StoreResult<Option<Applied>> {
    // Snapshot events carry their `api_version`; thin events have none. Checked first so
    // an unhandled snapshot type costs no second parse of its payload.
    if event.api_version.is_some() {
        return Ok(None);
    }
    let Some(thin) = parse_thin_event(event.payload.as_bytes()) else {
        return Ok(None);
    };
    let handled = thin
        .related_object
        .as_ref()
        .filter(|related| object_path(&related.id).is_some());
    if handled.is_none() {
        return Ok(Some(Applied::Ignored));
    }
    thin_event::enqueue(conn, &thin, now)?;
    Ok(Some(Applied::Processed))
}
