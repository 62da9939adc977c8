//! The bulk path of `import`: a row whose emails and phones no lead owns
//! creates a lead, and nothing else can happen to it (no visitor id, chat,
//! tag or fold). That case is applied here from values parsed ahead of the
//! writer, without the general event plumbing, through the same pure core
//! (`resolve`, `merge::plan`, `Explanation`) and the same storage functions
//! as [`super::apply::receive`], in the same order: the stored result is the
//! one the general path gives. Any other row takes the general path.
//!
//! The in-memory [`Mirror`] of the duplicate-detection indexes is kept in
//! step through SQLite's `PRAGMA data_version`. PostgreSQL has no such
//! counter: there the mirror stays stale, and ownership and neighbours are
//! asked of the database, as the general path asks them.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::DbError;
use super::apply::{Outcome, Policy};
use super::duplicates::{self, Index, NEIGHBOURS, Profile};
use super::inbox::{self, NewDelivery};
use super::leads::{self, Source};
use super::sql::Sql;
use crate::crm::duplicates::reversed;
use crate::crm::explain::{Explanation, Flag, Seen};
use crate::crm::identity::name_key;
use crate::crm::merge::{self, Change, ContactKind, Incoming, IncomingContact};
use crate::crm::resolve::{self, Matches, Target};

/// A person as parsed ahead of the writer: identifiers normalised and
/// deduplicated the way [`super::apply::receive`] does it.
#[derive(Debug, Clone, Copy)]
pub struct Person<'a> {
    /// Name, as given.
    pub name: Option<&'a str>,
    /// Description, as given.
    pub description: Option<&'a str>,
    /// `(normalised, raw)` emails, first occurrence of each, in order.
    pub emails: &'a [(String, String)],
    /// `(normalised, raw)` phones, likewise.
    pub phones: &'a [(String, String)],
    /// Custom fields.
    pub fields: &'a [(String, String)],
}

/// Whether a lead owns any of the person's emails or phones (then the row
/// takes the general path). Answered by `mirror` while it is in step with
/// the database (debug builds ask the database too), else by the database.
pub fn owned(conn: &dyn Sql, person: &Person, mirror: &Mirror) -> Result<bool, DbError> {
    if !mirror.is_stale() {
        let owned = (person.emails.iter()).any(|(v, _)| mirror.emails.contains_key(&Key::new(v)))
            || (person.phones.iter()).any(|(v, _)| mirror.phones.contains_key(&Key::new(v)));
        debug_assert_eq!(owned, owned_in_database(conn, person)?, "{person:?}");
        return Ok(owned);
    }
    owned_in_database(conn, person)
}

