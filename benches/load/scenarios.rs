//! The benchmark scenarios: what each request carries. Every request is a
//! different visitor or chat; nothing is one body replayed.

use std::path::Path;

use serde_json::json;

use crate::client::{get, post, post_with};
use crate::datagen::{person, phone_as_typed};

const JIVO: &str = "/webhooks/jivo/bench-jivo-token";

/// One scenario: a name, its open-loop rate, and request `k` against `n` leads.
pub struct Scenario {
    /// Shown in the table.
    pub name: &'static str,
    /// Requests per second of the open-loop phase.
    pub rate: f64,
    /// Builds request `k` for a database of `n` leads.
    pub request: fn(u64, u64) -> Vec<u8>,
}

/// Every scenario, baseline first.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "baseline /healthz",
        rate: 1000.0,
        request: |_, _| get("/healthz"),
    },
    Scenario {
        name: "accepted: email match",
        rate: 1000.0,
        request: existing_by_email,
    },
    Scenario {
        name: "accepted: phone match",
        rate: 1000.0,
        request: existing_by_phone,
    },
    Scenario {
        name: "accepted: new visitor",
        rate: 500.0,
        request: new_visitor,
    },
    Scenario {
        name: "accepted: flags a pair",
        rate: 500.0,
        request: flags_pair,
    },
    Scenario {
        name: "finished: 30 messages",
        rate: 500.0,
        request: finished,
    },
    Scenario {
        name: "mix of platforms",
        rate: 1000.0,
        request: mix,
    },
];

/// The name of the floor scenario (served by floor.rs, not the service).
pub const FLOOR_NAME: &str = "floor: raw store only";

/// The name of the new-lead floor scenario (served by floor.rs).
pub const FLOOR_NEW_NAME: &str = "floor: new lead's rows only";

/// The name of the existing-lead floor scenario (served by floor.rs).
pub const FLOOR_EXISTING_NAME: &str = "floor: known visitor's least";

/// `--floor`: the service's baseline, then the requests of "accepted: email
/// match" and of "accepted: new visitor" against the floor servers.
pub const FLOOR: [Scenario; 4] = [
    Scenario {
        name: "baseline /healthz",
        rate: 1000.0,
        request: |_, _| get("/healthz"),
    },
    Scenario {
        name: FLOOR_NAME,
        rate: 1000.0,
        request: existing_by_email,
    },
    Scenario {
        name: FLOOR_EXISTING_NAME,
        rate: 1000.0,
        request: existing_by_email,
    },
    Scenario {
        name: FLOOR_NEW_NAME,
        rate: 500.0,
        request: new_visitor,
    },
];

/// A well-spread index into 1..=n for request k.
fn existing(n: u64, k: u64) -> u64 {
    crate::datagen::Rng::new(k ^ 0x5EED).next() % n + 1
}

fn accepted(
    chat: u64,
    number: String,
    name: &str,
    email: Option<&str>,
    phone: Option<&str>,
) -> String {
    json!({
        "event_name": "chat_accepted", "chat_id": chat, "widget_id": "3948", "user_token": null,
        "visitor": {"name": name, "email": email, "phone": phone, "number": number, "chats_count": 1},
        "agent": {"id": "2016", "name": "Thomas Anderson"},
        "session": {"geoip": {"country": "United States"}, "ip_addr": "208.80.152.201"},
        "page": {"url": "http://example.com/", "title": "Page title"}
    })
    .to_string()
}

fn existing_by_email(n: u64, k: u64) -> Vec<u8> {
    let i = existing(n, k);
    let p = person(i);
    post(
        JIVO,
        &accepted(
            10_000_000 + k,
            format!("b{k}"),
            &p.name,
            Some(&p.email),
            None,
        ),
    )
}

fn existing_by_phone(n: u64, k: u64) -> Vec<u8> {
    let i = existing(n, k);
    let p = person(i);
    let typed = phone_as_typed(&p.phone, k + 1);
    post(
        JIVO,
        &accepted(20_000_000 + k, format!("c{k}"), &p.name, None, Some(&typed)),
    )
}

fn new_visitor(n: u64, k: u64) -> Vec<u8> {
    let p = person(n + 1 + (k % (1 << 39)) + (k >> 40) * (1 << 30));
    let typed = phone_as_typed(&p.phone, k);
    post(
        JIVO,
        &accepted(
            30_000_000 + k,
            format!("n{k}"),
            &p.name,
            Some(&p.email),
            Some(&typed),
        ),
    )
}

/// A visitor giving one lead's email and another's phone: it lands on the
/// first and the two are flagged, a new possible-duplicate link each time.
fn flags_pair(n: u64, k: u64) -> Vec<u8> {
    let (one, other) = (person(existing(n, k)), person(existing(n, k ^ 0xF1A6)));
    let typed = phone_as_typed(&other.phone, k);
    post(
        JIVO,
        &accepted(
            50_000_000 + k,
            format!("p{k}"),
            &one.name,
            Some(&one.email),
            Some(&typed),
        ),
    )
}

fn finished(n: u64, k: u64) -> Vec<u8> {
    let p = person(existing(n, k));
    let messages: Vec<_> = (0..30)
        .map(|m| {
            json!({"message": format!("message {m} about order {k}: is it in stock?"),
                   "timestamp": 1_700_000_000 + m, "type": if m % 2 == 0 { "visitor" } else { "agent" }})
        })
        .collect();
    let body = json!({
        "event_name": "chat_finished", "chat_id": 40_000_000 + k, "widget_id": "3948",
        "visitor": {"name": p.name, "email": p.email, "number": format!("f{k}")},
        "agents": [{"id": "1", "name": "Thomas Anderson"}],
        "chat": {"messages": messages, "blacklisted": false, "rate": null}
    });
    post(JIVO, &body.to_string())
}

