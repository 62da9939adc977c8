//! Erasure and subject access, the pure part: who a person is to us (the
//! identifiers of their leads and deliveries), the keyed hashes that stay
//! after an erasure (tombstones), and how old data is matched against them.
//!
//! A tombstone is `HMAC-SHA256([privacy] secret, "kind:value")` of a
//! normalised identifier, with the time of the erasure: it recognises the
//! person in old data (a backup, an old export) without holding their data.
//! Only data received before the erasure is skipped: a person who writes
//! again afterwards is a new lead.

use std::collections::{BTreeSet, HashMap};

use hmac::{Hmac, KeyInit, Mac};
use phonenumber::country;
use sha2::Sha256;

use crate::crm::identity::{Email, Phone};
use crate::event::{Event, Platform};
use crate::platforms;
use crate::store::DbError;
use crate::store::sql::Sql;

/// Something that identifies a person, normalised as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Identifier {
    /// An email, trimmed and lowercased.
    Email(String),
    /// A phone in E.164 (or its digits when it does not parse).
    Phone(String),
    /// A platform's visitor id: platform and id.
    Visitor(String, String),
    /// A platform's chat or room id: platform and id.
    Chat(String, String),
}

impl Identifier {
    /// `email`, `phone`, `visitor` or `chat`: stored beside the hash.
    pub fn kind(&self) -> &'static str {
        match self {
            Identifier::Email(_) => "email",
            Identifier::Phone(_) => "phone",
            Identifier::Visitor(..) => "visitor",
            Identifier::Chat(..) => "chat",
        }
    }

    /// What is hashed: the kind and the value, so that an email and a chat
    /// id that happen to be the same string do not share a tombstone.
    fn text(&self) -> String {
        match self {
            Identifier::Email(v) | Identifier::Phone(v) => format!("{}:{v}", self.kind()),
            Identifier::Visitor(p, v) | Identifier::Chat(p, v) => {
                format!("{}:{p}:{v}", self.kind())
            }
        }
    }
}

/// The HMAC key of tombstones, from `[privacy] secret`.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key([redacted])")
    }
}

impl Key {
    /// The key of `[privacy] secret`; `None` when the config has none.
    pub fn of(config: &crate::config::Config) -> Option<Key> {
        config
            .privacy
            .secret
            .as_ref()
            .map(|s| Key(s.expose().trim().as_bytes().to_vec()))
    }

