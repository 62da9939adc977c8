//! The writer thread: owns the write connection (opening it again after
//! storage was unavailable), takes whatever jobs are queued, runs them in one
//! transaction (each in its own savepoint, or all without one and again in
//! savepoints if one fails), and answers them only after the commit and
//! after recording any fault for `/healthz`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak, mpsc};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::checkpoint::{self, Checkpointer};
use super::postgres::{self, Postgres};
use super::sql::{Dialect, Sql};
use super::{DbError, MAX_BATCH, Shared, configure, migrate};

/// A write job as the writer sees it.
pub(super) trait WriteJob: Send {
    /// Whether the job may run a second time (see [`run_batch`]).
    fn repeatable(&self) -> bool;
    /// Runs the job on the connection, keeping its result for [`finish`].
    ///
    /// [`finish`]: WriteJob::finish
    fn run(&mut self, conn: &dyn Sql) -> JobEnd;
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
pub(super) enum Writer {
    /// The SQLite file's one write connection.
    Sqlite {
        /// `None` while the database could not be opened.
        conn: Option<Connection>,
        /// The database file.
        path: PathBuf,
        /// For the connection's busy handler.
        busy_timeout: Duration,
    },
    /// This instance's write connection to PostgreSQL.
    Postgres {
        /// The pool it comes from.
        pg: Arc<Postgres>,
        /// `None` until the first batch, and after the connection broke.
        client: Option<postgres::OwnConnection>,
        /// Whether the schema is known to be up to date (the server may
        /// have been unreachable at start).
        migrated: bool,
    },
}

impl Writer {
    /// Runs `batch` on the connection, opening it first if storage was
    /// unavailable so far (or the connection broke).
    fn run(&mut self, batch: &mut Vec<Job>) -> Settled {
        match self {
            Writer::Sqlite {
                conn,
                path,
                busy_timeout,
            } => {
                if conn.is_none() {
                    match open_writer(path, *busy_timeout) {
                        Ok(opened) => {
                            tracing::info!(path = %path.display(), "database opened: storage is back");
                            *conn = Some(opened);
                        }
                        Err(err) => return fail_batch(batch, err),
                    }
                }
                run_batch(conn.as_ref().expect("just opened"), batch)
            }
            Writer::Postgres {
                pg,
                client,
                migrated,
            } => {
                if client.as_ref().is_some_and(|c| c.is_closed()) {
                    tracing::warn!("database connection lost; opening another");
                    *client = None;
                }
                if client.is_none() {
                    let opened = if *migrated {
                        pg.own_connection()
                    } else {
                        pg.migrate().and_then(|()| pg.own_connection())
                    };
                    match opened {
                        Ok(opened) => {
                            *migrated = true;
                            *client = Some(opened);
                        }
                        Err(err) => return fail_batch(batch, err),
                    }
                }
                let own = client.as_ref().expect("just opened");
                let settled = run_batch(&own.session(), batch);
                if own.is_closed() {
                    *client = None;
                }
                settled
            }
        }
    }

    /// The SQLite connection, for checkpoints.
    fn sqlite(&self) -> Option<&Connection> {
        match self {
            Writer::Sqlite { conn, .. } => conn.as_ref(),
            Writer::Postgres { .. } => None,
        }
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
    let mut checkpointer = match &writer {
        Writer::Sqlite { path, .. } => Some(Checkpointer::start(path)),
        Writer::Postgres { .. } => None,
    };
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
            super::outbox::install(shared.outbound.lock().unwrap().clone());
        }
        let settled = writer.run(&mut batch);
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
        if committed && let (Some(conn), Some(checkpointer)) = (writer.sqlite(), &checkpointer) {
            checkpointer.kick();
            checkpoint::restart_if_due(conn, checkpointer);
        }
    }
    if let Some(mut checkpointer) = checkpointer.take() {
        checkpointer.stop();
    }
    // All senders are gone: checkpoint so the WAL does not outlive us.
    if let Some(conn) = writer.sqlite() {
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

/// Runs a transaction-control statement; on SQLite through the statement
/// cache (these run twice per job, and `execute_batch` would parse them
/// every time).
fn control(conn: &dyn Sql, sql: &str) -> Result<(), DbError> {
    match conn.as_sqlite() {
        Some(lite) => Ok(lite.prepare_cached(sql)?.execute([]).map(drop)?),
        None => conn.batch(sql),
    }
}

/// Opens the batch's transaction. On PostgreSQL the instances take turns
/// through an advisory lock, so that one writer at a time decides identity.
fn begin(conn: &dyn Sql) -> Result<(), DbError> {
    match conn.dialect() {
        Dialect::Sqlite => conn.batch("BEGIN IMMEDIATE"),
        // Sent with the first job's first statement: a failure to begin is
        // that job's failure, as a broken connection would be.
        Dialect::Postgres => {
            conn.execute_later("BEGIN", &[])?;
            conn.execute_later(
                "SELECT pg_advisory_xact_lock(?1)",
                crate::args![postgres::WRITE_LOCK],
            )
        }
    }
}

/// Whether the transaction is still open after a failed job (SQLite rolls
/// back by itself on a full disk; PostgreSQL keeps it open, aborted).
fn in_transaction(conn: &dyn Sql) -> bool {
    conn.as_sqlite().is_none_or(|lite| !lite.is_autocommit())
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
fn run_batch(conn: &dyn Sql, batch: &mut Vec<Job>) -> Settled {
    if let Err(e) = begin(conn) {
        if conn.dialect() == Dialect::Postgres {
            let _ = conn.batch("ROLLBACK");
        }
        return fail_batch(batch, e);
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
        if in_transaction(conn)
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
        if let Err(e) = begin(conn) {
            if conn.dialect() == Dialect::Postgres {
                let _ = conn.batch("ROLLBACK");
            }
            return fail_batch(batch, e);
        }
    }
    let mut jobs = Vec::with_capacity(batch.len());
    let mut job_fault = None;
    for mut job in batch.drain(..) {
        if let Err(e) = control(conn, "SAVEPOINT job") {
            jobs.push((job, Some(e)));
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
fn commit(conn: &dyn Sql, jobs: Vec<(Job, Option<DbError>)>, job_fault: Option<String>) -> Settled {
    // PostgreSQL answers COMMIT of an aborted transaction by rolling it
    // back without an error: `SELECT 1` fails first in such a transaction,
    // and the rest of the string is then skipped.
    let committed = match conn.dialect() {
        Dialect::Sqlite => conn.batch("COMMIT"),
        Dialect::Postgres => conn.batch("SELECT 1; COMMIT"),
    };
    let commit_error = committed.err().map(|err| {
        tracing::error!(error = %err, "commit failed; batch rolled back");
        let _ = conn.batch("ROLLBACK");
        err
    });
    Settled {
        fault: commit_error.as_ref().map(ToString::to_string).or(job_fault),
        jobs,
        error: commit_error,
    }
}
