//! The floor of an import: how long SQLite itself takes to write what an
//! import stored, with none of the import's own work (no CSV, no identity,
//! no merge, no duplicate detection, no statement per row).
//!
//! Give it a database an import made (see docs/performance.md, Import). It
//! copies every table's rows into an empty database of the same schema with
//! the service's settings (WAL, `synchronous=NORMAL`, foreign keys on, the
//! import's 512 MiB page cache, SQLite's automatic checkpoints), each table
//! with one `INSERT … SELECT` in its stored order, one transaction a table,
//! and prints the time of each (its checkpoint included):
//!
//! - "indexes kept": every index exists while the rows go in, as during an
//!   import;
//! - "indexes after": the tables are filled first and each index is built
//!   afterwards (SQLite sorts it), the fastest SQLite loads an empty
//!   database.
//!
//! Reading the source rows is timed apart (every column of every row read
//! once): part of each copy's time is that reading, so a copy's time minus
//! its table's reading is about what writing it costs.
//!
//! ```sh
//! cargo bench --bench import_floor -- /tmp/import-bench/crm.sqlite3
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::Connection;

fn main() {
    // `cargo test --all-targets` runs bench targets too (without `--bench`):
    // the figures are for `cargo bench` only.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("import floor: run with `cargo bench --bench import_floor -- DATABASE`");
        return;
    }
    let Some(source) = args.iter().find(|a| !a.starts_with("--")) else {
        eprintln!("usage: cargo bench --bench import_floor -- DATABASE (one an import made)");
        std::process::exit(2);
    };
    let source = PathBuf::from(source);
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("import-floor");
    std::fs::create_dir_all(&work).expect("work directory");

    let schema = Schema::of(&source);
    let reading = read_all(&source, &schema.tables);
    // Each copy is removed before the next, so that it does not crowd the
    // operating system's cache.
    let target = work.join("copy.sqlite3");
    let kept = copy(&source, &target, &schema, false);
    let after = copy(&source, &target, &schema, true);
    let _ = std::fs::remove_dir_all(&work);

    println!("| table | rows | read s | indexes kept s | indexes after s |");
    println!("|---|---:|---:|---:|---:|");
    for (i, (name, _)) in schema.tables.iter().enumerate() {
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} |",
            reading[i].1, reading[i].0, kept.tables[i], after.tables[i]
        );
    }
    println!(
        "| building the {} indexes | | | | {:.1} |",
        schema.indexes.len(),
        after.indexes
    );
    println!(
        "| last checkpoint | | | {:.1} | {:.1} |",
        kept.checkpoint, after.checkpoint
    );
    let read: f64 = reading.iter().map(|r| r.0).sum();
    println!(
        "| **total** | {} | {read:.1} | **{:.1}** | **{:.1}** |",
        reading.iter().map(|r| r.1).sum::<u64>(),
        kept.total(),
        after.total()
    );
}

/// The source's tables (name, `CREATE TABLE`) and indexes (`CREATE INDEX`),
/// in the order they were created.
struct Schema {
    tables: Vec<(String, String)>,
    indexes: Vec<String>,
}

impl Schema {
    fn of(path: &Path) -> Schema {
        let conn = Connection::open(path).expect("source database");
        let mut stmt = conn
            .prepare(
                "SELECT type, name, sql FROM sqlite_schema
                 WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY rowid",
            )
            .unwrap();
        let mut schema = Schema {
            tables: Vec::new(),
            indexes: Vec::new(),
        };
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))
            .unwrap();
        for row in rows {
            let (kind, name, sql) = row.unwrap();
            match kind.as_str() {
                "table" => schema.tables.push((name, sql)),
                "index" => schema.indexes.push(sql),
                _ => {}
            }
        }
        // Referenced tables first: foreign keys are checked row by row.
        let mut ordered: Vec<(String, String)> = Vec::new();
        while !schema.tables.is_empty() {
            let ready = (0..schema.tables.len())
                .find(|&i| {
                    references(&conn, &schema.tables[i].0).iter().all(|parent| {
                        parent == &schema.tables[i].0 || ordered.iter().any(|(n, _)| n == parent)
                    })
                })
                .expect("foreign keys without a cycle");
            ordered.push(schema.tables.remove(ready));
        }
        schema.tables = ordered;
        schema
    }
}

/// The tables `table` has foreign keys to.
fn references(conn: &Connection, table: &str) -> Vec<String> {
    let mut stmt = conn
        .prepare("SELECT DISTINCT \"table\" FROM pragma_foreign_key_list(?1)")
        .unwrap();
    stmt.query_map([table], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Seconds to read every column of every row of each table, and its rows.
fn read_all(path: &Path, tables: &[(String, String)]) -> Vec<(f64, u64)> {
    let conn = Connection::open(path).expect("source database");
    conn.pragma_update(None, "cache_size", -512 * 1024).unwrap();
    tables
        .iter()
        .map(|(name, _)| {
            let started = Instant::now();
            let mut stmt = conn.prepare(&format!("SELECT * FROM \"{name}\"")).unwrap();
            let columns = stmt.column_count();
            let mut rows = stmt.query([]).unwrap();
            let (mut n, mut bytes) = (0u64, 0usize);
            while let Some(row) = rows.next().unwrap() {
                n += 1;
                for c in 0..columns {
                    bytes += match row.get_ref(c).unwrap() {
                        rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                            t.len()
                        }
                        _ => 8,
                    };
                }
            }
            std::hint::black_box(bytes);
            (started.elapsed().as_secs_f64(), n)
        })
        .collect()
}

/// Seconds each step of a copy took.
struct Copy {
    tables: Vec<f64>,
    indexes: f64,
    checkpoint: f64,
}

impl Copy {
    fn total(&self) -> f64 {
        self.tables.iter().sum::<f64>() + self.indexes + self.checkpoint
    }
}

/// Copies `source` into a new database at `target`, table by table, with
/// the indexes created before the rows (`indexes_after` false) or after.
fn copy(source: &Path, target: &Path, schema: &Schema, indexes_after: bool) -> Copy {
    remove(target);
    let conn = Connection::open(target).expect("target database");
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn.pragma_update(None, "foreign_keys", "ON").unwrap();
    conn.pragma_update(None, "cache_size", -512 * 1024).unwrap();
    // SQLite's own checkpoints after each commit stay on: with the whole copy
    // in the WAL, every page read searches an ever longer WAL index (links
    // took 137 s instead of 26).
    for (_, sql) in &schema.tables {
        conn.execute_batch(sql).unwrap();
    }
    let build = |conn: &Connection| {
        for sql in &schema.indexes {
            conn.execute_batch(sql).unwrap();
        }
    };
    if !indexes_after {
        build(&conn);
    }
    conn.execute("ATTACH ?1 AS source", [source.to_str().unwrap()])
        .unwrap();
    let tables = schema
        .tables
        .iter()
        .map(|(name, _)| {
            let started = Instant::now();
            conn.execute_batch(&format!(
                "BEGIN; INSERT INTO main.\"{name}\" SELECT * FROM source.\"{name}\"; COMMIT;"
            ))
            .unwrap();
            started.elapsed().as_secs_f64()
        })
        .collect();
    let started = Instant::now();
    if indexes_after {
        build(&conn);
    }
    let indexes = started.elapsed().as_secs_f64();
    let started = Instant::now();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    let checkpoint = started.elapsed().as_secs_f64();
    drop(conn);
    remove(target);
    Copy {
        tables,
        indexes,
        checkpoint,
    }
}

/// Removes a database and its WAL files.
fn remove(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}
