//! The JSON API for scripts (and the truth the lead pages read): HTTP Basic
//! against `[[sales.users]]`, API tokens, or a session (`session.rs`).

use std::net::IpAddr;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use warp::{Filter, Rejection, Reply};

use super::AppState;
use super::error::ApiError;
use crate::audit::{Entry, action};
use crate::staff::Staff;
use crate::store::search::filters::{LeadFilter, OwnerFilter};
use crate::store::search::{Cursor, Query};
use crate::store::view::{Found, LeadView};

mod duplicates;
mod edits;
pub mod privacy;

pub use duplicates::{CHOICES, dismissed_entry, keep_of, merged_entry, unmerged_entry};

/// `/api/leads/{id}`, `/api/leads`, the writes on a lead (`edits.rs`), the
/// duplicates queue, merges and unmerges (`duplicates.rs`), and the admin's
/// erasure and export of a person (`privacy.rs`).
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    lead(state.clone())
        .or(search(state.clone()))
        .unify()
        .or(duplicates::routes(state.clone()))
        .unify()
        .or(edits::routes(state.clone()))
        .unify()
        .or(privacy::routes(state))
        .unify()
}

/// The lead as JSON with its version as the `ETag` (what `If-Match` takes).
fn lead_response(lead: &LeadView, status: warp::http::StatusCode) -> warp::reply::Response {
    let mut response = warp::reply::with_status(warp::reply::json(lead), status).into_response();
    if let Ok(etag) = warp::http::HeaderValue::from_str(&format!("\"{}\"", lead.version)) {
        response.headers_mut().insert("etag", etag);
    }
    response
}

/// Lets the request through when it carries a sales user's credentials, an
/// API token or a session (see [`super::session::api_staff`], which also
/// says who it is).
pub fn sales_user(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Arc<AppState>,), Error = Rejection> + Clone {
    super::session::api_staff(state).map(|state, _staff| state)
}

/// GET /api/leads/{id}
///
/// The lead as JSON, its version as the `ETag`; a folded lead's id answers
/// `{"id":…, "merged_into": survivor}`.
fn lead(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("api" / "leads" / String)
        .and(warp::get())
        .and(super::session::api_staff(state))
        .and(super::client_addr())
        .and_then(
            |id: String, state: Arc<AppState>, staff: Staff, client: Option<IpAddr>| async move {
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
                    Found::Lead(lead) => {
                        let entry = Entry::by(
                            &staff,
                            action::LEAD_VIEW,
                            Some(format!("lead {}", lead.id)),
                            client,
                        );
                        state
                            .db
                            .audit(entry)
                            .await
                            .map_err(|e| ApiError::from(e).reject())?;
                        Ok(lead_response(&lead, warp::http::StatusCode::OK))
                    }
                    Found::MergedInto(survivor) => Ok(warp::reply::json(&json!({
                        "id": id,
                        "merged_into": survivor,
                    }))
                    .into_response()),
                    Found::Missing => Err(ApiError::NotFound.reject()),
                }
            },
        )
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
    /// Only leads in this status.
    pub status: Option<String>,
    /// Only leads of this owner: a user name, `me` or `none`.
    pub owner: Option<String>,
    /// Only leads that came from this platform (`jivo`, `rocketchat`,
    /// `livechat`, `import`).
    pub platform: Option<String>,
    /// Only leads created on or after this day (`2026-11-30`) or time (RFC 3339).
    pub created_since: Option<String>,
    /// Only leads that came through this channel (Jivo widget, Rocket.Chat
    /// department, LiveChat group).
    pub channel: Option<String>,
    /// Only leads whose first UTM campaign was this.
    pub campaign: Option<String>,
    /// `1`: only open leads, in any status but the pipeline's last two
    /// (by default `won` and `lost`).
    pub open: Option<String>,
}

