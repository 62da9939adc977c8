//! The webhook endpoints. Each platform's filter authenticates, reads the
//! size-limited body, and hands it to [`ingest`], which stores and applies it
//! through the same path for every platform.

use std::sync::Arc;

use bytes::Bytes;
use warp::{Filter, Rejection, Reply};

use super::error::ApiError;
use super::{AppState, auth, body, raw_header, with_state};
use crate::config::LiveChatConfig;
use crate::event::Platform;
use crate::ingest;
use crate::platforms::livechat;

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
            deliver(&state, Platform::Jivo, body).await
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
            deliver(&state, Platform::RocketChat, body).await
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
                deliver(&state, Platform::LiveChat, body).await
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

/// Hands an authenticated body to [`ingest::deliver`] and answers in the
/// platform's terms.
async fn deliver(
    state: &AppState,
    platform: Platform,
    body: Bytes,
) -> Result<warp::reply::Response, Rejection> {
    let config = state.config();
    let (event, outcome) = ingest::deliver(&state.ingest(&config), platform, body)
        .await
        .map_err(|refused| ApiError::from(refused).reject())?;
    let answer = ingest::answer(platform, &config, &event, &outcome);
    Ok(warp::reply::json(&answer).into_response())
}
