//! Resolving possible duplicates through the JSON API: the review queue,
//! the merge preview, merge, dismiss and unmerge. Reading needs any staff
//! credentials; acting needs a role that may work leads (`sales`, a
//! `write` token or more).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use super::edits::{json, lead_id, worker};
use super::lead_response;
use crate::audit::{Entry, action};
use crate::http::error::ApiError;
use crate::http::session::api_staff;
use crate::http::{AppState, body, client_addr};
use crate::staff::Staff;
use crate::store::merges::{Keep, MergeError, Side};
use crate::store::view::{Found, LeadView};

/// The duplicate endpoints.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    queue(state.clone())
        .or(preview(state.clone()))
        .unify()
        .or(merge(state.clone()))
        .unify()
        .or(dismiss(state.clone()))
        .unify()
        .or(unmerge(state))
        .unify()
}

impl From<MergeError> for ApiError {
    fn from(e: MergeError) -> Self {
        match e {
            MergeError::NotFound => ApiError::NotFound,
            MergeError::MergedInto(survivor) => ApiError::MergedInto(survivor),
            MergeError::Invalid(message) => ApiError::BadRequest(message),
            MergeError::Conflict(message) => ApiError::Conflict {
                message,
                lead: None,
            },
            MergeError::Db(e) => e.into(),
        }
    }
}

fn rejected(e: impl Into<ApiError>) -> Rejection {
    e.into().reject()
}

/// The query of `GET /api/duplicates`.
#[derive(Debug, Deserialize)]
struct QueueParams {
    cursor: Option<String>,
    limit: Option<usize>,
}

/// `score:lead:other`, the last pair of a page.
fn parse_cursor(cursor: &str) -> Option<(f64, i64, i64)> {
    let mut parts = cursor.split(':');
    let score = parts.next()?.parse().ok()?;
    let lead = parts.next()?.parse().ok()?;
    let other = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((score, lead, other))
}

/// GET /api/duplicates?cursor=…&limit=…
///
/// `{"pairs": [{"lead", "other", "score", "reason"}], "next": cursor or
/// null}`: pairs awaiting a decision, strongest first; `lead` is the older.
fn queue(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("api" / "duplicates")
        .and(warp::get())
        .and(api_staff(state))
        .and(warp::query::<QueueParams>())
        .and_then(
            |state: Arc<AppState>, _staff: Staff, params: QueueParams| async move {
                let after = match params.cursor.as_deref().filter(|c| !c.is_empty()) {
                    Some(c) => Some(parse_cursor(c).ok_or_else(|| {
                        rejected(ApiError::BadRequest(
                            "cursor must be the `next` of a previous page".into(),
                        ))
                    })?),
                    None => None,
                };
                let (pairs, next) = state
                    .db
                    .duplicate_pairs(after, params.limit.unwrap_or(20))
                    .await
                    .map_err(rejected)?;
                let next = next.map(|(s, a, b)| format!("{s}:{a}:{b}"));
                Ok::<_, Rejection>(
                    warp::reply::json(&json!({ "pairs": pairs, "next": next })).into_response(),
                )
            },
        )
}

/// GET /api/leads/{id}/merge-preview?other=B&name=other&…
///
/// `{"survivor": id, "absorbed": B, "lead": merged lead, "fields": [each
/// chosen value and where it comes from], "moves": B as it is}`; writes
/// nothing. The choices as for a merge (`name=other`, …).
fn preview(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("api" / "leads" / String / "merge-preview")
        .and(warp::get())
        .and(api_staff(state))
        .and(warp::query::<HashMap<String, String>>())
        .and_then(
            |id: String, state: Arc<AppState>, _staff: Staff, query: HashMap<String, String>| async move {
                let id = lead_id(&id)?;
                let other = query.get("other").ok_or_else(|| {
                    rejected(ApiError::BadRequest("other: the lead to merge in is missing".into()))
                })?;
                let other = lead_id(other)?;
                if let Some(unknown) = query.keys().find(|k| *k != "other" && !CHOICES.contains(&k.as_str())) {
                    return Err(rejected(ApiError::BadRequest(format!("unknown parameter {unknown:?}"))));
                }
                let keep = keep_of(|k| query.get(k).cloned()).map_err(|e| rejected(ApiError::BadRequest(e)))?;
                let preview = state
                    .db
                    .merge_preview(id, other, keep)
                    .await
                    .map_err(rejected)?;
                Ok::<_, Rejection>(warp::reply::json(&preview).into_response())
            },
        )
}

/// The body of `POST /api/leads/{id}/merge`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MergeBody {
    other: i64,
    #[serde(default)]
    keep: Keep,
}

/// The lead `id` as JSON, or why not.
async fn lead_json(state: &AppState, id: i64) -> Result<Box<LeadView>, Rejection> {
    match state.db.lead(id).await.map_err(rejected)? {
        Found::Lead(lead) => Ok(lead),
        Found::MergedInto(survivor) => Err(rejected(ApiError::MergedInto(survivor))),
        Found::Missing => Err(rejected(ApiError::NotFound)),
    }
}

