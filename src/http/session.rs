//! Who is asking: the one place a request becomes a [`Staff`].
//!
//! A sales user proves themselves with a sign-in session (the `crm_session`
//! cookie, from `POST /login`) or HTTP Basic; a script with Basic or an API
//! token (`Authorization: Bearer`). Sessions and tokens are looked up in the
//! store by the SHA-256 of their secret; a session's user must still be in
//! `[[sales.users]]`, and takes the role the config gives them now, so a
//! removed user is out and a changed role holds on their next request.
//!
//! State changes from a browser are guarded against other sites (CSRF):
//! every form carries the session's token in a hidden field `csrf`, and a
//! request whose `Origin` is another site's is refused ([`check_form`]). The
//! cookie is `SameSite=Lax` besides, so browsers do not send it along with
//! another site's POST at all.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use warp::http::header::{LOCATION, SET_COOKIE};
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::auth::{Verdict, secret_eq};
use super::error::ApiError;
use super::{AppState, client_addr, with_state};
use crate::config::Config;
use crate::staff::{Role, Scope, Staff, Via};

mod csrf;
mod secrets;

pub use csrf::{check_form, same_origin};
pub use secrets::{COOKIE, new_secret, secret_hash, session_cookie, session_cookie_header};

/// How stale `seen_at` / `last_used_at` may get before it is written again:
/// a write per request would load the writer for a minute's precision.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// A signed-in person on a page, with what a form of theirs must carry.
#[derive(Debug, Clone)]
pub struct PageUser {
    /// Who they are.
    pub staff: Staff,
    /// Their session's CSRF token, for the `csrf` field of every form
    /// (empty for HTTP Basic, which has no session).
    pub csrf: String,
    /// The request's `Host`, which a same-origin `Origin` names.
    pub host: Option<String>,
    /// The client's address (for the audit log).
    pub client: Option<IpAddr>,
}

/// The one role check: 403 unless `need` allows the actor's role.
pub fn require(staff: &Staff, need: fn(Role) -> bool) -> Result<(), ApiError> {
    if need(staff.role) {
        return Ok(());
    }
    Err(ApiError::Forbidden(match staff.via {
        Via::Token => format!(
            "the token {:?} (role {}) may not do this",
            staff.name,
            staff.role.as_str()
        ),
        Via::Session | Via::Basic => {
            format!(
                "{} (role {}) may not do this",
                staff.name,
                staff.role.as_str()
            )
        }
    }))
}

/// What a request says about who sent it.
#[derive(Debug, Clone, Default)]
pub struct Asking {
    authorization: Option<String>,
    cookie: Option<String>,
    client: Option<IpAddr>,
    host: Option<String>,
    origin: Option<String>,
    csrf_header: Option<String>,
}

impl Asking {
    /// The `Origin` header, if any.
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }
    /// The `Host` header, if any.
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }
    /// The client's address, if known.
    pub fn client(&self) -> Option<IpAddr> {
        self.client
    }
    /// The session id in the `crm_session` cookie, if any.
    pub fn session_id(&self) -> Option<String> {
        session_cookie(self.cookie.as_deref())
    }
}

/// The credentials and origin of a request, read as text whatever bytes
/// they hold (bad bytes are bad credentials, not a malformed request).
pub fn asking() -> impl Filter<Extract = (Asking,), Error = Infallible> + Clone {
    warp::header::headers_cloned()
        .and(client_addr())
        .map(|headers: HeaderMap, client| {
            let text = |name: &str| {
                headers
                    .get(name)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            };
            Asking {
                authorization: text("authorization"),
                cookie: text("cookie"),
                client,
                host: text("host"),
                origin: text("origin"),
                csrf_header: text("x-csrf-token"),
            }
        })
}

/// Who a request comes from, when it says.
enum Identity {
    /// A user or a token; the session's CSRF token when by session.
    Staff(Staff, Option<String>),
    /// No credentials at all (or only an expired session).
    Nobody,
}

