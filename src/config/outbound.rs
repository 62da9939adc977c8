//! `[[outbound]]`: the HTTP endpoints that receive signed lead events.

use serde::{Deserialize, Serialize};

use super::{ConfigError, Secret, invalid};
use crate::outbound::{EventKind, signing_key};

/// One `[[outbound]]` table.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// The endpoint's name (letters, digits, `.`, `_`, `-`): how status,
    /// replay and metrics name it.
    pub name: String,
    /// Where events are POSTed (`http://` or `https://`).
    pub url: String,
    /// `whsec_` + base64 key: the Standard Webhooks signing secret.
    pub secret: Secret,
    /// The event types it receives.
    pub events: Vec<String>,
    /// How long a delivery is retried before it is marked failed.
    #[serde(default = "max_retry_hours")]
    pub max_retry_hours: f64,
    /// The first retry's delay; each next one doubles (with jitter), up to an hour.
    #[serde(default = "first_retry_ms")]
    pub first_retry_ms: u64,
    /// Longest wait for the endpoint's answer to one attempt.
    #[serde(default = "timeout_ms")]
    pub timeout_ms: u64,
}

fn max_retry_hours() -> f64 {
    72.0
}
fn first_retry_ms() -> u64 {
    5_000
}
fn timeout_ms() -> u64 {
    10_000
}

impl OutboundConfig {
    /// The signing key (checked when the config was loaded).
    pub fn key(&self) -> Vec<u8> {
        signing_key(self.secret.expose()).unwrap_or_default()
    }

    /// The event types it receives, parsed.
    pub fn kinds(&self) -> Vec<EventKind> {
        self.events
            .iter()
            .filter_map(|e| EventKind::parse(e))
            .collect()
    }
}

/// Checks every `[[outbound]]` table, naming the key at fault.
pub(super) fn validate(endpoints: &[OutboundConfig]) -> Result<(), ConfigError> {
    for (i, e) in endpoints.iter().enumerate() {
        let key = |k: &str| format!("outbound[{i}].{k}");
        if e.name.is_empty()
            || e.name.len() > 64
            || !e
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(invalid(
                &key("name"),
                "must be 1 to 64 letters, digits, '.', '_' or '-'",
            ));
        }
        if endpoints[..i].iter().any(|o| o.name == e.name) {
            return Err(invalid(
                &key("name"),
                format!("{:?} is listed twice", e.name),
            ));
        }
        let url = e.url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://"))
            || url
                .parse::<hyper::Uri>()
                .map_or(true, |u| u.host().is_none_or(str::is_empty))
        {
            return Err(invalid(
                &key("url"),
                "must be an absolute http:// or https:// URL",
            ));
        }
        signing_key(e.secret.expose()).map_err(|why| invalid(&key("secret"), why))?;
        if e.events.is_empty() {
            return Err(invalid(&key("events"), "must list at least one event type"));
        }
        for (j, name) in e.events.iter().enumerate() {
            if EventKind::parse(name).is_none() {
                let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                return Err(invalid(
                    &format!("outbound[{i}].events[{j}]"),
                    format!("{name:?} is not an event type; known: {}", known.join(", ")),
                ));
            }
            if e.events[..j].contains(name) {
                return Err(invalid(
                    &format!("outbound[{i}].events[{j}]"),
                    format!("{name:?} is listed twice"),
                ));
            }
        }
        if !(e.max_retry_hours > 0.0 && e.max_retry_hours <= 24.0 * 30.0) {
            return Err(invalid(
                &key("max_retry_hours"),
                "must be above 0 and at most 720 (30 days)",
            ));
        }
        if !(10..=3_600_000).contains(&e.first_retry_ms) {
            return Err(invalid(
                &key("first_retry_ms"),
                "must be between 10 and 3600000",
            ));
        }
        if !(100..=120_000).contains(&e.timeout_ms) {
            return Err(invalid(
                &key("timeout_ms"),
                "must be between 100 and 120000",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    /// The shipped config with `outbound` appended.
    fn with(outbound: &str) -> Result<Config, String> {
        let text = include_str!("../../config.toml").to_owned() + outbound;
        Config::parse(&text).map_err(|e| e.to_string())
    }

    const GOOD: &str = r#"
[[outbound]]
name = "bridge"
url = "https://bridge.example.com/crm"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
events = ["lead.created", "note.added"]
"#;

    #[test]
    fn an_endpoint_with_defaults_is_read_and_its_secret_redacted() {
        let config = with(GOOD).unwrap();
        let endpoint = &config.outbound[0];
        assert_eq!(endpoint.max_retry_hours, 72.0);
        assert_eq!(endpoint.kinds().len(), 2);
        assert_eq!(endpoint.key().len(), 24);
        let shown = config.redacted();
        assert!(
            shown.contains("[[outbound]]") && !shown.contains("MfKQ9r8G"),
            "{shown}"
        );
    }

    #[test]
    fn bad_endpoints_are_refused_naming_the_key() {
        for (text, key) in [
            (
                GOOD.replace("note.added", "lead.deleted"),
                "outbound[0].events[1]",
            ),
            (
                GOOD.replace("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "hunter2hunter2"),
                "outbound[0].secret",
            ),
            (
                GOOD.replace("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_c2hvcnQ="),
                "outbound[0].secret",
            ),
            (
                GOOD.replace("https://bridge.example.com/crm", "bridge.example.com"),
                "outbound[0].url",
            ),
            (format!("{GOOD}{GOOD}"), "outbound[1].name"),
            (
                GOOD.replace("events = [", "max_retry_hours = 0\nevents = ["),
                "outbound[0].max_retry_hours",
            ),
            (
                GOOD.replace("events = [\"lead.created\", \"note.added\"]", "events = []"),
                "outbound[0].events",
            ),
        ] {
            let error = with(&text).unwrap_err();
            assert!(error.contains(key), "{key}: {error}");
        }
        let unknown = with(&GOOD.replace("events = [", "retries = 3\nevents = [")).unwrap_err();
        assert!(unknown.contains("retries"), "{unknown}");
    }

    #[test]
    fn the_commented_example_secret_counts_as_shipped() {
        let example = GOOD.replace(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_Y2hhbmdlLW1lLWV4YW1wbGUtb3V0Ym91bmQtc2VjcmV0",
        );
        let config = with(&example).unwrap();
        assert!(
            config
                .shipped_secrets()
                .contains(&"outbound[0].secret".to_owned())
        );
        assert!(
            include_str!("../../config.toml")
                .contains("# secret = \"whsec_Y2hhbmdlLW1lLWV4YW1wbGUtb3V0Ym91bmQtc2VjcmV0\"")
        );
    }
}
