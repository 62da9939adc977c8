//! SQL on leads and what hangs off them. Every function takes a connection
//! already inside the caller's transaction.
//!
//! This file holds the lead row itself (creating one, following folds to
//! the lead that lives on); the rest is one job a file:
//!
//! - `lookup`: who owns a delivery's identifiers, and the facts the merge
//!   policy decides from (a lead's values, contacts, pins);
//! - `changes`: writing a merge plan onto a lead, with its history;
//! - `values`: tags, custom fields and status a delivery or an import sets;
//! - `history`: writing history rows;
//! - `decision`: a delivery's decision, serialised once, long values clipped;
//! - `entries`: history rows read back (packed `created` rows unpacked, the
//!   decision's words made);
//! - `links`: visitor ids, possible-duplicate links and folds.

mod changes;
mod decision;
mod entries;
mod history;
mod links;
mod lookup;
mod values;

#[cfg(test)]
mod tests;

pub use changes::{Created, Record, write_changes};
pub use decision::{Decision, EXPLAINED_CHARS, Why};
pub use entries::{Entry, entries};
pub(super) use history::touch;
pub use history::{entry, history};
pub use links::{fold, link_duplicate, link_visitor};
pub use lookup::{
    Lookup, Owners, chat_owner, contact_owner, contacts, current, is_anonymous, owners, pins,
    visitor_owner,
};
pub(super) use lookup::{contact_row, contacts_sql};
pub use values::{add_tags, fill_status, set_fields};

use super::DbError;
use super::sql::Sql;
use crate::args;
use crate::crm::merge::ContactKind;

/// How many `merged_into` hops are followed before giving up (cycles cannot
/// happen, since only anonymous leads are folded, but never loop forever).
const MAX_FOLD_HOPS: usize = 16;

/// Where a history row comes from.
#[derive(Debug, Clone)]
pub struct Source {
    /// The delivery that caused the change (none for imports and people).
    pub delivery_id: Option<i64>,
    /// Readable origin, e.g. `jivo chat_updated 7636`.
    pub label: String,
    /// When.
    pub at: String,
}

/// The lead a possibly folded id now lives on.
pub fn survivor(conn: &dyn Sql, mut id: i64) -> Result<i64, DbError> {
    for _ in 0..MAX_FOLD_HOPS {
        let next: Option<Option<i64>> = conn.query_opt(
            "SELECT merged_into FROM leads WHERE id = ?1",
            args![id],
            |r| r.get(0),
        )?;
        match next.flatten() {
            Some(into) => id = into,
            None => return Ok(id),
        }
    }
    Ok(id)
}

/// Whether the lead exists.
pub fn exists(conn: &dyn Sql, id: i64) -> Result<bool, DbError> {
    conn.exists("SELECT 1 FROM leads WHERE id = ?1", args![id])
}

/// The table holding a lead's emails or phones.
pub(super) fn table(kind: ContactKind) -> &'static str {
    match kind {
        ContactKind::Email => "lead_emails",
        ContactKind::Phone => "lead_phones",
    }
}

/// Where a new lead starts: its status (the pipeline's first) and where
/// it came from.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The status a new lead starts in.
    pub status: &'a str,
    /// The platform (or `import`) of the delivery that created it.
    pub platform: &'a str,
    /// What else the delivery says of where the visitor came from.
    pub source: Option<&'a crate::event::LeadSource>,
}

/// Creates an empty lead; the caller fills it through [`write_changes`].
/// Its source is written here, once: no later delivery changes it.
pub fn create(conn: &dyn Sql, at: &str, origin: Origin<'_>) -> Result<i64, DbError> {
    let source = crate::event::LeadSource::json(origin.platform, origin.source);
    let channel = origin.source.and_then(|s| s.channel());
    let campaign = origin.source.and_then(|s| s.utm_campaign.as_deref());
    conn.insert_id(
        "INSERT INTO leads (created_at, updated_at, status, source, source_platform,
                            source_channel, source_campaign)
         VALUES (?1, ?1, ?2, ?3, ?4, ?5, ?6)",
        args![
            at,
            origin.status,
            source,
            origin.platform,
            channel,
            campaign
        ],
    )?
    .ok_or_else(|| DbError::Internal("lead not inserted".into()))
}