/// Identifies the request: `Authorization` first (Basic, or Bearer when
/// `tokens`), then the session cookie.
async fn identify(
    state: &Arc<AppState>,
    config: &Config,
    asking: &Asking,
    tokens: bool,
) -> Result<Identity, ApiError> {
    if let Some(header) = asking.authorization.clone() {
        let bearer = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "));
        if let Some(token) = bearer {
            if !tokens {
                return Err(ApiError::Unauthorized { challenge: true });
            }
            return token_staff(state, token.trim(), asking.client).await;
        }
        let checker = state.clone();
        let client = asking.client;
        let verdict = tokio::task::spawn_blocking(move || {
            let users = &checker.config().sales.users;
            checker.guard.check(users, Some(&header), client)
        })
        .await
        .map_err(|_| ApiError::Internal)?;
        return match verdict {
            Verdict::Allowed(name) => {
                let role =
                    user_role(config, &name).ok_or(ApiError::Unauthorized { challenge: true })?;
                Ok(Identity::Staff(
                    Staff {
                        name,
                        role,
                        via: Via::Basic,
                    },
                    None,
                ))
            }
            Verdict::Denied => Err(ApiError::Unauthorized { challenge: true }),
            Verdict::Throttled => Err(ApiError::TooManyAttempts),
        };
    }
    if let Some(id) = asking.session_id() {
        return Ok(match session_staff(state, config, &id).await? {
            Some((staff, csrf)) => Identity::Staff(staff, Some(csrf)),
            None => Identity::Nobody,
        });
    }
    Ok(Identity::Nobody)
}

fn user_role(config: &Config, name: &str) -> Option<Role> {
    config
        .sales
        .users
        .iter()
        .find(|u| u.name == name)
        .map(|u| u.role)
}

/// The token's actor, or 401 (counted against the client, as a wrong
/// password is).
async fn token_staff(
    state: &Arc<AppState>,
    token: &str,
    client: Option<IpAddr>,
) -> Result<Identity, ApiError> {
    if state.guard.throttled(client) {
        return Err(ApiError::TooManyAttempts);
    }
    let found = state.db.token_by_hash(secret_hash(token)).await?;
    let Some(row) = found else {
        state.guard.note_failure(client);
        return Err(ApiError::Unauthorized { challenge: false });
    };
    let Some(scope) = Scope::parse(&row.scope) else {
        tracing::error!(token = %row.name, scope = %row.scope, "token with an unknown scope");
        return Err(ApiError::Internal);
    };
    if stale(row.last_used_at.as_deref()) {
        // The use is audited with the minute's first request (the actions a
        // token takes, lead views and searches, are audited each): a write
        // per request would load the writer for nothing more.
        let db = state.db.clone();
        let name = row.name.clone();
        let entry = crate::audit::Entry::now(
            format!("token:{name}"),
            crate::audit::action::TOKEN_USE,
            Some(format!("token {name}")),
            client.map(|c| c.to_string()),
        );
        let noted_since = OffsetDateTime::now_utc() - TOUCH_EVERY;
        let noted_since =
            crate::event::unix_to_rfc3339(noted_since.unix_timestamp()).unwrap_or_default();
        tokio::spawn(async move {
            if let Err(e) = db.touch_token(name, noted_since, entry).await {
                tracing::warn!(error = %e, "cannot note a token's use");
            }
        });
    }
    Ok(Identity::Staff(
        Staff {
            name: row.name,
            role: scope.role(),
            via: Via::Token,
        },
        None,
    ))
}

/// How long ago a stored time was; `None` when it does not parse.
fn age(at: &str) -> Option<Duration> {
    let at = OffsetDateTime::parse(at, &Rfc3339).ok()?;
    Some(
        (OffsetDateTime::now_utc() - at)
            .try_into()
            .unwrap_or_default(),
    )
}

/// Whether a last-use time is due to be written again.
fn stale(at: Option<&str>) -> bool {
    at.and_then(age).is_none_or(|age| age >= TOUCH_EVERY)
}

/// The staff member and CSRF token of a live session. A session that has
/// expired, or whose user is no longer in the config, is deleted.
pub async fn session_staff(
    state: &AppState,
    config: &Config,
    id: &str,
) -> Result<Option<(Staff, String)>, ApiError> {
    let id_hash = secret_hash(id);
    let Some(row) = state.db.session(id_hash.clone()).await? else {
        return Ok(None);
    };
    let role = user_role(config, &row.user_name);
    let idle = age(&row.seen_at).is_none_or(|a| a > config.sessions.idle());
    let over = age(&row.created_at).is_none_or(|a| a > config.sessions.absolute());
    let Some(role) = role.filter(|_| !idle && !over) else {
        // Out either way; a store that cannot delete the row now leaves it
        // to the next sign-in's sweep.
        if let Err(e) = state.db.end_session(id_hash).await {
            tracing::warn!(error = %e, "cannot delete an ended session");
        }
        return Ok(None);
    };
    if stale(Some(&row.seen_at)) {
        let db = state.db.clone();
        tokio::spawn(async move {
            if let Err(e) = db.touch_session(id_hash, crate::event::now_rfc3339()).await {
                tracing::warn!(error = %e, "cannot note a session's use");
            }
        });
    }
    let staff = Staff {
        name: row.user_name,
        role,
        via: Via::Session,
    };
    Ok(Some((staff, row.csrf)))
}

