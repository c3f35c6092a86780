//! `reconcile_cursors`: where each reconciliation scope has got to, and who is running it.
//!
//! A pass holds the scope's lease (`locked_until_ms`, `locked_by`) while it runs, taken by a
//! conditional `UPDATE` as the outbox's claims are, so it works the same on both backends:
//! of two instances starting a pass at once exactly one updates the row. The holder renews the
//! lease each time it stores the cursor; a crashed holder's lease simply runs out.

use diesel::prelude::*;

use super::schema::reconcile_cursors::{self, dsl};
use super::{Conn, StoreResult};
use crate::with_conn;

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = reconcile_cursors)]
pub struct CursorRow {
    pub scope: String,
    pub cursor_at: Option<i64>,
    pub locked_until_ms: i64,
    pub locked_by: Option<String>,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = reconcile_cursors, treat_none_as_default_value = false)]
struct NewCursor<'a> {
    scope: &'a str,
    cursor_at: Option<i64>,
    locked_until_ms: i64,
    locked_by: Option<&'a str>,
    updated_at: i64,
}

pub fn find_cursor(conn: &mut Conn, scope: &str) -> StoreResult<Option<CursorRow>> {
    Ok(with_conn!(conn, c => dsl::reconcile_cursors
        .find(scope)
        .select(CursorRow::as_select())
        .get_result(c)
        .optional())?)
}

/// Takes the lease of `scope` for `worker` until `until_ms`, unless another worker holds
/// it; returns the scope's row as it is now held, or `None` when the lease is taken.
pub fn take_lease(
    conn: &mut Conn,
    scope: &str,
    worker: &str,
    now_ms: i64,
    until_ms: i64,
) -> StoreResult<Option<CursorRow>> {
    let new = NewCursor {
        scope,
        cursor_at: None,
        locked_until_ms: 0,
        locked_by: None,
        updated_at: now_ms / 1000,
    };
    with_conn!(conn, c => diesel::insert_into(reconcile_cursors::table)
        .values(&new)
        .on_conflict_do_nothing()
        .execute(c))?;
    let taken = with_conn!(conn, c => diesel::update(
            dsl::reconcile_cursors
                .find(scope)
                .filter(dsl::locked_until_ms.le(now_ms).or(dsl::locked_by.eq(worker))),
        )
        .set((
            dsl::locked_until_ms.eq(until_ms),
            dsl::locked_by.eq(worker),
        ))
        .execute(c))?;
    if taken == 1 {
        find_cursor(conn, scope)
    } else {
        Ok(None)
    }
}

/// Stores the cursor and renews the lease, if `worker` still holds it; returns whether it
/// did (`false`: the lease ran out and another pass took over).
pub fn store_cursor(
    conn: &mut Conn,
    scope: &str,
    worker: &str,
    cursor_at: Option<i64>,
    until_ms: i64,
    now: i64,
) -> StoreResult<bool> {
    let n = with_conn!(conn, c => diesel::update(
            dsl::reconcile_cursors.find(scope).filter(dsl::locked_by.eq(worker)),
        )
        .set((
            dsl::cursor_at.eq(cursor_at),
            dsl::locked_until_ms.eq(until_ms),
            dsl::updated_at.eq(now),
        ))
        .execute(c))?;
    Ok(n == 1)
}

/// Gives the lease back, if `worker` holds it.
pub fn release_lease(conn: &mut Conn, scope: &str, worker: &str) -> StoreResult<()> {
    with_conn!(conn, c => diesel::update(
            dsl::reconcile_cursors.find(scope).filter(dsl::locked_by.eq(worker)),
        )
        .set((dsl::locked_until_ms.eq(0), dsl::locked_by.eq(None::<String>)))
        .execute(c))?;
    Ok(())
}

/// The scope of the platform account's events; a connected account's scope is its id.
pub const PLATFORM_SCOPE: &str = "platform";

/// The connected accounts payhook knows, in order: those of its checkouts and customers, and
/// those a pass has listed before (a cursor row; `payhook reconcile --account` adds one).
///
/// Checkouts and customers rather than `webhook_events`: every intent payhook follows in a
/// connected account has a checkout there (from an event, a resync, a thin event or the app
/// API, which makes checkouts in accounts no event may have come from yet: the very events a
/// pass exists to find), and a card saved there has a customer; both tables are far smaller
/// than the event log and have an index that starts with `account`. Each is read by a skip
/// scan (a recursive query asking the index for the next account after the last one), so a
/// pass costs one index probe per account, not a scan of the table. The event log has no
/// such index, and one would be paid by every acknowledged delivery.
pub fn list_known_accounts(conn: &mut Conn) -> StoreResult<Vec<String>> {
    #[derive(QueryableByName)]
    struct Account {
        #[diesel(sql_type = diesel::sql_types::Text)]
        account: String,
    }
    // Each walk starts at '' (the platform's rows, see `customers::PLATFORM`; every account id
    // sorts after it) and ends on NULL, when no account follows the last one.
    let query = |placeholder: &str| {
        let walk = |name: &str, table: &str| {
            format!(
                "{name}(account) AS ( \
                     SELECT CAST('' AS TEXT) \
                     UNION ALL \
                     SELECT (SELECT t.account FROM {table} t WHERE t.account > w.account \
                             ORDER BY t.account LIMIT 1) \
                     FROM {name} w WHERE w.account IS NOT NULL)"
            )
        };
        format!(
            "WITH RECURSIVE {}, {} \
             SELECT account FROM by_checkout WHERE account <> '' \
             UNION SELECT account FROM by_customer WHERE account <> '' \
             UNION SELECT scope AS account FROM reconcile_cursors WHERE scope <> {placeholder} \
             ORDER BY account",
            walk("by_checkout", "checkouts"),
            walk("by_customer", "customers"),
        )
    };
    let rows: Vec<Account> = match conn {
        Conn::Sqlite(c) => diesel::sql_query(query("?"))
            .bind::<diesel::sql_types::Text, _>(PLATFORM_SCOPE)
            .load(&mut **c)?,
        Conn::Postgres(c) => diesel::sql_query(query("$1"))
            .bind::<diesel::sql_types::Text, _>(PLATFORM_SCOPE)
            .load(&mut **c)?,
    };
    Ok(rows.into_iter().map(|r| r.account).collect())
}
