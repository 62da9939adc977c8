//! The floor of a webhook on this stack: a server that does only what the
//! contract makes every delivery do before its answer, and nothing else.
//!
//! It answers `POST /webhooks/jivo/{token}` by storing the body raw in the
//! service's own `deliveries` table (same database file, same statement,
//! keyed by the service's SHA-256 of the body), committed in WAL mode with
//! `synchronous=NORMAL` by one writer thread that commits whatever is
//! queued as one transaction, with checkpoints on a thread of their own;
//! then a fixed answer of the size of a real one. No parsing, no identity,
//! no merge, no card. `GET /healthz` answers `ok` without touching the
//! database.
//!
//! `--floor` runs the "accepted: email match" requests against it next to
//! the real service's baseline: if even this server cannot reach half of the
//! baseline, no implementation of the contract on this stack can.

use std::convert::Infallible;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rusqlite::{Connection, params};
use tokio::sync::oneshot;
use warp::Filter;

/// A body to store, and who waits for its commit.
type Job = (Bytes, oneshot::Sender<bool>);

/// About the size of the service's answer to a `chat_accepted`.
const ANSWER: &str = concat!(
    r##"{"result":"ok","custom_data":[{"title":"Lead","content":"#1234567 Jane Doe","##,
    r##""link":"http://127.0.0.1:8080/leads/1234567"},{"title":"Status","content":"new"},"##,
    r##"{"title":"Possible duplicates","content":"none"}],"contact_info":{"name":"Jane Doe","##,
    r##""email":"jane.doe@example.com","phone":"+14155550123","description":"Visitor of"##,
    r##" example.com"},"crm_link":"http://127.0.0.1:8080/leads/1234567","enable_assign":true}"##
);

/// Serves on `port` with the database at `db` until killed.
pub fn serve(port: u16, db: &Path) {
    let (tx, rx) = mpsc::channel::<Job>();
    let path = db.to_owned();
    std::thread::Builder::new()
        .name("crm-writer".into())
        .spawn(move || writer(&path, rx))
        .expect("writer thread");
    let path = db.to_owned();
    std::thread::spawn(move || checkpointer(&path));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let health = warp::path!("healthz").and(warp::get()).map(|| "ok");
        let store = warp::path!("webhooks" / "jivo" / String)
            .and(warp::post())
            .and(warp::body::bytes())
            .and_then(move |_token: String, body: Bytes| {
                let tx = tx.clone();
                async move {
                    let (done, committed) = oneshot::channel();
                    let _ = tx.send((body, done));
                    let status = match committed.await {
                        Ok(true) => warp::http::StatusCode::OK,
                        _ => warp::http::StatusCode::SERVICE_UNAVAILABLE,
                    };
                    Ok::<_, Infallible>(warp::reply::with_status(
                        warp::reply::with_header(ANSWER, "content-type", "application/json"),
                        status,
                    ))
                }
            });
        let service = warp::service(health.or(store));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new()).keep_alive(true);
        loop {
            let (stream, _) = listener.accept().await.expect("accept");
            let _ = stream.set_nodelay(true);
            let service = service.clone();
            let per_request = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let mut service = service.clone();
                async move { tower_service::Service::call(&mut service, req).await }
            });
            let connection = http.serve_connection(TokioIo::new(stream), per_request);
            tokio::spawn(connection);
        }
    });
}

fn open(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open database");
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    conn
}

/// Commits whatever is queued as one transaction, then answers it.
fn writer(path: &Path, rx: mpsc::Receiver<Job>) {
    let conn = open(path);
    conn.pragma_update(None, "cache_size", -16_000).unwrap();
    let mut batches = 0u64;
    let mut batch: Vec<Job> = Vec::with_capacity(256);
    let received_at = "2026-11-30T00:00:00.000Z";
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let mut ok = true;
        for (body, _) in &batch {
            let key = format!("jivo:{}", crm_responder::platforms::body_hash(body));
            ok &= conn
                .prepare_cached(
                    "INSERT INTO deliveries (platform, event, idem_key, received_at, body, status)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'applied')
                     ON CONFLICT (idem_key) DO NOTHING",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        "jivo",
                        "chat_accepted",
                        key,
                        received_at,
                        &body[..]
                    ])
                })
                .is_ok();
        }
        ok &= conn.execute_batch("COMMIT").is_ok();
        for (_, done) in batch.drain(..) {
            let _ = done.send(ok);
        }
        // A checkpoint of the writer's own now and then, so that the WAL
        // starts again from its beginning (as the service's writer does
        // once the log is long) instead of growing.
        batches += 1;
        if batches.is_multiple_of(64) {
            let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        }
    }
}

/// Copies committed frames into the database every 10 ms and syncs it.
fn checkpointer(path: &Path) {
    let conn = open(path);
    // Opened once and never closed: closing a descriptor of the database
    // file would release this process's SQLite locks on it.
    let file = std::fs::File::open(path).expect("open database file");
    loop {
        std::thread::sleep(Duration::from_millis(10));
        let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        let _ = file.sync_all();
    }
}
