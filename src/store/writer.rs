//! The writer thread: owns the write connection (opening it again after
//! storage was unavailable), takes whatever jobs are queued, runs each in its
//! own savepoint of one transaction, and answers them only after the commit
//! and after recording any fault for `/healthz`.

use std::path::{Path, PathBuf};
use std::sync::{Weak, mpsc};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::checkpoint::{self, Checkpointer};
use super::{DbError, MAX_BATCH, Shared, configure, migrate};

/// Delivers a job's result once the batch's fate is known (`Some` = the
/// commit failed, or the job never ran).
pub(super) type Finish = Box<dyn FnOnce(Option<DbError>) + Send>;
/// Runs a job on the connection (`None`: the batch could not start, the job
/// does not run) and says how it ended.
pub(super) type Job = Box<dyn FnOnce(Option<&Connection>) -> (JobEnd, Finish) + Send>;

/// How a job ended, for its savepoint and the fault record.
pub(super) enum JobEnd {
    /// Succeeded: keep its savepoint.
    Keep,
    /// Failed: roll its savepoint back.
    Undo,
    /// Storage failed under it (a full disk mid-statement): roll back, and
    /// report the fault even if the rest of the batch commits.
    Fault(String),
}

/// The write connection, and what it takes to open it again.
pub(super) struct Writer {
    /// `None` while the database could not be opened.
    pub(super) conn: Option<Connection>,
    /// The database file.
    pub(super) path: PathBuf,
    /// For the connection's busy handler.
    pub(super) busy_timeout: Duration,
}

impl Writer {
    /// The connection, opening it first if storage was unavailable so far.
    fn conn(&mut self) -> Result<&Connection, DbError> {
        if self.conn.is_none() {
            let conn = open_writer(&self.path, self.busy_timeout)?;
            tracing::info!(path = %self.path.display(), "database opened: storage is back");
            self.conn = Some(conn);
        }
        Ok(self.conn.as_ref().expect("just opened"))
    }
}

/// Opens the write connection: directory, file, settings, WAL, migrations.
pub(super) fn open_writer(path: &Path, busy_timeout: Duration) -> Result<Connection, DbError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| DbError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
    }
    let conn = Connection::open(path)?;
    // SQLite falls back to a read-only connection on a read-only file or
    // filesystem; such a connection would stay read-only after a remount.
    if conn.is_readonly(rusqlite::MAIN_DB)? {
        return Err(DbError::Unavailable(format!(
            "{} or its filesystem is read-only",
            path.display()
        )));
    }
    configure(&conn, busy_timeout)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    migrate::migrate(&conn)?;
    checkpoint::watch(&conn);
    Ok(conn)
}

/// Runs batches until every sender is gone, then checkpoints.
pub(super) fn writer_loop(mut writer: Writer, rx: mpsc::Receiver<Job>, shared: Weak<Shared>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut checkpointer = Checkpointer::start(&writer.path);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Some(shared) = shared.upgrade() {
            *shared.batch_started.lock().unwrap() = Some(Instant::now());
        }
        let settled = match writer.conn() {
            Ok(conn) => run_batch(conn, &mut batch),
            Err(err) => fail_batch(&mut batch, err),
        };
        let fault = settled.fault.clone();
        // Recorded before anyone hears back: a sender told 503 must find
        // `/healthz` unhealthy too.
        if let Some(shared) = shared.upgrade() {
            *shared.batch_started.lock().unwrap() = None;
            let mut recorded = shared.write_fault.lock().unwrap();
            *recorded = match (fault, recorded.take()) {
                (None, _) => None,
                // A fault that goes on keeps its start, for its age.
                (Some(fault), Some((_, since))) => Some((fault, since)),
                (Some(fault), None) => Some((fault, Instant::now())),
            };
        }
        let committed = settled.error.is_none();
        settled.finish();
        if committed && let Some(conn) = &writer.conn {
            checkpointer.kick();
            checkpoint::restart_if_due(conn, &checkpointer);
        }
    }
    checkpointer.stop();
    // All senders are gone: checkpoint so the WAL does not outlive us.
    if let Some(conn) = &writer.conn {
        let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
    }
}

/// A batch's outcome, held back until the fault record is updated.
struct Settled {
    /// What `/healthz` should report, if anything.
    fault: Option<String>,
    /// Each job's answer, with the error it alone hit.
    finishes: Vec<(Finish, Option<DbError>)>,
    /// Why the whole batch failed, if it did.
    error: Option<DbError>,
}

impl Settled {
    /// Answers every job.
    fn finish(self) {
        for (finish, own) in self.finishes {
            finish(own.or_else(|| self.error.clone()));
        }
    }
}

/// Fails every job of a batch that cannot start with `err`.
fn fail_batch(batch: &mut Vec<Job>, err: DbError) -> Settled {
    tracing::error!(error = %err, jobs = batch.len(), "cannot begin write transaction");
    let finishes = batch.drain(..).map(|job| (job(None).1, None)).collect();
    Settled {
        fault: Some(err.to_string()),
        finishes,
        error: Some(err),
    }
}

/// Runs a transaction-control statement through the statement cache: these
/// run twice per job, and `execute_batch` would parse them every time.
fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// Runs one batch; returns the failure, if the batch could not be committed
/// or storage failed under one of its jobs.
fn run_batch(conn: &Connection, batch: &mut Vec<Job>) -> Settled {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        return fail_batch(batch, DbError::from(e));
    }
    // A job alone in its transaction needs no savepoint: rolling the
    // transaction back undoes it just as well, and a savepoint copies every
    // page the job changes into the sub-journal.
    let alone = batch.len() == 1;
    let mut finishes = Vec::with_capacity(batch.len());
    let mut job_fault = None;
    let mut rolled_back = false;
    for job in batch.drain(..) {
        if !alone && let Err(e) = control(conn, "SAVEPOINT job") {
            finishes.push((job(None).1, Some(DbError::from(e))));
            continue;
        }
        let (end, finish) = job(Some(conn));
        let undo = match end {
            JobEnd::Keep => false,
            JobEnd::Undo => true,
            JobEnd::Fault(fault) => {
                job_fault = Some(fault);
                true
            }
        };
        let ended = match (alone, undo) {
            (true, false) => Ok(()),
            (true, true) => {
                rolled_back = true;
                // SQLite may have rolled back already (a full disk does).
                if conn.is_autocommit() {
                    Ok(())
                } else {
                    control(conn, "ROLLBACK")
                }
            }
            (false, true) => {
                control(conn, "ROLLBACK TO job").and_then(|()| control(conn, "RELEASE job"))
            }
            (false, false) => control(conn, "RELEASE job"),
        };
        if let Err(e) = ended {
            tracing::error!(error = %e, "cannot end the job's savepoint or transaction");
        }
        finishes.push((finish, None));
    }
    if rolled_back {
        return Settled {
            fault: job_fault,
            finishes,
            error: None,
        };
    }
    let commit_error = conn.execute_batch("COMMIT").err().map(|e| {
        let err = DbError::from(e);
        tracing::error!(error = %err, "commit failed; batch rolled back");
        let _ = conn.execute_batch("ROLLBACK");
        err
    });
    Settled {
        fault: commit_error.as_ref().map(ToString::to_string).or(job_fault),
        finishes,
        error: commit_error,
    }
}