/// POST /api/leads/{id}/merge
///
/// `{"other": B, "keep": {"name": "this"|"other", "description", "status",
/// "owner", "primary_email", "primary_phone"}}` → 200 the survivor `id`;
/// `B` then answers `merged_into`. A lead merged away meanwhile is a 409
/// with `merged_into` its survivor.
fn merge(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("api" / "leads" / String / "merge")
        .and(warp::post())
        .and(worker(state.clone()))
        .and(body(state))
        .and(client_addr())
        .and_then(
            |id: String, state: Arc<AppState>, staff: Staff, body: Bytes, client| async move {
                let id = lead_id(&id)?;
                let MergeBody { other, keep } = json(&body)?;
                let audit = merged_entry(&staff, id, other, client);
                state
                    .db
                    .merge_leads(id, other, keep, staff.label(), audit)
                    .await
                    .map_err(rejected)?;
                let lead = lead_json(&state, id).await?;
                Ok::<_, Rejection>(lead_response(&lead, StatusCode::OK))
            },
        )
}

/// POST /api/leads/{id}/duplicates/{other}/dismiss
///
/// "Not the same person" → 200 lead `id`; the pair is never flagged again.
fn dismiss(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("api" / "leads" / String / "duplicates" / String / "dismiss")
        .and(warp::post())
        .and(worker(state))
        .and(client_addr())
        .and_then(
            |id: String, other: String, state: Arc<AppState>, staff: Staff, client| async move {
                let (id, other) = (lead_id(&id)?, lead_id(&other)?);
                let audit = dismissed_entry(&staff, id, other, client);
                state
                    .db
                    .dismiss_duplicate(id, other, staff.label(), audit)
                    .await
                    .map_err(rejected)?;
                let lead = lead_json(&state, id).await?;
                Ok::<_, Rejection>(lead_response(&lead, StatusCode::OK))
            },
        )
}

/// The body of `POST /api/leads/{id}/unmerge`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnmergeBody {
    lead: i64,
}

/// POST /api/leads/{id}/unmerge
///
/// `{"lead": B}` → 200 `{"survivor": lead, "restored": lead,
/// "unattributed": [{"kind", "value", "delivery_id"}]}`: B (merged or
/// folded into `id`) comes back.
fn unmerge(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("api" / "leads" / String / "unmerge")
        .and(warp::post())
        .and(worker(state.clone()))
        .and(body(state))
        .and(client_addr())
        .and_then(
            |id: String, state: Arc<AppState>, staff: Staff, body: Bytes, client| async move {
                let id = lead_id(&id)?;
                let UnmergeBody { lead } = json(&body)?;
                let region = state.config().merge.default_region;
                let audit = unmerged_entry(&staff, id, lead, client);
                let done = state
                    .db
                    .unmerge_lead(id, lead, staff.label(), region, audit)
                    .await
                    .map_err(rejected)?;
                let survivor = lead_json(&state, id).await?;
                let restored = lead_json(&state, lead).await?;
                Ok::<_, Rejection>(
                    warp::reply::json(&json!({
                        "survivor": survivor,
                        "restored": restored,
                        "unattributed": done.unattributed,
                    }))
                    .into_response(),
                )
            },
        )
}

/// The choices of a merge, by name.
pub const CHOICES: [&str; 6] = [
    "name",
    "description",
    "status",
    "owner",
    "primary_email",
    "primary_phone",
];

/// The choices a form or query gives (`name=other`, …; absent: `this`).
pub fn keep_of(get: impl Fn(&str) -> Option<String>) -> Result<Keep, String> {
    let side = |key: &str| match get(key).as_deref() {
        Some("other") => Ok(Side::Other),
        None | Some("this") => Ok(Side::This),
        Some(_) => Err(format!("{key} must be \"this\" or \"other\"")),
    };
    Ok(Keep {
        name: side("name")?,
        description: side("description")?,
        status: side("status")?,
        owner: side("owner")?,
        primary_email: side("primary_email")?,
        primary_phone: side("primary_phone")?,
    })
}

/// The audit entry of a merge of `absorbed` into `survivor`.
pub fn merged_entry(
    staff: &Staff,
    survivor: i64,
    absorbed: i64,
    client: Option<std::net::IpAddr>,
) -> Entry {
    let target = format!("lead {survivor} absorbed lead {absorbed}");
    Entry::by(staff, action::MERGE, Some(target), client)
}

/// The audit entry of an unmerge of `absorbed` from `survivor`.
pub fn unmerged_entry(
    staff: &Staff,
    survivor: i64,
    absorbed: i64,
    client: Option<std::net::IpAddr>,
) -> Entry {
    let target = format!("lead {absorbed} restored from lead {survivor}");
    Entry::by(staff, action::UNMERGE, Some(target), client)
}

/// The audit entry of a dismissed pair.
pub fn dismissed_entry(staff: &Staff, a: i64, b: i64, client: Option<std::net::IpAddr>) -> Entry {
    Entry::by(
        staff,
        action::DISMISS,
        Some(format!("leads {a} and {b}")),
        client,
    )
}
