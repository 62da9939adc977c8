//! `migrate-store --to postgres://…`: the configured SQLite database copied
//! into an empty PostgreSQL database, checked, in one transaction.
//!
//! The source is read inside one SQLite read transaction, so the copy is the
//! database as of one instant even while the service keeps writing (in WAL
//! mode a reader blocks no writer; the WAL only grows until the copy ends).
//! The target gets its schema from the service's own migrations, then every
//! table is streamed in with binary `COPY`, all in one PostgreSQL
//! transaction: an error anywhere, or a verification that does not match,
//! rolls it back and leaves the target as empty as it was.
//!
//! Text is copied as the service itself stores it on PostgreSQL: a U+0000,
//! which PostgreSQL text cannot hold, becomes U+FFFD (counted and reported;
//! the verification reads the two as the same). Text that is not UTF-8 at
//! all (the service never writes it) stops the copy, naming the row.
//!
//! Foreign keys are dropped for the copy and put back, under the same names
//! and definitions, before the commit: PostgreSQL then checks each of them
//! with one join instead of a trigger per row, and does not queue a pending
//! trigger event per copied row (millions of them run out of memory).
//!
//! Raw deliveries of a person erased after they arrived (they match a
//! tombstone: see `privacy.rs`) are not copied, and counted; a history row
//! that pointed at one keeps its change without the pointer.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value as Json;
use tokio::runtime::Handle;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls};

use crate::config::{Config, DatabaseUrl, Store};
use crate::store::postgres::{Session, Statements};
use crate::store::sql::{Sql, Value};
use crate::store::view::{self, Found};
use crate::store::{DbError, Location, PostgresSettings};

/// Every table, parents before children, with the columns that name a row
/// in an error (its key, also the order rows are copied in).
const TABLES: &[(&str, &[&str])] = &[
    ("leads", &["id"]),
    ("lead_emails", &["id"]),
    ("lead_phones", &["id"]),
    ("lead_visitors", &["platform", "visitor_id"]),
    ("lead_fields", &["lead_id", "key"]),
    ("lead_tags", &["lead_id", "tag"]),
    ("conversations", &["id"]),
    ("messages", &["id"]),
    ("notes", &["id"]),
    ("deliveries", &["id"]),
    ("decisions", &["id"]),
    ("history", &["id"]),
    ("duplicate_links", &["lead_b", "lead_a"]),
    ("lead_pins", &["lead_id", "field"]),
    ("api_tokens", &["name"]),
    ("sessions", &["id_hash"]),
    ("merges", &["id"]),
    ("dismissed_duplicates", &["lead_a", "lead_b"]),
    ("tombstones", &["hash"]),
    ("outbound_events", &["id"]),
    ("outbound_deliveries", &["endpoint", "event_id"]),
    ("outbound_endpoints", &["name"]),
    ("audit_log", &["id"]),
];

/// Most columns a table has (a row's values are kept on the stack).
const MAX_COLUMNS: usize = 16;
/// Leads read through the service's view on both stores, besides the first
/// and the last.
const SAMPLE: i64 = 100;
/// Longest wait for the target's tables to be free to lock.
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// What a finished migration did.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Tables copied.
    pub tables: usize,
    /// Rows copied, all tables together.
    pub rows: u64,
    /// Leads read back on both stores and found equal.
    pub sampled: usize,
    /// Text values whose U+0000 were stored as U+FFFD.
    pub replaced_nul: u64,
    /// How long the whole copy took, verification included.
    pub elapsed: Duration,
    /// Deliveries of erased people not copied.
    pub skipped: u64,
}

/// How old data is checked against erasures: the tombstones' key and the
/// region phones are read in.
#[derive(Debug, Clone)]
pub struct Erasures {
    /// `[privacy] secret`.
    pub key: Option<crate::privacy::Key>,
    /// `[merge] default_region`.
    pub region: phonenumber::country::Id,
}

