//! The SQL seam: every store function is written once against [`Sql`], which
//! a SQLite connection and a PostgreSQL session both implement.
//!
//! Statements are written in the common subset of both dialects, with
//! SQLite's numbered placeholders (`?1`); PostgreSQL's session rewrites them
//! to `$1` once per statement text. Where the dialects differ, the two texts
//! sit next to each other behind [`Dialect::pick`]. Values cross the seam as
//! [`Value`] (what a statement takes) and [`Cell`] (what a row gives), so
//! integers, booleans stored as integers and text read the same from both.

use std::fmt;

use rusqlite::types::{ToSqlOutput, ValueRef};
use tokio_postgres::types::{IsNull, Type, to_sql_checked};

use super::DbError;

/// Which SQL a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// The embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Dialect {
    /// The statement text for this dialect.
    pub fn pick<'a>(self, sqlite: &'a str, postgres: &'a str) -> &'a str {
        match self {
            Dialect::Sqlite => sqlite,
            Dialect::Postgres => postgres,
        }
    }
}

/// A connection or transaction of either store.
pub trait Sql {
    /// The dialect statements must be written in.
    fn dialect(&self) -> Dialect;
    /// Runs one statement; answers the number of rows it changed.
    fn execute(&self, sql: &str, args: &[Value<'_>]) -> Result<usize, DbError>;
    /// Runs one query, handing each row to `each` in order.
    fn each_row(
        &self,
        sql: &str,
        args: &[Value<'_>],
        each: &mut dyn FnMut(&Row<'_>) -> Result<(), DbError>,
    ) -> Result<(), DbError>;
    /// Runs several statements without parameters (schema, transaction control).
    fn batch(&self, sql: &str) -> Result<(), DbError>;
    /// Runs a write whose answer nobody reads. PostgreSQL holds it back and
    /// sends it together with the next statement that waits for an answer
    /// (one round trip for both), which then reports its error, if any;
    /// SQLite, in-process, runs it at once.
    fn execute_later(&self, sql: &str, args: &[Value<'_>]) -> Result<(), DbError> {
        self.execute(sql, args).map(drop)
    }
    /// Sends whatever [`execute_later`](Sql::execute_later) holds back, and
    /// waits for it.
    fn flush(&self) -> Result<(), DbError> {
        Ok(())
    }
    /// Runs writes that do not depend on each other's answers, in order,
    /// answering the number of rows each changed. PostgreSQL sends them all
    /// at once.
    fn execute_each(&self, statements: &[Query<'_>]) -> Result<Vec<usize>, DbError> {
        statements
            .iter()
            .map(|s| self.execute(s.sql, s.args))
            .collect()
    }
    /// Runs queries that do not depend on each other, handing each row to
    /// `each` with the index of its query, query by query in order.
    /// PostgreSQL sends them all at once (one round trip instead of one
    /// each).
    fn each_row_of(
        &self,
        queries: &[Query<'_>],
        each: &mut dyn FnMut(usize, &Row<'_>) -> Result<(), DbError>,
    ) -> Result<(), DbError> {
        for (i, query) in queries.iter().enumerate() {
            self.each_row(query.sql, query.args, &mut |row| each(i, row))?;
        }
        Ok(())
    }
    /// The SQLite connection underneath, for what only SQLite has (its
    /// `data_version`, WAL checkpoints, query plans); `None` on PostgreSQL.
    fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        None
    }
}

impl dyn Sql + '_ {
    /// The first row's value; an error when there is no row.
    pub fn query_row<T>(
        &self,
        sql: &str,
        args: &[Value<'_>],
        f: impl FnOnce(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        self.query_opt(sql, args, f)?
            .ok_or_else(|| DbError::Internal(format!("no row for: {}", first_line(sql))))
    }

    /// The first row's value, if there is a row.
    pub fn query_opt<T>(
        &self,
        sql: &str,
        args: &[Value<'_>],
        f: impl FnOnce(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<Option<T>, DbError> {
        let mut f = Some(f);
        let mut out = None;
        self.each_row(sql, args, &mut |row| {
            if let Some(f) = f.take() {
                out = Some(f(row)?);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Every row's value, in order.
    pub fn query_all<T>(
        &self,
        sql: &str,
        args: &[Value<'_>],
        mut f: impl FnMut(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        let mut out = Vec::new();
        self.each_row(sql, args, &mut |row| {
            out.push(f(row)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Inserts one row and answers its `id`, or `None` when `ON CONFLICT DO
    /// NOTHING` skipped it. `sql` has no `RETURNING`: SQLite reads its last
    /// rowid (`RETURNING` costs it several times the work of the insert),
    /// PostgreSQL gets `RETURNING id` appended.
    pub fn insert_id(&self, sql: &str, args: &[Value<'_>]) -> Result<Option<i64>, DbError> {
        match self.as_sqlite() {
            Some(lite) => {
                let inserted = self.execute(sql, args)?;
                Ok((inserted > 0).then(|| lite.last_insert_rowid()))
            }
            None => self.query_opt(&format!("{sql} RETURNING id"), args, |r| r.get(0)),
        }
    }

    /// Whether the query gives any row.
    pub fn exists(&self, sql: &str, args: &[Value<'_>]) -> Result<bool, DbError> {
        Ok(self.query_opt(sql, args, |_| Ok(()))?.is_some())
    }
}

/// One query of several run together by [`Sql::each_row_of`].
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// The statement.
    pub sql: &'a str,
    /// Its parameters.
    pub args: &'a [Value<'a>],
}

impl<'a> Query<'a> {
    /// `sql` with `args`.
    pub fn new(sql: &'a str, args: &'a [Value<'a>]) -> Query<'a> {
        Query { sql, args }
    }
}

fn first_line(sql: &str) -> &str {
    sql.trim().lines().next().unwrap_or_default()
}

/// A statement parameter. Borrowed, so passing a string copies nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// SQL NULL.
    Null,
    /// An integer (booleans are stored as 0 and 1 in both stores).
    Int(i64),
    /// A floating-point number.
    Real(f64),
    /// Text.
    Text(&'a str),
    /// Bytes.
    Blob(&'a [u8]),
}

/// A parameter kept by a statement that runs later.
#[derive(Debug, Clone, PartialEq)]
pub enum OwnedValue {
    /// SQL NULL.
    Null,
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl OwnedValue {
    /// The parameter, borrowed again.
    pub fn as_value(&self) -> Value<'_> {
        match self {
            OwnedValue::Null => Value::Null,
            OwnedValue::Int(i) => Value::Int(*i),
            OwnedValue::Real(r) => Value::Real(*r),
            OwnedValue::Text(s) => Value::Text(s),
            OwnedValue::Blob(b) => Value::Blob(b),
        }
    }
}

impl From<Value<'_>> for OwnedValue {
    fn from(value: Value<'_>) -> Self {
        match value {
            Value::Null => OwnedValue::Null,
            Value::Int(i) => OwnedValue::Int(i),
            Value::Real(r) => OwnedValue::Real(r),
            Value::Text(s) => OwnedValue::Text(s.to_owned()),
            Value::Blob(b) => OwnedValue::Blob(b.to_vec()),
        }
    }
}

/// What can be passed as a statement parameter.
pub trait ToValue {
    /// The parameter this value is.
    fn to_value(&self) -> Value<'_>;
}

impl Value<'_> {
    /// `value` as a parameter (what [`args!`](crate::args) calls).
    pub fn of<T: ToValue + ?Sized>(value: &T) -> Value<'_> {
        value.to_value()
    }
}

macro_rules! int_values {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value<'_> {
                Value::Int(*self as i64)
            }
        }
    )*};
}
int_values!(i64, i32, u32, u16, u8, usize);

impl ToValue for bool {
    fn to_value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}

impl ToValue for f64 {
    fn to_value(&self) -> Value<'_> {
        Value::Real(*self)
    }
}

impl ToValue for str {
    fn to_value(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl ToValue for String {
    fn to_value(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl ToValue for [u8] {
    fn to_value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}

impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}

impl ToValue for bytes::Bytes {
    fn to_value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value<'_> {
        (**self).to_value()
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value<'_> {
        match self {
            Some(v) => v.to_value(),
            None => Value::Null,
        }
    }
}

impl ToValue for Value<'_> {
    fn to_value(&self) -> Value<'_> {
        *self
    }
}

/// The parameters of a statement: `args![lead, "email", value]`.
#[macro_export]
macro_rules! args {
    ($($arg:expr),* $(,)?) => {
        &[$($crate::store::sql::Value::of(&$arg)),*][..]
    };
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(i),
            Value::Real(r) => ValueRef::Real(r),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

/// Encodes for whatever type PostgreSQL inferred for the placeholder, so
/// that one Rust value serves an `INTEGER`, a `BIGINT` or a `SMALLINT` column
/// alike, as it does in SQLite.
impl tokio_postgres::types::ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                Type::FLOAT8 => (i as f64).to_sql(ty, out),
                Type::FLOAT4 => (i as f32).to_sql(ty, out),
                _ if is_text(ty) => i.to_string().as_str().to_sql(ty, out),
                _ => Err(format!("an integer cannot be stored as {ty}").into()),
            },
            Value::Real(r) => match *ty {
                Type::FLOAT8 => r.to_sql(ty, out),
                Type::FLOAT4 => (r as f32).to_sql(ty, out),
                _ if is_text(ty) => r.to_string().as_str().to_sql(ty, out),
                _ => Err(format!("a number cannot be stored as {ty}").into()),
            },
            Value::Text(s) => match *ty {
                Type::BYTEA => s.as_bytes().to_sql(ty, out),
                Type::INT8 => s.parse::<i64>()?.to_sql(ty, out),
                // PostgreSQL text cannot hold U+0000, which JSON bodies may
                // carry escaped: such a character is stored as U+FFFD (the
                // raw delivery keeps the original bytes).
                _ if s.contains('\0') => s.replace('\0', "\u{FFFD}").as_str().to_sql(ty, out),
                _ => s.to_sql(ty, out),
            },
            Value::Blob(b) => match *ty {
                _ if is_text(ty) => std::str::from_utf8(b)?.to_sql(ty, out),
                _ => b.to_sql(ty, out),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn is_text(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN
    )
}

/// A row of either store.
pub enum Row<'a> {
    /// A SQLite row.
    Sqlite(&'a rusqlite::Row<'a>),
    /// A PostgreSQL row.
    Postgres(&'a tokio_postgres::Row),
}

impl Row<'_> {
    /// Column `i` as a `T`.
    pub fn get<T: Cell>(&self, i: usize) -> Result<T, DbError> {
        let cell = match self {
            Row::Sqlite(row) => CellRef::from(row.get_ref(i)?),
            Row::Postgres(row) => row.try_get::<_, CellRef<'_>>(i)?,
        };
        T::from_cell(cell).map_err(|e| DbError::Internal(format!("column {i}: {e}")))
    }
}

/// A column's value as both stores give it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CellRef<'a> {
    /// NULL.
    Null,
    /// An integer or a boolean.
    Int(i64),
    /// A floating-point number.
    Real(f64),
    /// Text.
    Text(&'a str),
    /// Bytes.
    Blob(&'a [u8]),
}

impl<'a> From<ValueRef<'a>> for CellRef<'a> {
    fn from(v: ValueRef<'a>) -> Self {
        match v {
            ValueRef::Null => CellRef::Null,
            ValueRef::Integer(i) => CellRef::Int(i),
            ValueRef::Real(r) => CellRef::Real(r),
            // SQLite does not check that text is UTF-8; such text reads as bytes.
            ValueRef::Text(t) => std::str::from_utf8(t).map_or(CellRef::Blob(t), CellRef::Text),
            ValueRef::Blob(b) => CellRef::Blob(b),
        }
    }
}

impl<'a> tokio_postgres::types::FromSql<'a> for CellRef<'a> {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(match *ty {
            Type::INT8 => CellRef::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => CellRef::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => CellRef::Int(i16::from_sql(ty, raw)?.into()),
            Type::OID => CellRef::Int(u32::from_sql(ty, raw)?.into()),
            Type::BOOL => CellRef::Int(bool::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => CellRef::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => CellRef::Real(f32::from_sql(ty, raw)?.into()),
            Type::BYTEA => CellRef::Blob(raw),
            _ => CellRef::Text(<&str>::from_sql(ty, raw)?),
        })
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(CellRef::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// What a column can be read as.
pub trait Cell: Sized {
    /// The value of `cell`, or why it is not one.
    fn from_cell(cell: CellRef<'_>) -> Result<Self, String>;
}

fn mismatch(want: &str, cell: CellRef<'_>) -> String {
    format!("expected {want}, found {cell:?}")
}

impl Cell for i64 {
    fn from_cell(cell: CellRef<'_>) -> Result<Self, String> {
        match cell {
            CellRef::Int(i) => Ok(i),
            other => Err(mismatch("an integer", other)),
        }
    }
}

macro_rules! int_cells {
    ($($t:ty),*) => {$(
        impl Cell for $t {
            fn from_cell(cell: CellRef<'_>) -> Result<Self, String> {
                let i = i64::from_cell(cell)?;
                <$t>::try_from(i).map_err(|_| format!("{i} is out of range"))
            }
        }
    )*};
}
int_cells!(i32, u32, u64, usize);

impl Cell for bool {
    fn from_cell(cell: CellRef<'_>) -> Result<Self, String> {
        Ok(i64::from_cell(cell)? != 0)
    }
}

impl Cell for f64 {
    fn from_cell(cell: CellRef<'_>) -> Result<Self, String> {
        match cell {
            CellRef::Real(r) => Ok(r),
            CellRef::Int(i) => Ok(i as f64),
            other => Err(mismatch("a number", other)),
        }
    }
}

impl Cell for String {
    fn from_cell(cell: CellRef<'_>) -> Result<Self, String> {
        match cell {
            CellRef::Text(t) => Ok(t.to_owned()),
            other => Err(mismatch("text", other)),
        }
    }
}

impl Cell for Vec<u8> {
    fn from_cell(cell: CellRef<'_>) -> Result<Self, String> {
        match cell {
            CellRef::Blob(b) => Ok(b.to_vec()),
            CellRef::Text(t) => Ok(t.as_bytes().to_vec()),
            other => Err(mismatch("bytes", other)),
        }
    }
}

impl<T: Cell> Cell for Option<T> {
    fn from_cell(cell: CellRef<'_>) -> Result<Self, String> {
        match cell {
            CellRef::Null => Ok(None),
            other => T::from_cell(other).map(Some),
        }
    }
}

impl Sql for rusqlite::Connection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&self, sql: &str, args: &[Value<'_>]) -> Result<usize, DbError> {
        Ok(self
            .prepare_cached(sql)?
            .execute(rusqlite::params_from_iter(args))?)
    }

    fn each_row(
        &self,
        sql: &str,
        args: &[Value<'_>],
        each: &mut dyn FnMut(&Row<'_>) -> Result<(), DbError>,
    ) -> Result<(), DbError> {
        let mut stmt = self.prepare_cached(sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        while let Some(row) = rows.next()? {
            each(&Row::Sqlite(row))?;
        }
        Ok(())
    }

    fn batch(&self, sql: &str) -> Result<(), DbError> {
        Ok(self.execute_batch(sql)?)
    }

    fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        Some(self)
    }
}

/// `sql` with SQLite's `?NNN` and `?` placeholders written as PostgreSQL's
/// `$NNN`; quoted text and identifiers are left alone.
pub fn postgres_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut next = 1;
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            out.push(c);
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => {
                quote = Some(c);
                out.push(c);
            }
            '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                out.push('$');
                if digits.is_empty() {
                    out.push_str(&next.to_string());
                    next += 1;
                } else {
                    out.push_str(&digits);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dialect::Sqlite => "SQLite",
            Dialect::Postgres => "PostgreSQL",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres_outside_quotes() {
        assert_eq!(
            postgres_placeholders("SELECT a FROM t WHERE b = ?2 AND c = ?1 AND d = '?3'"),
            "SELECT a FROM t WHERE b = $2 AND c = $1 AND d = '?3'"
        );
        assert_eq!(
            postgres_placeholders("INSERT INTO t VALUES (?, ?, \"x?\")"),
            "INSERT INTO t VALUES ($1, $2, \"x?\")"
        );
    }

    #[test]
    fn a_sqlite_connection_reads_and_writes_through_the_seam() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let sql: &dyn Sql = &conn;
        sql.batch("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, flag INTEGER, score REAL)")
            .unwrap();
        let name = String::from("Ann");
        let none: Option<&str> = None;
        assert_eq!(
            sql.execute(
                "INSERT INTO t (name, flag, score) VALUES (?1, ?2, ?3), (?4, ?2, ?3)",
                crate::args![name, true, 0.5, none]
            )
            .unwrap(),
            2
        );
        let rows: Vec<(i64, Option<String>, bool, f64)> = sql
            .query_all(
                "SELECT id, name, flag, score FROM t ORDER BY id",
                &[],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(
            rows,
            [(1, Some("Ann".into()), true, 0.5), (2, None, true, 0.5)]
        );
        assert_eq!(
            sql.query_opt("SELECT id FROM t WHERE id = ?1", crate::args![9], |r| r
                .get::<i64>(0))
                .unwrap(),
            None
        );
        assert!(
            sql.query_row("SELECT id FROM t WHERE id = 9", &[], |r| r.get::<i64>(0))
                .is_err()
        );
    }
}
