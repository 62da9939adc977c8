//! The PostgreSQL side of `--store postgres`: the server (the one
//! `CRM_BENCH_POSTGRES` names, or a throwaway cluster started with
//! `scripts/pg-test-cluster.sh` under the target's tmp dir), one seed
//! database per size filled once by the service's own
//! `crm-responder migrate-store` from the SQLite seed, a work database per
//! run copied from it at file level (`CREATE DATABASE … TEMPLATE`), and the
//! CPU the server's processes use.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

use crate::datagen::DATA_VERSION;

/// A PostgreSQL server the bench may create and drop databases on.
pub struct Server {
    /// The URL it was reached with (its database part is replaced).
    url: String,
    admin: Client,
    /// The throwaway cluster's directory: stopped and removed on drop.
    cluster: Option<PathBuf>,
    /// The postmaster's pid, when the server runs on this machine.
    postmaster: Option<u32>,
    /// PostgreSQL 15 and later copy a template file by file when asked to.
    file_copy: bool,
    /// What the table says of the server (version, durability settings).
    pub describe: String,
    /// Whether the server syncs what it writes (`SHOW fsync`).
    pub fsync: bool,
}

/// The work database of this process (one run at a time).
fn work_name() -> String {
    format!("crm_bench_work_{}", std::process::id())
}

