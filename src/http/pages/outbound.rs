//! `GET /outbound`: the outbound webhooks' endpoints for admins (state,
//! backlog, last success, last error; never a secret), and `POST
//! /outbound/{name}/enable`, which enables one that answered 410 Gone.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::model::Account;
use super::{error_page, render};
use crate::http::error::ApiError;
use crate::http::session::{PageUser, check_form, page_staff, require, see_other};
use crate::http::{AppState, raw_header};
use crate::ops::outbound::{Row, rows};
use crate::staff::Role;
use crate::store::outbox;

/// The page.
#[derive(Template)]
#[template(path = "outbound.html")]
struct OutboundPage {
    q: &'static str,
    account: Option<Account>,
    csrf: String,
    rows: Vec<Row>,
}

/// `GET /outbound` and `POST /outbound/{name}/enable`.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let page = warp::path!("outbound")
        .and(warp::get())
        .and(page_staff(state.clone()))
        .then(show);
    let enable = warp::path!("outbound" / String / "enable")
        .and(warp::post())
        .and(page_staff(state))
        .and(raw_header("origin"))
        .and(
            warp::body::content_length_limit(16 * 1024)
                .and(warp::body::form::<HashMap<String, String>>())
                .map(Some)
                .or(warp::any().map(|| None))
                .unify(),
        )
        .then(enable_endpoint);
    page.or(enable).unify()
}

/// GET /outbound
///
/// Admins only (403 page otherwise).
async fn show(user: Result<(Arc<AppState>, PageUser), Response>) -> Response {
    let (state, user) = match user {
        Ok(user) => user,
        Err(page) => return page,
    };
    if let Err(e) = require(&user.staff, Role::can_admin) {
        return error_page(&e);
    }
    let known = match state.db.read(outbox::status).await {
        Ok(known) => known,
        Err(e) => return error_page(&ApiError::from(e)),
    };
    let config = state.config();
    let page = OutboundPage {
        q: "",
        account: Account::of(&user),
        csrf: user.csrf.clone(),
        rows: rows(&config.outbound, known),
    };
    render(StatusCode::OK, &page)
}

/// POST /outbound/{name}/enable
///
/// Admins only, with the form's CSRF token; `303` back to `/outbound`.
async fn enable_endpoint(
    name: String,
    user: Result<(Arc<AppState>, PageUser), Response>,
    origin: Option<String>,
    form: Option<HashMap<String, String>>,
) -> Response {
    let (state, user) = match user {
        Ok(user) => user,
        Err(page) => return page,
    };
    let config = state.config();
    let form = form.unwrap_or_default();
    let allowed = check_form(
        &user,
        form.get("csrf").map(String::as_str),
        origin.as_deref(),
        &config,
    )
    .and_then(|()| require(&user.staff, Role::can_admin));
    if let Err(e) = allowed {
        return error_page(&e);
    }
    if !config.outbound.iter().any(|e| e.name == name) {
        return error_page(&ApiError::NotFound);
    }
    let who = user.staff.label();
    match state.db.write(move |c| outbox::enable(c, &name)).await {
        Ok(was) => {
            if was {
                tracing::info!(by = %who, "outbound endpoint enabled");
            }
            see_other("/outbound")
        }
        Err(e) => error_page(&ApiError::from(e)),
    }
}
