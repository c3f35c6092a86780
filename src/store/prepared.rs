//! Hot statements that diesel would prepare again on every call, built so that each is
//! prepared once per connection.
//!
//! diesel reuses a prepared statement only when it can tell the SQL is the same every time,
//! and it never can for `UPDATE` (a changeset may skip fields) or raw SQL. The processor runs
//! several of these for every event it applies, so re-parsing them dominated its profile
//! (BENCHMARKS.md). A [`Fixed`] statement is SQL text and binds whose
//! shape is fixed by the one function that builds it; that function names its own marker
//! type `K`, and diesel's statement cache keys the prepared statement on `K`.
//!
//! The rule that keeps this sound: one marker type per builder function, and the function
//! pushes the same SQL pieces and bind types on every call (values vary, shape does not).

use std::marker::PhantomData;

use diesel::backend::Backend;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, HasSqlType, Integer, Nullable, Text};
use diesel::{QueryResult, RunQueryDsl};

enum Part<'a> {
    Sql(&'static str),
    Text(&'a str),
    NullableText(Option<&'a str>),
    BigInt(i64),
    NullableBigInt(Option<i64>),
    Integer(i32),
}

/// A statement with fixed SQL, cached under the marker type `K`.
pub struct Fixed<'a, K> {
    parts: Vec<Part<'a>>,
    marker: PhantomData<K>,
}

impl<'a, K: 'static> Fixed<'a, K> {
    pub fn new() -> Self {
        Self {
            parts: Vec::with_capacity(48),
            marker: PhantomData,
        }
    }

    pub fn sql(mut self, sql: &'static str) -> Self {
        self.parts.push(Part::Sql(sql));
        self
    }

    pub fn text(mut self, value: &'a str) -> Self {
        self.parts.push(Part::Text(value));
        self
    }

    pub fn nullable_text(mut self, value: Option<&'a str>) -> Self {
        self.parts.push(Part::NullableText(value));
        self
    }

    pub fn big_int(mut self, value: i64) -> Self {
        self.parts.push(Part::BigInt(value));
        self
    }

    pub fn nullable_big_int(mut self, value: Option<i64>) -> Self {
        self.parts.push(Part::NullableBigInt(value));
        self
    }

    pub fn integer(mut self, value: i32) -> Self {
        self.parts.push(Part::Integer(value));
        self
    }
}

impl<K: 'static> QueryId for Fixed<'_, K> {
    type QueryId = K;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<K, DB> QueryFragment<DB> for Fixed<'_, K>
where
    DB: Backend + HasSqlType<Text> + HasSqlType<BigInt> + HasSqlType<Integer>,
    str: ToSql<Text, DB>,
    i64: ToSql<BigInt, DB>,
    i32: ToSql<Integer, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        for part in &self.parts {
            match part {
                Part::Sql(sql) => out.push_sql(sql),
                Part::Text(value) => out.push_bind_param::<Text, str>(value)?,
                Part::NullableText(value) => {
                    out.push_bind_param::<Nullable<Text>, Option<&str>>(value)?
                }
                Part::BigInt(value) => out.push_bind_param::<BigInt, i64>(value)?,
                Part::NullableBigInt(value) => {
                    out.push_bind_param::<Nullable<BigInt>, Option<i64>>(value)?
                }
                Part::Integer(value) => out.push_bind_param::<Integer, i32>(value)?,
            }
        }
        Ok(())
    }
}

impl<K, C> RunQueryDsl<C> for Fixed<'_, K> {}

#[cfg(test)]
mod tests {
    use diesel::connection::SimpleConnection;
    use diesel::sqlite::SqliteConnection;
    use diesel::Connection;

    use super::*;

    struct InsertPair;

    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        a: String,
        #[diesel(sql_type = Nullable<Text>)]
        b: Option<String>,
        #[diesel(sql_type = BigInt)]
        c: i64,
        #[diesel(sql_type = Nullable<BigInt>)]
        d: Option<i64>,
        #[diesel(sql_type = Integer)]
        e: i32,
    }

    #[test]
    fn binds_every_kind_of_value() {
        let mut conn = SqliteConnection::establish(":memory:").expect("sqlite");
        conn.batch_execute("CREATE TABLE t (a TEXT, b TEXT, c BIGINT, d BIGINT, e INTEGER)")
            .expect("table");
        for i in 0..3 {
            let b = (i % 2 == 0).then_some("even");
            let n = Fixed::<InsertPair>::new()
                .sql("INSERT INTO t (a, b, c, d, e) VALUES (")
                .text("x")
                .sql(", ")
                .nullable_text(b)
                .sql(", ")
                .big_int(i64::MAX - i)
                .sql(", ")
                .nullable_big_int((i == 1).then_some(-1))
                .sql(", ")
                .integer(i as i32)
                .sql(")")
                .execute(&mut conn)
                .expect("insert");
            assert_eq!(n, 1);
        }
        let rows: Vec<Row> = diesel::sql_query("SELECT a, b, c, d, e FROM t ORDER BY e")
            .load(&mut conn)
            .expect("rows");
        let rows: Vec<_> = rows
            .into_iter()
            .map(|r| (r.a, r.b, r.c, r.d, r.e))
            .collect();
        let even = Some("even".to_owned());
        assert_eq!(
            rows,
            vec![
                ("x".to_owned(), even.clone(), i64::MAX, None, 0),
                ("x".to_owned(), None, i64::MAX - 1, Some(-1), 1),
                ("x".to_owned(), even, i64::MAX - 2, None, 2),
            ]
        );
    }
}