/// Runs the command for `config` and prints its outcome.
pub fn command(config: &Config, to: &str) -> ExitCode {
    let source = match config.database.store() {
        Store::Sqlite(path) => path,
        Store::Postgres(url) => {
            eprintln!(
                "error: the configured store is already PostgreSQL ({}); migrate-store copies \
                 the SQLite file of [database] path: point the config at it (and unset \
                 CRM_DATABASE_URL)",
                url.redacted()
            );
            return ExitCode::from(2);
        }
    };
    let target = DatabaseUrl::new(to);
    if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
        eprintln!(
            "error: --to takes a postgres://… URL, not {:?}",
            target.redacted()
        );
        return ExitCode::from(2);
    }
    if !source.is_file() {
        eprintln!(
            "error: {}: no such SQLite database (the [database] path of the config)",
            source.display()
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let settings = PostgresSettings {
        url: to.to_owned(),
        pool_size: 2,
        connect_timeout: Duration::from_millis(config.database.connect_timeout_ms),
        statement_timeout: Duration::from_millis(config.database.statement_timeout_ms),
    };
    let busy_timeout = Duration::from_millis(config.database.busy_timeout_ms);
    eprintln!(
        "copying SQLite file {} into PostgreSQL {}",
        source.display(),
        target.redacted()
    );
    let result = {
        let _entered = runtime.enter();
        let erasures = Erasures {
            key: crate::privacy::Key::of(config),
            region: config.merge.default_region,
        };
        run(
            &source,
            busy_timeout,
            &settings,
            runtime.handle(),
            &erasures,
        )
    };
    match result {
        Ok(s) => {
            let secs = s.elapsed.as_secs_f64();
            println!(
                "copied {} tables, {} rows in {secs:.1} s ({:.0} rows/s) into {}",
                s.tables,
                s.rows,
                s.rows as f64 / secs.max(0.001),
                target.redacted()
            );
            if s.replaced_nul > 0 {
                println!(
                    "warning: {} text values held U+0000, which PostgreSQL text cannot: \
                     stored as U+FFFD, as the service does on PostgreSQL",
                    s.replaced_nul
                );
            }
            println!(
                "verified: {} tables, {} rows, {} leads sampled",
                s.tables, s.rows, s.sampled
            );
            println!(
                "skipped {} deliveries of people erased after they arrived",
                s.skipped
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("no row was copied; run migrate-store again once the cause is fixed");
            ExitCode::from(1)
        }
    }
}

/// Copies the SQLite database at `source` into the empty PostgreSQL
/// database of `settings`, then checks the copy. Call it outside the
/// runtime whose `handle` is given, on a thread that entered it.
pub fn run(
    source: &Path,
    busy_timeout: Duration,
    settings: &PostgresSettings,
    handle: &Handle,
    erasures: &Erasures,
) -> Result<Summary, String> {
    let started = Instant::now();
    let lite = open_source(source, busy_timeout)?;
    let skip =
        erased_deliveries(&lite, erasures).map_err(|e| format!("{}: {e}", source.display()))?;
    let target = DatabaseUrl::new(&settings.url).redacted();

    let (client, connection) =
        connect(settings, handle).map_err(|e| format!("target database {target}: {e}"))?;
    // The schema, by the service's own migrations (committed on their own:
    // a failed copy leaves an empty database with the schema, ready for
    // another try).
    let db = crate::store::Db::connect(&Location::Postgres(settings.clone()))
        .map_err(|e| format!("target database {target}: {e}"))?;
    let fault = db.write_fault(Duration::MAX);
    db.close();
    if let Some(fault) = fault {
        return Err(format!("target database {target}: {fault}"));
    }
    let statements = Statements::default();
    let pg = Target::new(&client, &statements, handle);
    let result = pg.run("BEGIN").and_then(|()| copy_all(&lite, &pg, &skip));
    let result = match result {
        Ok(copied) => pg
            .run("COMMIT")
            .map(|()| copied)
            .map_err(|e| format!("commit refused: {e}")),
        Err(e) => {
            // Closing the connection rolls back too; ask for it explicitly
            // so that the server frees the transaction at once.
            let _ = pg.run("ROLLBACK");
            Err(e)
        }
    };
    // Say goodbye to the server rather than vanish mid-connection.
    drop(pg);
    drop(client);
    let _ = handle.block_on(connection);
    let _ = lite.execute_batch("COMMIT");
    let copied = result?;
    Ok(Summary {
        elapsed: started.elapsed(),
        ..copied
    })
}

/// The source, read-only, inside a read transaction whose snapshot has
/// begun; refused unless its schema is this program's.
fn open_source(path: &Path, busy_timeout: Duration) -> Result<Connection, String> {
    let err = |e: rusqlite::Error| format!("{}: {e}", path.display());
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    conn.busy_timeout(busy_timeout).map_err(err)?;
    // 64 MiB of page cache: the sampled leads are read twice.
    conn.pragma_update(None, "cache_size", -65_536)
        .map_err(err)?;
    conn.execute_batch("BEGIN; SELECT count(*) FROM sqlite_schema;")
        .map_err(err)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    let latest = crate::store::latest_version();
    if version != latest {
        return Err(format!(
            "{}: schema version {version}, but this program copies version {latest}: {}",
            path.display(),
            if version < latest {
                "start the service on it once (or run an operator command such as \
                 `export --output /dev/null`) to bring it up to date"
            } else {
                "use the newer program that wrote it"
            }
        ));
    }
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .map_err(err)?;
    let names: BTreeSet<String> = stmt
        .query_map([], |r| r.get(0))
        .map_err(err)?
        .collect::<Result<_, _>>()
        .map_err(err)?;
    drop(stmt);
    let known: BTreeSet<String> = TABLES.iter().map(|(t, _)| t.to_string()).collect();
    if let Some(extra) = names.difference(&known).next() {
        return Err(format!(
            "{}: table {extra} is not one migrate-store knows how to copy",
            path.display()
        ));
    }
    if let Some(missing) = known.difference(&names).next() {
        return Err(format!("{}: table {missing} is missing", path.display()));
    }
    Ok(conn)
}

/// The connection the copy runs on, and the task that drives it on the
/// runtime (it ends once the client is dropped).
fn connect(
    settings: &PostgresSettings,
    handle: &Handle,
) -> Result<(Client, tokio::task::JoinHandle<()>), String> {
    let mut config: tokio_postgres::Config = settings
        .url
        .parse()
        .map_err(|e| format!("database URL: {e}"))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(settings.connect_timeout);
    }
    config.application_name("crm-responder migrate-store");
    let (client, connection) = handle
        .block_on(config.connect(NoTls))
        .map_err(|e| pg_error(&e))?;
    let connection = handle.spawn(async move {
        if let Err(e) = connection.await {
            tracing::error!(error = %e, "PostgreSQL connection failed");
        }
    });
    Ok((client, connection))
}

/// The copy inside the open transaction: tables locked and found empty,
/// foreign keys set aside, every table copied, the copy checked, foreign
/// keys back and sequences past the copied ids.
fn copy_all(lite: &Connection, pg: &Target<'_>, skip: &BTreeSet<i64>) -> Result<Summary, String> {
    let all = TABLES
        .iter()
        .map(|(t, _)| quote(t))
        .collect::<Vec<_>>()
        .join(", ");
    pg.run(&format!(
        "SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = {};
         LOCK TABLE {all} IN ACCESS EXCLUSIVE MODE;",
        LOCK_TIMEOUT.as_millis()
    ))
    .map_err(|e| format!("cannot lock the target's tables (is a service using it?): {e}"))?;
    for (table, _) in TABLES {
        let sql = format!("SELECT count(*) FROM {}", quote(table));
        let rows: i64 = pg
            .sql()
            .query_row(&sql, &[], |r| r.get(0))
            .map_err(|e| e.to_string())?;
        if rows > 0 {
            return Err(format!(
                "the target database is not empty: {table} has {rows} rows; migrate-store \
                 copies into an empty database only"
            ));
        }
    }

    let foreign_keys = pg
        .sql()
        .query_all(
            "SELECT conrelid::regclass::text, conname::text, pg_get_constraintdef(oid)
             FROM pg_constraint
             WHERE contype = 'f' AND connamespace = current_schema()::regnamespace
             ORDER BY conrelid, conname",
            &[],
            |r| {
                Ok((
                    r.get::<String>(0)?,
                    r.get::<String>(1)?,
                    r.get::<String>(2)?,
                ))
            },
        )
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|(table, _, _)| TABLES.iter().any(|(t, _)| t == table))
        .collect::<Vec<_>>();
    // Only this service's tables' keys: anything else in the schema is left alone.
    for (table, name, _) in &foreign_keys {
        pg.run(&format!(
            "ALTER TABLE {table} DROP CONSTRAINT {}",
            quote(name)
        ))?;
    }

    let mut counts = Vec::with_capacity(TABLES.len());
    let (mut rows, mut replaced_nul) = (0, 0);
    for (table, key) in TABLES {
        let (n, nul) = copy_table(lite, pg, table, key, skip)?;
        rows += n;
        replaced_nul += nul;
        counts.push(n);
    }

    let checking = Instant::now();
    for (table, name, definition) in &foreign_keys {
        pg.run(&format!(
            "ALTER TABLE {table} ADD CONSTRAINT {} {definition}",
            quote(name)
        ))
        .map_err(|e| format!("{table}: {e}"))?;
    }
    // Statistics now, not when autovacuum gets to it: without them the
    // planner reads a lead's history and links by scanning whole tables
    // (50 ms a lead instead of 1), here and in the service's first minutes.
    pg.run(&format!("ANALYZE {all}"))?;
    eprintln!(
        "{:<16} {:>10} checked, tables analysed in {:.1} s",
        "foreign keys",
        foreign_keys.len(),
        checking.elapsed().as_secs_f64()
    );

    let sampled = verify(lite, pg, &counts, skip)?;

    for (table, key) in TABLES {
        if *key == ["id"] {
            pg.sql()
                .execute(
                    &format!(
                        "SELECT setval(pg_get_serial_sequence(?1, 'id'), max(id)) FROM {}
                     HAVING max(id) IS NOT NULL",
                        quote(table)
                    ),
                    crate::args![table],
                )
                .map_err(|e| format!("{table}: id sequence: {e}"))?;
        }
    }
    Ok(Summary {
        tables: TABLES.len(),
        rows,
        sampled,
        replaced_nul,
        elapsed: Duration::ZERO,
        skipped: skip.len() as u64,
    })
}

