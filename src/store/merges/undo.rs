//! Unmerge: the absorbed lead comes back as its `merges` row recorded it
//! (values, custom fields, tags, links) with every row that moved; what
//! arrived on the survivor after the merge goes back with it when the
//! delivery that brought it came only through the absorbed lead's
//! identifiers (read from the stored raw deliveries), and stays with the
//! survivor, listed as unattributed, when it came through both. Values
//! (name, description, custom fields, tags) later deliveries changed are
//! sorted the same way (`later.rs`).
//!
//! Folds made before merges were recorded (schema version 8) have no row:
//! what moved is rebuilt from the raw deliveries applied to the absorbed
//! lead (its visitor ids, chats and notes) and its history (custom fields,
//! tags); what arrived after such a fold stays with the survivor.

use super::arrivals::{Row, Unattributed, attribute, keys_before, move_row};
use super::later;
use super::legacy::rebuilt;
use super::{
    Link, Marks, MergeError, Moved, Snapshot, Values, ensure_primary, json, live, make_primary,
    refused, set_values, staff_source, values,
};
use crate::args;
use crate::outbound::EventKind;
use crate::store::leads;
use crate::store::outbox::{self, OutboundEvent};
use crate::store::sql::Sql;
use crate::store::{Db, DbError};

/// What an unmerge did.
#[derive(Debug, Clone)]
pub struct Unmerged {
    /// What stayed with the survivor for want of knowing whose it is.
    pub unattributed: Vec<Unattributed>,
}

/// A `merges` row.
pub(super) struct Record {
    /// Its id; none for a fold rebuilt from before version 8.
    pub(super) id: Option<i64>,
    /// When the merge was made.
    pub(super) at: String,
    /// The absorbed lead as it was.
    pub(super) snapshot: Snapshot,
    /// What moved.
    pub(super) moved: Moved,
    /// The highest ids then.
    pub(super) marks: Marks,
}

/// The latest merge of `absorbed` not undone yet.
fn record(conn: &dyn Sql, absorbed: i64) -> Result<Option<Record>, DbError> {
    let row: Option<(i64, String, String, String, String)> = conn.query_opt(
        "SELECT id, merged_at, snapshot, moved, marks FROM merges
         WHERE absorbed = ?1 AND undone_at IS NULL ORDER BY id DESC LIMIT 1",
        args![absorbed],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
    )?;
    let Some((id, at, snapshot, moved, marks)) = row else {
        return Ok(None);
    };
    let parse = |what: &str, text: &str| {
        DbError::Internal(format!("merge {id}: unreadable {what}: {text:.80}"))
    };
    Ok(Some(Record {
        id: Some(id),
        at,
        snapshot: serde_json::from_str(&snapshot).map_err(|_| parse("snapshot", &snapshot))?,
        moved: serde_json::from_str(&moved).map_err(|_| parse("moved", &moved))?,
        marks: serde_json::from_str(&marks).map_err(|_| parse("marks", &marks))?,
    }))
}

