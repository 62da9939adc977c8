//! The transactional outbox of outbound webhooks: events written in the
//! transaction of the change that causes them, and the delivery rows the
//! worker (`crate::outbound::worker`) claims, settles and reports on.
//!
//! [`enqueue`] is the one way in. It costs a thread-local read when no
//! endpoint subscribes to the event's type; otherwise it renders the body
//! (the lead as the transaction sees it, in the JSON API's shape), stores
//! it once and adds a pending delivery per subscribed endpoint. The
//! subscriptions are the `[[outbound]]` tables given to [`Db::subscribe`]
//! (at start, on every reload, before an operator command writes); the
//! writer thread installs them for the jobs it runs, so that any store
//! function can enqueue without being handed the config.

use std::cell::RefCell;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::sql::Sql;
use super::view::{self, Found};
use super::{Db, DbError};
use crate::args;
use crate::config::OutboundConfig;
use crate::event::now_rfc3339;
use crate::outbound::EventKind;

/// Which endpoints receive which event types.
#[derive(Debug, Default)]
pub struct Subscriptions {
    /// Every subscribed type, one bit per [`EventKind`]: the whole cost
    /// of [`enqueue`] when the event's bit is not set.
    wanted: u8,
    /// Each endpoint's name and types, in `[[outbound]]` order.
    endpoints: Vec<(String, u8)>,
}

impl Subscriptions {
    /// The subscriptions `[[outbound]]` sets.
    pub fn of(endpoints: &[OutboundConfig]) -> Arc<Subscriptions> {
        let endpoints: Vec<(String, u8)> = endpoints
            .iter()
            .map(|e| (e.name.clone(), e.kinds().iter().fold(0, |m, k| m | k.bit())))
            .collect();
        Arc::new(Subscriptions {
            wanted: endpoints.iter().fold(0, |m, (_, mask)| m | mask),
            endpoints,
        })
    }
}

thread_local! {
    /// The subscriptions of the jobs this thread runs (the writer's).
    static CURRENT: RefCell<Option<Arc<Subscriptions>>> = const { RefCell::new(None) };
}

/// Makes `subscriptions` those of every [`enqueue`] on this thread (the
/// writer calls it before each batch; a test or a command writing on a
/// connection of its own may too).
pub fn install(subscriptions: Option<Arc<Subscriptions>>) {
    CURRENT.with(|c| {
        let mut current = c.borrow_mut();
        let same = match (&*current, &subscriptions) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            *current = subscriptions;
        }
    });
}

/// Whether any endpoint subscribes to `kind` (so a caller can skip
/// gathering what only an event needs).
pub fn wanted(kind: EventKind) -> bool {
    CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .is_some_and(|s| s.wanted & kind.bit() != 0)
    })
}

/// The endpoints subscribed to `kind` now.
fn subscribers(kind: EventKind) -> Vec<String> {
    CURRENT.with(|c| match &*c.borrow() {
        Some(s) if s.wanted & kind.bit() != 0 => s
            .endpoints
            .iter()
            .filter(|(_, mask)| mask & kind.bit() != 0)
            .map(|(name, _)| name.clone())
            .collect(),
        _ => Vec::new(),
    })
}

impl Db {
    /// Makes `endpoints` the subscriptions of every write job from now on.
    pub fn subscribe(&self, endpoints: &[OutboundConfig]) {
        *self.shared.outbound.lock().unwrap() = Some(Subscriptions::of(endpoints));
    }
}

/// Something that happened to a lead, to be forwarded.
#[derive(Debug, Clone)]
pub struct OutboundEvent {
    /// Its type.
    pub kind: EventKind,
    /// The lead it is about: `data.lead` (the survivor of a merge).
    pub lead: i64,
    /// Members of `data` beside `lead` (`note`; `absorbed` for a merge …).
    pub data: Map<String, Value>,
    /// For `conversation.closed`: the conversation (platform, chat id),
    /// put in `data.conversation` as the lead shows it.
    pub conversation: Option<(String, String)>,
}

