//! The JSON write API: scripts (and staff) work a lead. Every endpoint
//! needs a role that may work leads (a `write` token or more), takes an
//! optional `If-Match: "VERSION"` (412 when the lead has moved on), and
//! answers with the lead as `GET /api/leads/{id}` shows it, with its `ETag`.

use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use warp::http::StatusCode;
use warp::{Filter, Rejection};

use super::lead_response;
use crate::crm::merge::ContactKind;
use crate::http::error::ApiError;
use crate::http::session::{api_staff, require};
use crate::http::{AppState, body, raw_header};
use crate::staff::{Role, Staff};
use crate::store::edits::{EditError, Expect, Field};
use crate::store::view::Found;

/// The write endpoints on `/api/leads/{id}`.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    patch(state.clone())
        .or(note(state.clone()))
        .unify()
        .or(add_contact(state.clone()))
        .unify()
        .or(remove_contact(state))
        .unify()
}

/// The acting staff member, when their role may work leads (403 otherwise).
pub(super) fn worker(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Arc<AppState>, Staff), Error = Rejection> + Clone {
    api_staff(state)
        .and_then(|state: Arc<AppState>, staff: Staff| async move {
            require(&staff, Role::can_work).map_err(ApiError::reject)?;
            Ok::<_, Rejection>((state, staff))
        })
        .untuple_one()
}

/// `If-Match`: the version the caller saw (`"7"`, `7` or `W/"7"`; `*` or
/// none: any). Anything else is a 400.
fn if_match() -> impl Filter<Extract = (Expect,), Error = Rejection> + Clone {
    raw_header("if-match").and_then(|header: Option<String>| async move {
        let version = match header.as_deref().map(str::trim) {
            None | Some("*") => None,
            Some(tag) => {
                let tag = tag.strip_prefix("W/").unwrap_or(tag);
                let tag = tag
                    .strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    .unwrap_or(tag);
                Some(tag.parse::<i64>().map_err(|_| {
                    ApiError::BadRequest(
                        "If-Match must be one version of the lead, as its ETag gives it".into(),
                    )
                    .reject()
                })?)
            }
        };
        Ok::<_, Rejection>(Expect::version(version))
    })
}

/// The lead id of a path, or 404.
pub(super) fn lead_id(id: &str) -> Result<i64, Rejection> {
    id.parse()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::NotFound.reject())
}

/// A JSON body as `T`, or a 400 saying what is wrong with it.
pub(super) fn json<T: DeserializeOwned>(body: &Bytes) -> Result<T, Rejection> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("body: {e}")).reject())
}

/// The lead after an edit (or the refusal), answered with `status`.
async fn answer(
    state: &AppState,
    id: i64,
    edited: Result<(), EditError>,
    status: StatusCode,
) -> Result<warp::reply::Response, Rejection> {
    edited.map_err(|e| ApiError::from(e).reject())?;
    match state
        .db
        .lead(id)
        .await
        .map_err(|e| ApiError::from(e).reject())?
    {
        Found::Lead(lead) => Ok(lead_response(&lead, status)),
        Found::MergedInto(survivor) => Err(ApiError::MergedInto(survivor).reject()),
        Found::Missing => Err(ApiError::NotFound.reject()),
    }
}

/// Present as null (`Some(None)`) or as a value (`Some(Some(v))`); absent
/// keys are `None` through `#[serde(default)]`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// The body of `PATCH /api/leads/{id}`: the fields to set; `null` empties
/// one (the owner: nobody owns the lead).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeadPatch {
    #[serde(default, deserialize_with = "present")]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    status: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    owner: Option<Option<String>>,
}

