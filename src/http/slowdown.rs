//! Failed sign-ins on the form are slowed per name and per address.
//!
//! Each failure doubles the time the next attempt on the same name, or from
//! the same address, must wait before its password is even checked (a
//! quarter second after the first failure, up to eight seconds). Attempts
//! take turns: each one reserves the next slot, so that firing many guesses
//! at once does not get them checked at once. An attempt that would wait
//! longer than [`MAX_WAIT`] is refused at once, saying when to come back.
//! A name slowed down by someone else's guesses is slowed for its owner
//! too, by seconds, never locked out; a success clears the name.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::auth::client_key;

/// The wait after the first failure; each further failure doubles it.
const BASE_DELAY: Duration = Duration::from_millis(250);
/// The longest wait one failure adds.
const MAX_DELAY: Duration = Duration::from_secs(8);
/// The longest an attempt is held; past it, it is refused.
const MAX_WAIT: Duration = Duration::from_secs(10);
/// Failures older than this are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Most names and addresses remembered; past it, the least failed are
/// forgotten first, so memory stays bounded whatever names are tried.
const MAX_KEYS: usize = 10_000;

/// Whose failures count together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// A user name, as typed (lowercased).
    Name(String),
    /// An address, or the /64 network of an IPv6 address.
    Addr(IpAddr),
}

#[derive(Debug)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    /// When the next attempt on this key may be checked.
    next_free: Instant,
}

/// The failed sign-ins remembered.
#[derive(Default)]
pub struct Slowdown {
    entries: Mutex<HashMap<Key, Entry>>,
}

fn keys(name: &str, client: Option<IpAddr>) -> Vec<Key> {
    let mut keys = vec![Key::Name(name.trim().to_lowercase())];
    keys.extend(client.map(|ip| Key::Addr(client_key(ip))));
    keys
}

/// The wait after `failures` failures in a row.
fn delay(failures: u32) -> Duration {
    match failures {
        0 => Duration::ZERO,
        n => BASE_DELAY
            .saturating_mul(1 << (n - 1).min(16))
            .min(MAX_DELAY),
    }
}

impl Slowdown {
    /// How long this attempt must wait before its password is checked, or,
    /// when that is longer than [`MAX_WAIT`], `Err` with when to retry.
    pub fn admit(&self, name: &str, client: Option<IpAddr>) -> Result<Duration, Duration> {
        let now = Instant::now();
        let keys = keys(name, client);
        let mut entries = self.entries.lock().unwrap();
        let mut wait = Duration::ZERO;
        for key in &keys {
            if entries
                .get(key)
                .is_some_and(|e| now.duration_since(e.last_failure) > FORGET_AFTER)
            {
                entries.remove(key);
            }
            if let Some(entry) = entries.get(key) {
                wait = wait.max(entry.next_free.saturating_duration_since(now));
            }
        }
        if wait > MAX_WAIT {
            return Err(wait);
        }
        for key in &keys {
            if let Some(entry) = entries.get_mut(key) {
                entry.next_free = now + wait + delay(entry.failures);
            }
        }
        Ok(wait)
    }

    /// Counts a failed attempt against the name and the address.
    pub fn failed(&self, name: &str, client: Option<IpAddr>) {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap();
        if entries.len() >= MAX_KEYS {
            entries.retain(|_, e| now.duration_since(e.last_failure) < FORGET_AFTER);
        }
        if entries.len() >= MAX_KEYS {
            entries.retain(|_, e| e.failures > 2);
        }
        for key in keys(name, client) {
            let entry = entries.entry(key).or_insert(Entry {
                failures: 0,
                last_failure: now,
                next_free: now,
            });
            entry.failures = entry.failures.saturating_add(1);
            entry.last_failure = now;
            entry.next_free = entry.next_free.max(now + delay(entry.failures));
        }
    }

    /// Forgets the name's failures: its owner got in.
    pub fn succeeded(&self, name: &str) {
        let key = Key::Name(name.trim().to_lowercase());
        self.entries.lock().unwrap().remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_doubles_the_wait_up_to_a_cap() {
        assert_eq!(delay(0), Duration::ZERO);
        assert_eq!(delay(1), Duration::from_millis(250));
        assert_eq!(delay(3), Duration::from_secs(1));
        assert_eq!(delay(6), MAX_DELAY);
        assert_eq!(delay(u32::MAX), MAX_DELAY);
    }

    #[test]
    fn failures_slow_the_name_and_the_address_not_others() {
        let slow = Slowdown::default();
        let here: Option<IpAddr> = Some("10.1.1.1".parse().unwrap());
        let there: Option<IpAddr> = Some("10.2.2.2".parse().unwrap());
        assert_eq!(slow.admit("ann", here), Ok(Duration::ZERO));
        for _ in 0..3 {
            slow.failed("ann", here);
        }
        let waits = |name, client| slow.admit(name, client).unwrap();
        // The name from elsewhere, and another name from here, both wait.
        assert!(waits("ANN", there) > Duration::from_millis(500));
        assert!(waits("bob", here) > Duration::from_millis(500));
        // Neither the name nor the address: no wait.
        assert_eq!(waits("bob", there), Duration::ZERO);
        // Attempts at once take turns: each waits longer than the last.
        let first = waits("ann", there);
        let second = waits("ann", there);
        assert!(second > first, "{first:?} then {second:?}");
        // Far too many at once are refused, saying when to come back.
        let refused = (0..20).find_map(|_| slow.admit("ann", None).err());
        assert!(refused.is_some_and(|retry| retry > MAX_WAIT));
        slow.succeeded("Ann");
        assert_eq!(waits("ann", None), Duration::ZERO);
    }
}
