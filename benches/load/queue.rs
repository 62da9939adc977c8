//! `--queue`: how long the review queue of possible duplicates (`GET
//! /api/duplicates`) takes to answer a page, with many links.
//!
//! A copy of the SQLite seed gets `--links N[,M]` possible-duplicate links
//! (default 100000,1000000) between its leads, scores spread over a few
//! values as detection makes them (many pairs share one). The service
//! starts on it (`LOAD_BINARY` names another build, to compare two back to
//! back on the same data; a newer build migrates the copy first, and the
//! `token create` that does it is timed), and the first page and the pages
//! after cursors at 10 %, 50 % and 90 % of the queue are each asked for 21
//! times, one at a time, 50 pairs a page. Prints the median, fastest and
//! slowest of each.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{Instances, client, free_ports, scenarios, serve, wait_healthy};

/// Scores links get: the strongest (an email or phone of both) most often.
const SCORES: [f64; 5] = [1.0, 1.0, 0.97, 0.95, 0.93];

/// Pairs a page.
const PAGE: usize = 50;

/// Measures the queue on copies of `seed` (`n` leads) with each count of `links`.
pub async fn measure(n: u64, links: &[u64], seed: &Path, dir: &Path) {
    let bin = std::env::var("LOAD_BINARY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_crm-responder").to_owned());
    for &count in links {
        let work = scenarios::WorkCopy::of(seed, dir, "queue");
        let cursors = add_links(&work.db, n, count);
        let port = free_ports(1)[0];
        std::fs::write(
            &work.config,
            scenarios::config(port, &scenarios::sqlite(&work.db)),
        )
        .expect("write config");
        let started = Instant::now();
        let out = Command::new(&bin)
            .arg("--config")
            .arg(&work.config)
            .args(["token", "create", "queue-bench", "--scope", "read"])
            .env_remove("CRM_DATABASE_URL")
            .output()
            .expect("token create");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let first_run = started.elapsed().as_secs_f64() * 1e3;
        let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let mut servers = Instances(Vec::new());
        servers.0.push(serve(&work.config));
        let addr = format!("127.0.0.1:{port}");
        wait_healthy(&addr).await;
        eprintln!("{count} links on {n} leads ({bin}; token create, migrating: {first_run:.0} ms)");
        let pages = std::iter::once(("first page".to_owned(), String::new())).chain(
            cursors
                .iter()
                .map(|(share, cursor)| (format!("after {share} %"), format!("&cursor={cursor}"))),
        );
        for (label, query) in pages {
            let request = format!(
                "GET /api/duplicates?limit={PAGE}{query} HTTP/1.1\r\nhost: bench\r\n\
                 authorization: Bearer {token}\r\n\r\n"
            )
            .into_bytes();
            let mut conn = client::Conn::connect(&addr).await.expect("connect");
            let mut times = Vec::new();
            for round in 0..24 {
                let t = Instant::now();
                let status = conn.call(&request).await.expect("answer");
                assert_eq!(status, 200, "{label}");
                // Three rounds to warm the caches first.
                if round >= 3 {
                    times.push(t.elapsed());
                }
            }
            times.sort();
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            println!(
                "queue  {count:>8} links  {label:<12} median {:>8.2} ms  (fastest {:.2}, slowest {:.2})",
                ms(times[times.len() / 2]),
                ms(times[0]),
                ms(times[times.len() - 1]),
            );
        }
        drop(servers);
    }
}

/// Adds `count` links between the leads of the database at `path` (`n`
/// leads); returns the cursors (`score:lead:other`) at 10, 50 and 90 % of
/// the queue.
fn add_links(path: &Path, n: u64, count: u64) -> Vec<(u32, String)> {
    let mut conn = rusqlite::Connection::open(path).expect("open copy");
    let started = Instant::now();
    let tx = conn.transaction().expect("transaction");
    {
        let mut insert = tx
            .prepare(
                "INSERT OR IGNORE INTO duplicate_links (lead_a, lead_b, score, reason, created_at)
                 VALUES (?1, ?2, ?3, 'same name', '2026-01-01T00:00:00Z')",
            )
            .expect("prepare");
        let span = n as i64 - 16;
        for j in 0..count as i64 {
            let a = j % span + 1;
            let b = a + 1 + j / span;
            let spread = ((j as u64).wrapping_mul(2_654_435_761) >> 7) as usize;
            let score = SCORES[spread % SCORES.len()];
            insert
                .execute(rusqlite::params![a, b, score])
                .expect("insert link");
        }
    }
    tx.commit().expect("commit");
    let total: i64 = conn
        .query_row("SELECT count(*) FROM duplicate_links", [], |r| r.get(0))
        .expect("count");
    eprintln!(
        "added {count} links ({total} in all) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    [10, 50, 90]
        .into_iter()
        .map(|share| {
            let (score, a, b): (f64, i64, i64) = conn
                .query_row(
                    "SELECT score, lead_a, lead_b FROM duplicate_links
                     ORDER BY score DESC, lead_a, lead_b LIMIT 1 OFFSET ?1",
                    [total * i64::from(share) / 100],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .expect("cursor");
            (share, format!("{score}:{a}:{b}"))
        })
        .collect()
}
