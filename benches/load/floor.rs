//! The floor of a webhook on this stack: a server that does only what the
//! contract makes every delivery do before its answer, and nothing else.
//!
//! It answers `POST /webhooks/jivo/{token}` by storing the body raw in the
//! service's own `deliveries` table (same database file, same statement,
//! keyed by the service's SHA-256 of the body), committed in WAL mode with
//! `synchronous=NORMAL` by one writer thread that commits whatever is
//! queued as one transaction, with checkpoints on a thread of their own;
//! then a fixed answer of the size of a real one. No parsing, no identity,
//! no merge, no card. `GET /healthz` answers `ok` without touching the
//! database.
//!
//! `--floor` runs the "accepted: email match" requests against it next to
//! the real service's baseline: if even this server cannot reach half of the
//! baseline, no implementation of the contract on this stack can.
//!
//! With [`Floor::NewLead`] it stores a new visitor's lead as well: its rows
//! (the lead with its name keys, its email and phone as the service
//! normalises them, the visitor id, the chat, one history row) in the
//! service's tables, after the reads that tell a new visitor from a known
//! one (its email, phone and visitor id looked up). No duplicate detection
//! (neither the neighbour reads nor the links), no merge plan, no decision,
//! no card: the fixed answer. `--floor` runs the "accepted: new visitor"
//! requests against it: what it leaves of the target of 5,000 new leads a
//! second is what duplicate detection and everything else may cost.
//!
//! With [`Floor::Existing`] it answers a `chat_accepted` of a known visitor
//! with the least the contract asks for: the body parsed, its email and
//! phone normalised as the service does it, the lead owning each looked up,
//! the lead's name, description and primary email and phone read, and an
//! answer made of them (`custom_data`, `contact_info`, `crm_link`); the
//! platform's visitor id linked to the lead (it identifies the lead from
//! then on); the raw delivery stored as above. No merge policy, no
//! conversation row, no history, no duplicate link, no log line. The reads
//! are the writer's, in its transaction, as in the service: a version that
//! read on the request threads, each with a read connection of its own,
//! was slower (8,900-10,400 instead of 11,900-12,800 a second at 1M leads:
//! each connection's page cache misses more). `--floor` runs the "accepted:
//! email match" requests against it: if it cannot reach half of the
//! baseline, an implementation of the contract on this stack and machine
//! cannot either.

use std::cell::Cell;
use std::convert::Infallible;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rusqlite::{Connection, params};
use tokio::sync::oneshot;
use warp::Filter;

/// What the floor server stores for each delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Floor {
    /// The body, raw.
    Raw,
    /// The body, and the lead of a new visitor.
    NewLead,
    /// The body, and a known visitor's lead found, linked and answered.
    Existing,
}

/// A body to store, the new lead read from it, and who waits for its commit.
struct Job {
    body: Bytes,
    lead: Option<NewLead>,
    visit: Option<Visit>,
    /// The answer once committed (`None`: the fixed one), or nothing if the
    /// batch failed.
    done: oneshot::Sender<Option<Option<String>>>,
}

/// A known visitor of a `chat_accepted`, normalised as the service does it.
struct Visit {
    email: Option<String>,
    phone: Option<String>,
    visitor: String,
}

impl Visit {
    /// Reads the visitor of a Jivo body; `None` without a visitor number.
    fn of(body: &[u8]) -> Option<Visit> {
        use crm_responder::crm::identity::{Email, Phone};
        #[derive(serde::Deserialize)]
        struct Body {
            visitor: Visitor,
        }
        #[derive(serde::Deserialize)]
        struct Visitor {
            email: Option<String>,
            phone: Option<String>,
            number: String,
        }
        let v = serde_json::from_slice::<Body>(body).ok()?.visitor;
        Some(Visit {
            email: v
                .email
                .as_deref()
                .and_then(Email::parse)
                .map(|e| e.normalized),
            phone: v
                .phone
                .as_deref()
                .and_then(|p| Phone::parse(p, phonenumber::country::Id::US))
                .map(|p| p.normalized),
            visitor: v.number,
        })
    }
}

