//! Outbound webhooks: a real receiver on loopback that verifies every
//! Standard Webhooks signature on its own (HMAC-SHA256 of
//! `id.timestamp.body` under the base64 key after `whsec_`, timestamp
//! within five minutes, as the reference libraries check), in front of the
//! real service on both stores.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use crm_responder::config::{OutboundConfig, Secret};
use crm_responder::outbound::EventKind;
use crm_responder::store::outbox::{self, OutboundEvent, Subscriptions};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use warp::Filter;

use crate::helpers::*;
use crate::reload::Served;

/// The endpoint's secret: 32 bytes, base64, after `whsec_`.
const SECRET: &str = "whsec_dGVzdC1vdXRib3VuZC1zaWduaW5nLWtleS0zMmJ5dGVz";
/// What the receiver answers instead of a status while it "hangs".
const HANG: u16 = 0;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Message {
    id: String,
    verified: bool,
    body: Value,
    /// The status it was answered with.
    answered: u16,
    /// The request as received, for the reference verifier.
    headers: Vec<(String, String)>,
    raw: Bytes,
}

impl Message {
    fn kind(&self) -> &str {
        self.body["type"].as_str().unwrap_or_default()
    }

    fn lead(&self) -> i64 {
        self.body["data"]["lead"]["id"].as_i64().unwrap()
    }
}

