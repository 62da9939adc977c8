//! `cargo bench --bench load`: throughput, tail latency and cost growth of
//! the real service (the release binary, as its own process) against
//! databases of 10k, 100k and 1M generated leads. Prints a table.
//!
//! Options (after `--`): `--sizes 10000,100000,1000000`, `--seconds N`
//! (per phase, default 5), `--only NAME` (one scenario), `--connections N`
//! (of the closed loop, default 32), `--floor` (the baseline and the floor
//! of a stored delivery and of a new lead instead of the scenarios: see
//! floor.rs), `--retention` (webhook latency without and with the retention
//! job deleting a backlog of `--backlog N` old deliveries, default 300000,
//! back to back: see retention.rs), `--queue` (the review queue's page
//! times with `--links N,M` possible-duplicate links: see queue.rs). `LOAD_WRAP`
//! runs the server under another command, e.g. a profiler; `LOAD_BINARY`
//! serves with another build (a before/after pair on the same data).
//!
//! The store (see pg.rs):
//!
//! - `--store sqlite` (the default): the service on a copy of the SQLite
//!   seed, as above.
//! - `--store postgres`: every scenario on SQLite as before **and**, right
//!   after it, on PostgreSQL with 1, 2 and 3 instances of the service on
//!   one database (`--instances 1,2,3`, the default; each instance on its
//!   own port with its own spool directory, the load client's connections
//!   spread over them round-robin). Prints the full table with a store
//!   column and the CPU of PostgreSQL, of the load client and of the whole
//!   machine; then SQLite and PostgreSQL side by side (req/s, ratios, p50
//!   and p99 at the scenario's fixed rate); the targets; what the
//!   service's PostgreSQL sessions did during the closed loop
//!   (`pg_stat_activity` sampled, WAL flushes); the server's settings.
//! - `--store postgres-only`: the PostgreSQL rows alone (quicker, no ratios
//!   to SQLite).
//!
//! The PostgreSQL server is the one `CRM_BENCH_POSTGRES` names (the URL of
//! a role that may create databases; its seed databases are kept and
//! reused), else a throwaway cluster of `scripts/pg-test-cluster.sh` under
//! the target's tmp dir, stopped and removed at the end (also when the
//! bench panics), with `fsync` and `full_page_writes` turned back on
//! (`--pg-fsync off` keeps the script's `fsync = off`). Each size is seeded
//! once into `crm_bench_seed_v{DATA_VERSION}_{n}` by `crm-responder
//! migrate-store` from the SQLite seed, then vacuumed and analysed; each
//! run gets a work database copied from it (`CREATE DATABASE … TEMPLATE`),
//! dropped after. Before its measures a PostgreSQL run has a second of
//! load and an `ANALYZE` (see `run`: on a database without deliveries the
//! cached plans scan that table whole until then); `--pg-cold` skips them,
//! to measure a fresh database's first seconds.

mod client;
mod datagen;
mod floor;
mod outbound;
mod pg;
mod queue;
mod retention;
mod scenarios;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use scenarios::{SCENARIOS, Scenario};

/// Where a run's service keeps its data.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    /// One instance on a copy of the SQLite seed.
    Sqlite,
    /// This many instances on one PostgreSQL work database.
    Postgres(usize),
}

impl Target {
    fn label(self) -> String {
        match self {
            Target::Sqlite => "SQLite".into(),
            Target::Postgres(k) => format!("PG ×{k}"),
        }
    }
}

