//! Merging two leads (staff's choice) and folding an anonymous one (a
//! delivery's decision) through one function, [`absorb`], which records in
//! `merges`, in the same transaction, the absorbed lead as it was and
//! exactly which rows moved, so that any merge can be undone (`undo.rs`).
//! The review queue, dismissals and the preview are in `queue.rs`.

mod arrivals;
mod later;
mod legacy;
mod queue;
mod record;
pub mod undo;

use std::collections::BTreeSet;

use serde::Serialize;

use super::DbError;
use super::leads::{self, Source};
use super::outbox::{self, OutboundEvent};
use super::sql::Sql;
use crate::args;
use crate::crm::duplicates::reversed;
use crate::crm::identity::name_key;
use crate::outbound::EventKind;

pub use arrivals::Unattributed;
pub use queue::{Pair, Preview, Provenance};
pub use record::{Keep, Kind, Link, Marks, Moved, Side, Snapshot, Values};
pub use undo::Unmerged;

/// What [`absorb`] did.
#[derive(Debug, Clone)]
pub struct Absorbed {
    /// The `merges` row.
    pub merge_id: i64,
    /// The record.
    pub snapshot: Snapshot,
    /// What moved.
    pub moved: Moved,
}

/// Why a merge, dismissal or unmerge was refused (nothing changed), or failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MergeError {
    /// No such lead.
    #[error("not found")]
    NotFound,
    /// The lead was merged into this one meanwhile.
    #[error("lead was merged into lead {0}")]
    MergedInto(i64),
    /// A request that cannot be done (a lead with itself, …).
    #[error("{0}")]
    Invalid(String),
    /// A request that conflicts with the leads as they are.
    #[error("{0}")]
    Conflict(String),
    /// Storage failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A refusal is an answer (nothing was written before it); a storage
/// failure fails the job, so that the writer rolls back what it wrote.
pub(super) fn refused<T>(outcome: Result<T, MergeError>) -> Result<Result<T, MergeError>, DbError> {
    match outcome {
        Err(MergeError::Db(e)) => Err(e),
        other => Ok(other),
    }
}

/// Checks that `id` is a lead that was not merged away.
pub(super) fn live(conn: &dyn Sql, id: i64) -> Result<(), MergeError> {
    let row: Option<Option<i64>> = conn.query_opt(
        "SELECT merged_into FROM leads WHERE id = ?1",
        args![id],
        |r| r.get(0),
    )?;
    match row {
        None => Err(MergeError::NotFound),
        Some(Some(_)) => Err(MergeError::MergedInto(leads::survivor(conn, id)?)),
        Some(None) => Ok(()),
    }
}

