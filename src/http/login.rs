//! Signing in and out: `GET /login`, `POST /login`, `POST /logout`, and
//! `GET /` (to the leads).
//!
//! A sign-in checks the name and password against `[[sales.users]]`, stores
//! a session (the SHA-256 of a random id, with its own CSRF token) and sets
//! the id as the `crm_session` cookie. Failed sign-ins are slowed per name
//! and per address (`slowdown.rs`) and answer the form again. The form needs
//! no CSRF token (it asks for the password), but an `Origin` of another site
//! is refused all the same, so no other site can sign a browser in.

use std::net::IpAddr;
use std::sync::Arc;

use askama::Template;
use serde::Deserialize;
use warp::http::StatusCode;
use warp::http::header::SET_COOKIE;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::AppState;
use super::error::ApiError;
use super::pages::{error_page, protect, render};
use super::session::{
    Asking, PageUser, asking, check_form, new_secret, page_staff, same_origin, secret_hash,
    see_other, session_cookie_header,
};
use crate::audit::{Entry, action};
use crate::config::Config;
use crate::event::{now_rfc3339, unix_to_rfc3339};
use crate::staff::Via;
use crate::store::staff_store::SessionRow;

/// Largest sign-in or sign-out form accepted.
const MAX_FORM_BYTES: u64 = 16 * 1024;

/// `/`, `/login` and `/logout`.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    root()
        .or(login_form(state.clone()))
        .unify()
        .or(sign_in(state.clone()))
        .unify()
        .or(sign_out(state))
        .unify()
        .map(protect)
}

/// The sign-in page.
#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    /// Nobody is signed in here (the layout asks).
    account: Option<super::pages::model::Account>,
    /// Where to go after signing in.
    next: &'a str,
    /// The name typed last time, on a failed attempt.
    name: &'a str,
    /// What went wrong last time.
    error: Option<String>,
}

/// The query string of `GET /login`.
#[derive(Debug, Deserialize)]
struct LoginParams {
    next: Option<String>,
}

/// The sign-in form's fields.
#[derive(Debug, Deserialize)]
struct LoginForm {
    name: String,
    password: String,
    next: Option<String>,
}

/// The sign-out form's fields.
#[derive(Debug, Deserialize)]
struct LogoutForm {
    csrf: Option<String>,
}

/// Where to go after signing in: `next` when it is a path of this site
/// (starts with one `/`, no backslash or control character), else `/leads`.
/// Anything else could send a freshly signed-in user to another site.
pub fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(next)
            if next.starts_with('/')
                && !next.starts_with("//")
                && !next.contains('\\')
                && !next.chars().any(char::is_control)
                && next.len() <= 2048
                && !next.starts_with("/login")
                && !next.starts_with("/logout") =>
        {
            next
        }
        _ => "/leads",
    }
}

/// GET /
///
/// `303 See Other` to `/leads`.
fn root() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path::end()
        .and(warp::get())
        .map(|| see_other("/leads"))
}

/// GET /login?next=…
///
/// The sign-in form; someone already signed in goes straight on to `next`.
fn login_form(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("login")
        .and(warp::get())
        .and(page_staff(state))
        .and(
            warp::query::<LoginParams>()
                .or(warp::any().map(|| LoginParams { next: None }))
                .unify(),
        )
        .map(
            |user: Result<(Arc<AppState>, PageUser), Response>, params: LoginParams| {
                let next = safe_next(params.next.as_deref());
                match user {
                    Ok((_, user)) if user.staff.via == Via::Session => see_other(next),
                    _ => login_page(StatusCode::OK, next, "", None),
                }
            },
        )
}

fn login_page(status: StatusCode, next: &str, name: &str, error: Option<String>) -> Response {
    let page = LoginPage {
        account: None,
        next,
        name,
        error,
    };
    render(status, &page)
}

/// A form body of at most [`MAX_FORM_BYTES`]; `None` when it is not one.
fn form<T: serde::de::DeserializeOwned + Send + 'static>()
-> impl Filter<Extract = (Option<T>,), Error = std::convert::Infallible> + Clone {
    warp::body::content_length_limit(MAX_FORM_BYTES)
        .and(warp::body::form::<T>())
        .map(Some)
        .or(warp::any().map(|| None))
        .unify()
}

/// POST /login (form: `name`, `password`, `next`)
///
/// Right: a session, its cookie, and `303 See Other` to `next` (a local
/// path) or `/leads`. Wrong: the form again with a message, after a wait
/// that grows with each failure on the name or from the address; far too
/// many: 429. A form posted from another site: 403.
fn sign_in(state: Arc<AppState>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("login")
        .and(warp::post())
        .and(asking())
        .and(form::<LoginForm>())
        .and(super::with_state(state))
        .then(
            |asking: Asking, form: Option<LoginForm>, state: Arc<AppState>| async move {
                let config = state.config();
                if let Some(origin) = asking.origin()
                    && !same_origin(origin, &config, asking.host())
                {
                    return error_page(&ApiError::Forbidden(
                        "this form was sent from another site".into(),
                    ));
                }
                let Some(form) = form else {
                    return error_page(&ApiError::BadRequest(
                        "the sign-in form needs a name and a password".into(),
                    ));
                };
                attempt(&state, &config, asking.client(), form).await
            },
        )
}

