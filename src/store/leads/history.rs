//! Writing a lead's history: a row per change (pointing at the delivery's
//! decision when there is one), an entry of a new lead's open `created` row
//! instead where there is one, and the mark every change leaves on the lead
//! (`updated_at`, `version`).

use super::Source;
use super::changes::Created;
use super::decision::Why;
use crate::args;
use crate::store::DbError;
use crate::store::sql::Sql;

/// Writes a history row; `why`, when given, is the decision behind it.
pub fn history(
    conn: &dyn Sql,
    lead: i64,
    field: &str,
    old: Option<&str>,
    new: Option<&str>,
    source: &Source,
    why: Option<Why<'_>>,
) -> Result<(), DbError> {
    let (decision, explanation) = match why {
        Some(why) => (Some(why.decision.id(conn)?), why.change_json()),
        None => (None, None),
    };
    insert_history(
        conn,
        lead,
        (field, old, new),
        source,
        decision,
        explanation.as_deref(),
    )
}

/// The history row itself: `(field, old, new)`, the decision's id and the
/// row's own `explanation` column.
pub(super) fn insert_history(
    conn: &dyn Sql,
    lead: i64,
    (field, old, new): (&str, Option<&str>, Option<&str>),
    source: &Source,
    decision: Option<i64>,
    explanation: Option<&str>,
) -> Result<(), DbError> {
    conn.execute_later(
        "INSERT INTO history (lead_id, at, field, old, new, delivery_id, source, explanation, decision_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        args![
            lead,
            source.at,
            field,
            old,
            new,
            source.delivery_id,
            source.label,
            explanation,
            decision
        ],
    )?;
    Ok(())
}

/// Marks the lead changed: `updated_at`, and its `version` (the API's
/// ETag, what forms carry) in the same statement, so that no change goes
/// unseen and none costs a statement more.
pub(in crate::store) fn touch(conn: &dyn Sql, lead: i64, at: &str) -> Result<(), DbError> {
    conn.execute_later(
        "UPDATE leads SET updated_at = ?2, version = version + 1 WHERE id = ?1",
        args![lead, at],
    )
}

/// Records `new` under `field` (tags, an event: no decision): an entry of
/// the open `created` row of a lead this delivery made, else a history row.
pub fn entry(
    conn: &dyn Sql,
    lead: i64,
    created: Option<&mut Created>,
    field: &str,
    new: &str,
    source: &Source,
) -> Result<(), DbError> {
    match created {
        Some(created) => {
            created.add(field.to_owned(), None, Some(new.to_owned()));
            Ok(())
        }
        None => history(conn, lead, field, None, Some(new), source, None),
    }
}