impl OutboundEvent {
    /// An event of `kind` about `lead`, with nothing else in `data`.
    pub fn new(kind: EventKind, lead: i64) -> OutboundEvent {
        OutboundEvent {
            kind,
            lead,
            data: Map::new(),
            conversation: None,
        }
    }

    /// Adds `data.{key}`.
    pub fn with(mut self, key: &str, value: Value) -> OutboundEvent {
        self.data.insert(key.to_owned(), value);
        self
    }
}

/// Milliseconds since the epoch, as `next_at` and leases count time.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A message id for `webhook-id`: unique, kept across retries.
fn message_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("msg_{hex}")
}

/// Writes `event` to the outbox in the caller's transaction, with a
/// pending delivery for every endpoint subscribed to its type; nothing
/// (and no read) when none is. Answers the event's row id, if written.
///
/// Call it after the change, in the same write job: the body shows the
/// lead as the change left it, and a rolled-back change sends nothing.
pub fn enqueue(conn: &dyn Sql, event: &OutboundEvent) -> Result<Option<i64>, DbError> {
    let endpoints = subscribers(event.kind);
    if endpoints.is_empty() {
        return Ok(None);
    }
    let lead = match event.kind {
        // An erased person's data must not leave in the event about it.
        EventKind::LeadErased => json!({ "id": event.lead }),
        _ => match view::lead(conn, event.lead)? {
            Found::Lead(lead) => serde_json::to_value(&lead)
                .map_err(|e| DbError::Internal(format!("lead {} as JSON: {e}", event.lead)))?,
            Found::MergedInto(survivor) => json!({ "id": event.lead, "merged_into": survivor }),
            Found::Missing => json!({ "id": event.lead }),
        },
    };
    let mut data = Map::new();
    if let Some((platform, chat)) = &event.conversation {
        let shown = lead["conversations"].as_array().and_then(|list| {
            list.iter()
                .find(|c| c["platform"] == platform.as_str() && c["chat_id"] == chat.as_str())
        });
        data.insert(
            "conversation".into(),
            shown
                .cloned()
                .unwrap_or_else(|| json!({ "platform": platform, "chat_id": chat })),
        );
    }
    data.insert("lead".into(), lead);
    data.extend(event.data.clone());
    let at = now_rfc3339();
    let body = json!({ "type": event.kind.as_str(), "timestamp": at, "data": data }).to_string();
    let id = conn
        .insert_id(
            "INSERT INTO outbound_events (msg_id, type, lead_id, created_at, body)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            args![message_id(), event.kind.as_str(), event.lead, at, body],
        )?
        .ok_or_else(|| DbError::Internal("outbound event not inserted".into()))?;
    let now = now_ms();
    for endpoint in &endpoints {
        conn.execute(
            "INSERT INTO outbound_deliveries (event_id, endpoint, lead_id, state, first_at, next_at)
             VALUES (?1, ?2, ?3, 'pending', ?4, ?4)",
            args![id, endpoint, event.lead, now],
        )?;
    }
    Ok(Some(id))
}

/// Removes every outbound event about `lead` (pending, delivered or
/// failed: their bodies hold the person's data), for an erasure. Answers
/// how many events went. Call it before enqueueing `lead.erased`.
pub fn forget_lead(conn: &dyn Sql, lead: i64) -> Result<usize, DbError> {
    conn.execute(
        "DELETE FROM outbound_deliveries WHERE lead_id = ?1",
        args![lead],
    )?;
    conn.execute(
        "DELETE FROM outbound_events WHERE lead_id = ?1",
        args![lead],
    )
}

/// A delivery the worker has claimed: what to send, and to whom.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The event's row.
    pub event_id: i64,
    /// The lead (its ordering lane).
    pub lead: i64,
    /// `webhook-id`.
    pub msg_id: String,
    /// The body, exactly as signed.
    pub body: String,
    /// Attempts made before this one.
    pub attempts: i64,
    /// When the delivery was first due (ms), for the retry deadline.
    pub first_at: i64,
}

