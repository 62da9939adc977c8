//! Credentials: webhook secrets compared in constant time, and the
//! passwords of `[[sales.users]]` (HTTP Basic and the sign-in form) against
//! their argon2 hashes. A verified credential is remembered briefly (by its
//! SHA-256) so that Basic clients do not pay a slow hash per request; failed
//! Basic logins are counted per client and refused (429) past a limit, and
//! failed sign-ins are slowed per name and per address (`slowdown.rs`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::PasswordVerifier;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::SalesUser;

/// How long a verified credential is remembered.
const CACHE_TTL: Duration = Duration::from_secs(300);
/// Most remembered credentials.
const CACHE_MAX: usize = 1024;
/// Failed logins allowed per client within [`FAIL_WINDOW`].
const MAX_FAILURES: u32 = 10;
/// The window failed logins are counted in.
const FAIL_WINDOW: Duration = Duration::from_secs(60);
/// Most clients whose failures are remembered; past it, clients that are
/// not throttled are forgotten first, so memory stays bounded.
const FAIL_CLIENTS_MAX: usize = 10_000;

/// Compares two secrets in constant time (lengths are hidden by hashing).
pub fn secret_eq(given: &[u8], expected: &[u8]) -> bool {
    let a = Sha256::digest(given);
    let b = Sha256::digest(expected);
    a.ct_eq(&b).into()
}

pub use crate::password::{hash_password, parse_hash};

/// Splits an `Authorization: Basic …` header into user and password.
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let encoded = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Whose failures count together: an IPv4 address, or the /64 network of an
/// IPv6 address (one host usually holds a whole /64, and could otherwise
/// take a fresh address for every guess).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// Remembers verified credentials and failed attempts.
#[derive(Default)]
pub struct Guard {
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    /// Failed sign-ins on the form, per name and per address.
    pub sign_ins: super::slowdown::Slowdown,
}

/// The verdict on a login.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Credentials are good; the user's name.
    Allowed(String),
    /// Credentials are bad or missing.
    Denied,
    /// This client failed too often recently.
    Throttled,
}

impl Guard {
    /// Whether this client is currently refused for failing too often.
    pub fn throttled(&self, client: Option<IpAddr>) -> bool {
        let Some(ip) = client.map(client_key) else {
            return false;
        };
        let failures = self.failures.lock().unwrap();
        failures
            .get(&ip)
            .is_some_and(|(n, since)| *n >= MAX_FAILURES && since.elapsed() < FAIL_WINDOW)
    }

    /// Counts a failed credential (a wrong API token, say) against the client.
    pub fn note_failure(&self, client: Option<IpAddr>) {
        self.fail(client);
    }

