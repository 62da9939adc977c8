//! What reading a phone costs when visitors come from many countries: the
//! example fixed-line and mobile number of every region libphonenumber
//! knows, written internationally, read three times over. Prints the cost
//! per phone of each round, the patterns cached and the process's memory;
//! with the parser's own cache size (`--crate-default`) for comparison.
//!
//! ```sh
//! cargo bench --bench phones
//! cargo bench --bench phones -- --crate-default
//! ```

use std::time::Instant;

use crm_responder::crm::identity::Phone;
use phonenumber::country::Id;
use phonenumber::metadata::DATABASE;

fn main() {
    // `cargo test --all-targets` runs bench targets too (without `--bench`),
    // in a debug build: the figures are for `cargo bench` only.
    if !std::env::args().any(|a| a == "--bench") {
        println!("phones benchmark: run with `cargo bench --bench phones`");
        return;
    }
    let crate_default = std::env::args().any(|a| a == "--crate-default");
    let mut numbers = Vec::new();
    for region in DATABASE.iter() {
        let descriptors = region.descriptors();
        for descriptor in [descriptors.fixed_line(), descriptors.mobile()]
            .into_iter()
            .flatten()
        {
            if let Some(example) = descriptor.example() {
                numbers.push(format!("+{} {example}", region.country_code()));
            }
        }
    }
    // The first reading sets the service's cache size; put the crate's back.
    Phone::parse("+1 408 498 7855", Id::US);
    if crate_default {
        DATABASE.cache().lock().unwrap().set_capacity(100);
    }
    let capacity = DATABASE.cache().lock().unwrap().capacity();
    println!(
        "{} numbers of {} regions, pattern cache of {capacity}",
        numbers.len(),
        DATABASE.iter().count()
    );
    for round in 1..=3 {
        let started = Instant::now();
        let read = numbers
            .iter()
            .filter(|n| Phone::parse(n, Id::US).is_some())
            .count();
        let micros = started.elapsed().as_secs_f64() * 1e6 / read.max(1) as f64;
        let cached = DATABASE.cache().lock().unwrap().len();
        println!(
            "round {round}: {micros:8.1} µs a phone, {cached} patterns cached, RSS {} MiB",
            rss_kib() / 1024
        );
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
