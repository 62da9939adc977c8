//! Step 5: possible-duplicate detection for a new lead. Candidates are the
//! nearest neighbours of the lead's name, reversed name, emails and phones in
//! their sorted indexes: a few index seeks, never a scan, whatever the size of
//! the database. Each candidate value is scored by the CRM core.

use std::collections::HashMap;

use rusqlite::{Connection, params};

use super::DbError;
use super::leads;
use crate::crm::duplicates::{
    Attribute, email_similarity, name_similarity, phone_similarity, reversed,
};

/// Neighbours looked at on each side of a value in each index.
const NEIGHBOURS: i64 = 6;
/// Most duplicate links made for one new lead.
const MAX_LINKS: usize = 5;

/// What a new lead looks like to the detector.
#[derive(Debug, Default)]
pub struct Profile {
    /// Normalised name, if any.
    pub name_key: Option<String>,
    /// Normalised emails.
    pub emails: Vec<String>,
    /// Normalised phones.
    pub phones: Vec<String>,
}

/// Finds and links the possible duplicates of `lead`. Returns how many links were made.
pub fn detect(
    conn: &Connection,
    lead: i64,
    profile: &Profile,
    threshold: f64,
    at: &str,
) -> Result<usize, DbError> {
    // Best score per candidate lead, with what made it.
    let mut best: HashMap<i64, (f64, Attribute, String, String)> = HashMap::new();
    let mut consider = |other: i64, score: f64, attr: Attribute, mine: &str, theirs: String| {
        if other == lead || score < threshold {
            return;
        }
        let entry = best
            .entry(other)
            .or_insert((0.0, attr, String::new(), String::new()));
        if score > entry.0 {
            *entry = (score, attr, mine.to_owned(), theirs);
        }
    };
    if let Some(key) = &profile.name_key {
        for (other, theirs) in neighbours(conn, NAME_BELOW, NAME_ABOVE, key)? {
            consider(
                other,
                name_similarity(key, &theirs),
                Attribute::Name,
                key,
                theirs,
            );
        }
        let rev = reversed(key);
        for (other, theirs_rev) in neighbours(conn, REV_BELOW, REV_ABOVE, &rev)? {
            let theirs = reversed(&theirs_rev);
            consider(
                other,
                name_similarity(key, &theirs),
                Attribute::Name,
                key,
                theirs,
            );
        }
    }
    for email in &profile.emails {
        for (other, theirs) in neighbours(conn, EMAIL_BELOW, EMAIL_ABOVE, email)? {
            consider(
                other,
                email_similarity(email, &theirs),
                Attribute::Email,
                email,
                theirs,
            );
        }
    }
    for phone in &profile.phones {
        for (other, theirs) in neighbours(conn, PHONE_BELOW, PHONE_ABOVE, phone)? {
            consider(
                other,
                phone_similarity(phone, &theirs),
                Attribute::Phone,
                phone,
                theirs,
            );
        }
    }
    let mut ranked: Vec<_> = best.into_iter().collect();
    ranked.sort_by(|a, b| b.1.0.total_cmp(&a.1.0).then(a.0.cmp(&b.0)));
    let mut linked = 0;
    for (other, (score, attr, mine, theirs)) in ranked.into_iter().take(MAX_LINKS) {
        let other = leads::survivor(conn, other)?;
        let what = match attr {
            Attribute::Name => "similar name",
            Attribute::Email => "similar email",
            Attribute::Phone => "similar phone",
        };
        let reason = format!("{what}: {mine:?} ~ {theirs:?} ({:.0}%)", score * 100.0);
        if leads::link_duplicate(conn, lead, other, score, &reason, at)? {
            linked += 1;
        }
    }
    Ok(linked)
}

const NAME_BELOW: &str = "SELECT id, name_key FROM leads WHERE name_key < ?1 AND merged_into IS NULL ORDER BY name_key DESC LIMIT ?2";
const NAME_ABOVE: &str = "SELECT id, name_key FROM leads WHERE name_key >= ?1 AND merged_into IS NULL ORDER BY name_key LIMIT ?2";
const REV_BELOW: &str = "SELECT id, name_rev FROM leads WHERE name_rev < ?1 AND merged_into IS NULL ORDER BY name_rev DESC LIMIT ?2";
const REV_ABOVE: &str = "SELECT id, name_rev FROM leads WHERE name_rev >= ?1 AND merged_into IS NULL ORDER BY name_rev LIMIT ?2";
const EMAIL_BELOW: &str =
    "SELECT lead_id, value FROM lead_emails WHERE value < ?1 ORDER BY value DESC LIMIT ?2";
const EMAIL_ABOVE: &str =
    "SELECT lead_id, value FROM lead_emails WHERE value > ?1 ORDER BY value LIMIT ?2";
const PHONE_BELOW: &str =
    "SELECT lead_id, value FROM lead_phones WHERE value < ?1 ORDER BY value DESC LIMIT ?2";
const PHONE_ABOVE: &str =
    "SELECT lead_id, value FROM lead_phones WHERE value > ?1 ORDER BY value LIMIT ?2";

fn neighbours(
    conn: &Connection,
    below: &str,
    above: &str,
    key: &str,
) -> Result<Vec<(i64, String)>, DbError> {
    let mut out = Vec::with_capacity(2 * NEIGHBOURS as usize);
    for sql in [below, above] {
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params![key, NEIGHBOURS], |r| Ok((r.get(0)?, r.get(1)?)))?;
        for row in rows {
            out.push(row?);
        }
    }
    Ok(out)
}