impl SearchParams {
    /// What the audit log says of this search: the filters, with the free
    /// text of `q`, `email` and `phone` left out (the log outlives an
    /// erasure, so it must not hold what a person typed to find someone),
    /// and the leads found.
    pub fn audit_target(&self, found: &[i64]) -> String {
        let mut parts = Vec::new();
        for (key, text) in [
            ("q", &self.q),
            ("email", &self.email),
            ("phone", &self.phone),
        ] {
            if text.as_deref().is_some_and(|t| !t.trim().is_empty()) {
                parts.push(format!("{key}=…"));
            }
        }
        for (key, value) in [
            ("status", &self.status),
            ("owner", &self.owner),
            ("platform", &self.platform),
            ("channel", &self.channel),
            ("campaign", &self.campaign),
            ("created_since", &self.created_since),
            ("open", &self.open),
            ("cursor", &self.cursor),
        ] {
            if let Some(value) = value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
                parts.push(format!("{key}={value}"));
            }
        }
        let filters = if parts.is_empty() {
            "all leads".to_owned()
        } else {
            parts.join(" ")
        };
        let leads: Vec<String> = found.iter().map(i64::to_string).collect();
        match leads.is_empty() {
            true => format!("{filters}: no leads"),
            false => format!("{filters}: leads {}", leads.join(",")),
        }
    }

    /// A copy of the filters only, for [`SearchParams::audit_target`] once
    /// the search has consumed them.
    pub fn for_audit(&self) -> SearchParams {
        SearchParams {
            email: self.email.clone(),
            phone: self.phone.clone(),
            q: self.q.clone(),
            cursor: self.cursor.clone(),
            limit: self.limit,
            status: self.status.clone(),
            owner: self.owner.clone(),
            platform: self.platform.clone(),
            created_since: self.created_since.clone(),
            channel: self.channel.clone(),
            campaign: self.campaign.clone(),
            open: self.open.clone(),
        }
    }

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

    /// The list these parameters ask for: the search and its filters, `me`
    /// being the user asking (none for a token). A malformed cursor, time
    /// or `owner=me` asked by a token is a 400.
    pub fn filter(
        mut self,
        me: Option<&str>,
        pipeline: &[String],
    ) -> Result<LeadFilter, Rejection> {
        let given = |v: Option<String>| v.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let bad = |m: String| ApiError::BadRequest(m).reject();
        let status = given(self.status.take());
        let platform = given(self.platform.take());
        let channel = given(self.channel.take());
        let campaign = given(self.campaign.take());
        let owner = match given(self.owner.take()) {
            Some(owner) => Some(OwnerFilter::parse(&owner, me).map_err(bad)?),
            None => None,
        };
        let created_since = match given(self.created_since.take()) {
            Some(since) => Some(since_time(&since).ok_or_else(|| {
                bad("created_since must be a date (2026-11-30) or an RFC 3339 time".into())
            })?),
            None => None,
        };
        let among = match given(self.open.take()).as_deref() {
            None | Some("0" | "false") => None,
            Some("1" | "true") => Some(open_statuses(pipeline)),
            Some(_) => return Err(bad("open must be 1 or 0".into())),
        };
        Ok(LeadFilter {
            query: self.query()?,
            status,
            among,
            owner,
            platform,
            channel,
            campaign,
            created_since,
        })
    }
}

/// The statuses of leads still being worked: all but the pipeline's last
/// two, where a lead is closed (won or lost); all but the last of a shorter
/// pipeline.
pub fn open_statuses(pipeline: &[String]) -> Vec<String> {
    let closed = if pipeline.len() > 2 { 2 } else { 1 };
    pipeline[..pipeline.len().saturating_sub(closed)].to_vec()
}

/// A day (its start, UTC) or an RFC 3339 time, as times are stored.
fn since_time(since: &str) -> Option<String> {
    let is_day = since.len() == 10 && since.as_bytes().get(4) == Some(&b'-');
    let time = if is_day {
        format!("{since}T00:00:00Z")
    } else {
        since.to_owned()
    };
    crate::event::normalize_rfc3339(&time)
}

/// GET /api/leads?email=…&phone=…&q=…&status=…&owner=…&platform=…&created_since=…&cursor=…&limit=…
///
/// `{"leads":[…], "next": cursor or null, "counts": {status: leads}}`:
/// best matches first for `q` (see `store::search`), newest first
/// otherwise; `counts` under the same search and filters but the status,
/// every status of the pipeline present.
fn search(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("api" / "leads")
        .and(warp::get())
        .and(super::session::api_staff(state))
        .and(warp::query::<SearchParams>())
        .and(super::client_addr())
        .and_then(
            |state: Arc<AppState>, staff: Staff, params: SearchParams, client: Option<IpAddr>| async move {
                let config = state.config();
                let asked = params.for_audit();
                let filter = params.filter(staff.user_name(), &config.pipeline.statuses)?;
                let (leads, next, found) = state
                    .db
                    .list_leads(filter, config.merge.default_region)
                    .await
                    .map_err(|e| ApiError::from(e).reject())?;
                let ids: Vec<i64> = leads.iter().map(|l| l.id).collect();
                let entry = Entry::by(&staff, action::SEARCH, Some(asked.audit_target(&ids)), client);
                state.db.audit(entry).await.map_err(|e| ApiError::from(e).reject())?;
                let mut counts = serde_json::Map::new();
                for status in &config.pipeline.statuses {
                    counts.insert(status.clone(), 0.into());
                }
                for (status, n) in found {
                    counts.insert(status, n.into());
                }
                let next = next.map(|n| n.to_string());
                Ok::<_, Rejection>(
                    warp::reply::json(&json!({ "leads": leads, "next": next, "counts": counts }))
                        .into_response(),
                )
            },
        )
}
