//! Step 5: possible-duplicate detection for a new lead. Candidates are the
//! nearest neighbours of the lead's name, reversed name, emails and phones in
//! their sorted indexes: a few index seeks, never a scan, whatever the size of
//! the database. Each candidate value is scored by the CRM core.

use std::collections::HashMap;

use super::DbError;
use super::leads;
use super::sql::{CellRef, Dialect, Query, Row, Sql, Value};
use crate::args;
use crate::crm::duplicates::{
    Attribute, email_similarity, name_similarity, phone_similarity, push_quoted, reverse_into,
    reversed,
};

/// Neighbours looked at on each side of a value in each index: the `LIMIT 6`
/// of the statements below. It is a literal, not a bound parameter, because
/// SQLite recompiles a statement whenever a parameter its LIMIT depends on is
/// rebound (that alone made every new lead re-prepare eight statements).
pub const NEIGHBOURS: usize = 6;
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

/// A possible-duplicate link made for a new lead.
#[derive(Debug, Clone, PartialEq)]
pub struct Similar {
    /// The other lead.
    pub lead: i64,
    /// How alike, 0..1.
    pub score: f64,
    /// Why, in words.
    pub reason: String,
}

/// Finds and links the possible duplicates of `lead`. Returns the links
/// made.
pub fn detect(
    conn: &dyn Sql,
    lead: i64,
    profile: &Profile,
    threshold: f64,
    at: &str,
) -> Result<Vec<Similar>, DbError> {
    let found = match conn.dialect() {
        // In-process reads cost less than copying what they return.
        Dialect::Sqlite => candidates(conn, lead, profile, threshold, |index, key, visit| {
            visit_neighbours(conn, index, key, visit)
        })?,
        // Every index read in one round trip, before any is scored.
        Dialect::Postgres => {
            let fetched = fetch_neighbours(conn, profile)?;
            candidates(conn, lead, profile, threshold, |index, key, visit| {
                let rows = fetched.iter().find(|(i, k, _)| *i == index && k == key);
                for (owner, value) in rows.into_iter().flat_map(|(_, _, rows)| rows) {
                    visit(*owner, value);
                }
                Ok(())
            })?
        }
    };
    let mut linked = Vec::with_capacity(found.len());
    for similar in found {
        if leads::link_duplicate(conn, lead, similar.lead, similar.score, &similar.reason, at)? {
            linked.push(similar);
        }
    }
    Ok(linked)
}

/// A key, the index it is looked up in, and its neighbours there.
type Neighbours = (Index, String, Vec<(Owner, String)>);

/// The neighbours of every key of `profile` in its index, as
/// [`visit_neighbours`] visits them, read together.
fn fetch_neighbours(conn: &dyn Sql, profile: &Profile) -> Result<Vec<Neighbours>, DbError> {
    let mut keys: Vec<(Index, String)> = Vec::new();
    if let Some(key) = &profile.name_key {
        keys.push((Index::Name, key.clone()));
        keys.push((Index::NameRev, reversed(key)));
    }
    keys.extend(profile.emails.iter().map(|e| (Index::Email, e.clone())));
    keys.extend(profile.phones.iter().map(|p| (Index::Phone, p.clone())));
    let args: Vec<[Value<'_>; 1]> = keys.iter().map(|(_, key)| [Value::of(key)]).collect();
    let mut queries = Vec::with_capacity(2 * keys.len());
    for ((index, _), args) in keys.iter().zip(&args) {
        let (below, above) = neighbour_queries(*index, conn.dialect());
        queries.push(Query::new(below, args));
        queries.push(Query::new(above, args));
    }
    let mut fetched: Vec<_> = keys
        .iter()
        .map(|(index, key)| (*index, key.clone(), Vec::new()))
        .collect();
    conn.each_row_of(&queries, &mut |query, row| {
        let (index, _, rows) = &mut fetched[query / 2];
        rows.push((owner_of(*index)(row.get(0)?), row.get(1)?));
        Ok(())
    })?;
    Ok(fetched)
}

/// The statements reading the neighbours below and above a key.
fn neighbour_queries(index: Index, dialect: Dialect) -> (&'static str, &'static str) {
    match (index, dialect) {
        (Index::Name, Dialect::Sqlite) => (NAME_BELOW, NAME_ABOVE),
        (Index::Name, Dialect::Postgres) => (PG_NAME_BELOW, PG_NAME_ABOVE),
        (Index::NameRev, Dialect::Sqlite) => (REV_BELOW, REV_ABOVE),
        (Index::NameRev, Dialect::Postgres) => (PG_REV_BELOW, PG_REV_ABOVE),
        // Values are unique: no ties to order.
        (Index::Email, _) => (EMAIL_BELOW, EMAIL_ABOVE),
        (Index::Phone, _) => (PHONE_BELOW, PHONE_ABOVE),
    }
}

/// What the ids an index holds are.
fn owner_of(index: Index) -> fn(i64) -> Owner {
    match index {
        Index::Name | Index::NameRev => Owner::Lead,
        Index::Email | Index::Phone => Owner::Contact,
    }
}

/// The neighbours of `key` in `index`, looked up in the database (see
/// [`candidates`] for the order), each with the lead it belongs to.
#[cfg(test)]
pub fn index_neighbours(
    conn: &dyn Sql,
    index: Index,
    key: &str,
) -> Result<Vec<(i64, String)>, DbError> {
    let mut found = Vec::with_capacity(2 * NEIGHBOURS);
    visit_neighbours(conn, index, key, &mut |owner, value| {
        found.push((owner, value.to_owned()))
    })?;
    found
        .into_iter()
        .map(|(owner, value)| Ok((owner.lead(conn, index)?, value)))
        .collect()
}

/// Whom a neighbour belongs to, as its index tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// A lead: the name indexes hold lead ids (and the import's in-memory
    /// copy of every index does).
    Lead(i64),
    /// A row of `lead_emails` or `lead_phones`: the database's indexes of
    /// values hold the row's id, not its lead's, which is read only for a
    /// neighbour that reaches the threshold (reading it for each was a seek
    /// into the table per neighbour, two dozen per new lead).
    Contact(i64),
}

