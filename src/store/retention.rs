//! What retention deletes, in small pieces: each function here is one short
//! write (or a read that finds the next pieces), so that the job that runs
//! them (`crate::retention`) never holds the writer for long.
//!
//! - Raw deliveries received before the cut-off, through the index on
//!   `received_at`; history rows that named one keep their change and lose
//!   the link.
//! - Transcripts (a conversation and its messages) whose last message came
//!   before the cut-off; the lead's history says so.
//! - Inactive leads: a lead (not folded into another) is inactive when it,
//!   and every lead folded into it, has not changed (`updated_at`: every
//!   change by a delivery or by staff), has no conversation with a message
//!   and no delivery received since the cut-off. [`forget_lead`] removes all
//!   of it, folded leads included: contacts, visitor ids, fields, tags,
//!   pins, conversations, notes, history and the decisions only it used,
//!   duplicate links, and its raw deliveries. No tombstone is kept: the
//!   person may come back as a new lead.

use super::DbError;
use super::leads::{self, Source};
use super::sql::Sql;
use crate::args;

/// Deletes up to `limit` raw deliveries received before `cutoff`, oldest
/// first; answers how many.
pub fn delete_old_deliveries(conn: &dyn Sql, cutoff: &str, limit: usize) -> Result<usize, DbError> {
    let ids: Vec<i64> = conn.query_all(
        "SELECT id FROM deliveries WHERE received_at < ?1 ORDER BY received_at LIMIT ?2",
        args![cutoff, limit as i64],
        |r| r.get(0),
    )?;
    let mut deleted = 0;
    for id in &ids {
        deleted += delete_delivery(conn, *id)?;
    }
    Ok(deleted)
}

/// Deletes one raw delivery; history rows it caused keep their change
/// without the link. Answers 1, or 0 when it was gone already.
fn delete_delivery(conn: &dyn Sql, id: i64) -> Result<usize, DbError> {
    conn.execute(
        "UPDATE history SET delivery_id = NULL WHERE delivery_id = ?1",
        args![id],
    )?;
    // A merge's record keeps the merge, without the delivery that made it.
    conn.execute(
        "UPDATE merges SET delivery_id = NULL WHERE delivery_id = ?1",
        args![id],
    )?;
    conn.execute("DELETE FROM deliveries WHERE id = ?1", args![id])
}

/// How many raw deliveries were received before `cutoff`.
pub fn count_old_deliveries(conn: &dyn Sql, cutoff: &str) -> Result<i64, DbError> {
    conn.query_row(
        "SELECT count(*) FROM deliveries WHERE received_at < ?1",
        args![cutoff],
        |r| r.get(0),
    )
}

/// Up to `limit` conversations after id `after`, in id order, whose last
/// message came before `cutoff`. A read: conversations have no index by
/// time (every message would rewrite it), so the job walks them by id on a
/// read connection, beside the writer.
pub fn old_transcripts(
    conn: &dyn Sql,
    cutoff: &str,
    after: i64,
    limit: usize,
) -> Result<Vec<i64>, DbError> {
    conn.query_all(
        "SELECT id FROM conversations WHERE id > ?1 AND updated_at < ?2 ORDER BY id LIMIT ?3",
        args![after, cutoff, limit as i64],
        |r| r.get(0),
    )
}

/// How many conversations had their last message before `cutoff`.
pub fn count_old_transcripts(conn: &dyn Sql, cutoff: &str) -> Result<i64, DbError> {
    conn.query_row(
        "SELECT count(*) FROM conversations WHERE updated_at < ?1",
        args![cutoff],
        |r| r.get(0),
    )
}

