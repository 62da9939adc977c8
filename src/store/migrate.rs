//! Schema versions, tracked in `PRAGMA user_version`. Version 1 is
//! `schema.sql`; each later migration is appended to [`MIGRATIONS`] and never
//! edited once shipped.

use rusqlite::Connection;

use super::DbError;

/// Migration `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[include_str!("../../schema.sql")];

/// Applies every migration the database has not seen, each in its own
/// transaction with its version bump.
pub fn migrate(conn: &Connection) -> Result<(), DbError> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let latest = MIGRATIONS.len() as i64;
    if current > latest {
        return Err(DbError::Internal(format!(
            "database schema version {current} is newer than this program ({latest}); \
             refusing to run an older binary against it"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let next = version as i64 + 1;
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {next};\nCOMMIT;"
        ))
        .map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            DbError::Internal(format!("migration to version {next} failed: {e}"))
        })?;
        tracing::info!(version = next, "database schema migrated");
    }
    drop_stat4(conn)
}

/// Removes STAT4 samples (left by an operator's `ANALYZE` or `PRAGMA
/// optimize`; the bundled SQLite is built with STAT4) and keeps the plain
/// `sqlite_stat1` row counts. Every statement here is an index seek whose
/// plan does not depend on the value looked up, but with samples present
/// SQLite re-prepares a statement each time a parameter it could estimate
/// from is rebound: that tripled the cost of a delivery.
fn drop_stat4(conn: &Connection) -> Result<(), DbError> {
    let has_samples: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'sqlite_stat4'",
        [],
        |r| r.get(0),
    )?;
    if has_samples {
        conn.execute_batch(
            "BEGIN IMMEDIATE; DELETE FROM sqlite_stat4; COMMIT; ANALYZE sqlite_schema;",
        )
        .inspect_err(|_| {
            let _ = conn.execute_batch("ROLLBACK");
        })?;
        tracing::info!("STAT4 samples dropped; sqlite_stat1 kept");
    }
    Ok(())
}

/// The schema version this program writes.
pub fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}
