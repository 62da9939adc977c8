//! The secrets of sessions and tokens, and the session cookie: random ids,
//! stored only as their SHA-256, and the `crm_session` cookie that carries
//! a session's id (`HttpOnly`, `SameSite=Lax`, `Secure` under https).

use base64::Engine;
use cookie::{Cookie, SameSite};
use sha2::{Digest, Sha256};
use warp::http::HeaderValue;

use crate::config::Config;
use crate::http::error::ApiError;

/// The session cookie's name.
pub const COOKIE: &str = "crm_session";
/// A fresh secret: 32 random bytes, base64url without padding.
pub fn new_secret() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        tracing::error!(error = %e, "no randomness for a secret");
        ApiError::Internal
    })?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// How a secret (a session id, an API token) is stored: its SHA-256, in hex.
pub fn secret_hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The session id a `Cookie` header carries, if any.
pub fn session_cookie(header: Option<&str>) -> Option<String> {
    Cookie::split_parse(header?)
        .filter_map(Result::ok)
        .find(|c| c.name() == COOKIE)
        .map(|c| c.value().to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// The `Set-Cookie` that starts a session (`id`) or, with `None`, ends it.
pub fn session_cookie_header(config: &Config, id: Option<&str>) -> HeaderValue {
    let lifetime = match id {
        Some(_) => config.sessions.absolute().as_secs(),
        None => 0,
    };
    let cookie = Cookie::build((COOKIE, id.unwrap_or_default().to_owned()))
        .http_only(true)
        .same_site(SameSite::Lax)
        .path("/")
        .secure(config.server.public_url.starts_with("https://"))
        .max_age(cookie::time::Duration::seconds(
            i64::try_from(lifetime).unwrap_or(i64::MAX),
        ))
        .build();
    HeaderValue::from_str(&cookie.encoded().to_string())
        .expect("a cookie of base64url text is a valid header")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::session::encode_component;
    use crate::http::session::tests::config;

    #[test]
    fn secrets_are_random_and_stored_as_their_hash() {
        let a = new_secret().unwrap();
        assert_eq!(a.len(), 43);
        assert_ne!(a, new_secret().unwrap());
        assert_eq!(
            secret_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let header = format!("theme=dark; {COOKIE}={a}; other=1");
        assert_eq!(session_cookie(Some(&header)), Some(a));
        assert_eq!(session_cookie(Some("theme=dark")), None);
        assert_eq!(
            encode_component("/leads?q=a b&x=1"),
            "/leads%3Fq%3Da%20b%26x%3D1"
        );
    }

    #[test]
    fn the_cookie_is_http_only_lax_and_secure_under_https() {
        let plain = session_cookie_header(&config("http://crm.test"), Some("id"));
        let plain = plain.to_str().unwrap();
        assert!(plain.starts_with("crm_session=id"), "{plain}");
        for part in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=259200"] {
            assert!(plain.contains(part), "{plain}");
        }
        assert!(!plain.contains("Secure"), "{plain}");
        let secure = session_cookie_header(&config("https://crm.test"), Some("id"));
        assert!(secure.to_str().unwrap().contains("Secure"));
        let gone = session_cookie_header(&config("http://crm.test"), None);
        assert!(gone.to_str().unwrap().contains("Max-Age=0"));
    }
}