impl Owner {
    /// The lead, read from the contact table behind `index` for a
    /// [`Owner::Contact`].
    fn lead(self, conn: &dyn Sql, index: Index) -> Result<i64, DbError> {
        let (id, sql) = match (self, index) {
            (Owner::Lead(lead), _) => return Ok(lead),
            (Owner::Contact(id), Index::Email) => {
                (id, "SELECT lead_id FROM lead_emails WHERE id = ?1")
            }
            (Owner::Contact(id), _) => (id, "SELECT lead_id FROM lead_phones WHERE id = ?1"),
        };
        conn.query_row(sql, args![id], |r| r.get(0))
    }
}

/// Calls `visit` with each neighbour of `key` in `index`, in the order of
/// [`candidates`], the value borrowed from the row as the store holds it.
fn visit_neighbours(
    conn: &dyn Sql,
    index: Index,
    key: &str,
    visit: &mut dyn FnMut(Owner, &str),
) -> Result<(), DbError> {
    let (below, above) = neighbour_queries(index, conn.dialect());
    let owner = owner_of(index);
    for sql in [below, above] {
        conn.each_row(sql, args![key], &mut |row| {
            let value = borrowed_text(row, 1)?;
            visit(owner(row.get(0)?), value);
            Ok(())
        })?;
    }
    Ok(())
}

/// Column `i` of `row` as text borrowed from the row: [`Row::get`] gives an
/// owned `String`, a copy per neighbour where only a candidate's best value
/// is ever kept.
fn borrowed_text<'r>(row: &'r Row<'_>, i: usize) -> Result<&'r str, DbError> {
    let cell = match row {
        Row::Sqlite(row) => CellRef::from(row.get_ref(i)?),
        Row::Postgres(row) => row.try_get::<_, CellRef<'_>>(i)?,
    };
    match cell {
        CellRef::Text(text) => Ok(text),
        other => Err(DbError::Internal(format!(
            "column {i}: expected text, found {other:?}"
        ))),
    }
}

/// The sorted indexes whose neighbours are candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Index {
    /// `leads.name_key` of leads not folded; equal keys in id order.
    Name,
    /// `leads.name_rev`, likewise.
    NameRev,
    /// `lead_emails.value`.
    Email,
    /// `lead_phones.value`.
    Phone,
}

/// The lead of a neighbour in a name index, which holds lead ids.
fn lead_of(owner: Owner) -> i64 {
    debug_assert!(matches!(owner, Owner::Lead(_)), "{owner:?}");
    match owner {
        Owner::Lead(lead) | Owner::Contact(lead) => lead,
    }
}

/// The best score a candidate lead reached, with what made it.
struct Best {
    score: f64,
    attr: Attribute,
    mine: String,
    theirs: String,
}

