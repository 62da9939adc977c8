//! The lead pages for the sales team: `GET /leads/{id}` (where every
//! `crm_link` points) and `GET /leads?q=…`, server-rendered HTML behind the
//! same HTTP Basic login as the JSON API, reading the same truth
//! (`store::view`, `store::search`).
//!
//! Everything on a page was typed by a visitor somewhere, so it is escaped
//! by construction (askama escapes every `{{ }}` of an `.html` template), and
//! every page carries a strict Content-Security-Policy: no script at all,
//! one stylesheet served by us, nothing from elsewhere (the service may run
//! without internet access). Errors on these paths are HTML pages too.

mod model;

use std::convert::Infallible;
use std::sync::Arc;

use askama::Template;
use serde::Deserialize;
use warp::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, REFERRER_POLICY, RETRY_AFTER,
    WWW_AUTHENTICATE, X_FRAME_OPTIONS,
};
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::AppState;
use super::api::{SearchParams, sales_user};
use super::error::ApiError;
use crate::store::view::Found;
use model::{ErrorPage, LeadPage, SearchPage};

/// No script, no inline style, nothing from another origin, never framed.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
                   form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
/// The one stylesheet, compiled in so the binary is the whole deployment.
const STYLESHEET: &str = include_str!("../../templates/style.css");

/// `/leads/{id}`, `/leads`, and `/static/style.css`.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let pages = lead(state.clone()).or(search(state)).unify().map(protect);
    stylesheet().or(pages).unify()
}

/// GET /static/style.css
///
/// Public: it holds no data, and the login page of a browser may want it.
fn stylesheet() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("static" / "style.css")
        .and(warp::get())
        .map(|| {
            let mut response = STYLESHEET.into_response();
            let headers = response.headers_mut();
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/css; charset=utf-8"),
            );
            headers.insert(
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            );
            response
        })
}

/// The sales user's go-ahead, or the HTML error page to answer instead.
/// Never rejects, so a failed login on a page path is not turned into JSON.
fn signed_in(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Result<Arc<AppState>, Response>,), Error = Infallible> + Clone {
    sales_user(state)
        .map(Ok::<_, Response>)
        .or_else(|rejection: Rejection| async move {
            Ok::<_, Infallible>((Err(rejection_page(&rejection)),))
        })
}

/// The query string of `GET /leads/{id}`.
#[derive(Debug, Deserialize)]
struct LeadParams {
    /// The folded lead the visitor was sent here from.
    from: Option<String>,
}

/// GET /leads/{id}
///
/// The lead page. A folded lead's id answers `303 See Other` to its
/// survivor's page, which then says which lead was folded into it.
fn lead(state: Arc<AppState>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("leads" / String)
        .and(warp::get())
        .and(signed_in(state))
        .and(warp::query::<LeadParams>())
        .then(show_lead)
}

async fn show_lead(
    id: String,
    user: Result<Arc<AppState>, Response>,
    params: LeadParams,
) -> Response {
    let state = match user {
        Ok(state) => state,
        Err(page) => return page,
    };
    let Some(id) = id.parse::<i64>().ok().filter(|id| *id > 0) else {
        return error_page(&ApiError::NotFound);
    };
    let from = params.from.and_then(|f| f.parse::<i64>().ok());
    let read = state.db.lead_page(id, from).await;
    let (found, merged_from) = match read {
        Ok(read) => read,
        Err(e) => return error_page(&ApiError::from(e)),
    };
    match found {
        Found::Lead(lead) => render(StatusCode::OK, &LeadPage::new(&lead, merged_from)),
        Found::MergedInto(survivor) => {
            let mut response = StatusCode::SEE_OTHER.into_response();
            let location = format!("/leads/{survivor}?from={id}");
            response.headers_mut().insert(
                LOCATION,
                HeaderValue::from_str(&location).expect("digits make a valid header"),
            );
            response
        }
        Found::Missing => error_page(&ApiError::NotFound),
    }
}

/// GET /leads?q=…&cursor=…
///
/// Search by name, email or phone, best matches first; the newest leads
/// when `q` is empty. Twenty a page, with a link to the next.
fn search(state: Arc<AppState>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("leads")
        .and(warp::get())
        .and(signed_in(state))
        .and(warp::query::<SearchParams>())
        .then(show_search)
}

async fn show_search(user: Result<Arc<AppState>, Response>, params: SearchParams) -> Response {
    let state = match user {
        Ok(state) => state,
        Err(page) => return page,
    };
    let q = params.q.clone().unwrap_or_default();
    let query = match params.query() {
        Ok(query) => query,
        Err(rejection) => return rejection_page(&rejection),
    };
    let region = state.config().merge.default_region;
    let found = state.db.search_cards(query, region).await;
    match found {
        Ok((rows, next)) => render(
            StatusCode::OK,
            &SearchPage::new(q.trim(), &rows, next.map(|n| n.to_string())),
        ),
        Err(e) => error_page(&ApiError::from(e)),
    }
}

/// Renders a page; a template failure is a bug, logged, and a bare 500.
fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => warp::reply::with_status(warp::reply::html(html), status).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "page failed to render");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The HTML page for a rejection of a page request.
fn rejection_page(rejection: &Rejection) -> Response {
    match rejection.find::<ApiError>() {
        Some(e) => error_page(e),
        None if rejection.find::<warp::reject::InvalidQuery>().is_some() => {
            error_page(&ApiError::BadRequest("malformed query string".into()))
        }
        None => {
            tracing::error!(?rejection, "unhandled rejection on a page");
            error_page(&ApiError::Internal)
        }
    }
}

/// The HTML page for an error, with the headers the JSON error would carry.
fn error_page(error: &ApiError) -> Response {
    let status = error.status();
    let mut response = render(status, &ErrorPage::new(status, error));
    let headers = response.headers_mut();
    match error {
        ApiError::Unauthorized { .. } => {
            headers.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="crm-responder", charset="UTF-8""#),
            );
        }
        ApiError::Unavailable => {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("5"));
        }
        _ => {}
    }
    response
}

/// Adds the headers every page (customer data, or an error about it) carries.
fn protect(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DbError;

    #[test]
    fn a_storage_fault_is_a_503_page_and_a_missing_login_a_challenge() {
        let fault = ApiError::from(DbError::Unavailable("database is locked".into()));
        let response = error_page(&fault);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "5");
        assert!(
            response.headers()[CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let response = error_page(&ApiError::Unauthorized { challenge: true });
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(
            response.headers()[WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Basic realm=")
        );
    }
}