impl Server {
    /// Connects to `CRM_BENCH_POSTGRES`, or starts a throwaway cluster
    /// (with `fsync` and `full_page_writes` turned back on unless `fsync`
    /// is false: the script's cluster runs without them).
    pub async fn start(fsync: bool) -> Server {
        let (url, cluster) = match std::env::var("CRM_BENCH_POSTGRES") {
            Ok(url) if !url.is_empty() => (url, None),
            _ => {
                let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-postgres");
                // A cluster left behind by a run that was killed.
                let _ = Command::new(script())
                    .arg("stop")
                    .arg(&dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                let _ = std::fs::remove_dir_all(&dir);
                let out = Command::new(script())
                    .arg("start")
                    .arg(&dir)
                    .arg(crate::free_ports(1)[0].to_string())
                    .stderr(Stdio::inherit())
                    .output()
                    .expect("run scripts/pg-test-cluster.sh");
                assert!(
                    out.status.success(),
                    "scripts/pg-test-cluster.sh start failed (see {}/server.log)",
                    dir.display()
                );
                let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                (url, Some(dir))
            }
        };
        let mut server = Server {
            admin: connect(&url).await,
            url,
            cluster,
            postmaster: None,
            file_copy: false,
            describe: String::new(),
            fsync: true,
        };
        if server.cluster.is_some() {
            let value = if fsync { "on" } else { "off" };
            // One statement at a time: ALTER SYSTEM refuses a transaction.
            for name in ["fsync", "full_page_writes"] {
                server
                    .batch(&format!("ALTER SYSTEM SET {name} = {value}"))
                    .await;
            }
            server.batch("SELECT pg_reload_conf()").await;
            // A backend reads the reloaded file between commands: ask a
            // fresh one until it says so.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                server.admin = connect(&server.url).await;
                if server.show("fsync").await == value || Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let version: i64 = server.show("server_version_num").await.parse().unwrap_or(0);
        server.file_copy = version >= 150000;
        let backend: i32 = server
            .admin
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("pg_backend_pid")
            .get(0);
        server.postmaster = postmaster_of(backend as u32);
        server.fsync = server.show("fsync").await == "on";
        let mut settings = Vec::new();
        for name in [
            "fsync",
            "synchronous_commit",
            "full_page_writes",
            "shared_buffers",
        ] {
            settings.push(format!("{name}={}", server.show(name).await));
        }
        server.describe = format!(
            "PostgreSQL {} ({}), {}",
            server.show("server_version").await,
            if server.cluster.is_some() {
                "throwaway cluster of scripts/pg-test-cluster.sh on this machine"
            } else if server.postmaster.is_some() {
                "CRM_BENCH_POSTGRES, on this machine"
            } else {
                "CRM_BENCH_POSTGRES, not on this machine: no postgres CPU"
            },
            settings.join(", ")
        );
        // Leftovers of killed runs: work databases and half-made seeds of
        // processes that are gone.
        let names: Vec<String> = server
            .admin
            .query(
                "SELECT datname FROM pg_database WHERE datname LIKE 'crm\\_bench\\_%'",
                &[],
            )
            .await
            .expect("list databases")
            .iter()
            .map(|r| r.get(0))
            .collect();
        for name in names {
            let owner = name
                .strip_prefix("crm_bench_work_")
                .or_else(|| name.rsplit_once("_loading_").map(|(_, pid)| pid));
            if let Some(pid) = owner.and_then(|p| p.parse::<u32>().ok())
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                server.drop_database(&name).await;
            }
        }
        server
    }

    /// The URL of database `name` on this server.
    pub fn url_of(&self, name: &str) -> String {
        with_database(&self.url, name)
    }

    async fn batch(&self, sql: &str) {
        self.admin
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {}", message(&e)));
    }

    async fn show(&self, name: &str) -> String {
        self.admin
            .query_one(&format!("SHOW {name}"), &[])
            .await
            .unwrap_or_else(|e| panic!("SHOW {name}: {}", message(&e)))
            .get(0)
    }

    async fn exists(&self, name: &str) -> bool {
        self.admin
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await
            .expect("pg_database")
            .is_some()
    }

    async fn drop_database(&self, name: &str) {
        self.batch(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }

    /// Runs `sql`, again while it fails only because a session that just
    /// ended is still connected to a database it names.
    async fn batch_when_free(&self, sql: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.admin.batch_execute(sql).await {
                Ok(()) => return,
                Err(e)
                    if message(&e).contains("being accessed by other users")
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("{sql}: {}", message(&e)),
            }
        }
    }

    /// The seed database of `n` leads (`crm_bench_seed_v{DATA_VERSION}_{n}`):
    /// made once from the SQLite seed by `migrate-store`, then vacuumed and
    /// analysed. It gets its name only when complete, so a run killed
    /// half-way leaves none under that name.
    pub async fn seed(&self, n: u64, sqlite_seed: &Path, dir: &Path) -> String {
        let name = format!("crm_bench_seed_v{DATA_VERSION}_{n}");
        if self.exists(&name).await {
            return name;
        }
        // migrate-store copies a database at this program's schema version:
        // the seed brought up to date first, as the service does on start.
        crm_responder::store::Db::open(sqlite_seed, Duration::from_secs(5))
            .expect("open the SQLite seed")
            .close();
        let loading = format!("{name}_loading_{}", std::process::id());
        self.drop_database(&loading).await;
        self.batch(&format!("CREATE DATABASE {loading}")).await;
        let config = dir.join(format!("migrate-{}.toml", std::process::id()));
        let port = crate::free_ports(1)[0];
        std::fs::write(
            &config,
            crate::scenarios::config(port, &crate::scenarios::sqlite(sqlite_seed)),
        )
        .expect("write config");
        let started = Instant::now();
        let status = Command::new(env!("CARGO_BIN_EXE_crm-responder"))
            .arg("--config")
            .arg(&config)
            .arg("migrate-store")
            .arg("--to")
            .arg(self.url_of(&loading))
            .env_remove("CRM_DATABASE_URL")
            .stdout(Stdio::null())
            .status()
            .expect("run crm-responder migrate-store");
        let _ = std::fs::remove_file(&config);
        assert!(status.success(), "migrate-store of {n} leads failed");
        let migrated = started.elapsed().as_secs_f64();
        // As the SQLite seed was analysed: statistics for the planner, and
        // the visibility map set so that reads do not write hint bits.
        let client = connect(&self.url_of(&loading)).await;
        client
            .batch_execute("VACUUM (ANALYZE)")
            .await
            .unwrap_or_else(|e| panic!("VACUUM (ANALYZE) the seed: {}", message(&e)));
        drop(client);
        self.batch_when_free(&format!("ALTER DATABASE {loading} RENAME TO {name}"))
            .await;
        eprintln!(
            "migrated {n} leads into PostgreSQL in {migrated:.1} s (+ {:.1} s VACUUM ANALYZE) -> {name}",
            started.elapsed().as_secs_f64() - migrated
        );
        name
    }

    /// A fresh work database copied from `seed`; returns its URL.
    pub async fn create_work(&self, seed: &str) -> String {
        let work = work_name();
        self.drop_database(&work).await;
        let strategy = if self.file_copy {
            " STRATEGY = FILE_COPY"
        } else {
            ""
        };
        self.batch_when_free(&format!("CREATE DATABASE {work} TEMPLATE {seed}{strategy}"))
            .await;
        self.url_of(&work)
    }

    /// `ANALYZE` of the work database: fresh statistics, and the plans
    /// every session cached for its tables made again.
    pub async fn analyze_work(&self) {
        let client = connect(&self.url_of(&work_name())).await;
        client
            .batch_execute("ANALYZE")
            .await
            .unwrap_or_else(|e| panic!("ANALYZE the work database: {}", message(&e)));
    }

    /// The work database's size in bytes.
    pub async fn work_bytes(&self) -> u64 {
        let bytes: i64 = self
            .admin
            .query_one("SELECT pg_database_size($1::text)", &[&work_name()])
            .await
            .expect("pg_database_size")
            .get(0);
        bytes as u64
    }

    /// Drops the work database.
    pub async fn drop_work(&self) {
        self.drop_database(&work_name()).await;
    }

    /// CPU time (clock ticks) of the postmaster and of each of its
    /// children, by pid, when the server runs on this machine.
    pub fn cpu_ticks(&self) -> Option<std::collections::HashMap<u32, u64>> {
        let postmaster = self.postmaster?;
        let mut ticks = std::collections::HashMap::new();
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let fields = crate::stat_fields(&stat);
            let parent = fields.get(1).and_then(|p| p.parse::<u32>().ok());
            if pid == postmaster || parent == Some(postmaster) {
                ticks.insert(pid, crate::stat_ticks(&fields));
            }
        }
        Some(ticks)
    }
}