/// Undoes the merge of `absorbed` into `survivor` (see [`Db::unmerge_lead`]).
fn unmerge(
    conn: &dyn Sql,
    survivor: i64,
    absorbed: i64,
    by: &str,
    region: phonenumber::country::Id,
) -> Result<Unmerged, MergeError> {
    live(conn, survivor)?;
    let into: Option<Option<i64>> = conn.query_opt(
        "SELECT merged_into FROM leads WHERE id = ?1",
        args![absorbed],
        |r| r.get(0),
    )?;
    match into {
        None => return Err(MergeError::NotFound),
        Some(None) => {
            return Err(MergeError::Conflict(format!(
                "lead {absorbed} is not merged into another lead"
            )));
        }
        Some(Some(_)) if leads::survivor(conn, absorbed)? != survivor => {
            return Err(MergeError::Conflict(format!(
                "lead {absorbed} was not merged into lead {survivor}"
            )));
        }
        // A chain is undone link by link, newest first: the values of the
        // lead in between were recorded with what it had absorbed.
        Some(Some(direct)) if direct != survivor => {
            return Err(MergeError::Conflict(format!(
                "lead {absorbed} was merged into lead {direct}, which was merged into lead \
                 {survivor} since: unmerge lead {direct} first"
            )));
        }
        Some(Some(_)) => {}
    }
    let source = staff_source(by);
    let rec = match record(conn, absorbed)? {
        Some(rec) => rec,
        None => rebuilt(conn, survivor, absorbed, region)?,
    };
    let Record {
        snapshot, moved, ..
    } = &rec;

    // What moved comes back (only what the survivor still holds: what
    // staff removed since stays removed).
    let mut rows: Vec<Row> = Vec::new();
    rows.extend(moved.emails.iter().cloned().map(Row::Email));
    rows.extend(moved.phones.iter().cloned().map(Row::Phone));
    rows.extend(
        moved
            .visitors
            .iter()
            .map(|(p, v)| Row::Visitor(p.clone(), v.clone())),
    );
    rows.extend(moved.conversations.iter().copied().map(Row::Conversation));
    rows.extend(moved.notes.iter().copied().map(Row::Note));
    for row in &rows {
        move_row(conn, row, survivor, absorbed)?;
    }
    let mut theirs = keys_before(conn, absorbed, &rec)?;
    let changed = later::changes(conn, survivor, &rec)?;
    let sorted = attribute(
        conn,
        survivor,
        &rec,
        &mut theirs,
        !changed.is_empty(),
        region,
    )?;
    for row in &sorted.back {
        move_row(conn, row, survivor, absorbed)?;
    }
    // Values changed since: before the merge's own are undone below, so
    // that the survivor's reverted values meet what the merge left.
    let (late, listed) = later::sort(conn, survivor, &rec, &changed, &sorted.deliveries, &source)?;
    let mut unattributed = sorted.unattributed;
    unattributed.extend(listed);

    // The restored lead's own values, custom fields, tags and links, with
    // what its own deliveries changed since on top.
    let Values { status, owner, .. } = &snapshot.absorbed;
    let name = late.name.clone().or_else(|| snapshot.absorbed.name.clone());
    let description = late
        .description
        .clone()
        .or_else(|| snapshot.absorbed.description.clone());
    let key = name
        .as_deref()
        .map(crate::crm::identity::name_key)
        .filter(|k| !k.is_empty());
    let rev = key.as_deref().map(crate::crm::duplicates::reversed);
    conn.execute(
        "UPDATE leads SET name = ?2, name_key = ?3, name_rev = ?4, description = ?5,
                          status = ?6, owner = ?7, merged_into = NULL
         WHERE id = ?1",
        args![absorbed, name, key, rev, description, status, owner],
    )?;
    for (key, value) in &moved.fields {
        conn.execute(
            "DELETE FROM lead_fields WHERE lead_id = ?1 AND key = ?2 AND value = ?3",
            args![survivor, key, value],
        )?;
    }
    for (key, value) in snapshot.fields.iter().chain(&late.fields) {
        conn.execute(
            "INSERT INTO lead_fields (lead_id, key, value, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (lead_id, key) DO UPDATE SET value = excluded.value",
            args![absorbed, key, value, source.at],
        )?;
    }
    for tag in &moved.tags {
        conn.execute(
            "DELETE FROM lead_tags WHERE lead_id = ?1 AND tag = ?2",
            args![survivor, tag],
        )?;
    }
    for tag in snapshot.tags.iter().chain(&late.tags) {
        conn.execute(
            "INSERT INTO lead_tags (lead_id, tag) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            args![absorbed, tag],
        )?;
    }
    for other in &moved.links {
        super::unlink(conn, survivor, *other)?;
    }
    for Link {
        other,
        score,
        reason,
    } in &snapshot.links
    {
        let other = leads::survivor(conn, *other)?;
        leads::link_duplicate(conn, absorbed, other, *score, reason, &source.at)?;
    }

    // Primaries: the restored lead's as they were; the survivor's back to
    // its own when the merge had chosen the other's.
    for (table, value) in [
        ("lead_emails", &snapshot.absorbed.primary_email),
        ("lead_phones", &snapshot.absorbed.primary_phone),
    ] {
        if let Some(value) = value {
            make_primary(conn, table, absorbed, value)?;
        }
        ensure_primary(conn, table, absorbed)?;
    }
    // The survivor's values the merge chose come back where nobody has
    // changed them since.
    let now = values(conn, survivor)?;
    let (before, after) = (&snapshot.survivor_before, &snapshot.survivor_after);
    let restore = |now: &Option<String>, before: &Option<String>, after: &Option<String>| {
        if now == after {
            before.clone()
        } else {
            now.clone()
        }
    };
    let mut back = Values {
        name: restore(&now.name, &before.name, &after.name),
        description: restore(&now.description, &before.description, &after.description),
        status: if now.status == after.status {
            before.status.clone()
        } else {
            now.status.clone()
        },
        owner: restore(&now.owner, &before.owner, &after.owner),
        // A primary that went back with the restored lead leaves none.
        primary_email: restore(
            &now.primary_email,
            &before.primary_email,
            &after.primary_email,
        )
        .or_else(|| before.primary_email.clone()),
        primary_phone: restore(
            &now.primary_phone,
            &before.primary_phone,
            &after.primary_phone,
        )
        .or_else(|| before.primary_phone.clone()),
    };
    // A value that went back with the restored lead is not the survivor's.
    let held = |table: &str, value: &Option<String>| -> Result<bool, DbError> {
        match value {
            Some(v) => conn.exists(
                &format!("SELECT 1 FROM {table} WHERE lead_id = ?1 AND value = ?2"),
                args![survivor, v],
            ),
            None => Ok(false),
        }
    };
    if !held("lead_emails", &back.primary_email)? {
        back.primary_email = None;
    }
    if !held("lead_phones", &back.primary_phone)? {
        back.primary_phone = None;
    }
    set_values(conn, survivor, &now, &back, &source)?;
    for table in ["lead_emails", "lead_phones"] {
        ensure_primary(conn, table, survivor)?;
    }

    let listed = if unattributed.is_empty() {
        String::new()
    } else {
        format!("; {} item(s) kept here, unattributed", unattributed.len())
    };
    let (went, brought) = if late.said.is_empty() {
        (String::new(), String::new())
    } else {
        let said = late.said.join(", ");
        (
            format!("; {said} (changed since by its deliveries) went back with it"),
            format!("; with {said} its deliveries changed since the merge"),
        )
    };
    let (a, s) = (absorbed.to_string(), survivor.to_string());
    leads::history(
        conn,
        survivor,
        "unmerged",
        Some(&a),
        Some(&format!("lead {absorbed} restored{went}{listed}")),
        &source,
        None,
    )?;
    leads::history(
        conn,
        absorbed,
        "unmerged",
        Some(&s),
        Some(&format!("restored from lead {survivor}{brought}")),
        &source,
        None,
    )?;
    leads::touch(conn, survivor, &source.at)?;
    leads::touch(conn, absorbed, &source.at)?;
    match rec.id {
        Some(id) => {
            conn.execute(
                "UPDATE merges SET undone_at = ?2, undone_by = ?3 WHERE id = ?1",
                args![id, source.at, source.label],
            )?;
        }
        // A fold from before merges were recorded: recorded now, undone,
        // so that the pair is kept apart from now on.
        None => {
            conn.execute(
                "INSERT INTO merges (survivor, absorbed, kind, merged_at, merged_by, snapshot,
                                     moved, marks, undone_at, undone_by)
                 VALUES (?1, ?2, 'fold', ?3, 'before version 8', ?4, ?5, ?6, ?7, ?8)",
                args![
                    survivor,
                    absorbed,
                    rec.at,
                    json(&rec.snapshot),
                    json(&rec.moved),
                    json(&rec.marks),
                    source.at,
                    source.label
                ],
            )?;
        }
    }
    Ok(Unmerged { unattributed })
}

