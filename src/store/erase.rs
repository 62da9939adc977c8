//! Erasure and subject export: a person's leads (with every lead folded or
//! merged into them), what identifies them, the raw deliveries that carry
//! those identifiers, and the one transaction that removes it all and
//! leaves tombstones ([`erase`]).
//!
//! Finding the deliveries means reading each one (a delivery is attributed
//! to a lead, but may carry another person's email too, or none, when it
//! could not be parsed): that scan runs on a read connection beforehand,
//! and the write transaction only rescans what arrived since, so that the
//! writer is held for the deletions, not for the scan.

mod export;

pub use export::export;

use std::collections::{BTreeMap, BTreeSet};

use phonenumber::country;
use serde::Serialize;

use super::outbox::{self, OutboundEvent};
use super::sql::Sql;
use super::{Db, DbError, leads};
use crate::args;
use crate::outbound::EventKind;
use crate::privacy::{self, Identifier, Key};

/// What stands for an erased person's name or contact quoted in another
/// lead's history.
const ERASED: &str = "[erased]";
/// Deliveries read per page of the scan.
const SCAN_PAGE: i64 = 2_000;
/// How often an erasure starts over when the person changed (a new fold, a
/// new email) between the scan and the transaction.
const ATTEMPTS: usize = 3;

/// Whom an erasure or an export is about, normalised at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A lead id (folded ids name the lead they were folded into).
    Lead(i64),
    /// A normalised email.
    Email(String),
    /// A normalised phone.
    Phone(String),
}

/// A person as the store knows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Person {
    /// Their leads: the surviving lead first, then those folded or merged
    /// into it (transitively). Empty when no lead holds the identifier.
    pub leads: Vec<i64>,
    /// Every identifier of those leads (and the one asked for).
    pub ids: BTreeSet<Identifier>,
    /// Their emails and phones as written and as normalised, to find them
    /// in bodies that do not parse.
    pub plain: Vec<String>,
    /// Their leads' names, as written and as compared (lowercased), which
    /// other leads' duplicate reasons quote.
    pub names: Vec<String>,
}

impl Person {
    /// Whether a delivery of `platform` (attributed to `lead`) is theirs.
    fn owns(&self, lead: Option<i64>, platform: &str, body: &[u8], region: country::Id) -> bool {
        lead.is_some_and(|l| self.leads.contains(&l))
            || privacy::carries(platform, body, region, &self.ids, &self.plain)
    }
}

