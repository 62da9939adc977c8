//! `cargo bench --bench load -- --outbound`: what outbound webhooks cost.
//!
//! 1. Webhook latency with no `[[outbound]]` endpoint, with one that
//!    accepts connections and never answers (a dead endpoint), and with
//!    one that answers at once, back to back on fresh copies of the same
//!    seed: the open loop of "accepted: new visitor" at its rate; p50 and
//!    p99 of each. Every delivery creates a lead, so with an endpoint every
//!    one writes an event: dead against live is the cost of deadness, live
//!    against none the cost of the outbox.
//! 2. The outbox's throughput to a fast local receiver (answers 204 at
//!    once): the closed loop of new visitors for the phase, then until
//!    every event has arrived; events per second over the whole run and
//!    while draining the backlog after the load stopped.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use warp::Filter;

use super::{Instances, client, free_ports, scenarios, server_command, wait_healthy};

/// The bench endpoint's secret (any valid one: the receiver does not check).
const SECRET: &str = "whsec_YmVuY2gtb3V0Ym91bmQtc2VjcmV0LTMyLWJ5dGVzIQ==";

/// Runs both measures on a copy of `seed` (`n` leads) and prints them.
pub async fn run(seed: &Path, n: u64, dir: &Path, phase: Duration) {
    let new_visitor = scenarios::SCENARIOS
        .iter()
        .find(|s| s.name == "accepted: new visitor")
        .expect("the new-visitor scenario");
    let make = new_visitor.request;

    // A dead endpoint: connections are accepted and never read nor answered.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/hook", dead.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in dead.incoming().flatten() {
            open.push(stream);
        }
    });
    drop(held);

    // A fast receiver, counting.
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let route = warp::post()
        .and(warp::body::bytes())
        .map(move |_body: bytes::Bytes| {
            counter.fetch_add(1, Ordering::Relaxed);
            warp::http::StatusCode::NO_CONTENT
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fast_url = format!("http://{}/hook", listener.local_addr().unwrap());
    let receiver = tokio::spawn(warp::serve(route).incoming(listener).run());
    let mut figures = Vec::new();
    for (label, endpoint, range) in [
        ("no endpoint", None, 3u64 << 40),
        ("dead endpoint", Some(dead_url.as_str()), 4u64 << 40),
        (
            "endpoint answering at once",
            Some(fast_url.as_str()),
            6u64 << 40,
        ),
    ] {
        let service = Service::start(seed, dir, endpoint).await;
        let mut open = client::open_loop(
            std::slice::from_ref(&service.addr),
            new_visitor.rate,
            phase,
            32,
            move |k| make(n, range | k),
        )
        .await;
        let backlog = service.backlog();
        drop(service);
        received.store(0, Ordering::Relaxed);
        figures.push((
            label,
            open.quantile_ms(0.5),
            open.quantile_ms(0.99),
            open.errors,
            backlog,
        ));
    }

    let service = Service::start(seed, dir, Some(&fast_url)).await;
    let started = Instant::now();
    let (_, load) = client::closed_loop(std::slice::from_ref(&service.addr), 32, phase, move |k| {
        make(n, 5u64 << 40 | k)
    })
    .await;
    let loaded = started.elapsed().as_secs_f64();
    let created = load.micros.len() as u64;
    let at_end = received.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(600);
    while received.load(Ordering::Relaxed) < created && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let total = started.elapsed().as_secs_f64();
    let delivered = received.load(Ordering::Relaxed);
    drop(service);
    receiver.abort();

    println!();
    println!(
        "Outbound webhooks ({n} leads, SQLite; \"accepted: new visitor\" open loop at {:.0}/s for {} s each, back to back)",
        new_visitor.rate,
        phase.as_secs()
    );
    println!("| endpoint | p50 ms | p99 ms | errors | deliveries waiting after |");
    println!("|---|---:|---:|---:|---:|");
    for (label, p50, p99, errors, backlog) in &figures {
        println!("| {label} | {p50:.2} | {p99:.2} | {errors} | {backlog} |");
    }
    println!();
    println!(
        "Outbox throughput to a fast local receiver: {created} leads created in {loaded:.1} s \
         ({:.0}/s, 32 connections), {at_end} events delivered by then; all {delivered} delivered after {total:.1} s: \
         {:.0} events/s overall, {:.0} events/s draining the backlog after the load",
        created as f64 / loaded,
        delivered as f64 / total,
        (delivered - at_end) as f64 / (total - loaded).max(0.001),
    );
}

/// The service on a fresh copy of the seed, with an endpoint at `url`
/// subscribed to the events a new visitor causes (when given).
struct Service {
    addr: String,
    work: std::path::PathBuf,
    instances: Option<Instances>,
}

impl Service {
    async fn start(seed: &Path, dir: &Path, url: Option<&str>) -> Service {
        let pid = std::process::id();
        let work = dir.join(format!("outbound-{pid}.sqlite3"));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", work.display()));
        }
        let _ = std::fs::remove_dir_all(dir.join("spool"));
        std::fs::copy(seed, &work).expect("copy seed database");
        let port = free_ports(1)[0];
        let mut text = scenarios::config(port, &scenarios::sqlite(&work));
        if let Some(url) = url {
            text.push_str(&format!(
                "\n[[outbound]]\nname = \"bench\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n\
                 events = [\"lead.created\", \"lead.updated\", \"conversation.closed\", \"note.added\"]\n"
            ));
        }
        let config = dir.join(format!("outbound-{pid}.toml"));
        std::fs::write(&config, text).expect("write config");
        let server = server_command()
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .env_remove("CRM_DATABASE_URL")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start server");
        let addr = format!("127.0.0.1:{port}");
        let instances = Instances(vec![server]);
        wait_healthy(&addr).await;
        Service {
            addr,
            work,
            instances: Some(instances),
        }
    }

    /// Deliveries not yet delivered (read with the sqlite3 library of the
    /// service's own file).
    fn backlog(&self) -> i64 {
        let conn = rusqlite::Connection::open(&self.work).expect("open work database");
        conn.query_row(
            "SELECT count(*) FROM outbound_deliveries WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )
        .expect("count backlog")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // Stopped first, then its files go.
        drop(self.instances.take());
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.work.display()));
        }
    }
}
