//! Storage: synchronous SQL functions on [`sql::Sql`] (a SQLite connection
//! or a PostgreSQL session: the same code serves both), reached from async
//! code only through [`Db`], the one gateway.
//!
//! Writes go to a single writer thread (`writer.rs`) that owns the write
//! connection (on PostgreSQL, one per instance, and instances take turns
//! through an advisory lock: see `postgres.rs`). It takes whatever jobs are queued (group commit), runs them in
//! one `BEGIN IMMEDIATE` transaction (each in its own savepoint; jobs that
//! may run twice without one, and again in savepoints if one of them fails),
//! commits, and only then answers every job: a job that fails rolls back
//! alone, and no caller hears "done" before its data is committed. Reads run on pooled read-only
//! connections through `spawn_blocking`. Both keep the caller's tracing span
//! and turn a panic into an error instead of taking the thread down. WAL
//! checkpoints run beside the writer (`checkpoint.rs`), not inside commits.
//! Both stores' errors are sorted into one [`DbError`] (`error.rs`): what a
//! sender should retry, and what is a bug.

pub mod apply;
pub mod audit;
pub mod bulk;
mod checkpoint;
mod conversations;
mod duplicates;
pub mod edits;
pub mod erase;
mod error;
pub mod inbox;
pub mod leads;
pub mod locks;
pub mod merges;
mod migrate;
pub mod outbox;
pub mod postgres;
mod reads;
pub mod retention;
pub mod search;
pub mod sql;
pub mod staff_store;
pub mod view;
mod writer;

pub use error::DbError;
pub use migrate::latest_version;
pub use postgres::Settings as PostgresSettings;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use postgres::Postgres;
use sql::Sql;

use writer::{Job, JobEnd, WriteJob, Writer, open_writer, writer_loop};

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 256;
/// Read connections kept open for reuse.
const MAX_IDLE_READERS: usize = 8;

/// The storage gateway. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    shared: Arc<Shared>,
}

/// Where the data lives, and how to reach it.
#[derive(Debug, Clone)]
pub enum Location {
    /// A SQLite file, with the busy timeout of its connections.
    Sqlite {
        /// The file (created if missing).
        path: PathBuf,
        /// How long a statement waits for another process's lock.
        busy_timeout: Duration,
    },
    /// A PostgreSQL database.
    Postgres(PostgresSettings),
}

impl Location {
    /// The location `[database]` names.
    pub fn of(config: &crate::config::DatabaseConfig) -> Location {
        match config.store() {
            crate::config::Store::Sqlite(path) => Location::Sqlite {
                path,
                busy_timeout: Duration::from_millis(config.busy_timeout_ms),
            },
            crate::config::Store::Postgres(url) => Location::Postgres(PostgresSettings {
                url: url.expose().to_owned(),
                pool_size: config.pool_size,
                connect_timeout: Duration::from_millis(config.connect_timeout_ms),
                statement_timeout: Duration::from_millis(config.statement_timeout_ms),
            }),
        }
    }
}

/// What serves reads, per store.
enum Engine {
    /// Read-only connections to the file, kept for reuse.
    Sqlite {
        path: PathBuf,
        readers: Mutex<Vec<Connection>>,
    },
    /// The connection pool.
    Postgres(Arc<Postgres>),
}

