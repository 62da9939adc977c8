//! The audit log's table: entries appended in the caller's transaction
//! ([`record`]), read a page at a time ([`events`]), and deleted only by
//! the audit retention ([`prune`]). Who the actor is (a user, a token, the
//! operator at a terminal) is decided above the store, in `crate::audit`.

use serde::Serialize;

use super::sql::{Row, Sql};
use super::{Db, DbError};
use crate::args;

/// What an entry says was done. The names are stable: scripts filter on them.
pub mod action {
    /// A sign-in with the right password.
    pub const SIGN_IN: &str = "sign_in";
    /// A sign-in refused (wrong name or password, or throttled).
    pub const SIGN_IN_FAILED: &str = "sign_in_failed";
    /// A lead read (its page or `GET /api/leads/{id}`).
    pub const LEAD_VIEW: &str = "lead_view";
    /// A list or search of leads (the page or `GET /api/leads`).
    pub const SEARCH: &str = "search";
    /// Every lead written out by `export`.
    pub const EXPORT: &str = "export";
    /// An API token made by `token create`.
    pub const TOKEN_CREATE: &str = "token_create";
    /// An API token used (at most once a minute per token).
    pub const TOKEN_USE: &str = "token_use";
    /// The audit log read (`/audit`, `/api/audit`, `audit`).
    pub const AUDIT_READ: &str = "audit_read";
    /// What a retention run deleted (one entry per kind and run).
    pub const RETENTION: &str = "retention";
    /// Two leads merged by staff (`lead A absorbed lead B`).
    pub const MERGE: &str = "merge";
    /// A merge or fold undone.
    pub const UNMERGE: &str = "unmerge";
    /// A possible-duplicate pair dismissed.
    pub const DISMISS: &str = "dismiss";
    /// A person erased (the target names lead ids and the tombstones'
    /// hashes, never the identifiers).
    pub const ERASE: &str = "erase";
    /// Everything held on a person exported (a subject access request).
    pub const EXPORT_PERSON: &str = "export_person";
}

/// One thing done, as [`record`] stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// When (RFC 3339 UTC, as every time is stored).
    pub at: String,
    /// Who: a user's name, `token:NAME`, `cli:USER` or `retention`.
    pub actor: String,
    /// What, one of [`action`] (or the name a later action brings).
    pub action: String,
    /// To what: `lead 42`, the filters of a search, a token's name.
    pub target: Option<String>,
    /// From where: the client's IP address, `local` for a command.
    pub address: Option<String>,
}

impl Entry {
    /// An entry made now.
    pub fn now(
        actor: impl Into<String>,
        action: &str,
        target: Option<String>,
        address: Option<String>,
    ) -> Entry {
        Entry {
            at: crate::event::now_rfc3339(),
            actor: actor.into(),
            action: action.to_owned(),
            target,
            address,
        }
    }

    /// The same entry, about `target` (known only once the action is done).
    pub fn with_target(&self, target: String) -> Entry {
        Entry {
            target: Some(target),
            ..self.clone()
        }
    }
}

/// Appends `entry` to the log, in the caller's transaction: an action and
/// its entry commit together or not at all.
pub fn record(conn: &dyn Sql, entry: &Entry) -> Result<(), DbError> {
    conn.execute(
        "INSERT INTO audit_log (at, actor, action, target, address) VALUES (?1, ?2, ?3, ?4, ?5)",
        args![
            entry.at,
            entry.actor,
            entry.action,
            entry.target,
            entry.address
        ],
    )?;
    Ok(())
}

/// A stored entry, as `/api/audit` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// When.
    pub at: String,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// To what.
    pub target: Option<String>,
    /// From where.
    pub address: Option<String>,
    /// Its place in the log, for the cursor.
    #[serde(skip)]
    pub id: i64,
}

/// Where a page of the log ends: the time and id of its last entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The last entry's time.
    pub at: String,
    /// The last entry's id.
    pub id: i64,
}

impl Cursor {
    /// Reads a cursor written by [`Cursor`]'s `Display` (`TIME_ID`).
    pub fn parse(s: &str) -> Option<Cursor> {
        let (at, id) = s.rsplit_once('_')?;
        Some(Cursor {
            at: crate::event::normalize_rfc3339(at)?,
            id: id.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}_{}", self.at, self.id)
    }
}

fn event(r: &Row<'_>) -> Result<Event, DbError> {
    Ok(Event {
        id: r.get(0)?,
        at: r.get(1)?,
        actor: r.get(2)?,
        action: r.get(3)?,
        target: r.get(4)?,
        address: r.get(5)?,
    })
}

/// Up to `limit` entries made at or after `since`, oldest first, from
/// after `after`; and the cursor of the next page when there may be one.
pub fn events(
    conn: &dyn Sql,
    since: &str,
    after: Option<&Cursor>,
    limit: usize,
) -> Result<(Vec<Event>, Option<Cursor>), DbError> {
    // A page ends on the last entry read: the next one starts strictly after
    // it in (time, id) order, one index seek either way.
    let rows = match after {
        Some(c) => conn.query_all(
            "SELECT id, at, actor, action, target, address FROM audit_log
             WHERE at >= ?1 AND (at > ?2 OR (at = ?2 AND id > ?3))
             ORDER BY at, id LIMIT ?4",
            args![since, c.at, c.id, limit as i64],
            event,
        )?,
        None => conn.query_all(
            "SELECT id, at, actor, action, target, address FROM audit_log
             WHERE at >= ?1 ORDER BY at, id LIMIT ?2",
            args![since, limit as i64],
            event,
        )?,
    };
    let next = (rows.len() == limit)
        .then(|| rows.last())
        .flatten()
        .map(|e| Cursor {
            at: e.at.clone(),
            id: e.id,
        });
    Ok((rows, next))
}

/// Deletes up to `limit` entries made before `cutoff`, oldest first: the
/// audit retention, the only delete the log ever sees. Answers how many.
pub fn prune(conn: &dyn Sql, cutoff: &str, limit: usize) -> Result<usize, DbError> {
    conn.execute(
        "DELETE FROM audit_log WHERE id IN
            (SELECT id FROM audit_log WHERE at < ?1 ORDER BY at, id LIMIT ?2)",
        args![cutoff, limit as i64],
    )
}

/// How many entries were made before `cutoff`.
pub fn count_before(conn: &dyn Sql, cutoff: &str) -> Result<i64, DbError> {
    conn.query_row(
        "SELECT count(*) FROM audit_log WHERE at < ?1",
        args![cutoff],
        |r| r.get(0),
    )
}

impl Db {
    /// Appends `entry` to the audit log, in a transaction of its own.
    pub async fn audit(&self, entry: Entry) -> Result<(), DbError> {
        // One insert: running it again after a batch rolled back is safe.
        self.write_repeatable(move |conn| record(conn, &entry))
            .await
    }

    /// A page of the audit log (see [`events`]).
    pub async fn audit_events(
        &self,
        since: String,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<(Vec<Event>, Option<Cursor>), DbError> {
        self.read(move |conn| events(conn, &since, after.as_ref(), limit))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_what_it_wrote() {
        let c = Cursor {
            at: "2026-12-05T21:00:00.000Z".into(),
            id: 42,
        };
        assert_eq!(Cursor::parse(&c.to_string()), Some(c));
        assert_eq!(Cursor::parse("42"), None);
        assert_eq!(Cursor::parse("yesterday_4"), None);
    }
}
