//! The writer thread: owns the write connection (opening it again after
//! storage was unavailable), takes whatever jobs are queued, runs them in one
//! transaction (each in its own savepoint, or all without one and again in
//! savepoints if one fails), and answers them only after the commit and
//! after recording any fault for `/healthz`.

use std::path::{Path, PathBuf};
use std::sync::{Weak, mpsc};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::checkpoint::{self, Checkpointer};
use super::{DbError, MAX_BATCH, Shared, configure, migrate};

/// A write job as the writer sees it.
pub(super) trait WriteJob: Send {
    /// Whether the job may run a second time (see [`run_batch`]).
    fn repeatable(&self) -> bool;
    /// Runs the job on the connection, keeping its result for [`finish`].
    ///
    /// [`finish`]: WriteJob::finish
    fn run(&mut self, conn: &Connection) -> JobEnd;
    /// Answers the caller once the batch's fate is known: with the last
    /// run's result, unless `batch_error` (the commit failed, or the job
    /// never ran) says otherwise.
    fn finish(self: Box<Self>, batch_error: Option<DbError>);
}

/// A queued write job.
pub(super) type Job = Box<dyn WriteJob>;

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
    /// Each job, with the error it alone hit.
    jobs: Vec<(Job, Option<DbError>)>,
    /// Why the whole batch failed, if it did.
    error: Option<DbError>,
}

impl Settled {
    /// Answers every job.
    fn finish(self) {
        for (job, own) in self.jobs {
            job.finish(own.or_else(|| self.error.clone()));
        }
    }
}

/// Fails every job of a batch that cannot start with `err`.
fn fail_batch(batch: &mut Vec<Job>, err: DbError) -> Settled {
    tracing::error!(error = %err, jobs = batch.len(), "cannot begin write transaction");
    let jobs = batch.drain(..).map(|job| (job, None)).collect();
    Settled {
        fault: Some(err.to_string()),
        jobs,
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
///
/// A job alone in its batch, or a batch of repeatable jobs, runs without
/// savepoints (a savepoint copies every page a job changes into the
/// sub-journal). If one of them fails, the transaction is rolled back: a job
/// alone is answered with its error; a batch of several runs again, each
/// job in its own savepoint, as a batch with a one-off job runs at once, so
/// that a failing job is the only one that fails.
fn run_batch(conn: &Connection, batch: &mut Vec<Job>) -> Settled {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        return fail_batch(batch, DbError::from(e));
    }
    if batch.len() == 1 || batch.iter().all(|job| job.repeatable()) {
        // The first job to fail, with the storage fault under it if any.
        let failed = batch.iter_mut().find_map(|job| match job.run(conn) {
            JobEnd::Keep => None,
            JobEnd::Undo => Some(None),
            JobEnd::Fault(fault) => Some(Some(fault)),
        });
        let Some(fault) = failed else {
            return commit(conn, batch.drain(..).map(|job| (job, None)).collect(), None);
        };
        // SQLite may have rolled back already (a full disk does).
        if !conn.is_autocommit()
            && let Err(e) = control(conn, "ROLLBACK")
        {
            tracing::error!(error = %e, "cannot roll back a failed write job");
        }
        if batch.len() == 1 {
            return Settled {
                fault,
                jobs: batch.drain(..).map(|job| (job, None)).collect(),
                error: None,
            };
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            return fail_batch(batch, DbError::from(e));
        }
    }
    let mut jobs = Vec::with_capacity(batch.len());
    let mut job_fault = None;
    for mut job in batch.drain(..) {
        if let Err(e) = control(conn, "SAVEPOINT job") {
            jobs.push((job, Some(DbError::from(e))));
            continue;
        }
        let undo = match job.run(conn) {
            JobEnd::Keep => false,
            JobEnd::Undo => true,
            JobEnd::Fault(fault) => {
                job_fault = Some(fault);
                true
            }
        };
        let ended = if undo {
            control(conn, "ROLLBACK TO job").and_then(|()| control(conn, "RELEASE job"))
        } else {
            control(conn, "RELEASE job")
        };
        if let Err(e) = ended {
            tracing::error!(error = %e, "cannot end the job's savepoint");
        }
        jobs.push((job, None));
    }
    commit(conn, jobs, job_fault)
}

/// Commits the batch's transaction.
fn commit(
    conn: &Connection,
    jobs: Vec<(Job, Option<DbError>)>,
    job_fault: Option<String>,
) -> Settled {
    let commit_error = conn.execute_batch("COMMIT").err().map(|e| {
        let err = DbError::from(e);
        tracing::error!(error = %err, "commit failed; batch rolled back");
        let _ = conn.execute_batch("ROLLBACK");
        err
    });
    Settled {
        fault: commit_error.as_ref().map(ToString::to_string).or(job_fault),
        jobs,
        error: commit_error,
    }
}
