//! The sender: one task per `[[outbound]]` endpoint, started, replaced and
//! stopped as the config is (re)loaded.
//!
//! Each task polls the outbox with a read (cheap when nothing is due),
//! claims a batch through the writer (each delivery the oldest pending one
//! of its lead, leased so that no other instance sends it meanwhile), sends
//! the batch concurrently (one lead per delivery, so order per lead holds),
//! and settles it in one write. A failed attempt is retried after a delay
//! that doubles from `first_retry_ms` (with jitter, up to an hour) until
//! `max_retry_hours` have passed since the event, then marked failed. A 410
//! Gone disables the endpoint for that URL. Nothing here runs on a
//! request's path: a slow endpoint holds up its own task only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::OutboundConfig;
use crate::http::AppState;
use crate::outbound::signature;
use crate::store::outbox::{self, Claimed, Settle, now_ms};

/// How often an idle endpoint's task looks for due deliveries.
const POLL: Duration = Duration::from_millis(200);
/// Most deliveries one task sends at once (to distinct leads).
const BATCH: usize = 16;
/// The longest delay between two attempts.
const MAX_DELAY_MS: u64 = 3_600_000;
/// How much longer than its timeout an attempt holds its lease.
const LEASE_MARGIN_MS: i64 = 5_000;
/// Events nobody waits for any more are kept this long (for `replay`).
const KEEP_DAYS: i64 = 30;