    fn fail(&self, client: Option<IpAddr>) {
        let Some(ip) = client.map(client_key) else {
            return;
        };
        let mut failures = self.failures.lock().unwrap();
        if failures.len() >= FAIL_CLIENTS_MAX {
            failures.retain(|_, (_, since)| since.elapsed() < FAIL_WINDOW);
        }
        if failures.len() >= FAIL_CLIENTS_MAX {
            failures.retain(|_, (n, _)| *n >= MAX_FAILURES);
        }
        let entry = failures.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAIL_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    /// Checks an `Authorization` header against the users. Slow (argon2) on
    /// a first sight: call from a blocking thread.
    pub fn check(
        &self,
        users: &[SalesUser],
        header: Option<&str>,
        client: Option<IpAddr>,
    ) -> Verdict {
        if self.throttled(client) {
            return Verdict::Throttled;
        }
        let Some((name, password)) = header.and_then(parse_basic) else {
            return Verdict::Denied;
        };
        if self.verify(users, &name, &password).is_none() {
            self.fail(client);
            return Verdict::Denied;
        }
        Verdict::Allowed(name)
    }

    /// The user `name` when `password` is theirs. Slow (argon2) on a first
    /// sight: call from a blocking thread. Counts nothing: callers decide
    /// what a failure costs.
    pub fn verify<'u>(
        &self,
        users: &'u [SalesUser],
        name: &str,
        password: &str,
    ) -> Option<&'u SalesUser> {
        let Some(user) = users.iter().find(|u| u.name == name) else {
            // Spend the same time as a real check so names cannot be probed.
            let _ = hash_password(password);
            return None;
        };
        let key: [u8; 32] = Sha256::new()
            .chain_update(user.password_hash.expose())
            .chain_update([0])
            .chain_update(name)
            .chain_update([0])
            .chain_update(password)
            .finalize()
            .into();
        {
            let verified = self.verified.lock().unwrap();
            if verified.get(&key).is_some_and(|t| t.elapsed() < CACHE_TTL) {
                return Some(user);
            }
        }
        let ok = parse_hash(user.password_hash.expose())
            .map(|hash| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &hash)
                    .is_ok()
            })
            .unwrap_or(false);
        if !ok {
            return None;
        }
        let mut verified = self.verified.lock().unwrap();
        if verified.len() >= CACHE_MAX {
            verified.retain(|_, t| t.elapsed() < CACHE_TTL);
            if verified.len() >= CACHE_MAX {
                verified.clear();
            }
        }
        verified.insert(key, Instant::now());
        Some(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn hashes_verify_and_cache() {
        let hash = hash_password("s3cret pass").unwrap();
        let users = vec![SalesUser {
            name: "ann".into(),
            password_hash: Secret::new(hash),
            role: Default::default(),
        }];
        let guard = Guard::default();
        let header = |u: &str, p: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        };
        let ip = Some("127.0.0.9".parse().unwrap());
        assert_eq!(
            guard.check(&users, Some(&header("ann", "s3cret pass")), ip),
            Verdict::Allowed("ann".into())
        );
        assert_eq!(
            guard.check(&users, Some(&header("ann", "s3cret pass")), ip),
            Verdict::Allowed("ann".into())
        );
        assert_eq!(
            guard.check(&users, Some(&header("ann", "wrong")), ip),
            Verdict::Denied
        );
        assert_eq!(guard.check(&users, Some("Basic !!!"), ip), Verdict::Denied);
        assert_eq!(guard.check(&users, None, ip), Verdict::Denied);
    }

    #[test]
    fn repeated_failures_are_throttled_per_client() {
        let users = vec![SalesUser {
            name: "ann".into(),
            password_hash: Secret::new(hash_password("right").unwrap()),
            role: Default::default(),
        }];
        let guard = Guard::default();
        let bad = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("ann:wrong")
        );
        let ip = Some("10.9.9.9".parse().unwrap());
        for _ in 0..MAX_FAILURES {
            assert_eq!(guard.check(&users, Some(&bad), ip), Verdict::Denied);
        }
        assert_eq!(guard.check(&users, Some(&bad), ip), Verdict::Throttled);
        let other = Some("10.9.9.10".parse().unwrap());
        assert_eq!(guard.check(&users, Some(&bad), other), Verdict::Denied);
    }

    #[test]
    fn an_ipv6_network_is_one_client() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(other));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(client_key(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());

        let users = vec![SalesUser {
            name: "ann".into(),
            password_hash: Secret::new(hash_password("right").unwrap()),
            role: Default::default(),
        }];
        let guard = Guard::default();
        let bad = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("ann:wrong")
        );
        for i in 0..MAX_FAILURES {
            let ip: IpAddr = format!("2001:db8:1:2::{i:x}").parse().unwrap();
            assert_eq!(guard.check(&users, Some(&bad), Some(ip)), Verdict::Denied);
        }
        assert!(guard.throttled(Some(b)));
        assert!(!guard.throttled(Some(other)));
    }

    #[test]
    fn secrets_compare_by_value() {
        assert!(secret_eq(b"abc", b"abc"));
        assert!(!secret_eq(b"abc", b"abd"));
        assert!(!secret_eq(b"abc", b"abcd"));
    }
}
