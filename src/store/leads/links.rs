//! Links between a lead and what points at it: a platform's visitor ids,
//! possible-duplicate links between two leads (never for a pair staff
//! dismissed), and the fold of an anonymous lead into another.

use super::Source;
use super::decision::Why;
use super::history::{history, touch};
use crate::args;
use crate::store::DbError;
use crate::store::sql::Sql;

/// Links a platform visitor id to a lead, unless it is linked already
/// (an identifier owned by one lead is never moved to another).
pub fn link_visitor(
    conn: &dyn Sql,
    platform: &str,
    visitor_id: &str,
    lead: i64,
    at: &str,
) -> Result<(), DbError> {
    conn.execute_later(
        "INSERT INTO lead_visitors (platform, visitor_id, lead_id, created_at)
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        args![platform, visitor_id, lead, at],
    )
}

/// Links two leads as possible duplicates (once per pair; the first reason stays).
/// Returns whether a new link was made.
pub fn link_duplicate(
    conn: &dyn Sql,
    a: i64,
    b: i64,
    score: f64,
    reason: &str,
    at: &str,
) -> Result<bool, DbError> {
    if a == b {
        return Ok(false);
    }
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    // A pair staff dismissed is never linked again (one key lookup in a
    // table that is empty but for dismissals).
    let n = conn.execute(
        "INSERT INTO duplicate_links (lead_a, lead_b, score, reason, created_at)
         SELECT CAST(?1 AS BIGINT), CAST(?2 AS BIGINT), CAST(?3 AS DOUBLE PRECISION),
                CAST(?4 AS TEXT), CAST(?5 AS TEXT)
         WHERE NOT EXISTS (SELECT 1 FROM dismissed_duplicates WHERE lead_a = ?1 AND lead_b = ?2)
         ON CONFLICT DO NOTHING",
        args![lo, hi, score, reason, at],
    )?;
    Ok(n > 0)
}

/// Folds anonymous lead `from` into `into`: its visitor ids, conversations,
/// notes, tags and fields move; `from` keeps answering with a pointer
/// (see [`crate::store::merges::absorb`], which also records it for an unmerge).
/// `explanation` is the decision the history rows point at.
pub fn fold(
    conn: &dyn Sql,
    from: i64,
    into: i64,
    source: &Source,
    explanation: Option<Why<'_>>,
) -> Result<(), DbError> {
    // Recorded in `merges` like staff's merges, so that it can be undone.
    crate::store::merges::absorb(
        conn,
        into,
        from,
        &crate::store::merges::Keep::default(),
        crate::store::merges::Kind::Fold,
        source,
    )?;
    let (name, description): (Option<String>, Option<String>) = conn.query_row(
        "SELECT name, description FROM leads WHERE id = ?1",
        args![from],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let note = format!(
        "lead {from} folded in{}",
        name.map(|n| format!(" (was named {n:?})"))
            .unwrap_or_default()
    );
    history(
        conn,
        into,
        "folded",
        Some(&from.to_string()),
        Some(&note),
        source,
        explanation,
    )?;
    history(
        conn,
        from,
        "merged_into",
        None,
        Some(&into.to_string()),
        source,
        explanation,
    )?;
    if let Some(d) = description {
        history(
            conn,
            into,
            "folded description",
            None,
            Some(&d),
            source,
            explanation,
        )?;
    }
    touch(conn, into, &source.at)
}
