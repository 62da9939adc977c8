//! Erasure and subject export: a person who chatted on all three
//! platforms (folded, flagged as a possible duplicate, spooled, in a
//! backup) is erased for good, from every table, the database's bytes, the
//! spool and the log; replays and imports of old data do not bring them
//! back; a new chat afterwards is a new lead. Only admins erase and export.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

const SECRET: &str = "a-test-privacy-secret";

/// Erin, the person erased: every value that must leave no trace.
const ERIN_NAME: &str = "Erin Erasmussen";
const ERIN_EMAIL: &str = "erin.erasmussen@example.org";
const ERIN_PHONE: &str = "+1 650-253-0001";
const ERIN_PHONE_E164: &str = "+16502530001";
const ERIN_LINES: [&str; 4] = [
    "my secret jivo question about invoices",
    "rocket line: please call me after nine",
    "livechat line: the parcel never arrived",
    "spooled line: are you still there",
];

/// Bob, who stays.
const BOB_NAME: &str = "Bob Bystander";
const BOB_EMAIL: &str = "bob.bystander@example.net";
const BOB_PHONE: &str = "+1 408-498-7855";

/// The test config with the privacy secret and an admin user `boss`.
fn privacy_config(db: &Path, url: Option<&str>, spool: &Path) -> String {
    let text = store_config_text(db, url).replacen(
        "[database]\n",
        &format!("[database]\nspool_dir = \"{}\"\n", spool.display()),
        1,
    );
    format!(
        "{text}\n[[sales.users]]\nname = \"boss\"\npassword_hash = \"{SALES_HASH}\"\nrole = \"admin\"\n\n[privacy]\nsecret = \"{SECRET}\"\n"
    )
}

/// A Jivo `chat_finished` whose visitor says `line`.
fn jivo_chat(chat: u64, number: &str, name: &str, email: Option<&str>, line: &str) -> Value {
    let mut body = fixture("jivo/chat_finished.json");
    body["chat_id"] = chat.into();
    body["visitor"] = json!({"number": number, "name": name, "email": email});
    body["chat"]["messages"] = json!([
        {"message": line, "timestamp": 1_765_000_000, "type": "visitor"},
        {"message": "an agent answers", "timestamp": 1_765_000_010, "type": "agent", "agent_id": 1}
    ]);
    body["plain_messages"] = Value::Null;
    body["html_messages"] = Value::Null;
    body
}

fn rocketchat_session(
    room: &str,
    visitor: &str,
    name: &str,
    email: &str,
    phone: &str,
    line: &str,
) -> Value {
    json!({
        "type": "LivechatSession", "_id": room,
        "visitor": {"_id": visitor, "token": format!("tok-{visitor}"), "name": name,
                    "username": format!("guest-{visitor}"), "email": [{"address": email}],
                    "phone": [{"phoneNumber": phone}]},
        "agent": {"_id": "ag1", "username": "agent1", "name": "Agent One"},
        "messages": [
            {"_id": format!("{room}-1"), "username": format!("guest-{visitor}"), "msg": line,
             "ts": "2026-01-01T10:00:00.000Z"}
        ]
    })
}

fn livechat_chat(chat: &str, customer: &str, name: &str, phone: &str, line: &str) -> Value {
    json!({
        "webhook_id": "wh1", "secret_key": LIVECHAT_SECRET, "action": "incoming_chat",
        "organization_id": "org",
        "payload": {"chat": {"id": chat, "users": [
            {"id": customer, "type": "customer", "name": name, "phone_number": phone},
            {"id": "agent@example.com", "type": "agent", "name": "Agent Two"}],
          "thread": {"id": format!("{chat}-T"), "events": [
            {"id": format!("{chat}-e1"), "type": "message", "author_id": customer, "text": line,
             "created_at": "2026-01-01T11:00:00Z"}]}}}
    })
}

/// The service binary serving `config`, its log kept.
struct Server {
    child: Child,
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
    client: reqwest::Client,
}

