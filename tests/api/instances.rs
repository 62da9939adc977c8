//! Several stateless instances on one PostgreSQL database: the real binary
//! three times, behind a real nginx on loopback, and a PostgreSQL server
//! restarted under write load. PostgreSQL only (`CRM_TEST_POSTGRES`); nginx
//! and PostgreSQL's own binaries come from Debian's packages.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

/// The service as a child process on `config`, its address read from its log.
struct Instance {
    child: Child,
    addr: SocketAddr,
}

impl Instance {
    fn start(config: &Path) -> Instance {
        let mut child = Command::new(BIN)
            .args(["--log-format", "json", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn,crm_responder::cli=info")
            .env_remove("CRM_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the binary");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let json: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if json["message"] == "serving"
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(json["addr"].as_str().unwrap_or("").to_owned());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the instance reports its address")
            .parse()
            .expect("a socket address");
        Instance { child, addr }
    }

    /// SIGKILL: no shutdown, nothing flushed.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config file for an instance on the PostgreSQL database `url`.
fn instance_config(dir: &Path, name: &str, url: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let mut text = store_config_text(&dir.join("unused.sqlite3"), Some(url));
    text = text.replacen(
        "[database]\n",
        &format!("[database]\nspool_dir = \"{}\"\n", dir.join(name).display()),
        1,
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// nginx in front of `upstreams`, retrying a delivery on the next instance
/// when one refuses the connection, times out or answers 502/503.
struct Nginx {
    child: Child,
    addr: SocketAddr,
}

impl Nginx {
    fn start(dir: &Path, upstreams: &[SocketAddr]) -> Option<Nginx> {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let servers: String = upstreams
            .iter()
            .map(|a| format!("        server {a} max_fails=0;\n"))
            .collect();
        let root = dir.join("nginx");
        std::fs::create_dir_all(&root).unwrap();
        let conf = format!(
            r#"
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    upstream crm {{
{servers}    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://crm;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_read_timeout 10s;
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            proxy_next_upstream_tries 3;
        }}
    }}
}}
"#,
            root = root.display()
        );
        let conf_path = root.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(nginx)
            .arg("-p")
            .arg(&root)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Nginx { child, addr })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `chat_accepted` of visitor `visitor` in chat `chat`.
fn visit(visitor: usize, chat: usize) -> String {
    let mut body = accepted(
        chat as u64,
        &format!("inst-{visitor}"),
        &format!("Visitor{visitor}"),
        Some(&format!("v{visitor}@instances.test")),
        None,
    );
    body["user_token"] = Value::Null;
    body.to_string()
}

/// Sends `body` to `addr` until it is answered 200; the answer.
async fn deliver(client: &reqwest::Client, addr: SocketAddr, body: &str) -> (usize, Value) {
    let mut tries = 0;
    loop {
        tries += 1;
        let sent = client
            .post(format!("http://{addr}/webhooks/jivo/{JIVO_TOKEN}"))
            .body(body.to_owned())
            .send()
            .await;
        if let Ok(response) = sent
            && response.status() == 200
        {
            return (tries, response.json().await.unwrap());
        }
        assert!(tries < 200, "a delivery was never accepted");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_behind_nginx_make_one_lead_per_visitor_and_lose_nothing_when_one_is_killed()
 {
    let Some(server) = postgres_server() else {
        eprintln!("skipped: set CRM_TEST_POSTGRES to run the multi-instance test");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_postgres_database(&server).await;
    let configs: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| instance_config(dir.path(), n, &url))
        .collect();
    // Started at once: they migrate the empty database exactly once.
    let starting: Vec<_> = configs
        .iter()
        .cloned()
        .map(|c| std::thread::spawn(move || Instance::start(&c)))
        .collect();
    let mut instances: Vec<Instance> = starting.into_iter().map(|t| t.join().unwrap()).collect();
    let addrs: Vec<SocketAddr> = instances.iter().map(|i| i.addr).collect();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // 60 chats of one new visitor at once, spread over the three instances.
    let answers = futures_util::future::join_all((0..60).map(|n| {
        let client = client.clone();
        let addr = addrs[n % 3];
        async move { deliver(&client, addr, &visit(1, 9_000 + n)).await.1 }
    }))
    .await;
    let leads: HashSet<i64> = answers.iter().map(lead_id).collect();
    assert_eq!(leads.len(), 1, "one lead for one visitor: {leads:?}");
    let lead = *leads.iter().next().unwrap();
    let app_sql = |sql: &str| -> i64 { query_store(Path::new(""), Some(&url), sql) };
    assert_eq!(
        app_sql("SELECT count(*) FROM leads WHERE merged_into IS NULL"),
        1
    );
    assert_eq!(
        app_sql(&format!(
            "SELECT count(*) FROM conversations WHERE lead_id = {lead}"
        )),
        60
    );

    // A redelivery to the other instances changes nothing.
    let again = visit(1, 9_000);
    for addr in &addrs {
        let (_, answer) = deliver(&client, *addr, &again).await;
        assert_eq!(lead_id(&answer), lead);
    }
    assert_eq!(
        app_sql("SELECT count(*) FROM deliveries WHERE event = 'chat_accepted'"),
        60
    );

    // Two visitors sharing a phone, at once on two instances, end as the
    // merge policy says on one: the phone's lead takes the second email
    // (keep_both), whichever came first.
    let shared_phone = |v: usize, chat: usize| {
        let mut body = accepted(
            chat as u64,
            &format!("share-{v}"),
            &format!("Sharer{v}"),
            Some(&format!("share{v}@instances.test")),
            Some("+1 408 555 0199"),
        );
        body["user_token"] = Value::Null;
        body.to_string()
    };
    let (one, two) = (shared_phone(1, 30_001), shared_phone(2, 30_002));
    let (first, second) = tokio::join!(
        deliver(&client, addrs[0], &one),
        deliver(&client, addrs[2], &two),
    );
    assert_eq!(lead_id(&first.1), lead_id(&second.1));
    let sharer = lead_id(&first.1);
    assert_eq!(
        app_sql(&format!(
            "SELECT count(*) FROM lead_emails WHERE lead_id = {sharer} AND value LIKE 'share%'"
        )),
        2
    );
    assert_eq!(
        app_sql("SELECT count(*) FROM lead_phones WHERE value = '+14085550199'"),
        1
    );

    // Load through nginx; one instance dies in the middle of it.
    let Some(nginx) = Nginx::start(dir.path(), &addrs) else {
        eprintln!("skipped the load balancer half: nginx is not installed");
        return;
    };
    let visitors = 600;
    let next = Arc::new(AtomicUsize::new(100));
    let retried = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..12)
        .map(|_| {
            let (client, next, retried) = (client.clone(), next.clone(), retried.clone());
            let addr = nginx.addr;
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                loop {
                    let v = next.fetch_add(1, Ordering::SeqCst);
                    if v >= 100 + visitors {
                        return acknowledged;
                    }
                    let (tries, answer) = deliver(&client, addr, &visit(v, 20_000 + v)).await;
                    retried.fetch_add(tries - 1, Ordering::SeqCst);
                    acknowledged.push((v, lead_id(&answer)));
                }
            })
        })
        .collect();
    while next.load(Ordering::SeqCst) < 100 + visitors / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    instances.remove(1).kill();
    killed.store(true, Ordering::SeqCst);
    let mut acknowledged = Vec::new();
    for sender in senders {
        acknowledged.extend(sender.await.unwrap());
    }
    assert_eq!(acknowledged.len(), visitors);
    for (v, lead) in &acknowledged {
        let owner = app_sql(&format!(
            "SELECT count(*) FROM lead_emails WHERE value = 'v{v}@instances.test' AND lead_id = {lead}"
        ));
        assert_eq!(owner, 1, "visitor {v} is lead {lead}");
        let chats = app_sql(&format!(
            "SELECT count(*) FROM conversations WHERE chat_id = '{}'",
            20_000 + v
        ));
        assert_eq!(chats, 1, "visitor {v}'s chat is stored once");
    }
    assert_eq!(
        app_sql("SELECT count(*) FROM leads WHERE merged_into IS NULL"),
        2 + visitors as i64
    );
    assert_eq!(
        app_sql(
            "SELECT count(*) FROM (SELECT value FROM lead_emails GROUP BY value HAVING count(*) > 1) AS twice"
        ),
        0
    );
    eprintln!(
        "three instances: {visitors} visitors acknowledged through nginx, one instance killed at a third, \
         {} sends retried by the client, every acknowledged delivery stored exactly once",
        retried.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_restart_under_write_load_is_503_while_down_then_recovers_losing_nothing() {
    if postgres_server().is_none() {
        eprintln!("skipped: set CRM_TEST_POSTGRES to run the PostgreSQL restart test");
        return;
    }
    // A cluster of this test's own, so that stopping it disturbs no other test.
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("pg");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg-test-cluster.sh");
    let cluster_ctl = |args: &[&str]| {
        let out = Command::new("bash")
            .arg(&script)
            .args(args)
            .output()
            .expect("pg-test-cluster.sh runs");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let cluster_dir = cluster.to_str().unwrap().to_owned();
    let server = cluster_ctl(&["start", &cluster_dir, &port.to_string()]);
    struct Stop(Box<dyn Fn()>);
    impl Drop for Stop {
        fn drop(&mut self) {
            (self.0)()
        }
    }
    let _stop = Stop(Box::new({
        let (script, cluster_dir) = (script.clone(), cluster_dir.clone());
        move || {
            let _ = Command::new("bash")
                .arg(&script)
                .args(["stop", &cluster_dir])
                .output();
        }
    }));
    let url = fresh_postgres_database(&server).await;
    let config = instance_config(dir.path(), "only", &url);
    let instance = Instance::start(&config);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let unavailable = Arc::new(AtomicUsize::new(0));
    let other_errors = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..4)
        .map(|s| {
            let (client, stop, unavailable, other_errors) = (
                client.clone(),
                stop.clone(),
                unavailable.clone(),
                other_errors.clone(),
            );
            let addr = instance.addr;
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                let mut v = 100_000 * (s + 1);
                while !stop.load(Ordering::SeqCst) {
                    // Offline messages: a 200 means stored (or spooled), never degraded.
                    let mut body = fixture("jivo/offline_message.json");
                    body["visitor"]["number"] = format!("pg-restart-{v}").into();
                    body["visitor"]["email"] = format!("r{v}@restart.test").into();
                    body["visitor"]["phone"] = Value::Null;
                    body["message"] = format!("message {v}").into();
                    body["offline_message_id"] = (v as u64).into();
                    let sent = client
                        .post(format!("http://{addr}/webhooks/jivo/{JIVO_TOKEN}"))
                        .body(body.to_string())
                        .send()
                        .await;
                    match sent.map(|r| r.status().as_u16()) {
                        Ok(200) => {
                            acknowledged.push(v);
                            v += 1;
                        }
                        Ok(503) => {
                            unavailable.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(status) => {
                            eprintln!("unexpected status {status}");
                            other_errors.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => {
                            eprintln!("send failed: {e}");
                            other_errors.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                acknowledged
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    // An immediate stop is a crash: connections are cut, nothing is flushed politely.
    let cluster_data = cluster.join("data");
    let pg_ctl = |args: &[&str]| {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin/pg_ctl"))
            .find(|p| p.exists())
            .expect("pg_ctl");
        let command = format!(
            "{} -D {} {}",
            bin.display(),
            cluster_data.display(),
            args.join(" ")
        );
        let status = if unsafe { libc::geteuid() } == 0 {
            Command::new("su")
                .args(["postgres", "-s", "/bin/bash", "-c", &command])
                .stdout(Stdio::null())
                .status()
        } else {
            Command::new("bash")
                .args(["-c", &command])
                .stdout(Stdio::null())
                .status()
        };
        assert!(status.unwrap().success(), "pg_ctl {args:?}");
    };
    pg_ctl(&["-m", "immediate", "stop"]);
    let down_at = unavailable.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let while_down = unavailable.load(Ordering::SeqCst) - down_at;
    pg_ctl(&[
        "-w",
        "-l",
        &cluster.join("server.log").display().to_string(),
        "start",
    ]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    let mut acknowledged = Vec::new();
    for sender in senders {
        acknowledged.extend(sender.await.unwrap());
    }
    // Whatever was acknowledged while the server was down waits in the spool.
    let deadline = Instant::now() + Duration::from_secs(30);
    let stored = |v: usize| -> i64 {
        query_store(
            Path::new(""),
            Some(&url),
            &format!("SELECT count(*) FROM notes WHERE text = 'message {v}'"),
        )
    };
    let mut missing: Vec<usize> = acknowledged.clone();
    while !missing.is_empty() && Instant::now() < deadline {
        missing.retain(|v| stored(*v) != 1);
        if !missing.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let health = client
        .get(format!("http://{}/healthz", instance.addr))
        .send()
        .await
        .unwrap()
        .status();
    eprintln!(
        "PostgreSQL restart: {} acknowledged, {} answered 503 ({} while down), {} other errors, missing {:?}",
        acknowledged.len(),
        unavailable.load(Ordering::SeqCst),
        while_down,
        other_errors.load(Ordering::SeqCst),
        missing
    );
    assert!(
        missing.is_empty(),
        "acknowledged but not stored: {missing:?}"
    );
    assert_eq!(other_errors.load(Ordering::SeqCst), 0, "only 200 and 503");
    assert!(
        while_down > 0 || acknowledged.len() > 10,
        "deliveries kept being answered"
    );
    assert_eq!(health, 200, "healthy again once the server is back");
}
