//! Storage: synchronous SQL functions on `&Connection`, reached from async
//! code only through [`Db`], the one gateway.
//!
//! Writes go to a single writer thread (`writer.rs`) that owns the write
//! connection. It takes whatever jobs are queued (group commit), runs each inside its own
//! savepoint of one `BEGIN IMMEDIATE` transaction, commits, and only then
//! answers every job: a job that fails rolls back alone, and no caller hears
//! "done" before its data is committed. Reads run on pooled read-only
//! connections through `spawn_blocking`. Both keep the caller's tracing span
//! and turn a panic into an error instead of taking the thread down. WAL
//! checkpoints run beside the writer (`checkpoint.rs`), not inside commits.

pub mod apply;
pub mod bulk;
mod checkpoint;
mod conversations;
mod duplicates;
pub mod inbox;
pub mod leads;
mod migrate;
pub mod search;
pub mod view;
mod writer;

pub use migrate::latest_version;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokio::sync::oneshot;

use writer::{Finish, Job, JobEnd, Writer, open_writer, writer_loop};

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
    /// The last write failure and when it happened, cleared by the next
    /// successful commit.
    write_fault: Mutex<Option<(String, Instant)>>,
    /// When the batch being written now started, if one is.
    batch_started: Mutex<Option<Instant>>,
}

impl Db {
    /// Opens (creating if missing) the database, applies migrations, and
    /// starts the writer thread.
    ///
    /// Storage that is only unavailable (a read-only or missing filesystem,
    /// a lock) does not stop the service: it starts with the fault recorded,
    /// answers 503 meanwhile, and the writer opens the file on the first
    /// write after the fault is gone. Anything else (a newer schema, a
    /// corrupt file) is an error.
    pub fn open(path: &Path, busy_timeout: Duration) -> Result<Db, DbError> {
        let (conn, fault) = match open_writer(path, busy_timeout) {
            Ok(conn) => (Some(conn), None),
            Err(DbError::Unavailable(cause)) => {
                tracing::error!(%cause, path = %path.display(), "database unavailable at start; answering 503 until it returns");
                (None, Some(format!("storage unavailable: {cause}")))
            }
            Err(e) => return Err(e),
        };
        let degraded = fault.is_some();

        let (tx, rx) = mpsc::channel::<Job>();
        let shared = Arc::new(Shared {
            path: path.to_owned(),
            writer: Mutex::new(Some(tx)),
            writer_thread: Mutex::new(None),
            readers: Mutex::new(Vec::new()),
            write_fault: Mutex::new(fault.map(|f| (f, Instant::now()))),
            batch_started: Mutex::new(None),
        });
        let weak = Arc::downgrade(&shared);
        let writer = Writer {
            conn,
            path: path.to_owned(),
            busy_timeout,
        };
        let handle = std::thread::Builder::new()
            .name("crm-writer".into())
            .spawn(move || writer_loop(writer, rx, weak))
            .map_err(|e| DbError::Internal(format!("cannot start writer thread: {e}")))?;
        *shared.writer_thread.lock().unwrap() = Some(handle);
        let db = Db { shared };
        if !degraded {
            // Fail now, not on the first request, if reads cannot work.
            drop(db.reader()?);
        }
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
            let end = match &result {
                Some(Ok(_)) => JobEnd::Keep,
                Some(Err(e @ DbError::Unavailable(_))) => JobEnd::Fault(e.to_string()),
                _ => JobEnd::Undo,
            };
            let finish: Finish = Box::new(move |batch_error| {
                let outcome = match (result, batch_error) {
                    (Some(Ok(value)), None) => Ok(value),
                    (Some(Err(e)), _) => Err(e),
                    (_, Some(e)) => Err(e),
                    (None, None) => Err(DbError::Internal("job was not run".into())),
                };
                let _ = tx.send(outcome);
            });
            (end, finish)
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
        if let Some((fault, _)) = self.shared.write_fault.lock().unwrap().clone() {
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

    /// How long ago the last write failed, while no write has committed since.
    pub fn fault_age(&self) -> Option<Duration> {
        self.shared
            .write_fault
            .lock()
            .unwrap()
            .as_ref()
            .map(|(_, at)| at.elapsed())
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
    // Statement journals and sorts in memory, not in files made and
    // deleted many times a second.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::ffi;

    fn classify(code: std::ffi::c_int) -> DbError {
        DbError::from(rusqlite::Error::SqliteFailure(ffi::Error::new(code), None))
    }

    #[test]
    fn transient_storage_failures_are_unavailable_down_to_extended_codes() {
        for code in [
            ffi::SQLITE_BUSY,
            ffi::SQLITE_BUSY_SNAPSHOT,
            ffi::SQLITE_LOCKED,
            ffi::SQLITE_FULL,
            ffi::SQLITE_READONLY,
            ffi::SQLITE_READONLY_RECOVERY,
            ffi::SQLITE_READONLY_CANTLOCK,
            ffi::SQLITE_READONLY_DBMOVED,
            ffi::SQLITE_READONLY_DIRECTORY,
            ffi::SQLITE_IOERR,
            ffi::SQLITE_IOERR_WRITE,
            ffi::SQLITE_IOERR_FSYNC,
            ffi::SQLITE_IOERR_SHMOPEN,
            ffi::SQLITE_IOERR_NOMEM,
            ffi::SQLITE_CANTOPEN,
            ffi::SQLITE_NOMEM,
            ffi::SQLITE_PROTOCOL,
            ffi::SQLITE_PERM,
        ] {
            assert!(
                matches!(classify(code), DbError::Unavailable(_)),
                "code {code}"
            );
        }
    }

    #[test]
    fn bugs_and_damage_are_internal() {
        for code in [
            ffi::SQLITE_CONSTRAINT_UNIQUE,
            ffi::SQLITE_ERROR,
            ffi::SQLITE_MISUSE,
            ffi::SQLITE_CORRUPT,
        ] {
            assert!(
                matches!(classify(code), DbError::Internal(_)),
                "code {code}"
            );
        }
    }

    #[test]
    fn a_database_that_cannot_be_opened_at_start_is_a_fault_not_a_failed_start() {
        let dir = tempfile::tempdir().unwrap();
        // A regular file where the database directory should be.
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, b"").unwrap();
        let db = Db::open(&blocker.join("crm.sqlite3"), Duration::from_millis(100))
            .expect("the service starts");
        let fault = db
            .write_fault(Duration::from_secs(60))
            .expect("fault recorded");
        assert!(fault.contains("cannot create"), "{fault}");
        db.close();
    }
}
