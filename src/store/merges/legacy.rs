//! Unmerging a fold made before merges were recorded (schema version 8):
//! its record is rebuilt from the raw deliveries applied to the folded
//! lead and from its history.

use super::arrivals::named;
use super::undo::Record;
use super::{Moved, Snapshot, values};
use crate::args;
use crate::store::DbError;
use crate::store::leads;
use crate::store::sql::Sql;

/// The record of a fold made before merges were recorded, rebuilt: what
/// the deliveries applied to the absorbed lead brought (visitor ids, chats,
/// notes) and its history (custom fields, tags). Its marks are now: what
/// arrived after such a fold is not told apart.
pub(super) fn rebuilt(
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