/// A new visitor of a `chat_accepted`, normalised as the service does it.
struct NewLead {
    name: String,
    key: String,
    rev: String,
    /// (normalised, raw)
    email: (String, String),
    /// (normalised, raw)
    phone: (String, String),
    visitor: String,
    chat: String,
}

impl NewLead {
    /// Reads the visitor of a Jivo body; `None` unless it has a name, an
    /// email and a phone the service would accept (every new visitor of
    /// the benchmark has).
    fn of(body: &[u8]) -> Option<NewLead> {
        use crm_responder::crm::duplicates::reversed;
        use crm_responder::crm::identity::{Email, Phone, name_key};
        #[derive(serde::Deserialize)]
        struct Body {
            chat_id: serde_json::Value,
            visitor: Visitor,
        }
        #[derive(serde::Deserialize)]
        struct Visitor {
            name: String,
            email: String,
            phone: String,
            number: String,
        }
        let body: Body = serde_json::from_slice(body).ok()?;
        let v = body.visitor;
        let key = name_key(&v.name);
        Some(NewLead {
            rev: reversed(&key),
            key,
            email: (Email::parse(&v.email)?.normalized, v.email),
            phone: (
                Phone::parse(&v.phone, phonenumber::country::Id::US)?.normalized,
                v.phone,
            ),
            name: v.name,
            visitor: v.number,
            chat: body.chat_id.to_string(),
        })
    }
}

/// About the size of the service's answer to a `chat_accepted`.
const ANSWER: &str = concat!(
    r##"{"result":"ok","custom_data":[{"title":"Lead","content":"#1234567 Jane Doe","##,
    r##""link":"http://127.0.0.1:8080/leads/1234567"},{"title":"Status","content":"new"},"##,
    r##"{"title":"Possible duplicates","content":"none"}],"contact_info":{"name":"Jane Doe","##,
    r##""email":"jane.doe@example.com","phone":"+14155550123","description":"Visitor of"##,
    r##" example.com"},"crm_link":"http://127.0.0.1:8080/leads/1234567","enable_assign":true}"##
);

/// Serves on `port` with the database at `db` until killed.
pub fn serve(port: u16, db: &Path, floor: Floor) {
    let (tx, rx) = mpsc::channel::<Job>();
    let path = db.to_owned();
    std::thread::Builder::new()
        .name("crm-writer".into())
        .spawn(move || writer(&path, rx))
        .expect("writer thread");
    let path = db.to_owned();
    std::thread::spawn(move || checkpointer(&path));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let health = warp::path!("healthz").and(warp::get()).map(|| "ok");
        let store = warp::path!("webhooks" / "jivo" / String)
            .and(warp::post())
            .and(warp::body::bytes())
            .and_then(move |_token: String, body: Bytes| {
                let tx = tx.clone();
                async move {
                    let (done, committed) = oneshot::channel();
                    let lead = (floor == Floor::NewLead)
                        .then(|| NewLead::of(&body))
                        .flatten();
                    let visit = (floor == Floor::Existing)
                        .then(|| Visit::of(&body))
                        .flatten();
                    let _ = tx.send(Job {
                        body,
                        lead,
                        visit,
                        done,
                    });
                    let (status, answer) = match committed.await {
                        Ok(Some(answer)) => (
                            warp::http::StatusCode::OK,
                            answer.unwrap_or_else(|| ANSWER.to_owned()),
                        ),
                        _ => (warp::http::StatusCode::SERVICE_UNAVAILABLE, String::new()),
                    };
                    Ok::<_, Infallible>(warp::reply::with_status(
                        warp::reply::with_header(answer, "content-type", "application/json"),
                        status,
                    ))
                }
            });
        let service = warp::service(health.or(store));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new()).keep_alive(true);
        loop {
            let (stream, _) = listener.accept().await.expect("accept");
            let _ = stream.set_nodelay(true);
            let service = service.clone();
            let per_request = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let mut service = service.clone();
                async move { tower_service::Service::call(&mut service, req).await }
            });
            let connection = http.serve_connection(TokioIo::new(stream), per_request);
            tokio::spawn(connection);
        }
    });
}

fn open(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open database");
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    conn
}

