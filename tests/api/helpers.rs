//! `spawn_app()`: the real service on a real socket (port 0) with a fresh
//! database, and a client that talks to it.
//!
//! The store is chosen by the environment, so that no test is written
//! twice: a SQLite file in a temporary directory by default, or, when
//! `CRM_TEST_POSTGRES` names a PostgreSQL server
//! (`postgres://postgres@127.0.0.1:55432/postgres`), a new database on it
//! for each test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crm_responder::app::Application;
use crm_responder::config::Config;
use crm_responder::store::DbError;
use crm_responder::store::sql::{
    Cell, Dialect, Row, Sql, Value as SqlValue, postgres_placeholders,
};
use serde_json::Value;
use tokio::sync::oneshot;

/// The password of the test sales user `sales`.
pub const SALES_PASSWORD: &str = "sales-password";
/// Its argon2 hash, as in `[[sales.users]]`.
pub const SALES_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$O3xUn9tbXa+0eE3gFeyGdg$Z5548GcDasJ7vM95I/m3sLFwcHswCoauDOlATirkIag";
/// The Jivo token of test apps.
pub const JIVO_TOKEN: &str = "test-jivo-token";
/// The Rocket.Chat token of test apps.
pub const ROCKETCHAT_TOKEN: &str = "test-rocketchat-token";
/// LiveChat v2 credentials and v3 secret of test apps.
pub const LIVECHAT_USER: &str = "livechat";
/// LiveChat v2 password.
pub const LIVECHAT_PASSWORD: &str = "test-livechat-password";
/// LiveChat v3 secret (the fixtures' value).
pub const LIVECHAT_SECRET: &str = "livechat-secret-key";

/// The config text of a test app; `db` is the SQLite path.
pub fn config_text(db: &Path) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
public_url = "http://crm.test"
max_body_bytes = 1048576

[database]
path = "{db}"

[jivo]
token = "{JIVO_TOKEN}"
enable_assign = true

[rocketchat]
token = "{ROCKETCHAT_TOKEN}"

[livechat]
username = "{LIVECHAT_USER}"
password = "{LIVECHAT_PASSWORD}"
secret_key = "{LIVECHAT_SECRET}"

[merge]
match_order = ["email", "phone"]
default_region = "US"
phone = "keep_both"
email = "keep_both"
primary = "existing"
name = "keep_existing"
description = "keep_existing"

[duplicates]
enabled = true
threshold = 0.92

[[sales.users]]
name = "sales"
password_hash = "{SALES_HASH}"
"#,
        db = db.display()
    )
}

/// The PostgreSQL server the suite runs against, if any.
pub fn postgres_server() -> Option<String> {
    std::env::var("CRM_TEST_POSTGRES")
        .ok()
        .filter(|url| !url.trim().is_empty())
}

/// Whether this run is on PostgreSQL; a test of what only a SQLite file
/// has (its file on disk, its locks, a read-only filesystem) calls this
/// first and returns when it says so, printing why.
pub fn skipped_on_postgres(what: &str) -> bool {
    let skip = postgres_server().is_some();
    if skip {
        eprintln!("skipped on PostgreSQL: {what}");
    }
    skip
}

/// A fresh, empty database on the test PostgreSQL server; its URL.
pub async fn fresh_postgres_database(server: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "crm_test_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let (client, connection) = tokio_postgres::connect(server, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("CRM_TEST_POSTGRES={server}: {e}"));
    let driver = tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create test database");
    drop(client);
    let _ = driver.await;
    let (base, query) = match server.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (server, String::new()),
    };
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    format!("{base}/{name}{query}")
}

/// For a test that starts the binary on a store of its own: a fresh
/// PostgreSQL database when the run is on PostgreSQL (its URL), else `None`
/// (a SQLite file). Callable from sync and async tests alike.
pub fn fresh_store() -> Option<String> {
    let server = postgres_server()?;
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(fresh_postgres_database(&server))
    })
    .join()
    .map(Some)
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The test config text for `db`, with the database URL set when the run
/// is on PostgreSQL.
pub fn store_config_text(db: &Path, url: Option<&str>) -> String {
    let text = config_text(db);
    match url {
        Some(url) => text.replacen("[database]\n", &format!("[database]\nurl = \"{url}\"\n"), 1),
        None => text,
    }
}

