//! The one error type of the HTTP layer. Every error body is
//! `{"result":"error","error":"<what was wrong>"}`.

use std::convert::Infallible;

use warp::http::StatusCode;
use warp::reply::{Reply, Response};
use warp::{Rejection, reject};

use crate::store::DbError;

/// What went wrong with a request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not a JSON object of a known envelope, or a parameter is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 401: bad or missing credentials.
    #[error("bad or missing credentials")]
    Unauthorized {
        /// Whether to send a Basic challenge (pages and API).
        challenge: bool,
    },
    /// 403: authenticated but not allowed: the role or token scope does not
    /// allow it, or a form came without its CSRF token or from another site.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// 404: unknown path, unknown lead, or a platform that is not enabled.
    #[error("not found")]
    NotFound,
    /// 405: the path exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: the change conflicts with the lead as it is: a value another
    /// lead owns (`lead`, linked in the body), or a field someone else
    /// changed meanwhile.
    #[error("{message}")]
    Conflict {
        /// What conflicts.
        message: String,
        /// The other lead, when the conflict is with one.
        lead: Option<i64>,
    },
    /// 409: the lead was merged into this one meanwhile (`merged_into` in
    /// the body, as a read of its id says).
    #[error("lead was merged into lead {0}")]
    MergedInto(i64),
    /// 412: `If-Match` names another version than the lead's (this one).
    #[error("the lead changed since that version; it is now version {version}")]
    PreconditionFailed {
        /// The lead's current version (also the answer's `ETag`).
        version: i64,
    },
    /// 413: the body is larger than `server.max_body_bytes`.
    #[error("body larger than {0} bytes")]
    TooLarge(u64),
    /// 408: the client took too long to send its request.
    #[error("request not received in time")]
    Timeout,
    /// 429: too many failed logins from this client.
    #[error("too many failed logins; try again later")]
    TooManyAttempts,
    /// 503: storage is temporarily unavailable; the sender should retry.
    #[error("storage temporarily unavailable, retry later")]
    Unavailable,
    /// 500: a bug. The cause is logged, not sent.
    #[error("internal error")]
    Internal,
}

impl reject::Reject for ApiError {}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(cause) => {
                tracing::warn!(%cause, "storage unavailable");
                ApiError::Unavailable
            }
            DbError::Internal(cause) => {
                tracing::error!(%cause, "storage error");
                ApiError::Internal
            }
        }
    }
}

impl From<crate::store::edits::EditError> for ApiError {
    fn from(e: crate::store::edits::EditError) -> Self {
        use crate::store::edits::EditError;
        match e {
            EditError::NotFound => ApiError::NotFound,
            EditError::MergedInto(survivor) => ApiError::MergedInto(survivor),
            EditError::Stale { version } => ApiError::PreconditionFailed { version },
            e @ EditError::Changed { .. } => ApiError::Conflict {
                message: e.to_string(),
                lead: None,
            },
            EditError::OwnedElsewhere { lead } => ApiError::Conflict {
                message: format!("that value belongs to lead {lead} (/leads/{lead})"),
                lead: Some(lead),
            },
            EditError::Invalid(message) => ApiError::BadRequest(message),
            EditError::Db(e) => e.into(),
        }
    }
}

impl From<crate::ingest::Refused> for ApiError {
    fn from(refused: crate::ingest::Refused) -> Self {
        match refused {
            crate::ingest::Refused::BadBody(reason) => ApiError::BadRequest(reason),
            crate::ingest::Refused::Storage(e) => e.into(),
        }
    }
}

impl ApiError {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } | ApiError::MergedInto(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Timeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooManyAttempts => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// As a rejection, for filters.
    pub fn reject(self) -> Rejection {
        reject::custom(self)
    }
}

impl Reply for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "result": "error", "error": self.to_string() });
        match &self {
            ApiError::Conflict {
                lead: Some(lead), ..
            } => {
                body["lead"] = (*lead).into();
                body["link"] = format!("/leads/{lead}").into();
            }
            ApiError::MergedInto(survivor) => {
                body["merged_into"] = (*survivor).into();
                body["link"] = format!("/leads/{survivor}").into();
            }
            ApiError::PreconditionFailed { version } => body["version"] = (*version).into(),
            _ => {}
        }
        let mut response =
            warp::reply::with_status(warp::reply::json(&body), self.status()).into_response();
        let headers = response.headers_mut();
        if let ApiError::Unauthorized { challenge: true } = self {
            headers.insert(
                "www-authenticate",
                warp::http::HeaderValue::from_static(
                    r#"Basic realm="crm-responder", charset="UTF-8""#,
                ),
            );
        }
        if let ApiError::PreconditionFailed { version } = self
            && let Ok(etag) = warp::http::HeaderValue::from_str(&format!("\"{version}\""))
        {
            headers.insert("etag", etag);
        }
        if let ApiError::Unavailable = self {
            headers.insert("retry-after", warp::http::HeaderValue::from_static("5"));
        }
        if let ApiError::TooManyAttempts = self {
            // The failure window (`auth::FAIL_WINDOW`) is a minute.
            headers.insert("retry-after", warp::http::HeaderValue::from_static("60"));
        }
        response
    }
}

/// Turns every rejection into a JSON error.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let error = if let Some(e) = rejection.find::<ApiError>() {
        clone(e)
    } else if rejection.is_not_found() {
        ApiError::NotFound
    } else if rejection.find::<reject::MethodNotAllowed>().is_some() {
        ApiError::MethodNotAllowed
    } else if rejection.find::<reject::PayloadTooLarge>().is_some() {
        ApiError::TooLarge(0)
    } else if let Some(e) = rejection.find::<reject::InvalidQuery>() {
        ApiError::BadRequest(e.to_string())
    } else if let Some(e) = rejection.find::<reject::InvalidHeader>() {
        ApiError::BadRequest(e.to_string())
    } else if let Some(e) = rejection.find::<reject::MissingHeader>() {
        ApiError::BadRequest(e.to_string())
    } else {
        tracing::error!(?rejection, "unhandled rejection");
        ApiError::Internal
    };
    Ok(error.into_response())
}

fn clone(e: &ApiError) -> ApiError {
    match e {
        ApiError::BadRequest(m) => ApiError::BadRequest(m.clone()),
        ApiError::Unauthorized { challenge } => ApiError::Unauthorized {
            challenge: *challenge,
        },
        ApiError::Forbidden(m) => ApiError::Forbidden(m.clone()),
        ApiError::NotFound => ApiError::NotFound,
        ApiError::MethodNotAllowed => ApiError::MethodNotAllowed,
        ApiError::Conflict { message, lead } => ApiError::Conflict {
            message: message.clone(),
            lead: *lead,
        },
        ApiError::MergedInto(survivor) => ApiError::MergedInto(*survivor),
        ApiError::PreconditionFailed { version } => {
            ApiError::PreconditionFailed { version: *version }
        }
        ApiError::TooLarge(n) => ApiError::TooLarge(*n),
        ApiError::Timeout => ApiError::Timeout,
        ApiError::TooManyAttempts => ApiError::TooManyAttempts,
        ApiError::Unavailable => ApiError::Unavailable,
        ApiError::Internal => ApiError::Internal,
    }
}