/// Whether `endpoint` has a delivery due now (a read, before claiming
/// through the writer).
pub fn has_due(conn: &dyn Sql, endpoint: &str, now: i64) -> Result<bool, DbError> {
    conn.exists(
        "SELECT 1 FROM outbound_deliveries
         WHERE endpoint = ?1 AND state = 'pending' AND next_at <= ?2
           AND (lease_until IS NULL OR lease_until < ?2)
         LIMIT 1",
        args![endpoint, now],
    )
}

/// Claims up to `limit` deliveries of `endpoint` that are due, each the
/// oldest pending one of its lead (a lead's next event waits until the
/// one before it is delivered or failed), leasing them until `lease_until`
/// so that no other instance sends them meanwhile.
pub fn claim(
    conn: &dyn Sql,
    endpoint: &str,
    now: i64,
    lease_until: i64,
    limit: usize,
) -> Result<Vec<Claimed>, DbError> {
    let sql = "SELECT d.event_id, d.lead_id, e.msg_id, e.body, d.attempts, d.first_at
         FROM outbound_deliveries d JOIN outbound_events e ON e.id = d.event_id
         WHERE d.endpoint = ?1 AND d.state = 'pending' AND d.next_at <= ?2
           AND (d.lease_until IS NULL OR d.lease_until < ?2)
           AND NOT EXISTS (
               SELECT 1 FROM outbound_deliveries p
               WHERE p.endpoint = d.endpoint AND p.lead_id = d.lead_id
                 AND p.state = 'pending' AND p.event_id < d.event_id)
         ORDER BY d.next_at, d.event_id LIMIT ?3";
    // Writes are serialised across instances already (the writer's
    // advisory lock); SKIP LOCKED keeps that true for any other writer.
    let locked = format!("{sql} FOR UPDATE OF d SKIP LOCKED");
    let text = conn.dialect().pick(sql, &locked).to_owned();
    let claimed = conn.query_all(&text, args![endpoint, now, limit as i64], |r| {
        Ok(Claimed {
            event_id: r.get(0)?,
            lead: r.get(1)?,
            msg_id: r.get(2)?,
            body: r.get(3)?,
            attempts: r.get(4)?,
            first_at: r.get(5)?,
        })
    })?;
    for c in &claimed {
        conn.execute(
            "UPDATE outbound_deliveries SET lease_until = ?3 WHERE endpoint = ?1 AND event_id = ?2",
            args![endpoint, c.event_id, lease_until],
        )?;
    }
    Ok(claimed)
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Settle {
    /// The endpoint answered 2xx.
    Delivered,
    /// It failed; try again at `next_at` (ms).
    Retry {
        /// Why (status or transport error; never the body or a secret).
        error: String,
        /// When to try again.
        next_at: i64,
    },
    /// It failed and the retry time is used up: given up.
    Failed {
        /// Why.
        error: String,
    },
    /// 410 Gone: the endpoint is disabled for `url`; the delivery waits.
    Gone {
        /// The URL that answered 410.
        url: String,
    },
}

/// Records the outcome of an attempt at `event_id` (of lead `lead`) to
/// `endpoint`, and the endpoint's last success or error.
pub fn settle(
    conn: &dyn Sql,
    endpoint: &str,
    (event_id, lead): (i64, i64),
    outcome: &Settle,
    now: i64,
) -> Result<(), DbError> {
    let at = now_rfc3339();
    match outcome {
        Settle::Delivered => {
            conn.execute(
                "UPDATE outbound_deliveries SET state = 'delivered', attempts = attempts + 1,
                     lease_until = NULL, last_error = NULL, done_at = ?3
                 WHERE endpoint = ?1 AND event_id = ?2",
                args![endpoint, event_id, now],
            )?;
            note_endpoint(conn, endpoint, Some(&at), None, &at)?;
        }
        Settle::Retry { error, next_at } => {
            conn.execute(
                "UPDATE outbound_deliveries SET attempts = attempts + 1, lease_until = NULL,
                     last_error = ?3, next_at = ?4
                 WHERE endpoint = ?1 AND event_id = ?2",
                args![endpoint, event_id, error, next_at],
            )?;
            // The lead's later events wait for this one: not due before it,
            // so that polling does not walk over them meanwhile.
            conn.execute(
                "UPDATE outbound_deliveries SET next_at = ?4
                 WHERE endpoint = ?1 AND lead_id = ?2 AND state = 'pending'
                   AND event_id > ?3 AND next_at < ?4",
                args![endpoint, lead, event_id, next_at],
            )?;
            note_endpoint(conn, endpoint, None, Some(error), &at)?;
        }
        Settle::Failed { error } => {
            conn.execute(
                "UPDATE outbound_deliveries SET state = 'failed', attempts = attempts + 1,
                     lease_until = NULL, last_error = ?3, done_at = ?4
                 WHERE endpoint = ?1 AND event_id = ?2",
                args![endpoint, event_id, error, now],
            )?;
            note_endpoint(conn, endpoint, None, Some(error), &at)?;
        }
        Settle::Gone { url } => {
            let error = "410 Gone: endpoint disabled";
            conn.execute(
                "UPDATE outbound_deliveries SET attempts = attempts + 1, lease_until = NULL,
                     last_error = ?3
                 WHERE endpoint = ?1 AND event_id = ?2",
                args![endpoint, event_id, error],
            )?;
            note_endpoint(conn, endpoint, None, Some(error), &at)?;
            conn.execute(
                "UPDATE outbound_endpoints SET disabled_url = ?2, disabled_at = ?3 WHERE name = ?1",
                args![endpoint, url, at],
            )?;
        }
    }
    Ok(())
}

/// Records the endpoint's last success or error.
fn note_endpoint(
    conn: &dyn Sql,
    endpoint: &str,
    success: Option<&str>,
    error: Option<&str>,
    at: &str,
) -> Result<(), DbError> {
    conn.execute(
        "INSERT INTO outbound_endpoints (name) VALUES (?1) ON CONFLICT (name) DO NOTHING",
        args![endpoint],
    )?;
    match (success, error) {
        (Some(success), _) => conn.execute(
            "UPDATE outbound_endpoints SET last_success_at = ?2 WHERE name = ?1",
            args![endpoint, success],
        )?,
        (None, Some(error)) => conn.execute(
            "UPDATE outbound_endpoints SET last_error = ?2, last_error_at = ?3 WHERE name = ?1",
            args![endpoint, error, at],
        )?,
        (None, None) => 0,
    };
    Ok(())
}

/// Whether `endpoint` is disabled for `url` (it answered 410 there).
pub fn is_disabled(conn: &dyn Sql, endpoint: &str, url: &str) -> Result<bool, DbError> {
    conn.exists(
        "SELECT 1 FROM outbound_endpoints WHERE name = ?1 AND disabled_url = ?2",
        args![endpoint, url],
    )
}

/// Enables `endpoint` again; answers whether it was disabled.
pub fn enable(conn: &dyn Sql, endpoint: &str) -> Result<bool, DbError> {
    Ok(conn.execute(
        "UPDATE outbound_endpoints SET disabled_url = NULL, disabled_at = NULL
         WHERE name = ?1 AND disabled_url IS NOT NULL",
        args![endpoint],
    )? > 0)
}

/// Sends again the events of `kinds` since `since` (RFC 3339) to
/// `endpoint`: delivered or failed ones become pending with a fresh retry
/// time (same `webhook-id`), and events of those types it never had
/// (it was added later) are added. Answers how many are now queued.
pub fn replay(
    conn: &dyn Sql,
    endpoint: &str,
    kinds: &[EventKind],
    since: &str,
) -> Result<usize, DbError> {
    let now = now_ms();
    let mut queued = 0;
    for kind in kinds {
        queued += conn.execute(
            "INSERT INTO outbound_deliveries (event_id, endpoint, lead_id, state, first_at, next_at)
             SELECT id, CAST(?1 AS TEXT), lead_id, 'pending', CAST(?4 AS BIGINT), CAST(?4 AS BIGINT)
             FROM outbound_events
             WHERE type = ?2 AND created_at >= ?3
             ON CONFLICT (endpoint, event_id) DO UPDATE SET
                 state = 'pending', attempts = 0, first_at = ?4, next_at = ?4,
                 lease_until = NULL, last_error = NULL, done_at = NULL
             WHERE outbound_deliveries.state <> 'pending'",
            args![endpoint, kind.as_str(), since, now],
        )?;
    }
    Ok(queued)
}

/// One endpoint's state, as `outbound status` and `/outbound` show it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct EndpointStatus {
    /// The endpoint's name.
    pub name: String,
    /// Deliveries waiting (due or in backoff).
    pub pending: i64,
    /// When the oldest waiting one was first due (ms), if any.
    pub oldest_pending_ms: Option<i64>,
    /// Deliveries given up.
    pub failed: i64,
    /// Deliveries made.
    pub delivered: i64,
    /// The URL it was disabled for (410 Gone), if it was.
    pub disabled_url: Option<String>,
    /// When it was disabled.
    pub disabled_at: Option<String>,
    /// The last 2xx.
    pub last_success_at: Option<String>,
    /// The last error, and when.
    pub last_error: Option<String>,
    /// When the last error happened.
    pub last_error_at: Option<String>,
}

