//! Conversations, their messages, and notes.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::DbError;
use super::sql::{Query, Sql, Value};
use crate::args;
use crate::event::{ConversationUpdate, Message, Note};

/// Stores a conversation update on `lead`: the conversation is created on
/// first sight and keeps its lead afterwards; messages already stored (same
/// platform id, or same content when the platform gives none) are skipped.
/// Returns how many messages were new, and whether this update closed
/// the conversation (it was open, or new and closed at once).
pub fn store(
    conn: &dyn Sql,
    lead: i64,
    platform: &str,
    update: &ConversationUpdate,
    at: &str,
) -> Result<(usize, bool), DbError> {
    let started = update
        .messages
        .iter()
        .filter_map(|m| m.at.as_deref())
        .min()
        .unwrap_or(at);
    // Looked up, then updated or inserted: the same as an upsert with
    // `RETURNING id`, which cost SQLite three times as much (inside the
    // writer's transaction nothing can come in between).
    let existing: Option<(i64, bool)> = conn.query_opt(
        "SELECT id, closed FROM conversations WHERE platform = ?1 AND chat_id = ?2",
        args![platform, update.chat_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let closed_now = update.closed && existing.is_none_or(|(_, closed)| !closed);
    let conversation = match existing.map(|(id, _)| id) {
        Some(id) => {
            // Scalar max and min are GREATEST and LEAST in PostgreSQL (both
            // columns are NOT NULL, where the two agree).
            conn.execute(
                conn.dialect().pick(
                    "UPDATE conversations SET
                    agent = coalesce(?2, agent),
                    closed = max(closed, ?3),
                    started_at = min(started_at, ?4),
                    updated_at = ?5
                 WHERE id = ?1",
                    "UPDATE conversations SET
                    agent = coalesce(?2, agent),
                    closed = GREATEST(closed, ?3),
                    started_at = LEAST(started_at, ?4),
                    updated_at = ?5
                 WHERE id = ?1",
                ),
                args![id, update.agent, update.closed, started, at],
            )?;
            id
        }
        None => {
            let args = args![
                lead,
                platform,
                update.chat_id,
                update.agent,
                update.closed,
                started,
                at
            ];
            conn.insert_id(
                "INSERT INTO conversations (lead_id, platform, chat_id, agent, closed, started_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                args,
            )?
            .ok_or_else(|| DbError::Internal("conversation not inserted".into()))?
        }
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    let ext_ids: Vec<String> = update
        .messages
        .iter()
        .map(|message| match &message.ext_id {
            Some(id) => id.clone(),
            None => {
                // Identical messages in one transcript stay distinct by their
                // position among identical ones; a redelivery yields the same ids.
                let digest = content_id(message);
                let n = seen.entry(digest.clone()).or_default();
                *n += 1;
                format!("{digest}#{n}")
            }
        })
        .collect();
    let args: Vec<[Value<'_>; 6]> = update
        .messages
        .iter()
        .zip(&ext_ids)
        .map(|(message, ext_id)| {
            [
                Value::of(&conversation),
                Value::of(ext_id),
                Value::of(message.from.as_str()),
                Value::of(&message.author),
                Value::of(&message.text),
                Value::of(&message.at),
            ]
        })
        .collect();
    let inserts: Vec<Query<'_>> = args
        .iter()
        .map(|args| {
            Query::new(
                "INSERT INTO messages (conversation_id, ext_id, sender, author, text, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                args,
            )
        })
        .collect();
    let added = conn.execute_each(&inserts)?.into_iter().sum();
    Ok((added, closed_now))
}

fn content_id(message: &Message) -> String {
    let mut h = Sha256::new();
    h.update(message.from.as_str());
    h.update([0]);
    h.update(message.at.as_deref().unwrap_or(""));
    h.update([0]);
    h.update(&message.text);
    let digest = h.finalize();
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// Stores a note once per platform, kind and id. Returns whether it was new.
pub fn store_note(
    conn: &dyn Sql,
    lead: i64,
    platform: &str,
    note: &Note,
    at: &str,
) -> Result<bool, DbError> {
    let n = conn.execute(
        "INSERT INTO notes (lead_id, platform, ext_id, kind, text, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
        args![
            lead,
            platform,
            note.ext_id,
            note.kind,
            note.text,
            note.at.as_deref().unwrap_or(at)
        ],
    )?;
    Ok(n > 0)
}