/// Figures for one scenario at one size on one store.
struct Row {
    target: Target,
    scenario: &'static str,
    leads: u64,
    rps: f64,
    rate: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    errors: u64,
    /// Peak RSS of the largest instance.
    rss_mib: f64,
    db_mib: f64,
    /// From spawning the instances to the last one's first `/healthz` 200.
    startup_ms: f64,
    /// Share of one core the server (all its instances) used during the
    /// closed loop.
    server_cpu: f64,
    /// Share of one core its writer threads used then.
    writer_cpu: f64,
    /// Share of one core PostgreSQL's processes used then (when on this
    /// machine).
    postgres_cpu: Option<f64>,
    /// Share of one core the load client (this process) used then.
    client_cpu: f64,
    /// Cores of the whole machine busy then (all processes).
    machine_cpu: f64,
    /// What the service's PostgreSQL sessions did during the closed loop.
    activity: Option<pg::Activity>,
    /// Requests answered in the closed loop.
    requests: u64,
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
    let numbers = |name: &str, default: &str| -> Vec<u64> {
        arg(name)
            .unwrap_or_else(|| default.into())
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name} takes numbers"))
            })
            .collect()
    };
    let sizes = numbers("--sizes", "10000,100000,1000000");
    let seconds: u64 = arg("--seconds")
        .map(|s| s.parse().expect("--seconds"))
        .unwrap_or(5);
    let only = arg("--only");
    let connections: usize = arg("--connections")
        .map(|s| s.parse().expect("--connections takes a number"))
        .unwrap_or(32);
    let (on_sqlite, on_postgres) = match arg("--store").as_deref() {
        None | Some("sqlite") => (true, false),
        Some("postgres") => (true, true),
        Some("postgres-only") => (false, true),
        Some(other) => panic!("--store sqlite|postgres|postgres-only, not {other}"),
    };
    let instances = numbers("--instances", "1,2,3");
    assert!(
        instances.iter().all(|&k| k >= 1),
        "--instances takes counts of 1 or more"
    );
    let pg_fsync = match arg("--pg-fsync").as_deref() {
        None | Some("on") => true,
        Some("off") => false,
        Some(other) => panic!("--pg-fsync on|off, not {other}"),
    };
    let is_floor = args.iter().any(|a| a == "--floor");
    let is_retention = args.iter().any(|a| a == "--retention");
    let is_queue = args.iter().any(|a| a == "--queue");
    let links = numbers("--links", "100000,1000000");
    let backlog: u64 = arg("--backlog")
        .map(|s| s.parse().expect("--backlog takes a number"))
        .unwrap_or(300_000);
    let cold = args.iter().any(|a| a == "--pg-cold");
    assert!(
        !(is_floor && on_postgres),
        "--floor measures SQLite floors only: run it without --store postgres"
    );
    let mut targets = Vec::new();
    if on_sqlite {
        targets.push(Target::Sqlite);
    }
    if on_postgres {
        targets.extend(instances.iter().map(|&k| Target::Postgres(k as usize)));
    }
    let phase = Duration::from_secs(seconds);
    let is_outbound = args.iter().any(|a| a == "--outbound");

    let data_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-data");
    std::fs::create_dir_all(&data_dir).expect("bench data dir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Dropped (a throwaway cluster stopped) at the end, or on a panic.
    let postgres = on_postgres.then(|| runtime.block_on(pg::Server::start(pg_fsync)));

    if is_outbound {
        let n = sizes[0];
        let seed = data_dir.join(format!("leads-v{}-{n}.sqlite3", datagen::DATA_VERSION));
        if !seed.exists() {
            datagen::generate(&seed, n);
        }
        runtime.block_on(outbound::run(&seed, n, &data_dir, phase));
        return;
    }
    let mut rows: Vec<Row> = Vec::new();
    for &n in &sizes {
        let seed = data_dir.join(format!("leads-v{}-{n}.sqlite3", datagen::DATA_VERSION));
        if !seed.exists() {
            let secs = datagen::generate(&seed, n);
            eprintln!("generated {n} leads in {secs:.1} s -> {}", seed.display());
        }
        if is_queue {
            runtime.block_on(queue::measure(n, &links, &seed, &data_dir));
            continue;
        }
        if is_retention {
            let name = only.as_deref().unwrap_or("accepted: new visitor");
            let scenario = SCENARIOS
                .iter()
                .find(|s| s.name == name)
                .unwrap_or_else(|| panic!("no scenario {name:?}"));
            runtime.block_on(retention::compare(
                scenario, n, &seed, &data_dir, phase, backlog,
            ));
            continue;
        }
        let pg_seed = postgres
            .as_ref()
            .map(|pg| (pg, runtime.block_on(pg.seed(n, &seed, &data_dir))));
        let scenarios: &[Scenario] = if is_floor {
            &scenarios::FLOOR
        } else {
            SCENARIOS
        };
        for scenario in scenarios
            .iter()
            .filter(|s| only.as_deref().is_none_or(|o| o == s.name))
        {
            // The stores one after the other for each scenario: a pair
            // compared is measured minutes apart at most.
            for &target in &targets {
                let store = match (target, &pg_seed) {
                    (Target::Sqlite, _) => Store::Sqlite(&seed),
                    (Target::Postgres(k), Some((pg, seed))) => Store::Postgres(pg, seed, k, !cold),
                    (Target::Postgres(_), None) => unreachable!("PostgreSQL started"),
                };
                let row = runtime.block_on(run(scenario, n, store, &data_dir, phase, connections));
                eprintln!(
                    "{:<8} {:<22} {:>8} leads: {:>8.0} req/s, p99 {:.2} ms at {:.0}/s",
                    row.target.label(),
                    row.scenario,
                    row.leads,
                    row.rps,
                    row.p99,
                    row.rate
                );
                rows.push(row);
            }
        }
    }
    match &postgres {
        None if is_retention || is_queue => {}
        None => print_table(&rows),
        Some(pg) => {
            print_full_table(&rows);
            print_side_by_side(&rows, &targets);
            print_targets(&rows, &targets);
            print_sessions(&rows);
            print_footnote(pg);
        }
    }
}