/// The actor of an API request: HTTP Basic of a sales user, an API token
/// (`Authorization: Bearer`), or a session cookie; 401 without any, 429
/// for a client that failed too often. A session's request that changes
/// something must come from our own pages (a same-origin `Origin`) or carry
/// the session's token in `X-CSRF-Token`: 403 otherwise.
pub fn api_staff(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Arc<AppState>, Staff), Error = Rejection> + Clone {
    asking()
        .and(warp::method())
        .and(with_state(state))
        .and_then(
            |asking: Asking, method: Method, state: Arc<AppState>| async move {
                let config = state.config();
                match identify(&state, &config, &asking, true).await {
                    Ok(Identity::Staff(staff, csrf)) => {
                        if staff.via == Via::Session && !method.is_safe() {
                            let by_token = match (&asking.csrf_header, &csrf) {
                                (Some(given), Some(csrf)) => {
                                    secret_eq(given.as_bytes(), csrf.as_bytes())
                                }
                                _ => false,
                            };
                            let from_us = asking.origin.as_deref().is_some_and(|o| {
                                same_origin(o, &config, asking.host.as_deref())
                            });
                            if !(by_token || from_us) {
                                return Err(ApiError::Forbidden(
                                    "a change by session needs a same-origin Origin or the X-CSRF-Token header".into(),
                                )
                                .reject());
                            }
                        }
                        Ok((state, staff))
                    }
                    // A client that failed too often gets nothing, not
                    // even the challenge.
                    Ok(Identity::Nobody) if state.guard.throttled(asking.client) => {
                        Err(ApiError::TooManyAttempts.reject())
                    }
                    Ok(Identity::Nobody) => {
                        Err(ApiError::Unauthorized { challenge: true }.reject())
                    }
                    Err(e) => Err(e.reject()),
                }
            },
        )
        .untuple_one()
}

/// The path and query of the request, for `/login?next=…`.
fn here() -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    warp::path::full()
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .map(|path: warp::path::FullPath, query: String| {
            if query.is_empty() {
                path.as_str().to_owned()
            } else {
                format!("{}?{query}", path.as_str())
            }
        })
}

/// The signed-in person of a page request: a session (or HTTP Basic, for
/// scripts and old bookmarks). Without any credentials (or with an expired
/// session), `Err` is a `303 See Other` to `/login?next=…` (this page);
/// with bad credentials, the 401 (or 429) page. Never rejects.
pub fn page_staff(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Result<(Arc<AppState>, PageUser), Response>,), Error = Infallible> + Clone
{
    asking().and(here()).and(with_state(state)).then(
        |asking: Asking, here: String, state: Arc<AppState>| async move {
            let config = state.config();
            match identify(&state, &config, &asking, false).await {
                Ok(Identity::Staff(staff, csrf)) => Ok((
                    state,
                    PageUser {
                        staff,
                        csrf: csrf.unwrap_or_default(),
                        host: asking.host,
                        client: asking.client,
                    },
                )),
                Ok(Identity::Nobody) => Err(to_login(&here, &asking, &config)),
                Err(e) => Err(super::pages::error_page(&e)),
            }
        },
    )
}

/// `303 See Other` to the sign-in form, which sends the user back to
/// `here` afterwards; a stale session cookie is cleared on the way.
fn to_login(here: &str, asking: &Asking, config: &Config) -> Response {
    let location = format!("/login?next={}", encode_component(here));
    let mut response = see_other(&location);
    if asking.session_id().is_some() {
        response
            .headers_mut()
            .insert(SET_COOKIE, session_cookie_header(config, None));
    }
    response
}

/// A `303 See Other` to a local path.
pub fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let value = HeaderValue::from_str(location).unwrap_or(HeaderValue::from_static("/leads"));
    response.headers_mut().insert(LOCATION, value);
    response
}

/// `s` percent-encoded for a query value (unreserved characters and `/` kept).
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid config whose `server.public_url` is `public_url`.
    pub(super) fn config(public_url: &str) -> Config {
        Config::parse(&format!(
            r#"
            [server]
            listen = "127.0.0.1:0"
            public_url = "{public_url}"
            max_body_bytes = 1048576
            [database]
            [jivo]
            token = "a-test-jivo-token"
            enable_assign = true
            [merge]
            match_order = ["email", "phone"]
            default_region = "US"
            phone = "keep_both"
            email = "keep_both"
            primary = "existing"
            name = "keep_existing"
            description = "keep_existing"
            [duplicates]
            enabled = true
            threshold = 0.92
            [sales]
            "#
        ))
        .unwrap()
    }
}