struct Shared {
    engine: Engine,
    writer: Mutex<Option<mpsc::Sender<Job>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The last write failure and when it happened, cleared by the next
    /// successful commit.
    write_fault: Mutex<Option<(String, Instant)>>,
    /// When the batch being written now started, if one is.
    batch_started: Mutex<Option<Instant>>,
    /// The outbound webhooks' subscriptions, installed on the writer
    /// thread for each batch (`outbox.rs`).
    outbound: Mutex<Option<Arc<outbox::Subscriptions>>>,
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
        Db::connect(&Location::Sqlite {
            path: path.to_owned(),
            busy_timeout,
        })
    }

    /// Opens the store at `location`: [`Db::open`] for a SQLite file; for
    /// PostgreSQL, the pool (on the current runtime, so call it from
    /// `spawn_blocking` or a thread that entered the runtime) and the
    /// migrations. An unreachable server is a fault, not a failed start, as
    /// a missing SQLite directory is.
    pub fn connect(location: &Location) -> Result<Db, DbError> {
        let (engine, writer, fault) = match location {
            Location::Sqlite { path, busy_timeout } => {
                let (conn, fault) = match open_writer(path, *busy_timeout) {
                    Ok(conn) => (Some(conn), None),
                    Err(DbError::Unavailable(cause)) => {
                        tracing::error!(%cause, path = %path.display(), "database unavailable at start; answering 503 until it returns");
                        (None, Some(format!("storage unavailable: {cause}")))
                    }
                    Err(e) => return Err(e),
                };
                let engine = Engine::Sqlite {
                    path: path.clone(),
                    readers: Mutex::new(Vec::new()),
                };
                let writer = Writer::Sqlite {
                    conn,
                    path: path.clone(),
                    busy_timeout: *busy_timeout,
                };
                (engine, writer, fault)
            }
            Location::Postgres(settings) => {
                let pg = Arc::new(Postgres::new(settings)?);
                let fault = match pg.migrate() {
                    Ok(()) => None,
                    Err(DbError::Unavailable(cause)) => {
                        tracing::error!(%cause, "database unavailable at start; answering 503 until it returns");
                        Some(format!("storage unavailable: {cause}"))
                    }
                    Err(e) => return Err(e),
                };
                let writer = Writer::Postgres {
                    pg: pg.clone(),
                    client: None,
                    migrated: fault.is_none(),
                };
                (Engine::Postgres(pg), writer, fault)
            }
        };
        let degraded = fault.is_some();

        let (tx, rx) = mpsc::channel::<Job>();
        let shared = Arc::new(Shared {
            engine,
            writer: Mutex::new(Some(tx)),
            writer_thread: Mutex::new(None),
            write_fault: Mutex::new(fault.map(|f| (f, Instant::now()))),
            batch_started: Mutex::new(None),
            outbound: Mutex::new(None),
        });
        let weak = Arc::downgrade(&shared);
        let handle = std::thread::Builder::new()
            .name("crm-writer".into())
            .spawn(move || writer_loop(writer, rx, weak))
            .map_err(|e| DbError::Internal(format!("cannot start writer thread: {e}")))?;
        *shared.writer_thread.lock().unwrap() = Some(handle);
        let db = Db { shared };
        if !degraded && let Engine::Sqlite { .. } = db.shared.engine {
            // Fail now, not on the first request, if reads cannot work.
            drop(db.reader()?);
        }
        Ok(db)
    }

    /// Asks the store at `location` a trivial query, changing nothing: no
    /// file is created, no schema migrated. PostgreSQL needs the runtime, as
    /// for [`Db::connect`].
    pub fn ping(location: &Location) -> Result<(), DbError> {
        match location {
            Location::Sqlite { path, busy_timeout } => {
                let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
                conn.busy_timeout(*busy_timeout)?;
                (&conn as &dyn Sql).query_row("SELECT 1", &[], |r| r.get::<i64>(0))?;
            }
            Location::Postgres(settings) => {
                let pg = Postgres::new(settings)?;
                let client = pg.connection()?;
                (&pg.session(&client) as &dyn Sql)
                    .query_row("SELECT 1", &[], |r| r.get::<i64>(0))?;
                drop(client);
                pg.close();
            }
        }
        Ok(())
    }

    /// Runs `f` on this thread in a transaction that is always rolled
    /// back: a what-if (`explain`) that sees the live data and leaves
    /// nothing behind. PostgreSQL only: on SQLite it would hold the file's
    /// write lock meanwhile, so `explain` works on an in-memory copy there.
    pub fn rehearse<R>(
        &self,
        f: impl FnOnce(&dyn Sql) -> Result<R, DbError>,
    ) -> Result<R, DbError> {
        let Engine::Postgres(pg) = &self.shared.engine else {
            return Err(DbError::Internal(
                "rehearse runs on PostgreSQL; SQLite rehearses on a copy".into(),
            ));
        };
        let client = pg.connection()?;
        let session = pg.session(&client);
        session.batch("BEGIN")?;
        let result = f(&session);
        session.batch("ROLLBACK")?;
        result
    }

    /// Runs `f` on a pooled connection outside any transaction, off the
    /// async runtime: maintenance that cannot run in one (PostgreSQL's
    /// `VACUUM`). PostgreSQL only; SQLite has one writer, see `erase.rs`.
    pub async fn maintain<R, F>(&self, f: F) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: FnOnce(&dyn Sql) -> Result<R, DbError> + Send + 'static,
    {
        let Engine::Postgres(pg) = &self.shared.engine else {
            return Err(DbError::Internal("maintain runs on PostgreSQL".into()));
        };
        let pg = pg.clone();
        tokio::task::spawn_blocking(move || {
            let client = pg.connection()?;
            f(&pg.session(&client))
        })
        .await
        .map_err(|e| DbError::Internal(format!("maintenance task failed: {e}")))?
    }

    /// The SQLite file, when the store is one; `None` on PostgreSQL.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &self.shared.engine {
            Engine::Sqlite { path, .. } => Some(path),
            Engine::Postgres(_) => None,
        }
    }

    /// Which store this is.
    pub fn dialect(&self) -> sql::Dialect {
        match &self.shared.engine {
            Engine::Sqlite { .. } => sql::Dialect::Sqlite,
            Engine::Postgres(_) => sql::Dialect::Postgres,
        }
    }

    /// PostgreSQL connections in use and open; `None` on SQLite.
    pub fn pool_status(&self) -> Option<(usize, usize)> {
        match &self.shared.engine {
            Engine::Sqlite { .. } => None,
            Engine::Postgres(pg) => Some(pg.pool_status()),
        }
    }

    /// Runs `f` in the writer's transaction (inside a savepoint when other
    /// jobs share the batch) and answers once the batch is committed.
    pub async fn write<R, F>(&self, f: F) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: FnOnce(&dyn Sql) -> Result<R, DbError> + Send + 'static,
    {
        let mut f = Some(f);
        self.submit(false, move |conn| match f.take() {
            Some(f) => f(conn),
            None => Err(DbError::Internal("a one-off write job ran twice".into())),
        })
        .await
    }

    /// [`Db::write`] for a job that may run twice, changing the database
    /// only through `conn`. A batch of such jobs runs without a savepoint
    /// per job (a savepoint copies every page a job changes into the
    /// sub-journal: a fifth of the writer's work for a busy webhook); if one
    /// of them fails, the batch is rolled back and run again, each job in
    /// its own savepoint, so that the failing job is the only one refused.
    pub async fn write_repeatable<R, F>(&self, f: F) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: FnMut(&dyn Sql) -> Result<R, DbError> + Send + 'static,
    {
        self.submit(true, f).await
    }

    async fn submit<R, F>(&self, repeatable: bool, f: F) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: FnMut(&dyn Sql) -> Result<R, DbError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(Task {
            f,
            repeatable,
            result: None,
            tx,
            span: tracing::Span::current(),
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
        F: FnOnce(&dyn Sql) -> Result<R, DbError> + Send + 'static,
    {
        let db = self.clone();
        let span = tracing::Span::current();
        let joined = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let guarded = |conn: &dyn Sql| {
                catch_unwind(AssertUnwindSafe(|| f(conn)))
                    .unwrap_or_else(|panic| Err(DbError::Internal(panic_message(&panic))))
            };
            match &db.shared.engine {
                Engine::Sqlite { .. } => {
                    let conn = db.reader()?;
                    let result = guarded(&conn);
                    db.give_back(conn);
                    result
                }
                Engine::Postgres(pg) => pg.read(guarded),
            }
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
        // Idle readers close first, so that the writer's connection is the
        // last one: only it can checkpoint the WAL and remove the file (a
        // read-only connection closing last leaves the WAL behind).
        if let Engine::Sqlite { readers, .. } = &self.shared.engine {
            readers.lock().unwrap().clear();
        }
        self.shared.writer.lock().unwrap().take();
        if let Some(handle) = self.shared.writer_thread.lock().unwrap().take() {
            let _ = handle.join();
        }
        if let Engine::Postgres(pg) = &self.shared.engine {
            pg.close();
        }
    }

    fn reader(&self) -> Result<Connection, DbError> {
        let Engine::Sqlite { path, readers } = &self.shared.engine else {
            return Err(DbError::Internal("no SQLite file to read".into()));
        };
        if let Some(conn) = readers.lock().unwrap().pop() {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&conn, Duration::from_secs(2))?;
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        let Engine::Sqlite { readers, .. } = &self.shared.engine else {
            return;
        };
        let mut idle = readers.lock().unwrap();
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
    // Deleted rows are overwritten with zeros, free pages included: an
    // erased person must leave no bytes in the file (see `erase.rs`).
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// A write job: the caller's function, its last result, and where the
/// answer goes.
struct Task<F, R> {
    f: F,
    repeatable: bool,
    result: Option<Result<R, DbError>>,
    tx: oneshot::Sender<Result<R, DbError>>,
    span: tracing::Span,
}

impl<F, R> WriteJob for Task<F, R>
where
    R: Send + 'static,
    F: FnMut(&dyn Sql) -> Result<R, DbError> + Send + 'static,
{
    fn repeatable(&self) -> bool {
        self.repeatable
    }

    fn run(&mut self, conn: &dyn Sql) -> JobEnd {
        let _entered = self.span.enter();
        let f = &mut self.f;
        // The job's held-back writes are sent before it counts as done, so
        // that their failure is its own (and its savepoint's).
        let result = catch_unwind(AssertUnwindSafe(|| {
            f(conn).and_then(|r| conn.flush().map(|()| r))
        }))
        .unwrap_or_else(|panic| Err(DbError::Internal(panic_message(&panic))));
        let end = match &result {
            Ok(_) => JobEnd::Keep,
            Err(e @ DbError::Unavailable(_)) => JobEnd::Fault(e.to_string()),
            Err(_) => JobEnd::Undo,
        };
        self.result = Some(result);
        end
    }

    fn finish(self: Box<Self>, batch_error: Option<DbError>) {
        let outcome = match (self.result, batch_error) {
            (Some(Ok(value)), None) => Ok(value),
            (Some(Err(e)), _) => Err(e),
            (_, Some(e)) => Err(e),
            (None, None) => Err(DbError::Internal("job was not run".into())),
        };
        let _ = self.tx.send(outcome);
    }
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

    /// Queues `jobs` behind a job that holds the writer until all are
    /// queued, so that they make one batch; returns their answers.
    async fn one_batch(
        db: &Db,
        jobs: Vec<(bool, i64, bool, Arc<std::sync::atomic::AtomicUsize>)>,
    ) -> Vec<Result<i64, DbError>> {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let blocker = tokio::spawn({
            let db = db.clone();
            async move {
                db.write(move |_| {
                    started_tx.send(()).unwrap();
                    go_rx.recv_timeout(Duration::from_secs(10)).unwrap();
                    Ok(0)
                })
                .await
            }
        });
        tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
            .await
            .unwrap();
        let mut answers = Vec::new();
        for (repeatable, x, fail, runs) in jobs {
            let job = move |conn: &dyn Sql| {
                runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                conn.execute("INSERT INTO t (x) VALUES (?1)", crate::args![x])?;
                if fail {
                    return Err(DbError::Internal(format!("job {x} refused")));
                }
                Ok(x)
            };
            let db = db.clone();
            answers.push(tokio::spawn(async move {
                if repeatable {
                    db.write_repeatable(job).await
                } else {
                    db.write(job).await
                }
            }));
            // Let the job reach the writer's queue before the next one.
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        go_tx.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        let mut out = Vec::new();
        for answer in answers {
            out.push(answer.await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_failing_job_fails_alone_in_batches_with_and_without_savepoints() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("crm.sqlite3"), Duration::from_secs(5)).unwrap();
        db.write(|conn| conn.batch("CREATE TABLE t (x INTEGER UNIQUE)"))
            .await
            .unwrap();
        let rows = |db: &Db| {
            let db = db.clone();
            async move {
                db.read(|conn| {
                    conn.query_all("SELECT x FROM t ORDER BY x", &[], |r| r.get::<i64>(0))
                })
                .await
                .unwrap()
            }
        };
        let runs: Vec<_> = (0..4).map(|_| Arc::new(AtomicUsize::new(0))).collect();
        let counts = |runs: &[Arc<AtomicUsize>]| -> Vec<usize> {
            runs.iter().map(|r| r.load(Ordering::SeqCst)).collect()
        };

        // Repeatable jobs that all succeed run once each, without savepoints.
        let answers = one_batch(
            &db,
            (1..=3)
                .map(|x| (true, x, false, runs[x as usize].clone()))
                .collect(),
        )
        .await;
        assert_eq!(
            answers.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(counts(&runs[1..]), [1, 1, 1]);
        assert_eq!(rows(&db).await, [1, 2, 3]);

        // One of them fails: the batch runs again in savepoints, and only
        // the failing job's insert is gone.
        let runs: Vec<_> = (0..4).map(|_| Arc::new(AtomicUsize::new(0))).collect();
        let answers = one_batch(
            &db,
            vec![
                (true, 10, false, runs[1].clone()),
                (true, 11, true, runs[2].clone()),
                (true, 12, false, runs[3].clone()),
            ],
        )
        .await;
        assert_eq!(answers[0].as_ref().unwrap(), &10);
        assert!(matches!(&answers[1], Err(DbError::Internal(m)) if m == "job 11 refused"));
        assert_eq!(answers[2].as_ref().unwrap(), &12);
        assert_eq!(counts(&runs[1..]), [2, 2, 1]);
        assert_eq!(rows(&db).await, [1, 2, 3, 10, 12]);

        // A one-off job in the batch: savepoints from the start, each job
        // runs once; a constraint failure is refused alone too.
        let runs: Vec<_> = (0..4).map(|_| Arc::new(AtomicUsize::new(0))).collect();
        let answers = one_batch(
            &db,
            vec![
                (false, 20, false, runs[1].clone()),
                (true, 1, false, runs[2].clone()),
                (true, 21, false, runs[3].clone()),
            ],
        )
        .await;
        assert_eq!(answers[0].as_ref().unwrap(), &20);
        assert!(
            matches!(&answers[1], Err(DbError::Internal(_))),
            "{:?}",
            answers[1]
        );
        assert_eq!(answers[2].as_ref().unwrap(), &21);
        assert_eq!(counts(&runs[1..]), [1, 1, 1]);
        assert_eq!(rows(&db).await, [1, 2, 3, 10, 12, 20, 21]);
        db.close();
    }
}
