//! `preview`: what a merge-policy change would do to the leads, before it
//! is made. The stored deliveries are replayed twice, into two scratch
//! databases in a temporary directory: once under the current policy and
//! once under the new one; the two results are then compared lead by lead.
//! The live database is only read, so the service keeps serving.
//!
//! Leads are matched across the replays by the delivery that created them
//! (its idempotency key), not by row id, and reported with their id in the
//! live database when it has the same lead.
//!
//! The scratch databases are SQLite files. The live database is read where
//! it is: a SQLite file by path (read-only), PostgreSQL through the store.

mod diff;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

pub use self::diff::{Counts, LeadDiff, LeadState, Preview, SAMPLE, compare, print};
use super::replay::{self, Selection, Source};
use crate::config::Config;
use crate::store::apply::Policy;
use crate::store::sql::Sql;
use crate::store::{Db, DbError};

/// A scratch directory removed when dropped, whatever happens.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The live database a preview reads.
pub enum Live {
    /// A SQLite file.
    File(PathBuf),
    /// An open store (PostgreSQL).
    Store(Db),
}

/// Replays the deliveries selected from `live` under `current` and `new`
/// and compares the two results.
pub async fn run(
    live: &Live,
    busy: Duration,
    current: &Policy,
    new: &Policy,
    selection: &Selection,
) -> Result<Preview, String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("crm-preview-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let scratch = Scratch(dir);
    let selection = Selection {
        failed_only: false,
        from: Some(match live {
            Live::File(path) => Source::File(path.clone()),
            Live::Store(db) => Source::Store(db.clone()),
        }),
        ..selection.clone()
    };
    // Two progress bars in turn; say which is which.
    let terminal = std::io::stderr().is_terminal();
    if terminal {
        eprintln!("replaying under the current policy");
    }
    let before = replay_into(
        &scratch.0.join("current.sqlite3"),
        busy,
        current,
        &selection,
    )
    .await?;
    if terminal {
        eprintln!("replaying under the new policy");
    }
    let after = replay_into(&scratch.0.join("new.sqlite3"), busy, new, &selection).await?;
    let by_anchor = match live {
        Live::File(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                let conn =
                    replay::open_source(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                anchors(&conn).map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| format!("read task failed: {e}"))??
        }
        Live::Store(db) => db.read(anchors).await.map_err(|e| e.to_string())?,
    };
    let live_ids = by_anchor.into_iter().map(|(id, a)| (a, id)).collect();
    Ok(compare(before.1, &after.1, &live_ids, before.0))
}

/// Replays into a fresh database at `path`; returns the deliveries seen and
/// the leads by anchor.
async fn replay_into(
    path: &Path,
    busy: Duration,
    policy: &Policy,
    selection: &Selection,
) -> Result<(u64, BTreeMap<String, LeadState>), String> {
    let db = Db::open(path, busy).map_err(|e| format!("{}: {e}", path.display()))?;
    let result = async {
        let summary = replay::run(&db, policy, selection).await?;
        let leads = db.read(states).await.map_err(|e| e.to_string())?;
        Ok((summary.seen, leads))
    }
    .await;
    db.close();
    result
}

/// Each lead's anchor: the idempotency key of the first delivery applied to
/// it (the one that created it), else its id for leads no delivery made.
fn anchors(conn: &dyn Sql) -> Result<BTreeMap<i64, String>, DbError> {
    let mut out = BTreeMap::new();
    conn.each_row(
        "SELECT l.id, (SELECT d.idem_key FROM deliveries d WHERE d.lead_id = l.id ORDER BY d.id LIMIT 1)
         FROM leads l",
        &[],
        &mut |r| {
            let id: i64 = r.get(0)?;
            let key: Option<String> = r.get(1)?;
            out.insert(id, key.unwrap_or_else(|| format!("lead {id}")));
            Ok(())
        },
    )?;
    Ok(out)
}

/// Every lead of a replayed database, by anchor.
fn states(conn: &dyn Sql) -> Result<BTreeMap<String, LeadState>, DbError> {
    let anchor = anchors(conn)?;
    let name = |id: i64| anchor.get(&id).cloned().unwrap_or_default();
    let mut out: BTreeMap<i64, LeadState> = BTreeMap::new();
    conn.each_row("SELECT id, name, merged_into FROM leads", &[], &mut |r| {
        let into: Option<i64> = r.get(2)?;
        out.insert(
            r.get(0)?,
            LeadState {
                name: r.get(1)?,
                folded_into: into.map(name),
                ..LeadState::default()
            },
        );
        Ok(())
    })?;
    for (sql, is_email) in [
        ("SELECT lead_id, value, is_primary FROM lead_emails", true),
        ("SELECT lead_id, value, is_primary FROM lead_phones", false),
    ] {
        conn.each_row(sql, &[], &mut |r| {
            let (id, value, primary): (i64, String, bool) = (r.get(0)?, r.get(1)?, r.get(2)?);
            let Some(lead) = out.get_mut(&id) else {
                return Ok(());
            };
            let (all, first) = if is_email {
                (&mut lead.emails, &mut lead.email)
            } else {
                (&mut lead.phones, &mut lead.phone)
            };
            if primary {
                *first = Some(value.clone());
            }
            all.insert(value);
            Ok(())
        })?;
    }
    conn.each_row(
        "SELECT lead_a, lead_b FROM duplicate_links",
        &[],
        &mut |r| {
            let (a, b): (i64, i64) = (r.get(0)?, r.get(1)?);
            if let Some(lead) = out.get_mut(&a) {
                lead.duplicates.insert(name(b));
            }
            if let Some(lead) = out.get_mut(&b) {
                lead.duplicates.insert(name(a));
            }
            Ok(())
        },
    )?;
    Ok(out.into_iter().map(|(id, s)| (name(id), s)).collect())
}

/// `crm-responder preview`: `current` is the configuration in force (its
/// database and policy), `new` the edited one; prints text or JSON.
pub fn command(
    current: &Config,
    new: &Config,
    last: Option<u64>,
    since: Option<String>,
    json: bool,
) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let selection = Selection {
        since,
        last,
        key: crate::privacy::Key::of(current),
        ..Selection::default()
    };
    let busy = Duration::from_millis(current.database.busy_timeout_ms);
    let live = match current.database.store() {
        crate::config::Store::Sqlite(path) => Live::File(path),
        crate::config::Store::Postgres(_) => {
            let location = crate::store::Location::of(&current.database);
            let _entered = runtime.enter();
            match Db::connect(&location) {
                Ok(db) => Live::Store(db),
                Err(e) => {
                    eprintln!("error: database ({}): {e}", current.database.describe());
                    return ExitCode::from(1);
                }
            }
        }
    };
    let result = runtime.block_on(run(
        &live,
        busy,
        &Policy::of(current),
        &Policy::of(new),
        &selection,
    ));
    if let Live::Store(db) = live {
        db.close();
    }
    match result {
        Ok(p) if json => {
            println!("{}", serde_json::to_string_pretty(&p).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(p) => {
            print(&p);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
