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
    Ok(())
}

/// The schema version this program writes.
pub fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}
