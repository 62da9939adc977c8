//! The PostgreSQL engine: a pool of connections (`deadpool-postgres`), the
//! [`Sql`] session over one of them, and the migrations.
//!
//! Store functions are synchronous; they run on the writer thread or on
//! `spawn_blocking` threads, where a session waits for each statement on the
//! runtime that drives the connections (`Handle::block_on`).
//!
//! Several instances share one database. Their writes are serialised by a
//! transaction-level advisory lock taken when a write transaction begins, so
//! that identity (find-or-create by email, phone, visitor id) is decided by
//! one writer at a time across all of them, as SQLite's single writer does
//! on one machine; unique indexes stay the backstop.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio::runtime::Handle;
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

use super::DbError;
use super::sql::{Dialect, OwnedValue, Query, Row, Sql, Value, postgres_placeholders};

/// Advisory-lock key every write transaction holds ("crm-wr").
pub(super) const WRITE_LOCK: i64 = 0x63726d2d7772;
/// Advisory-lock key held while migrating ("crm-mg").
const MIGRATE_LOCK: i64 = 0x63726d2d6d67;

/// Schema versions for PostgreSQL, numbered as SQLite's: the first file
/// brings an empty database to version 6 at once.
const MIGRATIONS: &[(i64, &str)] = &[
    (6, include_str!("../../migrations/postgres/0006_schema.sql")),
    (7, include_str!("../../migrations/postgres/0007_staff.sql")),
    (8, include_str!("../../migrations/postgres/0008_merges.sql")),
    (
        9,
        include_str!("../../migrations/postgres/0009_tombstones.sql"),
    ),
    (
        10,
        include_str!("../../migrations/postgres/0010_audit_retention.sql"),
    ),
    (
        11,
        include_str!("../../migrations/postgres/0011_outbound.sql"),
    ),
    (
        12,
        include_str!("../../migrations/postgres/0012_duplicate_queue_index.sql"),
    ),
    (
        13,
        include_str!("../../migrations/postgres/0013_deliveries_by_lead.sql"),
    ),
];

/// How to reach the server.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `postgres://…`, as `tokio-postgres` reads it (several hosts,
    /// `target_session_attrs`, `connect_timeout` …).
    pub url: String,
    /// Most connections open at once.
    pub pool_size: usize,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Longest a statement may run on the server.
    pub statement_timeout: Duration,
}

/// The pool and the runtime its connections run on.
pub(super) struct Postgres {
    pool: Pool,
    handle: Handle,
    /// How to connect, for the writer's connection of its own.
    config: tokio_postgres::Config,
    /// Longest wait for a connection from the pool.
    wait: Duration,
}