    fn mac(&self, text: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(text.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// The tombstone hash of `id`.
    pub fn hash(&self, id: &Identifier) -> String {
        self.mac(&id.text())
    }

    /// Names the key without revealing it, so that tombstones made with
    /// another secret are recognised as such instead of silently missed.
    pub fn id(&self) -> String {
        self.mac("crm-responder tombstone key")[..16].to_owned()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The identifiers an event carries, as the store would key them.
pub fn of_event(platform: &str, event: &Event, region: country::Id) -> BTreeSet<Identifier> {
    let mut out = BTreeSet::new();
    if let Some(visitor) = &event.visitor {
        out.extend(
            (visitor.emails.iter())
                .filter_map(|e| Email::parse(e))
                .map(|e| Identifier::Email(e.normalized)),
        );
        out.extend(
            (visitor.phones.iter())
                .filter_map(|p| Phone::parse(p, region))
                .map(|p| Identifier::Phone(p.normalized)),
        );
        out.extend(
            (visitor.ids.iter()).map(|id| Identifier::Visitor(platform.to_owned(), id.clone())),
        );
    }
    let chats = [
        event.chat_id.as_ref(),
        event.conversation.as_ref().map(|c| &c.chat_id),
    ];
    out.extend(
        chats
            .into_iter()
            .flatten()
            .map(|chat| Identifier::Chat(platform.to_owned(), chat.clone())),
    );
    out
}

/// The identifiers a stored or spooled delivery carries; `None` when its
/// body does not translate (a delivery kept as failed).
pub fn of_delivery(
    platform: &str,
    body: &[u8],
    region: country::Id,
) -> Option<BTreeSet<Identifier>> {
    if platform == crate::ops::import::PLATFORM {
        let row: crate::ops::import::Row = serde_json::from_slice(body).ok()?;
        return Some(of_import_row(&row, region));
    }
    let (event, _) = platforms::translate(Platform::parse(platform)?, body).ok()?;
    Some(of_event(platform, &event, region))
}

/// The identifiers of an imported row.
pub fn of_import_row(row: &crate::ops::import::Row, region: country::Id) -> BTreeSet<Identifier> {
    let emails = (row.emails.iter())
        .filter_map(|e| Email::parse(e))
        .map(|e| Identifier::Email(e.normalized));
    let phones = (row.phones.iter())
        .filter_map(|p| Phone::parse(p, region))
        .map(|p| Identifier::Phone(p.normalized));
    emails.chain(phones).collect()
}

/// The emails and phone numbers written anywhere in a body that does not
/// parse: words holding an `@`, and runs of digits (with the spaces, dots,
/// dashes and brackets phones are written with) long enough to be a phone.
pub fn written_in(body: &[u8], region: country::Id) -> BTreeSet<Identifier> {
    let text = String::from_utf8_lossy(body);
    let mut out = BTreeSet::new();
    let email_char = |c: char| c.is_alphanumeric() || "._%+-@'".contains(c);
    out.extend(
        text.split(|c| !email_char(c))
            .filter(|w| w.contains('@'))
            .filter_map(|w| Email::parse(w.trim_matches(|c| c == '.' || c == '\'')))
            .map(|e| Identifier::Email(e.normalized)),
    );
    let phone_char = |c: char| c.is_ascii_digit() || " +-.()".contains(c);
    out.extend(
        text.split(|c| !phone_char(c))
            .filter(|w| w.chars().filter(char::is_ascii_digit).count() >= 7)
            .filter_map(|w| Phone::parse(w, region))
            .map(|p| Identifier::Phone(p.normalized)),
    );
    out
}

/// The identifiers tombstones are matched against in a stored or spooled
/// delivery: its event's, or, when the body does not translate, the emails
/// and phone numbers written in it.
pub fn in_delivery(platform: &str, body: &[u8], region: country::Id) -> BTreeSet<Identifier> {
    of_delivery(platform, body, region).unwrap_or_else(|| written_in(body, region))
}

/// Whether an untranslatable body mentions any of `plain` (emails and
/// phones as written and as normalised), ignoring case: a failed delivery
/// cannot be read as an event, but must not outlive an erasure either.
pub fn mentions(body: &[u8], plain: &[String]) -> bool {
    let body = body.to_ascii_lowercase();
    plain
        .iter()
        .map(|p| p.to_lowercase())
        .filter(|p| p.len() >= 5)
        .any(|p| body.windows(p.len()).any(|w| w == p.as_bytes()))
}

/// Whether a delivery of `platform` with `body` belongs to the person
/// known by `ids` (and `plain`, their values as written).
pub fn carries(
    platform: &str,
    body: &[u8],
    region: country::Id,
    ids: &BTreeSet<Identifier>,
    plain: &[String],
) -> bool {
    match of_delivery(platform, body, region) {
        Some(found) => !found.is_disjoint(ids),
        None => mentions(body, plain),
    }
}

/// A parser's reason for refusing a body, fit for the log: serde quotes
/// the values it could not read (`invalid type: string "ann@example.com"`),
/// which may be a person's email, phone or words. Quoted text is left out,
/// and so is a value in backticks that could be a phone or an email
/// (field names in backticks stay: they say what was wrong).
pub fn redact(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut rest = reason;
    while let Some(open) = rest.find(['"', '`']) {
        let quote = rest.as_bytes()[open] as char;
        out.push_str(&rest[..=open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find(quote) else {
            out.push('…');
            return out;
        };
        let inner = &after[..close];
        let personal = quote == '"'
            || inner.contains('@')
            || inner.chars().filter(char::is_ascii_digit).count() >= 5;
        out.push_str(if personal { "…" } else { inner });
        out.push(quote);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// The tombstones of a store, loaded once to check old data against.
#[derive(Debug, Default)]
pub struct Tombstones {
    key: Option<Key>,
    /// Hash → the latest erasure that left it.
    erased: HashMap<String, String>,
}

impl Tombstones {
    /// Reads every tombstone of `conn` (none when it has no tombstone
    /// table, an older database). Refuses when there are tombstones and no
    /// key, or they were made with another key: old data could not be
    /// checked, and erased people would come back.
    pub fn load(conn: &dyn Sql, key: Option<&Key>) -> Result<Tombstones, String> {
        let mut out = Tombstones {
            key: key.cloned(),
            erased: HashMap::new(),
        };
        out.add(conn)?;
        Ok(out)
    }

    /// The tombstones of `ids` alone (one lookup by hash each), refused
    /// as [`Tombstones::load`] refuses: what checking one delivery inside a
    /// write transaction reads, where reading them all would hold the writer.
    pub fn load_for(
        conn: &dyn Sql,
        key: Option<&Key>,
        ids: &BTreeSet<Identifier>,
    ) -> Result<Tombstones, String> {
        let Some(key) = key else {
            // Without a key nothing can be matched: any tombstone refuses.
            return Tombstones::load(conn, None);
        };
        let mut out = Tombstones {
            key: Some(key.clone()),
            erased: HashMap::new(),
        };
        // One made with another key would never match: refused, not missed.
        let mut rows = tombstone_rows(
            conn,
            "SELECT hash, erased_at, key_id FROM tombstones WHERE key_id <> ?1 LIMIT 1",
            crate::args![key.id()],
        )?;
        for id in ids {
            rows.extend(tombstone_rows(
                conn,
                "SELECT hash, erased_at, key_id FROM tombstones WHERE hash = ?1",
                crate::args![key.hash(id)],
            )?);
        }
        out.absorb(rows)?;
        Ok(out)
    }

    /// Adds the tombstones of another database (`replay --from`).
    pub fn add(&mut self, conn: &dyn Sql) -> Result<(), String> {
        let rows = tombstone_rows(conn, "SELECT hash, erased_at, key_id FROM tombstones", &[])?;
        self.absorb(rows)
    }

    /// Adds tombstone rows `(hash, erased_at, key_id)`, refusing them
    /// without a key or when made with another key.
    fn absorb(&mut self, rows: Vec<(String, String, String)>) -> Result<(), String> {
        if rows.is_empty() {
            return Ok(());
        }
        let Some(key) = &self.key else {
            return Err(format!(
                "the database holds {} tombstones of erased people, and [privacy] secret is not \
                 set: without it old data cannot be checked against them",
                rows.len()
            ));
        };
        let id = key.id();
        if let Some((_, at, _)) = rows.iter().find(|(_, _, k)| *k != id) {
            return Err(format!(
                "tombstones of an erasure at {at} were made with another [privacy] secret; \
                 set the secret back to the one in force then"
            ));
        }
        for (hash, at, _) in rows {
            let latest = self.erased.entry(hash).or_default();
            if at > *latest {
                *latest = at;
            }
        }
        Ok(())
    }

    /// Adds `other`'s tombstones (another database's, under the same key).
    pub fn merge(&mut self, other: Tombstones) {
        for (hash, at) in other.erased {
            let latest = self.erased.entry(hash).or_default();
            if at > *latest {
                *latest = at;
            }
        }
    }

    /// How many hashes are known.
    pub fn len(&self) -> usize {
        self.erased.len()
    }

    /// Whether no one was erased.
    pub fn is_empty(&self) -> bool {
        self.erased.is_empty()
    }

    /// Whether data carrying `ids`, received at `received_at` (RFC 3339 as
    /// stored), belongs to a person erased after it arrived.
    pub fn erases(&self, ids: &BTreeSet<Identifier>, received_at: &str) -> bool {
        let Some(key) = self.key.as_ref().filter(|_| !self.erased.is_empty()) else {
            return false;
        };
        ids.iter().any(|id| {
            self.erased
                .get(&key.hash(id))
                .is_some_and(|at| at.as_str() > received_at)
        })
    }

    /// [`Tombstones::erases`] for a stored delivery's body; an untranslatable
    /// body is matched on the emails and phone numbers written in it.
    pub fn erases_delivery(
        &self,
        platform: &str,
        body: &[u8],
        received_at: &str,
        region: country::Id,
    ) -> bool {
        if self.erased.is_empty() {
            return false;
        }
        self.erases(&in_delivery(platform, body, region), received_at)
    }
}

/// Tombstone rows `(hash, erased_at, key_id)` a query reads; none from a
/// database older than tombstones.
fn tombstone_rows(
    conn: &dyn Sql,
    sql: &str,
    args: &[crate::store::sql::Value<'_>],
) -> Result<Vec<(String, String, String)>, String> {
    match conn.query_all(sql, args, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))) {
        Ok(rows) => Ok(rows),
        Err(e) if missing_table(&e) => Ok(Vec::new()),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether a query failed because its table does not exist (a database
/// older than tombstones).
fn missing_table(e: &DbError) -> bool {
    let text = e.to_string();
    text.contains("no such table") || text.contains("42P01")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_depend_on_the_key_and_the_kind_of_identifier() {
        let a = Key(b"first secret".to_vec());
        let b = Key(b"other secret".to_vec());
        let email = Identifier::Email("ann@example.com".into());
        assert_eq!(a.hash(&email), a.hash(&email.clone()));
        assert_ne!(a.hash(&email), b.hash(&email));
        assert_ne!(a.id(), b.id());
        assert_ne!(
            a.hash(&Identifier::Chat("jivo".into(), "7".into())),
            a.hash(&Identifier::Visitor("jivo".into(), "7".into()))
        );
        assert_eq!(a.hash(&email).len(), 64);
        assert!(!a.hash(&email).contains("ann"));
    }

    #[test]
    fn only_data_received_before_the_erasure_is_erased() {
        let key = Key(b"k".to_vec());
        let email = Identifier::Email("ann@example.com".into());
        let tombstones = Tombstones {
            erased: [(key.hash(&email), "2026-12-01T10:00:00.000Z".to_owned())].into(),
            key: Some(key),
        };
        let ids = BTreeSet::from([email, Identifier::Phone("+14084987855".into())]);
        assert!(tombstones.erases(&ids, "2026-11-30T09:00:00.000Z"));
        assert!(!tombstones.erases(&ids, "2026-12-01T10:00:00.001Z"));
        let other = BTreeSet::from([Identifier::Email("bob@example.com".into())]);
        assert!(!tombstones.erases(&other, "2026-11-30T09:00:00.000Z"));
    }

    #[test]
    fn refusal_reasons_lose_the_values_they_quote() {
        assert_eq!(
            redact("invalid type: string \"ann@example.com\", expected u64 at line 1"),
            "invalid type: string \"…\", expected u64 at line 1"
        );
        assert_eq!(
            redact("invalid type: integer `16502530001`, missing field `chat_id`"),
            "invalid type: integer `…`, missing field `chat_id`"
        );
        assert_eq!(redact("unterminated \"ann"), "unterminated \"…");
    }

    #[test]
    fn emails_and_phones_are_found_in_a_body_that_does_not_parse() {
        let found = written_in(
            br#"{"visitor":{"email":"Ann@Example.com","phone":"+1 (408) 498-7855"},"x":"#,
            country::Id::US,
        );
        assert!(found.contains(&Identifier::Email("ann@example.com".into())));
        assert!(found.contains(&Identifier::Phone("+14084987855".into())));
    }

    #[test]
    fn an_unreadable_body_is_matched_on_the_values_it_mentions() {
        let plain = vec!["Ann@Example.com".to_owned(), "+1 408".to_owned()];
        assert!(mentions(b"{\"mail\":\"ann@example.COM\"", &plain));
        assert!(!mentions(b"{\"mail\":\"bob@example.com\"", &plain));
    }

    #[test]
    fn the_tombstones_of_one_delivery_are_read_with_the_same_refusals() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE tombstones (hash TEXT PRIMARY KEY, kind TEXT, erased_at TEXT, key_id TEXT)",
        )
        .unwrap();
        let key = Key(b"k".to_vec());
        let ann = Identifier::Email("ann@example.com".into());
        let bob = Identifier::Email("bob@example.com".into());
        let at = "2026-12-01T10:00:00.000Z";
        conn.execute(
            "INSERT INTO tombstones (hash, kind, erased_at, key_id) VALUES (?1, 'email', ?2, ?3)",
            rusqlite::params![key.hash(&ann), at, key.id()],
        )
        .unwrap();
        let ids = BTreeSet::from([ann.clone()]);
        let found = Tombstones::load_for(&conn, Some(&key), &ids).unwrap();
        assert_eq!(found.len(), 1);
        assert!(found.erases(&ids, "2026-11-30T09:00:00.000Z"));
        let others = BTreeSet::from([bob]);
        assert!(
            Tombstones::load_for(&conn, Some(&key), &others)
                .unwrap()
                .is_empty()
        );
        // No key, or another key: refused, not silently missed.
        assert!(Tombstones::load_for(&conn, None, &ids).is_err());
        let other = Key(b"other".to_vec());
        assert!(Tombstones::load_for(&conn, Some(&other), &ids).is_err());
    }
}