/// The ids of the source's deliveries that belong to people erased after
/// they arrived.
fn erased_deliveries(lite: &Connection, erasures: &Erasures) -> Result<BTreeSet<i64>, String> {
    let conn: &dyn Sql = lite;
    let tombstones = crate::privacy::Tombstones::load(conn, erasures.key.as_ref())?;
    let mut skip = BTreeSet::new();
    if tombstones.is_empty() {
        return Ok(skip);
    }
    conn.each_row(
        "SELECT id, platform, body, received_at FROM deliveries",
        &[],
        &mut |r| {
            let (platform, body, at): (String, Vec<u8>, String) = (r.get(1)?, r.get(2)?, r.get(3)?);
            if tombstones.erases_delivery(&platform, &body, &at, erasures.region) {
                skip.insert(r.get::<i64>(0)?);
            }
            Ok(())
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(skip)
}

/// Streams one table into the target with binary `COPY`; answers its rows
/// and the text values whose U+0000 became U+FFFD.
fn copy_table(
    lite: &Connection,
    pg: &Target<'_>,
    table: &str,
    key: &[&str],
    skip: &BTreeSet<i64>,
) -> Result<(u64, u64), String> {
    let (client, handle) = (pg.client, pg.handle);
    let started = Instant::now();
    let sqlite = |e: rusqlite::Error| format!("{table} (SQLite): {e}");
    let postgres = |e: tokio_postgres::Error| format!("{table}: {}", pg_error(&e));

    // Columns by name: the target's, in its order, each found in the source.
    let shape = handle
        .block_on(client.prepare(&format!("SELECT * FROM {} LIMIT 0", quote(table))))
        .map_err(postgres)?;
    let columns: Vec<(String, Type)> = shape
        .columns()
        .iter()
        .map(|c| (c.name().to_owned(), c.type_().clone()))
        .collect();
    let source_columns: BTreeSet<String> = lite
        .prepare(&format!("SELECT * FROM {} LIMIT 0", quote(table)))
        .map_err(sqlite)?
        .column_names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let target_columns: BTreeSet<String> = columns.iter().map(|(c, _)| c.clone()).collect();
    if source_columns != target_columns {
        return Err(format!(
            "{table}: the columns differ: SQLite has {source_columns:?}, PostgreSQL {target_columns:?}"
        ));
    }
    if columns.len() > MAX_COLUMNS {
        return Err(format!("{table}: more than {MAX_COLUMNS} columns"));
    }
    let list = columns
        .iter()
        .map(|(c, _)| quote(c))
        .collect::<Vec<_>>()
        .join(", ");
    let key_at: Vec<usize> = key
        .iter()
        .map(|k| {
            columns
                .iter()
                .position(|(c, _)| c == k)
                .expect("key column")
        })
        .collect();
    let order = key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ");

    let total: i64 = lite
        .query_row(&format!("SELECT count(*) FROM {}", quote(table)), [], |r| {
            r.get(0)
        })
        .map_err(sqlite)?;
    // Erased people's deliveries stay behind; history rows lose the pointer.
    let skipped = if table == "deliveries" {
        skip.len() as u64
    } else {
        0
    };
    let total = total as u64 - skipped;
    let skipped_row = |row: &rusqlite::Row<'_>| {
        table == "deliveries" && row.get::<_, i64>("id").is_ok_and(|id| skip.contains(&id))
    };
    let bar = super::progress(total, "{msg:<16} {human_pos}/{human_len} rows");
    bar.set_message(table.to_owned());

    let sink = handle
        .block_on(client.copy_in::<_, bytes::Bytes>(&format!(
            "COPY {} ({list}) FROM STDIN (FORMAT binary)",
            quote(table)
        )))
        .map_err(postgres)?;
    let types: Vec<Type> = columns.iter().map(|(_, t)| t.clone()).collect();
    let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &types));

    let mut stmt = lite
        .prepare(&format!(
            "SELECT {list} FROM {} ORDER BY {order}",
            quote(table)
        ))
        .map_err(sqlite)?;
    let mut source = stmt.query([]).map_err(sqlite)?;
    let (mut copied, mut nul): (u64, u64) = (0, 0);
    while let Some(row) = source.next().map_err(sqlite)? {
        if skipped_row(row) {
            continue;
        }
        let mut values = [Value::Null; MAX_COLUMNS];
        for (i, (name, ty)) in columns.iter().enumerate() {
            let mut cell = row.get_ref(i).map_err(sqlite)?;
            if table == "history"
                && name == "delivery_id"
                && let ValueRef::Integer(id) = cell
                && skip.contains(&id)
            {
                cell = ValueRef::Null;
            }
            let value = value_for(cell, ty).map_err(|why| {
                format!(
                    "{table} row {}, column {name}: {why}; fix the row in the SQLite database \
                     and run migrate-store again",
                    row_key(row, key, &key_at)
                )
            })?;
            // `Value` stores it as U+FFFD on PostgreSQL, as for the service.
            if let Value::Text(text) = value
                && memchr::memchr(0, text.as_bytes()).is_some()
            {
                nul += 1;
            }
            values[i] = value;
        }
        let params = values[..columns.len()]
            .iter()
            .map(|v| v as &(dyn ToSql + Sync));
        handle
            .block_on(writer.as_mut().write_raw(params))
            .map_err(|e| {
                format!(
                    "{table} row {}: {}",
                    row_key(row, key, &key_at),
                    pg_error(&e)
                )
            })?;
        copied += 1;
        if copied.is_multiple_of(4096) {
            bar.set_position(copied);
        }
    }
    let written = handle
        .block_on(writer.as_mut().finish())
        .map_err(postgres)?;
    bar.finish_and_clear();
    if written != copied || copied != total {
        return Err(format!(
            "{table}: {total} rows in SQLite, {copied} read, {written} written to PostgreSQL"
        ));
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{table:<16} {copied:>10} rows in {secs:5.1} s ({:.0} rows/s)",
        copied as f64 / secs.max(0.001)
    );
    if nul > 0 {
        eprintln!("{table:<16} {nul:>10} text values with U+0000 stored as U+FFFD");
    }
    Ok((copied, nul))
}

