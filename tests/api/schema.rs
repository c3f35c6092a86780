//! The diesel `table!` definitions in `src/store/schema.rs` against fresh databases migrated
//! by each backend's migrations: same tables, same columns in the same order, same
//! nullability, same types. One schema module serves both backends, so this is what keeps it
//! from drifting from either migration.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Integer, Nullable, Text};
use payhook::store::{Conn, Pool, PoolOptions};

use crate::helpers::{both_backends, Backend, TestDatabase};

/// What the schema module says about one column's SQL type.
trait Describe {
    const NULLABLE: bool;
    /// The type as PostgreSQL's information_schema and the migrations' declarations name it.
    const TYPE: &'static str;
}

macro_rules! describe {
    ($($sql:ty => $name:literal),+) => {$(
        impl Describe for $sql {
            const NULLABLE: bool = false;
            const TYPE: &'static str = $name;
        }
    )+};
}
describe!(Text => "text", BigInt => "bigint", Integer => "integer", Bool => "boolean");

impl<T: Describe> Describe for Nullable<T> {
    const NULLABLE: bool = true;
    const TYPE: &'static str = T::TYPE;
}

/// The column types of a table's `all_columns`, in order.
trait Columns {
    fn describe() -> Vec<(bool, &'static str)>;
}

macro_rules! columns_for_tuples {
    ($($t:ident)+) => {
        impl<$($t: Describe),+> Columns for ($($t,)+) {
            fn describe() -> Vec<(bool, &'static str)> {
                vec![$(($t::NULLABLE, $t::TYPE)),+]
            }
        }
    };
}
// Every table width up to 24 columns.
columns_for_tuples!(A B C D E);
columns_for_tuples!(A B C D E F);
columns_for_tuples!(A B C D E F G);
columns_for_tuples!(A B C D E F G H);
columns_for_tuples!(A B C D E F G H I);
columns_for_tuples!(A B C D E F G H I J);
columns_for_tuples!(A B C D E F G H I J K);
columns_for_tuples!(A B C D E F G H I J K L);
columns_for_tuples!(A B C D E F G H I J K L M);
columns_for_tuples!(A B C D E F G H I J K L M N);
columns_for_tuples!(A B C D E F G H I J K L M N O);
columns_for_tuples!(A B C D E F G H I J K L M N O P);
columns_for_tuples!(A B C D E F G H I J K L M N O P Q);
columns_for_tuples!(A B C D E F G H I J K L M N O P Q R);
columns_for_tuples!(A B C D E F G H I J K L M N O P Q R S);
columns_for_tuples!(A B C D E F G H I J K L M N O P Q R S T);
columns_for_tuples!(A B C D E F G H I J K L M N O P Q R S T U);
columns_for_tuples!(A B C D E F G H I J K L M N O P Q R S T U V);
columns_for_tuples!(A B C D E F G H I J K L M N O P Q R S T U V W);
columns_for_tuples!(A B C D E F G H I J K L M N O P Q R S T U V W X);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    name: String,
    data_type: String,
    nullable: bool,
}

/// `(table, columns)` as the schema module declares them.
macro_rules! declared {
    ($table:ident) => {{
        use payhook::store::schema::$table;
        let sql =
            diesel::debug_query::<diesel::pg::Pg, _>(&$table::table.select($table::all_columns))
                .to_string();
        // SELECT "t"."a", "t"."b" FROM "t" -- binds: []
        let list = sql
            .strip_prefix("SELECT ")
            .and_then(|s| s.split(" FROM ").next())
            .expect("a SELECT");
        let names: Vec<String> = list
            .split(", ")
            .map(|c| c.rsplit('.').next().unwrap().trim_matches('"').to_owned())
            .collect();
        let types =
            <<$table::table as diesel::query_builder::AsQuery>::SqlType as Columns>::describe();
        assert_eq!(names.len(), types.len(), "{sql}");
        let columns = names
            .into_iter()
            .zip(types)
            .map(|(name, (nullable, data_type))| Column {
                name,
                data_type: data_type.to_owned(),
                nullable,
            })
            .collect::<Vec<_>>();
        (stringify!($table), columns)
    }};
}

#[derive(QueryableByName)]
struct DbColumn {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    data_type: String,
    #[diesel(sql_type = Bool)]
    nullable: bool,
    #[diesel(sql_type = Bool)]
    pk: bool,
}

#[derive(QueryableByName)]
struct DbTable {
    #[diesel(sql_type = Text)]
    name: String,
}

fn tables_in(conn: &mut Conn) -> Vec<String> {
    let mut names: Vec<String> = match conn {
        Conn::Sqlite(c) => diesel::sql_query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )
        .load::<DbTable>(&mut **c),
        Conn::Postgres(c) => diesel::sql_query(
            "SELECT table_name::text AS name FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
        )
        .load::<DbTable>(&mut **c),
    }
    .expect("list tables")
    .into_iter()
    .map(|t| t.name)
    .filter(|n| n != "__diesel_schema_migrations")
    .collect();
    names.sort();
    names
}

