//! Storage faults the operating system causes: a lock held by another
//! process, a full disk, a read-only filesystem, a stall. The database lives on a small tmpfs mounted for the
//! test (root only: these tests are ignored in a plain `cargo test`, and
//! `.ci/run` runs them). The service stays up, `/healthz` says why it is
//! unhealthy, senders get 503 (never a 4xx), and the agent's
//! `chat_accepted` is answered from the payload and spooled, as long as the
//! spool lives on another filesystem.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

/// Names the database `lock_holder` locks.
const LOCK_DB: &str = "CRM_TEST_LOCK_DB";

/// Not a test: the other process of the lock test. Holds a write lock on
/// `$CRM_TEST_LOCK_DB` until stdin closes; does nothing without it.
#[test]
#[ignore = "helper process of a_lock_held_by_another_process_…"]
fn lock_holder() {
    let Some(path) = std::env::var_os(LOCK_DB) else {
        return;
    };
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "BEGIN IMMEDIATE; INSERT INTO leads (created_at, updated_at) VALUES ('x', 'x');",
    )
    .unwrap();
    println!("locked");
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut rest);
    // Dropped without COMMIT: the transaction rolls back.
}

/// A tmpfs mounted for one test, unmounted (lazily, so a file still open
/// cannot keep it) when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount tmpfs failed: run as root");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the filesystem to the last byte; returns the filler file.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.path().join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        loop {
            if file.write_all(&block).is_err() {
                break;
            }
        }
        // Byte by byte into the last partial block.
        while file.write_all(&[0]).is_ok() {}
        let _ = file.sync_all();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The service with its database on `fs`, and its spool on `fs` too or in
/// the test's own (roomy) directory.
async fn app_on(fs: &Tmpfs, spool_on_same_fs: bool) -> TestApp {
    let db = fs.path().join("crm.sqlite3");
    let spool = (!spool_on_same_fs).then(|| spool_elsewhere(fs));
    let mut app = spawn_app_with(|c| {
        c.database.path = db.clone();
        c.database.spool_dir = spool.clone();
        c.jivo.answer_deadline_ms = 500;
    })
    .await;
    app.db_path = db;
    app
}

/// A spool directory for `fs` on the roomy root filesystem.
fn spool_elsewhere(fs: &Tmpfs) -> PathBuf {
    std::env::temp_dir().join(format!(
        "crm-spool-{}",
        fs.path().file_name().unwrap().to_string_lossy()
    ))
}

/// A body big enough to need fresh pages (a full disk does not stop a write
/// that fits in the WAL's existing frames).
fn big(mut body: Value, marker: &str) -> Value {
    body["visitor"]["description"] = format!("{marker} {}", "d".repeat(300_000)).into();
    body
}