impl Postgres {
    /// Builds the pool (connecting lazily) on the current runtime.
    pub(super) fn new(settings: &Settings) -> Result<Postgres, DbError> {
        let handle = Handle::try_current().map_err(|_| {
            DbError::Internal("PostgreSQL needs the async runtime to be running".into())
        })?;
        let mut config: tokio_postgres::Config = settings
            .url
            .parse()
            .map_err(|e| DbError::Internal(format!("database URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(settings.connect_timeout);
        }
        let options = format!(
            "{} -c statement_timeout={} -c lock_timeout={}",
            config.get_options().unwrap_or_default(),
            settings.statement_timeout.as_millis(),
            settings.statement_timeout.as_millis(),
        );
        config.options(options.trim());
        config.application_name("crm-responder");
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.connect_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .build()
            .map_err(|e| DbError::Internal(format!("connection pool: {e}")))?;
        Ok(Postgres {
            pool,
            handle,
            config,
            wait: settings.connect_timeout,
        })
    }

    /// A connection from the pool, waiting at most the connect timeout.
    pub(super) fn connection(&self) -> Result<Object, DbError> {
        self.handle
            .block_on(async { tokio::time::timeout(self.wait, self.pool.get()).await })
            .map_err(|_| DbError::Unavailable("no database connection in time".into()))?
            .map_err(|e| match e {
                deadpool_postgres::PoolError::Backend(e) => DbError::from(e),
                other => DbError::Unavailable(format!("database connection: {other}")),
            })
    }

    /// A session over `client`.
    pub(super) fn session<'a>(&'a self, client: &'a Object) -> Session<'a> {
        Session {
            conn: Conn::Pooled(client),
            exec: Exec::Shared(&self.handle),
            later: RefCell::default(),
        }
    }

    /// A connection driven by a runtime of the calling thread's own (the
    /// writer's): a statement then costs a round trip to the server and no
    /// hand-off between threads, which was most of a write's time.
    pub(super) fn own_connection(&self) -> Result<OwnConnection, DbError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| DbError::Internal(format!("writer runtime: {e}")))?;
        let wait = self.wait;
        let (client, connection) = runtime
            .block_on(async { tokio::time::timeout(wait, self.config.connect(NoTls)).await })
            .map_err(|_| DbError::Unavailable("no database connection in time".into()))??;
        runtime.spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "writer's database connection ended");
            }
        });
        Ok(OwnConnection {
            runtime,
            client,
            statements: RefCell::new(HashMap::new()),
        })
    }

    /// Runs `f` in a read-only transaction (one snapshot for all its reads).
    pub(super) fn read<R>(
        &self,
        f: impl FnOnce(&dyn Sql) -> Result<R, DbError>,
    ) -> Result<R, DbError> {
        let client = self.connection()?;
        let session = self.session(&client);
        session.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
        let result = f(&session);
        // Nothing was written: ending the snapshot either way is the same.
        let _ = session.batch(if result.is_ok() { "COMMIT" } else { "ROLLBACK" });
        result
    }

    /// Brings the schema up to date, once across every instance starting
    /// at the same time (they wait on an advisory lock).
    pub(super) fn migrate(&self) -> Result<(), DbError> {
        let client = self.connection()?;
        let session = self.session(&client);
        session.execute("SELECT pg_advisory_lock(?1)", crate::args![MIGRATE_LOCK])?;
        let result = migrate(&session);
        let unlocked = session.execute("SELECT pg_advisory_unlock(?1)", crate::args![MIGRATE_LOCK]);
        result.and(unlocked.map(drop))
    }

    /// Connections in use and open, for `/metrics`.
    pub(super) fn pool_status(&self) -> (usize, usize) {
        let status = self.pool.status();
        (status.size - status.available, status.size)
    }

    /// Closes every idle connection; later use fails.
    pub(super) fn close(&self) {
        self.pool.close();
    }
}

