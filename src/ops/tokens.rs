//! `crm-responder token create|list|revoke`: API tokens for scripts.
//!
//! A token is `crm_` and 32 random bytes (base64url), shown once at
//! creation; the store keeps only its SHA-256, so a lost token is revoked
//! and created again, never read back.

use std::io::Write;

use crate::http::session::{new_secret, secret_hash};
use crate::staff::Scope;
use crate::store::Db;
use crate::store::staff_store::TokenRow;

/// What every token starts with, so that one pasted into a log or a
/// repository is recognisable (and findable by secret scanners).
pub const PREFIX: &str = "crm_";

/// Whether `name` may name a token: 1 to 64 letters, digits, `.`, `_`, `-`.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Creates the token `name` with `scope`; answers the token itself.
pub async fn create(db: &Db, name: &str, scope: Scope) -> Result<String, String> {
    if !valid_name(name) {
        return Err(format!(
            "{name:?} is not a token name: use 1 to 64 letters, digits, '.', '_' or '-'"
        ));
    }
    let secret = new_secret().map_err(|e| e.to_string())?;
    let token = format!("{PREFIX}{secret}");
    let created = db
        .create_token(
            name.to_owned(),
            scope.as_str(),
            secret_hash(&token),
            crate::event::now_rfc3339(),
            crate::audit::Entry::by_cli(
                crate::audit::action::TOKEN_CREATE,
                Some(format!("token {name} (scope {})", scope.as_str())),
            ),
        )
        .await
        .map_err(|e| e.to_string())?;
    if !created {
        return Err(format!(
            "a token named {name:?} exists; revoke it first or choose another name"
        ));
    }
    Ok(token)
}

/// Every token, by name.
pub async fn list(db: &Db) -> Result<Vec<TokenRow>, String> {
    db.tokens().await.map_err(|e| e.to_string())
}

/// Deletes the token `name`; an error when there is none.
pub async fn revoke(db: &Db, name: &str) -> Result<(), String> {
    match db.revoke_token(name.to_owned()).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("no token named {name:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Writes the tokens as an aligned table (never the tokens themselves).
pub fn print_list(tokens: &[TokenRow], out: &mut impl Write) -> std::io::Result<()> {
    if tokens.is_empty() {
        return writeln!(
            out,
            "no API tokens; create one with `crm-responder token create NAME --scope read|write|admin`"
        );
    }
    let width = tokens
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "{:width$}  {:5}  {:24}  LAST USED",
        "NAME", "SCOPE", "CREATED"
    )?;
    for t in tokens {
        writeln!(
            out,
            "{:width$}  {:5}  {:24}  {}",
            t.name,
            t.scope,
            t.created_at,
            t.last_used_at.as_deref().unwrap_or("never")
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_names_are_short_and_plain() {
        assert!(valid_name("nightly-export_2.0"));
        assert!(!valid_name(""));
        assert!(!valid_name("has space"));
        assert!(!valid_name(&"x".repeat(65)));
    }

    #[test]
    fn the_list_shows_names_scopes_and_use_but_no_secret() {
        let rows = [TokenRow {
            name: "nightly".into(),
            scope: "read".into(),
            created_at: "2026-01-02T03:04:05.000Z".into(),
            last_used_at: None,
        }];
        let mut out = Vec::new();
        print_list(&rows, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("NAME"), "{text}");
        assert!(text.contains("nightly"), "{text}");
        assert!(text.contains("never"), "{text}");
    }
}