/// `GET /healthz`: status and body.
async fn health(app: &TestApp) -> (u16, Value) {
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Waits until `done` holds, for at most 10 s.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < until, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn spooled(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test]
#[ignore = "needs root to mount a tmpfs; .ci/run runs ignored tests"]
async fn a_full_disk_gives_503_and_a_provisional_answer_spooled_elsewhere_then_recovers() {
    if skipped_on_postgres("a full filesystem under the SQLite file") {
        return;
    }
    let fs = Tmpfs::mount("4m");
    let app = app_on(&fs, false).await;
    let spool_dir = spool_elsewhere(&fs);
    let (status, _) = app
        .jivo(&accepted(1, "1", "Before", Some("before@x.test"), None))
        .await;
    assert_eq!(status, 200);
    let filler = fs.fill();

    // Nobody waits for chat_finished: 503, so the sender retries.
    let finished = big(fixture("jivo/chat_finished.json"), "finished");
    let (status, answer) = app.jivo(&finished).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["result"], "error");
    let (status, body) = health(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert!(
        body["error"].as_str().unwrap().contains("full"),
        "the reason is given: {body}"
    );

    // The agent waits for chat_accepted: answered from the payload, in time.
    let started = Instant::now();
    let wanted = big(fixture("jivo/chat_accepted.json"), "accepted");
    let (status, answer) = app.jivo(&wanted).await;
    assert_eq!(status, 200, "{answer}");
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(answer["contact_info"]["email"], "email@example.com");
    assert!(answer.get("crm_link").is_none(), "{answer}");
    assert_eq!(spooled(&spool_dir), 1);

    // Space comes back: the spool is applied once, the retry is accepted.
    std::fs::remove_file(filler).unwrap();
    eventually("the spool is drained", || spooled(&spool_dir) == 0).await;
    let (status, answer) = app.jivo(&finished).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(health(&app).await.0, 200);
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM deliveries"), 3);
    assert_eq!(
        app.sql::<i64>("SELECT count(*) FROM leads WHERE description LIKE 'accepted %'"),
        1,
        "the spooled chat_accepted made its lead"
    );
    assert_eq!(
        app.sql::<i64>("SELECT count(*) FROM messages"),
        2,
        "the retried transcript is stored once"
    );
    // The same chat_accepted again (Jivo resends) changes nothing.
    let (status, answer) = app.jivo(&wanted).await;
    assert_eq!(status, 200);
    assert!(answer["crm_link"].is_string(), "{answer}");
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM deliveries"), 3);
    let _ = std::fs::remove_dir_all(spool_dir);
}

#[tokio::test]
#[ignore = "needs root to mount a tmpfs; .ci/run runs ignored tests"]
async fn a_full_disk_holding_the_spool_too_gives_503_for_chat_accepted() {
    if skipped_on_postgres("a full filesystem under the SQLite file") {
        return;
    }
    let fs = Tmpfs::mount("4m");
    let app = app_on(&fs, true).await;
    let (status, _) = app
        .jivo(&accepted(1, "1", "Before", Some("before@x.test"), None))
        .await;
    assert_eq!(status, 200);
    let filler = fs.fill();

    // A provisional answer that cannot be made durable is not given.
    let wanted = big(fixture("jivo/chat_accepted.json"), "accepted");
    let (status, answer) = app.jivo(&wanted).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["result"], "error");
    assert_eq!(spooled(&fs.path().join("spool")), 0);
    assert_eq!(
        std::fs::read_dir(fs.path().join("spool")).unwrap().count(),
        0,
        "no half-written spool file is left behind"
    );
    assert_eq!(health(&app).await.0, 503);

    // Space comes back: the sender's retry is applied.
    std::fs::remove_file(filler).unwrap();
    let (status, answer) = app.jivo(&wanted).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["crm_link"].is_string(), "{answer}");
    assert_eq!(health(&app).await.0, 200);
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM deliveries"), 2);
}

#[tokio::test]
#[ignore = "needs root to mount a tmpfs; .ci/run runs ignored tests"]
async fn a_read_only_filesystem_at_start_keeps_the_service_up_with_503_until_it_is_writable() {
    if skipped_on_postgres("a read-only filesystem under the SQLite file") {
        return;
    }
    let fs = Tmpfs::mount("4m");
    let app = app_on(&fs, false).await;
    let (status, _) = app
        .jivo(&accepted(1, "1", "Before", Some("before@x.test"), None))
        .await;
    assert_eq!(status, 200);
    let spool_dir = spool_elsewhere(&fs);
    let _first = app.stop().await;
    // With no file open for writing, the filesystem can go read-only.
    let remount = |mode: &str| {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(fs.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount {mode}");
    };
    remount("ro");

    let app = app_on(&fs, false).await;
    let (status, body) = health(&app).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].is_string(), "{body}");
    let (status, answer) = app.jivo(&fixture("jivo/chat_finished.json")).await;
    assert_eq!(status, 503, "{answer}");
    let (status, answer) = app.jivo(&fixture("jivo/chat_accepted.json")).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.get("crm_link").is_none(), "provisional: {answer}");
    assert_eq!(spooled(&spool_dir), 1);

    remount("rw");
    eventually("the spool is drained", || spooled(&spool_dir) == 0).await;
    let (status, _) = app.jivo(&fixture("jivo/chat_finished.json")).await;
    assert_eq!(status, 200);
    assert_eq!(health(&app).await.0, 200);
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM deliveries"), 3);
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM messages"), 2);
    let _ = std::fs::remove_dir_all(spool_dir);
}

