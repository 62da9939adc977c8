//! `--retention`: webhook latency with and without the retention job
//! deleting a large backlog, back to back on one server.
//!
//! A copy of the SQLite seed gets a backlog of raw deliveries received two
//! years ago (`--backlog N`, default 300,000). The service starts with no
//! `[retention]`; the scenario's open loop runs (without); then the config
//! gains `raw_deliveries_days = 30` and the service is sent SIGHUP, which
//! starts the job at once, and the same open loop runs again (with) while
//! the job deletes the backlog in its small transactions. Prints p50, p99
//! and p99.9 of both, and how much of the backlog went during the second.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::scenarios::{self, Scenario};
use crate::{Instances, client, free_ports, serve, wait_healthy};

/// Keys of the backlog's deliveries.
const PREFIX: &str = "bench-old-";

/// Runs the comparison for `scenario` on a copy of `seed` (`n` leads).
pub async fn compare(
    scenario: &'static Scenario,
    n: u64,
    seed: &Path,
    dir: &Path,
    phase: Duration,
    backlog: u64,
) {
    let copy = scenarios::WorkCopy::of(seed, dir, "retention");
    let (work, config) = (&copy.db, &copy.config);
    let started = Instant::now();
    add_backlog(work, backlog);
    eprintln!(
        "stored a backlog of {backlog} old deliveries in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let port = free_ports(1)[0];
    let text = scenarios::config(port, &scenarios::sqlite(work));
    std::fs::write(config, &text).expect("write config");
    let mut servers = Instances(Vec::new());
    servers.0.push(serve(config));
    let addrs = vec![format!("127.0.0.1:{port}")];
    wait_healthy(&addrs[0]).await;
    let make = scenario.request;
    // A second of load first, so that both measures start warm.
    client::closed_loop(&addrs, 8, Duration::from_secs(1), move |k| {
        make(n, 3 << 40 | k)
    })
    .await;

    let mut without = client::open_loop(&addrs, scenario.rate, phase, 32, move |k| {
        make(n, 4 << 40 | k)
    })
    .await;

    std::fs::write(
        config,
        format!("{text}\n[retention]\nraw_deliveries_days = 30\n"),
    )
    .expect("write config");
    let before = left(work);
    let status = Command::new("kill")
        .arg("-HUP")
        .arg(servers.0[0].id().to_string())
        .status()
        .expect("kill -HUP");
    assert!(status.success());
    // The job starts at once; give the reload a moment to be read.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let at_start = left(work);
    let mut with = client::open_loop(&addrs, scenario.rate, phase, 32, move |k| {
        make(n, 5 << 40 | k)
    })
    .await;
    let at_end = left(work);
    drop(servers);
    drop(copy);

    println!();
    println!(
        "retention under load: {} at {:.0}/s, {n} leads, SQLite, {} s each, back to back",
        scenario.name,
        scenario.rate,
        phase.as_secs()
    );
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>7}",
        "", "p50 ms", "p99 ms", "p99.9 ms", "errors"
    );
    for (label, samples) in [
        ("without retention", &mut without),
        ("with retention deleting a backlog", &mut with),
    ] {
        println!(
            "{label:<34} {:>9.2} {:>9.2} {:>9.2} {:>7}",
            samples.quantile_ms(0.50),
            samples.quantile_ms(0.99),
            samples.quantile_ms(0.999),
            samples.errors
        );
    }
    let deleted = at_start.saturating_sub(at_end);
    println!(
        "backlog: {before} old deliveries; {} gone before the measure began, {deleted} deleted during it ({:.0}/s), {at_end} left after it{}",
        before - at_start,
        deleted as f64 / phase.as_secs_f64(),
        if at_end == 0 {
            " (the job finished within the measure: use a larger --backlog)"
        } else {
            " (the job ran throughout)"
        }
    );
}

/// Stores `count` raw deliveries received two years ago, in one transaction.
fn add_backlog(db: &Path, count: u64) {
    let conn = rusqlite::Connection::open(db).expect("open work database");
    let body = format!(
        "{{\"event_name\":\"chat_accepted\",\"chat_id\":0,\"visitor\":{{\"name\":\"Old Visitor\",\"email\":\"old@example.com\"}},\"filler\":\"{}\"}}",
        "x".repeat(900)
    );
    conn.execute_batch("BEGIN").expect("begin");
    {
        let mut insert = conn
            .prepare(
                "INSERT INTO deliveries (platform, event, idem_key, received_at, body, status)
                 VALUES ('jivo', 'chat_accepted', ?1, '2024-01-01T00:00:00.000Z', ?2, 'applied')",
            )
            .expect("prepare");
        for i in 0..count {
            insert
                .execute(rusqlite::params![format!("{PREFIX}{i}"), body.as_bytes()])
                .expect("insert");
        }
    }
    conn.execute_batch("COMMIT").expect("commit");
}

/// Backlog deliveries still stored.
fn left(db: &Path) -> u64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open work database");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    conn.query_row(
        "SELECT count(*) FROM deliveries WHERE received_at < '2025-01-01'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .expect("count backlog") as u64
}