/// The parameter a SQLite cell is for a target column of type `ty`, or why
/// it cannot be stored there.
fn value_for<'a>(cell: ValueRef<'a>, ty: &Type) -> Result<Value<'a>, String> {
    let text = |bytes: &'a [u8]| -> Result<Value<'a>, String> {
        std::str::from_utf8(bytes)
            .map(Value::Text)
            .map_err(|e| format!("the text is not valid UTF-8 ({e}), which PostgreSQL refuses"))
    };
    Ok(match (cell, ty) {
        (ValueRef::Null, _) => Value::Null,
        (ValueRef::Text(b) | ValueRef::Blob(b), &Type::BYTEA) => Value::Blob(b),
        (ValueRef::Integer(i), _) => Value::Int(i),
        (ValueRef::Real(r), &Type::INT8 | &Type::INT4 | &Type::INT2) => {
            if r.fract() != 0.0 || !r.is_finite() {
                return Err(format!("{r} is not an integer"));
            }
            Value::Int(r as i64)
        }
        (ValueRef::Real(r), _) => Value::Real(r),
        (ValueRef::Text(b) | ValueRef::Blob(b), &Type::INT8 | &Type::INT4 | &Type::INT2) => {
            let s = std::str::from_utf8(b).unwrap_or_default();
            Value::Int(
                s.trim()
                    .parse()
                    .map_err(|_| format!("{s:?} is not an integer"))?,
            )
        }
        (ValueRef::Text(b) | ValueRef::Blob(b), &Type::FLOAT8 | &Type::FLOAT4) => {
            let s = std::str::from_utf8(b).unwrap_or_default();
            Value::Real(
                s.trim()
                    .parse()
                    .map_err(|_| format!("{s:?} is not a number"))?,
            )
        }
        (ValueRef::Text(b) | ValueRef::Blob(b), _) => text(b)?,
    })
}

