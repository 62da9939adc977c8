//! The audit log: who did what to which data, when, and from where.
//!
//! Rows are only ever added ([`record`]); the one statement that deletes
//! them is the audit retention ([`prune`], `[audit] keep_days`), which the
//! retention job runs. Staff actions are recorded (sign-ins, lead views,
//! searches, exports, token creation and use; erasures, subject exports,
//! merges and unmerges call [`record`] in their own transaction); webhooks
//! are not, so the delivery path pays nothing.
//!
//! An entry never holds a visitor's email, phone, name or words: it names
//! leads by id and searches by the filters used, so that the log, which
//! outlives everything else, holds nothing an erasure must reach.

use crate::staff::{Staff, Via};
pub use crate::store::audit::{Cursor, Entry, Event, action, count_before, events, prune, record};

impl Entry {
    /// An entry made now by `staff`, from `address`.
    pub fn by(
        staff: &Staff,
        action: &str,
        target: Option<String>,
        address: Option<std::net::IpAddr>,
    ) -> Entry {
        Entry::now(actor(staff), action, target, address.map(|a| a.to_string()))
    }

    /// An entry made now by the operator running a command on this machine.
    pub fn by_cli(action: &str, target: Option<String>) -> Entry {
        Entry::now(cli_actor(), action, target, Some("local".into()))
    }
}

/// How the log names an actor: the user's name, or `token:NAME`.
pub fn actor(staff: &Staff) -> String {
    match staff.via {
        Via::Token => format!("token:{}", staff.name),
        Via::Session | Via::Basic => staff.name.clone(),
    }
}

/// `cli:USER`, the account running a command (`cli:unknown` when the
/// environment does not say).
pub fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_named_as_tokens_and_users_by_name() {
        let token = Staff {
            name: "nightly".into(),
            role: crate::staff::Role::Viewer,
            via: Via::Token,
        };
        assert_eq!(actor(&token), "token:nightly");
        let ann = Staff {
            via: Via::Session,
            name: "ann".into(),
            ..token
        };
        assert_eq!(actor(&ann), "ann");
        assert!(cli_actor().starts_with("cli:"));
    }
}
