//! Sign-in sessions and API tokens, as named operations on [`Db`].
//!
//! Both live in the database, not in memory, so that every instance on a
//! shared store knows every session and token, and a sign-out or a revoked
//! token holds everywhere at once. Only hashes of the secrets are stored
//! (SHA-256: the secrets are 256 random bits, so no slow hash is needed); a
//! stolen copy of the table opens nothing.

use super::sql::Sql;
use super::{Db, DbError};
use crate::args;

/// A stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// The signed-in user.
    pub user_name: String,
    /// The session's CSRF token, put in every form.
    pub csrf: String,
    /// When the user signed in (RFC 3339 UTC).
    pub created_at: String,
    /// When the session was last used, to the minute (RFC 3339 UTC).
    pub seen_at: String,
}

/// A stored API token (its hash stays in the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// The token's name.
    pub name: String,
    /// `read`, `write` or `admin`.
    pub scope: String,
    /// When it was created (RFC 3339 UTC).
    pub created_at: String,
    /// When it was last used, to the minute; `None` if never.
    pub last_used_at: Option<String>,
}

fn token_row(r: &super::sql::Row<'_>) -> Result<TokenRow, DbError> {
    Ok(TokenRow {
        name: r.get(0)?,
        scope: r.get(1)?,
        created_at: r.get(2)?,
        last_used_at: r.get(3)?,
    })
}

/// Each status of live leads, with how many leads have it.
pub fn statuses_in_use(conn: &dyn Sql) -> Result<Vec<(String, u64)>, DbError> {
    conn.query_all(
        "SELECT status, COUNT(*) FROM leads WHERE merged_into IS NULL GROUP BY status",
        &[],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

impl Db {
    /// Each status of live leads, with how many leads have it (for the
    /// check that a new pipeline still holds them all).
    pub async fn statuses_in_use(&self) -> Result<Vec<(String, u64)>, DbError> {
        self.read(statuses_in_use).await
    }

    /// Stores a new session under the hash of its id.
    /// The sign-in's audit entry, `audit`, commits with it.
    pub async fn create_session(
        &self,
        id_hash: String,
        row: SessionRow,
        audit: crate::store::audit::Entry,
    ) -> Result<(), DbError> {
        self.write(move |conn| {
            crate::store::audit::record(conn, &audit)?;
            conn.execute(
                "INSERT INTO sessions (id_hash, user_name, csrf, created_at, seen_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                args![
                    id_hash,
                    row.user_name,
                    row.csrf,
                    row.created_at,
                    row.seen_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// The session stored under `id_hash`, if any.
    pub async fn session(&self, id_hash: String) -> Result<Option<SessionRow>, DbError> {
        self.read(move |conn| {
            conn.query_opt(
                "SELECT user_name, csrf, created_at, seen_at FROM sessions WHERE id_hash = ?1",
                args![id_hash],
                |r| {
                    Ok(SessionRow {
                        user_name: r.get(0)?,
                        csrf: r.get(1)?,
                        created_at: r.get(2)?,
                        seen_at: r.get(3)?,
                    })
                },
            )
        })
        .await
    }

    /// Notes that the session was used at `at`.
    pub async fn touch_session(&self, id_hash: String, at: String) -> Result<(), DbError> {
        self.write_repeatable(move |conn| {
            conn.execute(
                "UPDATE sessions SET seen_at = ?2 WHERE id_hash = ?1",
                args![id_hash, at],
            )?;
            Ok(())
        })
        .await
    }

    /// Ends one session (sign-out, or found expired).
    pub async fn end_session(&self, id_hash: String) -> Result<(), DbError> {
        self.write_repeatable(move |conn| {
            conn.execute("DELETE FROM sessions WHERE id_hash = ?1", args![id_hash])?;
            Ok(())
        })
        .await
    }

    /// Ends every session last used before `idle_before` or begun before
    /// `begun_before` (both RFC 3339 UTC, compared as text: the stored
    /// format has a fixed width). Answers how many ended.
    pub async fn end_expired_sessions(
        &self,
        idle_before: String,
        begun_before: String,
    ) -> Result<usize, DbError> {
        self.write_repeatable(move |conn| {
            conn.execute(
                "DELETE FROM sessions WHERE seen_at < ?1 OR created_at < ?2",
                args![idle_before, begun_before],
            )
        })
        .await
    }

    /// Ends the sessions of every user not in `users` (removed from the
    /// config). Answers the users whose sessions ended.
    pub async fn end_sessions_except(&self, users: Vec<String>) -> Result<Vec<String>, DbError> {
        self.write_repeatable(move |conn| {
            let signed_in: Vec<String> =
                conn.query_all("SELECT DISTINCT user_name FROM sessions", &[], |r| r.get(0))?;
            let gone: Vec<String> = signed_in
                .into_iter()
                .filter(|name| !users.contains(name))
                .collect();
            for name in &gone {
                conn.execute("DELETE FROM sessions WHERE user_name = ?1", args![name])?;
            }
            Ok(gone)
        })
        .await
    }

    /// Stores a new token; `false` when a token of that name exists. Its
    /// audit entry, `audit`, commits with it.
    pub async fn create_token(
        &self,
        name: String,
        scope: &'static str,
        token_hash: String,
        created_at: String,
        audit: crate::store::audit::Entry,
    ) -> Result<bool, DbError> {
        self.write(move |conn| {
            let inserted = conn.execute(
                "INSERT INTO api_tokens (name, scope, token_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                args![name, scope, token_hash, created_at],
            )?;
            if inserted > 0 {
                crate::store::audit::record(conn, &audit)?;
            }
            Ok(inserted > 0)
        })
        .await
    }

    /// Every token, by name.
    pub async fn tokens(&self) -> Result<Vec<TokenRow>, DbError> {
        self.read(|conn| {
            conn.query_all(
                "SELECT name, scope, created_at, last_used_at FROM api_tokens ORDER BY name",
                &[],
                token_row,
            )
        })
        .await
    }

    /// The token whose secret hashes to `token_hash`, if any.
    pub async fn token_by_hash(&self, token_hash: String) -> Result<Option<TokenRow>, DbError> {
        self.read(move |conn| {
            conn.query_opt(
                "SELECT name, scope, created_at, last_used_at FROM api_tokens
                 WHERE token_hash = ?1",
                args![token_hash],
                token_row,
            )
        })
        .await
    }

    /// Notes that the token was used (`audit`, its audit entry), unless a
    /// use was noted since `noted_since`: at most one write, and one audit
    /// entry, per token and minute, however many instances see it used.
    pub async fn touch_token(
        &self,
        name: String,
        noted_since: String,
        audit: crate::store::audit::Entry,
    ) -> Result<(), DbError> {
        self.write_repeatable(move |conn| {
            let noted = conn.execute(
                "UPDATE api_tokens SET last_used_at = ?2
                 WHERE name = ?1 AND (last_used_at IS NULL OR last_used_at < ?3)",
                args![name, audit.at, noted_since],
            )?;
            if noted > 0 {
                crate::store::audit::record(conn, &audit)?;
            }
            Ok(())
        })
        .await
    }

    /// Deletes the token `name`; `false` when there is none.
    pub async fn revoke_token(&self, name: String) -> Result<bool, DbError> {
        self.write_repeatable(move |conn| {
            Ok(conn.execute("DELETE FROM api_tokens WHERE name = ?1", args![name])? > 0)
        })
        .await
    }
}