fn migrate(session: &dyn Sql) -> Result<(), DbError> {
    session.batch("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")?;
    let current: i64 = session
        .query_opt("SELECT max(version) FROM schema_version", &[], |r| {
            r.get::<Option<i64>>(0)
        })?
        .flatten()
        .unwrap_or(0);
    let latest = super::migrate::latest_version();
    if current > latest {
        return Err(DbError::Internal(format!(
            "database schema version {current} is newer than this program ({latest}); \
             refusing to run an older binary against it"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        session.batch("BEGIN")?;
        let done = session
            .batch(sql)
            .and_then(|()| {
                session.execute(
                    "INSERT INTO schema_version (version) VALUES (?1)",
                    crate::args![version],
                )
            })
            .and_then(|_| session.batch("COMMIT"));
        if let Err(e) = done {
            let _ = session.batch("ROLLBACK");
            return Err(DbError::Internal(format!(
                "migration to version {version} failed: {e}"
            )));
        }
        tracing::info!(version, "database schema migrated");
    }
    Ok(())
}

/// A connection of the writer's own, with the runtime that drives it on
/// the writer's thread and its prepared statements.
pub(super) struct OwnConnection {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    statements: Statements,
}

impl OwnConnection {
    /// A session over it.
    pub(super) fn session(&self) -> Session<'_> {
        Session {
            conn: Conn::Plain {
                client: &self.client,
                statements: &self.statements,
            },
            exec: Exec::Own(&self.runtime),
            later: RefCell::default(),
        }
    }

    /// Whether the connection is gone (the writer opens another).
    pub(super) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

/// Prepared statements by their text as written (before placeholders are
/// rewritten).
pub type Statements = RefCell<HashMap<String, tokio_postgres::Statement>>;

/// One PostgreSQL connection seen through [`Sql`]: a pooled one (with
/// the pool's statement cache), or a plain client of a command's own.
pub struct Session<'a> {
    conn: Conn<'a>,
    exec: Exec<'a>,
    /// Writes held back by `execute_later`, sent with the next statement.
    later: RefCell<Vec<(tokio_postgres::Statement, Vec<OwnedValue>)>>,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        // Every transaction ends with a statement that sends them; writes
        // left here would be lost without a word.
        let later = self.later.get_mut();
        if !later.is_empty() {
            tracing::error!(
                statements = later.len(),
                "a database session ended with writes never sent"
            );
        }
    }
}

enum Conn<'a> {
    Pooled(&'a Object),
    Plain {
        client: &'a tokio_postgres::Client,
        statements: &'a Statements,
    },
}

/// What waits for a statement: the shared runtime (from a blocking
/// thread), or a runtime of the calling thread's own.
enum Exec<'a> {
    Shared(&'a Handle),
    Own(&'a tokio::runtime::Runtime),
}

impl Exec<'_> {
    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        match self {
            Exec::Shared(handle) => handle.block_on(future),
            Exec::Own(runtime) => runtime.block_on(future),
        }
    }
}

impl<'a> Session<'a> {
    /// A session over `client`, a connection of the caller's own (as
    /// `migrate-store` makes for its copy), driven on `handle`'s runtime,
    /// preparing into `statements`.
    pub fn plain(
        client: &'a tokio_postgres::Client,
        statements: &'a Statements,
        handle: &'a Handle,
    ) -> Session<'a> {
        Session {
            conn: Conn::Plain { client, statements },
            exec: Exec::Shared(handle),
            later: RefCell::default(),
        }
    }

    fn client(&self) -> &tokio_postgres::Client {
        match &self.conn {
            Conn::Pooled(object) => object,
            Conn::Plain { client, .. } => client,
        }
    }

    fn prepared(&self, sql: &str) -> Result<tokio_postgres::Statement, DbError> {
        match &self.conn {
            Conn::Pooled(object) => Ok(self
                .exec
                .block_on(object.prepare_cached(&postgres_placeholders(sql)))?),
            Conn::Plain { client, statements } => {
                if let Some(statement) = statements.borrow().get(sql) {
                    return Ok(statement.clone());
                }
                let text = postgres_placeholders(sql);
                let statement = self.exec.block_on(client.prepare(&text))?;
                statements
                    .borrow_mut()
                    .insert(sql.to_owned(), statement.clone());
                Ok(statement)
            }
        }
    }
}

