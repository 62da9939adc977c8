//! What staff do to a lead, as named operations on [`Db`]: status, owner,
//! name and description, notes (`notes.rs`), and emails and phones
//! (`contacts.rs`).
//!
//! Each operation is one write job that first reads the lead and checks
//! what the caller expects of it (the version it saw: `If-Match`; the values
//! a form showed), and writes only when every check passes, so a refused
//! edit changes nothing. A successful one writes a history row per change
//! with the staff member as its source, pins what staff set against
//! `take_incoming` deliveries, and bumps the lead's version once.

mod contacts;
mod notes;

use std::fmt;

use super::leads::{self, Source};
use super::outbox::{self, OutboundEvent};
use super::sql::Sql;
use super::{Db, DbError};
use crate::args;
use crate::crm::duplicates::reversed;
use crate::crm::identity::name_key;
use crate::event::now_rfc3339;
use crate::outbound::EventKind;

/// Longest name staff may set.
const MAX_NAME_CHARS: usize = 500;
/// Longest description or note staff may write.
const MAX_TEXT_CHARS: usize = 20_000;

/// A field of the lead itself that staff edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The lead's name (pinned when staff set it).
    Name,
    /// The description (pinned when staff set it).
    Description,
    /// The status: one of `[pipeline] statuses`.
    Status,
    /// The owner: a sales user's name, or none.
    Owner,
}

impl Field {
    /// The name of the field in history rows, forms and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Description => "description",
            Field::Status => "status",
            Field::Owner => "owner",
        }
    }

    /// The field named `s`, if it is one.
    pub fn parse(s: &str) -> Option<Field> {
        [Field::Name, Field::Description, Field::Status, Field::Owner]
            .into_iter()
            .find(|f| f.as_str() == s)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the caller saw of the lead before asking for the edit.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// The version it saw (`If-Match`): any other is a stale edit.
    pub version: Option<i64>,
    /// The values a form showed: a field that holds another value now was
    /// changed by someone else meanwhile.
    pub was: Vec<(Field, Option<String>)>,
}

impl Expect {
    /// No expectation: the edit applies to the lead as it is.
    pub fn nothing() -> Expect {
        Expect::default()
    }

    /// Only the version (`If-Match`), if given.
    pub fn version(version: Option<i64>) -> Expect {
        Expect {
            version,
            was: Vec::new(),
        }
    }
}

/// Why an edit was refused (nothing was changed), or failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EditError {
    /// No such lead (or no such email or phone on it).
    #[error("not found")]
    NotFound,
    /// The lead was folded into this one meanwhile.
    #[error("lead was merged into lead {0}")]
    MergedInto(i64),
    /// `If-Match` named another version than the lead's, which is this one.
    #[error("the lead changed since that version; it is now version {version}")]
    Stale {
        /// The lead's current version.
        version: i64,
    },
    /// Someone else changed a field the form showed; its value now.
    #[error(
        "{field} was changed by someone else meanwhile (now {})",
        shown(current)
    )]
    Changed {
        /// The field.
        field: Field,
        /// Its current value.
        current: Option<String>,
    },
    /// The email or phone belongs to another lead.
    #[error("that value belongs to lead {lead}")]
    OwnedElsewhere {
        /// The lead owning it.
        lead: i64,
    },
    /// A value that cannot be set (an unknown status or user, an empty note, …).
    #[error("{0}")]
    Invalid(String),
    /// Storage failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

fn shown(value: &Option<String>) -> String {
    match value {
        Some(v) => format!("{v:?}"),
        None => "empty".into(),
    }
}

/// The lead as an edit checks it.
struct Lead {
    name: Option<String>,
    description: Option<String>,
    status: String,
    owner: Option<String>,
    version: i64,
}

impl Lead {
    fn get(&self, field: Field) -> Option<&str> {
        match field {
            Field::Name => self.name.as_deref(),
            Field::Description => self.description.as_deref(),
            Field::Status => Some(&self.status),
            Field::Owner => self.owner.as_deref(),
        }
    }
}

/// Reads lead `id` and checks `expect` against it: the first step of every
/// edit, before anything is written.
fn checked(conn: &dyn Sql, id: i64, expect: &Expect) -> Result<Lead, EditError> {
    let row = conn.query_opt(
        "SELECT name, description, status, owner, version, merged_into FROM leads WHERE id = ?1",
        args![id],
        |r| {
            Ok((
                Lead {
                    name: r.get(0)?,
                    description: r.get(1)?,
                    status: r.get(2)?,
                    owner: r.get(3)?,
                    version: r.get(4)?,
                },
                r.get::<Option<i64>>(5)?,
            ))
        },
    )?;
    let lead = match row {
        None => return Err(EditError::NotFound),
        Some((_, Some(_))) => return Err(EditError::MergedInto(leads::survivor(conn, id)?)),
        Some((lead, None)) => lead,
    };
    if let Some(version) = expect.version
        && version != lead.version
    {
        return Err(EditError::Stale {
            version: lead.version,
        });
    }
    for (field, was) in &expect.was {
        let current = lead.get(*field);
        if current != was.as_deref() {
            return Err(EditError::Changed {
                field: *field,
                current: current.map(str::to_owned),
            });
        }
    }
    Ok(lead)
}

/// An edit's outcome as its write job answers it: a refusal is an answer
/// (nothing was written before it), a storage failure fails the job, so
/// that the writer rolls back whatever the edit had written.
fn refused(outcome: Result<(), EditError>) -> Result<Result<(), EditError>, DbError> {
    match outcome {
        Err(EditError::Db(e)) => Err(e),
        other => Ok(other),
    }
}

