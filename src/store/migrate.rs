//! Schema versions, tracked in `PRAGMA user_version`. Version 1 is
//! `schema.sql`; each later migration is appended to [`MIGRATIONS`] and never
//! edited once shipped.

use rusqlite::Connection;

use super::DbError;

/// Migration `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("../../schema.sql"),
    include_str!("../../migrations/0002_decisions.sql"),
    include_str!("../../migrations/0003_live_name_indexes.sql"),
    include_str!("../../migrations/0004_packed_created_rows.sql"),
    include_str!("../../migrations/0005_packed_new_lead_entries.sql"),
    include_str!("../../migrations/0006_links_by_newer_lead.sql"),
    include_str!("../../migrations/0007_staff.sql"),
    include_str!("../../migrations/0008_merges.sql"),
    include_str!("../../migrations/0009_tombstones.sql"),
    include_str!("../../migrations/0010_audit_retention.sql"),
    include_str!("../../migrations/0011_outbound.sql"),
    include_str!("../../migrations/0012_duplicate_queue_index.sql"),
    include_str!("../../migrations/0013_deliveries_by_lead.sql"),
];

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
    if current < latest {
        // A migration that rebuilds a table sorts all of it: in files, not
        // in memory (four million duplicate links took 0.5 GB to sort in
        // memory, 40 MB through files, in the same time).
        conn.pragma_update(None, "temp_store", "FILE")?;
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
    if current < latest {
        conn.pragma_update(None, "temp_store", "MEMORY")?;
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

#[cfg(test)]
mod tests {
    use rusqlite::params;

    use super::*;
    use crate::store::view::{self, Found};

    /// A database written by version 1 (the whole explanation copied into
    /// each history row, folded leads in the name indexes) is brought up to
    /// date without changing what its leads read as, and rows written
    /// afterwards store their decision once.
    #[test]
    fn version_1_databases_keep_their_history_and_get_live_name_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("v1.sqlite3")).unwrap();
        conn.execute_batch(&format!(
            "BEGIN; {} PRAGMA user_version = 1; COMMIT;",
            MIGRATIONS[0]
        ))
        .unwrap();
        let old = r#"{"change":null,"change_text":null,"decision":"created","summary":["made by version 1"],"why":{"rule":"new visitor"}}"#;
        conn.execute_batch(
            "INSERT INTO leads (id, name, name_key, name_rev, created_at, updated_at)
             VALUES (1, 'Ann Lee', 'ann lee', 'eel nna', 't', 't'),
                    (2, 'Ann Lea', 'ann lea', 'ael nna', 't', 't');
             UPDATE leads SET merged_into = 1 WHERE id = 2;",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO history (lead_id, at, field, new, source, explanation)
             VALUES (1, 't', 'created', 'new visitor', 'jivo', ?1)",
            [old],
        )
        .unwrap();

        migrate(&conn).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, latest_version());

        let Found::Lead(lead) = view::lead(&conn, 1).unwrap() else {
            panic!("lead 1 is missing");
        };
        let expected: serde_json::Value = serde_json::from_str(old).unwrap();
        assert_eq!(lead.history[0].explanation.as_ref(), Some(&expected));

        // The folded lead is out of the name indexes; the live one is in,
        // and the neighbour query is answered by the index alone.
        let names: Vec<i64> = conn
            .prepare("SELECT id FROM leads INDEXED BY leads_name_key WHERE name_key >= '' AND merged_into IS NULL")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(names, [1]);
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT id, name_key FROM leads WHERE name_key < ?1 AND merged_into IS NULL ORDER BY name_key DESC LIMIT 6",
                params!["b"],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("COVERING INDEX leads_name_key"), "{plan}");

        // Folding after the migration takes a lead out of the index too.
        conn.execute_batch(
            "INSERT INTO leads (id, name, name_key, name_rev, created_at, updated_at)
             VALUES (3, 'Bo', 'bo', 'ob', 't', 't');
             UPDATE leads SET merged_into = 1 WHERE id = 3;",
        )
        .unwrap();
        let live: i64 = conn
            .query_row(
                "SELECT count(*) FROM leads WHERE name_rev >= '' AND merged_into IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(live, 1);
    }

    /// Version 6 keys the possible-duplicate links by their newer lead:
    /// every link of a version 5 database is still there, each lead reads
    /// the same links, and both lookups are index seeks.
    #[test]
    fn version_5_links_are_kept_and_keyed_by_their_newer_lead() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("v5.sqlite3")).unwrap();
        for (version, sql) in MIGRATIONS[..5].iter().enumerate() {
            conn.execute_batch(&format!(
                "BEGIN; {sql} PRAGMA user_version = {}; COMMIT;",
                version + 1
            ))
            .unwrap();
        }
        for id in 1..=5 {
            conn.execute(
                "INSERT INTO leads (id, name, created_at, updated_at) VALUES (?1, ?2, 't', 't')",
                params![id, format!("Lead {id}")],
            )
            .unwrap();
        }
        let links = [
            (1, 2, 0.93, "similar name"),
            (1, 5, 0.91, "similar email"),
            (2, 5, 0.97, "similar phone"),
            (3, 4, 1.0, "same email, different phone"),
        ];
        for (a, b, score, reason) in links {
            conn.execute(
                "INSERT INTO duplicate_links (lead_a, lead_b, score, reason, created_at)
                 VALUES (?1, ?2, ?3, ?4, 't')",
                params![a, b, score, reason],
            )
            .unwrap();
        }
        let read = |conn: &Connection| -> Vec<String> {
            (1..=5)
                // Only the links: the rest of a lead reads columns of
                // later versions.
                .map(|id| format!("{id}: {:?}", view::duplicate_links(conn, id).unwrap()))
                .collect()
        };
        let before = read(&conn);

        migrate(&conn).unwrap();
        assert_eq!(read(&conn), before);
        let stored: Vec<(i64, i64, f64, String)> = conn
            .prepare(
                "SELECT lead_a, lead_b, score, reason FROM duplicate_links ORDER BY lead_a, lead_b",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            stored,
            links.map(|(a, b, score, reason)| (a, b, score, reason.to_owned()))
        );
        // The key starts with the newer lead.
        let key: Vec<String> = conn
            .prepare(
                "SELECT name FROM pragma_index_xinfo(
                     (SELECT name FROM pragma_index_list('duplicate_links') WHERE origin = 'pk'))
                 WHERE key ORDER BY seqno",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(key, ["lead_b", "lead_a"]);
        for (column, index) in [("lead_a", "duplicate_links_a"), ("lead_b", "PRIMARY KEY")] {
            let plan: String = conn
                .query_row(
                    &format!(
                        "EXPLAIN QUERY PLAN SELECT score FROM duplicate_links WHERE {column} = 1"
                    ),
                    [],
                    |r| r.get(3),
                )
                .unwrap();
            assert!(plan.contains(index), "{column}: {plan}");
        }
    }
}