impl Server {
    fn start(config: &Path) -> Server {
        let mut child = Command::new(BIN)
            .args(["--log-format", "json", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env_remove("CRM_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the binary");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        for (stream, tx) in [
            (
                Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
                Some(tx),
            ),
            (Box::new(child.stdout.take().unwrap()), None),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut tx = tx;
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let json: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                    if json["message"] == "serving"
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(json["addr"].as_str().unwrap_or("").to_owned());
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server reports its address");
        Server {
            child,
            addr,
            log,
            client: reqwest::Client::new(),
        }
    }

    async fn post(
        &self,
        path: &str,
        body: String,
        auth: Option<(&str, &str)>,
        header: Option<(&str, &str)>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .post(format!("http://{}{path}", self.addr))
            .header("content-type", "application/json")
            .body(body);
        if let Some((user, password)) = auth {
            request = request.basic_auth(user, Some(password));
        }
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn jivo(&self, body: &Value) -> (u16, Value) {
        self.post(
            &format!("/webhooks/jivo/{JIVO_TOKEN}"),
            body.to_string(),
            None,
            None,
        )
        .await
    }

    async fn rocketchat(&self, body: &Value) -> (u16, Value) {
        let token = ("X-RocketChat-Livechat-Token", ROCKETCHAT_TOKEN);
        self.post("/webhooks/rocketchat", body.to_string(), None, Some(token))
            .await
    }

    async fn livechat(&self, body: &Value) -> (u16, Value) {
        let auth = (LIVECHAT_USER, LIVECHAT_PASSWORD);
        self.post("/webhooks/livechat", body.to_string(), Some(auth), None)
            .await
    }

    async fn lead(&self, id: i64) -> Value {
        let response = self
            .client
            .get(format!("http://{}/api/leads/{id}", self.addr))
            .basic_auth("sales", Some(SALES_PASSWORD))
            .send()
            .await
            .unwrap();
        response.json().await.unwrap()
    }

    /// SIGTERM, and waits for the graceful end; answers the log.
    fn stop(mut self) -> Vec<String> {
        // SAFETY: kill(2) on the child this test started, by its id.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        self.child.wait().expect("reaped");
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

/// Runs the binary; its stdout, asserting success.
fn run(config: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("CRM_DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .expect("binary runs");
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every trace of Erin that must be gone, as bytes to look for.
fn erin_traces() -> Vec<String> {
    let mut traces = vec![
        ERIN_NAME.to_owned(),
        // As names are compared, and quoted in duplicate reasons.
        ERIN_NAME.to_lowercase(),
        ERIN_EMAIL.to_owned(),
        ERIN_PHONE.to_owned(),
        ERIN_PHONE_E164.to_owned(),
        "650-253-0001".to_owned(),
        "6502530001".to_owned(),
    ];
    traces.extend(ERIN_LINES.iter().map(|l| l.to_string()));
    traces
}

/// Which of `traces` occur in `bytes`, as text or as JSON-escaped text.
fn found_in(bytes: &[u8], traces: &[String]) -> Vec<String> {
    traces
        .iter()
        .filter(|t| memchr::memmem::find(bytes, t.as_bytes()).is_some())
        .cloned()
        .collect()
}

/// The files of a directory, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Every row of every table, each cell shown as text.
fn all_rows(db: &Path, url: Option<&str>) -> String {
    with_store(db, url, |conn| {
        let mut rows = contents(conn);
        // Blobs (raw bodies) are shown as bytes; read them as text too.
        rows.extend(
            conn.query_all("SELECT body FROM deliveries", &[], |r| r.get::<Vec<u8>>(0))
                .unwrap()
                .into_iter()
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
        );
        rows.join("\n")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_person_leaves_no_trace_and_old_data_does_not_bring_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crm.sqlite3");
    let url = fresh_store();
    let spool = dir.path().join("spool");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, privacy_config(&db, url.as_deref(), &spool)).unwrap();

    let server = Server::start(&config);
    // Erin chats anonymously on Jivo first: a lead of her own.
    let (status, anon) = server
        .jivo(&accepted(9101, "901", ERIN_NAME, None, None))
        .await;
    assert_eq!(status, 200, "{anon}");
    let anon = lead_id(&anon);
    server
        .jivo(&jivo_chat(9101, "901", ERIN_NAME, None, ERIN_LINES[0]))
        .await;
    // On Rocket.Chat she gives her email and phone: her lead.
    let (status, rc) = server
        .rocketchat(&rocketchat_session(
            "erin-room",
            "erin-rc",
            ERIN_NAME,
            ERIN_EMAIL,
            ERIN_PHONE,
            ERIN_LINES[1],
        ))
        .await;
    assert_eq!(status, 200, "{rc}");
    let erin = answered_lead(&rc);
    // Back on Jivo with her email: the anonymous lead is folded into hers.
    let (_, again) = server
        .jivo(&accepted(9102, "901", ERIN_NAME, Some(ERIN_EMAIL), None))
        .await;
    assert_eq!(lead_id(&again), erin);
    assert_eq!(server.lead(anon).await["merged_into"], erin, "folded");
    // LiveChat knows her by her phone only.
    let (_, lc) = server
        .livechat(&livechat_chat(
            "erin-lc",
            "erin-cust",
            ERIN_NAME,
            "(650) 253-0001",
            ERIN_LINES[2],
        ))
        .await;
    assert_eq!(answered_lead(&lc), erin);
    // A body that does not parse, carrying her email, is kept as failed.
    let broken = format!(
        r#"{{"event_name":"chat_accepted","chat_id":9105,"visitor":{{"email":"{ERIN_EMAIL}""#
    );
    let (status, _) = server
        .post(&format!("/webhooks/jivo/{JIVO_TOKEN}"), broken, None, None)
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        query_store::<i64>(
            &db,
            url.as_deref(),
            "SELECT count(*) FROM deliveries WHERE status = 'failed'"
        ),
        1
    );
    // Bob, on Jivo and Rocket.Chat, and a possible duplicate of Erin's name.
    let (_, bob) = server
        .jivo(&accepted(
            9201,
            "902",
            BOB_NAME,
            Some(BOB_EMAIL),
            Some(BOB_PHONE),
        ))
        .await;
    let bob = lead_id(&bob);
    server
        .jivo(&jivo_chat(
            9201,
            "902",
            BOB_NAME,
            Some(BOB_EMAIL),
            "bob asks about shipping",
        ))
        .await;
    server
        .rocketchat(&rocketchat_session(
            "bob-room",
            "bob-rc",
            BOB_NAME,
            BOB_EMAIL,
            BOB_PHONE,
            "bob again",
        ))
        .await;
    let (_, twin) = server
        .jivo(&accepted(
            9301,
            "903",
            "Erin Erasmusen",
            Some("e.twin@example.com"),
            None,
        ))
        .await;
    let twin = lead_id(&twin);
    let erin_lead = server.lead(erin).await;
    assert!(
        erin_lead["possible_duplicates"]
            .as_array()
            .unwrap()
            .contains(&json!(twin)),
        "{erin_lead}"
    );
    let service_log = server.stop();

    // Her subject export, asked by the folded lead's id: her lead, the
    // folded one, each delivery of hers (the failed one too), nobody else.
    let export: Value = serde_json::from_str(&run(
        &config,
        &["export-person", "--lead", &anon.to_string()],
    ))
    .unwrap();
    assert_eq!(export["leads"][0]["id"], erin);
    assert_eq!(export["folded_leads"][0]["id"], anon);
    // Jivo's two chats, Rocket.Chat's room, LiveChat's chat.
    assert_eq!(
        export["leads"][0]["conversations"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let text = export.to_string();
    for line in &ERIN_LINES[..3] {
        assert!(text.contains(line), "{line} missing from {text}");
    }
    let hers: i64 = query_store(
        &db,
        url.as_deref(),
        &format!(
            "SELECT count(*) FROM deliveries WHERE lead_id IN ({erin}, {anon}) OR status = 'failed'"
        ),
    );
    assert_eq!(export["deliveries"].as_array().unwrap().len() as i64, hers);
    for other in [
        BOB_NAME,
        BOB_EMAIL,
        "4084987855",
        "e.twin@example.com",
        "erin erasmusen",
        "Erin Erasmusen",
    ] {
        assert!(!text.contains(other), "{other} in her export: {text}");
    }

    // A backup taken before the erasure (SQLite's own command).
    let backup = dir.path().join("backup.sqlite3");
    if url.is_none() {
        run(&config, &["backup", backup.to_str().unwrap()]);
    }
    // A delivery of hers waits in the spool.
    let spooled = crm_responder::spool::Spool::open(&spool).unwrap();
    let body = jivo_chat(9103, "901", ERIN_NAME, Some(ERIN_EMAIL), ERIN_LINES[3]);
    spooled
        .put(
            crm_responder::event::Platform::Jivo,
            &crm_responder::event::now_rfc3339(),
            body.to_string().as_bytes(),
        )
        .unwrap();
    let leads_before: i64 = query_store(&db, url.as_deref(), "SELECT count(*) FROM leads");

    // A script erases her by email, without a terminal: --yes is needed.
    let refused = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["erase", "--email", ERIN_EMAIL])
        .env_remove("CRM_DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    let said = run(&config, &["erase", "--email", ERIN_EMAIL, "--yes"]);
    assert!(
        said.contains(&format!("lead(s) {}", [anon, erin].iter().min().unwrap())),
        "{said}"
    );
    assert!(
        said.contains("1 spooled") && said.contains("tombstones"),
        "{said}"
    );
    assert!(
        said.contains(" deliveries") && said.contains(" messages"),
        "{said}"
    );
    assert_eq!(
        query_store::<i64>(&db, url.as_deref(), "SELECT count(*) FROM leads"),
        leads_before - 2,
        "her lead and the folded one are gone, no other"
    );

    // No row anywhere holds her; Bob and the twin are untouched.
    let traces = erin_traces();
    let rows = all_rows(&db, url.as_deref());
    assert_eq!(found_in(rows.as_bytes(), &traces), Vec::<String>::new());
    assert!(rows.contains(BOB_EMAIL) && rows.contains("e.twin@example.com"));
    assert!(rows.contains("bob asks about shipping"));
    assert_eq!(
        query_store::<i64>(&db, url.as_deref(), "SELECT count(*) FROM duplicate_links"),
        0,
        "her duplicate link went with her"
    );
    let tombstones: i64 = query_store(&db, url.as_deref(), "SELECT count(*) FROM tombstones");
    assert!(
        tombstones >= 6,
        "email, phone, visitor ids, chats: {tombstones}"
    );
    // Nor any byte of the database files, free pages and WAL included, nor the spool.
    let scanned_files = |label: &str| {
        for path in files(dir.path()) {
            if path == backup || path == config || path.extension().is_some_and(|e| e == "csv") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(
                found_in(&bytes, &traces),
                Vec::<String>::new(),
                "{label}: {} holds her",
                path.display()
            );
        }
    };
    scanned_files("after the erasure");
    assert_eq!(spooled.depth(), 0);
    // The service's log never held her.
    let log = service_log.join("\n");
    assert_eq!(
        found_in(log.as_bytes(), &traces),
        Vec::<String>::new(),
        "{log}"
    );

    // Replaying everything, and the backup, skips her (and says so).
    let said = run(&config, &["replay", "--all"]);
    assert!(said.contains("0 skipped"), "{said}");
    if url.is_none() {
        let said = run(
            &config,
            &["replay", "--all", "--from", backup.to_str().unwrap()],
        );
        let skipped: u64 = said
            .lines()
            .next()
            .unwrap_or_default()
            .split(", ")
            .find_map(|part| part.strip_suffix(" skipped (people erased since)"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{said}"));
        assert!(
            skipped >= 5,
            "her deliveries of the backup are skipped: {said}"
        );
    }
    // An old CSV export with her in it, written before the erasure, too.
    let csv = dir.path().join("old-crm.csv");
    std::fs::write(
        &csv,
        format!(
            "name,email,phone\n{ERIN_NAME},{ERIN_EMAIL},{ERIN_PHONE}\nCarl New,carl@example.com,\n"
        ),
    )
    .unwrap();
    let yesterday = std::time::SystemTime::now() - Duration::from_secs(86_400);
    std::fs::File::options()
        .write(true)
        .open(&csv)
        .unwrap()
        .set_modified(yesterday)
        .unwrap();
    let said = run(&config, &["import", csv.to_str().unwrap()]);
    assert!(
        said.contains("1 created") && said.contains("skipped 1 rows"),
        "{said}"
    );
    let rows = all_rows(&db, url.as_deref());
    assert_eq!(found_in(rows.as_bytes(), &traces), Vec::<String>::new());
    scanned_files("after replays and import");
    assert_eq!(
        with_store(&db, url.as_deref(), |c| c
            .query_row(
                "SELECT count(*) FROM leads WHERE id = ?1",
                crm_responder::args![bob],
                |r| r.get::<i64>(0)
            )
            .unwrap()),
        1
    );

    // She chats again after the erasure: a new lead.
    let server = Server::start(&config);
    let (status, back) = server
        .jivo(&accepted(9104, "901", ERIN_NAME, Some(ERIN_EMAIL), None))
        .await;
    assert_eq!(status, 200, "{back}");
    let new = lead_id(&back);
    assert!(new != erin && new != anon, "a new lead, not a restored one");
    let lead = server.lead(new).await;
    assert_eq!(lead["conversations"].as_array().unwrap().len(), 1, "{lead}");
    let log = server.stop().join("\n");
    assert_eq!(
        found_in(log.as_bytes(), &traces),
        Vec::<String>::new(),
        "{log}"
    );
}

/// The race of a spooled delivery and an erasure: the drainer read the
/// file just before the erasure removed the spool's files of the person,
/// and applies it just after. Played without timing: the file is put into
/// the spool after the erasure, dated before it, as the drainer would hold
/// it. It is checked against the tombstones in the transaction that would
/// apply it, and dropped; one received after the erasure is a new lead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spooled_delivery_the_erasure_overtook_is_dropped_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crm.sqlite3");
    let url = fresh_store();
    let spool_dir = dir.path().join("spool");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, privacy_config(&db, url.as_deref(), &spool_dir)).unwrap();
    let server = Server::start(&config);
    let (status, answer) = server
        .jivo(&accepted(9601, "961", ERIN_NAME, Some(ERIN_EMAIL), None))
        .await;
    assert_eq!(status, 200, "{answer}");
    let erin = lead_id(&answer);
    let deliveries: i64 = query_store(&db, url.as_deref(), "SELECT count(*) FROM deliveries");

    // Her chat ends while storage is down: the delivery the drainer holds.
    let overtaken_line = "a line the erasure overtook";
    let overtaken = jivo_chat(9601, "961", ERIN_NAME, Some(ERIN_EMAIL), overtaken_line);
    let received_before = crm_responder::event::now_rfc3339();
    let erased = server
        .client
        .delete(format!("http://{}/api/leads/{erin}", server.addr))
        .basic_auth("boss", Some(SALES_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(erased.status(), 200);
    let erased: Value = erased.json().await.unwrap();
    assert_eq!(erased["erased"], json!([erin]), "{erased}");
    assert_eq!(erased["removed"]["deliveries"], 1, "{erased}");
    let spool = crm_responder::spool::Spool::open(&spool_dir).unwrap();
    spool
        .put(
            crm_responder::event::Platform::Jivo,
            &received_before,
            overtaken.to_string().as_bytes(),
        )
        .unwrap();
    // And one she sends after the erasure, spooled too.
    let again = accepted(9602, "962", ERIN_NAME, Some(ERIN_EMAIL), None);
    spool
        .put(
            crm_responder::event::Platform::Jivo,
            &crm_responder::event::now_rfc3339(),
            again.to_string().as_bytes(),
        )
        .unwrap();

    // The drainer empties the spool.
    let mut waited = 0;
    while spool.depth() > 0 {
        assert!(waited < 600, "the spool was not drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    let log = server.stop();

    // The overtaken delivery was not applied: not stored, no lead from it.
    let rows = all_rows(&db, url.as_deref());
    assert!(!rows.contains(overtaken_line), "applied after the erasure");
    assert_eq!(
        query_store::<i64>(&db, url.as_deref(), "SELECT count(*) FROM deliveries"),
        deliveries,
        "her first delivery erased, the one after the erasure stored"
    );
    let owners: Vec<i64> = with_store(&db, url.as_deref(), |c| {
        c.query_all(
            "SELECT lead_id FROM lead_emails WHERE value = ?1",
            crm_responder::args![ERIN_EMAIL],
            |r| r.get(0),
        )
        .unwrap()
    });
    assert_eq!(
        owners.len(),
        1,
        "only the lead of her chat after the erasure"
    );
    let chats: Vec<String> = with_store(&db, url.as_deref(), |c| {
        c.query_all(
            "SELECT chat_id FROM conversations WHERE lead_id = ?1",
            crm_responder::args![owners[0]],
            |r| r.get(0),
        )
        .unwrap()
    });
    // (SQLite may give the new lead the erased one's id again.)
    assert_eq!(
        chats,
        ["9602"],
        "a new lead, of her chat after the erasure alone"
    );
    // The log counts the drop and says nothing of her.
    let dropped: Vec<Value> = log
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["dropped"].is_number())
        .collect();
    assert_eq!(dropped.len(), 1, "{log:#?}");
    assert_eq!(dropped[0]["dropped"], 1);
    assert_eq!(
        found_in(
            log.join("\n").as_bytes(),
            &[ERIN_EMAIL.to_owned(), overtaken_line.to_owned()]
        ),
        Vec::<String>::new()
    );
}

/// A client signed in as `name` (password [`SALES_PASSWORD`]), cookies kept.
async fn signed_in(app: &TestApp, name: &str) -> reqwest::Client {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = client
        .post(app.url("/login"))
        .form(&[
            ("name", name),
            ("password", SALES_PASSWORD),
            ("next", "/leads"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{name} signs in");
    client
}

/// The service with the privacy secret and an admin user `boss`.
async fn privacy_app() -> TestApp {
    spawn_app_with(|config| {
        let mut boss = config.sales.users[0].clone();
        boss.name = "boss".into();
        boss.role = crm_responder::staff::Role::Admin;
        config.sales.users.push(boss);
        config.privacy.secret = Some(crm_responder::config::Secret::new(SECRET));
    })
    .await
}

#[tokio::test]
async fn only_admins_erase_and_export_and_the_export_holds_each_delivery_of_the_person_only() {
    let app = privacy_app().await;
    // A lead of a similar name, there first: hers is flagged against it.
    let (_, twin) = app
        .jivo(&accepted(
            9400,
            "940",
            "Erin Erasmusen",
            Some("e.twin@example.com"),
            None,
        ))
        .await;
    let twin = lead_id(&twin);
    let (_, jivo) = app
        .jivo(&accepted(9401, "941", ERIN_NAME, Some(ERIN_EMAIL), None))
        .await;
    let erin = lead_id(&jivo);
    app.jivo(&jivo_chat(
        9401,
        "941",
        ERIN_NAME,
        Some(ERIN_EMAIL),
        ERIN_LINES[0],
    ))
    .await;
    let (_, rc) = app
        .rocketchat(&rocketchat_session(
            "erin-room2",
            "erin-rc2",
            ERIN_NAME,
            ERIN_EMAIL,
            ERIN_PHONE,
            ERIN_LINES[1],
        ))
        .await;
    assert_eq!(answered_lead(&rc), erin);
    let (_, bob) = app
        .jivo(&accepted(
            9402,
            "942",
            BOB_NAME,
            Some(BOB_EMAIL),
            Some(BOB_PHONE),
        ))
        .await;
    let bob = lead_id(&bob);
    let theirs: Vec<i64> = app.store(|c| {
        c.query_all(
            "SELECT id FROM deliveries WHERE lead_id = ?1 ORDER BY id",
            crm_responder::args![erin],
            |r| r.get(0),
        )
        .unwrap()
    });
    assert_eq!(theirs.len(), 3);

    let as_user = |method: reqwest::Method, path: String, user: &'static str| {
        app.client
            .request(method, app.url(&path))
            .basic_auth(user, Some(SALES_PASSWORD))
    };
    // Sales may not.
    let r = as_user(
        reqwest::Method::DELETE,
        format!("/api/leads/{erin}"),
        "sales",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    let r = as_user(
        reqwest::Method::GET,
        format!("/api/leads/{erin}/export"),
        "sales",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(app.lead(erin).await["id"], erin, "nothing erased");

    // The admin's export: each of her deliveries, nothing of Bob's.
    let r = as_user(
        reqwest::Method::GET,
        format!("/api/leads/{erin}/export"),
        "boss",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("attachment")
    );
    let export: Value = r.json().await.unwrap();
    let exported: Vec<i64> = export["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_i64().unwrap())
        .collect();
    assert_eq!(exported, theirs);
    assert_eq!(export["leads"][0]["id"], erin);
    assert_eq!(export["leads"][0]["emails"][0]["value"], ERIN_EMAIL);
    let text = export.to_string();
    for line in &ERIN_LINES[..2] {
        assert!(text.contains(line), "{line} missing from the export");
    }
    assert_eq!(export["leads"][0]["possible_duplicates"], json!([twin]));
    for other in [
        BOB_NAME,
        BOB_EMAIL,
        "4084987855",
        "e.twin@example.com",
        "Erin Erasmusen",
        "erin erasmusen",
    ] {
        assert!(!text.contains(other), "{other} in Erin's export: {text}");
    }
    // The CLI says the same.
    let config = app.db_path.with_file_name("cli.toml");
    std::fs::write(
        &config,
        privacy_config(
            &app.db_path,
            app.db_url.as_deref(),
            &app.db_path.with_file_name("spool"),
        ),
    )
    .unwrap();
    let printed: Value = serde_json::from_str(&run(
        &config,
        &["export-person", "--phone", "(650) 253-0001"],
    ))
    .unwrap();
    assert_eq!(printed["deliveries"], export["deliveries"]);

    // The admin erases her: counts of what went; then she is not found.
    let r = as_user(
        reqwest::Method::DELETE,
        format!("/api/leads/{erin}"),
        "boss",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let erased: Value = r.json().await.unwrap();
    assert_eq!(erased["erased"], json!([erin]));
    assert_eq!(erased["removed"]["deliveries"], 3);
    assert_eq!(erased["removed"]["leads"], 1);
    assert_eq!(erased["removed"]["emails"], 1);
    assert_eq!(erased["removed"]["phones"], 1);
    assert!(erased["tombstones"].as_u64().unwrap() >= 4, "{erased}");
    let (status, _) = app.api(&format!("/api/leads/{erin}")).await;
    assert_eq!(status, 404);
    // While the service runs, its SQLite files (the WAL included) hold no
    // byte of her either.
    if app.db_url.is_none() {
        let mut traces = erin_traces();
        traces.truncate(9);
        for name in ["crm.sqlite3", "crm.sqlite3-wal"] {
            let path = app.db_path.with_file_name(name);
            let bytes = std::fs::read(&path).unwrap_or_default();
            assert_eq!(found_in(&bytes, &traces), Vec::<String>::new(), "{name}");
        }
    }
    let r = as_user(
        reqwest::Method::DELETE,
        format!("/api/leads/{erin}"),
        "boss",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(app.lead(bob).await["emails"][0]["value"], BOB_EMAIL);
}

#[tokio::test]
async fn an_admin_erases_from_the_lead_page_after_confirming() {
    let app = privacy_app().await;
    let (_, jivo) = app
        .jivo(&accepted(9501, "951", ERIN_NAME, Some(ERIN_EMAIL), None))
        .await;
    let erin = lead_id(&jivo);
    let sales = signed_in(&app, "sales").await;
    let page = sales
        .get(app.url(&format!("/leads/{erin}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("erase-form"), "no erase form for sales");

    let boss = signed_in(&app, "boss").await;
    let page = boss
        .get(app.url(&format!("/leads/{erin}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("erase-form") && page.contains(&format!("/api/leads/{erin}/export")));
    // The export link works with the admin's session.
    let r = boss
        .get(app.url(&format!("/api/leads/{erin}/export")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let export: Value = r.json().await.unwrap();
    assert_eq!(export["leads"][0]["id"], erin);
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).unwrap() + marker.len();
    let csrf = &page[start..start + page[start..].find('"').unwrap()];
    let path = format!("/leads/{erin}/erase");
    // Without the CSRF token: refused; without the box ticked: not erased.
    let r = boss
        .post(app.url(&path))
        .form(&[("confirm", "erase")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = boss
        .post(app.url(&path))
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(app.lead(erin).await["id"], erin);
    // Sales cannot, even with their own token.
    let sales_page = sales
        .get(app.url(&format!("/leads/{erin}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let start = sales_page.find(marker).unwrap() + marker.len();
    let sales_csrf = &sales_page[start..start + sales_page[start..].find('"').unwrap()];
    let r = sales
        .post(app.url(&path))
        .form(&[("csrf", sales_csrf), ("confirm", "erase")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Confirmed: gone.
    let r = boss
        .post(app.url(&path))
        .form(&[("csrf", csrf), ("confirm", "erase")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Erased"));
    let (status, _) = app.api(&format!("/api/leads/{erin}")).await;
    assert_eq!(status, 404);
}

/// A SQLite file still holding raw deliveries of a person erased after
/// they arrived (their tombstone is there): `migrate-store` leaves those
/// deliveries behind, and says how many.
#[tokio::test]
async fn migrate_store_leaves_old_deliveries_of_erased_people_behind() {
    let Some(server) = postgres_server() else {
        eprintln!("skipped: set CRM_TEST_POSTGRES to run");
        return;
    };
    let app = spawn_app_with(|config| {
        config.database.url = None;
        config.privacy.secret = Some(crm_responder::config::Secret::new(SECRET));
    })
    .await;
    app.jivo(&accepted(9601, "961", ERIN_NAME, Some(ERIN_EMAIL), None))
        .await;
    app.jivo(&accepted(9602, "962", BOB_NAME, Some(BOB_EMAIL), None))
        .await;
    let dir = app.stop().await;
    let db = dir.path().join("crm.sqlite3");
    let config = dir.path().join("migrate.toml");
    std::fs::write(
        &config,
        privacy_config(&db, None, &dir.path().join("spool")),
    )
    .unwrap();
    // Her tombstone, as an erasure leaves it, dated after her delivery.
    let parsed = crm_responder::config::Config::load(&config).unwrap();
    let key = crm_responder::privacy::Key::of(&parsed).unwrap();
    let email = crm_responder::privacy::Identifier::Email(ERIN_EMAIL.into());
    with_store(&db, None, |conn| {
        conn.execute(
            "INSERT INTO tombstones (hash, kind, erased_at, key_id) VALUES (?1, 'email', ?2, ?3)",
            crm_responder::args![key.hash(&email), "2999-01-01T00:00:00.000Z", key.id()],
        )
        .unwrap()
    });
    let target = fresh_postgres_database(&server).await;
    let out = {
        let (config, target) = (config.clone(), target.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(BIN)
                .arg("--config")
                .arg(&config)
                .args(["migrate-store", "--to", &target])
                .env("RUST_LOG", "warn")
                .env_remove("CRM_DATABASE_URL")
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("skipped 1 deliveries"), "{said}");
    let bodies = with_store(&db, Some(&target), |conn| {
        conn.query_all("SELECT body FROM deliveries", &[], |r| r.get::<Vec<u8>>(0))
            .unwrap()
    });
    assert_eq!(bodies.len(), 1);
    let text = String::from_utf8_lossy(&bodies[0]);
    assert!(
        text.contains(BOB_EMAIL) && !text.contains(ERIN_EMAIL),
        "{text}"
    );
    assert_eq!(
        query_store::<i64>(&db, Some(&target), "SELECT count(*) FROM tombstones"),
        1
    );
}
