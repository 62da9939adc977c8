//! `replay`: re-applies stored raw deliveries through the same translation
//! and apply path as live ones, in the order they were received.
//!
//! `--failed` takes the deliveries kept as failed (bodies an older version
//! could not parse): each one that translates now is applied and its row
//! becomes the applied delivery, under the key a live delivery of the same
//! body would have had. `--all` takes every delivery; those already applied
//! are recognised redeliveries, so replaying twice changes nothing. With
//! `--from OTHER.sqlite3` deliveries are read from another database, e.g.
//! to rebuild a fresh database under a new merge policy; that source is
//! always a SQLite file (opened by path), whatever store the target is.
//!
//! Deliveries of an erased person received before their erasure are
//! skipped (and counted): the tombstones of the target and of the source
//! are read first, under `[privacy] secret` ([`Selection::key`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use rusqlite::{Connection, OpenFlags};

use super::import::{self, Row};
use crate::args;
use crate::event::Platform;
use crate::platforms;
use crate::privacy::Tombstones;
use crate::store::apply::{self, Outcome, Policy};
use crate::store::inbox::{self, NewDelivery};
use crate::store::sql::Sql;
use crate::store::{Db, DbError};

/// Deliveries read and applied per write job.
const PAGE: usize = 500;

/// Which deliveries to replay.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only deliveries kept as failed.
    pub failed_only: bool,
    /// Only deliveries received at or after this time (RFC 3339 UTC, as stored).
    pub since: Option<String>,
    /// Read deliveries from another database instead of the target.
    pub from: Option<Source>,
    /// Only the last N of the deliveries selected otherwise.
    pub last: Option<u64>,
    /// The key of erasure tombstones (`[privacy] secret`); without it, a
    /// database holding tombstones is refused.
    pub key: Option<crate::privacy::Key>,
}

/// Where replayed deliveries are read from, when not from the target.
#[derive(Clone)]
pub enum Source {
    /// Another SQLite file (`replay --from OLD.sqlite3`, a preview of a
    /// SQLite deployment), opened read-only.
    File(PathBuf),
    /// An open store (a preview of a PostgreSQL deployment reads the live
    /// database and replays into scratch files).
    Store(Db),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(path) => write!(f, "File({})", path.display()),
            Source::Store(db) => write!(f, "Store({})", db.dialect()),
        }
    }
}

/// A stored delivery.
#[derive(Debug, Clone)]
struct Stored {
    id: i64,
    platform: String,
    idem_key: String,
    received_at: String,
    body: Vec<u8>,
    failed: bool,
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Deliveries read.
    pub seen: u64,
    /// Applied now for the first time.
    pub applied: u64,
    /// Already applied before: nothing changed.
    pub unchanged: u64,
    /// Leads created.
    pub created: u64,
    /// Existing leads changed.
    pub merged: u64,
    /// Still not translatable: delivery id and reason.
    pub failed: Vec<(i64, String)>,
    /// Deliveries of people erased after they arrived: not applied.
    pub skipped: u64,
}

/// Parses `--since`: an RFC 3339 time or a date (midnight UTC), into the
/// stored form so that it compares as a string.
pub fn parse_since(s: &str) -> Result<String, String> {
    if let Some(t) = crate::event::normalize_rfc3339(s) {
        return Ok(t);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s.trim(), format)
        .map(|d| format!("{d}T00:00:00.000Z"))
        .map_err(|_| format!("--since {s:?}: expected a date (2026-11-23) or an RFC 3339 time"))
}