async fn attempt(
    state: &Arc<AppState>,
    config: &Config,
    client: Option<IpAddr>,
    form: LoginForm,
) -> Response {
    let next = safe_next(form.next.as_deref()).to_owned();
    let name = form.name.trim().to_owned();
    match state.guard.sign_ins.admit(&name, client) {
        Ok(wait) => tokio::time::sleep(wait).await,
        Err(retry) => {
            let seconds = retry.as_secs().max(1);
            tracing::warn!(client = ?client, "sign-in refused: too many failures");
            audit_failure(state, config, &name, client, "throttled").await;
            let mut page = login_page(
                StatusCode::TOO_MANY_REQUESTS,
                &next,
                &name,
                Some(format!(
                    "Too many failed sign-ins. Try again in {seconds} seconds."
                )),
            );
            if let Ok(value) = seconds.to_string().parse() {
                page.headers_mut()
                    .insert(warp::http::header::RETRY_AFTER, value);
            }
            return page;
        }
    }
    let checker = state.clone();
    let (who, password) = (name.clone(), form.password);
    let verified = tokio::task::spawn_blocking(move || {
        let config = checker.config();
        checker
            .guard
            .verify(&config.sales.users, &who, &password)
            .map(|u| u.name.clone())
    })
    .await;
    let user = match verified {
        Ok(Some(user)) => user,
        Ok(None) => {
            state.guard.sign_ins.failed(&name, client);
            tracing::warn!(client = ?client, "sign-in failed");
            audit_failure(state, config, &name, client, "wrong name or password").await;
            return login_page(
                StatusCode::OK,
                &next,
                &name,
                Some("Wrong name or password.".into()),
            );
        }
        Err(_) => return error_page(&ApiError::Internal),
    };
    state.guard.sign_ins.succeeded(&name);
    match start_session(state, config, &user, client).await {
        Ok(id) => {
            tracing::info!(user = %user, "signed in");
            let mut response = see_other(&next);
            response
                .headers_mut()
                .insert(SET_COOKIE, session_cookie_header(config, Some(&id)));
            response
        }
        Err(e) => error_page(&e),
    }
}

/// Records a refused sign-in. The name is kept only when it is a user's:
/// anything else typed there may be a password typed in the wrong box.
async fn audit_failure(
    state: &AppState,
    config: &Config,
    name: &str,
    client: Option<IpAddr>,
    why: &str,
) {
    let known = config.sales.users.iter().any(|u| u.name == name);
    let who = if known { name } else { "(unknown user)" };
    let entry = Entry::now(
        who,
        action::SIGN_IN_FAILED,
        Some(why.to_owned()),
        client.map(|c| c.to_string()),
    );
    if let Err(e) = state.db.audit(entry).await {
        tracing::warn!(error = %e, "cannot audit a failed sign-in");
    }
}

/// Stores a new session for `user`, signed in from `client`, with its
/// audit entry; its id (for the cookie). Expired sessions are swept on the
/// way, so the table holds only live ones.
async fn start_session(
    state: &AppState,
    config: &Config,
    user: &str,
    client: Option<IpAddr>,
) -> Result<String, ApiError> {
    let id = new_secret()?;
    let now = now_rfc3339();
    let row = SessionRow {
        user_name: user.to_owned(),
        csrf: new_secret()?,
        created_at: now.clone(),
        seen_at: now,
    };
    let entry = Entry::now(user, action::SIGN_IN, None, client.map(|c| c.to_string()));
    state
        .db
        .create_session(secret_hash(&id), row, entry)
        .await?;
    let unix = time::OffsetDateTime::now_utc().unix_timestamp();
    let before = |d: std::time::Duration| {
        unix_to_rfc3339(unix.saturating_sub(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)))
            .unwrap_or_default()
    };
    let (idle, begun) = (
        before(config.sessions.idle()),
        before(config.sessions.absolute()),
    );
    if let Err(e) = state.db.end_expired_sessions(idle, begun).await {
        tracing::warn!(error = %e, "cannot sweep expired sessions");
    }
    Ok(id)
}

/// POST /logout (form: `csrf`)
///
/// Ends the session and clears its cookie; `303 See Other` to `/login`.
/// Without the session's CSRF token, or from another site: 403.
fn sign_out(state: Arc<AppState>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("logout")
        .and(warp::post())
        .and(asking())
        .and(page_staff(state))
        .and(form::<LogoutForm>())
        .then(
            |asking: Asking,
             user: Result<(Arc<AppState>, PageUser), Response>,
             form: Option<LogoutForm>| async move {
                let Ok((state, user)) = user else {
                    return see_other("/login");
                };
                let config = state.config();
                let csrf = form.and_then(|f| f.csrf);
                if let Err(e) = check_form(&user, csrf.as_deref(), asking.origin(), &config) {
                    return error_page(&e);
                }
                if let Some(id) = asking.session_id()
                    && user.staff.via == Via::Session
                {
                    if let Err(e) = state.db.end_session(secret_hash(&id)).await {
                        return error_page(&e.into());
                    }
                    tracing::info!(user = %user.staff.name, "signed out");
                }
                let mut response = see_other("/login");
                response
                    .headers_mut()
                    .insert(SET_COOKIE, session_cookie_header(&config, None));
                response
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_signing_in() {
        for (next, to) in [
            (Some("/leads/7"), "/leads/7"),
            (Some("/leads?q=ann&cursor=x"), "/leads?q=ann&cursor=x"),
            (None, "/leads"),
            (Some(""), "/leads"),
            (Some("//evil.example"), "/leads"),
            (Some("/\\evil.example"), "/leads"),
            (Some("https://evil.example/"), "/leads"),
            (Some("evil.example"), "/leads"),
            (Some("/leads\r\nSet-Cookie: x=1"), "/leads"),
            (Some("/login?next=/leads"), "/leads"),
        ] {
            assert_eq!(safe_next(next), to, "{next:?}");
        }
    }
}