#[tokio::test]
async fn a_storage_stall_past_the_request_timeout_is_503_not_408() {
    // The write waits for the lock (SQLite's busy timeout, PostgreSQL's
    // lock and statement timeout) far longer than a request may take.
    let app = spawn_app_with(|c| {
        c.database.busy_timeout_ms = 3_000;
        c.database.statement_timeout_ms = 3_000;
        c.server.request_timeout_ms = 400;
    })
    .await;
    let locker = app.lock_for_writes();
    let started = Instant::now();
    let (status, answer) = app.jivo(&fixture("jivo/chat_finished.json")).await;
    assert_eq!(status, 503, "the sender must retry: {answer}");
    assert!(started.elapsed() < Duration::from_millis(2000));
    locker.release();
}

#[tokio::test]
async fn a_lock_held_by_another_process_gives_503_and_healthz_says_so_until_it_is_released() {
    if skipped_on_postgres("a SQLite file lock held by another process") {
        return;
    }
    let app = spawn_app_with(|c| {
        c.database.busy_timeout_ms = 300;
        c.jivo.answer_deadline_ms = 200;
    })
    .await;
    // This test binary, in its own process, holds a write lock for as long
    // as its stdin stays open (see `lock_holder`).
    let mut locker = Command::new(std::env::current_exe().unwrap())
        .args(["faults::lock_holder", "--exact", "--ignored", "--nocapture"])
        .env(LOCK_DB, &app.db_path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run the lock holder");
    // Wait for its word that the lock is held (and keep the pipe open).
    let mut out = BufReader::new(locker.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("locked") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "lock holder quit");
    }

    let (status, answer) = app.jivo(&fixture("jivo/chat_finished.json")).await;
    assert_eq!(status, 503, "{answer}");
    let (status, body) = health(&app).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("locked"), "{body}");
    let started = Instant::now();
    let (status, answer) = app.jivo(&fixture("jivo/chat_accepted.json")).await;
    assert_eq!(status, 200, "{answer}");
    assert!(started.elapsed() < Duration::from_millis(1000));
    assert!(answer.get("crm_link").is_none(), "provisional: {answer}");

    // The other process lets go (its transaction rolls back).
    drop(locker.stdin.take());
    assert!(locker.wait().unwrap().success());
    drop(out);
    eventually("the spooled chat_accepted is applied", || {
        app.sql::<i64>("SELECT count(*) FROM deliveries") == 1
    })
    .await;
    let (status, _) = app.jivo(&fixture("jivo/chat_finished.json")).await;
    assert_eq!(status, 200);
    assert_eq!(health(&app).await.0, 200);
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM leads"), 1);
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM deliveries"), 2);
}

#[tokio::test]
async fn healthz_finds_a_cleared_fault_by_itself_when_no_traffic_comes() {
    let app = spawn_app_with(|c| {
        c.database.busy_timeout_ms = 100;
        c.database.statement_timeout_ms = 500;
    })
    .await;
    let locker = app.lock_for_writes();
    let (status, _) = app.jivo(&fixture("jivo/chat_finished.json")).await;
    assert_eq!(status, 503);
    locker.release();
    // Marked unhealthy, the service may get no traffic to prove otherwise:
    // once the fault is 5 s old, /healthz tries an empty write itself.
    assert_eq!(health(&app).await.0, 503);
    tokio::time::sleep(Duration::from_millis(5_200)).await;
    let (status, body) = health(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.sql::<i64>("SELECT count(*) FROM deliveries"), 0);
}