/// Replays the selected deliveries into `db` under `policy`.
pub async fn run(db: &Db, policy: &Policy, selection: &Selection) -> Result<Summary, String> {
    let mut total = count(db, selection).await.map_err(|e| e.to_string())?;
    let mut after = (String::new(), 0i64);
    if let Some(last) = selection.last.filter(|&n| n < total) {
        // Start after the delivery just before the last N.
        after = start_of_last(db, selection, last)
            .await
            .map_err(|e| e.to_string())?;
        total = last;
    }
    let tombstones = Arc::new(tombstones(db, selection).await?);
    let bar = super::progress(total, "{pos}/{len} deliveries");
    let same_db = selection.from.is_none();
    let mut summary = Summary::default();
    loop {
        let page = read_page(db, selection, after.clone())
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = page.last() else { break };
        after = (last.received_at.clone(), last.id);
        let policy = policy.clone();
        let tombstones = tombstones.clone();
        let results = db
            .write(move |conn| {
                let conn: &dyn Sql = conn;
                let mut out = Vec::with_capacity(page.len());
                for stored in page {
                    let region = policy.merge.default_region;
                    let (platform, body, at) =
                        (&stored.platform, &stored.body, &stored.received_at);
                    if tombstones.erases_delivery(platform, body, at, region) {
                        out.push((stored.id, Ok(Ok(None))));
                        continue;
                    }
                    conn.batch("SAVEPOINT replay_one")?;
                    let result = replay_one(conn, &policy, &stored, same_db).map(|r| r.map(Some));
                    let end = if result.is_ok() {
                        "RELEASE replay_one"
                    } else {
                        "ROLLBACK TO replay_one; RELEASE replay_one"
                    };
                    conn.batch(end)?;
                    out.push((stored.id, result));
                }
                Ok(out)
            })
            .await
            .map_err(|e| e.to_string())?;
        for (id, result) in results {
            summary.seen += 1;
            match result {
                Ok(Ok(None)) => summary.skipped += 1,
                Ok(Ok(Some(outcome))) if outcome.redelivery => summary.unchanged += 1,
                Ok(Ok(Some(outcome))) => {
                    summary.applied += 1;
                    summary.created += outcome.created as u64;
                    summary.merged += (outcome.merged || outcome.folded) as u64;
                }
                Ok(Err(reason)) => summary.failed.push((id, reason)),
                Err(e) => summary.failed.push((id, e.to_string())),
            }
        }
        bar.set_position(summary.seen);
    }
    bar.finish_and_clear();
    Ok(summary)
}

/// The tombstones replayed deliveries are checked against: the target's
/// and, with `--from`, the source's.
async fn tombstones(db: &Db, selection: &Selection) -> Result<Tombstones, String> {
    let key = selection.key.clone();
    let mut all = db
        .read(move |conn| Ok(Tombstones::load(conn, key.as_ref())))
        .await
        .map_err(|e| e.to_string())??;
    if selection.from.is_some() {
        let key = selection.key.clone();
        let source = on_source(db, selection, move |conn| {
            Ok(Tombstones::load(conn, key.as_ref()))
        })
        .await
        .map_err(|e| e.to_string())??;
        all.merge(source);
    }
    Ok(all)
}

/// Applies one stored delivery. `Ok(Err(reason))`: it still does not translate.
fn replay_one(
    conn: &dyn Sql,
    policy: &Policy,
    stored: &Stored,
    same_db: bool,
) -> Result<Result<Outcome, String>, DbError> {
    if stored.platform == import::PLATFORM {
        return match serde_json::from_slice::<Row>(&stored.body) {
            Ok(row) => {
                let key = row.key(policy);
                import::import_row(conn, policy, &row, &key, &stored.received_at).map(Ok)
            }
            Err(e) => Ok(Err(format!("not an import row: {e}"))),
        };
    }
    let Some(platform) = Platform::parse(&stored.platform) else {
        return Ok(Err(format!("unknown platform {:?}", stored.platform)));
    };
    let body = Bytes::copy_from_slice(&stored.body);
    let (event, key) = match platforms::translate(platform, &body) {
        Ok(parsed) => parsed,
        Err(reason) => {
            if same_db {
                conn.execute(
                    "UPDATE deliveries SET error = ?2 WHERE id = ?1",
                    args![stored.id, reason],
                )?;
            } else {
                let delivery = NewDelivery::failed(platform, body, stored.received_at.clone());
                inbox::insert_failed(conn, &delivery, &reason)?;
            }
            return Ok(Err(reason));
        }
    };
    let delivery = NewDelivery::parsed(
        platform,
        &event.name,
        &key,
        body,
        stored.received_at.clone(),
    );
    if same_db && stored.failed && stored.idem_key != delivery.idem_key {
        // Give the failed row the key a live delivery of this body has, so
        // the inbox turns it into the applied one (its retry path) instead
        // of storing a second row beside it.
        let rekeyed = conn.execute(
            "UPDATE deliveries SET idem_key = ?2 WHERE id = ?1
             AND NOT EXISTS (SELECT 1 FROM deliveries WHERE idem_key = ?2)",
            args![stored.id, delivery.idem_key],
        )?;
        if rekeyed == 0 {
            // The same body has arrived again since and was applied: the
            // failed copy is redundant.
            conn.execute(
                "DELETE FROM deliveries WHERE id = ?1 AND status = 'failed'",
                args![stored.id],
            )?;
        }
    }
    apply::receive(conn, policy, &delivery, &event).map(Ok)
}