const ROCKETCHAT_TOKEN: &str = "x-rocketchat-livechat-token: bench-rocketchat-token";

/// Rocket.Chat: a closed room of an existing visitor with its transcript.
fn rocketchat_session(n: u64, k: u64) -> Vec<u8> {
    let p = person(existing(n, k));
    let messages: Vec<_> = (0..6)
        .map(|m| {
            let agent = m % 2 == 1;
            json!({"_id": format!("rm{k}-{m}"), "msg": format!("question {m} about order {k}"),
                   "ts": "2026-01-02T10:16:07.230Z", "u": {"_id": if agent { "agent1" } else { "visitor1" },
                   "username": if agent { "user1" } else { "guest" }},
                   "agentId": if agent { Some("agent1") } else { None }})
        })
        .collect();
    let body = json!({
        "_id": format!("room{k}"), "label": p.name, "type": "LivechatSession",
        "createdAt": "2026-01-02T10:16:07.230Z", "lastMessageAt": "2026-01-02T10:26:07.230Z",
        "tags": ["bench"], "customFields": {"plan": "pro"},
        "visitor": {"_id": format!("rv{k}"), "token": format!("rt{k}"), "name": p.name,
                    "email": [{"address": p.email}], "phone": [{"phoneNumber": phone_as_typed(&p.phone, k)}]},
        "agent": {"_id": "agent1", "username": "user1", "name": "User One"},
        "messages": messages
    });
    post_with("/webhooks/rocketchat", ROCKETCHAT_TOKEN, &body.to_string())
}

/// LiveChat v3: an incoming chat of a new customer with two messages.
fn livechat_incoming(n: u64, k: u64) -> Vec<u8> {
    let p = person(n + (1 << 33) + k);
    let customer = format!("lc-{k}");
    let body = json!({
        "webhook_id": format!("wh{k}"), "secret_key": "bench-livechat-secret", "action": "incoming_chat",
        "license_id": 1234,
        "payload": {"chat": {"id": format!("LC{k}"),
            "users": [{"id": customer, "type": "customer", "name": p.name, "email": p.email},
                      {"id": "agent@example.com", "type": "agent", "name": "Agent Smith"}],
            "thread": {"id": format!("T{k}"), "tags": ["sales"], "events": [
                {"id": format!("e{k}-1"), "type": "message", "author_id": customer, "text": "hello", "created_at": "2026-01-02T10:16:07.230Z"},
                {"id": format!("e{k}-2"), "type": "message", "author_id": "agent@example.com", "text": "hi, how can I help?", "created_at": "2026-01-02T10:16:09.230Z"}
            ]}}}
    });
    post("/webhooks/livechat", &body.to_string())
}

fn mix(n: u64, k: u64) -> Vec<u8> {
    match k % 10 {
        0..=2 => existing_by_email(n, k),
        3 => existing_by_phone(n, k),
        4 | 5 => new_visitor(n, k),
        6 => finished(n, k),
        7 | 8 => rocketchat_session(n, k),
        _ => livechat_incoming(n, k),
    }
}

/// The `[database]` keys of a run on the SQLite file `db` (its spool
/// beside it).
pub fn sqlite(db: &Path) -> String {
    format!("path = \"{}\"", db.display())
}

/// The `[database]` keys of an instance on PostgreSQL: the database's URL
/// and the instance's own spool directory.
pub fn postgres(url: &str, spool: &Path) -> String {
    format!("url = \"{url}\"\nspool_dir = \"{}\"", spool.display())
}

/// The server's config for a run; `database` is the body of `[database]`
/// ([`sqlite`] or [`postgres`]).
pub fn config(port: u16, database: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
max_body_bytes = 1048576

[database]
{database}

[jivo]
token = "bench-jivo-token"
enable_assign = true

[rocketchat]
token = "bench-rocketchat-token"

[livechat]
username = "bench"
password = "bench-livechat-password"
secret_key = "bench-livechat-secret"

[merge]
match_order = ["email", "phone"]
default_region = "US"
phone = "keep_both"
email = "keep_both"
primary = "existing"
name = "keep_existing"
description = "keep_existing"

[duplicates]
enabled = true
threshold = 0.92

[sales]
users = []

# The statuses datagen.rs gives its leads.
[pipeline]
statuses = ["new", "contacted", "qualified", "customer", "lost"]
"#
    )
}

/// A copy of a seed database and its config file under `dir`, named for
/// this process; removed with its spool when dropped (also on a panic).
pub struct WorkCopy {
    /// The database copy.
    pub db: std::path::PathBuf,
    /// Where its config is written.
    pub config: std::path::PathBuf,
    spool: std::path::PathBuf,
}

impl WorkCopy {
    /// Copies `seed` to `dir`, as `{name}-{pid}.sqlite3` beside `{name}-{pid}.toml`.
    pub fn of(seed: &std::path::Path, dir: &std::path::Path, name: &str) -> WorkCopy {
        let pid = std::process::id();
        let copy = WorkCopy {
            db: dir.join(format!("{name}-{pid}.sqlite3")),
            config: dir.join(format!("{name}-{pid}.toml")),
            spool: dir.join("spool"),
        };
        copy.remove();
        std::fs::copy(seed, &copy.db).expect("copy seed database");
        copy
    }

    fn remove(&self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.db.display()));
        }
        let _ = std::fs::remove_file(&self.config);
        let _ = std::fs::remove_dir_all(&self.spool);
    }
}

impl Drop for WorkCopy {
    fn drop(&mut self) {
        self.remove();
    }
}