/// A running service.
pub struct TestApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The SQLite file (unused when `db_url` is set).
    pub db_path: PathBuf,
    /// The PostgreSQL database, when the run is on PostgreSQL.
    pub db_url: Option<String>,
    /// An HTTP client.
    pub client: reqwest::Client,
    /// The temporary directory (removed on drop).
    dir: Option<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Starts the service with the default test config.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the service after `adjust` has changed the test config.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let db_path = dir.path().join("crm.sqlite3");
    let db_url = match postgres_server() {
        Some(server) => Some(fresh_postgres_database(&server).await),
        None => None,
    };
    let mut config =
        Config::parse(&store_config_text(&db_path, db_url.as_deref())).expect("test config parses");
    config.database.spool_dir = Some(dir.path().join("spool"));
    adjust(&mut config);
    let app = Application::build(config).await.expect("app starts");
    let addr = app.addr();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        app.run_until(async {
            let _ = rx.await;
        })
        .await
        .expect("server runs");
    });
    TestApp {
        addr,
        db_path,
        db_url,
        client: reqwest::Client::new(),
        dir: Some(dir),
        shutdown: Some(tx),
        task: Some(task),
    }
}

/// A fixture body, from `tests/fixtures/`.
pub fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture is JSON")
}

impl TestApp {
    /// `http://addr{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs raw bytes to a path.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    /// POSTs a Jivo webhook with the right token; returns status and JSON body.
    pub async fn jivo(&self, body: &Value) -> (u16, Value) {
        let path = format!("/webhooks/jivo/{JIVO_TOKEN}");
        let response = self.post_raw(&path, body.to_string()).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// POSTs a Rocket.Chat webhook with the right token; returns status and JSON body.
    pub async fn rocketchat(&self, body: &Value) -> (u16, Value) {
        self.rocketchat_with(body, Some(ROCKETCHAT_TOKEN)).await
    }

    /// POSTs a Rocket.Chat webhook with the given token header (none if `None`).
    pub async fn rocketchat_with(&self, body: &Value, token: Option<&str>) -> (u16, Value) {
        let mut request = self
            .client
            .post(self.url("/webhooks/rocketchat"))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(token) = token {
            request = request.header("X-RocketChat-Livechat-Token", token);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// POSTs a LiveChat webhook with the test v2 Basic credentials (v3
    /// bodies carry their own secret); returns status and JSON body.
    pub async fn livechat(&self, body: &Value) -> (u16, Value) {
        self.livechat_with(body, Some((LIVECHAT_USER, LIVECHAT_PASSWORD)))
            .await
    }

    /// POSTs a LiveChat webhook with the given Basic credentials (none if `None`).
    pub async fn livechat_with(&self, body: &Value, basic: Option<(&str, &str)>) -> (u16, Value) {
        let mut request = self
            .client
            .post(self.url("/webhooks/livechat"))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some((user, password)) = basic {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// GET with the sales user's credentials; returns status and JSON body.
    pub async fn api(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(self.url(path))
            .basic_auth("sales", Some(SALES_PASSWORD))
            .send()
            .await
            .expect("request sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The lead as `GET /api/leads/{id}` shows it.
    pub async fn lead(&self, id: i64) -> Value {
        let (status, body) = self.api(&format!("/api/leads/{id}")).await;
        assert_eq!(status, 200, "GET /api/leads/{id}: {body}");
        body
    }

    /// Runs a query on the database directly (the SQLite file, or the
    /// PostgreSQL database on its own connection); the first column of the
    /// first row.
    pub fn sql<T: Cell + Send>(&self, sql: &str) -> T {
        query_store(&self.db_path, self.db_url.as_deref(), sql)
    }

    /// [`TestApp::sql`] with parameters (`?1` placeholders, [`crm_responder::args!`]).
    pub fn sql_with<T: Cell + Send>(&self, sql: &str, args: &[SqlValue<'_>]) -> T {
        self.store(|db| {
            db.query_row(sql, args, |r| r.get(0))
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        })
    }

    /// Runs one statement on the database directly; the rows it changed.
    pub fn execute(&self, sql: &str, args: &[SqlValue<'_>]) -> usize {
        self.store(|db| {
            db.execute(sql, args)
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        })
    }

    /// Runs `f` on a connection of its own to the database (see [`with_store`]).
    pub fn store<R: Send>(&self, f: impl FnOnce(&dyn Sql) -> R + Send) -> R {
        with_store(&self.db_path, self.db_url.as_deref(), f)
    }

    /// Another session takes the database's write lock and holds it until
    /// [`WriteLock::release`] (see [`WriteLock`]).
    pub fn lock_for_writes(&self) -> WriteLock {
        match &self.db_url {
            None => {
                let conn = rusqlite::Connection::open(&self.db_path).expect("open db");
                conn.execute_batch("BEGIN EXCLUSIVE;")
                    .expect("take the write lock");
                WriteLock::Sqlite(conn)
            }
            Some(url) => {
                let url = url.clone();
                let (locked_tx, locked_rx) = std::sync::mpsc::channel();
                let (release, released) = std::sync::mpsc::channel::<()>();
                let thread = std::thread::spawn(move || {
                    let session = PostgresSession::connect(&url);
                    session
                        .batch(
                            "BEGIN; LOCK TABLE deliveries, leads, history IN ACCESS EXCLUSIVE MODE",
                        )
                        .expect("take the write lock");
                    let _ = locked_tx.send(());
                    let _ = released.recv();
                    session.batch("ROLLBACK").expect("roll back");
                });
                locked_rx.recv().expect("the lock holder took its lock");
                WriteLock::Postgres {
                    release,
                    thread: Some(thread),
                }
            }
        }
    }

    /// Whether the server task is still running (it ends on a panic that escapes a request).
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the server gracefully and waits for it; the directory holding
    /// the database lives on in the returned guard.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.dir.take().expect("directory present until stop")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A write lock another session holds on the test database, as a
/// maintenance job or another writer would: on SQLite an exclusive
/// transaction on the file (`BEGIN EXCLUSIVE`); on PostgreSQL a
/// transaction holding `ACCESS EXCLUSIVE` locks on the tables every
/// delivery writes. Either way the service's writes wait for it (up to
/// `busy_timeout_ms` or `statement_timeout_ms`). Released (rolled back) by
/// [`WriteLock::release`] or when dropped.
pub enum WriteLock {
    /// The SQLite connection in its exclusive transaction.
    Sqlite(rusqlite::Connection),
    /// The thread whose PostgreSQL session holds the locks, until told.
    Postgres {
        /// Tells the thread to roll back.
        release: std::sync::mpsc::Sender<()>,
        /// The thread.
        thread: Option<std::thread::JoinHandle<()>>,
    },
}

impl WriteLock {
    /// Rolls the transaction back, releasing the lock, and waits for it.
    pub fn release(self) {
        drop(self);
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        match self {
            WriteLock::Sqlite(conn) => {
                let _ = conn.execute_batch("ROLLBACK");
            }
            WriteLock::Postgres { release, thread } => {
                let _ = release.send(());
                if let Some(thread) = thread.take() {
                    let _ = thread.join();
                }
            }
        }
    }
}

/// The first column of the first row of `sql`, on the SQLite file at `path`
/// or, when `url` is given, on that PostgreSQL database. Callable from async
/// tests: PostgreSQL is asked on a thread of its own.
pub fn query_store<T: Cell + Send>(path: &Path, url: Option<&str>, sql: &str) -> T {
    with_store(path, url, |db| {
        db.query_row(sql, &[], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    })
}

/// Runs `f` on a connection of its own to the test database: the SQLite file
/// at `path` or, when `url` is given, that PostgreSQL database, seen through
/// the service's own [`Sql`] seam (so statements take `?1` placeholders and
/// [`crm_responder::args!`] in both). Callable from async tests:
/// PostgreSQL is asked on a thread of its own, with a runtime of its own.
pub fn with_store<R: Send>(
    path: &Path,
    url: Option<&str>,
    f: impl FnOnce(&dyn Sql) -> R + Send,
) -> R {
    match url {
        None => {
            let conn = rusqlite::Connection::open(path).expect("open db");
            f(&conn)
        }
        Some(url) => std::thread::scope(|scope| {
            scope
                .spawn(|| f(&PostgresSession::connect(url)))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }),
    }
}

/// A test's own PostgreSQL connection, as [`Sql`]: each statement waits on
/// the session's own runtime (so it must not be used inside another one).
struct PostgresSession {
    client: tokio_postgres::Client,
    runtime: tokio::runtime::Runtime,
}

impl PostgresSession {
    fn connect(url: &str) -> PostgresSession {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let client = runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
            tokio::spawn(connection);
            client
        });
        PostgresSession { client, runtime }
    }

    fn params<'v>(args: &'v [SqlValue<'v>]) -> Vec<&'v (dyn tokio_postgres::types::ToSql + Sync)> {
        args.iter()
            .map(|a| a as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect()
    }
}

impl Sql for PostgresSession {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&self, sql: &str, args: &[SqlValue<'_>]) -> Result<usize, DbError> {
        let sql = postgres_placeholders(sql);
        let changed = self
            .runtime
            .block_on(self.client.execute(sql.as_str(), &Self::params(args)))?;
        Ok(changed as usize)
    }

    fn each_row(
        &self,
        sql: &str,
        args: &[SqlValue<'_>],
        each: &mut dyn FnMut(&Row<'_>) -> Result<(), DbError>,
    ) -> Result<(), DbError> {
        let sql = postgres_placeholders(sql);
        let rows = self
            .runtime
            .block_on(self.client.query(sql.as_str(), &Self::params(args)))?;
        for row in &rows {
            each(&Row::Postgres(row))?;
        }
        Ok(())
    }

    fn batch(&self, sql: &str) -> Result<(), DbError> {
        Ok(self.runtime.block_on(self.client.batch_execute(sql))?)
    }
}

/// A cell of any type, shown as text (`Int(1)`, `Text("a")`, `Null` …).
struct Shown(String);

impl Cell for Shown {
    fn from_cell(cell: crm_responder::store::sql::CellRef<'_>) -> Result<Self, String> {
        Ok(Shown(format!("{cell:?}")))
    }
}

/// Every row of every table of the database, as text, sorted: what proves
/// that a command wrote nothing where there is no file to hash
/// (PostgreSQL). Identity sequences are not rows: a rolled-back insert
/// still uses up an id.
pub fn contents(db: &dyn Sql) -> Vec<String> {
    let tables: Vec<String> = db
        .query_all(
            db.dialect().pick(
                "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name",
                "SELECT table_name::text FROM information_schema.tables
                 WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
            ),
            &[],
            |r| r.get(0),
        )
        .unwrap();
    let mut out = Vec::new();
    for table in tables {
        let mut rows = shown_rows(db, &format!("SELECT * FROM {table}"));
        rows.sort();
        out.extend(rows.into_iter().map(|row| format!("{table}: {row}")));
    }
    out
}

/// Each row of `sql`, every column shown with its type (`Int(1)`,
/// `Text("a")`, `Null` …), joined by ` | `.
pub fn shown_rows(db: &dyn Sql, sql: &str) -> Vec<String> {
    db.query_all(sql, &[], |r| {
        let cells: Vec<String> = (0..)
            .map_while(|i| r.get::<Shown>(i).ok())
            .map(|c| c.0)
            .collect();
        Ok(cells.join(" | "))
    })
    .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The `value`s of a JSON lead's emails or phones, with their primary flag.
pub fn contacts(lead: &Value, key: &str) -> Vec<(String, bool)> {
    lead[key]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|c| {
            (
                c["value"].as_str().unwrap().to_owned(),
                c["primary"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// The string `key` of each item of the JSON list `list`.
pub fn each<'a>(list: &'a Value, key: &str) -> Vec<&'a str> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|item| item[key].as_str().expect("a string"))
        .collect()
}

/// The lead id at the end of a `crm_link`.
pub fn lead_id(answer: &Value) -> i64 {
    let link = answer["crm_link"]
        .as_str()
        .unwrap_or_else(|| panic!("no crm_link in {answer}"));
    link.rsplit('/').next().unwrap().parse().unwrap()
}

/// A `chat_accepted` body for a visitor.
pub fn accepted(
    chat: u64,
    number: &str,
    name: &str,
    email: Option<&str>,
    phone: Option<&str>,
) -> Value {
    let mut body = fixture("jivo/chat_accepted.json");
    body["chat_id"] = chat.into();
    body["visitor"]["number"] = number.into();
    body["visitor"]["name"] = name.into();
    body["visitor"]["email"] = email.map(Value::from).unwrap_or(Value::Null);
    body["visitor"]["phone"] = phone.map(Value::from).unwrap_or(Value::Null);
    body["visitor"]["description"] = Value::Null;
    body
}

/// The path of the `crm-responder` binary built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_crm-responder");

/// Runs `crm-responder --config CONFIG ARGS…` to completion; it must succeed.
pub fn cli(config: &Path, args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("binary runs");
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The lead id of a Rocket.Chat or LiveChat answer, checked against its `crm_link`.
pub fn answered_lead(answer: &Value) -> i64 {
    assert_eq!(answer["result"], "ok", "{answer}");
    let id = answer["lead_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("{answer}"));
    assert_eq!(answer["crm_link"], format!("http://crm.test/leads/{id}"));
    id
}

/// Whether the lead's history has a change of `field` to a value containing `new`.
pub fn history_has(lead: &Value, field: &str, new: &str) -> bool {
    lead["history"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["field"] == field && h["new"].as_str().is_some_and(|n| n.contains(new)))
}
