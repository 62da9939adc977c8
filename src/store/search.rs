//! Finding leads by name, email or phone, for `GET /leads?q=` and
//! `GET /api/leads?q=`: exact matches first, then values that start (or a
//! name that ends) with the query, then near matches (typos) ranked by
//! Jaro-Winkler. Candidates come from a few seeks in the sorted indexes of
//! names, reversed names, emails and phones, never a scan of every lead, so
//! a search costs the same on a thousand leads as on millions.
//!
//! Pages are cut by a cursor holding the last hit's sort key (tier, score,
//! id). A hit's key depends only on the lead's stored values and the query,
//! so a lead created between two pages never shifts or repeats the others.

use std::collections::HashMap;
use std::fmt;

use rusqlite::{Connection, params};
use strsim::jaro_winkler;

use super::DbError;
use super::leads;
use crate::crm::duplicates::{email_similarity, phone_similarity, reversed};
use crate::crm::identity::{Email, Phone, name_key};
use crate::crm::merge::ContactKind;

/// Prefix (and suffix) matches read from each index: the most a query that
/// matches very many leads can list; the sales team refines such a query.
const PREFIX_MAX: i64 = 200;
/// Index neighbours looked at on each side of the query for near matches.
const NEIGHBOURS: i64 = 20;
/// Near matches below this similarity are noise.
const NEAR_MIN: f64 = 0.85;
/// Phones differ in one digit at far higher similarity than names do.
const NEAR_MIN_PHONE: f64 = 0.93;
/// Scores are kept in millionths so that a cursor compares exactly.
const SCALE: f64 = 1_000_000.0;

/// How a hit matched, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    /// The whole email, phone or name equals the query.
    Exact = 0,
    /// The email, phone or name starts with the query, or the name ends with it.
    Prefix = 1,
    /// Similar, within a few typos.
    Near = 2,
}

/// One lead a search found, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The lead.
    pub id: i64,
    /// How it matched.
    pub tier: Tier,
    /// Similarity to the query in millionths (0 when listing without a query).
    pub score: u32,
    /// What matched, for people: `email`, `name starts with`, `similar phone`, ….
    pub why: &'static str,
}

impl Hit {
    /// The hit's place in the ranking: tier, then score (higher first), then newest.
    fn key(&self) -> (Tier, std::cmp::Reverse<u32>, std::cmp::Reverse<i64>) {
        (
            self.tier,
            std::cmp::Reverse(self.score),
            std::cmp::Reverse(self.id),
        )
    }

    /// Similarity as a fraction of 1.
    pub fn similarity(&self) -> f64 {
        f64::from(self.score) / SCALE
    }
}

/// Where the previous page ended: the sort key of its last hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    tier: Tier,
    score: u32,
    id: i64,
}

impl Cursor {
    /// Parses a `next` value; a bare lead id is accepted too (a listing
    /// without a query ranks by id alone).
    pub fn parse(s: &str) -> Option<Cursor> {
        let parts: Vec<&str> = s.split('.').collect();
        let (tier, score, id) = match parts.as_slice() {
            [id] => (Tier::Exact, 0, id.parse().ok()?),
            [tier, score, id] => {
                let tier = match *tier {
                    "0" => Tier::Exact,
                    "1" => Tier::Prefix,
                    "2" => Tier::Near,
                    _ => return None,
                };
                (tier, score.parse().ok()?, id.parse().ok()?)
            }
            _ => return None,
        };
        Some(Cursor { tier, score, id })
    }

    fn of(hit: &Hit) -> Cursor {
        Cursor {
            tier: hit.tier,
            score: hit.score,
            id: hit.id,
        }
    }

    /// Whether `hit` comes after this cursor in the ranking.
    fn precedes(&self, hit: &Hit) -> bool {
        let me = Hit {
            id: self.id,
            tier: self.tier,
            score: self.score,
            why: "",
        };
        hit.key() > me.key()
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tier == Tier::Exact && self.score == 0 {
            write!(f, "{}", self.id)
        } else {
            write!(f, "{}.{}.{}", self.tier as u8, self.score, self.id)
        }
    }
}

