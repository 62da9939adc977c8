//! What a delivery or an import sets on a lead besides its contacts: tags,
//! custom fields (each change in the history) and the status (filled only
//! while it is still the one new leads start in).

use super::Source;
use super::changes::Created;
use super::history::history;
use crate::args;
use crate::store::DbError;
use crate::store::sql::Sql;

/// Adds tags; returns how many were new.
pub fn add_tags(conn: &dyn Sql, lead: i64, tags: &[String]) -> Result<usize, DbError> {
    let mut added = 0;
    for tag in tags.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        added += conn.execute(
            "INSERT INTO lead_tags (lead_id, tag) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            args![lead, tag],
        )?;
    }
    Ok(added)
}

/// Sets custom fields, recording each change in the history; returns how
/// many changed. `created` is the open `created` row of a lead this
/// delivery made: the lead has no fields yet, so the previous values need
/// not be read, and each change is an entry of that row.
pub fn set_fields(
    conn: &dyn Sql,
    lead: i64,
    fields: &[(String, String)],
    mut created: Option<&mut Created>,
    source: &Source,
) -> Result<usize, DbError> {
    let fresh = created.is_some();
    let mut changed = 0;
    let mut set: Vec<(&str, &str)> = Vec::new();
    for (key, value) in fields {
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() || value.is_empty() {
            continue;
        }
        let old: Option<String> = if fresh {
            // Only what this call set before (a key given twice).
            set.iter()
                .rev()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v).to_owned())
        } else {
            field_value(conn, lead, key)?
        };
        #[cfg(debug_assertions)]
        debug_assert_eq!(
            old,
            field_value(conn, lead, key)?,
            "field {key:?} of a fresh lead {lead}"
        );
        set.push((key, value));
        if old.as_deref() == Some(value) {
            continue;
        }
        conn.execute_later(
            "INSERT INTO lead_fields (lead_id, key, value, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (lead_id, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            args![lead, key, value, source.at],
        )?;
        let field = format!("field {key}");
        match created.as_deref_mut() {
            Some(created) => created.add(field, old, Some(value.to_owned())),
            None => history(
                conn,
                lead,
                &field,
                old.as_deref(),
                Some(value),
                source,
                None,
            )?,
        }
        changed += 1;
    }
    Ok(changed)
}

/// The value of custom field `key` of `lead`, if set.
fn field_value(conn: &dyn Sql, lead: i64, key: &str) -> Result<Option<String>, DbError> {
    conn.query_opt(
        "SELECT value FROM lead_fields WHERE lead_id = ?1 AND key = ?2",
        args![lead, key],
        |r| r.get(0),
    )
}

/// Sets the status when the lead still has the one new leads start in
/// (`initial`, the pipeline's first): an empty field is always filled, a
/// status someone chose is kept. Returns whether it changed.
pub fn fill_status(
    conn: &dyn Sql,
    lead: i64,
    status: &str,
    initial: &str,
    source: &Source,
) -> Result<bool, DbError> {
    let status = status.trim();
    let changed = conn.execute(
        "UPDATE leads SET status = ?2, updated_at = ?3, version = version + 1
         WHERE id = ?1 AND status = ?4 AND ?2 <> ?4 AND ?2 <> ''",
        args![lead, status, source.at, initial],
    )? > 0;
    if changed {
        history(
            conn,
            lead,
            "status",
            Some(initial),
            Some(status),
            source,
            None,
        )?;
    }
    Ok(changed)
}
