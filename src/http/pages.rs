//! The lead pages for the sales team: `GET /leads/{id}` (where every
//! `crm_link` points) and `GET /leads?q=…`, server-rendered HTML for a
//! signed-in user (a session from `/login`, or HTTP Basic as the JSON API
//! takes it: see `session.rs`), reading the same truth as the API
//! (`store::view`, `store::search`).
//!
//! Everything on a page was typed by a visitor somewhere, so it is escaped
//! by construction (askama escapes every `{{ }}` of an `.html` template), and
//! every page carries a strict Content-Security-Policy: no script at all,
//! one stylesheet served by us, nothing from elsewhere (the service may run
//! without internet access). Errors on these paths are HTML pages too.

mod duplicates;
mod forms;
mod list;
pub(crate) mod model;
mod outbound;

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
use super::api::SearchParams;
use super::error::ApiError;
use super::session::{PageUser, page_staff};
use crate::audit::{Entry, action};
use crate::staff::Role;
use crate::store::view::Found;
use model::{ErrorPage, LeadPage, Problem, Work};

/// No script, no inline style, nothing from another origin, never framed.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
                   form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
/// The one stylesheet, compiled in so the binary is the whole deployment.
const STYLESHEET: &str = include_str!("../../templates/style.css");

/// `/leads/{id}`, `/leads`, `/duplicates`, and `/static/style.css`.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let pages = lead(state.clone())
        .or(search(state.clone()))
        .unify()
        .or(duplicates::routes(state.clone()))
        .unify()
        .or(forms::routes(state.clone()))
        .unify()
        .or(outbound::routes(state))
        .unify()
        .map(protect);
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
        .and(page_staff(state))
        .and(warp::query::<LeadParams>())
        .then(show_lead)
}

async fn show_lead(
    id: String,
    user: Result<(Arc<AppState>, PageUser), Response>,
    params: LeadParams,
) -> Response {
    let (state, user) = match user {
        Ok(user) => user,
        Err(page) => return page,
    };
    let Some(id) = id.parse::<i64>().ok().filter(|id| *id > 0) else {
        return error_page(&ApiError::NotFound);
    };
    let from = params.from.and_then(|f| f.parse::<i64>().ok());
    lead_page(&state, &user, id, from, StatusCode::OK, None).await
}

/// The lead page of `id` for `user`, answered with `status`; `problem`
/// says why their last form was refused (the page then shows the lead as
/// it is now, so the forms hold the current values).
async fn lead_page(
    state: &AppState,
    user: &PageUser,
    id: i64,
    from: Option<i64>,
    status: StatusCode,
    problem: Option<Problem>,
) -> Response {
    let read = state.db.lead_page(id, from).await;
    let (found, merged_from) = match read {
        Ok(read) => read,
        Err(e) => return error_page(&ApiError::from(e)),
    };
    let absorbed = match &found {
        Found::Lead(_) => match state.db.absorbed_leads(id).await {
            Ok(absorbed) => absorbed,
            Err(e) => return error_page(&ApiError::from(e)),
        },
        _ => Vec::new(),
    };
    match found {
        Found::Lead(lead) => {
            let entry = Entry::by(
                &user.staff,
                action::LEAD_VIEW,
                Some(format!("lead {}", lead.id)),
                user.client,
            );
            if let Err(e) = state.db.audit(entry).await {
                return error_page(&ApiError::from(e));
            }
            let config = state.config();
            // The forms only for those who may use them; the POST handlers
            // check the role again, whatever the page showed.
            let work = Role::can_work(user.staff.role).then(|| Work {
                csrf: user.csrf.clone(),
                me: user.staff.name.clone(),
                statuses: config.pipeline.statuses.clone(),
                users: config
                    .sales
                    .users
                    .iter()
                    .filter(|u| u.role.can_work())
                    .map(|u| u.name.clone())
                    .collect(),
            });
            let admin = Role::can_admin(user.staff.role).then(|| user.csrf.clone());
            let mut page = LeadPage::new(&lead, merged_from)
                .signed_in(user)
                .working(work)
                .administering(admin)
                .absorbed(absorbed);
            if let Some(problem) = problem {
                page = page.refused(problem);
            }
            render(status, &page)
        }
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

/// GET /leads?q=…&status=…&owner=…&platform=…&created_since=…&cursor=…
///
/// Search by name, email or phone, best matches first; the newest leads
/// when `q` is empty; narrowed by the filters (`list.rs`). Twenty a page,
/// with a link to the next.
fn search(state: Arc<AppState>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("leads")
        .and(warp::get())
        .and(page_staff(state))
        .and(warp::query::<SearchParams>())
        .then(list::show)
}

/// Renders a page; a template failure is a bug, logged, and a bare 500.
pub(crate) fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => warp::reply::with_status(warp::reply::html(html), status).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "page failed to render");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The HTML page for a rejection of a page request.
pub(crate) fn rejection_page(rejection: &Rejection) -> Response {
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
pub(crate) fn error_page(error: &ApiError) -> Response {
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
pub(crate) fn protect(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // No referrer (a lead's URL, a search for an email) ever goes to another
    // site; our own forms still carry their real `Origin` (under
    // `no-referrer` browsers send `Origin: null`, which the CSRF check must
    // refuse, as another site can send it too).
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
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
