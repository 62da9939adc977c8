//! What arrived on a survivor after a merge, sorted by the stored raw
//! delivery that brought it: through the absorbed lead's identifiers only
//! (it goes back with it), through both or neither (it stays, listed as
//! unattributed), or through the survivor's own (it stays).

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use serde::Serialize;

use super::undo::Record;
use crate::args;
use crate::crm::identity::{Email, Phone};
use crate::event::{Event, Platform};
use crate::platforms;
use crate::store::DbError;
use crate::store::sql::Sql;

/// Something that arrived on the survivor after the merge through a
/// delivery that names both leads or neither (or, for a value, that cannot
/// be read again): it stays with the survivor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unattributed {
    /// `email`, `phone`, `visitor`, `conversation`, `note`, or a value a
    /// delivery changed: `name`, `description`, `field`, `tag`.
    pub kind: &'static str,
    /// The value, visitor id or chat (`platform:id`), note
    /// (`platform:kind:id`), the name or description brought, a custom
    /// field as `key=value`, or the tag.
    pub value: String,
    /// The delivery that brought it.
    pub delivery_id: i64,
}

/// What a stored delivery names: its identifiers as `(kind, value)` keys
/// (`email`, `phone`, `visitor`, `chat`) and the note it carried.
pub(super) struct Named {
    /// `(kind, value)`: `email`, `phone`, `visitor` (`platform:id`), `chat` (`platform:id`).
    pub(super) keys: Vec<(&'static str, String)>,
    /// `platform:kind:id` of the note it carried.
    pub(super) note: Option<String>,
    /// The tags it carried.
    pub(super) tags: Vec<String>,
}

/// How a delivery after the merge reached the survivor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Via {
    /// Through the absorbed lead's identifiers only.
    Theirs,
    /// Through identifiers of both leads.
    Both,
    /// Through the survivor's own only.
    Ours,
    /// Through none of either's (a lead id the platform echoed, …).
    Neither,
}

/// A delivery after the merge, read again.
pub(super) struct Reread {
    /// How it reached the survivor.
    pub(super) via: Via,
    /// The tags it carried.
    pub(super) tags: Vec<String>,
}

/// What [`attribute`] sorted.
pub(super) struct Sorted {
    /// Rows that go back to the restored lead.
    pub(super) back: Vec<Row>,
    /// Rows that stay, listed.
    pub(super) unattributed: Vec<Unattributed>,
    /// Each delivery after the merge that could be read again, by id.
    pub(super) deliveries: BTreeMap<i64, Reread>,
}

/// Reads a stored delivery again; `None` when it does not translate (an
/// import row, a body no version could parse).
pub(super) fn named(
    platform: &str,
    body: &[u8],
    region: phonenumber::country::Id,
) -> Option<Named> {
    let parsed = Platform::parse(platform)?;
    let (event, _) = platforms::translate(parsed, &Bytes::copy_from_slice(body)).ok()?;
    Some(named_event(platform, &event, region))
}

fn named_event(platform: &str, event: &Event, region: phonenumber::country::Id) -> Named {
    let mut keys = Vec::new();
    // The lead id a platform echoes back (Rocket.Chat's `crmData`) names
    // its lead as an identifier does.
    if let Some(lead) = event.lead_hint {
        keys.push(("lead", lead.to_string()));
    }
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
    // As `leads::add_tags` stores them.
    let tags = event
        .tags
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    Named { keys, note, tags }
}

/// A row on the survivor: its table's key and how it is shown.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Row {
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
pub(super) fn keys_before(
    conn: &dyn Sql,
    lead: i64,
    rec: &Record,
) -> Result<HashSet<(&'static str, String)>, DbError> {
    let mut keys = HashSet::from([("lead", lead.to_string())]);
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
/// to the restored lead, and those that stay, unattributed; and how each
/// delivery since came, for the values it changed (`later.rs`). `theirs`
/// are the restored lead's keys (its rows already moved back), `ours` the
/// survivor's. The deliveries are read only when a row or, with
/// `values_changed`, a value waits to be sorted.
pub(super) fn attribute(
    conn: &dyn Sql,
    survivor: i64,
    rec: &Record,
    theirs: &mut HashSet<(&'static str, String)>,
    values_changed: bool,
    region: phonenumber::country::Id,
) -> Result<Sorted, DbError> {
    let mut pending = arrivals(conn, survivor, rec)?;
    let mut sorted = Sorted {
        back: Vec::new(),
        unattributed: Vec::new(),
        deliveries: BTreeMap::new(),
    };
    if pending.is_empty() && !values_changed {
        return Ok(sorted);
    }
    let mut ours = keys_before(conn, survivor, rec)?;
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
        let via = match (via_theirs, via_ours) {
            (true, false) => Via::Theirs,
            (true, true) => Via::Both,
            (false, true) => Via::Ours,
            (false, false) => Via::Neither,
        };
        let brought: Vec<(&'static str, String)> = named
            .keys
            .iter()
            .cloned()
            .chain(named.note.map(|n| ("note", n)))
            .filter(|k| pending.contains_key(k))
            .collect();
        sorted.deliveries.insert(
            delivery_id,
            Reread {
                via,
                tags: named.tags,
            },
        );
        for key in brought {
            let Some(row) = pending.remove(&key) else {
                continue;
            };
            match via {
                Via::Theirs => {
                    theirs.insert(key);
                    sorted.back.push(row);
                }
                Via::Both | Via::Neither => sorted.unattributed.push(Unattributed {
                    kind: match key.0 {
                        "chat" => "conversation",
                        other => other,
                    },
                    value: key.1,
                    delivery_id,
                }),
                Via::Ours => {
                    ours.insert(key);
                }
            }
        }
    }
    Ok(sorted)
}

/// Moves `row` from `from` to `to` (only if `from` holds it).
pub(super) fn move_row(conn: &dyn Sql, row: &Row, from: i64, to: i64) -> Result<(), DbError> {
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