/// Commits whatever is queued as one transaction, then answers it.
fn writer(path: &Path, rx: mpsc::Receiver<Job>) {
    let conn = open(path);
    conn.pragma_update(None, "cache_size", -16_000).unwrap();
    conn.wal_hook(Some(record_frames));
    let mut batch: Vec<Job> = Vec::with_capacity(256);
    let received_at = "2026-11-30T00:00:00.000Z";
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let mut ok = true;
        let mut answers = Vec::with_capacity(batch.len());
        for job in &batch {
            match store(&conn, job, received_at) {
                Ok(answer) => answers.push(answer),
                Err(_) => {
                    ok = false;
                    answers.push(None);
                }
            }
        }
        ok &= conn.execute_batch("COMMIT").is_ok();
        for (job, answer) in batch.drain(..).zip(answers) {
            let _ = job.done.send(ok.then_some(answer));
        }
        // Once the WAL is long, a checkpoint of the writer's own after each
        // batch until one copies it all, so that the WAL starts again from
        // its beginning (as the service's writer does) instead of growing:
        // a long WAL slows every page read (each searches the WAL's index).
        if WAL_FRAMES.with(Cell::get) >= 16_000 {
            let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok(r.get::<_, i64>(0)? == 0 && r.get::<_, i64>(1)? == r.get::<_, i64>(2)?)
            });
            if done.unwrap_or(false) {
                WAL_FRAMES.with(|f| f.set(0));
            }
        }
    }
}

thread_local! {
    /// Frames in the WAL after the writer's last commit.
    static WAL_FRAMES: Cell<i32> = const { Cell::new(0) };
}

fn record_frames(_: &rusqlite::hooks::Wal, frames: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.with(|f| f.set(frames));
    Ok(())
}

/// Stores one delivery, and its new lead if it has one and no lead has its
/// email, phone or visitor id; or finds, links and answers a known visitor's
/// lead. Returns the answer, if not the fixed one.
fn store(conn: &Connection, job: &Job, at: &str) -> rusqlite::Result<Option<String>> {
    let key = format!("jivo:{}", crm_responder::platforms::body_hash(&job.body));
    let (lead, answer) = match (&job.lead, &job.visit) {
        (Some(new), _) if !known(conn, new)? => (Some(create(conn, new, at)?), None),
        (_, Some(visit)) => match find(conn, visit)? {
            Some(found) => {
                conn.prepare_cached(
                    "INSERT INTO lead_visitors (platform, visitor_id, lead_id, created_at)
                     VALUES ('jivo', ?1, ?2, ?3) ON CONFLICT DO NOTHING",
                )?
                .execute(params![visit.visitor, found.lead, at])?;
                (Some(found.lead), Some(found.answer))
            }
            None => (None, None),
        },
        _ => (None, None),
    };
    conn.prepare_cached(
        "INSERT INTO deliveries (platform, event, idem_key, received_at, body, status, lead_id)
         VALUES (?1, ?2, ?3, ?4, ?5, 'applied', ?6)
         ON CONFLICT (idem_key) DO NOTHING",
    )?
    .execute(params![
        "jivo",
        "chat_accepted",
        key,
        at,
        &job.body[..],
        lead
    ])?;
    if let (Some(lead), Some(new)) = (lead, &job.lead) {
        let delivery = conn.last_insert_rowid();
        conn.prepare_cached(
            "INSERT INTO history (lead_id, at, field, old, new, delivery_id, source)
             VALUES (?1, ?2, 'created', NULL, ?3, ?4, 'jivo chat_accepted')",
        )?
        .execute(params![lead, at, new.name, delivery])?;
    }
    Ok(answer)
}

/// Whether a lead has the visitor's email, phone or visitor id.
fn known(conn: &Connection, new: &NewLead) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM lead_emails WHERE value = ?1")?
        .exists([&new.email.0])?
        || conn
            .prepare_cached("SELECT 1 FROM lead_phones WHERE value = ?1")?
            .exists([&new.phone.0])?
        || conn
            .prepare_cached(
                "SELECT 1 FROM lead_visitors WHERE platform = 'jivo' AND visitor_id = ?1",
            )?
            .exists([&new.visitor])?)
}