/// The leads [`detect`] links new lead `lead` to, best first: at most
/// [`MAX_LINKS`], each named by the lead it lives on now, none twice. The
/// neighbours of a key in an index are visited by `neighbours`: the
/// [`NEIGHBOURS`] nearest entries below the key, nearest first, then the
/// [`NEIGHBOURS`] nearest at or above it (names) or above it (emails,
/// phones), nearest first; equal names by descending lead id below and
/// ascending above, as an index scan gives them. Values are borrowed while
/// they are scored: only a candidate's best value is copied. A neighbour
/// given as an [`Owner::Contact`] is turned into its lead once it has
/// reached the threshold.
pub fn candidates(
    conn: &dyn Sql,
    lead: i64,
    profile: &Profile,
    threshold: f64,
    mut neighbours: impl FnMut(Index, &str, &mut dyn FnMut(Owner, &str)) -> Result<(), DbError>,
) -> Result<Vec<Similar>, DbError> {
    let mut best: HashMap<i64, Best> = HashMap::new();
    let mut consider = |other: i64, score: f64, attr: Attribute, mine: &str, theirs: &str| {
        if other == lead || score < threshold {
            return;
        }
        let entry = best.entry(other).or_insert(Best {
            score: 0.0,
            attr,
            mine: String::new(),
            theirs: String::new(),
        });
        if score > entry.score {
            entry.score = score;
            entry.attr = attr;
            mine.clone_into(&mut entry.mine);
            theirs.clone_into(&mut entry.theirs);
        }
    };
    if let Some(key) = &profile.name_key {
        neighbours(Index::Name, key, &mut |other, theirs| {
            consider(
                lead_of(other),
                name_similarity(key, theirs, threshold),
                Attribute::Name,
                key,
                theirs,
            );
        })?;
        let rev = reversed(key);
        // The name a reversed key stands for, made in one buffer.
        let mut theirs = String::new();
        neighbours(Index::NameRev, &rev, &mut |other, theirs_rev| {
            reverse_into(theirs_rev, &mut theirs);
            consider(
                lead_of(other),
                name_similarity(key, &theirs, threshold),
                Attribute::Name,
                key,
                &theirs,
            );
        })?;
    }
    // Neighbours that reached the threshold, in the order they came, their
    // owners read once the index scan is over.
    let mut reached: Vec<(Owner, f64, String)> = Vec::new();
    for (index, attr, values) in [
        (Index::Email, Attribute::Email, &profile.emails),
        (Index::Phone, Attribute::Phone, &profile.phones),
    ] {
        for mine in values {
            neighbours(index, mine, &mut |other, theirs| {
                let score = match index {
                    Index::Email => email_similarity(mine, theirs, threshold),
                    _ => phone_similarity(mine, theirs),
                };
                if score >= threshold {
                    reached.push((other, score, theirs.to_owned()));
                }
            })?;
            for (other, score, theirs) in reached.drain(..) {
                consider(other.lead(conn, index)?, score, attr, mine, &theirs);
            }
        }
    }
    let mut ranked: Vec<_> = best.into_iter().collect();
    ranked.sort_by(|a, b| b.1.score.total_cmp(&a.1.score).then(a.0.cmp(&b.0)));
    let mut linked = Vec::new();
    for (other, found) in ranked.into_iter().take(MAX_LINKS) {
        let Best {
            score,
            attr,
            mine,
            theirs,
        } = found;
        let (other, what) = match attr {
            // The name indexes hold live leads only.
            Attribute::Name => (other, "similar name"),
            Attribute::Email => (leads::survivor(conn, other)?, "similar email"),
            Attribute::Phone => (leads::survivor(conn, other)?, "similar phone"),
        };
        // `{what}: {mine:?} ~ {theirs:?} ({score:.0}%)`, built piece by piece.
        let mut reason = String::with_capacity(what.len() + mine.len() + theirs.len() + 16);
        reason.push_str(what);
        reason.push_str(": ");
        push_quoted(&mut reason, &mine);
        reason.push_str(" ~ ");
        push_quoted(&mut reason, &theirs);
        reason.push_str(&format!(" ({:.0}%)", score * 100.0));
        // Two candidates on one lead (an email's owner folded into a
        // namesake) make one link: the first, as the link's key would.
        if other != lead && linked.iter().all(|s: &Similar| s.lead != other) {
            linked.push(Similar {
                lead: other,
                score,
                reason,
            });
        }
    }
    Ok(linked)
}