/// The state of every endpoint the outbox knows (configured or not), by name.
pub fn status(conn: &dyn Sql) -> Result<Vec<EndpointStatus>, DbError> {
    let mut out: std::collections::BTreeMap<String, EndpointStatus> = Default::default();
    conn.each_row(
        "SELECT endpoint, state, count(*), min(first_at) FROM outbound_deliveries
         GROUP BY endpoint, state",
        &[],
        &mut |r| {
            let name: String = r.get(0)?;
            let state: String = r.get(1)?;
            let n: i64 = r.get(2)?;
            let entry = out.entry(name.clone()).or_default();
            entry.name = name;
            match state.as_str() {
                "pending" => {
                    entry.pending = n;
                    entry.oldest_pending_ms = r.get(3)?;
                }
                "failed" => entry.failed = n,
                _ => entry.delivered = n,
            }
            Ok(())
        },
    )?;
    conn.each_row(
        "SELECT name, disabled_url, disabled_at, last_success_at, last_error, last_error_at
         FROM outbound_endpoints",
        &[],
        &mut |r| {
            let name: String = r.get(0)?;
            let entry = out.entry(name.clone()).or_default();
            entry.name = name;
            entry.disabled_url = r.get(1)?;
            entry.disabled_at = r.get(2)?;
            entry.last_success_at = r.get(3)?;
            entry.last_error = r.get(4)?;
            entry.last_error_at = r.get(5)?;
            Ok(())
        },
    )?;
    Ok(out.into_values().collect())
}

/// Removes events older than `before` (RFC 3339) that no endpoint still
/// waits for; answers how many went.
pub fn prune(conn: &dyn Sql, before: &str) -> Result<usize, DbError> {
    let old = "SELECT id FROM outbound_events e WHERE e.created_at < ?1
               AND NOT EXISTS (SELECT 1 FROM outbound_deliveries d
                               WHERE d.event_id = e.id AND d.state = 'pending')";
    conn.execute(
        &format!("DELETE FROM outbound_deliveries WHERE event_id IN ({old})"),
        args![before],
    )?;
    conn.execute(
        &format!("DELETE FROM outbound_events WHERE id IN ({old})"),
        args![before],
    )
}
