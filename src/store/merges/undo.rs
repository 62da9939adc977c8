//! Unmerge: the absorbed lead comes back as its `merges` row recorded it
//! (values, custom fields, tags, links) with every row that moved; what
//! arrived on the survivor after the merge goes back with it when the
//! delivery that brought it came only through the absorbed lead's
//! identifiers (read from the stored raw deliveries), and stays with the
//! survivor, listed as unattributed, when it came through both.
//!
//! Folds made before merges were recorded (schema version 8) have no row:
//! what moved is rebuilt from the raw deliveries applied to the absorbed
//! lead (its visitor ids, chats and notes) and its history (custom fields,
//! tags); what arrived after such a fold stays with the survivor.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use serde::Serialize;

use super::{
    Link, Marks, MergeError, Moved, Snapshot, Values, ensure_primary, json, live, make_primary,
    refused, set_values, staff_source, values,
};
use crate::args;
use crate::crm::identity::{Email, Phone};
use crate::event::{Event, Platform};
use crate::platforms;
use crate::store::leads;
use crate::store::sql::Sql;
use crate::store::{Db, DbError};

/// Something that arrived on the survivor after the merge through a
/// delivery that names both leads: it stays with the survivor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unattributed {
    /// `email`, `phone`, `visitor`, `conversation` or `note`.
    pub kind: &'static str,
    /// The value, visitor id or chat (`platform:id`), or note (`platform:kind:id`).
    pub value: String,
    /// The delivery that brought it.
    pub delivery_id: i64,
}

/// What an unmerge did.
#[derive(Debug, Clone)]
pub struct Unmerged {
    /// What stayed with the survivor for want of knowing whose it is.
    pub unattributed: Vec<Unattributed>,
}

