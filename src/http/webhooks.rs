//! The webhook endpoints. Each platform's filter authenticates, reads the
//! size-limited body, and hands it to [`ingest`], which stores and applies it
//! through the same path for every platform.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::{Value, json};
use warp::{Filter, Rejection, Reply};

use super::error::ApiError;
use super::{AppState, auth, body, with_state};
use crate::event::{Event, Platform, now_rfc3339};
use crate::platforms::{self, jivo};
use crate::store::apply::{self, Outcome, Policy};
use crate::store::inbox::NewDelivery;

/// All webhook routes.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    jivo_webhook(state)
}

/// POST /webhooks/jivo/{token}
///
/// 200 with the lead card for `chat_accepted`/`chat_updated`, `{"result":"ok"}`
/// for every other event; 401 when `{token}` is not `jivo.token`.
fn jivo_webhook(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("webhooks" / "jivo" / String)
        .and(warp::post())
        .and(with_state(state.clone()))
        .and_then(|token: String, state: Arc<AppState>| async move {
            let config = state.config();
            if auth::secret_eq(token.as_bytes(), config.jivo.token.expose().as_bytes()) {
                Ok(state)
            } else {
                Err(ApiError::Unauthorized { challenge: false }.reject())
            }
        })
        .and(body(state))
        .and_then(|state: Arc<AppState>, body: Bytes| async move {
            let (event, outcome) = ingest(&state, Platform::Jivo, body)
                .await
                .map_err(ApiError::reject)?;
            let answer = match &outcome.card {
                Some(card) if event.wants_card => jivo::answer(card, &state.config()),
                _ => json!({ "result": "ok" }),
            };
            Ok::<_, Rejection>(warp::reply::json(&answer).into_response())
        })
}

/// Stores and applies one authenticated delivery. A body that does not parse
/// is stored as failed (for a later replay) and answered 400; storage
/// trouble is a 503 so the sender retries.
pub async fn ingest(
    state: &AppState,
    platform: Platform,
    body: Bytes,
) -> Result<(Event, Outcome), ApiError> {
    let started = Instant::now();
    let config = state.config();
    let parsed = platforms::translate(platform, &body);
    let received_at = now_rfc3339();
    let (event, idem_key) = match parsed {
        Ok(parsed) => parsed,
        Err(reason) => {
            let delivery = NewDelivery {
                platform: platform.as_str(),
                event: platforms::event_name(platform, &body),
                idem_key: format!("{}:failed:{}", platform, platforms::body_hash(&body)),
                body,
                received_at,
            };
            let event = delivery.event.clone();
            let error = reason.clone();
            state
                .db
                .write(move |conn| apply::record_failed(conn, &delivery, &error))
                .await?;
            state
                .metrics
                .delivery(platform, &event, "rejected", started.elapsed());
            tracing::info!(%platform, %event, outcome = "rejected", %reason, "delivery");
            return Err(ApiError::BadRequest(reason));
        }
    };
    let delivery = NewDelivery {
        platform: platform.as_str(),
        event: event.name.clone(),
        idem_key: format!("{platform}:{idem_key}"),
        body,
        received_at,
    };
    let policy = Policy {
        merge: config.merge.clone(),
        duplicates: config.duplicates.clone(),
    };
    let job_event = event.clone();
    let result = state
        .db
        .write(move |conn| apply::apply(conn, &policy, &delivery, &job_event))
        .await;
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) => {
            state
                .metrics
                .delivery(platform, &event.name, "error", started.elapsed());
            tracing::warn!(%platform, event = %event.name, outcome = "error", error = %e, "delivery");
            return Err(e.into());
        }
    };
    let label = if outcome.redelivery {
        "redelivery"
    } else {
        "applied"
    };
    state
        .metrics
        .delivery(platform, &event.name, label, started.elapsed());
    state.metrics.leads(&outcome);
    tracing::info!(
        %platform,
        event = %event.name,
        lead = outcome.lead_id,
        outcome = label,
        micros = started.elapsed().as_micros() as u64,
        "delivery"
    );
    Ok((event, outcome))
}

/// The small answer Rocket.Chat and LiveChat get.
pub fn lead_answer(state: &AppState, outcome: &Outcome) -> Value {
    match outcome.lead_id {
        Some(id) => json!({
            "result": "ok",
            "lead_id": id,
            "crm_link": jivo::lead_link(&state.config(), id),
        }),
        None => json!({ "result": "ok" }),
    }
}
