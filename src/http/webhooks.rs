//! The webhook endpoints. Each platform's filter authenticates, reads the
//! size-limited body, and hands it to [`ingest`], which stores and applies it
//! through the same path for every platform.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use warp::{Filter, Rejection, Reply};

use super::error::ApiError;
use super::{AppState, auth, body, raw_header, with_state};
use crate::config::{Config, LiveChatConfig};
use crate::event::{Event, Platform, now_rfc3339};
use crate::platforms::{self, jivo, livechat};
use crate::spool::Spool;
use crate::store::DbError;
use crate::store::apply::{self, Outcome, Policy};
use crate::store::inbox::NewDelivery;

/// All webhook routes.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    jivo_webhook(state.clone())
        .or(rocketchat_webhook(state.clone()))
        .unify()
        .or(livechat_webhook(state))
        .unify()
}

/// POST /webhooks/jivo/{token}
///
/// 200 with the lead card for `chat_accepted`/`chat_updated`, `{"result":"ok"}`
/// for every other event; 401 when `{token}` is not `jivo.token`.
fn jivo_webhook(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("webhooks" / "jivo" / ..)
        .and(secret_segment())
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
            let answer = answer(Platform::Jivo, &state.config(), &event, &outcome);
            Ok::<_, Rejection>(warp::reply::json(&answer).into_response())
        })
}

/// POST /webhooks/rocketchat
///
/// 200 with [`lead_answer`] (plus the same under `data`); 401 unless the
/// `X-RocketChat-Livechat-Token` header is `rocketchat.token`; 404 while
/// `[rocketchat]` is absent.
fn rocketchat_webhook(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("webhooks" / "rocketchat")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(raw_header("x-rocketchat-livechat-token"))
        .and_then(|state: Arc<AppState>, token: Option<String>| async move {
            let config = state.config();
            let Some(rocketchat) = &config.rocketchat else {
                return Err(ApiError::NotFound.reject());
            };
            let given = token.unwrap_or_default();
            if auth::secret_eq(given.as_bytes(), rocketchat.token.expose().as_bytes()) {
                Ok(state)
            } else {
                Err(ApiError::Unauthorized { challenge: false }.reject())
            }
        })
        .and(body(state))
        .and_then(|state: Arc<AppState>, body: Bytes| async move {
            let (event, outcome) = ingest(&state, Platform::RocketChat, body)
                .await
                .map_err(ApiError::reject)?;
            let answer = answer(Platform::RocketChat, &state.config(), &event, &outcome);
            Ok::<_, Rejection>(warp::reply::json(&answer).into_response())
        })
}

/// POST /webhooks/livechat
///
/// 200 with [`lead_answer`]; 401 unless a v3 body's `secret_key` is
/// `livechat.secret_key`, or (v2 and anything else) the HTTP Basic
/// credentials are `livechat.username`/`password`; 404 while `[livechat]`
/// is absent.
fn livechat_webhook(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("webhooks" / "livechat")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and_then(|state: Arc<AppState>| async move {
            match state.config().livechat {
                Some(_) => Ok(state),
                None => Err(ApiError::NotFound.reject()),
            }
        })
        .and(raw_header("authorization"))
        .and(body(state))
        .and_then(
            |state: Arc<AppState>, authorization: Option<String>, body: Bytes| async move {
                let config = state.config();
                let authorized = config
                    .livechat
                    .as_ref()
                    .is_some_and(|lc| livechat_authorized(lc, authorization.as_deref(), &body));
                if !authorized {
                    return Err(ApiError::Unauthorized { challenge: false }.reject());
                }
                let (event, outcome) = ingest(&state, Platform::LiveChat, body)
                    .await
                    .map_err(ApiError::reject)?;
                let answer = answer(Platform::LiveChat, &config, &event, &outcome);
                Ok(warp::reply::json(&answer).into_response())
            },
        )
}

/// v3 bodies carry their secret; everything else (v2, and bodies that say
/// nothing) needs the Basic credentials. Nothing is stored before this.
fn livechat_authorized(lc: &LiveChatConfig, authorization: Option<&str>, body: &[u8]) -> bool {
    if let Some(secret) = livechat::v3_secret(body) {
        return auth::secret_eq(secret.as_bytes(), lc.secret_key.expose().as_bytes());
    }
    authorization
        .and_then(auth::parse_basic)
        .is_some_and(|(user, password)| {
            // Both compared, so the timing does not tell which one was wrong.
            let user_ok = auth::secret_eq(user.as_bytes(), lc.username.as_bytes());
            let password_ok = auth::secret_eq(password.as_bytes(), lc.password.expose().as_bytes());
            user_ok & password_ok
        })
}

