//! Staff edits of a lead's emails and phones: add one (normalised as a
//! delivery's would be), remove one, make one primary. Values are
//! normalised before the write job, on the request's thread (the phone
//! parser is the costly part), and an email or phone belongs to one lead
//! only: a value another lead holds is refused, naming that lead.

use super::{EditError, Expect, changed, checked, pin, refused, source};
use crate::args;
use crate::crm::identity::{Email, Phone};
use crate::crm::merge::{Contact, ContactKind};
use crate::store::leads::{self, Source, table};
use crate::store::sql::Sql;
use crate::store::{Db, DbError};

/// `(normalised, as written)` of an email or phone, or why it is not one.
fn normalised(
    kind: ContactKind,
    raw: &str,
    region: phonenumber::country::Id,
) -> Result<(String, String), EditError> {
    match kind {
        ContactKind::Email => Email::parse(raw)
            .map(|e| (e.normalized, e.raw))
            .ok_or_else(|| EditError::Invalid(format!("{raw:?} is not an email address"))),
        ContactKind::Phone => Phone::parse(raw, region)
            .map(|p| (p.normalized, p.raw))
            .ok_or_else(|| EditError::Invalid(format!("{raw:?} is not a phone number"))),
    }
}

/// The contact of lead `id` that `value` names: its normalised value (as
/// the JSON lead shows it), in any case for an email, or as first written;
/// a phone also by its digits in international form (`1 408 498 7855`).
fn find(
    conn: &dyn Sql,
    kind: ContactKind,
    id: i64,
    value: &str,
) -> Result<(Vec<Contact>, Contact), EditError> {
    let value = value.trim();
    let key = match kind {
        ContactKind::Email => value.to_lowercase(),
        ContactKind::Phone => {
            let digits: String = value.chars().filter(char::is_ascii_digit).collect();
            format!("+{digits}")
        }
    };
    let held = leads::contacts(conn, kind, id)?;
    let found = held
        .iter()
        .find(|c| c.value == value || c.value == key)
        .or_else(|| held.iter().find(|c| c.raw == value))
        .cloned()
        .ok_or(EditError::NotFound)?;
    Ok((held, found))
}

fn set_primary(conn: &dyn Sql, kind: ContactKind, id: i64, value: &str) -> Result<(), DbError> {
    let clear = format!(
        "UPDATE {} SET is_primary = 0 WHERE lead_id = ?1 AND is_primary = 1",
        table(kind)
    );
    conn.execute(&clear, args![id])?;
    let set = format!(
        "UPDATE {} SET is_primary = 1 WHERE lead_id = ?1 AND value = ?2",
        table(kind)
    );
    conn.execute(&set, args![id, value])?;
    Ok(())
}

/// Makes `value` lead `id`'s primary `kind` after `old`, recorded as a
/// delivery's promotion is.
fn promote(
    conn: &dyn Sql,
    kind: ContactKind,
    id: i64,
    (old, value): (Option<&str>, &str),
    source: &Source,
) -> Result<(), DbError> {
    set_primary(conn, kind, id, value)?;
    let field = format!("primary {}", kind.as_str());
    leads::history(conn, id, &field, old, Some(value), source, None)
}

fn add(
    conn: &dyn Sql,
    id: i64,
    kind: ContactKind,
    (value, raw): (&str, &str),
    primary: bool,
    (by, expect): (&str, &Expect),
) -> Result<(), EditError> {
    checked(conn, id, expect)?;
    if let Some(owner) = leads::contact_owner(conn, kind, value)? {
        let owner = leads::survivor(conn, owner)?;
        if owner != id {
            return Err(EditError::OwnedElsewhere { lead: owner });
        }
        // On the lead already: at most it becomes primary.
        let (held, found) = find(conn, kind, id, value)?;
        if primary && !found.primary {
            let source = source(by);
            let old = held.iter().find(|c| c.primary).map(|c| c.value.as_str());
            promote(conn, kind, id, (old, value), &source)?;
            pin(conn, id, kind.as_str(), &source)?;
            changed(conn, id, &source.at)?;
        }
        return Ok(());
    }
    let held = leads::contacts(conn, kind, id)?;
    let old_primary = held.iter().find(|c| c.primary).map(|c| c.value.clone());
    // A lead with none of this kind gets its first one as primary.
    let primary = primary || old_primary.is_none();
    let source = source(by);
    if primary && old_primary.is_some() {
        let clear = format!(
            "UPDATE {} SET is_primary = 0 WHERE lead_id = ?1 AND is_primary = 1",
            table(kind)
        );
        conn.execute(&clear, args![id])?;
    }
    let insert = format!(
        "INSERT INTO {} (lead_id, value, raw, is_primary, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        table(kind)
    );
    conn.execute(&insert, args![id, value, raw, primary, source.at])?;
    // As a delivery's addition reads: a new primary shows the one it replaced.
    let old = if primary { old_primary } else { None };
    leads::history(
        conn,
        id,
        kind.as_str(),
        old.as_deref(),
        Some(value),
        &source,
        None,
    )?;
    pin(conn, id, kind.as_str(), &source)?;
    changed(conn, id, &source.at)?;
    Ok(())
}