/// How an error names a row: its key's values.
fn row_key(row: &rusqlite::Row<'_>, key: &[&str], at: &[usize]) -> String {
    let parts: Vec<String> = key
        .iter()
        .zip(at)
        .map(|(name, &i)| match row.get_ref(i) {
            Ok(ValueRef::Integer(v)) => format!("{name} {v}"),
            Ok(ValueRef::Text(t)) => format!("{name} {:?}", String::from_utf8_lossy(t)),
            Ok(other) => format!("{name} {other:?}"),
            Err(e) => format!("{name} ({e})"),
        })
        .collect();
    parts.join(", ")
}

/// Row counts equal on both sides, and a sample of leads (the first, the
/// last and [`SAMPLE`] spread over the ids) equal through the service's
/// JSON view. Answers the leads sampled.
fn verify(
    lite: &Connection,
    pg: &Target<'_>,
    counts: &[u64],
    skip: &BTreeSet<i64>,
) -> Result<usize, String> {
    let started = Instant::now();
    for ((table, _), &copied) in TABLES.iter().zip(counts) {
        let sql = format!("SELECT count(*) FROM {}", quote(table));
        let there: u64 = pg
            .sql()
            .query_row(&sql, &[], |r| r.get(0))
            .map_err(|e| e.to_string())?;
        let mut here: u64 = (lite as &dyn Sql)
            .query_row(&sql, &[], |r| r.get(0))
            .map_err(|e| e.to_string())?;
        if *table == "deliveries" {
            here -= skip.len() as u64;
        }
        if here != there || here != copied {
            return Err(format!(
                "verification failed: {table} has {here} rows in SQLite, {there} in PostgreSQL"
            ));
        }
    }
    let mut sample = sample_ids(lite).map_err(|e| e.to_string())?;
    // Leads whose history pointed at a skipped delivery read without the
    // pointer on PostgreSQL, as they should.
    for &delivery in skip {
        let leads: Vec<i64> = (lite as &dyn Sql)
            .query_all(
                "SELECT lead_id FROM history WHERE delivery_id = ?1",
                crate::args![delivery],
                |r| r.get(0),
            )
            .map_err(|e| e.to_string())?;
        for lead in leads {
            sample.remove(&lead);
        }
    }
    for &id in &sample {
        let here = lead_json(lite, id).map_err(|e| format!("lead {id} (SQLite): {e}"))?;
        let there = lead_json(pg.sql(), id).map_err(|e| format!("lead {id} (PostgreSQL): {e}"))?;
        if let Some(difference) = difference(&here, &there, String::new()) {
            return Err(format!(
                "verification failed: lead {id} reads differently from PostgreSQL: {difference}"
            ));
        }
    }
    eprintln!(
        "{:<16} {:>10} leads compared in {:.1} s",
        "verified",
        sample.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(sample.len())
}

/// The first lead, the last, and [`SAMPLE`] spread evenly between them.
fn sample_ids(lite: &Connection) -> Result<BTreeSet<i64>, DbError> {
    let lite = lite as &dyn Sql;
    let (first, last): (Option<i64>, Option<i64>) =
        lite.query_row("SELECT min(id), max(id) FROM leads", &[], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let (Some(first), Some(last)) = (first, last) else {
        return Ok(BTreeSet::new());
    };
    let mut ids = BTreeSet::from([first, last]);
    for k in 1..=SAMPLE {
        let at = first + ((last - first) as i128 * k as i128 / (SAMPLE + 1) as i128) as i64;
        if let Some(id) = lite.query_opt(
            "SELECT id FROM leads WHERE id >= ?1 ORDER BY id LIMIT 1",
            crate::args![at],
            |r| r.get::<i64>(0),
        )? {
            ids.insert(id);
        }
    }
    Ok(ids)
}

/// What `GET /api/leads/{id}` shows of a lead, as JSON.
fn lead_json(conn: &dyn Sql, id: i64) -> Result<Json, DbError> {
    Ok(match view::lead(conn, id)? {
        Found::Lead(lead) => serde_json::to_value(&lead)
            .map_err(|e| DbError::Internal(format!("lead {id} as JSON: {e}")))?,
        Found::MergedInto(into) => serde_json::json!({ "id": id, "merged_into": into }),
        Found::Missing => Json::Null,
    })
}

/// Where the JSON of a lead read from SQLite (`a`) and from PostgreSQL
/// (`b`) first differ, and how; a U+0000 read back as U+FFFD is no
/// difference (see the module's documentation).
fn difference(a: &Json, b: &Json, path: String) -> Option<String> {
    match (a, b) {
        _ if a == b => None,
        (Json::String(x), Json::String(y)) if x.replace('\0', "\u{FFFD}") == *y => None,
        (Json::Object(x), Json::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let null = Json::Null;
                let (p, q) = (x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null));
                difference(p, q, format!("{path}.{k}"))
            })
        }
        (Json::Array(x), Json::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| difference(p, q, format!("{path}[{i}]"))),
        _ => Some(format!(
            "{}: SQLite {}, PostgreSQL {}",
            if path.is_empty() { "." } else { &path },
            clip(a),
            clip(b)
        )),
    }
}

fn clip(value: &Json) -> String {
    let text = value.to_string();
    match text.char_indices().nth(200) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

/// `name` as a quoted SQL identifier (table and column names come from
/// [`TABLES`] and the catalogs, never from input).
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A PostgreSQL error with the server's message and detail.
fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_owned(),
        },
        None => e.to_string(),
    }
}

/// The copy's connection: the store's PostgreSQL session over it, and its
/// statements without parameters with the server's detail kept.
struct Target<'a> {
    client: &'a Client,
    handle: &'a Handle,
    session: Session<'a>,
}

impl<'a> Target<'a> {
    fn new(client: &'a Client, statements: &'a Statements, handle: &'a Handle) -> Self {
        Target {
            client,
            handle,
            session: Session::plain(client, statements, handle),
        }
    }

    /// The seam the store's functions take.
    fn sql(&self) -> &dyn Sql {
        &self.session
    }

    /// Runs statements without parameters; an error keeps the server's detail.
    fn run(&self, sql: &str) -> Result<(), String> {
        self.handle
            .block_on(self.client.batch_execute(sql))
            .map_err(|e| pg_error(&e))
    }
}