fn owned_in_database(conn: &dyn Sql, person: &Person) -> Result<bool, DbError> {
    for (value, _) in person.emails {
        if leads::contact_owner(conn, ContactKind::Email, value)?.is_some() {
            return Ok(true);
        }
    }
    for (value, _) in person.phones {
        if leads::contact_owner(conn, ContactKind::Phone, value)?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Applies `delivery`, which [`inbox::insert`] has just stored as
/// `delivery_id`, for a person no lead owns an identifier of ([`owned`] said
/// no): creates the lead exactly as [`super::apply::receive`] would.
pub fn create(
    conn: &dyn Sql,
    policy: &Policy,
    delivery: &NewDelivery,
    delivery_id: i64,
    person: &Person,
    mirror: &mut Mirror,
) -> Result<Outcome, DbError> {
    let source = Source {
        delivery_id: Some(delivery_id),
        // What `apply` labels an event without a chat: "{platform} {event}".
        label: format!("{} {}", delivery.platform, delivery.event),
        at: delivery.received_at.clone(),
    };
    let resolution = resolve::resolve(&Matches::default(), &policy.merge.match_order);
    debug_assert_eq!(resolution.target, Target::Create);
    let origin = leads::Origin {
        status: &policy.new_status,
        platform: delivery.platform,
        source: None,
    };
    let lead = leads::create(conn, &source.at, origin)?;
    let contacts = |values: &[(String, String)]| -> Vec<IncomingContact> {
        values
            .iter()
            .map(|(value, raw)| IncomingContact {
                value: value.clone(),
                raw: raw.clone(),
            })
            .collect()
    };
    let incoming = Incoming {
        name: non_empty(person.name),
        description: non_empty(person.description),
        emails: contacts(person.emails),
        phones: contacts(person.phones),
    };
    let current = merge::Current::default();
    let changes = merge::plan(&policy.merge, &current, &incoming);
    let mut similar = Vec::new();
    if policy.duplicates.enabled {
        let after = merge::preview(&current, &changes);
        let profile = Profile {
            name_key: after
                .name
                .as_deref()
                .map(name_key)
                .filter(|k| !k.is_empty()),
            emails: after.emails.into_iter().map(|c| c.value).collect(),
            phones: after.phones.into_iter().map(|c| c.value).collect(),
        };
        if mirror.is_stale() {
            // No mirror to ask (always so on PostgreSQL, which has no
            // `data_version` to keep one in step): the database's indexes
            // answer and the links are made now, as the general path does,
            // after the ones held (none, unless the mirror was dropped).
            mirror.flush_links(conn)?;
            similar = duplicates::detect(
                conn,
                lead,
                &profile,
                policy.duplicates.threshold,
                &source.at,
            )?;
        } else {
            similar = duplicates::candidates(
                conn,
                lead,
                &profile,
                policy.duplicates.threshold,
                |index, key, visit| {
                    mirror.visit_neighbours(index, key, &mut |lead, value| {
                        visit(duplicates::Owner::Lead(lead), value)
                    });
                    Ok(())
                },
            )?;
            // A new lead has no links yet: each of these is a new one.
            mirror.link_later(lead, &similar, &source.at);
        }
    }
    let flagged = similar.len();
    let similar = similar
        .into_iter()
        .map(|s| Flag {
            lead: s.lead,
            reason: s.reason,
        })
        .collect();
    let seen = seen(ContactKind::Email, person.emails)
        .chain(seen(ContactKind::Phone, person.phones))
        .collect();
    let why = Explanation::new(
        &policy.merge,
        seen,
        None,
        &resolution,
        lead,
        similar,
        changes,
    );
    let decision = leads::Decision::new(&why);
    let mut created = leads::write_changes(
        conn,
        lead,
        &current,
        &why.changes,
        &decision,
        &source,
        leads::Record::Created(&resolution.rule),
    )?
    .ok_or_else(|| DbError::Internal("a new lead without its created row".into()))?;
    mirror.follow(lead, &why.changes);
    leads::set_fields(conn, lead, person.fields, Some(&mut created), &source)?;
    created.write(conn, &source)?;
    inbox::set_lead(conn, delivery_id, Some(lead))?;
    Ok(Outcome {
        lead_id: Some(lead),
        created: true,
        flagged,
        ..Outcome::default()
    })
}

fn seen(kind: ContactKind, values: &[(String, String)]) -> impl Iterator<Item = Seen> + '_ {
    values.iter().map(move |(normalized, raw)| Seen {
        kind,
        raw: raw.clone(),
        normalized: normalized.clone(),
        owner: None,
    })
}

fn non_empty(s: Option<&str>) -> Option<String> {
    s.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The four sorted indexes duplicate detection looks into
/// ([`duplicates::Index`]), held in memory for the length of an import so
/// that a new lead's neighbours are found without a query, in exactly the
/// order the index scans of [`duplicates::detect`] give them: every change
/// the import makes is applied to it as it is written, and it is read again
/// whenever another connection has written in between (`PRAGMA
/// data_version`) or a change could not be followed. On PostgreSQL, which
/// has no `data_version`, it is never read and stays stale: the database
/// answers instead.
///
/// It also holds the possible-duplicate links of the leads the bulk path
/// created, written by [`Mirror::flush_links`] before the job commits and
/// before a row takes the general path (which may read or make links),
/// sorted by their older lead: made one new lead at a time, each link's
/// entry in the index by the older lead lands at a random place of it;
/// sorted, a job's entries go through that index in order.
#[derive(Debug, Default)]
pub struct Mirror {
    /// `name_key` of leads not folded: the leads holding it, ascending.
    names: BTreeMap<Key, Vec<i64>>,
    /// `name_rev`, likewise.
    revs: BTreeMap<Key, Vec<i64>>,
    /// Email value to its lead.
    emails: BTreeMap<Key, i64>,
    /// Phone value to its lead.
    phones: BTreeMap<Key, i64>,
    /// `PRAGMA data_version` when it was last known to match the database;
    /// `None`: to be read again.
    version: Option<i64>,
    /// Links made and not written yet.
    links: Vec<Link>,
}

/// A possible-duplicate link to write: the pair (older lead first), score,
/// reason, when.
#[derive(Debug)]
struct Link {
    pair: (i64, i64),
    score: f64,
    reason: String,
    at: String,
}

impl Mirror {
    /// Makes sure the mirror matches the database: read again if it was
    /// never read, was invalidated, or another connection has committed
    /// since [`Mirror::settle`]. On PostgreSQL it is left stale (nothing
    /// would tell when another session writes).
    pub fn refresh(&mut self, conn: &dyn Sql) -> Result<(), DbError> {
        let Some(version) = data_version(conn)? else {
            return Ok(());
        };
        if self.version == Some(version) {
            return Ok(());
        }
        self.flush_links(conn)?;
        *self = Mirror::default();
        conn.each_row(
            "SELECT id, name_key, name_rev FROM leads
             WHERE merged_into IS NULL AND (name_key IS NOT NULL OR name_rev IS NOT NULL)",
            &[],
            &mut |row| {
                let id: i64 = row.get(0)?;
                if let Some(key) = row.get::<Option<String>>(1)? {
                    self.names.entry(Key::from(key)).or_default().push(id);
                }
                if let Some(rev) = row.get::<Option<String>>(2)? {
                    self.revs.entry(Key::from(rev)).or_default().push(id);
                }
                Ok(())
            },
        )?;
        for ids in self.names.values_mut().chain(self.revs.values_mut()) {
            ids.sort_unstable();
        }
        for (sql, map) in [
            ("SELECT lead_id, value FROM lead_emails", &mut self.emails),
            ("SELECT lead_id, value FROM lead_phones", &mut self.phones),
        ] {
            conn.each_row(sql, &[], &mut |row| {
                map.insert(Key::from(row.get::<String>(1)?), row.get(0)?);
                Ok(())
            })?;
        }
        self.version = Some(version);
        Ok(())
    }

    /// Invalidates the mirror if another connection has committed since
    /// [`Mirror::settle`] (it is read again by [`Mirror::refresh`] when next
    /// needed).
    pub fn check(&mut self, conn: &dyn Sql) -> Result<(), DbError> {
        if let Some(known) = self.version
            && Some(known) != data_version(conn)?
        {
            self.invalidate();
        }
        Ok(())
    }

    /// Records, at the end of a job, that the mirror matches the database
    /// as this connection sees it (its own commit does not change
    /// `data_version`; another connection's does).
    pub fn settle(&mut self, conn: &dyn Sql) -> Result<(), DbError> {
        if self.version.is_some() {
            self.version = data_version(conn)?;
        }
        Ok(())
    }

    /// Forgets everything: read again before the next use.
    pub fn invalidate(&mut self) {
        self.version = None;
    }

    /// The job's transaction was rolled back: what the mirror followed and
    /// the links it held are gone.
    pub fn rolled_back(&mut self) {
        self.invalidate();
        self.links.clear();
    }

    /// Holds the links [`duplicates::candidates`] found for new lead
    /// `lead`, to be written by [`Mirror::flush_links`].
    pub fn link_later(&mut self, lead: i64, similar: &[duplicates::Similar], at: &str) {
        self.links.extend(similar.iter().map(|s| Link {
            pair: (lead.min(s.lead), lead.max(s.lead)),
            score: s.score,
            reason: s.reason.clone(),
            at: at.to_owned(),
        }));
    }

    /// Writes the links held, by older lead. Each is new (a lead created
    /// by the bulk path had none, and [`duplicates::candidates`] names a
    /// lead once): one that is not fails the job, whose rows are then
    /// applied the general way.
    pub fn flush_links(&mut self, conn: &dyn Sql) -> Result<(), DbError> {
        let mut links = std::mem::take(&mut self.links);
        links.sort_unstable_by_key(|l| l.pair);
        for Link {
            pair: (a, b),
            score,
            reason,
            at,
        } in &links
        {
            if !leads::link_duplicate(conn, *a, *b, *score, reason, at)? {
                return Err(DbError::Internal(format!(
                    "leads {a} and {b} were linked already"
                )));
            }
        }
        Ok(())
    }

    /// Whether the mirror is to be read again before it is used.
    pub fn is_stale(&self) -> bool {
        self.version.is_none()
    }

    /// The neighbours of `key` in `index`, as the index scans of
    /// [`duplicates::detect`] give them.
    #[cfg(test)]
    pub fn neighbours(&self, index: Index, key: &str) -> Vec<(i64, String)> {
        let mut out = Vec::with_capacity(2 * NEIGHBOURS);
        self.visit_neighbours(index, key, &mut |id, value| {
            out.push((id, value.to_owned()))
        });
        out
    }

    /// Calls `visit` with each neighbour of `key` in `index`, in the order
    /// the index scans of [`duplicates::detect`] give them.
    pub fn visit_neighbours(&self, index: Index, key: &str, visit: &mut dyn FnMut(i64, &str)) {
        match index {
            Index::Name | Index::NameRev => {
                let map = if index == Index::Name {
                    &self.names
                } else {
                    &self.revs
                };
                // Below: keys < key, descending, equal keys by descending id.
                let probe = Key::new(key);
                let below = map.range((Bound::Unbounded, Bound::Excluded(&probe)));
                let below = below
                    .rev()
                    .flat_map(|(k, ids)| ids.iter().rev().map(move |id| (*id, k)));
                // At or above: keys >= key, ascending, equal keys by id.
                let above = map.range((Bound::Included(&probe), Bound::Unbounded));
                let above = above.flat_map(|(k, ids)| ids.iter().map(move |id| (*id, k)));
                for (id, k) in below.take(NEIGHBOURS).chain(above.take(NEIGHBOURS)) {
                    visit(id, k.as_str());
                }
            }
            Index::Email | Index::Phone => {
                let map = if index == Index::Email {
                    &self.emails
                } else {
                    &self.phones
                };
                let probe = Key::new(key);
                let below = map.range((Bound::Unbounded, Bound::Excluded(&probe)));
                let above = map.range((Bound::Excluded(&probe), Bound::Unbounded));
                for (k, id) in below.rev().take(NEIGHBOURS).chain(above.take(NEIGHBOURS)) {
                    visit(*id, k.as_str());
                }
            }
        }
    }

    /// Follows what [`leads::write_changes`] wrote for `lead`. A change it
    /// cannot follow exactly (a name whose stored key it does not hold)
    /// invalidates it.
    pub fn follow(&mut self, lead: i64, changes: &[Change]) {
        if self.is_stale() {
            return;
        }
        for change in changes {
            match change {
                Change::Name { old, new, .. } => {
                    if let Some(old) = old.as_deref().map(name_key).filter(|k| !k.is_empty()) {
                        let rev = reversed(&old);
                        if !(remove(&mut self.names, &old, lead)
                            && remove(&mut self.revs, &rev, lead))
                        {
                            self.invalidate();
                            return;
                        }
                    }
                    let key = name_key(new);
                    if !key.is_empty() {
                        let rev = reversed(&key);
                        insert(&mut self.names, key, lead);
                        insert(&mut self.revs, rev, lead);
                    }
                }
                Change::Add { kind, value, .. } => {
                    self.contacts(*kind).insert(Key::new(value), lead);
                }
                Change::Remove { kind, value, .. } => {
                    self.contacts(*kind).remove(&Key::new(value));
                }
                Change::Description { .. } | Change::MakePrimary { .. } | Change::Kept { .. } => {}
            }
        }
    }

    fn contacts(&mut self, kind: ContactKind) -> &mut BTreeMap<Key, i64> {
        match kind {
            ContactKind::Email => &mut self.emails,
            ContactKind::Phone => &mut self.phones,
        }
    }
}

fn insert(map: &mut BTreeMap<Key, Vec<i64>>, key: String, lead: i64) {
    let ids = map.entry(Key::from(key)).or_default();
    if let Err(at) = ids.binary_search(&lead) {
        ids.insert(at, lead);
    }
}

fn remove(map: &mut BTreeMap<Key, Vec<i64>>, key: &str, lead: i64) -> bool {
    let key = Key::new(key);
    let Some(ids) = map.get_mut(&key) else {
        return false;
    };
    let Ok(at) = ids.binary_search(&lead) else {
        return false;
    };
    ids.remove(at);
    if ids.is_empty() {
        map.remove(&key);
    }
    true
}

/// A key of the mirror's sorted maps: its first 16 bytes as one big-endian
/// integer (zero-padded), then the whole key. Ordered as the keys' bytes
/// are (as SQLite's indexes order them): a string that sorts before
/// another never has a larger head, and equal heads fall back to the
/// bytes. Most comparisons of a search are then one integer comparison
/// inside the tree's node instead of a string read behind a pointer (at a
/// million leads, those reads were a tenth of the import's writer thread).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    head: u128,
    full: Box<str>,
}

impl Key {
    fn new(s: &str) -> Key {
        Key::from(Box::<str>::from(s))
    }

    fn as_str(&self) -> &str {
        &self.full
    }
}

impl From<Box<str>> for Key {
    fn from(full: Box<str>) -> Key {
        let mut head = [0u8; 16];
        let n = full.len().min(16);
        head[..n].copy_from_slice(&full.as_bytes()[..n]);
        Key {
            head: u128::from_be_bytes(head),
            full,
        }
    }
}

impl From<String> for Key {
    fn from(s: String) -> Key {
        Key::from(s.into_boxed_str())
    }
}

/// SQLite's `PRAGMA data_version` (changes when another connection
/// commits); `None` on PostgreSQL, which has no such counter.
fn data_version(conn: &dyn Sql) -> Result<Option<i64>, DbError> {
    let Some(sqlite) = conn.as_sqlite() else {
        return Ok(None);
    };
    Ok(Some(sqlite.pragma_query_value(
        None,
        "data_version",
        |r| r.get(0),
    )?))
}

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, params};

    use super::*;

    fn db(path: &std::path::Path) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        super::super::migrate::migrate(&conn).unwrap();
        conn
    }

    fn add_lead(conn: &Connection, id: i64, name: &str, merged_into: Option<i64>) {
        let key = name_key(name);
        conn.execute(
            "INSERT INTO leads (id, name, name_key, name_rev, merged_into, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 't', 't')",
            params![id, name, key, reversed(&key), merged_into],
        )
        .unwrap();
    }

    fn add_contact(conn: &Connection, table: &str, lead: i64, value: &str) {
        conn.execute(
            &format!(
                "INSERT INTO {table} (lead_id, value, raw, created_at) VALUES (?1, ?2, ?2, 't')"
            ),
            params![lead, value],
        )
        .unwrap();
    }

    /// The mirror's keys sort as their bytes do, whatever they share:
    /// prefixes, NUL bytes, the 16-byte head, characters of several bytes.
    #[test]
    fn keys_sort_as_their_bytes() {
        let mut strings: Vec<String> = [
            "",
            "\0",
            "\0\0",
            "a",
            "a\0",
            "a\0b",
            "ab",
            "abc",
            "b",
            "é",
            "e\u{301}",
            "ё",
            "zz",
            "\u{10ffff}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let long = "thomas rogers jr"; // 16 bytes
        for tail in ["", "\0", "a", "ä", " x", "\0\0z"] {
            for cut in [14, 15, 16] {
                strings.push(format!("{}{tail}", &long[..cut]));
            }
        }
        for a in &strings {
            for b in &strings {
                assert_eq!(
                    Key::new(a).cmp(&Key::new(b)),
                    a.as_bytes().cmp(b.as_bytes()),
                    "{a:?} {b:?}"
                );
            }
        }
    }

    /// Namesakes (ties broken by id), folded leads (left out of names),
    /// keys below and above everything: the mirror answers what the index
    /// scans answer, and follows another connection's writes.
    #[test]
    fn the_mirror_gives_the_neighbours_the_indexes_give() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        let conn = db(&path);
        let names = [
            "ann lee",
            "ann leigh",
            "bob stone",
            "ann lee",
            "zoe ray",
            "ann lee",
        ];
        for i in 0..60i64 {
            let name = names[(i * 7 % 6) as usize];
            let merged = (i % 13 == 5).then_some(1);
            add_lead(
                &conn,
                i + 1,
                &format!("{name}{}", if i % 4 == 0 { "" } else { " x" }),
                merged,
            );
            add_contact(
                &conn,
                "lead_emails",
                i + 1,
                &format!("p{}@ex.com", i * 37 % 61),
            );
            add_contact(
                &conn,
                "lead_phones",
                i + 1,
                &format!("+1408555{:04}", i * 53 % 97),
            );
        }
        let mut mirror = Mirror::default();
        mirror.refresh(&conn).unwrap();
        let check = |mirror: &Mirror, conn: &Connection| {
            let keys = [
                "",
                "a",
                "ann lee",
                "ann lee x",
                "ann leigh",
                "bob",
                "zzz",
                "eel nna",
                "x eel nna",
                "p1@ex.com",
                "p30@ex.com",
                "q",
                "+14085550010",
                "+1408555",
                "+2",
            ];
            for index in [Index::Name, Index::NameRev, Index::Email, Index::Phone] {
                for key in keys {
                    assert_eq!(
                        mirror.neighbours(index, key),
                        duplicates::index_neighbours(conn, index, key).unwrap(),
                        "{index:?} {key:?}"
                    );
                }
            }
        };
        check(&mirror, &conn);

        // Changes followed as they are written.
        let changes = vec![
            Change::Name {
                old: Some("bob stone x".into()),
                new: "Ann Lee".into(),
                rule: "r".into(),
            },
            Change::Add {
                kind: ContactKind::Email,
                value: "p1@ex.com0".into(),
                raw: "x".into(),
                primary: false,
                rule: "r".into(),
            },
        ];
        let bob: i64 = conn
            .query_row(
                "SELECT id FROM leads WHERE name_key = 'bob stone x' AND merged_into IS NULL LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        conn.execute(
            "UPDATE leads SET name = 'Ann Lee', name_key = 'ann lee', name_rev = 'eel nna' WHERE id = ?1",
            [bob],
        )
        .unwrap();
        add_contact(&conn, "lead_emails", bob, "p1@ex.com0");
        mirror.follow(bob, &changes);
        assert!(!mirror.is_stale());
        check(&mirror, &conn);

        // Another connection writes: the mirror reads the database again.
        mirror.settle(&conn).unwrap();
        mirror.check(&conn).unwrap();
        assert!(!mirror.is_stale());
        let other = Connection::open(&path).unwrap();
        add_lead(&other, 100, "ann lee", None);
        add_contact(&other, "lead_phones", 100, "+14085550500");
        mirror.check(&conn).unwrap();
        assert!(mirror.is_stale());
        mirror.refresh(&conn).unwrap();
        check(&mirror, &conn);
    }
}