/// Runs the endpoints' tasks until aborted, following config reloads.
pub async fn run(state: Arc<AppState>) {
    let mut tasks: HashMap<String, (OutboundConfig, tokio::task::JoinHandle<()>)> = HashMap::new();
    let mut pruned: Option<Instant> = None;
    loop {
        let config = state.config();
        tasks.retain(|_, (endpoint, task)| {
            let same = config.outbound.iter().any(|e| e == endpoint);
            if !same {
                task.abort();
            }
            same
        });
        for endpoint in &config.outbound {
            if !tasks.contains_key(&endpoint.name) {
                tracing::info!(endpoint = %endpoint.name, "outbound endpoint started");
                let task = tokio::spawn(endpoint_loop(state.clone(), endpoint.clone()));
                tasks.insert(endpoint.name.clone(), (endpoint.clone(), task));
            }
        }
        if pruned.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
            pruned = Some(Instant::now());
            let before = time::OffsetDateTime::now_utc() - time::Duration::days(KEEP_DAYS);
            let before = before
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            match state.db.write(move |c| outbox::prune(c, &before)).await {
                Ok(n) if n > 0 => tracing::info!(events = n, "old outbound events removed"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot prune the outbox"),
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Sends `endpoint`'s deliveries, forever.
async fn endpoint_loop(state: Arc<AppState>, endpoint: OutboundConfig) {
    let key = endpoint.key();
    let timeout = Duration::from_millis(endpoint.timeout_ms);
    let client = crate::outbound::client(timeout.min(Duration::from_secs(5)));
    let uri: hyper::Uri = match endpoint.url.parse() {
        Ok(uri) => uri,
        Err(e) => {
            tracing::error!(endpoint = %endpoint.name, error = %e, "url does not parse; endpoint not served");
            return;
        }
    };
    let name = endpoint.name.clone();
    loop {
        let now = now_ms();
        let (n, url) = (name.clone(), endpoint.url.clone());
        let ready = state
            .db
            .read(move |c| Ok(!outbox::is_disabled(c, &n, &url)? && outbox::has_due(c, &n, now)?))
            .await;
        match ready {
            Ok(true) => {}
            Ok(false) => {
                tokio::time::sleep(POLL).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(endpoint = %name, error = %e, "cannot read the outbox");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        let lease_until = now + endpoint.timeout_ms as i64 + LEASE_MARGIN_MS;
        let n = name.clone();
        let claimed = match state
            .db
            .write(move |c| outbox::claim(c, &n, now, lease_until, BATCH))
            .await
        {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(endpoint = %name, error = %e, "cannot claim outbound deliveries");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if claimed.is_empty() {
            tokio::time::sleep(POLL).await;
            continue;
        }
        let attempts = claimed
            .iter()
            .map(|c| attempt(&client, &uri, timeout, &key, c));
        let answers = futures_util::future::join_all(attempts).await;
        let done = now_ms();
        let settled: Vec<(i64, i64, Settle)> = claimed
            .iter()
            .zip(answers)
            .map(|(c, answer)| (c.event_id, c.lead, decide(&endpoint, c, answer, done)))
            .collect();
        for (event, _, outcome) in &settled {
            let label = match outcome {
                Settle::Delivered => "sent",
                Settle::Retry { .. } => "retried",
                Settle::Failed { .. } => "failed",
                Settle::Gone { .. } => "disabled",
            };
            state.metrics.outbound(&name, label);
            match outcome {
                Settle::Delivered => tracing::debug!(endpoint = %name, event, "outbound delivered"),
                Settle::Retry { error, .. } => {
                    tracing::info!(endpoint = %name, event, %error, "outbound attempt failed; will retry")
                }
                Settle::Failed { error } => {
                    tracing::warn!(endpoint = %name, event, %error, "outbound delivery given up")
                }
                Settle::Gone { .. } => tracing::warn!(
                    endpoint = %name,
                    "endpoint answered 410 Gone: disabled until its url changes or `crm-responder outbound enable {name}`"
                ),
            }
        }
        let n = name.clone();
        let written = state
            .db
            .write(move |c| {
                for (event, lead, outcome) in &settled {
                    outbox::settle(c, &n, (*event, *lead), outcome, done)?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = written {
            // The leases run out and the deliveries are sent again: at
            // least once, never lost.
            tracing::warn!(endpoint = %name, error = %e, "cannot record outbound attempts");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// How one attempt went: delivered, gone (410), or why it failed.
enum Answer {
    Delivered,
    Gone,
    Failed(String),
}

/// POSTs one message, signed now (receivers refuse old timestamps, so a
/// retry is signed afresh; its `webhook-id` and body stay the same), and
/// reads the answer, all within `timeout`.
async fn attempt(
    client: &crate::outbound::Client,
    uri: &hyper::Uri,
    timeout: Duration,
    key: &[u8],
    claimed: &Claimed,
) -> Answer {
    use http_body_util::BodyExt;
    let timestamp = now_ms() / 1000;
    let signed = signature(key, &claimed.msg_id, timestamp, claimed.body.as_bytes());
    let request = hyper::Request::post(uri.clone())
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("crm-responder/", env!("CARGO_PKG_VERSION")),
        )
        .header("webhook-id", &claimed.msg_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signed)
        .body(http_body_util::Full::new(bytes::Bytes::from(
            claimed.body.clone(),
        )));
    let request = match request {
        Ok(request) => request,
        Err(e) => return Answer::Failed(format!("cannot build the request: {e}")),
    };
    let exchange = async {
        let answer = client.request(request).await?;
        let status = answer.status();
        // Read to the end, so that the connection is kept for the next one.
        let _ = answer.into_body().collect().await;
        Ok::<_, hyper_util::client::legacy::Error>(status)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Answer::Failed("no answer in time".into()),
        Ok(Ok(status)) if status.is_success() => Answer::Delivered,
        Ok(Ok(hyper::StatusCode::GONE)) => Answer::Gone,
        Ok(Ok(status)) => Answer::Failed(format!("HTTP {status}")),
        Ok(Err(e)) if e.is_connect() => Answer::Failed("cannot connect".into()),
        // The error's text names no URL (which may carry credentials).
        Ok(Err(e)) => Answer::Failed(format!("{e}")),
    }
}

/// What to record of an attempt made at `now`.
fn decide(endpoint: &OutboundConfig, claimed: &Claimed, answer: Answer, now: i64) -> Settle {
    match answer {
        Answer::Delivered => Settle::Delivered,
        Answer::Gone => Settle::Gone {
            url: endpoint.url.clone(),
        },
        Answer::Failed(error) => {
            let next_at = now + backoff(endpoint.first_retry_ms, claimed.attempts + 1) as i64;
            let deadline = claimed.first_at + (endpoint.max_retry_hours * 3_600_000.0) as i64;
            if next_at > deadline {
                Settle::Failed { error }
            } else {
                Settle::Retry { error, next_at }
            }
        }
    }
}

/// The delay (ms) before attempt `failures + 1`: `first` doubled per
/// failure, at most an hour, then jittered down by up to half so that
/// deliveries failed together do not come back together.
fn backoff(first: u64, failures: i64) -> u64 {
    let doublings = (failures - 1).clamp(0, 40) as u32;
    let full = first
        .saturating_mul(1u64 << doublings.min(40))
        .min(MAX_DELAY_MS);
    let mut bytes = [0u8; 4];
    let _ = getrandom::fill(&mut bytes);
    let jitter = u32::from_le_bytes(bytes) as u64 % (full / 2 + 1);
    full - jitter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_with_jitter_up_to_an_hour() {
        for _ in 0..100 {
            let first = backoff(5_000, 1);
            assert!((2_500..=5_000).contains(&first), "{first}");
            let third = backoff(5_000, 3);
            assert!((10_000..=20_000).contains(&third), "{third}");
            let late = backoff(5_000, 30);
            assert!((MAX_DELAY_MS / 2..=MAX_DELAY_MS).contains(&late), "{late}");
        }
    }
}
