//! Writing a merge plan onto a lead: each change to the lead's values and
//! contacts, recorded in its history as rows or as entries of a new lead's
//! one `created` row ([`Record`]), pointing at the delivery's decision.

use std::borrow::Cow;

use super::decision::Decision;
use super::entries::{Packed, PackedEntry};
use super::history::{history, insert_history, touch};
use super::{Source, table};
use crate::args;
use crate::crm::duplicates::reversed;
use crate::crm::identity::name_key;
use crate::crm::merge::{Change, Contact, ContactKind, Current};
use crate::store::DbError;
use crate::store::sql::Sql;

/// How [`write_changes`] records its changes in the history.
#[derive(Debug, Clone, Copy)]
pub enum Record<'a> {
    /// One history row per change.
    Rows,
    /// The delivery created the lead by this rule: one `created` row that
    /// holds every change as an entry (read back as one history entry per
    /// change, exactly as [`Record::Rows`] would have written them; see
    /// [`entries`]), returned open as a [`Created`] for the rest of the
    /// delivery's entries. A new lead's initial values took four to eight
    /// rows, each with its index entries and three foreign-key checks.
    Created(&'a str),
}

/// A new lead's `created` history row ([`Record::Created`]), open while the
/// delivery that made the lead fills it: its custom fields, tags and event
/// are entries of it too, where each was a row of its own (read back the
/// same, see [`entries`]). [`Created::write`] stores it; the caller writes
/// it once the delivery's last entry is in, before anything reads the
/// lead's history.
#[must_use = "a new lead's history is stored by Created::write"]
#[derive(Debug)]
pub struct Created {
    lead: i64,
    rule: String,
    decision: i64,
    entries: Vec<PackedEntry<'static>>,
}

impl Created {
    /// Adds an entry that is not a change of the decision (a custom field,
    /// the tags, an event): read back as the row [`history`] would have
    /// written for it without a decision.
    pub fn add(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        old: Option<String>,
        new: Option<String>,
    ) {
        self.entries.push(PackedEntry {
            field: field.into(),
            old: old.map(Cow::Owned),
            new: new.map(Cow::Owned),
            change: None,
            change_text: None,
        });
    }

    /// Stores the row.
    pub fn write(self, conn: &dyn Sql, source: &Source) -> Result<(), DbError> {
        let text = serde_json::to_string(&Packed {
            entries: self.entries,
        })
        .map_err(|e| DbError::Internal(format!("history entries: {e}")))?;
        insert_history(
            conn,
            self.lead,
            ("created", None, Some(&self.rule)),
            source,
            Some(self.decision),
            Some(&text),
        )
    }
}

/// A history entry about to be written, in the order of the changes: its
/// field, old and new value.
type Pending<'a> = (Cow<'static, str>, Option<String>, Option<&'a str>);