/// PATCH /api/leads/{id}
///
/// `{"name", "description", "status", "owner"}` (any of them) → 200 lead.
/// The status must be one of `[pipeline] statuses`, the owner a user who
/// may work leads (or null): else 400.
fn patch(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("api" / "leads" / String)
        .and(warp::patch())
        .and(worker(state.clone()))
        .and(if_match())
        .and(body(state))
        .and_then(
            |id: String, state: Arc<AppState>, staff: Staff, expect: Expect, body: Bytes| async move {
                let id = lead_id(&id)?;
                let patch: LeadPatch = json(&body)?;
                let changes: Vec<(Field, Option<String>)> = [
                    (Field::Name, patch.name),
                    (Field::Description, patch.description),
                    (Field::Status, patch.status),
                    (Field::Owner, patch.owner),
                ]
                .into_iter()
                .filter_map(|(field, value)| Some((field, value?)))
                .collect();
                let config = state.config();
                let users = config
                    .sales
                    .users
                    .iter()
                    .filter(|u| u.role.can_work())
                    .map(|u| u.name.clone())
                    .collect();
                let edited = state
                    .db
                    .edit_lead(
                        id,
                        staff.label(),
                        changes,
                        expect,
                        config.pipeline.statuses.clone(),
                        users,
                    )
                    .await;
                answer(&state, id, edited, StatusCode::OK).await
            },
        )
}

/// The body of `POST /api/leads/{id}/notes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNote {
    text: String,
}

/// POST /api/leads/{id}/notes
///
/// `{"text": …}` → 201 lead, the note among its `notes` with `"platform":
/// "staff"` and its `author`.
fn note(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("api" / "leads" / String / "notes")
        .and(warp::post())
        .and(worker(state.clone()))
        .and(if_match())
        .and(body(state))
        .and_then(
            |id: String, state: Arc<AppState>, staff: Staff, expect: Expect, body: Bytes| async move {
                let id = lead_id(&id)?;
                let note: NewNote = json(&body)?;
                let edited = state
                    .db
                    .add_staff_note(id, staff.label(), note.text, expect)
                    .await;
                answer(&state, id, edited, StatusCode::CREATED).await
            },
        )
}

/// `emails` or `phones`, as a path segment names them.
fn kind(segment: &str) -> Result<ContactKind, Rejection> {
    match segment {
        "emails" => Ok(ContactKind::Email),
        "phones" => Ok(ContactKind::Phone),
        _ => Err(warp::reject::not_found()),
    }
}

/// The body of `POST /api/leads/{id}/emails` and `/phones`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewContact {
    value: String,
    #[serde(default)]
    primary: bool,
}

/// POST /api/leads/{id}/emails, POST /api/leads/{id}/phones
///
/// `{"value": …, "primary": bool}` → 200 lead. The value is normalised as
/// a webhook's is; one another lead holds is a 409 naming that lead; one
/// this lead holds already becomes primary when asked.
fn add_contact(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("api" / "leads" / String / String)
        .and(warp::post())
        .and_then(
            |id: String, segment: String| async move { Ok::<_, Rejection>((id, kind(&segment)?)) },
        )
        .untuple_one()
        .and(worker(state.clone()))
        .and(if_match())
        .and(body(state))
        .and_then(
            |id: String,
             kind: ContactKind,
             state: Arc<AppState>,
             staff: Staff,
             expect: Expect,
             body: Bytes| async move {
                let id = lead_id(&id)?;
                let contact: NewContact = json(&body)?;
                let region = state.config().merge.default_region;
                let edited = state
                    .db
                    .add_contact(
                        id,
                        kind,
                        contact.value,
                        contact.primary,
                        staff.label(),
                        region,
                        expect,
                    )
                    .await;
                answer(&state, id, edited, StatusCode::OK).await
            },
        )
}

/// DELETE /api/leads/{id}/emails/{value}, DELETE /api/leads/{id}/phones/{value}
///
/// The value URL-encoded, as the lead's JSON shows it → 200 lead; the
/// history keeps it. 404 when the lead has no such value.
fn remove_contact(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("api" / "leads" / String / String / String)
        .and(warp::delete())
        .and_then(|id: String, segment: String, value: String| async move {
            let value = percent_encoding::percent_decode_str(&value)
                .decode_utf8()
                .map_err(|_| ApiError::BadRequest("the value is not UTF-8".into()).reject())?
                .into_owned();
            Ok::<_, Rejection>((id, kind(&segment)?, value))
        })
        .untuple_one()
        .and(worker(state))
        .and(if_match())
        .and_then(
            |id: String,
             kind: ContactKind,
             value: String,
             state: Arc<AppState>,
             staff: Staff,
             expect: Expect| async move {
                let id = lead_id(&id)?;
                let edited = state
                    .db
                    .remove_contact(id, kind, value, staff.label(), expect)
                    .await;
                answer(&state, id, edited, StatusCode::OK).await
            },
        )
}