/// The last path segment, when it is a secret: `warp::path::param` traces
/// every segment it looks at (`RUST_LOG=trace` would log the token), so the
/// rest of the path is taken whole and checked here. Not percent-decoded,
/// like `param::<String>`.
fn secret_segment() -> impl Filter<Extract = (String,), Error = Rejection> + Clone {
    warp::path::tail().and_then(|tail: warp::path::Tail| async move {
        let segment = tail.as_str();
        if segment.is_empty() || segment.contains('/') {
            Err(warp::reject::not_found())
        } else {
            Ok(segment.to_owned())
        }
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
            let delivery = NewDelivery::failed(platform, body, received_at);
            let event = delivery.event.clone();
            let error = reason.clone();
            state
                .db
                .write(move |conn| apply::record_failed(conn, &delivery, &error))
                .await?;
            state
                .metrics
                .delivery(platform, &event, "rejected", started.elapsed());
            state.metrics.inbox_failure();
            tracing::info!(%platform, %event, outcome = "rejected", %reason, "delivery");
            return Err(ApiError::BadRequest(reason));
        }
    };
    let write = apply_parsed(
        state,
        platform,
        &event,
        &idem_key,
        body.clone(),
        received_at.clone(),
    );
    let result = if event.wants_card {
        // The agent is looking at an empty panel until we answer.
        let deadline = Duration::from_millis(config.jivo.answer_deadline_ms);
        match tokio::time::timeout(deadline, write).await {
            Ok(result) => result,
            Err(_) => Err(DbError::Unavailable(format!(
                "no answer from storage within {} ms",
                deadline.as_millis()
            ))),
        }
    } else {
        write.await
    };
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(DbError::Unavailable(cause)) if event.wants_card => {
            let spool = state.spool.clone();
            let put =
                tokio::task::spawn_blocking(move || spool.put(platform, &received_at, &body)).await;
            return match put {
                Ok(Ok(_)) => {
                    state
                        .metrics
                        .delivery(platform, &event.name, "spooled", started.elapsed());
                    tracing::warn!(%platform, event = %event.name, outcome = "spooled", %cause, "delivery");
                    Ok((
                        event,
                        Outcome {
                            spooled: true,
                            ..Outcome::default()
                        },
                    ))
                }
                failed => {
                    let error = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "spool task failed".to_owned(),
                    };
                    state
                        .metrics
                        .delivery(platform, &event.name, "error", started.elapsed());
                    tracing::error!(%platform, event = %event.name, outcome = "error", %cause, %error, "delivery not spooled");
                    Err(ApiError::Unavailable)
                }
            };
        }
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

/// Stores and applies an already translated delivery in one transaction.
async fn apply_parsed(
    state: &AppState,
    platform: Platform,
    event: &Event,
    idem_key: &str,
    body: Bytes,
    received_at: String,
) -> Result<Outcome, DbError> {
    let config = state.config();
    let delivery = NewDelivery::parsed(platform, &event.name, idem_key, body, received_at);
    let policy = Policy::of(&config);
    // Phones are parsed here, on the request's thread: the writer is the
    // one thread every delivery waits for.
    let identifiers = apply::Identifiers::of(event, &policy);
    let event = event.clone();
    state
        .db
        .write_repeatable(move |conn| {
            let identifiers = Some(identifiers.clone());
            apply::apply_identified(conn, &policy, &delivery, &event, identifiers)
        })
        .await
}

/// Applies spooled deliveries, oldest first, until the spool is empty or
/// storage fails again. Returns how many were applied.
pub async fn drain_spool(state: &AppState) -> usize {
    let spool = state.spool.clone();
    let Ok(Ok(files)) = tokio::task::spawn_blocking(move || spool.list()).await else {
        return 0;
    };
    let mut applied = 0;
    for path in files {
        let read = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || Spool::read(&path)).await
        };
        let record = match read {
            Ok(Ok(record)) => record,
            other => {
                tracing::error!(file = %path.display(), ?other, "unreadable spool file left in place");
                continue;
            }
        };
        let (Some(platform), Ok(body)) = (record.platform(), record.body()) else {
            tracing::error!(file = %path.display(), "malformed spool file left in place");
            continue;
        };
        let result = match platforms::translate(platform, &body) {
            Ok((event, key)) => apply_parsed(
                state,
                platform,
                &event,
                &key,
                body.into(),
                record.received_at,
            )
            .await
            .map(|outcome| state.metrics.leads(&outcome)),
            Err(reason) => {
                let delivery = NewDelivery::failed(platform, body.into(), record.received_at);
                state
                    .db
                    .write(move |conn| apply::record_failed(conn, &delivery, &reason))
                    .await
            }
        };
        match result {
            Ok(()) => {
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::error!(file = %path.display(), error = %e, "cannot remove applied spool file");
                    break;
                }
                applied += 1;
            }
            Err(e) => {
                tracing::warn!(error = %e, "spool not drained: storage still failing");
                break;
            }
        }
    }
    if applied > 0 {
        tracing::info!(applied, "spooled deliveries applied");
    }
    applied
}

/// The answer `platform` gets for an applied delivery (also what
/// `crm-responder explain` prints).
pub fn answer(platform: Platform, config: &Config, event: &Event, outcome: &Outcome) -> Value {
    match platform {
        Platform::Jivo => match &outcome.card {
            Some(card) if event.wants_card => jivo::answer(card, config),
            None if outcome.spooled => jivo::provisional_answer(event, config),
            _ => json!({ "result": "ok" }),
        },
        Platform::RocketChat => {
            let mut answer = lead_answer(config, outcome);
            // Older servers keep only the `data` member of our answer as the
            // room's crmData; newer ones keep it whole. Either way it comes back.
            if answer.get("lead_id").is_some() {
                answer["data"] = json!({
                    "lead_id": answer["lead_id"].clone(),
                    "crm_link": answer["crm_link"].clone(),
                });
            }
            answer
        }
        Platform::LiveChat => lead_answer(config, outcome),
    }
}

/// The small answer Rocket.Chat and LiveChat get.
pub fn lead_answer(config: &Config, outcome: &Outcome) -> Value {
    match outcome.lead_id {
        Some(id) => json!({
            "result": "ok",
            "lead_id": id,
            "crm_link": jivo::lead_link(config, id),
        }),
        None => json!({ "result": "ok" }),
    }
}