/// A search over leads.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Exact email (any case): only the lead owning it.
    pub email: Option<String>,
    /// Phone in any format: only the lead owning it.
    pub phone: Option<String>,
    /// Free text: a name, an email or a phone, exact or nearly.
    pub q: Option<String>,
    /// Where the previous page ended.
    pub cursor: Option<Cursor>,
    /// Page size (1..100).
    pub limit: usize,
}

/// One page of hits, best first, and the cursor of the next page.
pub fn search(
    conn: &Connection,
    query: &Query,
    region: phonenumber::country::Id,
) -> Result<(Vec<Hit>, Option<Cursor>), DbError> {
    let limit = query.limit.clamp(1, 100);
    let mut only: Option<Vec<i64>> = None;
    if let Some(email) = query.email.as_deref() {
        let owner = owner_of(
            conn,
            ContactKind::Email,
            Email::parse(email).map(|e| e.normalized),
        )?;
        only = Some(owner.into_iter().collect());
    }
    if let Some(phone) = query.phone.as_deref() {
        let owner = owner_of(
            conn,
            ContactKind::Phone,
            Phone::parse(phone, region).map(|p| p.normalized),
        )?;
        only = Some(match only {
            None => owner.into_iter().collect(),
            Some(prev) => prev.into_iter().filter(|id| Some(*id) == owner).collect(),
        });
    }
    let q = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let mut hits = match (q, only) {
        (Some(q), only) => {
            let mut hits = candidates(conn, q, region)?;
            if let Some(only) = only {
                hits.retain(|h| only.contains(&h.id));
            }
            hits
        }
        (None, Some(only)) => only.into_iter().map(listed).collect(),
        (None, None) => newest(conn, query.cursor.map_or(i64::MAX, |c| c.id), limit)?,
    };
    hits.sort_by_key(Hit::key);
    if let Some(cursor) = query.cursor {
        hits.retain(|h| cursor.precedes(h));
    }
    let next = (hits.len() > limit).then(|| Cursor::of(&hits[limit - 1]));
    hits.truncate(limit);
    Ok((hits, next))
}

/// A hit of a listing without a query: ranked by id alone.
fn listed(id: i64) -> Hit {
    Hit {
        id,
        tier: Tier::Exact,
        score: 0,
        why: "",
    }
}

/// The newest leads below `before`: one more than a page, to know if another follows.
fn newest(conn: &Connection, before: i64, limit: usize) -> Result<Vec<Hit>, DbError> {
    let mut stmt = conn.prepare_cached(NEWEST)?;
    let rows = stmt.query_map(params![before, limit as i64 + 1], |r| r.get(0))?;
    rows.map(|id| Ok(listed(id?))).collect()
}

fn owner_of(
    conn: &Connection,
    kind: ContactKind,
    value: Option<String>,
) -> Result<Option<i64>, DbError> {
    match value {
        Some(v) => leads::contact_owner(conn, kind, &v),
        None => Ok(None),
    }
}

