//! Storage: synchronous SQL functions on `&Connection`, reached from async
//! code only through [`Db`], the one gateway.
//!
//! Writes go to a single writer thread that owns the write connection. It
//! takes whatever jobs are queued (group commit), runs each inside its own
//! savepoint of one `BEGIN IMMEDIATE` transaction, commits, and only then
//! answers every job: a job that fails rolls back alone, and no caller hears
//! "done" before its data is committed. Reads run on pooled read-only
//! connections through `spawn_blocking`. Both keep the caller's tracing span
//! and turn a panic into an error instead of taking the thread down.

pub mod apply;
mod conversations;
mod duplicates;
pub mod inbox;
pub mod leads;
mod migrate;
pub mod search;
pub mod view;

pub use migrate::latest_version;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokio::sync::oneshot;

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 256;
/// Read connections kept open for reuse.
const MAX_IDLE_READERS: usize = 8;

/// A storage failure, classified for the HTTP layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DbError {
    /// The database cannot be used right now (locked, disk full, read-only,
    /// I/O error): the sender should retry.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A bug: bad SQL, a violated invariant, a panic.
    #[error("storage error: {0}")]
    Internal(String),
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(
                ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::DiskFull
                | ErrorCode::ReadOnly
                | ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
                | ErrorCode::OutOfMemory
                | ErrorCode::FileLockingProtocolFailed
                | ErrorCode::PermissionDenied,
            ) => DbError::Unavailable(e.to_string()),
            _ => DbError::Internal(e.to_string()),
        }
    }
}

/// Delivers a job's result once the batch's fate is known (`Some` = the
/// commit failed, or the job never ran).
type Finish = Box<dyn FnOnce(Option<DbError>) + Send>;
/// Runs a job on the connection (`None`: the batch could not start, the job
/// does not run) and says whether to keep its savepoint.
type Job = Box<dyn FnOnce(Option<&Connection>) -> (bool, Finish) + Send>;

/// The storage gateway. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<Job>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
    /// The last write failure, cleared by the next successful commit.
    write_fault: Mutex<Option<String>>,
    /// When the batch being written now started, if one is.
    batch_started: Mutex<Option<Instant>>,
}

impl Db {
    /// Opens (creating if missing) the database, applies migrations, and
    /// starts the writer thread.
    pub fn open(path: &Path, busy_timeout: Duration) -> Result<Db, DbError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                DbError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let conn = Connection::open(path)?;
        configure(&conn, busy_timeout)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        migrate::migrate(&conn)?;

