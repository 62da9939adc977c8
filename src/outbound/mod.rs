//! Outbound webhooks: what happens to leads, forwarded to the HTTP
//! endpoints of `[[outbound]]`, signed as Standard Webhooks
//! (<https://www.standardwebhooks.com>), at least once, in order per lead.
//!
//! Events are written by the change that causes them, in its transaction
//! (the outbox, [`crate::store::outbox`]); the [`worker`] sends them, one
//! task per endpoint, so that a slow or dead endpoint holds up only itself
//! and never a platform's answer.

pub mod worker;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// What happened to a lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A delivery created a lead.
    LeadCreated,
    /// A delivery or staff changed an existing lead.
    LeadUpdated,
    /// Two leads were merged (the survivor is `data.lead`).
    LeadMerged,
    /// A merge was undone.
    LeadUnmerged,
    /// A platform closed a chat of the lead (`data.conversation`).
    ConversationClosed,
    /// A note was added to the lead: an offline message, a ticket, a staff
    /// note (`data.note`).
    NoteAdded,
    /// The lead was erased (`data.lead.id` only).
    LeadErased,
}

impl EventKind {
    /// Every kind, in the order the bit mask uses.
    pub const ALL: [EventKind; 7] = [
        EventKind::LeadCreated,
        EventKind::LeadUpdated,
        EventKind::LeadMerged,
        EventKind::LeadUnmerged,
        EventKind::ConversationClosed,
        EventKind::NoteAdded,
        EventKind::LeadErased,
    ];

    /// The `type` of the body, as `events` in `[[outbound]]` lists it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::LeadCreated => "lead.created",
            EventKind::LeadUpdated => "lead.updated",
            EventKind::LeadMerged => "lead.merged",
            EventKind::LeadUnmerged => "lead.unmerged",
            EventKind::ConversationClosed => "conversation.closed",
            EventKind::NoteAdded => "note.added",
            EventKind::LeadErased => "lead.erased",
        }
    }

    /// The kind named `s`, if it is one.
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// This kind's bit in a subscription mask.
    pub fn bit(self) -> u8 {
        1 << EventKind::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// The HTTP(S) client endpoints are sent to.
pub type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

/// A client for `http://` and `https://` URLs: TLS by rustls with ring,
/// trusting the system's roots (as curl does), connecting within
/// `connect_timeout`. Without any trusted root only plain HTTP works (a
/// warning says so; HTTPS attempts then fail with a TLS error).
// rustls deprecates ring's provider for lacking post-quantum key exchange;
// aws-lc-rs, which has it, needs cmake to build, and classical TLS 1.2/1.3
// is what webhook receivers speak.
#[allow(deprecated)]
pub fn client(connect_timeout: std::time::Duration) -> Client {
    use std::sync::Arc;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = match hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider.clone())
    {
        Ok(builder) => builder,
        Err(e) => {
            tracing::warn!(error = %e, "no trusted root certificates: https:// endpoints cannot be reached");
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        }
    };
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let connector = tls.https_or_http().enable_http1().wrap_connector(http);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector)
}

/// The signing key of a `whsec_…` secret (the base64 after the prefix),
/// or why it is not one. Standard Webhooks keys are 24 to 64 bytes.
pub fn signing_key(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret
        .strip_prefix("whsec_")
        .ok_or("must start with whsec_ (a Standard Webhooks secret)")?;
    let key = STANDARD
        .decode(encoded)
        .map_err(|_| "must be whsec_ followed by base64")?;
    if !(24..=64).contains(&key.len()) {
        return Err(format!(
            "must hold a key of 24 to 64 bytes (this one has {}); e.g. whsec_ + `openssl rand -base64 32`",
            key.len()
        ));
    }
    Ok(key)
}

/// The `webhook-signature` header of a message: `v1,` and the base64
/// HMAC-SHA256 of `{id}.{timestamp}.{body}` under `key`.
pub fn signature(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector Standard Webhooks publishes with its reference
    /// libraries (spec repository, `libraries/python/.../test_webhooks.py`).
    #[test]
    fn signature_matches_the_standard_webhooks_test_vector() {
        let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            signature(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_that_are_not_standard_webhooks_keys_are_refused_saying_why() {
        assert!(
            signing_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
                .unwrap_err()
                .contains("whsec_")
        );
        assert!(
            signing_key("whsec_not base64!")
                .unwrap_err()
                .contains("base64")
        );
        assert!(
            signing_key("whsec_c2hvcnQ=")
                .unwrap_err()
                .contains("24 to 64")
        );
    }

    #[test]
    fn event_kinds_read_back_from_their_names() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventKind::parse("lead.deleted"), None);
    }
}