/// Reads who `subject` is: the surviving lead, every lead folded into it,
/// and their identifiers.
pub fn person(conn: &dyn Sql, subject: &Subject) -> Result<Person, DbError> {
    let owner = |table: &str, value: &str| -> Result<Option<i64>, DbError> {
        conn.query_opt(
            &format!("SELECT lead_id FROM {table} WHERE value = ?1"),
            args![value],
            |r| r.get(0),
        )
    };
    let mut out = Person::default();
    let start = match subject {
        Subject::Lead(id) => leads::exists(conn, *id)?.then_some(*id),
        Subject::Email(email) => {
            out.ids.insert(Identifier::Email(email.clone()));
            out.plain.push(email.clone());
            owner("lead_emails", email)?
        }
        Subject::Phone(phone) => {
            out.ids.insert(Identifier::Phone(phone.clone()));
            out.plain.push(phone.clone());
            owner("lead_phones", phone)?
        }
    };
    if let Some(start) = start {
        out.leads.push(leads::survivor(conn, start)?);
    }
    let mut i = 0;
    while i < out.leads.len() {
        let folded: Vec<i64> = conn.query_all(
            "SELECT id FROM leads WHERE merged_into = ?1 ORDER BY id",
            args![out.leads[i]],
            |r| r.get(0),
        )?;
        for id in folded {
            if !out.leads.contains(&id) {
                out.leads.push(id);
            }
        }
        i += 1;
    }
    for &lead in &out.leads {
        let (name, key): (Option<String>, Option<String>) = conn.query_row(
            "SELECT name, name_key FROM leads WHERE id = ?1",
            args![lead],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        out.names.extend(name.into_iter().chain(key));
        for (table, email) in [("lead_emails", true), ("lead_phones", false)] {
            let rows: Vec<(String, String)> = conn.query_all(
                &format!("SELECT value, raw FROM {table} WHERE lead_id = ?1 ORDER BY id"),
                args![lead],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            for (value, raw) in rows {
                out.ids.insert(if email {
                    Identifier::Email(value.clone())
                } else {
                    Identifier::Phone(value.clone())
                });
                out.plain.extend([value, raw]);
            }
        }
        let visitors: Vec<(String, String)> = conn.query_all(
            "SELECT platform, visitor_id FROM lead_visitors WHERE lead_id = ?1",
            args![lead],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        out.ids
            .extend(visitors.into_iter().map(|(p, v)| Identifier::Visitor(p, v)));
        let chats: Vec<(String, String)> = conn.query_all(
            "SELECT platform, chat_id FROM conversations WHERE lead_id = ?1",
            args![lead],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        out.ids
            .extend(chats.into_iter().map(|(p, c)| Identifier::Chat(p, c)));
    }
    out.plain.sort();
    out.plain.dedup();
    out.names.retain(|n| n.trim().chars().count() >= 3);
    out.names.sort();
    out.names.dedup();
    Ok(out)
}

/// The ids of the deliveries after id `after` (a page of them) that
/// belong to `person`, and the last id read (`None`: nothing left).
pub fn scan_deliveries(
    conn: &dyn Sql,
    person: &Person,
    region: country::Id,
    after: i64,
) -> Result<(Vec<i64>, Option<i64>), DbError> {
    let mut found = Vec::new();
    let mut last = None;
    conn.each_row(
        "SELECT id, lead_id, platform, body FROM deliveries WHERE id > ?1 ORDER BY id LIMIT ?2",
        args![after, SCAN_PAGE],
        &mut |r| {
            let id: i64 = r.get(0)?;
            let platform: String = r.get(2)?;
            let body: Vec<u8> = r.get(3)?;
            if person.owns(r.get(1)?, &platform, &body, region) {
                found.push(id);
            }
            last = Some(id);
            Ok(())
        },
    )?;
    Ok((found, last))
}

/// Every delivery of `person` with an id above `after`, and the highest id read.
fn scan_all(
    conn: &dyn Sql,
    person: &Person,
    region: country::Id,
    mut after: i64,
) -> Result<(Vec<i64>, i64), DbError> {
    let mut all = Vec::new();
    while let (found, Some(last)) = scan_deliveries(conn, person, region, after)? {
        all.extend(found);
        after = last;
    }
    Ok((all, after))
}

/// What an erasure removed, table by table (and the spool's files, counted
/// by the caller).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Erased {
    /// The leads erased, survivor first.
    pub lead_ids: Vec<i64>,
    /// Rows removed per kind: `leads`, `emails`, `phones`, `visitor_ids`,
    /// `conversations`, `messages`, `notes`, `custom_fields`, `tags`,
    /// `pins`, `history`, `decisions`, `duplicate_links`, `deliveries`,
    /// and `spooled` files.
    pub removed: BTreeMap<&'static str, u64>,
    /// Tombstones written (one per identifier).
    pub tombstones: u64,
    /// When.
    pub erased_at: String,
}

impl Erased {
    /// Whether nothing at all was found to erase.
    pub fn is_empty(&self) -> bool {
        self.removed.values().all(|n| *n == 0)
    }
}

/// The scan done before the transaction: the deliveries of the person as
/// it knew them, up to delivery id `upto`.
#[derive(Debug, Clone)]
pub struct Scanned {
    /// The person the scan looked for.
    pub person: Person,
    /// Their deliveries.
    pub deliveries: Vec<i64>,
    /// The highest delivery id read.
    pub upto: i64,
}

/// Why an erasure did not happen in this transaction.
#[derive(Debug)]
pub enum NotErased {
    /// The person changed since the scan (a new fold, a new contact): scan again.
    Changed,
    /// A storage failure.
    Db(DbError),
}

impl From<DbError> for NotErased {
    fn from(e: DbError) -> Self {
        NotErased::Db(e)
    }
}

/// Erases `subject` in the caller's transaction: every lead of the person,
/// their contacts, visitor ids, conversations and messages, notes, custom
/// fields, tags, pins, history (and the decisions it points at), duplicate
/// links, and every raw delivery that carries their identifiers; then one
/// tombstone per identifier, keyed with `key`, dated `at`. Other leads'
/// history rows written by a removed delivery stay, without the pointer to
/// it and its decision.
///
/// The one place an erasure writes: audit entries and outbound events of
/// an erasure belong here, in the same transaction.
pub fn erase(
    conn: &dyn Sql,
    subject: &Subject,
    scanned: &Scanned,
    key: &Key,
    at: &str,
    region: country::Id,
    audit: &crate::store::audit::Entry,
) -> Result<Erased, NotErased> {
    let person = person(conn, subject)?;
    if person != scanned.person {
        return Err(NotErased::Changed);
    }
    let (since, _) = scan_all(conn, &person, region, scanned.upto)?;
    let deliveries: BTreeSet<i64> = scanned.deliveries.iter().copied().chain(since).collect();
    let mut out = Erased {
        lead_ids: person.leads.clone(),
        erased_at: at.to_owned(),
        ..Erased::default()
    };
    let mut count = |what: &'static str, n: usize| {
        *out.removed.entry(what).or_default() += n as u64;
    };

    // Leads flagged as possible duplicates of theirs quote their name in
    // the reason, in history and decisions: those quotes go, the rest stays.
    let mut linked = BTreeSet::new();
    for &lead in &person.leads {
        linked.extend(conn.query_all(
            "SELECT lead_b FROM duplicate_links WHERE lead_a = ?1
             UNION SELECT lead_a FROM duplicate_links WHERE lead_b = ?1",
            args![lead],
            |r| r.get::<i64>(0),
        )?);
    }
    for other in linked.iter().filter(|l| !person.leads.contains(l)) {
        for text in person.names.iter().chain(&person.plain) {
            let scrub = args![*other, text, ERASED];
            conn.execute(
                "UPDATE decisions SET explanation = replace(explanation, ?2, ?3)
                 WHERE id IN (SELECT decision_id FROM history WHERE lead_id = ?1)",
                scrub,
            )?;
            conn.execute(
                "UPDATE history SET old = replace(old, ?2, ?3), new = replace(new, ?2, ?3),
                 explanation = replace(explanation, ?2, ?3) WHERE lead_id = ?1",
                scrub,
            )?;
        }
    }

    let mut decisions = BTreeSet::new();
    for &delivery in &deliveries {
        decisions.extend(conn.query_all(
            "SELECT decision_id FROM history WHERE delivery_id = ?1 AND decision_id IS NOT NULL",
            args![delivery],
            |r| r.get::<i64>(0),
        )?);
        conn.execute(
            "UPDATE history SET delivery_id = NULL, decision_id = NULL WHERE delivery_id = ?1",
            args![delivery],
        )?;
    }
    for &lead in &person.leads {
        decisions.extend(conn.query_all(
            "SELECT decision_id FROM history WHERE lead_id = ?1 AND decision_id IS NOT NULL",
            args![lead],
            |r| r.get::<i64>(0),
        )?);
        // Children before parents (foreign keys); each with ?1 the lead.
        let steps: [(&'static str, &str); 14] = [
            (
                "messages",
                "DELETE FROM messages WHERE conversation_id IN
                 (SELECT id FROM conversations WHERE lead_id = ?1)",
            ),
            (
                "conversations",
                "DELETE FROM conversations WHERE lead_id = ?1",
            ),
            ("notes", "DELETE FROM notes WHERE lead_id = ?1"),
            (
                "custom_fields",
                "DELETE FROM lead_fields WHERE lead_id = ?1",
            ),
            ("tags", "DELETE FROM lead_tags WHERE lead_id = ?1"),
            ("pins", "DELETE FROM lead_pins WHERE lead_id = ?1"),
            (
                "visitor_ids",
                "DELETE FROM lead_visitors WHERE lead_id = ?1",
            ),
            ("emails", "DELETE FROM lead_emails WHERE lead_id = ?1"),
            ("phones", "DELETE FROM lead_phones WHERE lead_id = ?1"),
            ("history", "DELETE FROM history WHERE lead_id = ?1"),
            (
                "duplicate_links",
                "DELETE FROM duplicate_links WHERE lead_a = ?1 OR lead_b = ?1",
            ),
            (
                "dismissed_duplicates",
                "DELETE FROM dismissed_duplicates WHERE lead_a = ?1 OR lead_b = ?1",
            ),
            // A merge's record holds the absorbed lead's values.
            (
                "merge_records",
                "DELETE FROM merges WHERE absorbed = ?1 OR survivor = ?1",
            ),
            ("leads", "UPDATE leads SET merged_into = NULL WHERE id = ?1"),
        ];
        for (what, sql) in steps {
            let n = conn.execute(sql, args![lead])?;
            if what != "leads" {
                count(what, n);
            }
        }
    }
    for &delivery in &deliveries {
        // Another lead's merge record made by this delivery stays, without it.
        conn.execute(
            "UPDATE merges SET delivery_id = NULL WHERE delivery_id = ?1",
            args![delivery],
        )?;
        count(
            "deliveries",
            conn.execute("DELETE FROM deliveries WHERE id = ?1", args![delivery])?,
        );
    }
    for decision in decisions {
        count(
            "decisions",
            conn.execute("DELETE FROM decisions WHERE id = ?1", args![decision])?,
        );
    }
    for &lead in &person.leads {
        count(
            "leads",
            conn.execute("DELETE FROM leads WHERE id = ?1", args![lead])?,
        );
        // Sent and pending events alike hold the lead as it was; what is
        // forwarded now is the erasure itself, with the id alone.
        count("outbound_events", outbox::forget_lead(conn, lead)?);
        outbox::enqueue(conn, &OutboundEvent::new(EventKind::LeadErased, lead))?;
    }
    let key_id = key.id();
    let mut hashes = Vec::with_capacity(person.ids.len());
    for id in &person.ids {
        let hash = key.hash(id);
        conn.execute(
            "INSERT INTO tombstones (hash, kind, erased_at, key_id) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (hash) DO UPDATE SET erased_at = excluded.erased_at, key_id = excluded.key_id",
            args![hash, id.kind(), at, key_id],
        )?;
        hashes.push(hash);
        out.tombstones += 1;
    }
    // Who erased whom: the lead ids and the tombstones' hashes, never the
    // identifiers themselves.
    let leads: Vec<String> = person.leads.iter().map(i64::to_string).collect();
    let target = format!(
        "leads {}; identifiers {}",
        if leads.is_empty() {
            "none".into()
        } else {
            leads.join(", ")
        },
        hashes.join(", ")
    );
    crate::store::audit::record(conn, &audit.with_target(target))?;
    Ok(out)
}

fn internal(e: impl std::fmt::Display) -> DbError {
    DbError::Internal(e.to_string())
}

impl Db {
    /// Who `subject` is (see [`person`]).
    pub async fn person(&self, subject: Subject) -> Result<Person, DbError> {
        self.read(move |conn| person(conn, &subject)).await
    }

    /// Erases `subject` (see [`erase`]): scans the deliveries on a read
    /// connection, then erases in one write transaction, starting over if
    /// the person changed in between. `None`: no lead, delivery or
    /// identifier of theirs was found, and nothing was written.
    pub async fn erase_person(
        &self,
        subject: Subject,
        key: Key,
        region: country::Id,
        audit: crate::store::audit::Entry,
    ) -> Result<Option<Erased>, DbError> {
        for _ in 0..ATTEMPTS {
            let scanned = {
                let subject = subject.clone();
                self.read(move |conn| {
                    let person = person(conn, &subject)?;
                    let (deliveries, upto) = scan_all(conn, &person, region, 0)?;
                    Ok(Scanned {
                        person,
                        deliveries,
                        upto,
                    })
                })
                .await?
            };
            if scanned.person.leads.is_empty() && scanned.deliveries.is_empty() {
                // Still tombstoned: an old backup may hold them.
                if scanned.person.ids.is_empty() {
                    return Ok(None);
                }
            }
            let (subject, key, audit) = (subject.clone(), key.clone(), audit.clone());
            let at = crate::event::now_rfc3339();
            let done = self
                .write(move |conn| {
                    match erase(conn, &subject, &scanned, &key, &at, region, &audit) {
                        Ok(erased) => Ok(Some(erased)),
                        Err(NotErased::Changed) => Ok(None),
                        Err(NotErased::Db(e)) => Err(e),
                    }
                })
                .await?;
            if let Some(erased) = done {
                self.wipe_freed(&erased).await?;
                return Ok(Some(erased));
            }
        }
        Err(DbError::Unavailable(
            "the person kept changing while being erased; try again".into(),
        ))
    }

    /// After an erasure has committed, leaves no copy of the removed rows
    /// where the store can reach it. SQLite: deleted content is already
    /// zeroed (`secure_delete`); a TRUNCATE checkpoint copies the zeroed
    /// pages into the file and empties the WAL, which held older copies of
    /// them. PostgreSQL: VACUUM of the tables the erasure touched, so that
    /// the dead row versions' space is marked free for reuse (see the
    /// README for what it cannot reach).
    async fn wipe_freed(&self, erased: &Erased) -> Result<(), DbError> {
        match self.sqlite_path().map(|p| p.to_owned()) {
            Some(path) => tokio::task::spawn_blocking(move || truncate_wal(&path))
                .await
                .map_err(|e| DbError::Internal(format!("checkpoint task failed: {e}")))?,
            None => {
                let tables: Vec<&'static str> = TOUCHED
                    .iter()
                    .filter(|(what, _)| erased.removed.get(what).is_some_and(|n| *n > 0))
                    .map(|(_, table)| *table)
                    .chain(["history", "tombstones"])
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                self.maintain(move |conn| {
                    for table in tables {
                        conn.batch(&format!("VACUUM {table}"))?;
                    }
                    Ok(())
                })
                .await
            }
        }
    }
}

/// The table behind each count of [`Erased::removed`].
const TOUCHED: &[(&str, &str)] = &[
    ("leads", "leads"),
    ("emails", "lead_emails"),
    ("phones", "lead_phones"),
    ("visitor_ids", "lead_visitors"),
    ("conversations", "conversations"),
    ("messages", "messages"),
    ("notes", "notes"),
    ("custom_fields", "lead_fields"),
    ("tags", "lead_tags"),
    ("pins", "lead_pins"),
    ("history", "history"),
    ("decisions", "decisions"),
    ("duplicate_links", "duplicate_links"),
    ("dismissed_duplicates", "dismissed_duplicates"),
    ("merge_records", "merges"),
    ("outbound_events", "outbound_events"),
    ("outbound_events", "outbound_deliveries"),
    ("deliveries", "deliveries"),
];

/// `PRAGMA wal_checkpoint(TRUNCATE)` on a connection of its own, waiting
/// for readers still on an older snapshot (they would keep the WAL).
fn truncate_wal(path: &std::path::Path) -> Result<(), DbError> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    for _ in 0..20 {
        let (busy, log, copied): (i64, i64, i64) =
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        if busy == 0 && log == copied {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Err(DbError::Unavailable(
        "the erasure is committed, but the WAL could not be emptied (a long read held it); \
         run `crm-responder erase` again to retry"
            .into(),
    ))
}