/// Applies a merge plan made against `current` (what the lead held before
/// it), recording each change (a value the policy did not take included)
/// in the history as `record` says, pointing at the delivery's decision:
/// the open `created` row with [`Record::Created`] (for the caller to
/// write), none with [`Record::Rows`].
/// Which contact is primary is followed from `current` rather than read
/// back for each change; `current` of a new lead is empty, so its changes
/// only insert.
pub fn write_changes(
    conn: &dyn Sql,
    lead: i64,
    current: &Current,
    changes: &[Change],
    decision: &Decision,
    source: &Source,
    record: Record<'_>,
) -> Result<Option<Created>, DbError> {
    let primary_of =
        |contacts: &[Contact]| contacts.iter().find(|c| c.primary).map(|c| c.value.clone());
    // The primary email and phone as the changes so far left them.
    let mut primaries = [primary_of(&current.emails), primary_of(&current.phones)];
    let slot = |kind: ContactKind| match kind {
        ContactKind::Email => 0,
        ContactKind::Phone => 1,
    };
    let mut altered = false;
    let mut pending: Vec<Pending<'_>> = Vec::with_capacity(changes.len());
    for change in changes {
        #[cfg(debug_assertions)]
        for kind in [ContactKind::Email, ContactKind::Phone] {
            debug_assert_eq!(
                primaries[slot(kind)],
                primary_value(conn, kind, lead)?,
                "primary {kind:?} followed wrongly for lead {lead}"
            );
        }
        altered |= change.alters();
        match change {
            Change::Name { old, new, .. } => {
                let key = name_key(new);
                conn.execute_later(
                    "UPDATE leads SET name = ?2, name_key = ?3, name_rev = ?4 WHERE id = ?1",
                    args![
                        lead,
                        new,
                        (!key.is_empty()).then(|| key.clone()),
                        (!key.is_empty()).then(|| reversed(&key))
                    ],
                )?;
                pending.push(("name".into(), old.clone(), Some(new)));
            }
            Change::Description { old, new, .. } => {
                conn.execute_later(
                    "UPDATE leads SET description = ?2 WHERE id = ?1",
                    args![lead, new],
                )?;
                pending.push(("description".into(), old.clone(), Some(new)));
            }
            Change::Add {
                kind,
                value,
                raw,
                primary,
                ..
            } => {
                let old_primary = primaries[slot(*kind)].clone();
                if *primary {
                    if old_primary.is_some() {
                        clear_primary(conn, *kind, lead)?;
                    }
                    primaries[slot(*kind)] = Some(value.clone());
                }
                let sql = format!(
                    "INSERT INTO {} (lead_id, value, raw, is_primary, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    table(*kind)
                );
                conn.execute_later(&sql, args![lead, value, raw, primary, source.at])?;
                let old = if *primary { old_primary } else { None };
                pending.push((kind.as_str().into(), old, Some(value)));
            }
            Change::Remove { kind, value, .. } => {
                let sql = format!(
                    "DELETE FROM {} WHERE lead_id = ?1 AND value = ?2",
                    table(*kind)
                );
                conn.execute_later(&sql, args![lead, value])?;
                if primaries[slot(*kind)].as_ref() == Some(value) {
                    primaries[slot(*kind)] = None;
                }
                pending.push((kind.as_str().into(), Some(value.clone()), None));
            }
            Change::MakePrimary {
                kind, value, old, ..
            } => {
                if primaries[slot(*kind)].is_some() {
                    clear_primary(conn, *kind, lead)?;
                }
                primaries[slot(*kind)] = Some(value.clone());
                let sql = format!(
                    "UPDATE {} SET is_primary = 1 WHERE lead_id = ?1 AND value = ?2",
                    table(*kind)
                );
                conn.execute_later(&sql, args![lead, value])?;
                let field = format!("primary {}", kind.as_str());
                pending.push((field.into(), old.clone(), Some(value)));
            }
            Change::Kept {
                field, incoming, ..
            } => {
                // Not a change of the lead, but the policy's decision to drop
                // a value: recorded so the operator can see what was lost.
                let field = format!("{field} not taken");
                pending.push((field.into(), None, Some(incoming)));
            }
        }
    }
    match record {
        Record::Rows => {
            for ((field, old, new), change) in pending.iter().zip(changes) {
                history(
                    conn,
                    lead,
                    field,
                    old.as_deref(),
                    *new,
                    source,
                    Some(decision.row(Some(change))),
                )?;
            }
        }
        Record::Created(rule) => {
            let entries = pending
                .into_iter()
                .enumerate()
                .map(|(change, (field, old, new))| PackedEntry {
                    field,
                    old: old.map(Cow::Owned),
                    new: new.map(|new| Cow::Owned(new.to_owned())),
                    change: Some(change),
                    change_text: None,
                })
                .collect();
            return Ok(Some(Created {
                lead,
                rule: rule.to_owned(),
                decision: decision.id(conn)?,
                entries,
            }));
        }
    }
    // A lead created by this delivery was updated when it was created.
    if altered {
        touch(conn, lead, &source.at)?;
    }
    Ok(None)
}

/// Read back only to check, in debug builds, the primaries `write_changes`
/// follows.
#[cfg(debug_assertions)]
fn primary_value(conn: &dyn Sql, kind: ContactKind, lead: i64) -> Result<Option<String>, DbError> {
    let sql = format!(
        "SELECT value FROM {} WHERE lead_id = ?1 AND is_primary = 1",
        table(kind)
    );
    conn.query_opt(&sql, args![lead], |r| r.get(0))
}

fn clear_primary(conn: &dyn Sql, kind: ContactKind, lead: i64) -> Result<(), DbError> {
    let sql = format!(
        "UPDATE {} SET is_primary = 0 WHERE lead_id = ?1 AND is_primary = 1",
        table(kind)
    );
    conn.execute_later(&sql, args![lead])
}