/// What the service's PostgreSQL sessions were doing during a closed loop,
/// sampled from `pg_stat_activity`, and what the server counted.
#[derive(Default, Clone)]
pub struct Activity {
    /// Samples taken.
    pub samples: u64,
    /// Session-samples per state: running a statement (no wait event).
    pub running: u64,
    /// Waiting for the write lock another instance holds (advisory lock).
    pub advisory: u64,
    /// Waiting for the WAL to be written or flushed (a commit's fsync).
    pub wal: u64,
    /// Any other wait while running (other locks, I/O, LWLocks).
    pub other_wait: u64,
    /// Inside a transaction, waiting for the instance's next statement:
    /// the round trip and the instance's own work between statements.
    pub idle_in_transaction: u64,
    /// WAL written (`pg_stat_wal.wal_bytes`).
    pub wal_bytes: u64,
    /// WAL flushes to disk (`pg_stat_wal.wal_sync`).
    pub wal_syncs: u64,
}

impl Activity {
    /// Mean number of sessions in a state during the sampling.
    pub fn mean(&self, count: u64) -> f64 {
        count as f64 / self.samples.max(1) as f64
    }
}

impl Server {
    /// Samples the service's sessions in the work database every 10 ms
    /// for `duration`.
    pub async fn sessions(&self, duration: Duration) -> Activity {
        let client = connect(&self.url).await;
        let mut activity = Activity::default();
        let end = Instant::now() + duration;
        let statement = client
            .prepare(
                "SELECT state, wait_event_type, wait_event FROM pg_stat_activity \
                 WHERE application_name = 'crm-responder' AND datname = $1::text",
            )
            .await
            .expect("prepare pg_stat_activity");
        while Instant::now() < end {
            let Ok(rows) = client.query(&statement, &[&work_name()]).await else {
                break;
            };
            activity.samples += 1;
            for row in rows {
                let state: Option<String> = row.get(0);
                let kind: Option<String> = row.get(1);
                let event: Option<String> = row.get(2);
                let counter = match (state.as_deref(), kind.as_deref(), event.as_deref()) {
                    (Some("idle in transaction"), _, _) => &mut activity.idle_in_transaction,
                    (Some("active"), None, _) => &mut activity.running,
                    (Some("active"), Some("Lock"), Some("advisory")) => &mut activity.advisory,
                    (Some("active"), _, Some("WALSync" | "WALWrite" | "WALInsert")) => {
                        &mut activity.wal
                    }
                    (Some("active"), Some(_), _) => &mut activity.other_wait,
                    _ => continue,
                };
                *counter += 1;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        activity
    }

    /// WAL bytes written and flushes to disk so far, as the server counts
    /// them (backends report about once a second: read a moment after the
    /// load, not right at its end).
    pub async fn wal_counters(&self) -> (u64, u64) {
        match self
            .admin
            .query_one("SELECT wal_bytes::float8, wal_sync FROM pg_stat_wal", &[])
            .await
        {
            Ok(row) => (row.get::<_, f64>(0) as u64, row.get::<_, i64>(1) as u64),
            Err(_) => (0, 0),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(dir) = &self.cluster {
            let _ = Command::new(script())
                .arg("stop")
                .arg(dir)
                .stdout(Stdio::null())
                .status();
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg-test-cluster.sh")
}

/// The server's message of an error (`Display` says only "db error").
fn message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to PostgreSQL: {}", message(&e)));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// The parent of backend `pid` when it is a postgres process of this
/// machine (and not some other process of the same pid elsewhere).
fn postmaster_of(pid: u32) -> Option<u32> {
    let is_postgres = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
    };
    if !is_postgres(pid) {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let parent = crate::stat_fields(&stat).get(1)?.parse().ok()?;
    is_postgres(parent).then_some(parent)
}

/// `url` with its database replaced by `name` (query parameters kept).
fn with_database(url: &str, name: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let authority = rest.find(['/', '?']).unwrap_or(rest.len());
    let query = rest[authority..]
        .find('?')
        .map_or("", |q| &rest[authority + q..]);
    format!("{}{}/{name}{query}", &url[..start], &rest[..authority])
}