/// The lead's values a merge chooses between.
pub(super) fn values(conn: &dyn Sql, id: i64) -> Result<Values, DbError> {
    let (name, description, status, owner) = conn.query_row(
        "SELECT name, description, status, owner FROM leads WHERE id = ?1",
        args![id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    Ok(Values {
        name,
        description,
        status,
        owner,
        primary_email: conn.query_opt(
            "SELECT value FROM lead_emails WHERE lead_id = ?1 AND is_primary = 1",
            args![id],
            |r| r.get(0),
        )?,
        primary_phone: conn.query_opt(
            "SELECT value FROM lead_phones WHERE lead_id = ?1 AND is_primary = 1",
            args![id],
            |r| r.get(0),
        )?,
    })
}

/// The survivor's values after a merge keeping `keep`.
pub fn chosen(survivor: &Values, absorbed: &Values, keep: &Keep) -> Values {
    fn pick(side: Side, this: &Option<String>, other: &Option<String>) -> Option<String> {
        match side {
            Side::This => this.clone().or_else(|| other.clone()),
            Side::Other => other.clone().or_else(|| this.clone()),
        }
    }
    Values {
        name: pick(keep.name, &survivor.name, &absorbed.name),
        description: pick(
            keep.description,
            &survivor.description,
            &absorbed.description,
        ),
        status: match keep.status {
            Side::This => survivor.status.clone(),
            Side::Other => absorbed.status.clone(),
        },
        owner: pick(keep.owner, &survivor.owner, &absorbed.owner),
        primary_email: pick(
            keep.primary_email,
            &survivor.primary_email,
            &absorbed.primary_email,
        ),
        primary_phone: pick(
            keep.primary_phone,
            &survivor.primary_phone,
            &absorbed.primary_phone,
        ),
    }
}

/// The highest id of each table [`Marks`] follows.
fn marks(conn: &dyn Sql) -> Result<Marks, DbError> {
    let max = |table: &str| -> Result<i64, DbError> {
        conn.query_row(
            &format!("SELECT coalesce(max(id), 0) FROM {table}"),
            &[],
            |r| r.get(0),
        )
    };
    Ok(Marks {
        delivery: max("deliveries")?,
        conversation: max("conversations")?,
        note: max("notes")?,
        email: max("lead_emails")?,
        phone: max("lead_phones")?,
    })
}

/// A lead's possible-duplicate links.
pub(super) fn links(conn: &dyn Sql, id: i64) -> Result<Vec<Link>, DbError> {
    conn.query_all(
        "SELECT lead_b, score, reason FROM duplicate_links WHERE lead_a = ?1
         UNION ALL
         SELECT lead_a, score, reason FROM duplicate_links WHERE lead_b = ?1",
        args![id],
        |r| {
            Ok(Link {
                other: r.get(0)?,
                score: r.get(1)?,
                reason: r.get(2)?,
            })
        },
    )
}

/// Removes every possible-duplicate link of `id`.
pub(super) fn unlink_all(conn: &dyn Sql, id: i64) -> Result<(), DbError> {
    conn.execute("DELETE FROM duplicate_links WHERE lead_a = ?1", args![id])?;
    conn.execute("DELETE FROM duplicate_links WHERE lead_b = ?1", args![id])?;
    Ok(())
}

/// Removes the link between `a` and `b`, if any.
pub(super) fn unlink(conn: &dyn Sql, a: i64, b: i64) -> Result<(), DbError> {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    conn.execute(
        "DELETE FROM duplicate_links WHERE lead_a = ?1 AND lead_b = ?2",
        args![lo, hi],
    )?;
    Ok(())
}

/// Sets the four chosen fields of `lead` that differ from `before`,
/// writing a history row for each. Returns whether any changed.
pub(super) fn set_values(
    conn: &dyn Sql,
    lead: i64,
    before: &Values,
    after: &Values,
    source: &Source,
) -> Result<bool, DbError> {
    let mut changed = false;
    if after.name != before.name {
        let key = after
            .name
            .as_deref()
            .map(name_key)
            .filter(|k| !k.is_empty());
        let rev = key.as_deref().map(reversed);
        conn.execute(
            "UPDATE leads SET name = ?2, name_key = ?3, name_rev = ?4 WHERE id = ?1",
            args![lead, after.name, key, rev],
        )?;
        let (old, new) = (before.name.as_deref(), after.name.as_deref());
        leads::history(conn, lead, "name", old, new, source, None)?;
        changed = true;
    }
    if after.description != before.description {
        conn.execute(
            "UPDATE leads SET description = ?2 WHERE id = ?1",
            args![lead, after.description],
        )?;
        let (old, new) = (before.description.as_deref(), after.description.as_deref());
        leads::history(conn, lead, "description", old, new, source, None)?;
        changed = true;
    }
    if after.status != before.status {
        conn.execute(
            "UPDATE leads SET status = ?2 WHERE id = ?1",
            args![lead, after.status],
        )?;
        let (old, new) = (Some(before.status.as_str()), Some(after.status.as_str()));
        leads::history(conn, lead, "status", old, new, source, None)?;
        changed = true;
    }
    if after.owner != before.owner {
        conn.execute(
            "UPDATE leads SET owner = ?2 WHERE id = ?1",
            args![lead, after.owner],
        )?;
        let (old, new) = (before.owner.as_deref(), after.owner.as_deref());
        leads::history(conn, lead, "owner", old, new, source, None)?;
        changed = true;
    }
    for (table, field, old, new) in [
        (
            "lead_emails",
            "primary email",
            &before.primary_email,
            &after.primary_email,
        ),
        (
            "lead_phones",
            "primary phone",
            &before.primary_phone,
            &after.primary_phone,
        ),
    ] {
        if let Some(value) = new
            && new != old
            && make_primary(conn, table, lead, value)?
        {
            leads::history(conn, lead, field, old.as_deref(), Some(value), source, None)?;
            changed = true;
        }
    }
    Ok(changed)
}

/// Makes `value` the lead's primary in `table`, when the lead holds it.
pub(super) fn make_primary(
    conn: &dyn Sql,
    table: &str,
    lead: i64,
    value: &str,
) -> Result<bool, DbError> {
    let held = conn.exists(
        &format!("SELECT 1 FROM {table} WHERE lead_id = ?1 AND value = ?2"),
        args![lead, value],
    )?;
    if held {
        conn.execute(
            &format!("UPDATE {table} SET is_primary = 0 WHERE lead_id = ?1 AND is_primary = 1"),
            args![lead],
        )?;
        conn.execute(
            &format!("UPDATE {table} SET is_primary = 1 WHERE lead_id = ?1 AND value = ?2"),
            args![lead, value],
        )?;
    }
    Ok(held)
}

/// Gives a lead without a primary in `table` one: the oldest it holds.
pub(super) fn ensure_primary(conn: &dyn Sql, table: &str, lead: i64) -> Result<(), DbError> {
    let has = conn.exists(
        &format!("SELECT 1 FROM {table} WHERE lead_id = ?1 AND is_primary = 1"),
        args![lead],
    )?;
    if !has {
        let oldest: Option<i64> = conn.query_opt(
            &format!("SELECT id FROM {table} WHERE lead_id = ?1 ORDER BY id LIMIT 1"),
            args![lead],
            |r| r.get(0),
        )?;
        if let Some(id) = oldest {
            conn.execute(
                &format!("UPDATE {table} SET is_primary = 1 WHERE id = ?1"),
                args![id],
            )?;
        }
    }
    Ok(())
}

/// Moves everything of lead `absorbed` to `survivor` and points it there:
/// its emails, phones, visitor ids, conversations and notes; its custom
/// fields and tags the survivor lacks; its possible-duplicate links (not
/// the one between the two, nor dismissed pairs). For [`Kind::Merge`] the
/// survivor's name, description, status, owner and primaries become what
/// `keep` chooses (history rows for each); a [`Kind::Fold`] leaves them.
/// The `merges` row recording it all is written here, so that every merge
/// and fold can be undone. The caller writes the history rows that say
/// the lead was merged, and marks the survivor changed.
pub fn absorb(
    conn: &dyn Sql,
    survivor: i64,
    absorbed: i64,
    keep: &Keep,
    kind: Kind,
    source: &Source,
) -> Result<Absorbed, DbError> {
    let marks = marks(conn)?;
    let survivor_before = values(conn, survivor)?;
    let absorbed_values = values(conn, absorbed)?;
    let survivor_after = match kind {
        Kind::Merge => chosen(&survivor_before, &absorbed_values, keep),
        Kind::Fold => survivor_before.clone(),
    };
    let fields = super::view::fields(conn, absorbed)?;
    let tags = lead_tags(conn, absorbed)?;
    let absorbed_links = links(conn, absorbed)?;
    let their_fields = super::view::fields(conn, survivor)?;
    let their_tags: BTreeSet<String> = lead_tags(conn, survivor)?.into_iter().collect();
    let their_links: BTreeSet<i64> = links(conn, survivor)?.iter().map(|l| l.other).collect();

    let mut moved = Moved {
        emails: conn.query_all(
            "SELECT value FROM lead_emails WHERE lead_id = ?1 ORDER BY id",
            args![absorbed],
            |r| r.get(0),
        )?,
        phones: conn.query_all(
            "SELECT value FROM lead_phones WHERE lead_id = ?1 ORDER BY id",
            args![absorbed],
            |r| r.get(0),
        )?,
        visitors: conn.query_all(
            "SELECT platform, visitor_id FROM lead_visitors WHERE lead_id = ?1",
            args![absorbed],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?,
        conversations: conn.query_all(
            "SELECT id FROM conversations WHERE lead_id = ?1 ORDER BY id",
            args![absorbed],
            |r| r.get(0),
        )?,
        notes: conn.query_all(
            "SELECT id FROM notes WHERE lead_id = ?1 ORDER BY id",
            args![absorbed],
            |r| r.get(0),
        )?,
        fields: fields
            .iter()
            .filter(|(k, _)| !their_fields.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        tags: tags
            .iter()
            .filter(|t| !their_tags.contains(*t))
            .cloned()
            .collect(),
        links: Vec::new(),
    };

    // Identifiers keep their rows (and ids): moving changes only the lead,
    // so no value is ever on two leads, not even inside the transaction.
    for sql in [
        "UPDATE lead_emails SET lead_id = ?2, is_primary = 0 WHERE lead_id = ?1",
        "UPDATE lead_phones SET lead_id = ?2, is_primary = 0 WHERE lead_id = ?1",
        "UPDATE lead_visitors SET lead_id = ?2 WHERE lead_id = ?1",
        "UPDATE conversations SET lead_id = ?2 WHERE lead_id = ?1",
        "UPDATE notes SET lead_id = ?2 WHERE lead_id = ?1",
    ] {
        conn.execute(sql, args![absorbed, survivor])?;
    }
    for (key, _) in &moved.fields {
        conn.execute(
            "UPDATE lead_fields SET lead_id = ?2 WHERE lead_id = ?1 AND key = ?3",
            args![absorbed, survivor, key],
        )?;
    }
    conn.execute(
        "DELETE FROM lead_fields WHERE lead_id = ?1",
        args![absorbed],
    )?;
    for tag in &moved.tags {
        conn.execute(
            "INSERT INTO lead_tags (lead_id, tag) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            args![survivor, tag],
        )?;
    }
    conn.execute("DELETE FROM lead_tags WHERE lead_id = ?1", args![absorbed])?;
    unlink_all(conn, absorbed)?;
    for link in &absorbed_links {
        if link.other == survivor || their_links.contains(&link.other) {
            continue;
        }
        if leads::link_duplicate(
            conn,
            survivor,
            link.other,
            link.score,
            &link.reason,
            &source.at,
        )? {
            moved.links.push(link.other);
        }
    }
    if kind == Kind::Merge {
        set_values(conn, survivor, &survivor_before, &survivor_after, source)?;
    }
    // A lead whose primary was the absorbed one's gets one back.
    for table in ["lead_emails", "lead_phones"] {
        ensure_primary(conn, table, survivor)?;
    }
    conn.execute(
        "UPDATE leads SET merged_into = ?2, updated_at = ?3, version = version + 1 WHERE id = ?1",
        args![absorbed, survivor, source.at],
    )?;
    let mut survivor_tags: Vec<String> = their_tags.into_iter().collect();
    survivor_tags.extend(moved.tags.iter().cloned());
    survivor_tags.sort();
    let snapshot = Snapshot {
        absorbed: absorbed_values,
        fields,
        tags,
        links: absorbed_links,
        survivor_before,
        survivor_after,
        survivor_tags: Some(survivor_tags),
    };
    let merge_id = conn
        .insert_id(
            "INSERT INTO merges (survivor, absorbed, kind, merged_at, merged_by, delivery_id,
                                 snapshot, moved, marks)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            args![
                survivor,
                absorbed,
                kind.as_str(),
                source.at,
                source.label,
                source.delivery_id,
                json(&snapshot),
                json(&moved),
                json(&marks)
            ],
        )?
        .ok_or_else(|| DbError::Internal("merge not recorded".into()))?;
    Ok(Absorbed {
        merge_id,
        snapshot,
        moved,
    })
}

/// A record as the JSON text of its column.
pub(super) fn json<T: Serialize>(record: &T) -> String {
    serde_json::to_string(record).unwrap_or_else(|_| "{}".into())
}

/// A lead's tags.
fn lead_tags(conn: &dyn Sql, id: i64) -> Result<Vec<String>, DbError> {
    conn.query_all(
        "SELECT tag FROM lead_tags WHERE lead_id = ?1 ORDER BY tag",
        args![id],
        |r| r.get(0),
    )
}

/// The leads `lead` was unmerged from (either way round): a delivery never
/// folds it into one of them again.
pub fn kept_apart(conn: &dyn Sql, lead: i64) -> Result<Vec<i64>, DbError> {
    conn.query_all(
        "SELECT survivor FROM merges WHERE absorbed = ?1 AND undone_at IS NOT NULL
         UNION
         SELECT absorbed FROM merges WHERE survivor = ?1 AND undone_at IS NOT NULL",
        args![lead],
        |r| r.get(0),
    )
}

/// Staff's merge of `absorbed` into `survivor` (see [`Db::merge_leads`]).
fn merge(
    conn: &dyn Sql,
    survivor: i64,
    absorbed: i64,
    keep: &Keep,
    source: &Source,
) -> Result<Absorbed, MergeError> {
    if survivor == absorbed {
        return Err(MergeError::Invalid(
            "a lead cannot be merged with itself".into(),
        ));
    }
    live(conn, survivor)?;
    live(conn, absorbed)?;
    let name: Option<String> = conn.query_row(
        "SELECT name FROM leads WHERE id = ?1",
        args![absorbed],
        |r| r.get(0),
    )?;
    let done = absorb(conn, survivor, absorbed, keep, Kind::Merge, source)?;
    let note = format!(
        "lead {absorbed} merged in{}",
        name.map(|n| format!(" (was named {n:?})"))
            .unwrap_or_default()
    );
    let (from, into) = (absorbed.to_string(), survivor.to_string());
    leads::history(
        conn,
        survivor,
        "merged",
        Some(&from),
        Some(&note),
        source,
        None,
    )?;
    leads::history(
        conn,
        absorbed,
        "merged_into",
        None,
        Some(&into),
        source,
        None,
    )?;
    leads::touch(conn, survivor, &source.at)?;
    Ok(done)
}

impl super::Db {
    /// Merges lead `absorbed` into `survivor` as staff member `by`, keeping
    /// what `keep` chooses, in one transaction: `absorbed` then answers
    /// with `merged_into`. A lead merged away meanwhile is refused with
    /// its survivor ([`MergeError::MergedInto`]).
    /// The audit entry and the outbound `lead.merged` event commit with it.
    pub async fn merge_leads(
        &self,
        survivor: i64,
        absorbed: i64,
        keep: Keep,
        by: String,
        audit: crate::store::audit::Entry,
    ) -> Result<i64, MergeError> {
        self.write(move |conn| {
            let source = staff_source(&by);
            let merged = merge(conn, survivor, absorbed, &keep, &source);
            if merged.is_ok() {
                crate::store::audit::record(conn, &audit)?;
                let event = OutboundEvent::new(EventKind::LeadMerged, survivor)
                    .with("absorbed", serde_json::json!({ "id": absorbed }));
                outbox::enqueue(conn, &event)?;
            }
            refused(merged.map(|m| m.merge_id))
        })
        .await?
    }
}

/// Where the history rows of `by`'s action come from, now.
pub(super) fn staff_source(by: &str) -> Source {
    Source {
        delivery_id: None,
        label: by.to_owned(),
        at: crate::event::now_rfc3339(),
    }
}