const NAME_BELOW: &str = "SELECT id, name_key FROM leads WHERE name_key < ?1 AND merged_into IS NULL ORDER BY name_key DESC LIMIT 6";
const NAME_ABOVE: &str = "SELECT id, name_key FROM leads WHERE name_key >= ?1 AND merged_into IS NULL ORDER BY name_key LIMIT 6";
const REV_BELOW: &str = "SELECT id, name_rev FROM leads WHERE name_rev < ?1 AND merged_into IS NULL ORDER BY name_rev DESC LIMIT 6";
const REV_ABOVE: &str = "SELECT id, name_rev FROM leads WHERE name_rev >= ?1 AND merged_into IS NULL ORDER BY name_rev LIMIT 6";
// The row's id, not its lead's: the index of values holds it (see [`Owner`]).
const EMAIL_BELOW: &str =
    "SELECT id, value FROM lead_emails WHERE value < ?1 ORDER BY value DESC LIMIT 6";
const EMAIL_ABOVE: &str =
    "SELECT id, value FROM lead_emails WHERE value > ?1 ORDER BY value LIMIT 6";
const PHONE_BELOW: &str =
    "SELECT id, value FROM lead_phones WHERE value < ?1 ORDER BY value DESC LIMIT 6";
const PHONE_ABOVE: &str =
    "SELECT id, value FROM lead_phones WHERE value > ?1 ORDER BY value LIMIT 6";
// PostgreSQL's name indexes do not hold equal names in lead id order (its
// index entries follow the rows' physical places, which an update moves),
// so the order of equal names is spelt out; in SQLite the index gives it.
const PG_NAME_BELOW: &str = "SELECT id, name_key FROM leads WHERE name_key < ?1 AND merged_into IS NULL ORDER BY name_key DESC, id DESC LIMIT 6";
const PG_NAME_ABOVE: &str = "SELECT id, name_key FROM leads WHERE name_key >= ?1 AND merged_into IS NULL ORDER BY name_key, id LIMIT 6";
const PG_REV_BELOW: &str = "SELECT id, name_rev FROM leads WHERE name_rev < ?1 AND merged_into IS NULL ORDER BY name_rev DESC, id DESC LIMIT 6";
const PG_REV_ABOVE: &str = "SELECT id, name_rev FROM leads WHERE name_rev >= ?1 AND merged_into IS NULL ORDER BY name_rev, id LIMIT 6";

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, StatementStatus, params};

    use super::*;

    /// Each lookup of a new lead must reuse its compiled statement: with
    /// STAT4 samples or a bound LIMIT, SQLite silently recompiles it on
    /// every call, which costs more than the lookup itself.
    #[test]
    fn neighbour_lookups_are_never_recompiled_even_after_analyze() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("db.sqlite3")).unwrap();
        super::super::migrate::migrate(&conn).unwrap();
        for i in 0..200 {
            conn.execute(
                "INSERT INTO leads (id, name, name_key, name_rev, created_at, updated_at)
                 VALUES (?1, 'n', ?2, ?3, 't', 't')",
                params![i + 1, format!("name {i}"), format!("{i} eman")],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO lead_emails (lead_id, value, raw, is_primary, created_at)
                 VALUES (?1, ?2, ?2, 1, 't')",
                params![i + 1, format!("p{i}@example.com")],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO lead_phones (lead_id, value, raw, is_primary, created_at)
                 VALUES (?1, ?2, ?2, 1, 't')",
                params![i + 1, format!("+1415555{i:04}")],
            )
            .unwrap();
        }
        conn.execute_batch("ANALYZE").unwrap();
        // What the service does at every start.
        super::super::migrate::migrate(&conn).unwrap();
        for sql in [
            NAME_BELOW,
            NAME_ABOVE,
            REV_BELOW,
            REV_ABOVE,
            EMAIL_BELOW,
            EMAIL_ABOVE,
            PHONE_BELOW,
            PHONE_ABOVE,
        ] {
            let mut found = 0;
            for key in ["name 5", "p7@example.com", "+14155550009", "0", "zzz"] {
                let mut stmt = conn.prepare_cached(sql).unwrap();
                let mut rows = stmt.query(params![key]).unwrap();
                while rows.next().unwrap().is_some() {
                    found += 1;
                }
            }
            assert!(found > 0, "{sql} found nothing");
            let stmt = conn.prepare_cached(sql).unwrap();
            assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0, "{sql}");
            // Answered by the index alone: no seek into the table per row.
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map([""], |r| r.get(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert!(
                plan.len() == 1 && plan[0].contains("USING COVERING INDEX"),
                "{sql}: {plan:?}"
            );
        }
    }
}
