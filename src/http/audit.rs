//! The audit log for admins: `GET /audit` (a page) and `GET /api/audit`
//! (JSON), oldest first from `since`, a page at a time. Reading the log is
//! itself recorded.

use std::net::IpAddr;
use std::sync::Arc;

use askama::Template;
use serde::Deserialize;
use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::AppState;
use super::error::ApiError;
use super::pages::model::Account;
use super::pages::{error_page, protect, render};
use super::session::{PageUser, encode_component, page_staff, require};
use crate::audit::{Cursor, Entry, Event, action};
use crate::staff::{Role, Staff};

/// Entries on a page unless `limit` says otherwise.
const DEFAULT_PAGE: usize = 100;
/// Most entries on a page.
const MAX_PAGE: usize = 1000;
/// Without `since`, the log from this many days ago.
const DEFAULT_DAYS: i64 = 7;

/// `/audit` and `/api/audit`.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    api(state.clone()).or(page(state)).unify()
}

/// The query string of both.
#[derive(Debug, Deserialize)]
struct AuditParams {
    /// A day (`2026-12-01`) or an RFC 3339 time; default a week ago.
    since: Option<String>,
    /// The `next` of the previous page.
    cursor: Option<String>,
    /// Entries per page (1..1000, default 100).
    limit: Option<usize>,
}

/// A checked request for a page of the log.
struct Asked {
    since: String,
    cursor: Option<Cursor>,
    limit: usize,
}

impl AuditParams {
    fn check(&self) -> Result<Asked, ApiError> {
        let since = match self
            .since
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            Some(s) => crate::ops::replay::parse_since(s).map_err(|_| {
                ApiError::BadRequest("since must be a date (2026-12-01) or an RFC 3339 time".into())
            })?,
            None => {
                let then = time::OffsetDateTime::now_utc() - time::Duration::days(DEFAULT_DAYS);
                crate::event::unix_to_rfc3339(then.unix_timestamp()).unwrap_or_default()
            }
        };
        let cursor = match self.cursor.as_deref().filter(|c| !c.is_empty()) {
            Some(c) => Some(Cursor::parse(c).ok_or_else(|| {
                ApiError::BadRequest("cursor must be the `next` of a previous page".into())
            })?),
            None => None,
        };
        let limit = self.limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ApiError::BadRequest(format!(
                "limit must be between 1 and {MAX_PAGE}"
            )));
        }
        Ok(Asked {
            since,
            cursor,
            limit,
        })
    }
}

/// Reads a page of the log for `staff` (an admin), recording the reading.
async fn read(
    state: &AppState,
    staff: &Staff,
    client: Option<IpAddr>,
    asked: Asked,
) -> Result<(Vec<Event>, Option<Cursor>), ApiError> {
    require(staff, Role::can_admin)?;
    let entry = Entry::by(
        staff,
        action::AUDIT_READ,
        Some(format!("since {}", asked.since)),
        client,
    );
    state.db.audit(entry).await?;
    Ok(state
        .db
        .audit_events(asked.since, asked.cursor, asked.limit)
        .await?)
}

/// GET /api/audit?since=…&cursor=…&limit=…
///
/// `{"events": [{"at", "actor", "action", "target", "address"}], "next":
/// cursor or null}`, oldest first; admins only (403 otherwise).
fn api(state: Arc<AppState>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("api" / "audit")
        .and(warp::get())
        .and(super::session::api_staff(state))
        .and(warp::query::<AuditParams>())
        .and(super::client_addr())
        .and_then(
            |state: Arc<AppState>, staff: Staff, params: AuditParams, client: Option<IpAddr>| async move {
                let asked = params.check().map_err(ApiError::reject)?;
                let (events, next) = read(&state, &staff, client, asked)
                    .await
                    .map_err(ApiError::reject)?;
                let next = next.map(|n| n.to_string());
                Ok::<_, Rejection>(
                    warp::reply::json(&json!({ "events": events, "next": next })).into_response(),
                )
            },
        )
}

/// `GET /audit`.
#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    /// Who is signed in.
    account: Option<Account>,
    /// From when, as used.
    since: String,
    /// The `since` field as given.
    since_given: String,
    events: Vec<Event>,
    /// The next page's link.
    next: Option<String>,
}

/// GET /audit?since=…&cursor=…
///
/// The log as a page, for admins (403 otherwise).
fn page(state: Arc<AppState>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("audit")
        .and(warp::get())
        .and(page_staff(state))
        .and(warp::query::<AuditParams>())
        .then(
            |user: Result<(Arc<AppState>, PageUser), Response>, params: AuditParams| async move {
                let (state, user) = match user {
                    Ok(user) => user,
                    Err(page) => return page,
                };
                let asked = match params.check() {
                    Ok(asked) => asked,
                    Err(e) => return error_page(&e),
                };
                let since = asked.since.clone();
                let since_given = params.since.clone().unwrap_or_default();
                match read(&state, &user.staff, user.client, asked).await {
                    Ok((events, next)) => {
                        let next = next.map(|n| {
                            format!(
                                "/audit?since={}&cursor={}",
                                encode_component(&since),
                                encode_component(&n.to_string())
                            )
                        });
                        let page = AuditPage {
                            account: Account::of(&user),
                            since,
                            since_given,
                            events,
                            next,
                        };
                        render(StatusCode::OK, &page)
                    }
                    Err(e) => error_page(&e),
                }
            },
        )
        .map(protect)
}