/// Every lead the query may mean, each with its best match.
fn candidates(
    conn: &Connection,
    q: &str,
    region: phonenumber::country::Id,
) -> Result<Vec<Hit>, DbError> {
    let mut best: HashMap<i64, Hit> = HashMap::new();
    let mut offer = |hit: Hit| {
        let entry = best.entry(hit.id).or_insert_with(|| hit.clone());
        if hit.key() < entry.key() {
            *entry = hit;
        }
    };
    let key = name_key(q);
    if !key.is_empty() {
        for (id, theirs) in rows(conn, NAME_PREFIX, &key, PREFIX_MAX)? {
            offer(rank_name(id, &key, &theirs));
        }
        let rev = reversed(&key);
        for (id, theirs_rev) in rows(conn, REV_PREFIX, &rev, PREFIX_MAX)? {
            offer(rank_name(id, &key, &reversed(&theirs_rev)));
        }
        for sql in [NAME_BELOW, NAME_ABOVE] {
            for (id, theirs) in rows(conn, sql, &key, NEIGHBOURS)? {
                offer(rank_name(id, &key, &theirs));
            }
        }
        for sql in [REV_BELOW, REV_ABOVE] {
            for (id, theirs_rev) in rows(conn, sql, &rev, NEIGHBOURS)? {
                offer(rank_name(id, &key, &reversed(&theirs_rev)));
            }
        }
    }
    let text = q.to_lowercase();
    if let Some(email) = Email::parse(q) {
        if let Some(id) = leads::contact_owner(conn, ContactKind::Email, &email.normalized)? {
            offer(exact(id, "email"));
        }
        for sql in [EMAIL_BELOW, EMAIL_ABOVE] {
            for (id, theirs) in rows(conn, sql, &email.normalized, NEIGHBOURS)? {
                let score = email_similarity(&email.normalized, &theirs);
                offer(near(id, score, NEAR_MIN, "similar email"));
            }
        }
    }
    for (id, theirs) in rows(conn, EMAIL_PREFIX, &text, PREFIX_MAX)? {
        offer(prefix(
            id,
            jaro_winkler(&text, &theirs),
            "email starts with",
        ));
    }
    if let Some(phone) = Phone::parse(q, region) {
        if let Some(id) = leads::contact_owner(conn, ContactKind::Phone, &phone.normalized)? {
            offer(exact(id, "phone"));
        }
        for sql in [PHONE_BELOW, PHONE_ABOVE] {
            for (id, theirs) in rows(conn, sql, &phone.normalized, NEIGHBOURS)? {
                let score = phone_similarity(&phone.normalized, &theirs);
                offer(near(id, score, NEAR_MIN_PHONE, "similar phone"));
            }
        }
    }
    // The start of a number in international form: `+1408`, `1 408`.
    let digits: String = q.chars().filter(char::is_ascii_digit).collect();
    let phone_like = q
        .chars()
        .all(|c| c.is_ascii_digit() || " +-().".contains(c));
    if phone_like && digits.len() >= 3 {
        let start = format!("+{digits}");
        for (id, theirs) in rows(conn, PHONE_PREFIX, &start, PREFIX_MAX)? {
            offer(prefix(
                id,
                jaro_winkler(&start, &theirs),
                "phone starts with",
            ));
        }
    }
    Ok(best.into_values().filter(|h| h.score > 0).collect())
}

fn millionths(score: f64) -> u32 {
    (score.clamp(0.0, 1.0) * SCALE).round() as u32
}

fn exact(id: i64, why: &'static str) -> Hit {
    Hit {
        id,
        tier: Tier::Exact,
        score: millionths(1.0),
        why,
    }
}

fn prefix(id: i64, score: f64, why: &'static str) -> Hit {
    Hit {
        id,
        tier: Tier::Prefix,
        // A prefix match is a match however long the rest: never 0.
        score: millionths(score).max(1),
        why,
    }
}

/// A near match, or a score of 0 (dropped) below `min`.
fn near(id: i64, score: f64, min: f64, why: &'static str) -> Hit {
    Hit {
        id,
        tier: Tier::Near,
        score: if score >= min { millionths(score) } else { 0 },
        why,
    }
}

/// Ranks a lead's normalised name against the normalised query.
fn rank_name(id: i64, key: &str, theirs: &str) -> Hit {
    if theirs == key {
        return exact(id, "name");
    }
    let whole = jaro_winkler(key, theirs);
    if theirs.starts_with(key) {
        return prefix(id, whole, "name starts with");
    }
    // The last name alone, say: the query must end the name at a word boundary.
    if theirs
        .strip_suffix(key)
        .is_some_and(|rest| rest.ends_with(' '))
    {
        return prefix(id, whole, "name ends with");
    }
    // A one-word query is usually a first or last name: compare it word by word too.
    let by_word = if key.contains(' ') {
        0.0
    } else {
        theirs
            .split(' ')
            .map(|w| jaro_winkler(key, w))
            .fold(0.0, f64::max)
    };
    near(id, whole.max(by_word), NEAR_MIN, "similar name")
}

const NEWEST: &str =
    "SELECT id FROM leads WHERE merged_into IS NULL AND id < ?1 ORDER BY id DESC LIMIT ?2";
