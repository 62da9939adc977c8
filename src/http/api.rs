//! The JSON API for scripts (and the truth the lead pages read): HTTP Basic
//! against `[[sales.users]]`.

use std::net::IpAddr;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use warp::{Filter, Rejection, Reply};

use super::auth::Verdict;
use super::error::ApiError;
use super::{AppState, client_addr, raw_header, with_state};
use crate::store::search::{Cursor, Query};
use crate::store::view::Found;

/// `/api/leads/{id}` and `/api/leads`.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    lead(state.clone()).or(search(state)).unify()
}

/// Lets the request through when it carries a sales user's credentials.
pub fn sales_user(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Arc<AppState>,), Error = Rejection> + Clone {
    // Read as bytes: a header that is not visible ASCII is bad credentials
    // (401), not a malformed request.
    raw_header("authorization")
        .and(client_addr())
        .and(with_state(state))
        .and_then(
            |header: Option<String>, client: Option<IpAddr>, state: Arc<AppState>| async move {
                let checker = state.clone();
                let verdict = tokio::task::spawn_blocking(move || {
                    let users = &checker.config().sales.users;
                    checker.guard.check(users, header.as_deref(), client)
                })
                .await
                .map_err(|_| ApiError::Internal.reject())?;
                match verdict {
                    Verdict::Allowed(_) => Ok(state),
                    Verdict::Denied => Err(ApiError::Unauthorized { challenge: true }.reject()),
                    Verdict::Throttled => Err(ApiError::TooManyAttempts.reject()),
                }
            },
        )
}

/// GET /api/leads/{id}
///
/// The lead as JSON; a folded lead's id answers `{"id":…, "merged_into": survivor}`.
fn lead(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("api" / "leads" / String)
        .and(warp::get())
        .and(sales_user(state))
        .and_then(|id: String, state: Arc<AppState>| async move {
            let id: i64 = id
                .parse()
                .ok()
                .filter(|id| *id > 0)
                .ok_or(ApiError::NotFound.reject())?;
            let found = state
                .db
                .lead(id)
                .await
                .map_err(|e| ApiError::from(e).reject())?;
            match found {
                Found::Lead(lead) => Ok(warp::reply::json(&lead).into_response()),
                Found::MergedInto(survivor) => Ok(warp::reply::json(&json!({
                    "id": id,
                    "merged_into": survivor,
                }))
                .into_response()),
                Found::Missing => Err(ApiError::NotFound.reject()),
            }
        })
}

/// The query string of `GET /api/leads`.
#[derive(Debug, Deserialize)]
pub struct SearchParams {
    /// Exact email.
    pub email: Option<String>,
    /// Phone, any format.
    pub phone: Option<String>,
    /// Name, email or phone, exact or nearly.
    pub q: Option<String>,
    /// Cursor from the previous page's `next`.
    pub cursor: Option<String>,
    /// Page size (1..100, default 20).
    pub limit: Option<usize>,
}

impl SearchParams {
    /// The search these parameters ask for; a malformed cursor is a 400.
    pub fn query(self) -> Result<Query, Rejection> {
        let cursor = match self.cursor.as_deref().filter(|c| !c.is_empty()) {
            Some(c) => Some(Cursor::parse(c).ok_or_else(|| {
                ApiError::BadRequest("cursor must be the `next` of a previous page".into()).reject()
            })?),
            None => None,
        };
        Ok(Query {
            email: self.email.filter(|s| !s.trim().is_empty()),
            phone: self.phone.filter(|s| !s.trim().is_empty()),
            q: self.q,
            cursor,
            limit: self.limit.unwrap_or(20),
        })
    }
}

/// GET /api/leads?email=…&phone=…&q=…&cursor=…&limit=…
///
/// `{"leads":[…], "next": cursor or null}`: best matches first for `q`
/// (see `store::search`), newest first otherwise.
fn search(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("api" / "leads")
        .and(warp::get())
        .and(sales_user(state))
        .and(warp::query::<SearchParams>())
        .and_then(|state: Arc<AppState>, params: SearchParams| async move {
            let query = params.query()?;
            let region = state.config().merge.default_region;
            let (leads, next) = state
                .db
                .search_leads(query, region)
                .await
                .map_err(|e| ApiError::from(e).reject())?;
            let next = next.map(|n| n.to_string());
            Ok::<_, Rejection>(
                warp::reply::json(&json!({ "leads": leads, "next": next })).into_response(),
            )
        })
}