/// A `merges` row.
struct Record {
    id: Option<i64>,
    at: String,
    snapshot: Snapshot,
    moved: Moved,
    marks: Marks,
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

/// What a stored delivery names: its identifiers as `(kind, value)` keys
/// (`email`, `phone`, `visitor`, `chat`) and the note it carried.
struct Named {
    keys: Vec<(&'static str, String)>,
    note: Option<String>,
}

/// Reads a stored delivery again; `None` when it does not translate (an
/// import row, a body no version could parse).
fn named(platform: &str, body: &[u8], region: phonenumber::country::Id) -> Option<Named> {
    let parsed = Platform::parse(platform)?;
    let (event, _) = platforms::translate(parsed, &Bytes::copy_from_slice(body)).ok()?;
    Some(named_event(platform, &event, region))
}

fn named_event(platform: &str, event: &Event, region: phonenumber::country::Id) -> Named {
    let mut keys = Vec::new();
    if let Some(visitor) = &event.visitor {
        for id in &visitor.ids {
            keys.push(("visitor", format!("{platform}:{id}")));
        }
        for email in visitor.emails.iter().filter_map(|e| Email::parse(e)) {
            keys.push(("email", email.normalized));
        }
        for phone in visitor
            .phones
            .iter()
            .filter_map(|p| Phone::parse(p, region))
        {
            keys.push(("phone", phone.normalized));
        }
    }
    for chat in event
        .chat_id
        .iter()
        .chain(event.conversation.as_ref().map(|c| &c.chat_id))
    {
        keys.push(("chat", format!("{platform}:{chat}")));
    }
    let note = event
        .note
        .as_ref()
        .map(|n| format!("{platform}:{}:{}", n.kind, n.ext_id));
    Named { keys, note }
}

/// A row on the survivor: its table's key and how it is shown.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Row {
    Email(String),
    Phone(String),
    Visitor(String, String),
    Conversation(i64),
    Note(i64),
}

/// Rows that arrived on `survivor` after the merge, by the key a delivery
/// names them with.
fn arrivals(
    conn: &dyn Sql,
    survivor: i64,
    rec: &Record,
) -> Result<BTreeMap<(&'static str, String), Row>, DbError> {
    let mut out = BTreeMap::new();
    conn.each_row(
        "SELECT value FROM lead_emails WHERE lead_id = ?1 AND id > ?2",
        args![survivor, rec.marks.email],
        &mut |r| {
            let v: String = r.get(0)?;
            out.insert(("email", v.clone()), Row::Email(v));
            Ok(())
        },
    )?;
    conn.each_row(
        "SELECT value FROM lead_phones WHERE lead_id = ?1 AND id > ?2",
        args![survivor, rec.marks.phone],
        &mut |r| {
            let v: String = r.get(0)?;
            out.insert(("phone", v.clone()), Row::Phone(v));
            Ok(())
        },
    )?;
    conn.each_row(
        "SELECT platform, visitor_id FROM lead_visitors WHERE lead_id = ?1 AND created_at > ?2",
        args![survivor, rec.at],
        &mut |r| {
            let (p, v): (String, String) = (r.get(0)?, r.get(1)?);
            out.insert(("visitor", format!("{p}:{v}")), Row::Visitor(p, v));
            Ok(())
        },
    )?;
    conn.each_row(
        "SELECT id, platform, chat_id FROM conversations WHERE lead_id = ?1 AND id > ?2",
        args![survivor, rec.marks.conversation],
        &mut |r| {
            let (id, p, c): (i64, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
            out.insert(("chat", format!("{p}:{c}")), Row::Conversation(id));
            Ok(())
        },
    )?;
    // Staff notes (with an author) are the survivor's own.
    conn.each_row(
        "SELECT id, platform, kind, ext_id FROM notes
         WHERE lead_id = ?1 AND id > ?2 AND author IS NULL",
        args![survivor, rec.marks.note],
        &mut |r| {
            let (id, p, k, e): (i64, String, String, String) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            out.insert(("note", format!("{p}:{k}:{e}")), Row::Note(id));
            Ok(())
        },
    )?;
    Ok(out)
}

/// The identifying keys of a lead's rows that were there at the merge.
fn keys_before(
    conn: &dyn Sql,
    lead: i64,
    rec: &Record,
) -> Result<HashSet<(&'static str, String)>, DbError> {
    let mut keys = HashSet::new();
    for (kind, sql, mark) in [
        (
            "email",
            "SELECT value FROM lead_emails WHERE lead_id = ?1 AND id <= ?2",
            rec.marks.email,
        ),
        (
            "phone",
            "SELECT value FROM lead_phones WHERE lead_id = ?1 AND id <= ?2",
            rec.marks.phone,
        ),
        (
            "chat",
            "SELECT platform || ':' || chat_id FROM conversations WHERE lead_id = ?1 AND id <= ?2",
            rec.marks.conversation,
        ),
    ] {
        conn.each_row(sql, args![lead, mark], &mut |r| {
            keys.insert((kind, r.get::<String>(0)?));
            Ok(())
        })?;
    }
    conn.each_row(
        "SELECT platform || ':' || visitor_id FROM lead_visitors WHERE lead_id = ?1 AND created_at <= ?2",
        args![lead, rec.at],
        &mut |r| {
            keys.insert(("visitor", r.get::<String>(0)?));
            Ok(())
        },
    )?;
    Ok(keys)
}

/// Sorts what arrived on the survivor after the merge: the rows to move
/// to the restored lead, and those that stay, unattributed. `theirs` are
/// the restored lead's keys (its rows already moved back), `ours` the
/// survivor's.
fn attribute(
    conn: &dyn Sql,
    survivor: i64,
    rec: &Record,
    theirs: &mut HashSet<(&'static str, String)>,
    region: phonenumber::country::Id,
) -> Result<(Vec<Row>, Vec<Unattributed>), DbError> {
    let mut pending = arrivals(conn, survivor, rec)?;
    if pending.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut ours = keys_before(conn, survivor, rec)?;
    let mut back = Vec::new();
    let mut unattributed = Vec::new();
    let deliveries: Vec<(i64, String, Vec<u8>)> = conn.query_all(
        "SELECT id, platform, body FROM deliveries
         WHERE id > ?1 AND lead_id = ?2 AND status = 'applied' ORDER BY id",
        args![rec.marks.delivery, survivor],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    for (delivery_id, platform, body) in deliveries {
        let Some(named) = named(&platform, &body, region) else {
            continue;
        };
        let via_theirs = named.keys.iter().any(|k| theirs.contains(k));
        let via_ours = named.keys.iter().any(|k| ours.contains(k));
        let brought: Vec<(&'static str, String)> = named
            .keys
            .iter()
            .cloned()
            .chain(named.note.map(|n| ("note", n)))
            .filter(|k| pending.contains_key(k))
            .collect();
        for key in brought {
            let Some(row) = pending.remove(&key) else {
                continue;
            };
            match (via_theirs, via_ours) {
                (true, false) => {
                    theirs.insert(key);
                    back.push(row);
                }
                (true, true) => unattributed.push(Unattributed {
                    kind: match key.0 {
                        "chat" => "conversation",
                        other => other,
                    },
                    value: key.1,
                    delivery_id,
                }),
                _ => {
                    ours.insert(key);
                }
            }
        }
    }
    Ok((back, unattributed))
}

/// Moves `row` from `from` to `to` (only if `from` holds it).
fn move_row(conn: &dyn Sql, row: &Row, from: i64, to: i64) -> Result<(), DbError> {
    match row {
        Row::Email(v) => conn.execute(
            "UPDATE lead_emails SET lead_id = ?3, is_primary = 0 WHERE value = ?1 AND lead_id = ?2",
            args![v, from, to],
        )?,
        Row::Phone(v) => conn.execute(
            "UPDATE lead_phones SET lead_id = ?3, is_primary = 0 WHERE value = ?1 AND lead_id = ?2",
            args![v, from, to],
        )?,
        Row::Visitor(p, v) => conn.execute(
            "UPDATE lead_visitors SET lead_id = ?4 WHERE platform = ?1 AND visitor_id = ?2 AND lead_id = ?3",
            args![p, v, from, to],
        )?,
        Row::Conversation(id) => conn.execute(
            "UPDATE conversations SET lead_id = ?3 WHERE id = ?1 AND lead_id = ?2",
            args![id, from, to],
        )?,
        Row::Note(id) => conn.execute(
            "UPDATE notes SET lead_id = ?3 WHERE id = ?1 AND lead_id = ?2",
            args![id, from, to],
        )?,
    };
    Ok(())
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
    let (late, unattributed) = attribute(conn, survivor, &rec, &mut theirs, region)?;
    for row in &late {
        move_row(conn, row, survivor, absorbed)?;
    }

    // The restored lead's own values, custom fields, tags and links.
    let Values {
        name,
        description,
        status,
        owner,
        ..
    } = &snapshot.absorbed;
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
    for (key, value) in &snapshot.fields {
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
    for tag in &snapshot.tags {
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
    let (a, s) = (absorbed.to_string(), survivor.to_string());
    leads::history(
        conn,
        survivor,
        "unmerged",
        Some(&a),
        Some(&format!("lead {absorbed} restored{listed}")),
        &source,
        None,
    )?;
    leads::history(
        conn,
        absorbed,
        "unmerged",
        Some(&s),
        Some(&format!("restored from lead {survivor}")),
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

/// The record of a fold made before merges were recorded, rebuilt: what
/// the deliveries applied to the absorbed lead brought (visitor ids, chats,
/// notes) and its history (custom fields, tags). Its marks are now: what
/// arrived after such a fold is not told apart.
fn rebuilt(
    conn: &dyn Sql,
    survivor: i64,
    absorbed: i64,
    region: phonenumber::country::Id,
) -> Result<Record, DbError> {
    let at: String = conn
        .query_opt(
            "SELECT at FROM history WHERE lead_id = ?1 AND field = 'merged_into'
             ORDER BY id DESC LIMIT 1",
            args![absorbed],
            |r| r.get(0),
        )?
        .unwrap_or_default();
    let mut moved = Moved::default();
    let deliveries: Vec<(String, Vec<u8>)> = conn.query_all(
        "SELECT platform, body FROM deliveries WHERE lead_id = ?1 AND status = 'applied' ORDER BY id",
        args![absorbed],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    for (platform, body) in deliveries {
        let Some(named) = named(&platform, &body, region) else {
            continue;
        };
        for (kind, value) in named.keys {
            let (p, v) = value.split_once(':').unwrap_or_default();
            match kind {
                "visitor" if !moved.visitors.iter().any(|(a, b)| a == p && b == v) => {
                    moved.visitors.push((p.to_owned(), v.to_owned()));
                }
                "chat" if leads::chat_owner(conn, p, v)? == Some(survivor) => {
                    let id = conversation_id(conn, p, v)?;
                    if !moved.conversations.contains(&id) {
                        moved.conversations.push(id);
                    }
                }
                _ => {}
            }
        }
        if let Some(note) = named.note {
            let mut parts = note.splitn(3, ':');
            if let (Some(p), Some(k), Some(e)) = (parts.next(), parts.next(), parts.next()) {
                let id: Option<i64> = conn.query_opt(
                    "SELECT id FROM notes WHERE platform = ?1 AND kind = ?2 AND ext_id = ?3 AND lead_id = ?4",
                    args![p, k, e, survivor],
                    |r| r.get(0),
                )?;
                moved.notes.extend(id);
            }
        }
    }
    let mut snapshot = Snapshot {
        absorbed: values(conn, absorbed)?,
        ..Snapshot::default()
    };
    snapshot.survivor_before = values(conn, survivor)?;
    snapshot.survivor_after = snapshot.survivor_before.clone();
    // A new lead's first values are entries packed in its `created` row.
    conn.each_row(
        "SELECT field, old, new, explanation FROM history WHERE lead_id = ?1 ORDER BY id",
        args![absorbed],
        &mut |r| {
            let row: Option<String> = r.get(3)?;
            for entry in leads::entries((r.get(0)?, r.get(1)?, r.get(2)?), row.as_deref(), None) {
                match (entry.field.strip_prefix("field "), entry.new) {
                    (Some(key), Some(new)) => {
                        snapshot.fields.insert(key.to_owned(), new);
                    }
                    (None, Some(new)) if entry.field == "tags" => {
                        snapshot.tags.extend(new.split(", ").map(str::to_owned));
                    }
                    _ => {}
                }
            }
            Ok(())
        },
    )?;
    snapshot.tags.sort();
    snapshot.tags.dedup();
    // Fields the fold moved are those the survivor holds with that value.
    let theirs = crate::store::view::fields(conn, survivor)?;
    moved.fields = snapshot
        .fields
        .iter()
        .filter(|(k, v)| theirs.get(*k) == Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(Record {
        id: None,
        at,
        snapshot,
        moved,
        marks: super::marks(conn)?,
    })
}

fn conversation_id(conn: &dyn Sql, platform: &str, chat: &str) -> Result<i64, DbError> {
    conn.query_row(
        "SELECT id FROM conversations WHERE platform = ?1 AND chat_id = ?2",
        args![platform, chat],
        |r| r.get(0),
    )
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
    ) -> Result<Unmerged, MergeError> {
        self.write(move |conn| refused(unmerge(conn, survivor, absorbed, &by, region)))
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