impl Db {
    /// Undoes the merge (or fold) of lead `absorbed` into `survivor` as
    /// staff member `by`, in one transaction (see the module's text).
    /// `region` reads the phones of stored deliveries as ingest does.
    pub async fn unmerge_lead(
        &self,
        survivor: i64,
        absorbed: i64,
        by: String,
        region: phonenumber::country::Id,
        audit: crate::store::audit::Entry,
    ) -> Result<Unmerged, MergeError> {
        self.write(move |conn| {
            let undone = unmerge(conn, survivor, absorbed, &by, region);
            if undone.is_ok() {
                crate::store::audit::record(conn, &audit)?;
                let event = OutboundEvent::new(EventKind::LeadUnmerged, survivor)
                    .with("restored", serde_json::json!({ "id": absorbed }));
                outbox::enqueue(conn, &event)?;
            }
            refused(undone)
        })
        .await?
    }

    /// The leads merged (or folded) into `survivor` that can be unmerged,
    /// newest first.
    pub async fn absorbed_leads(
        &self,
        survivor: i64,
    ) -> Result<Vec<(i64, Option<String>)>, DbError> {
        self.read(move |conn| {
            conn.query_all(
                "SELECT id, name FROM leads WHERE merged_into = ?1 ORDER BY id DESC",
                args![survivor],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .await
    }
}