fn columns_in(conn: &mut Conn, table: &str) -> Vec<Column> {
    let rows = match conn {
        Conn::Sqlite(c) => diesel::sql_query(format!(
            "SELECT name, lower(type) AS data_type, \"notnull\" = 0 AS nullable, pk > 0 AS pk \
             FROM pragma_table_info('{table}') ORDER BY cid"
        ))
        .load::<DbColumn>(&mut **c),
        Conn::Postgres(c) => diesel::sql_query(format!(
            "SELECT column_name::text AS name, data_type::text AS data_type, \
             is_nullable = 'YES' AS nullable, FALSE AS pk FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = '{table}' \
             ORDER BY ordinal_position"
        ))
        .load::<DbColumn>(&mut **c),
    }
    .expect("list columns");
    rows.into_iter()
        .map(|c| Column {
            // An SQLite INTEGER PRIMARY KEY is the 64-bit rowid: diesel's BigInt.
            data_type: if c.pk && c.data_type == "integer" {
                "bigint".to_owned()
            } else {
                c.data_type
            },
            name: c.name,
            nullable: c.nullable,
        })
        .collect()
}

async fn the_schema_module_matches_the_migrations(backend: Backend) {
    let db = TestDatabase::create(backend);
    let url = db.url();
    let declared = vec![
        declared!(webhook_events),
        declared!(webhook_event_queue),
        declared!(customers),
        declared!(payment_methods),
        declared!(checkouts),
        declared!(checkout_transitions),
        declared!(outbox),
        declared!(outbox_attempts),
        declared!(app_checkouts),
        declared!(reconcile_cursors),
    ];
    tokio::task::spawn_blocking(move || {
        let pool = Pool::connect(&url, PoolOptions::default()).expect("connect");
        assert!(pool.migrate().expect("migrate") > 0);
        let mut conn = pool.get().expect("connection");
        let mut expected: Vec<String> = declared.iter().map(|(t, _)| t.to_string()).collect();
        expected.sort();
        assert_eq!(
            tables_in(&mut conn),
            expected,
            "{backend:?}: tables in the migrations vs tables in src/store/schema.rs \
             (and in this test's list)"
        );
        for (table, columns) in &declared {
            assert_eq!(
                &columns_in(&mut conn, table),
                columns,
                "{backend:?}: table {table}: migrated (left) vs schema.rs (right)"
            );
        }
    })
    .await
    .expect("schema check");
    drop(db);
}
both_backends!(the_schema_module_matches_the_migrations);

/// `update_checkout` names its columns by hand (a statement prepared once); a column it
/// forgot would silently keep its old value. Every field but the identity and `created_at`
/// changes here, and the row read back must equal the row written.
async fn updating_a_checkout_writes_every_changing_column(backend: Backend) {
    use payhook::domain::checkout::{CheckoutKind, CheckoutState};
    use payhook::store::checkouts::{find_checkout, insert_checkout, update_checkout, CheckoutRow};

    let (_db, pool) = crate::helpers::fresh_pool(backend).await;
    let mut conn = pool.get().expect("connection");
    let original = CheckoutRow {
        id: "chk_update".into(),
        kind: CheckoutKind::Payment,
        intent_id: "pi_update".into(),
        customer_id: None,
        stripe_customer_id: None,
        payment_method_id: None,
        amount: None,
        currency: None,
        setup_future_usage: None,
        state: CheckoutState::Pending,
        state_event_id: None,
        state_event_created: 1,
        last_error_code: None,
        decline_code: None,
        last_error_message: None,
        created_at: 10,
        updated_at: 10,
        account: String::new(),
    };
    assert!(insert_checkout(&mut conn, &original).expect("insert"));
    use payhook::store::customers::{find_customer_by_ref, insert_customer, NewCustomer};
    let customer = NewCustomer {
        customer_ref: Some("u_update"),
        email: None,
        stripe_customer_id: None,
        created_at: 1,
        updated_at: 1,
        account: "",
    };
    insert_customer(&mut conn, &customer).expect("customer");
    let customer_id = find_customer_by_ref(&mut conn, None, "u_update")
        .expect("query")
        .expect("customer")
        .id;
    let changed = CheckoutRow {
        customer_id: Some(customer_id),
        stripe_customer_id: Some("cus_update".into()),
        payment_method_id: Some("pm_update".into()),
        amount: Some(4200),
        currency: Some("eur".into()),
        setup_future_usage: Some("off_session".into()),
        state: CheckoutState::Failed,
        state_event_id: Some("evt_update".into()),
        state_event_created: 2,
        last_error_code: Some("card_declined".into()),
        decline_code: Some("insufficient_funds".into()),
        last_error_message: Some("Your card has insufficient funds.".into()),
        updated_at: 20,
        ..original.clone()
    };
    update_checkout(&mut conn, &changed).expect("update");
    let stored = find_checkout(&mut conn, "chk_update")
        .expect("query")
        .expect("row");
    assert_eq!(stored, changed);
}
both_backends!(updating_a_checkout_writes_every_changing_column);