fn params<'v>(args: &'v [Value<'v>]) -> Vec<&'v (dyn ToSql + Sync)> {
    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()
}

/// What a statement sent in a pipeline answers.
enum Answer {
    /// The rows of a query.
    Rows(Vec<tokio_postgres::Row>),
    /// The number of rows a write changed.
    Changed(u64),
}

impl Session<'_> {
    /// Sends the held-back writes and then `statements`, all before waiting
    /// for any answer (tokio-postgres pipelines requests sent together), and
    /// answers each of `statements`: its rows, or with `count` the number of
    /// rows it changed. The first error in order is the answer; statements
    /// after a failed one fail too (the transaction is aborted).
    fn pipeline(
        &self,
        statements: &[(tokio_postgres::Statement, &[Value<'_>])],
        count: bool,
    ) -> Result<Vec<Answer>, DbError> {
        let later = std::mem::take(&mut *self.later.borrow_mut());
        let later_values: Vec<Vec<Value<'_>>> = later
            .iter()
            .map(|(_, args)| args.iter().map(OwnedValue::as_value).collect())
            .collect();
        let client = self.client();
        let writes = later
            .iter()
            .zip(&later_values)
            .map(|((statement, _), args)| (statement, args.as_slice(), true));
        let asked = statements
            .iter()
            .map(|(statement, args)| (statement, *args, count));
        type Pending<'f> = std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Answer, tokio_postgres::Error>> + 'f>,
        >;
        let futures: Vec<Pending<'_>> = writes
            .chain(asked)
            .map(|(statement, args, count)| -> Pending<'_> {
                let params = params(args);
                if count {
                    Box::pin(async move {
                        client
                            .execute(statement, &params)
                            .await
                            .map(Answer::Changed)
                    })
                } else {
                    Box::pin(
                        async move { client.query(statement, &params).await.map(Answer::Rows) },
                    )
                }
            })
            .collect();
        let mut answers = Vec::with_capacity(statements.len());
        for (i, answer) in self
            .exec
            .block_on(in_order(futures))
            .into_iter()
            .enumerate()
        {
            let answer = answer?;
            if i >= later.len() {
                answers.push(answer);
            }
        }
        Ok(answers)
    }
}

/// Awaits `futures`, polling them in order, so that each sends its request
/// before the next one does and all are sent before any answer is awaited.
async fn in_order<F: std::future::Future + Unpin>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures = futures;
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match std::pin::Pin::new(&mut *future).poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future ended"))
        .collect()
}

impl Sql for Session<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&self, sql: &str, args: &[Value<'_>]) -> Result<usize, DbError> {
        let statement = self.prepared(sql)?;
        match self.pipeline(&[(statement, args)], true)?.pop() {
            Some(Answer::Changed(changed)) => Ok(changed as usize),
            _ => Err(DbError::Internal("no row count for a write".into())),
        }
    }

    fn each_row(
        &self,
        sql: &str,
        args: &[Value<'_>],
        each: &mut dyn FnMut(&Row<'_>) -> Result<(), DbError>,
    ) -> Result<(), DbError> {
        self.each_row_of(&[Query::new(sql, args)], &mut |_, row| each(row))
    }

    fn batch(&self, sql: &str) -> Result<(), DbError> {
        // The simple protocol cannot be pipelined with the held-back
        // writes: they go first, in a round trip of their own.
        self.flush()?;
        Ok(self.exec.block_on(self.client().batch_execute(sql))?)
    }

    fn execute_later(&self, sql: &str, args: &[Value<'_>]) -> Result<(), DbError> {
        let statement = self.prepared(sql)?;
        let args = args.iter().map(|&a| OwnedValue::from(a)).collect();
        self.later.borrow_mut().push((statement, args));
        Ok(())
    }

    fn flush(&self) -> Result<(), DbError> {
        if self.later.borrow().is_empty() {
            return Ok(());
        }
        self.pipeline(&[], false).map(drop)
    }

    fn execute_each(&self, statements: &[Query<'_>]) -> Result<Vec<usize>, DbError> {
        let writes = statements
            .iter()
            .map(|q| Ok((self.prepared(q.sql)?, q.args)))
            .collect::<Result<Vec<_>, DbError>>()?;
        self.pipeline(&writes, true)?
            .into_iter()
            .map(|answer| match answer {
                Answer::Changed(n) => Ok(n as usize),
                Answer::Rows(_) => Err(DbError::Internal("no row count for a write".into())),
            })
            .collect()
    }

    fn each_row_of(
        &self,
        queries: &[Query<'_>],
        each: &mut dyn FnMut(usize, &Row<'_>) -> Result<(), DbError>,
    ) -> Result<(), DbError> {
        let reads = queries
            .iter()
            .map(|q| Ok((self.prepared(q.sql)?, q.args)))
            .collect::<Result<Vec<_>, DbError>>()?;
        for (i, answer) in self.pipeline(&reads, false)?.iter().enumerate() {
            if let Answer::Rows(rows) = answer {
                for row in rows {
                    each(i, &Row::Postgres(row))?;
                }
            }
        }
        Ok(())
    }
}