fn remove(
    conn: &dyn Sql,
    id: i64,
    kind: ContactKind,
    value: &str,
    (by, expect): (&str, &Expect),
) -> Result<(), EditError> {
    checked(conn, id, expect)?;
    let (held, found) = find(conn, kind, id, value)?;
    let source = source(by);
    let delete = format!(
        "DELETE FROM {} WHERE lead_id = ?1 AND value = ?2",
        table(kind)
    );
    conn.execute(&delete, args![id, found.value])?;
    leads::history(
        conn,
        id,
        kind.as_str(),
        Some(&found.value),
        None,
        &source,
        None,
    )?;
    if found.primary {
        // The oldest one left takes its place (`held` is primary first,
        // then oldest first).
        if let Some(next) = held.iter().find(|c| c.value != found.value) {
            promote(conn, kind, id, (Some(&found.value), &next.value), &source)?;
        }
    }
    pin(conn, id, kind.as_str(), &source)?;
    changed(conn, id, &source.at)?;
    Ok(())
}

fn make_primary(
    conn: &dyn Sql,
    id: i64,
    kind: ContactKind,
    value: &str,
    (by, expect): (&str, &Expect),
) -> Result<(), EditError> {
    checked(conn, id, expect)?;
    let (held, found) = find(conn, kind, id, value)?;
    if found.primary {
        return Ok(());
    }
    let source = source(by);
    let old = held.iter().find(|c| c.primary).map(|c| c.value.as_str());
    promote(conn, kind, id, (old, &found.value), &source)?;
    pin(conn, id, kind.as_str(), &source)?;
    changed(conn, id, &source.at)?;
    Ok(())
}

impl Db {
    /// Adds an email or phone to lead `id` as staff member `by`,
    /// normalised as a delivery's is (`region` for phones without a
    /// country code); primary when asked, or when the lead has none of
    /// this kind yet. A value another lead holds is refused
    /// ([`EditError::OwnedElsewhere`]); one this lead holds already at most
    /// becomes primary. The kind is pinned against `take_incoming`.
    #[allow(clippy::too_many_arguments)]
    pub async fn add_contact(
        &self,
        id: i64,
        kind: ContactKind,
        raw: String,
        primary: bool,
        by: String,
        region: phonenumber::country::Id,
        expect: Expect,
    ) -> Result<(), EditError> {
        let (value, raw) = normalised(kind, &raw, region)?;
        self.write(move |conn| {
            refused(add(conn, id, kind, (&value, &raw), primary, (&by, &expect)))
        })
        .await?
    }

    /// Removes an email or phone from lead `id`, named by its normalised
    /// value (as the JSON lead shows it) or as first written: the history
    /// keeps it; if it was primary, the oldest one left becomes primary.
    /// The kind is pinned against `take_incoming`.
    pub async fn remove_contact(
        &self,
        id: i64,
        kind: ContactKind,
        value: String,
        by: String,
        expect: Expect,
    ) -> Result<(), EditError> {
        self.write(move |conn| refused(remove(conn, id, kind, &value, (&by, &expect))))
            .await?
    }

    /// Makes one of lead `id`'s emails or phones (named as for
    /// [`Db::remove_contact`]) its primary one; the kind is pinned.
    pub async fn make_primary(
        &self,
        id: i64,
        kind: ContactKind,
        value: String,
        by: String,
        expect: Expect,
    ) -> Result<(), EditError> {
        self.write(move |conn| refused(make_primary(conn, id, kind, &value, (&by, &expect))))
            .await?
    }
}
