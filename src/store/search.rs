//! Finding leads by name, email or phone, for `GET /leads?q=` and
//! `GET /api/leads?q=`: exact matches first, then values that start (or a
//! name that ends) with the query, then near matches (typos) ranked by
//! Jaro-Winkler. Candidates come from a few seeks in the sorted indexes of
//! names, reversed names, emails and phones, never a scan of every lead, so
//! the work per search is bounded however many leads there are.
//!
//! Pages are cut by a cursor holding the last hit's sort key (tier, score,
//! id). A hit's key depends only on the lead's stored values and the query,
//! so a lead created between two pages never shifts or repeats the others.

pub mod filters;
mod rank;

use std::collections::HashMap;

use strsim::jaro_winkler;

use super::DbError;
use super::leads;
use super::sql::Sql;
use crate::args;
use crate::crm::duplicates::{email_similarity, phone_similarity, reversed};
use crate::crm::identity::{Email, Phone, name_key};
use crate::crm::merge::ContactKind;
pub use rank::{Cursor, Hit, Tier};
use rank::{NEAR_MIN, exact, near, prefix, rank_name};

/// Prefix (and suffix) matches read from each index: the most a query that
/// matches very many leads can list; the sales team refines such a query.
const PREFIX_MAX: i64 = 200;
/// Index neighbours looked at on each side of the query for near matches.
const NEIGHBOURS: i64 = 20;
/// Phones differ in one digit at far higher similarity than names do.
const NEAR_MIN_PHONE: f64 = 0.93;

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
    conn: &dyn Sql,
    query: &Query,
    region: phonenumber::country::Id,
) -> Result<(Vec<Hit>, Option<Cursor>), DbError> {
    let limit = query.limit.clamp(1, 100);
    let hits = match ranked(conn, query, region)? {
        Some(hits) => hits,
        None => newest(conn, query.cursor.map_or(i64::MAX, |c| c.id), limit)?,
    };
    Ok(page(hits, query.cursor, limit))
}

/// The page of `hits` (in any order) after `cursor`, best first, and the
/// cursor of the next page.
fn page(mut hits: Vec<Hit>, cursor: Option<Cursor>, limit: usize) -> (Vec<Hit>, Option<Cursor>) {
    hits.sort_by_key(Hit::key);
    if let Some(cursor) = cursor {
        hits.retain(|h| cursor.precedes(h));
    }
    let next = (hits.len() > limit).then(|| Cursor::of(&hits[limit - 1]));
    hits.truncate(limit);
    (hits, next)
}

/// Every lead a search by text, email or phone finds (each candidate once,
/// in no particular order), or `None` when the query has none of them.
fn ranked(
    conn: &dyn Sql,
    query: &Query,
    region: phonenumber::country::Id,
) -> Result<Option<Vec<Hit>>, DbError> {
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
    Ok(match (q, only) {
        (Some(q), only) => {
            let mut hits = candidates(conn, q, region)?;
            if let Some(only) = only {
                hits.retain(|h| only.contains(&h.id));
            }
            Some(hits)
        }
        (None, Some(only)) => Some(only.into_iter().map(listed).collect()),
        (None, None) => None,
    })
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
fn newest(conn: &dyn Sql, before: i64, limit: usize) -> Result<Vec<Hit>, DbError> {
    conn.query_all(NEWEST, args![before, limit as i64 + 1], |r| {
        Ok(listed(r.get(0)?))
    })
}

fn owner_of(
    conn: &dyn Sql,
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
    conn: &dyn Sql,
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
    // The prefix seeks differ by dialect (see `NAME_PREFIX_PG`).
    let pick = |sqlite, postgres| conn.dialect().pick(sqlite, postgres);
    let key = name_key(q);
    if !key.is_empty() {
        for (id, theirs) in rows(conn, pick(NAME_PREFIX, NAME_PREFIX_PG), &key, PREFIX_MAX)? {
            offer(rank_name(id, &key, &theirs));
        }
        let rev = reversed(&key);
        for (id, theirs_rev) in rows(conn, pick(REV_PREFIX, REV_PREFIX_PG), &rev, PREFIX_MAX)? {
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
                let score = email_similarity(&email.normalized, &theirs, 0.0);
                offer(near(id, score, NEAR_MIN, "similar email"));
            }
        }
    }
    for (id, theirs) in rows(conn, pick(EMAIL_PREFIX, EMAIL_PREFIX_PG), &text, PREFIX_MAX)? {
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
        for (id, theirs) in rows(
            conn,
            pick(PHONE_PREFIX, PHONE_PREFIX_PG),
            &start,
            PREFIX_MAX,
        )? {
            offer(prefix(
                id,
                jaro_winkler(&start, &theirs),
                "phone starts with",
            ));
        }
    }
    Ok(best.into_values().filter(|h| h.score > 0).collect())
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
// A prefix seek bounds the range above with the prefix followed by the
// greatest character, U+10FFFF (UTF-8 f4 8f bf bf). SQLite appends its bytes
// as a blob; in PostgreSQL `x'..'` is a bit string, so the character is
// written `chr(1114111)` there. Both compare the bytes (COLLATE "C").
const NAME_PREFIX_PG: &str = "SELECT id, name_key FROM leads WHERE name_key >= ?1 AND name_key < ?1 || chr(1114111) AND merged_into IS NULL ORDER BY name_key LIMIT ?2";
const REV_PREFIX_PG: &str = "SELECT id, name_rev FROM leads WHERE name_rev >= ?1 AND name_rev < ?1 || chr(1114111) AND merged_into IS NULL ORDER BY name_rev LIMIT ?2";
const EMAIL_PREFIX_PG: &str = "SELECT lead_id, value FROM lead_emails WHERE value >= ?1 AND value < ?1 || chr(1114111) ORDER BY value LIMIT ?2";
const PHONE_PREFIX_PG: &str = "SELECT lead_id, value FROM lead_phones WHERE value >= ?1 AND value < ?1 || chr(1114111) ORDER BY value LIMIT ?2";
const PHONE_BELOW: &str =
    "SELECT lead_id, value FROM lead_phones WHERE value < ?1 ORDER BY value DESC LIMIT ?2";
const PHONE_ABOVE: &str =
    "SELECT lead_id, value FROM lead_phones WHERE value > ?1 ORDER BY value LIMIT ?2";

/// Runs one index seek: `sql` takes the value and a row limit.
fn rows(conn: &dyn Sql, sql: &str, value: &str, limit: i64) -> Result<Vec<(i64, String)>, DbError> {
    conn.query_all(sql, args![value, limit], |r| Ok((r.get(0)?, r.get(1)?)))
}

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, params};

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
}