const NAME_PREFIX: &str = "SELECT id, name_key FROM leads WHERE name_key >= ?1 AND name_key < ?1 || x'f48fbfbf' AND merged_into IS NULL ORDER BY name_key LIMIT ?2";
const REV_PREFIX: &str = "SELECT id, name_rev FROM leads WHERE name_rev >= ?1 AND name_rev < ?1 || x'f48fbfbf' AND merged_into IS NULL ORDER BY name_rev LIMIT ?2";
const NAME_BELOW: &str = "SELECT id, name_key FROM leads WHERE name_key < ?1 AND merged_into IS NULL ORDER BY name_key DESC LIMIT ?2";
const NAME_ABOVE: &str = "SELECT id, name_key FROM leads WHERE name_key > ?1 AND merged_into IS NULL ORDER BY name_key LIMIT ?2";
const REV_BELOW: &str = "SELECT id, name_rev FROM leads WHERE name_rev < ?1 AND merged_into IS NULL ORDER BY name_rev DESC LIMIT ?2";
const REV_ABOVE: &str = "SELECT id, name_rev FROM leads WHERE name_rev > ?1 AND merged_into IS NULL ORDER BY name_rev LIMIT ?2";
const EMAIL_PREFIX: &str = "SELECT lead_id, value FROM lead_emails WHERE value >= ?1 AND value < ?1 || x'f48fbfbf' ORDER BY value LIMIT ?2";
const EMAIL_BELOW: &str =
    "SELECT lead_id, value FROM lead_emails WHERE value < ?1 ORDER BY value DESC LIMIT ?2";
const EMAIL_ABOVE: &str =
    "SELECT lead_id, value FROM lead_emails WHERE value > ?1 ORDER BY value LIMIT ?2";
const PHONE_PREFIX: &str = "SELECT lead_id, value FROM lead_phones WHERE value >= ?1 AND value < ?1 || x'f48fbfbf' ORDER BY value LIMIT ?2";
const PHONE_BELOW: &str =
    "SELECT lead_id, value FROM lead_phones WHERE value < ?1 ORDER BY value DESC LIMIT ?2";
const PHONE_ABOVE: &str =
    "SELECT lead_id, value FROM lead_phones WHERE value > ?1 ORDER BY value LIMIT ?2";