        let (tx, rx) = mpsc::channel::<Job>();
        let shared = Arc::new(Shared {
            path: path.to_owned(),
            writer: Mutex::new(Some(tx)),
            writer_thread: Mutex::new(None),
            readers: Mutex::new(Vec::new()),
            write_fault: Mutex::new(None),
            batch_started: Mutex::new(None),
        });
        let weak = Arc::downgrade(&shared);
        let handle = std::thread::Builder::new()
            .name("crm-writer".into())
            .spawn(move || writer_loop(conn, rx, weak))
            .map_err(|e| DbError::Internal(format!("cannot start writer thread: {e}")))?;
        *shared.writer_thread.lock().unwrap() = Some(handle);
        let db = Db { shared };
        // Fail now, not on the first request, if reads cannot work.
        drop(db.reader()?);
        Ok(db)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Runs `f` in the write transaction; resolves once it is committed.
    pub async fn write<R, F>(&self, f: F) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, DbError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let span = tracing::Span::current();
        let job: Job = Box::new(move |conn| {
            let _entered = span.enter();
            let result = conn.map(|conn| {
                catch_unwind(AssertUnwindSafe(|| f(conn)))
                    .unwrap_or_else(|panic| Err(DbError::Internal(panic_message(&panic))))
            });
            let keep = matches!(result, Some(Ok(_)));
            let finish: Finish = Box::new(move |batch_error| {
                let outcome = match (result, batch_error) {
                    (Some(Ok(value)), None) => Ok(value),
                    (Some(Err(e)), _) => Err(e),
                    (_, Some(e)) => Err(e),
                    (None, None) => Err(DbError::Internal("job was not run".into())),
                };
                let _ = tx.send(outcome);
            });
            (keep, finish)
        });
        {
            let writer = self.shared.writer.lock().unwrap();
            let sender = writer
                .as_ref()
                .ok_or_else(|| DbError::Unavailable("storage is shutting down".into()))?;
            sender
                .send(job)
                .map_err(|_| DbError::Internal("writer thread is gone".into()))?;
        }
        rx.await
            .map_err(|_| DbError::Internal("writer dropped a job".into()))?
    }

    /// Runs `f` on a read-only connection off the async runtime.
    pub async fn read<R, F>(&self, f: F) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, DbError> + Send + 'static,
    {
        let db = self.clone();
        let span = tracing::Span::current();
        let joined = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let conn = db.reader()?;
            let result = catch_unwind(AssertUnwindSafe(|| f(&conn)))
                .unwrap_or_else(|panic| Err(DbError::Internal(panic_message(&panic))));
            db.give_back(conn);
            result
        })
        .await;
        match joined {
            Ok(result) => result,
            Err(e) => Err(DbError::Internal(format!("read task failed: {e}"))),
        }
    }

    /// The last write failure, if the last write batch failed, or a batch
    /// that has been waiting longer than `stuck` (a lock held elsewhere).
    pub fn write_fault(&self, stuck: Duration) -> Option<String> {
        if let Some(fault) = self.shared.write_fault.lock().unwrap().clone() {
            return Some(fault);
        }
        let started = *self.shared.batch_started.lock().unwrap();
        started.filter(|t| t.elapsed() > stuck).map(|t| {
            format!(
                "a write has been waiting for {} ms",
                t.elapsed().as_millis()
            )
        })
    }

    /// Stops accepting writes, lets the writer finish what is queued, and
    /// waits for it. Later writes fail with `Unavailable`.
    pub fn close(&self) {
        self.shared.writer.lock().unwrap().take();
        if let Some(handle) = self.shared.writer_thread.lock().unwrap().take() {
            let _ = handle.join();
        }
    }

    fn reader(&self) -> Result<Connection, DbError> {
        if let Some(conn) = self.shared.readers.lock().unwrap().pop() {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.shared.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&conn, Duration::from_secs(2))?;
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.shared.readers.lock().unwrap();
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }
}

/// Settings every connection gets.
fn configure(conn: &Connection, busy_timeout: Duration) -> Result<(), DbError> {
    conn.busy_timeout(busy_timeout)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // NORMAL in WAL mode: a commit survives a crash of the process; a power
    // cut may lose the last transactions but never corrupts the file.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "cache_size", -16_000)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

fn writer_loop(conn: Connection, rx: mpsc::Receiver<Job>, shared: std::sync::Weak<Shared>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
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
        let fault = run_batch(&conn, &mut batch);
        if let Some(shared) = shared.upgrade() {
            *shared.batch_started.lock().unwrap() = None;
            *shared.write_fault.lock().unwrap() = fault;
        }
    }
    // All senders are gone: checkpoint so the WAL does not outlive us.
    let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
}

/// Runs one batch; returns the failure, if the batch could not be committed.
fn run_batch(conn: &Connection, batch: &mut Vec<Job>) -> Option<String> {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let err = DbError::from(e);
        tracing::error!(error = %err, jobs = batch.len(), "cannot begin write transaction");
        for job in batch.drain(..) {
            let (_, finish) = job(None);
            finish(Some(err.clone()));
        }
        return Some(err.to_string());
    }
    let mut finishes = Vec::with_capacity(batch.len());
    for job in batch.drain(..) {
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            let (_, finish) = job(None);
            finish(Some(DbError::from(e)));
            continue;
        }
        let (keep, finish) = job(Some(conn));
        let end = if keep {
            "RELEASE job"
        } else {
            "ROLLBACK TO job; RELEASE job"
        };
        if let Err(e) = conn.execute_batch(end) {
            tracing::error!(error = %e, "cannot end savepoint");
        }
        finishes.push(finish);
    }
    let commit_error = conn.execute_batch("COMMIT").err().map(|e| {
        let err = DbError::from(e);
        tracing::error!(error = %err, "commit failed; batch rolled back");
        let _ = conn.execute_batch("ROLLBACK");
        err
    });
    let fault = commit_error.as_ref().map(ToString::to_string);
    for finish in finishes {
        finish(commit_error.clone());
    }
    fault
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    tracing::error!(panic = %text, "storage job panicked");
    format!("panic: {text}")
}