/// Creates the lead of a new visitor with its rows; returns its id.
fn create(conn: &Connection, new: &NewLead, at: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO leads (name, name_key, name_rev, status, created_at, updated_at)
         VALUES (?1, ?2, ?3, 'new', ?4, ?4)",
    )?
    .execute(params![new.name, new.key, new.rev, at])?;
    let lead = conn.last_insert_rowid();
    conn.prepare_cached(
        "INSERT INTO lead_emails (lead_id, value, raw, is_primary, created_at)
         VALUES (?1, ?2, ?3, 1, ?4)",
    )?
    .execute(params![lead, new.email.0, new.email.1, at])?;
    conn.prepare_cached(
        "INSERT INTO lead_phones (lead_id, value, raw, is_primary, created_at)
         VALUES (?1, ?2, ?3, 1, ?4)",
    )?
    .execute(params![lead, new.phone.0, new.phone.1, at])?;
    conn.prepare_cached(
        "INSERT INTO lead_visitors (platform, visitor_id, lead_id, created_at)
         VALUES ('jivo', ?1, ?2, ?3)",
    )?
    .execute(params![new.visitor, lead, at])?;
    conn.prepare_cached(
        "INSERT INTO conversations (lead_id, platform, chat_id, agent, closed, started_at, updated_at)
         VALUES (?1, 'jivo', ?2, NULL, 0, ?3, ?3)",
    )?
    .execute(params![lead, new.chat, at])?;
    Ok(lead)
}

/// Copies committed frames into the database every 10 ms and syncs it.
fn checkpointer(path: &Path) {
    let conn = open(path);
    // Opened once and never closed: closing a descriptor of the database
    // file would release this process's SQLite locks on it.
    let file = std::fs::File::open(path).expect("open database file");
    loop {
        std::thread::sleep(Duration::from_millis(10));
        let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        let _ = file.sync_all();
    }
}

/// A known visitor's lead and the answer the agent sees.
struct Found {
    lead: i64,
    answer: String,
}

/// The lead owning a known visitor's email or phone, and the answer made of
/// its name, description and primary email and phone.
fn find(conn: &Connection, visit: &Visit) -> rusqlite::Result<Option<Found>> {
    use rusqlite::OptionalExtension;
    let owner = |sql: &str, value: &Option<String>| -> rusqlite::Result<Option<i64>> {
        match value {
            Some(value) => conn
                .prepare_cached(sql)?
                .query_row([value], |r| r.get(0))
                .optional(),
            None => Ok(None),
        }
    };
    let by_email = owner(
        "SELECT lead_id FROM lead_emails WHERE value = ?1",
        &visit.email,
    )?;
    let by_phone = owner(
        "SELECT lead_id FROM lead_phones WHERE value = ?1",
        &visit.phone,
    )?;
    let Some(lead) = by_email.or(by_phone) else {
        return Ok(None);
    };
    let (name, description): (Option<String>, Option<String>) = conn
        .prepare_cached("SELECT name, description FROM leads WHERE id = ?1")?
        .query_row([lead], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let primary = |sql: &str| -> rusqlite::Result<Option<String>> {
        conn.prepare_cached(sql)?
            .query_row([lead], |r| r.get(0))
            .optional()
    };
    let email = primary("SELECT value FROM lead_emails WHERE lead_id = ?1 AND is_primary = 1")?;
    let phone = primary("SELECT value FROM lead_phones WHERE lead_id = ?1 AND is_primary = 1")?;
    let link = format!("http://127.0.0.1:8080/leads/{lead}");
    let title = format!("#{lead} {}", name.as_deref().unwrap_or(""));
    // The contract's `contact_info`: keys present only when known.
    let contact: serde_json::Map<String, serde_json::Value> = [
        ("name", name),
        ("email", email),
        ("phone", phone),
        ("description", description),
    ]
    .into_iter()
    .filter_map(|(key, value)| Some((key.to_owned(), value?.into())))
    .collect();
    let answer = serde_json::json!({
        "result": "ok",
        "custom_data": [{"title": "Lead", "content": title, "link": link}],
        "contact_info": contact,
        "enable_assign": true,
        "crm_link": link,
    });
    Ok(Some(Found {
        lead,
        answer: answer.to_string(),
    }))
}
