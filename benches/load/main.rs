//! `cargo bench --bench load`: throughput, tail latency and cost growth of
//! the real service (the release binary, as its own process) against
//! databases of 10k, 100k and 1M generated leads. Prints a table.
//!
//! Options (after `--`): `--sizes 10000,100000,1000000`, `--seconds N`
//! (per phase, default 5), `--only NAME` (one scenario), `--connections N`
//! (of the closed loop, default 32), `--floor` (the baseline and the floor
//! of a stored delivery and of a new lead instead of the scenarios: see
//! floor.rs). `LOAD_WRAP`
//! runs the server under another command, e.g. a profiler.

mod client;
mod datagen;
mod floor;
mod scenarios;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use scenarios::{SCENARIOS, Scenario};

/// Figures for one scenario at one size.
struct Row {
    scenario: &'static str,
    leads: u64,
    rps: f64,
    rate: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    errors: u64,
    rss_mib: f64,
    db_mib: f64,
    startup_ms: f64,
    /// Share of one core the server used during the closed loop.
    server_cpu: f64,
    /// Share of one core its writer thread used then.
    writer_cpu: f64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // This binary started as the floor server by `--floor` (see floor.rs).
    if let Some(i) = args.iter().position(|a| a == "--serve-floor") {
        let port = args[i + 1]
            .parse()
            .expect("--serve-floor PORT DB [raw|new|existing]");
        let what = match args.get(i + 3).map(String::as_str) {
            Some("new") => floor::Floor::NewLead,
            Some("existing") => floor::Floor::Existing,
            _ => floor::Floor::Raw,
        };
        floor::serve(port, Path::new(&args[i + 2]), what);
        return;
    }
    // `cargo test --all-targets` builds and runs bench targets too (without
    // `--bench`): the load test is for `cargo bench` only.
    if !args.iter().any(|a| a == "--bench") {
        println!("load benchmark: run with `cargo bench --bench load`");
        return;
    }
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let sizes: Vec<u64> = arg("--sizes")
        .unwrap_or_else(|| "10000,100000,1000000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("--sizes takes numbers"))
        .collect();
    let seconds: u64 = arg("--seconds")
        .map(|s| s.parse().expect("--seconds"))
        .unwrap_or(5);
    let only = arg("--only");
    let connections: usize = arg("--connections")
        .map(|s| s.parse().expect("--connections takes a number"))
        .unwrap_or(32);
    let phase = Duration::from_secs(seconds);

    let data_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-data");
    std::fs::create_dir_all(&data_dir).expect("bench data dir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let mut rows: Vec<Row> = Vec::new();
    for &n in &sizes {
        let seed = data_dir.join(format!("leads-v{}-{n}.sqlite3", datagen::DATA_VERSION));
        if !seed.exists() {
            let secs = datagen::generate(&seed, n);
            eprintln!("generated {n} leads in {secs:.1} s -> {}", seed.display());
        }
        let scenarios: &[Scenario] = if args.iter().any(|a| a == "--floor") {
            &scenarios::FLOOR
        } else {
            SCENARIOS
        };
        for scenario in scenarios
            .iter()
            .filter(|s| only.as_deref().is_none_or(|o| o == s.name))
        {
            let row = runtime.block_on(run(scenario, n, &seed, &data_dir, phase, connections));
            eprintln!(
                "{:<22} {:>8} leads: {:>8.0} req/s, p99 {:.2} ms at {:.0}/s",
                row.scenario, row.leads, row.rps, row.p99, row.rate
            );
            rows.push(row);
        }
    }
    print_table(&rows);
}

async fn run(
    scenario: &'static Scenario,
    n: u64,
    seed: &Path,
    dir: &Path,
    phase: Duration,
    connections: usize,
) -> Row {
    let work = dir.join(format!("work-{}.sqlite3", std::process::id()));
    let config = dir.join(format!("bench-{}.toml", std::process::id()));
    // The copy of a 1M-lead database is most of a gigabyte: never left behind.
    let clean = || {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", work.display()));
        }
        let _ = std::fs::remove_file(&config);
        let _ = std::fs::remove_dir_all(dir.join("spool"));
    };
    clean();
    std::fs::copy(seed, &work).expect("copy seed database");
    let port = free_port();
    std::fs::write(&config, scenarios::config(port, &work)).expect("write config");
    let started = Instant::now();
    let mut command = server_command();
    // A floor scenario runs this binary as the floor server of its kind.
    let floor = match scenario.name {
        scenarios::FLOOR_NAME => Some("raw"),
        scenarios::FLOOR_NEW_NAME => Some("new"),
        scenarios::FLOOR_EXISTING_NAME => Some("existing"),
        _ => None,
    };
    if let Some(kind) = floor {
        command = Command::new(std::env::current_exe().expect("bench binary"));
        command
            .arg("--serve-floor")
            .arg(port.to_string())
            .arg(&work)
            .arg(kind);
    } else {
        command.arg("--config").arg(&config).arg("serve");
    }
    let mut server = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start server");
    let addr = format!("127.0.0.1:{port}");
    wait_healthy(&addr).await;
    let startup_ms = started.elapsed().as_secs_f64() * 1000.0;

    let make = scenario.request;
    // Closed loop for throughput, then open loop at the scenario's rate for
    // latency; both draw fresh visitors from disjoint ranges.
    let before = (
        cpu_ticks(&server, None),
        cpu_ticks(&server, Some("crm-writer")),
    );
    let clock = Instant::now();
    let (rps, closed) = client::closed_loop(&addr, connections, phase, move |k| make(n, k)).await;
    let ticks = clock.elapsed().as_secs_f64() * clock_ticks_per_second();
    let server_cpu = (cpu_ticks(&server, None) - before.0) as f64 / ticks;
    let writer_cpu = (cpu_ticks(&server, Some("crm-writer")) - before.1) as f64 / ticks;
    let mut open = client::open_loop(&addr, scenario.rate, phase, 32, move |k| {
        make(n, 1 << 40 | k)
    })
    .await;
    let rss_mib = peak_rss_kib(&server) as f64 / 1024.0;
    stop(&mut server);
    let db_bytes: u64 = ["", "-wal"]
        .iter()
        .map(|s| {
            std::fs::metadata(format!("{}{s}", work.display()))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum();
    clean();
    Row {
        scenario: scenario.name,
        leads: n,
        rps,
        rate: scenario.rate,
        p50: open.quantile_ms(0.50),
        p99: open.quantile_ms(0.99),
        p999: open.quantile_ms(0.999),
        errors: closed.errors + open.errors,
        rss_mib,
        db_mib: db_bytes as f64 / 1048576.0,
        startup_ms,
        server_cpu,
        writer_cpu,
    }
}

/// CPU time (user + system, in clock ticks) of the server, or of its
/// thread named `thread`.
fn cpu_ticks(server: &Child, thread: Option<&str>) -> u64 {
    let pid = server.id();
    let stat = match thread {
        None => std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default(),
        Some(name) => std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .find(|task| {
                std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.trim() == name)
            })
            .and_then(|task| std::fs::read_to_string(task.path().join("stat")).ok())
            .unwrap_or_default(),
    };
    // Fields after the command name (which may hold spaces): utime and
    // stime are the 14th and 15th fields of the line.
    let rest = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf takes an integer and returns one.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// The server binary, run under `LOAD_WRAP` when set (for instance
/// `LOAD_WRAP="valgrind --tool=callgrind"` to profile a scenario).
fn server_command() -> Command {
    let bin = env!("CARGO_BIN_EXE_crm-responder");
    let wrap = std::env::var("LOAD_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    match words.next() {
        Some(wrapper) => {
            let mut command = Command::new(wrapper);
            command.args(words).arg(bin);
            command
        }
        None => Command::new(bin),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_healthy(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Ok(mut conn) = client::Conn::connect(addr).await
            && let Ok(200) = conn.call(&client::get("/healthz")).await
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("server did not become healthy");
}

fn peak_rss_kib(server: &Child) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", server.id())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn stop(server: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(server.id().to_string())
        .status();
    let _ = server.wait();
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| scenario | leads | req/s (closed loop) | ÷ baseline | server CPU | writer CPU | open-loop rate | p50 ms | p99 ms | p99.9 ms | p50 ÷ p50@smallest | errors | peak RSS MiB | DB MiB | startup ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let baseline = rows
            .iter()
            .find(|b| b.scenario == "baseline /healthz" && b.leads == r.leads)
            .map(|b| r.rps / b.rps)
            .unwrap_or(f64::NAN);
        let smallest = rows
            .iter()
            .filter(|b| b.scenario == r.scenario)
            .min_by_key(|b| b.leads)
            .map(|b| r.p50 / b.p50)
            .unwrap_or(f64::NAN);
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.0} % | {:.0} % | {:.0}/s | {:.3} | {:.3} | {:.3} | {:.2} | {} | {:.1} | {:.1} | {:.0} |",
            r.scenario,
            r.leads,
            r.rps,
            baseline,
            r.server_cpu * 100.0,
            r.writer_cpu * 100.0,
            r.rate,
            r.p50,
            r.p99,
            r.p999,
            smallest,
            r.errors,
            r.rss_mib,
            r.db_mib,
            r.startup_ms
        );
    }
}