/// Where the history rows of an edit by `by` come from, now.
fn source(by: &str) -> Source {
    Source {
        delivery_id: None,
        label: by.to_owned(),
        at: now_rfc3339(),
    }
}

/// Pins `field` (`name`, `description`, `email`, `phone`): a later
/// delivery under `take_incoming` does not replace it.
fn pin(conn: &dyn Sql, lead: i64, field: &str, source: &Source) -> Result<(), DbError> {
    conn.execute(
        "INSERT INTO lead_pins (lead_id, field, pinned_by, pinned_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (lead_id, field) DO UPDATE
         SET pinned_by = excluded.pinned_by, pinned_at = excluded.pinned_at",
        args![lead, field, source.label, source.at],
    )?;
    Ok(())
}

/// Lets a delivery fill `field` again (staff emptied it).
fn unpin(conn: &dyn Sql, lead: i64, field: &str) -> Result<(), DbError> {
    conn.execute(
        "DELETE FROM lead_pins WHERE lead_id = ?1 AND field = ?2",
        args![lead, field],
    )?;
    Ok(())
}

/// The value `field` is to hold, checked: a status of the pipeline, an
/// owner among the users, a name on one line; empty means none (but a
/// status is never empty).
fn valid(
    field: Field,
    value: Option<String>,
    pipeline: &[String],
    users: &[String],
) -> Result<Option<String>, EditError> {
    let value = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let too_long = |max: usize| value.as_deref().is_some_and(|v| v.chars().count() > max);
    match field {
        Field::Status => match value {
            Some(status) if pipeline.contains(&status) => Ok(Some(status)),
            _ => Err(EditError::Invalid(format!(
                "status must be one of: {}",
                pipeline.join(", ")
            ))),
        },
        Field::Owner => match value {
            Some(owner) if !users.contains(&owner) => Err(EditError::Invalid(format!(
                "owner must be one of the sales users ({}) or null",
                users.join(", ")
            ))),
            owner => Ok(owner),
        },
        Field::Name if too_long(MAX_NAME_CHARS) => Err(EditError::Invalid(format!(
            "name must be at most {MAX_NAME_CHARS} characters"
        ))),
        Field::Name
            if value
                .as_deref()
                .is_some_and(|v| v.contains(char::is_control)) =>
        {
            Err(EditError::Invalid("name must be one line of text".into()))
        }
        Field::Description if too_long(MAX_TEXT_CHARS) => Err(EditError::Invalid(format!(
            "description must be at most {MAX_TEXT_CHARS} characters"
        ))),
        Field::Name | Field::Description => Ok(value),
    }
}

/// Applies `changes` to lead `id` (see [`Db::edit_lead`]).
fn edit(
    conn: &dyn Sql,
    id: i64,
    by: &str,
    changes: Vec<(Field, Option<String>)>,
    expect: &Expect,
    (pipeline, users): (&[String], &[String]),
) -> Result<(), EditError> {
    let lead = checked(conn, id, expect)?;
    let mut planned: Vec<(Field, Option<String>)> = Vec::new();
    for (field, value) in changes {
        let value = valid(field, value, pipeline, users)?;
        // The last value given for a field is the one that counts.
        planned.retain(|(f, _)| *f != field);
        planned.push((field, value));
    }
    planned.retain(|(field, value)| lead.get(*field) != value.as_deref());
    if planned.is_empty() {
        return Ok(());
    }
    let source = source(by);
    for (field, new) in &planned {
        match field {
            Field::Name => {
                let key = new.as_deref().map(name_key).filter(|k| !k.is_empty());
                let rev = key.as_deref().map(reversed);
                conn.execute(
                    "UPDATE leads SET name = ?2, name_key = ?3, name_rev = ?4 WHERE id = ?1",
                    args![id, new, key, rev],
                )?;
            }
            Field::Description => {
                conn.execute(
                    "UPDATE leads SET description = ?2 WHERE id = ?1",
                    args![id, new],
                )?;
            }
            Field::Status => {
                conn.execute("UPDATE leads SET status = ?2 WHERE id = ?1", args![id, new])?;
            }
            Field::Owner => {
                conn.execute("UPDATE leads SET owner = ?2 WHERE id = ?1", args![id, new])?;
            }
        }
        if matches!(field, Field::Name | Field::Description) {
            match new {
                Some(_) => pin(conn, id, field.as_str(), &source)?,
                None => unpin(conn, id, field.as_str())?,
            }
        }
        leads::history(
            conn,
            id,
            field.as_str(),
            lead.get(*field),
            new.as_deref(),
            &source,
            None,
        )?;
    }
    changed(conn, id, &source.at)?;
    Ok(())
}

/// Marks lead `id` changed by staff: its version grows, and `lead.updated`
/// goes to the endpoints that subscribe to it, in the edit's transaction.
fn changed(conn: &dyn Sql, id: i64, at: &str) -> Result<(), DbError> {
    leads::touch(conn, id, at)?;
    outbox::enqueue(conn, &OutboundEvent::new(EventKind::LeadUpdated, id))?;
    Ok(())
}

impl Db {
    /// Sets fields of lead `id` as staff member `by` (`Staff::label`):
    /// the status must be one of `pipeline`, the owner one of `users` (or
    /// none); a name or description staff set is pinned. Fields that
    /// already hold the value are left alone; if none changes, nothing is
    /// written (and the version stays).
    pub async fn edit_lead(
        &self,
        id: i64,
        by: String,
        changes: Vec<(Field, Option<String>)>,
        expect: Expect,
        pipeline: Vec<String>,
        users: Vec<String>,
    ) -> Result<(), EditError> {
        self.write(move |conn| refused(edit(conn, id, &by, changes, &expect, (&pipeline, &users))))
            .await?
    }
}