/// The data of one run.
enum Store<'a> {
    /// A copy of this SQLite seed.
    Sqlite(&'a Path),
    /// A copy of this seed database on this server, for this many
    /// instances; warmed up and analysed before the measures when true.
    Postgres(&'a pg::Server, &'a str, usize, bool),
}

/// The running instances; stopped when dropped (also on a panic).
struct Instances(Vec<Child>);

impl Drop for Instances {
    fn drop(&mut self) {
        // All asked first, then all waited for: they stop side by side.
        for child in &self.0 {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

async fn run(
    scenario: &'static Scenario,
    n: u64,
    store: Store<'_>,
    dir: &Path,
    phase: Duration,
    connections: usize,
) -> Row {
    let pid = std::process::id();
    let count = match store {
        Store::Sqlite(_) => 1,
        Store::Postgres(_, _, k, _) => k,
    };
    let work = dir.join(format!("work-{pid}.sqlite3"));
    let configs: Vec<PathBuf> = (0..count)
        .map(|i| dir.join(format!("bench-{pid}-{i}.toml")))
        .collect();
    let spools: Vec<PathBuf> = (0..count)
        .map(|i| dir.join(format!("spool-{pid}-{i}")))
        .collect();
    // The copy of a 1M-lead database is most of a gigabyte: never left behind.
    let clean = || {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", work.display()));
        }
        for (config, spool) in configs.iter().zip(&spools) {
            let _ = std::fs::remove_file(config);
            let _ = std::fs::remove_dir_all(spool);
        }
        let _ = std::fs::remove_dir_all(dir.join("spool"));
    };
    clean();
    let (target, databases, postgres, warm) = match store {
        Store::Sqlite(seed) => {
            std::fs::copy(seed, &work).expect("copy seed database");
            (Target::Sqlite, vec![scenarios::sqlite(&work)], None, false)
        }
        Store::Postgres(pg, seed, k, warm) => {
            let started = Instant::now();
            let url = pg.create_work(seed).await;
            let copied = started.elapsed().as_secs_f64();
            if copied > 1.0 {
                eprintln!("copied {seed} in {copied:.1} s");
            }
            let databases = spools.iter().map(|s| scenarios::postgres(&url, s));
            (Target::Postgres(k), databases.collect(), Some(pg), warm)
        }
    };
    let ports = free_ports(count);
    for ((config, database), port) in configs.iter().zip(&databases).zip(&ports) {
        std::fs::write(config, scenarios::config(*port, database)).expect("write config");
    }
    let started = Instant::now();
    // A floor scenario runs this binary as the floor server of its kind.
    let floor = match scenario.name {
        scenarios::FLOOR_NAME => Some("raw"),
        scenarios::FLOOR_NEW_NAME => Some("new"),
        scenarios::FLOOR_EXISTING_NAME => Some("existing"),
        _ => None,
    };
    let mut servers = Instances(Vec::new());
    for (config, port) in configs.iter().zip(&ports) {
        let mut command = match floor {
            Some(kind) => {
                let mut command = Command::new(std::env::current_exe().expect("bench binary"));
                command
                    .arg("--serve-floor")
                    .arg(port.to_string())
                    .arg(&work)
                    .arg(kind);
                command
            }
            None => {
                let mut command = server_command();
                command.arg("--config").arg(config).arg("serve");
                command
            }
        };
        let server = command
            .env_remove("CRM_DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start server");
        servers.0.push(server);
    }
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    for addr in &addrs {
        wait_healthy(addr).await;
    }
    let startup_ms = started.elapsed().as_secs_f64() * 1000.0;

    let make = scenario.request;
    if let (Some(pg), true) = (postgres, warm) {
        // A fresh database has no deliveries (nor decisions, nor duplicate
        // links): the plans PostgreSQL caches for each connection then scan
        // those tables whole, slower with every delivery stored, until
        // ANALYZE invalidates them, as autovacuum does within a minute
        // of load on a running service. Measure that steady state: a
        // second of load (visitors of a range of their own), then ANALYZE.
        client::closed_loop(&addrs, connections, Duration::from_secs(1), move |k| {
            make(n, 2 << 40 | k)
        })
        .await;
        pg.analyze_work().await;
    }
    // Closed loop for throughput, then open loop at the scenario's rate for
    // latency; both draw fresh visitors from disjoint ranges.
    let ticks_now = |servers: &Instances| Ticks {
        server: servers.0.iter().map(|s| cpu_ticks(s.id(), None)).sum(),
        writer: servers
            .0
            .iter()
            .map(|s| cpu_ticks(s.id(), Some("crm-writer")))
            .sum(),
        postgres: postgres.and_then(|pg| pg.cpu_ticks()),
        client: cpu_ticks(std::process::id(), None),
        machine: machine_busy_ticks(),
    };
    let wal_before = match postgres {
        Some(pg) => Some(pg.wal_counters().await),
        None => None,
    };
    let before = ticks_now(&servers);
    let clock = Instant::now();
    let ((rps, closed), sessions) = tokio::join!(
        client::closed_loop(&addrs, connections, phase, move |k| make(n, k)),
        async {
            match postgres {
                Some(pg) => Some(pg.sessions(phase).await),
                None => None,
            }
        }
    );
    let after = ticks_now(&servers);
    let ticks = clock.elapsed().as_secs_f64() * clock_ticks_per_second();
    let activity = match (postgres, wal_before, sessions) {
        (Some(pg), Some(before), Some(mut activity)) => {
            // The backends report their WAL counters about once a second.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let after = pg.wal_counters().await;
            activity.wal_bytes = after.0.saturating_sub(before.0);
            activity.wal_syncs = after.1.saturating_sub(before.1);
            Some(activity)
        }
        _ => None,
    };
    let requests = closed.micros.len() as u64 + closed.errors;
    let share = |a: u64, b: u64| a.saturating_sub(b) as f64 / ticks;
    let mut open = client::open_loop(&addrs, scenario.rate, phase, 32, move |k| {
        make(n, 1 << 40 | k)
    })
    .await;
    let rss_mib = servers
        .0
        .iter()
        .map(|s| peak_rss_kib(s.id()))
        .max()
        .unwrap_or(0) as f64
        / 1024.0;
    drop(servers);
    let db_bytes: u64 = match postgres {
        None => ["", "-wal"]
            .iter()
            .map(|s| {
                std::fs::metadata(format!("{}{s}", work.display()))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .sum(),
        Some(pg) => {
            let bytes = pg.work_bytes().await;
            pg.drop_work().await;
            bytes
        }
    };
    clean();
    Row {
        target,
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
        server_cpu: share(after.server, before.server),
        writer_cpu: share(after.writer, before.writer),
        // Each process's ticks since the first count (all of them for a
        // process started since).
        postgres_cpu: after.postgres.zip(before.postgres).map(|(a, b)| {
            let used = a
                .iter()
                .map(|(pid, t)| t.saturating_sub(*b.get(pid).unwrap_or(&0)));
            used.sum::<u64>() as f64 / ticks
        }),
        client_cpu: share(after.client, before.client),
        machine_cpu: share(after.machine, before.machine),
        activity,
        requests,
    }
}

/// CPU time (clock ticks) counted at one moment.
struct Ticks {
    server: u64,
    writer: u64,
    /// By process: a backend that ends (the ANALYZE's) takes its ticks
    /// with it.
    postgres: Option<std::collections::HashMap<u32, u64>>,
    client: u64,
    machine: u64,
}

/// CPU time (user + system, in clock ticks) of process `pid`, or of its
/// thread named `thread`.
fn cpu_ticks(pid: u32, thread: Option<&str>) -> u64 {
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
    stat_ticks(&stat_fields(&stat))
}

/// The fields of a `/proc/…/stat` line after the command name (which may
/// hold spaces): the state first, then the parent's pid.
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(") ")
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect()
}

/// utime + stime (the 14th and 15th fields of the whole line).
fn stat_ticks(fields: &[&str]) -> u64 {
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// Clock ticks every core of the machine spent on anything but idling
/// (`/proc/stat`; iowait counts as idle).
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    ticks.iter().take(8).sum::<u64>() - ticks.get(3).unwrap_or(&0) - ticks.get(4).unwrap_or(&0)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf takes an integer and returns one.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// `serve` with `config` on the store it names (not one the environment
/// would choose), its output discarded.
fn serve(config: &std::path::Path) -> Child {
    server_command()
        .arg("--config")
        .arg(config)
        .arg("serve")
        .env_remove("CRM_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start server")
}

/// The server binary (another build when `LOAD_BINARY` names one, to
/// compare two builds back to back on the same data), run under
/// `LOAD_WRAP` when set (for instance `LOAD_WRAP="valgrind
/// --tool=callgrind"` to profile a scenario).
fn server_command() -> Command {
    let bin = std::env::var("LOAD_BINARY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_crm-responder").to_owned());
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

/// `count` distinct free ports (all bound at once while they are chosen).
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
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

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn print_table(rows: &[Row]) {
    table(rows, false);
}

/// Every row, with the store and where the CPU went.
fn print_full_table(rows: &[Row]) {
    table(rows, true);
}

fn table(rows: &[Row], stores: bool) {
    let (store, cpu) = if stores {
        (
            "| store ",
            " postgres CPU | load client CPU | machine CPU (other processes) |",
        )
    } else {
        ("", "")
    };
    println!();
    println!(
        "{store}| scenario | leads | req/s (closed loop) | ÷ baseline | server CPU | writer CPU |{cpu} open-loop rate | p50 ms | p99 ms | p99.9 ms | p50 ÷ p50@smallest | errors | peak RSS MiB | DB MiB | startup ms |"
    );
    let (store_rule, cpu_rule) = if stores {
        ("|---", "---:|---:|---:|")
    } else {
        ("", "")
    };
    println!(
        "{store_rule}|---|---:|---:|---:|---:|---:|{cpu_rule}---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in rows {
        let baseline = rows
            .iter()
            .find(|b| {
                b.scenario == "baseline /healthz" && b.leads == r.leads && b.target == r.target
            })
            .map(|b| r.rps / b.rps)
            .unwrap_or(f64::NAN);
        let smallest = rows
            .iter()
            .filter(|b| b.scenario == r.scenario && b.target == r.target)
            .min_by_key(|b| b.leads)
            .map(|b| r.p50 / b.p50)
            .unwrap_or(f64::NAN);
        let (store, cpu) = if stores {
            (
                format!("| {} ", r.target.label()),
                format!(
                    " {} | {:.0} % | {:.0} % ({:.0} %) |",
                    r.postgres_cpu
                        .map_or("–".into(), |c| format!("{:.0} %", c * 100.0)),
                    r.client_cpu * 100.0,
                    r.machine_cpu * 100.0,
                    (r.machine_cpu - r.server_cpu - r.client_cpu - r.postgres_cpu.unwrap_or(0.0))
                        .max(0.0)
                        * 100.0
                ),
            )
        } else {
            Default::default()
        };
        println!(
            "{store}| {} | {} | {:.0} | {:.2} | {:.0} % | {:.0} % |{cpu} {:.0}/s | {:.3} | {:.3} | {:.3} | {:.2} | {} | {:.1} | {:.1} | {:.0} |",
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

/// The (leads, scenario) pairs of the run, in the order they ran.
fn cases(rows: &[Row]) -> Vec<(u64, &'static str)> {
    let mut cases: Vec<(u64, &'static str)> = Vec::new();
    for r in rows {
        if !cases.contains(&(r.leads, r.scenario)) {
            cases.push((r.leads, r.scenario));
        }
    }
    cases
}

fn find<'a>(rows: &'a [Row], leads: u64, scenario: &str, target: Target) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.leads == leads && r.scenario == scenario && r.target == target)
}

/// SQLite and PostgreSQL side by side: closed-loop req/s, PostgreSQL's
/// over SQLite's and over one instance's, p50 / p99 at the fixed rate.
fn print_side_by_side(rows: &[Row], targets: &[Target]) {
    let pg: Vec<Target> = targets
        .iter()
        .copied()
        .filter(|t| *t != Target::Sqlite)
        .collect();
    let vs_sqlite: Vec<Target> = if targets.contains(&Target::Sqlite) {
        pg.clone()
    } else {
        Vec::new()
    };
    let vs_one: Vec<Target> = if pg.contains(&Target::Postgres(1)) {
        pg.iter()
            .copied()
            .filter(|t| *t != Target::Postgres(1))
            .collect()
    } else {
        Vec::new()
    };
    let mut head = String::from("| scenario | leads |");
    for t in targets {
        head += &format!(" {} req/s |", t.label());
    }
    for t in &vs_sqlite {
        head += &format!(" {} ÷ SQLite |", t.label());
    }
    for t in &vs_one {
        head += &format!(" {} ÷ PG ×1 |", t.label());
    }
    head += " open-loop rate |";
    for t in targets {
        head += &format!(" {} p50 / p99 ms |", t.label());
    }
    head += " errors |";
    let columns = 2 + targets.len() * 2 + vs_sqlite.len() + vs_one.len() + 2;
    println!();
    println!("{head}");
    println!("|---|{}", "---:|".repeat(columns - 1));
    for (leads, scenario) in cases(rows) {
        let row = |t: Target| find(rows, leads, scenario, t);
        let rps = |t: Target| row(t).map_or(f64::NAN, |r| r.rps);
        let mut line = format!("| {scenario} | {leads} |");
        for &t in targets {
            line += &format!(" {:.0} |", rps(t));
        }
        for &t in &vs_sqlite {
            line += &format!(" {:.2} |", rps(t) / rps(Target::Sqlite));
        }
        for &t in &vs_one {
            line += &format!(" {:.2} |", rps(t) / rps(Target::Postgres(1)));
        }
        let rate = rows
            .iter()
            .find(|r| r.leads == leads && r.scenario == scenario)
            .map_or(f64::NAN, |r| r.rate);
        line += &format!(" {rate:.0}/s |");
        let mut errors = 0;
        for &t in targets {
            match row(t) {
                Some(r) => {
                    line += &format!(" {:.2} / {:.2} |", r.p50, r.p99);
                    errors += r.errors;
                }
                None => line += " – |",
            }
        }
        line += &format!(" {errors} |");
        println!("{line}");
    }
}

/// The targets for PostgreSQL, reported (not asserted) at each
/// size: a known visitor's `chat_accepted` at half of SQLite's throughput
/// or more, 3,000 new visitors a second, p99 under 10 ms at 1,000 req/s,
/// two instances not slower than one.
fn print_targets(rows: &[Row], targets: &[Target]) {
    println!();
    println!(
        "| leads | store | email match ÷ SQLite (≥ 0.5) | phone match ÷ SQLite (≥ 0.5) | new visitors/s (≥ 3,000) | worst p99 at 1,000/s (< 10 ms) | lowest ÷ PG ×1 (≥ 1 for ×2) |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|");
    let leads: Vec<u64> = cases(rows)
        .iter()
        .map(|c| c.0)
        .fold(Vec::new(), |mut v, n| {
            if !v.contains(&n) {
                v.push(n);
            }
            v
        });
    let cell = |v: Option<f64>, digits: usize| v.map_or("–".into(), |v| format!("{v:.digits$}"));
    for n in leads {
        for &t in targets.iter().filter(|t| **t != Target::Sqlite) {
            let rps =
                |target: Target, scenario: &str| find(rows, n, scenario, target).map(|r| r.rps);
            let ratio = |scenario: &str| Some(rps(t, scenario)? / rps(Target::Sqlite, scenario)?);
            let worst = rows
                .iter()
                .filter(|r| r.leads == n && r.target == t && r.rate >= 1000.0)
                .max_by(|a, b| a.p99.total_cmp(&b.p99))
                .map(|r| format!("{:.2} ms ({})", r.p99, r.scenario));
            let lowest = (t != Target::Postgres(1))
                .then(|| {
                    rows.iter()
                        .filter(|r| r.leads == n && r.target == t)
                        .filter_map(|r| {
                            let one = find(rows, n, r.scenario, Target::Postgres(1))?;
                            Some((r.rps / one.rps, r.scenario))
                        })
                        .min_by(|a, b| a.0.total_cmp(&b.0))
                        .map(|(v, s)| format!("{v:.2} ({s})"))
                })
                .flatten();
            println!(
                "| {n} | {} | {} | {} | {} | {} | {} |",
                t.label(),
                cell(ratio("accepted: email match"), 2),
                cell(ratio("accepted: phone match"), 2),
                cell(rps(t, "accepted: new visitor"), 0),
                worst.unwrap_or("–".into()),
                lowest.unwrap_or("–".into()),
            );
        }
    }
}

/// Where the PostgreSQL runs' time went: the mean number of the service's
/// sessions in each state during the closed loop, and the WAL per request.
fn print_sessions(rows: &[Row]) {
    println!();
    println!(
        "| store | scenario | leads | sessions running | waiting for the write lock | waiting for a WAL flush | other waits | idle in transaction (waiting for its instance) | requests per WAL flush | WAL bytes per request |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let Some(a) = &r.activity else { continue };
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.0} |",
            r.target.label(),
            r.scenario,
            r.leads,
            a.mean(a.running),
            a.mean(a.advisory),
            a.mean(a.wal),
            a.mean(a.other_wait),
            a.mean(a.idle_in_transaction),
            r.requests as f64 / a.wal_syncs.max(1) as f64,
            a.wal_bytes as f64 / r.requests.max(1) as f64,
        );
    }
}

fn print_footnote(postgres: &pg::Server) {
    println!();
    println!("{}.", postgres.describe);
    println!(
        "SQLite: one instance, WAL with synchronous=NORMAL (a commit is not fsynced; the WAL is synced at checkpoints). \
         PostgreSQL with synchronous_commit=on waits for its WAL flush at every commit: the stricter of the two."
    );
    if !postgres.fsync {
        println!("PostgreSQL runs with fsync=off: its writes are flattered against SQLite's.");
    }
    println!(
        "CPU columns: shares of one core during the closed loop (the machine has {} cores); \
         server and writer CPU are all instances together; machine CPU is every process's, \
         in brackets what was neither the service, PostgreSQL nor the load client.",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}