/// Deletes the conversation `id` and its messages if its last message still
/// came before `cutoff`, with a line in its lead's history (`source`);
/// answers the lead, or `None` when a message came meanwhile (or it is gone).
pub fn delete_transcript(
    conn: &dyn Sql,
    id: i64,
    cutoff: &str,
    source: &Source,
) -> Result<Option<i64>, DbError> {
    let found: Option<(i64, String, String)> = conn.query_opt(
        "SELECT lead_id, platform, chat_id FROM conversations WHERE id = ?1 AND updated_at < ?2",
        args![id, cutoff],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let Some((lead, platform, chat)) = found else {
        return Ok(None);
    };
    conn.execute("DELETE FROM messages WHERE conversation_id = ?1", args![id])?;
    conn.execute("DELETE FROM conversations WHERE id = ?1", args![id])?;
    let what = format!("{platform} chat {chat}");
    leads::history(
        conn,
        lead,
        "transcript deleted",
        Some(what.as_str()),
        None,
        source,
        None,
    )?;
    // The lead changed (its version grows), but retention is no activity:
    // `updated_at` stays, so the lead's own retention clock is not reset.
    conn.execute(
        "UPDATE leads SET version = version + 1 WHERE id = ?1",
        args![lead],
    )?;
    Ok(Some(lead))
}

/// Where a walk over leads by creation time stands.
pub type LeadCursor = (String, i64);

/// Up to `limit` live leads created before `cutoff` after `after`, in
/// creation order (the `leads_created` index), each with whether it is
/// inactive since `cutoff`; and where to go on. A read.
pub fn lead_candidates(
    conn: &dyn Sql,
    cutoff: &str,
    after: Option<&LeadCursor>,
    limit: usize,
) -> Result<(Vec<i64>, Option<LeadCursor>), DbError> {
    let (at, id) = after.cloned().unwrap_or_else(|| (String::new(), i64::MIN));
    let rows: Vec<(String, i64)> = conn.query_all(
        "SELECT created_at, id FROM leads
         WHERE merged_into IS NULL AND created_at < ?1
           AND (created_at > ?2 OR (created_at = ?2 AND id > ?3))
         ORDER BY created_at, id LIMIT ?4",
        args![cutoff, at, id, limit as i64],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let next = rows.last().cloned();
    let mut inactive = Vec::new();
    for (_, lead) in &rows {
        if is_inactive(conn, *lead, cutoff)? {
            inactive.push(*lead);
        }
    }
    Ok((inactive, next))
}

/// The lead and every lead folded into it (and into those), folded ones
/// last.
fn lead_group(conn: &dyn Sql, lead: i64) -> Result<Vec<i64>, DbError> {
    let mut group = vec![lead];
    let mut i = 0;
    while i < group.len() {
        let folded: Vec<i64> = conn.query_all(
            "SELECT id FROM leads WHERE merged_into = ?1",
            args![group[i]],
            |r| r.get(0),
        )?;
        for id in folded {
            if !group.contains(&id) {
                group.push(id);
            }
        }
        i += 1;
    }
    Ok(group)
}

/// Whether the live lead `lead` has had no activity since `cutoff` (see the
/// module's doc): index seeks only.
pub fn is_inactive(conn: &dyn Sql, lead: i64, cutoff: &str) -> Result<bool, DbError> {
    let live: Option<String> = conn.query_opt(
        "SELECT updated_at FROM leads WHERE id = ?1 AND merged_into IS NULL",
        args![lead],
        |r| r.get(0),
    )?;
    if live.is_none() {
        return Ok(false);
    }
    for id in lead_group(conn, lead)? {
        let active = conn.exists(
            "SELECT 1 FROM leads WHERE id = ?1 AND updated_at >= ?2",
            args![id, cutoff],
        )? || conn.exists(
            "SELECT 1 FROM deliveries WHERE lead_id = ?1 AND received_at >= ?2",
            args![id, cutoff],
        )? || conn.exists(
            "SELECT 1 FROM conversations WHERE lead_id = ?1 AND updated_at >= ?2",
            args![id, cutoff],
        )?;
        if active {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What [`forget_lead`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// Leads (the lead and those folded into it).
    pub leads: usize,
    /// Conversations.
    pub conversations: usize,
    /// Raw deliveries.
    pub deliveries: usize,
}

/// Removes the lead `lead` and every lead folded into it, with everything
/// stored about them (see the module's doc), in the caller's transaction.
/// No tombstone: unlike an erasure, nothing stops the person from coming
/// back as a new lead, and `replay` of an older copy of the deliveries
/// brings them back.
pub fn forget_lead(conn: &dyn Sql, lead: i64) -> Result<Forgotten, DbError> {
    let group = lead_group(conn, lead)?;
    let mut gone = Forgotten::default();
    // Folded leads first: each points at the one it was folded into.
    for &id in group.iter().rev() {
        conn.execute(
            "DELETE FROM messages WHERE conversation_id IN
                (SELECT id FROM conversations WHERE lead_id = ?1)",
            args![id],
        )?;
        gone.conversations +=
            conn.execute("DELETE FROM conversations WHERE lead_id = ?1", args![id])?;
        for sql in [
            "DELETE FROM notes WHERE lead_id = ?1",
            "DELETE FROM lead_emails WHERE lead_id = ?1",
            "DELETE FROM lead_phones WHERE lead_id = ?1",
            "DELETE FROM lead_visitors WHERE lead_id = ?1",
            "DELETE FROM lead_fields WHERE lead_id = ?1",
            "DELETE FROM lead_tags WHERE lead_id = ?1",
            "DELETE FROM lead_pins WHERE lead_id = ?1",
            "DELETE FROM duplicate_links WHERE lead_a = ?1",
            "DELETE FROM duplicate_links WHERE lead_b = ?1",
            "DELETE FROM dismissed_duplicates WHERE lead_a = ?1 OR lead_b = ?1",
            "DELETE FROM merges WHERE absorbed = ?1 OR survivor = ?1",
        ] {
            conn.execute(sql, args![id])?;
        }
        // Its outbound events hold it as it was.
        super::outbox::forget_lead(conn, id)?;
        // A delivery's decision is shared only by the history rows that
        // delivery wrote, all on this group's leads (the lead it applied to,
        // and a lead it folded): once those rows are gone, so is the decision.
        let decisions: Vec<(i64, Option<i64>)> = conn.query_all(
            "SELECT DISTINCT decision_id, delivery_id FROM history
             WHERE lead_id = ?1 AND decision_id IS NOT NULL",
            args![id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        conn.execute("DELETE FROM history WHERE lead_id = ?1", args![id])?;
        for (decision, delivery) in decisions {
            let still_used = match delivery {
                Some(delivery) => conn.exists(
                    "SELECT 1 FROM history WHERE delivery_id = ?1 AND decision_id = ?2",
                    args![delivery, decision],
                )?,
                None => false,
            };
            if !still_used {
                conn.execute("DELETE FROM decisions WHERE id = ?1", args![decision])?;
            }
        }
        let deliveries: Vec<i64> = conn.query_all(
            "SELECT id FROM deliveries WHERE lead_id = ?1",
            args![id],
            |r| r.get(0),
        )?;
        for delivery in &deliveries {
            gone.deliveries += delete_delivery(conn, *delivery)?;
        }
    }
    for &id in group.iter().rev() {
        gone.leads += conn.execute("DELETE FROM leads WHERE id = ?1", args![id])?;
    }
    Ok(gone)
}