/// A webhook receiver on 127.0.0.1: records every request, checks its
/// signature, and answers what the test tells it to.
struct Receiver {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Message>>>,
    answer: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Receiver::on(listener)
    }

    fn on(listener: tokio::net::TcpListener) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(AtomicU16::new(200));
        let route = {
            let (seen, answer) = (seen.clone(), answer.clone());
            warp::post()
                .and(warp::header::headers_cloned())
                .and(warp::body::bytes())
                .then(move |headers: warp::http::HeaderMap, body: Bytes| {
                    let (seen, answer) = (seen.clone(), answer.clone());
                    async move {
                        let header = |name: &str| {
                            headers
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned()
                        };
                        let id = header("webhook-id");
                        let verified = verify(
                            &id,
                            &header("webhook-timestamp"),
                            &header("webhook-signature"),
                            &body,
                        );
                        let mut status = answer.load(Ordering::SeqCst);
                        let kept = headers
                            .iter()
                            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_owned())))
                            .collect();
                        seen.lock().unwrap().push(Message {
                            id,
                            verified,
                            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                            answered: status,
                            headers: kept,
                            raw: body,
                        });
                        if status == HANG {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            status = 200;
                        }
                        warp::http::StatusCode::from_u16(status).unwrap()
                    }
                })
        };
        let task = tokio::spawn(warp::serve(route).incoming(listener).run());
        Receiver {
            addr,
            seen,
            answer,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn answer(&self, status: u16) {
        self.answer.store(status, Ordering::SeqCst);
    }

    fn seen(&self) -> Vec<Message> {
        self.seen.lock().unwrap().clone()
    }

    /// The messages answered 2xx, in arrival order.
    fn delivered(&self) -> Vec<Message> {
        self.seen()
            .into_iter()
            .filter(|m| (200..300).contains(&m.answered))
            .collect()
    }

    /// Waits (at most a minute) until `done` holds for what arrived.
    async fn wait_until(&self, what: &str, done: impl Fn(&[Message]) -> bool) -> Vec<Message> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let seen = self.seen();
            if done(&seen) {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "waited in vain for {what}: {seen:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `n` distinct messages were delivered; answers them.
    async fn wait_delivered(&self, n: usize) -> Vec<Message> {
        self.wait_until(&format!("{n} deliveries"), |seen| {
            let mut ids: Vec<&str> = seen
                .iter()
                .filter(|m| (200..300).contains(&m.answered))
                .map(|m| m.id.as_str())
                .collect();
            ids.dedup();
            ids.len() >= n
        })
        .await;
        self.delivered()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The receiving side of Standard Webhooks, written from the spec: the
/// key is the base64 after `whsec_`; any `v1,` signature in the
/// space-separated header must equal the HMAC-SHA256 of
/// `{id}.{timestamp}.{body}`; the timestamp must be within five minutes.
fn verify(id: &str, timestamp: &str, signatures: &str, body: &[u8]) -> bool {
    let Ok(ts) = timestamp.parse::<i64>() else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if id.is_empty() || (now - ts).abs() > 300 {
        return false;
    }
    let key = STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    signatures
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|s| s == expected)
}

/// Runs the official Standard Webhooks Python verifier (vendored under
/// `tests/vendor`, standard library only) over `messages`; answers the
/// event types it accepted, in order. It fails the test on any refusal.
fn reference_verifier_accepts(messages: &[Message]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("messages.json");
    let list: Vec<Value> = messages
        .iter()
        .map(|m| {
            let headers: serde_json::Map<String, Value> = m
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                .collect();
            json!({ "headers": headers, "body_base64": STANDARD.encode(&m.raw) })
        })
        .collect();
    std::fs::write(&file, serde_json::to_vec(&list).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vendor/verify_messages.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(SECRET)
        .arg(&file)
        .output()
        .expect("python3 runs the reference verifier");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the reference verifier refused: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .map(|l| l.trim_start_matches("ok ").to_owned())
        .collect()
}

/// An endpoint at `url` receiving `events`, retrying quickly.
fn endpoint(url: &str, events: &[&str]) -> OutboundConfig {
    OutboundConfig {
        name: "bridge".into(),
        url: url.into(),
        secret: Secret::new(SECRET),
        events: events.iter().map(|e| e.to_string()).collect(),
        max_retry_hours: 72.0,
        first_retry_ms: 50,
        timeout_ms: 1_000,
    }
}

const ALL: [&str; 7] = [
    "lead.created",
    "lead.updated",
    "lead.merged",
    "lead.unmerged",
    "conversation.closed",
    "note.added",
    "lead.erased",
];

/// `[[outbound]]` as config text.
fn endpoint_text(url: &str, events: &[&str]) -> String {
    let events: Vec<String> = events.iter().map(|e| format!("{e:?}")).collect();
    format!(
        "\n[[outbound]]\nname = \"bridge\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\nevents = [{}]\nfirst_retry_ms = 50\ntimeout_ms = 1000\n",
        events.join(", ")
    )
}

/// A Jivo `chat_finished` for the chat and visitor of [`accepted`].
fn finished(chat: u64, number: &str, email: &str) -> Value {
    let mut body = fixture("jivo/chat_finished.json");
    body["chat_id"] = chat.into();
    body["visitor"]["number"] = number.into();
    body["visitor"]["email"] = email.into();
    body["visitor"]["phone"] = Value::Null;
    body["visitor"]["name"] = Value::Null;
    body["visitor"]["description"] = Value::Null;
    body
}

/// A Jivo `offline_message` from the visitor of [`accepted`].
fn offline(number: &str, email: &str, text: &str, id: u64) -> Value {
    let mut body = fixture("jivo/offline_message.json");
    body["visitor"]["number"] = number.into();
    body["visitor"]["email"] = email.into();
    body["visitor"]["phone"] = Value::Null;
    body["visitor"]["name"] = Value::Null;
    body["visitor"]["description"] = Value::Null;
    body["user_token"] = Value::Null;
    body["message"] = text.into();
    body["offline_message_id"] = id.into();
    body
}

#[tokio::test]
async fn every_event_type_arrives_signed_verified_and_in_order() {
    let receiver = Receiver::start().await;
    let config = endpoint(&receiver.url(), &ALL);
    let app = spawn_app_with(|c| c.outbound = vec![config.clone()]).await;

    let (status, answer) = app
        .jivo(&accepted(
            501,
            "v501",
            "Ada Lane",
            Some("ada@example.com"),
            None,
        ))
        .await;
    assert_eq!(status, 200, "{answer}");
    let lead = lead_id(&answer);
    assert_eq!(
        app.jivo(&finished(501, "v501", "ada@example.com")).await.0,
        200
    );
    let (status, _) = app
        .jivo(&offline("v501", "ada@example.com", "Call me back", 9_501))
        .await;
    assert_eq!(status, 200);
    let patched = app
        .client
        .patch(app.url(&format!("/api/leads/{lead}")))
        .basic_auth("sales", Some(SALES_PASSWORD))
        .json(&json!({ "status": "contacted" }))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let noted = app
        .client
        .post(app.url(&format!("/api/leads/{lead}/notes")))
        .basic_auth("sales", Some(SALES_PASSWORD))
        .json(&json!({ "text": "Wants the pro plan" }))
        .send()
        .await
        .unwrap();
    assert_eq!(noted.status(), 201);
    // Merge, unmerge and erasure are other operations' to enqueue; the
    // outbox renders and sends their events as it does these.
    app.store(|sql| {
        outbox::install(Some(Subscriptions::of(std::slice::from_ref(&config))));
        if let Some(lite) = sql.as_sqlite() {
            lite.busy_timeout(Duration::from_secs(10)).unwrap();
        }
        sql.batch(sql.dialect().pick("BEGIN IMMEDIATE", "BEGIN"))
            .unwrap();
        for kind in [EventKind::LeadMerged, EventKind::LeadUnmerged] {
            outbox::enqueue(
                sql,
                &OutboundEvent::new(kind, lead).with("other", json!(lead + 1000)),
            )
            .unwrap();
        }
        outbox::enqueue(sql, &OutboundEvent::new(EventKind::LeadErased, lead)).unwrap();
        sql.batch("COMMIT").unwrap();
        outbox::install(None);
    });

    let delivered = receiver.wait_delivered(8).await;
    assert!(delivered.iter().all(|m| m.verified), "{delivered:#?}");
    let kinds: Vec<&str> = delivered.iter().map(Message::kind).collect();
    assert_eq!(reference_verifier_accepts(&delivered), kinds);
    assert_eq!(
        kinds,
        [
            "lead.created",
            "conversation.closed",
            "note.added",
            "lead.updated",
            "note.added",
            "lead.merged",
            "lead.unmerged",
            "lead.erased"
        ]
    );
    assert!(delivered.iter().all(|m| m.lead() == lead));
    let created = &delivered[0].body;
    assert_eq!(
        created["data"]["lead"]["emails"][0]["value"],
        "ada@example.com"
    );
    assert_eq!(created["data"]["lead"]["name"], "Ada Lane");
    assert!(created["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(delivered[1].body["data"]["conversation"]["chat_id"], "501");
    assert_eq!(delivered[1].body["data"]["conversation"]["closed"], true);
    assert_eq!(delivered[2].body["data"]["note"]["text"], "Call me back");
    assert_eq!(delivered[3].body["data"]["lead"]["status"], "contacted");
    assert_eq!(delivered[4].body["data"]["note"]["author"], "staff sales");
    assert_eq!(delivered[5].body["data"]["other"], lead + 1000);
    assert_eq!(delivered[7].body["data"], json!({ "lead": { "id": lead } }));

    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("crm_outbound_deliveries_total{endpoint=\"bridge\",outcome=\"sent\"}")
        })
        .unwrap_or_else(|| panic!("{metrics}"));
    assert_eq!(line.rsplit(' ').next(), Some("8"), "{line}");
    assert!(metrics.contains("crm_outbound_backlog_age_seconds{endpoint=\"bridge\"}"));
}

#[tokio::test]
async fn a_receiver_failing_for_a_while_gets_every_event_with_one_id_in_order_per_lead() {
    let receiver = Receiver::start().await;
    receiver.answer(500);
    let config = endpoint(&receiver.url(), &ALL);
    let app = spawn_app_with(|c| c.outbound = vec![config.clone()]).await;
    for (chat, who) in [(601, "ann"), (602, "bob")] {
        let email = format!("{who}@example.com");
        let number = format!("v{chat}");
        assert_eq!(
            app.jivo(&accepted(chat, &number, who, Some(&email), None))
                .await
                .0,
            200
        );
        assert_eq!(app.jivo(&finished(chat, &number, &email)).await.0, 200);
        assert_eq!(
            app.jivo(&offline(&number, &email, &format!("{who} again"), chat))
                .await
                .0,
            200
        );
    }
    // Each lead's first event is tried again and again; nothing after it.
    let failing = receiver
        .wait_until("retries of both leads' first events", |seen| {
            ["ann", "bob"].iter().all(|who| {
                seen.iter()
                    .filter(|m| m.body["data"]["lead"]["name"] == *who)
                    .count()
                    >= 3
            })
        })
        .await;
    receiver.answer(200);
    let delivered = receiver.wait_delivered(6).await;
    let seen = receiver.seen();
    assert!(seen.iter().all(|m| m.verified));
    // Retries are signed afresh, and the reference verifier takes them all.
    assert_eq!(reference_verifier_accepts(&seen).len(), seen.len());
    assert!(
        failing.iter().all(|m| m.kind() == "lead.created"),
        "a later event was sent before the first one was delivered: {failing:#?}"
    );
    let leads: std::collections::BTreeSet<i64> = delivered.iter().map(Message::lead).collect();
    assert_eq!(leads.len(), 2);
    for lead in leads {
        // Delivered in the order they happened, each exactly once.
        let order: Vec<&str> = delivered
            .iter()
            .filter(|m| m.lead() == lead)
            .map(Message::kind)
            .collect();
        assert_eq!(order, ["lead.created", "conversation.closed", "note.added"]);
        // No event of the lead was tried before the one before it was delivered.
        let tried: Vec<&Message> = seen.iter().filter(|m| m.lead() == lead).collect();
        for pair in tried.windows(2) {
            if pair[0].id != pair[1].id {
                assert!((200..300).contains(&pair[0].answered), "{tried:#?}");
            }
        }
        // Every retry of an event carried its id and its body.
        let first = tried[0];
        let retries: Vec<&&Message> = tried.iter().filter(|m| m.id == first.id).collect();
        assert!(retries.len() >= 4, "{retries:#?}");
        assert!(retries.iter().all(|m| m.body == first.body));
    }
    let pending: i64 =
        app.sql("SELECT count(*) FROM outbound_deliveries WHERE state <> 'delivered'");
    assert_eq!(pending, 0);
}

#[tokio::test]
async fn a_redelivered_jivo_webhook_sends_nothing_new() {
    let receiver = Receiver::start().await;
    let app = spawn_app_with(|c| c.outbound = vec![endpoint(&receiver.url(), &ALL)]).await;
    let body = accepted(701, "v701", "Cleo Park", Some("cleo@example.com"), None);
    let closing = finished(701, "v701", "cleo@example.com");
    for _ in 0..3 {
        assert_eq!(app.jivo(&body).await.0, 200);
        assert_eq!(app.jivo(&closing).await.0, 200);
    }
    // Events are written with the change, so the count is final now.
    let events: i64 = app.sql("SELECT count(*) FROM outbound_events");
    assert_eq!(events, 2);
    let delivered = receiver.wait_delivered(2).await;
    let kinds: Vec<&str> = delivered.iter().map(Message::kind).collect();
    assert_eq!(kinds, ["lead.created", "conversation.closed"]);
}

#[tokio::test]
async fn no_event_is_written_when_no_endpoint_subscribes_to_its_type() {
    let receiver = Receiver::start().await;
    let app =
        spawn_app_with(|c| c.outbound = vec![endpoint(&receiver.url(), &["note.added"])]).await;
    assert_eq!(
        app.jivo(&accepted(
            801,
            "v801",
            "Dan Roe",
            Some("dan@example.com"),
            None
        ))
        .await
        .0,
        200
    );
    assert_eq!(
        app.jivo(&finished(801, "v801", "dan@example.com")).await.0,
        200
    );
    let events: i64 = app.sql("SELECT count(*) FROM outbound_events");
    assert_eq!(events, 0);
}

/// A config file for the CLI, on the test app's store, with the endpoint.
fn cli_config(dir: &Path, app: &TestApp, url: &str) -> std::path::PathBuf {
    let path = dir.join("cli.toml");
    let text = store_config_text(&app.db_path, app.db_url.as_deref()) + &endpoint_text(url, &ALL);
    std::fs::write(&path, text).unwrap();
    path
}

fn status_of(config: &Path) -> Value {
    let out = cli(config, &["outbound", "status", "--json"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    status["endpoints"][0].clone()
}

#[tokio::test]
async fn an_endpoint_answering_410_is_disabled_keeps_its_backlog_and_is_enabled_again() {
    let receiver = Receiver::start().await;
    receiver.answer(410);
    let app = spawn_app_with(|c| {
        c.outbound = vec![endpoint(&receiver.url(), &ALL)];
        c.sales.users.push(crm_responder::config::SalesUser {
            name: "boss".into(),
            password_hash: Secret::new(SALES_HASH),
            role: crm_responder::staff::Role::Admin,
        });
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = cli_config(dir.path(), &app, &receiver.url());
    assert_eq!(
        app.jivo(&accepted(
            901,
            "v901",
            "Eve Hart",
            Some("eve@example.com"),
            None
        ))
        .await
        .0,
        200
    );
    receiver
        .wait_until("the 410", |seen| !seen.is_empty())
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while status_of(&config)["state"] != "disabled" {
        assert!(Instant::now() < deadline, "{}", status_of(&config));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        app.jivo(&finished(901, "v901", "eve@example.com")).await.0,
        200
    );
    let status = status_of(&config);
    assert_eq!(status["pending"], 2, "{status}");
    assert!(
        status["last_error"].as_str().unwrap().contains("410"),
        "{status}"
    );

    // The admin page shows it; a sales user may not see it.
    let page = |user: &'static str| {
        app.client
            .get(app.url("/outbound"))
            .basic_auth(user, Some(SALES_PASSWORD))
            .send()
    };
    assert_eq!(page("sales").await.unwrap().status(), 403);
    let html = page("boss").await.unwrap().text().await.unwrap();
    assert!(
        html.contains("disabled") && html.contains("bridge"),
        "{html}"
    );
    assert!(!html.contains(SECRET.trim_start_matches("whsec_")));

    receiver.answer(200);
    let out = cli(&config, &["outbound", "enable", "bridge"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("enabled"));
    let delivered = receiver.wait_delivered(2).await;
    let kinds: Vec<&str> = delivered.iter().map(Message::kind).collect();
    assert_eq!(kinds, ["lead.created", "conversation.closed"]);
    assert_eq!(
        delivered[0].id,
        receiver.seen()[0].id,
        "the 410'd event is sent again under its id"
    );
}

#[tokio::test]
async fn replay_sends_the_events_since_a_date_again_with_their_ids() {
    let receiver = Receiver::start().await;
    let app = spawn_app_with(|c| c.outbound = vec![endpoint(&receiver.url(), &ALL)]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = cli_config(dir.path(), &app, &receiver.url());
    assert_eq!(
        app.jivo(&accepted(
            951,
            "v951",
            "Fay Lin",
            Some("fay@example.com"),
            None
        ))
        .await
        .0,
        200
    );
    let first = receiver.wait_delivered(1).await;
    let out = cli(
        &config,
        &[
            "outbound",
            "replay",
            "--endpoint",
            "bridge",
            "--since",
            "2000-01-01",
        ],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("1 events"),
        "{out:?}"
    );
    receiver
        .wait_until("the replay", |seen| {
            seen.iter().filter(|m| m.answered == 200).count() == 2
        })
        .await;
    let again = receiver.delivered();
    assert_eq!(again[1].id, first[0].id);
    assert_eq!(again[1].body, first[0].body);
    assert!(again[1].verified);
}

#[tokio::test]
async fn an_event_committed_while_the_receiver_was_down_arrives_after_a_sigkill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crm.sqlite3");
    let store = fresh_store();
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    // Nothing listens there yet: every attempt fails to connect.
    let receiver_port = free_port();
    let url = format!("http://127.0.0.1:{receiver_port}/hook");
    let port = free_port();
    let config = dir.path().join("config.toml");
    let text = store_config_text(&db, store.as_deref())
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
        + &endpoint_text(&url, &ALL);
    std::fs::write(&config, &text).unwrap();

    let served = Served::start(&config, port);
    served.wait_for_log("serving", 1);
    let answer = reqwest::Client::new()
        .post(format!("{}/webhooks/jivo/{JIVO_TOKEN}", served.base))
        .body(accepted(991, "v991", "Gil Moss", Some("gil@example.com"), None).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let lead = lead_id(&answer.json().await.unwrap());
    // Committed, tried and failed: then the process dies.
    let deadline = Instant::now() + Duration::from_secs(30);
    while query_store::<i64>(
        &db,
        store.as_deref(),
        "SELECT coalesce(max(attempts), 0) FROM outbound_deliveries",
    ) < 1
    {
        assert!(Instant::now() < deadline, "no attempt was made");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(served); // SIGKILL

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", receiver_port))
        .await
        .unwrap();
    let receiver = Receiver::on(listener);
    let served = Served::start(&config, port);
    served.wait_for_log("serving", 1);
    let delivered = receiver.wait_delivered(1).await;
    assert!(delivered[0].verified);
    assert_eq!(delivered[0].kind(), "lead.created");
    assert_eq!(delivered[0].lead(), lead);
    drop(served);
}

#[tokio::test]
async fn two_instances_on_one_database_send_each_event_once() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crm.sqlite3");
    let store = fresh_store();
    let mut instances = Vec::new();
    for name in ["a", "b"] {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join(format!("{name}.toml"));
        let text = store_config_text(&db, store.as_deref())
            .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
            .replacen(
                "[database]\n",
                &format!(
                    "[database]\nspool_dir = \"{}\"\n",
                    dir.path().join(name).display()
                ),
                1,
            )
            + &endpoint_text(&receiver.url(), &ALL);
        std::fs::write(&config, text).unwrap();
        let served = Served::start(&config, port);
        served.wait_for_log("serving", 1);
        instances.push(served);
    }
    let client = reqwest::Client::new();
    for i in 0..20u64 {
        let base = &instances[i as usize % 2].base;
        let email = format!("twin{i}@example.com");
        let body = accepted(1_100 + i, &format!("t{i}"), "Twin", Some(&email), None);
        let answer = client
            .post(format!("{base}/webhooks/jivo/{JIVO_TOKEN}"))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    let delivered = receiver.wait_delivered(20).await;
    let ids: std::collections::BTreeSet<&str> = delivered.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids.len(), 20);
    assert_eq!(
        delivered.len(),
        20,
        "an event was sent twice: {delivered:#?}"
    );
    assert!(
        delivered
            .iter()
            .all(|m| m.verified && m.kind() == "lead.created")
    );
}

#[tokio::test]
async fn staff_merges_unmerges_erasures_and_exports_are_forwarded_and_audited() {
    let receiver = Receiver::start().await;
    let config = endpoint(&receiver.url(), &ALL);
    let app = spawn_app_with(|c| {
        c.outbound = vec![config.clone()];
        let mut boss = c.sales.users[0].clone();
        boss.name = "boss".into();
        boss.role = crm_responder::staff::Role::Admin;
        c.sales.users.push(boss);
        c.privacy.secret = Some(Secret::new("a-test-privacy-secret"));
    })
    .await;
    let lead_of = |answer: &Value| lead_id(answer);
    let (_, first) = app
        .jivo(&accepted(
            601,
            "v601",
            "Maria Garcia",
            Some("maria@example.com"),
            None,
        ))
        .await;
    let (_, second) = app
        .jivo(&accepted(
            602,
            "v602",
            "Maria Garcia",
            Some("maria.g@example.net"),
            None,
        ))
        .await;
    let (a, b) = (lead_of(&first), lead_of(&second));
    let post = |path: String, body: Value| {
        app.client
            .post(app.url(&path))
            .basic_auth("sales", Some(SALES_PASSWORD))
            .json(&body)
            .send()
    };
    assert_eq!(
        post(format!("/api/leads/{a}/merge"), json!({ "other": b }))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        post(format!("/api/leads/{a}/unmerge"), json!({ "lead": b }))
            .await
            .unwrap()
            .status(),
        200
    );
    let delivered = receiver.wait_delivered(4).await;
    let kinds: Vec<&str> = delivered.iter().map(Message::kind).collect();
    assert_eq!(
        kinds,
        [
            "lead.created",
            "lead.created",
            "lead.merged",
            "lead.unmerged"
        ]
    );
    assert!(delivered.iter().all(|m| m.verified), "{delivered:#?}");
    assert_eq!(delivered[2].body["data"]["lead"]["id"], a);
    assert_eq!(delivered[2].body["data"]["absorbed"]["id"], b);
    assert_eq!(delivered[3].body["data"]["restored"]["id"], b);

    let erased = app
        .client
        .delete(app.url(&format!("/api/leads/{b}")))
        .basic_auth("boss", Some(SALES_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(erased.status(), 200);
    let delivered = receiver.wait_delivered(5).await;
    assert_eq!(delivered[4].kind(), "lead.erased");
    assert_eq!(delivered[4].body["data"], json!({ "lead": { "id": b } }));
    // Nothing the outbox keeps about the erased lead holds more than its id.
    let bodies: Vec<String> = app.store(|db| {
        db.query_all(
            "SELECT body FROM outbound_events WHERE lead_id = ?1",
            crm_responder::args![b],
            |r| r.get(0),
        )
        .unwrap()
    });
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert!(!bodies[0].contains("maria.g@example.net"), "{bodies:?}");

    let exported = app
        .client
        .get(app.url(&format!("/api/leads/{a}/export")))
        .basic_auth("boss", Some(SALES_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(exported.status(), 200);

    // Each of those staff actions is in the audit log, without an email.
    let audit: Vec<String> = app.store(|db| {
        db.query_all(
            "SELECT action || ' ' || coalesce(target, '') FROM audit_log ORDER BY id",
            &[],
            |r| r.get(0),
        )
        .unwrap()
    });
    for action in [
        "merge lead",
        "unmerge lead",
        "erase leads",
        &format!("export_person leads {a}"),
    ] {
        assert!(
            audit.iter().any(|e| e.starts_with(action)),
            "{action}: {audit:?}"
        );
    }
    assert!(audit.iter().all(|e| !e.contains('@')), "{audit:?}");
}
