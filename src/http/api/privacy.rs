//! The admin's privacy endpoints: erase a person, and export everything
//! held on them. Both need a role that may administer (an `admin` token or
//! user): 403 for anyone else.

use std::sync::Arc;

use serde_json::json;
use warp::{Filter, Rejection, Reply};

use crate::audit::{Entry, action};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::session::{api_staff, require};
use crate::staff::{Role, Staff};
use crate::store::erase::Subject;

/// `DELETE /api/leads/{id}` and `GET /api/leads/{id}/export`.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    erase(state.clone()).or(export(state)).unify()
}

/// The acting staff member, when their role may administer (403 otherwise).
fn admin(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Arc<AppState>, Staff), Error = Rejection> + Clone {
    api_staff(state)
        .and_then(|state: Arc<AppState>, staff: Staff| async move {
            require(&staff, Role::can_admin).map_err(ApiError::reject)?;
            Ok::<_, Rejection>((state, staff))
        })
        .untuple_one()
}

fn lead_id(id: &str) -> Result<i64, Rejection> {
    id.parse()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::NotFound.reject())
}

/// Erases the person of lead `id` (see `ops::erase::erase`); `Ok(None)`:
/// no such lead. Shared by the API and the lead page.
pub async fn erase_lead(
    state: &AppState,
    id: i64,
    audit: crate::audit::Entry,
) -> Result<Option<crate::store::erase::Erased>, ApiError> {
    let config = state.config();
    let key = crate::privacy::Key::of(&config).ok_or_else(|| ApiError::Conflict {
        message: "[privacy] secret is not set in the configuration: an erasure keeps keyed \
                  hashes and needs it"
            .into(),
        lead: None,
    })?;
    let erased = crate::ops::erase::erase(
        &state.db,
        &state.spool,
        key,
        config.merge.default_region,
        Subject::Lead(id),
        audit,
    )
    .await?;
    Ok(erased.filter(|e| !e.lead_ids.is_empty()))
}

/// DELETE /api/leads/{id}
///
/// Erases the person of the lead for good: the lead (a folded id names
/// the lead it was folded into), every lead folded into it, their
/// contacts, conversations, notes, custom fields, history, duplicate links,
/// and every raw or spooled delivery carrying their identifiers. 200
/// `{"erased": [ids], "removed": {kind: rows}, "tombstones": n,
/// "erased_at": …}`; 404 for an unknown lead.
fn erase(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("api" / "leads" / String)
        .and(warp::delete())
        .and(admin(state))
        .and(crate::http::client_addr())
        .and_then(
            |id: String, state: Arc<AppState>, staff: Staff, client| async move {
                let id = lead_id(&id)?;
                let audit = Entry::by(&staff, action::ERASE, None, client);
                match erase_lead(&state, id, audit)
                    .await
                    .map_err(ApiError::reject)?
                {
                    Some(erased) => Ok::<_, Rejection>(
                        warp::reply::json(&json!({
                            "erased": erased.lead_ids,
                            "removed": erased.removed,
                            "tombstones": erased.tombstones,
                            "erased_at": erased.erased_at,
                        }))
                        .into_response(),
                    ),
                    None => Err(ApiError::NotFound.reject()),
                }
            },
        )
}

/// GET /api/leads/{id}/export
///
/// Everything held on the person of the lead, as one JSON document:
/// `{"exported_at", "leads": [lead as GET /api/leads/{id}], "folded_leads":
/// […], "deliveries": [{"id", "platform", "event", "received_at",
/// "status", "body"}]}`, offered as a download; 404 for an unknown lead.
fn export(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("api" / "leads" / String / "export")
        .and(warp::get())
        .and(admin(state))
        .and(crate::http::client_addr())
        .and_then(
            |id: String, state: Arc<AppState>, staff: Staff, client| async move {
                let id = lead_id(&id)?;
                let region = state.config().merge.default_region;
                let document = state
                    .db
                    .export_person(Subject::Lead(id), region)
                    .await
                    .map_err(|e| ApiError::from(e).reject())?
                    .ok_or_else(|| ApiError::NotFound.reject())?;
                // Nothing leaves unrecorded: a log that cannot be written is a 503.
                let entry = Entry::by(
                    &staff,
                    action::EXPORT_PERSON,
                    Some(exported(&document)),
                    client,
                );
                state
                    .db
                    .audit(entry)
                    .await
                    .map_err(|e| ApiError::from(e).reject())?;
                let reply = warp::reply::with_header(
                    warp::reply::json(&document),
                    "content-disposition",
                    format!("attachment; filename=\"lead-{id}-export.json\""),
                );
                Ok::<_, Rejection>(reply.into_response())
            },
        )
}

/// The audit target of a subject export: the ids of the leads it holds.
pub fn exported(document: &serde_json::Value) -> String {
    let ids: Vec<String> = ["leads", "folded_leads"]
        .iter()
        .flat_map(|key| document[key].as_array().into_iter().flatten())
        .filter_map(|lead| lead["id"].as_i64())
        .map(|id| id.to_string())
        .collect();
    format!("leads {}", ids.join(", "))
}
