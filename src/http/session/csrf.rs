//! CSRF: whether a form (or an API change by session) comes from our own
//! pages. The session's token must come back in the form's `csrf` field,
//! and an `Origin` must name this service: `server.public_url`'s origin, or
//! the host the request was sent to (a browser on an internal address).
//! `Origin: null` (sent by privacy settings, sandboxed frames, and any site
//! that asks for it) is another site.

use super::PageUser;
use crate::config::Config;
use crate::http::auth::secret_eq;
use crate::http::error::ApiError;
use crate::staff::Via;

/// Whether a form of `user` may change something: 403 when the session's
/// CSRF token is missing or wrong, or when `Origin` names another site than
/// `server.public_url` or the request's own host. HTTP Basic has no session
/// and so no token: its forms pass on a missing or same-origin `Origin`
/// (browsers send one with every cross-site POST).
pub fn check_form(
    user: &PageUser,
    form_csrf: Option<&str>,
    origin: Option<&str>,
    config: &Config,
) -> Result<(), ApiError> {
    if let Some(origin) = origin
        && !same_origin(origin, config, user.host.as_deref())
    {
        return Err(ApiError::Forbidden(
            "this form was sent from another site".into(),
        ));
    }
    match user.staff.via {
        Via::Session => match form_csrf {
            Some(given) if !user.csrf.is_empty() && secret_eq(given.as_bytes(), user.csrf.as_bytes()) => {
                Ok(())
            }
            _ => Err(ApiError::Forbidden(
                "the form's security token is missing or out of date: reload the page and try again"
                    .into(),
            )),
        },
        Via::Basic | Via::Token => Ok(()),
    }
}

/// Whether an `Origin` header names this service: `server.public_url`'s
/// origin, or the host the request was sent to.
pub fn same_origin(origin: &str, config: &Config, host: Option<&str>) -> bool {
    let origin = origin.trim().to_ascii_lowercase();
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let authority = without_default_port(scheme, authority);
    let public = config.server.public_url.to_ascii_lowercase();
    if let Some((p_scheme, rest)) = public.split_once("://") {
        let p_authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if p_scheme == scheme && without_default_port(p_scheme, p_authority) == authority {
            return true;
        }
    }
    host.is_some_and(|host| {
        let host = host.trim().to_ascii_lowercase();
        host == authority || without_default_port(scheme, &host) == authority
    })
}

fn without_default_port<'a>(scheme: &str, authority: &'a str) -> &'a str {
    let default = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return authority,
    };
    authority.strip_suffix(default).unwrap_or(authority)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::session::tests::config;
    use crate::staff::{Role, Staff};
    use warp::http::StatusCode;

    fn user(via: Via) -> PageUser {
        PageUser {
            staff: Staff {
                name: "ann".into(),
                role: Role::Sales,
                via,
            },
            csrf: if via == Via::Session {
                "tok".into()
            } else {
                String::new()
            },
            host: Some("10.0.0.5:8080".into()),
            client: None,
        }
    }

    #[test]
    fn origins_of_this_service_are_same_origin_and_others_are_not() {
        let c = config("https://crm.example.com");
        let host = Some("10.0.0.5:8080");
        assert!(same_origin("https://crm.example.com", &c, host));
        assert!(same_origin("https://CRM.example.com:443", &c, host));
        assert!(same_origin("http://10.0.0.5:8080", &c, host));
        assert!(!same_origin("http://crm.example.com", &c, host));
        assert!(!same_origin("https://crm.example.com.evil.test", &c, host));
        assert!(!same_origin("https://evil.test", &c, host));
        assert!(!same_origin("null", &c, host));
        assert!(!same_origin("http://10.0.0.5:8080", &c, None));
    }

    #[test]
    fn forms_need_the_session_token_and_no_foreign_origin() {
        let c = config("http://crm.test");
        let session = user(Via::Session);
        assert!(check_form(&session, Some("tok"), None, &c).is_ok());
        assert!(check_form(&session, Some("tok"), Some("http://crm.test"), &c).is_ok());
        for (csrf, origin) in [
            (None, None),
            (Some(""), None),
            (Some("other"), Some("http://crm.test")),
            (Some("tok"), Some("http://evil.test")),
        ] {
            let refused = check_form(&session, csrf, origin, &c).unwrap_err();
            assert_eq!(
                refused.status(),
                StatusCode::FORBIDDEN,
                "{csrf:?} {origin:?}"
            );
        }
        let basic = user(Via::Basic);
        assert!(check_form(&basic, None, None, &c).is_ok());
        assert!(check_form(&basic, None, Some("http://10.0.0.5:8080"), &c).is_ok());
        assert!(check_form(&basic, None, Some("http://evil.test"), &c).is_err());
    }
}