/// Runs one index seek: `sql` takes the value and a row limit.
fn rows(
    conn: &Connection,
    sql: &str,
    value: &str,
    limit: i64,
) -> Result<Vec<(i64, String)>, DbError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params![value, limit], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: phonenumber::country::Id = phonenumber::country::Id::US;

    /// A fresh in-memory database holding leads `(name, email, phone)`; ids from 1.
    fn db(leads: &[(&str, Option<&str>, Option<&str>)]) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        super::super::migrate::migrate(&conn).unwrap();
        let at = "2026-11-23T10:00:00.000Z";
        for (name, email, phone) in leads {
            let key = name_key(name);
            conn.execute(
                "INSERT INTO leads (name, name_key, name_rev, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)",
                params![name, key, reversed(&key), at],
            )
            .unwrap();
            let id = conn.last_insert_rowid();
            if let Some(e) = email {
                conn.execute(
                    "INSERT INTO lead_emails (lead_id, value, raw, is_primary, created_at) VALUES (?1, ?2, ?2, 1, ?3)",
                    params![id, e, at],
                )
                .unwrap();
            }
            if let Some(p) = phone {
                conn.execute(
                    "INSERT INTO lead_phones (lead_id, value, raw, is_primary, created_at) VALUES (?1, ?2, ?2, 1, ?3)",
                    params![id, p, at],
                )
                .unwrap();
            }
        }
        conn
    }

    fn find(conn: &Connection, q: &str) -> Vec<(i64, Tier)> {
        let query = Query {
            q: Some(q.into()),
            limit: 100,
            ..Query::default()
        };
        let (hits, _) = search(conn, &query, US).unwrap();
        hits.into_iter().map(|h| (h.id, h.tier)).collect()
    }

    #[test]
    fn names_rank_exact_then_prefix_then_typos() {
        assert_eq!(rank_name(1, "john smith", "john smith").tier, Tier::Exact);
        assert_eq!(rank_name(1, "john", "john smith").tier, Tier::Prefix);
        assert_eq!(rank_name(1, "smith", "john smith").tier, Tier::Prefix);
        let typo = rank_name(1, "jon smith", "john smith");
        assert_eq!(typo.tier, Tier::Near);
        assert!(typo.similarity() > 0.9);
        assert_eq!(rank_name(1, "smyth", "john smith").tier, Tier::Near);
        assert_eq!(rank_name(1, "john smith", "mary brown").score, 0);
    }

    #[test]
    fn exact_matches_come_before_near_ones() {
        let conn = db(&[
            ("John Smith", Some("john@acme.com"), Some("+14084987855")),
            ("Jon Smith", None, None),
            ("Johnny Smithers", None, None),
            ("Mary Brown", Some("mary@acme.com"), None),
        ]);
        assert_eq!(
            find(&conn, "jon smith"),
            vec![(2, Tier::Exact), (1, Tier::Near)]
        );
        let found = find(&conn, "John Smith");
        assert_eq!(found[0], (1, Tier::Exact));
        assert!(found.contains(&(2, Tier::Near)));
        assert!(!found.iter().any(|(id, _)| *id == 4));
        assert_eq!(
            find(&conn, "john")[0..2],
            [(1, Tier::Prefix), (3, Tier::Prefix)]
        );
        assert_eq!(find(&conn, "MARY@acme.com")[0], (4, Tier::Exact));
        assert_eq!(find(&conn, "(408) 498-7855"), vec![(1, Tier::Exact)]);
        assert_eq!(find(&conn, "(408) 498-7856"), vec![(1, Tier::Near)]);
        assert_eq!(find(&conn, "+1 408"), vec![(1, Tier::Prefix)]);
        assert!(find(&conn, "zzz").is_empty());
    }

    #[test]
    fn pages_follow_the_ranking_and_ignore_newcomers() {
        let conn = db(&[
            ("Anna Lee", None, None),
            ("Anna Leigh", None, None),
            ("Anna Lees", None, None),
            ("Hanna Lee", None, None),
        ]);
        let page = |cursor: Option<Cursor>| {
            let query = Query {
                q: Some("anna lee".into()),
                cursor,
                limit: 2,
                ..Query::default()
            };
            search(&conn, &query, US).unwrap()
        };
        let (first, next) = page(None);
        assert_eq!(first.iter().map(|h| h.id).collect::<Vec<_>>(), [1, 3]);
        let next = next.unwrap();
        assert_eq!(Cursor::parse(&next.to_string()), Some(next));
        conn.execute(
            "INSERT INTO leads (name, name_key, name_rev, created_at, updated_at)
             VALUES ('Anna Lee', 'anna lee', 'eel anna', 'x', 'x')",
            [],
        )
        .unwrap();
        let (second, _) = page(Some(next));
        let ids: Vec<i64> = second.iter().map(|h| h.id).collect();
        assert!(!ids.contains(&1) && !ids.contains(&3) && !ids.contains(&5));
        assert_eq!(second[0].tier, Tier::Near);
    }

    #[test]
    fn every_search_statement_seeks_an_index_and_never_scans() {
        let conn = db(&[]);
        for sql in [
            NAME_PREFIX,
            REV_PREFIX,
            NAME_BELOW,
            NAME_ABOVE,
            REV_BELOW,
            REV_ABOVE,
            EMAIL_PREFIX,
            EMAIL_BELOW,
            EMAIL_ABOVE,
            PHONE_PREFIX,
            PHONE_BELOW,
            PHONE_ABOVE,
            NEWEST,
        ] {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let plan: Vec<String> = stmt
                .query_map(params!["abc", 10], |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                plan.iter().all(|step| step.starts_with("SEARCH")
                    && (step.contains("INDEX") || step.contains("PRIMARY KEY"))),
                "{sql}: {plan:?}"
            );
        }
    }

    #[test]
    fn cursors_parse_only_what_they_print() {
        assert_eq!(Cursor::parse("42").unwrap().id, 42);
        let c = Cursor::parse("2.930000.7").unwrap();
        assert_eq!(c.to_string(), "2.930000.7");
        for bad in ["", "x", "3.1.1", "1.2", "1.-1.2", "1.2.3.4"] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }
}