const WHERE: &str = "(?1 = 0 OR status = 'failed') AND received_at >= ?2";

async fn count(db: &Db, selection: &Selection) -> Result<u64, DbError> {
    let failed_only = selection.failed_only;
    let since = selection.since.clone().unwrap_or_default();
    on_source(db, selection, move |conn| {
        let sql = format!("SELECT count(*) FROM deliveries WHERE {WHERE}");
        Ok(conn.query_row(&sql, args![failed_only, since], |r| r.get::<i64>(0))? as u64)
    })
    .await
}

/// The (received_at, id) of the delivery before the last `n` selected.
async fn start_of_last(db: &Db, selection: &Selection, n: u64) -> Result<(String, i64), DbError> {
    let failed_only = selection.failed_only;
    let since = selection.since.clone().unwrap_or_default();
    on_source(db, selection, move |conn| {
        let sql = format!(
            "SELECT received_at, id FROM deliveries WHERE {WHERE}
             ORDER BY received_at DESC, id DESC LIMIT 1 OFFSET ?3"
        );
        conn.query_row(&sql, args![failed_only, since, n as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
    })
    .await
}

async fn read_page(
    db: &Db,
    selection: &Selection,
    after: (String, i64),
) -> Result<Vec<Stored>, DbError> {
    let failed_only = selection.failed_only;
    let since = selection.since.clone().unwrap_or_default();
    on_source(db, selection, move |conn| {
        let sql = format!(
            "SELECT id, platform, idem_key, received_at, body, status FROM deliveries
             WHERE {WHERE} AND (received_at, id) > (?3, ?4)
             ORDER BY received_at, id LIMIT ?5"
        );
        conn.query_all(
            &sql,
            args![failed_only, since, after.0, after.1, PAGE as i64],
            |r| {
                Ok(Stored {
                    id: r.get(0)?,
                    platform: r.get(1)?,
                    idem_key: r.get(2)?,
                    received_at: r.get(3)?,
                    body: r.get(4)?,
                    failed: r.get::<String>(5)? == "failed",
                })
            },
        )
    })
    .await
}

/// Opens another SQLite database file only to read it (`replay --from`,
/// `preview`, `explain`). Read-write but `query_only`
/// where possible: a read-only connection to a WAL database nobody else has
/// open leaves an empty `-wal` file behind, while the last ordinary
/// connection removes it on close, so the files stay as they were.
pub fn open_source(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .or_else(|_| Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY))?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

/// Runs a read on the database deliveries come from: the target through its
/// gateway, or another (SQLite) file opened read-only off the async runtime.
async fn on_source<R, F>(db: &Db, selection: &Selection, f: F) -> Result<R, DbError>
where
    R: Send + 'static,
    F: FnOnce(&dyn Sql) -> Result<R, DbError> + Send + 'static,
{
    let path = match selection.from.clone() {
        None => return db.read(f).await,
        Some(Source::Store(source)) => return source.read(f).await,
        Some(Source::File(path)) => path,
    };
    tokio::task::spawn_blocking(move || {
        let conn = open_source(&path)
            .map_err(|e| DbError::Unavailable(format!("{}: {e}", path.display())))?;
        f(&conn)
    })
    .await
    .map_err(|e| DbError::Internal(format!("read task failed: {e}")))?
}
