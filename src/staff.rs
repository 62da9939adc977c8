//! Who is acting on the CRM, and what they may do: a sales user (signed in
//! with a session, or by HTTP Basic) or an API token, each with a [`Role`].
//!
//! Every role check goes through [`require`] with one of the `can_*`
//! questions of [`Role`], so that what a role allows is decided in one
//! place (this file) and a new permission is one new method.

use serde::{Deserialize, Serialize};

pub use crate::http::session::require;

/// What a user (or a token) may do. Ordered: each role may do everything the
/// one before it may.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads leads, pages and the API; changes nothing.
    Viewer,
    /// Works leads: status, owner, notes, contacts (the default role).
    #[default]
    Sales,
    /// Also what the open issues reserve for admins: erasure, exports of a
    /// person, the audit log.
    Admin,
}

impl Role {
    /// Whether this role may read leads.
    pub fn can_read(self) -> bool {
        true
    }

    /// Whether this role may change leads (status, owner, notes, contacts,
    /// and resolving duplicates).
    pub fn can_work(self) -> bool {
        self >= Role::Sales
    }

    /// Whether this role may erase, export people and read the audit log.
    pub fn can_admin(self) -> bool {
        self >= Role::Admin
    }

    /// The name used in config, token scopes' help and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Sales => "sales",
            Role::Admin => "admin",
        }
    }
}

/// What an API token may do, as `token create --scope` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Reads only: a viewer.
    Read,
    /// Works leads: a sales user.
    Write,
    /// Everything: an admin.
    Admin,
}

impl Scope {
    /// The role a token of this scope acts with.
    pub fn role(self) -> Role {
        match self {
            Scope::Read => Role::Viewer,
            Scope::Write => Role::Sales,
            Scope::Admin => Role::Admin,
        }
    }

    /// The name stored in `api_tokens.scope`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    /// The scope named `s` (`read`, `write`, `admin`).
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "write" => Some(Scope::Write),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// How the acting identity proved itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A sign-in session (the `crm_session` cookie).
    Session,
    /// HTTP Basic credentials of a `[[sales.users]]` entry.
    Basic,
    /// An API token (`Authorization: Bearer`); the name is the token's.
    Token,
}

/// The acting identity of a request: a sales user or an API token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staff {
    /// The user's name, or the token's name.
    pub name: String,
    /// What the user or token may do.
    pub role: Role,
    /// How the request proved it.
    pub via: Via,
}

impl Staff {
    /// How the history and notes name this actor: `staff NAME` or `token NAME`.
    pub fn label(&self) -> String {
        match self.via {
            Via::Token => format!("token {}", self.name),
            Via::Session | Via::Basic => format!("staff {}", self.name),
        }
    }

    /// The user's name when a person acts (for `owner=me`); `None` for a token.
    pub fn user_name(&self) -> Option<&str> {
        (self.via != Via::Token).then_some(self.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_may_do_what_the_one_before_it_may() {
        let may = |r: Role| (r.can_read(), r.can_work(), r.can_admin());
        assert_eq!(may(Role::Viewer), (true, false, false));
        assert_eq!(may(Role::Sales), (true, true, false));
        assert_eq!(may(Role::Admin), (true, true, true));
        assert_eq!(Role::default(), Role::Sales);
    }

    #[test]
    fn token_scopes_act_as_roles_and_label_themselves_as_tokens() {
        assert_eq!(Scope::Read.role(), Role::Viewer);
        assert_eq!(Scope::Write.role(), Role::Sales);
        assert_eq!(Scope::Admin.role(), Role::Admin);
        for scope in [Scope::Read, Scope::Write, Scope::Admin] {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
        }
        assert_eq!(Scope::parse("root"), None);
        let token = Staff {
            name: "nightly".into(),
            role: Role::Viewer,
            via: Via::Token,
        };
        assert_eq!(token.label(), "token nightly");
        assert_eq!(token.user_name(), None);
        let ann = Staff {
            name: "ann".into(),
            role: Role::Sales,
            via: Via::Session,
        };
        assert_eq!(ann.label(), "staff ann");
        assert_eq!(ann.user_name(), Some("ann"));
    }

    #[test]
    fn require_refuses_with_403_what_the_role_may_not_do() {
        let viewer = Staff {
            name: "vic".into(),
            role: Role::Viewer,
            via: Via::Basic,
        };
        assert!(require(&viewer, Role::can_read).is_ok());
        let refused = require(&viewer, Role::can_work).unwrap_err();
        assert_eq!(refused.status(), warp::http::StatusCode::FORBIDDEN);
        let sales = Staff {
            role: Role::Sales,
            ..viewer
        };
        assert!(require(&sales, Role::can_work).is_ok());
        assert!(require(&sales, Role::can_admin).is_err());
    }
}
