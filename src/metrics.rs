//! Counters for `GET /metrics`, rendered in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::event::Platform;
use crate::store::apply::Outcome;

/// Upper bounds (seconds) of the answer-latency histogram.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// What the service has done since it started.
#[derive(Default)]
pub struct Metrics {
    deliveries: Mutex<BTreeMap<(String, String, String), u64>>,
    latency: Mutex<(Vec<u64>, u64, f64)>,
    created: AtomicU64,
    merged: AtomicU64,
    inbox_failures: AtomicU64,
    folded: AtomicU64,
    flagged: AtomicU64,
    outbound: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Rows the retention job deleted, by kind.
    retention: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Counts a delivery by platform, event and outcome, and its latency.
    pub fn delivery(&self, platform: Platform, event: &str, outcome: &str, took: Duration) {
        // Unknown event names are attacker-controlled: bound the label set.
        let event =
            if event.len() <= 40 && event.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                event
            } else {
                "other"
            };
        *self
            .deliveries
            .lock()
            .unwrap()
            .entry((platform.as_str().into(), event.into(), outcome.into()))
            .or_default() += 1;
        let secs = took.as_secs_f64();
        let mut latency = self.latency.lock().unwrap();
        if latency.0.is_empty() {
            latency.0 = vec![0; BUCKETS.len()];
        }
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                latency.0[i] += 1;
            }
        }
        latency.1 += 1;
        latency.2 += secs;
    }

    /// Counts what a delivery did to leads.
    pub fn leads(&self, outcome: &Outcome) {
        if outcome.created {
            self.created.fetch_add(1, Ordering::Relaxed);
        }
        if outcome.merged {
            self.merged.fetch_add(1, Ordering::Relaxed);
        }
        if outcome.folded {
            self.folded.fetch_add(1, Ordering::Relaxed);
        }
        self.flagged
            .fetch_add(outcome.flagged as u64, Ordering::Relaxed);
    }

    /// Counts an outbound attempt at `endpoint` by outcome: `sent`,
    /// `retried` (failed, to be tried again), `failed` (given up),
    /// `disabled` (410 Gone).
    pub fn outbound(&self, endpoint: &str, outcome: &'static str) {
        *self
            .outbound
            .lock()
            .unwrap()
            .entry((endpoint.to_owned(), outcome))
            .or_default() += 1;
    }

    /// The outbound series: attempts by endpoint and outcome (zero for
    /// configured endpoints not tried yet), and each endpoint's backlog:
    /// `(name, pending deliveries, age in seconds of the oldest)`.
    pub fn render_outbound(&self, configured: &[String], backlog: &[(String, i64, f64)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP crm_outbound_deliveries_total Outbound webhook attempts by endpoint and outcome (sent, retried, failed, disabled).\n");
        out.push_str("# TYPE crm_outbound_deliveries_total counter\n");
        let mut counts = self.outbound.lock().unwrap().clone();
        for name in configured {
            for outcome in ["sent", "retried", "failed", "disabled"] {
                counts.entry((name.clone(), outcome)).or_default();
            }
        }
        for ((endpoint, outcome), n) in &counts {
            let _ = writeln!(
                out,
                "crm_outbound_deliveries_total{{endpoint=\"{}\",outcome=\"{outcome}\"}} {n}",
                escape(endpoint)
            );
        }
        out.push_str("# HELP crm_outbound_backlog Outbound deliveries waiting, by endpoint.\n");
        out.push_str("# TYPE crm_outbound_backlog gauge\n");
        for (endpoint, pending, _) in backlog {
            let _ = writeln!(
                out,
                "crm_outbound_backlog{{endpoint=\"{}\"}} {pending}",
                escape(endpoint)
            );
        }
        out.push_str("# HELP crm_outbound_backlog_age_seconds Age of the oldest outbound delivery waiting, by endpoint (0 when none waits).\n");
        out.push_str("# TYPE crm_outbound_backlog_age_seconds gauge\n");
        for (endpoint, _, age) in backlog {
            let _ = writeln!(
                out,
                "crm_outbound_backlog_age_seconds{{endpoint=\"{}\"}} {age:.3}",
                escape(endpoint)
            );
        }
        out
    }

    /// Counts a delivery stored as failed (its body did not translate).
    pub fn inbox_failure(&self) {
        self.inbox_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `n` of `kind` deleted by the retention job.
    pub fn retention_deleted(&self, kind: &'static str, n: u64) {
        *self.retention.lock().unwrap().entry(kind).or_default() += n;
    }

    /// The Prometheus text exposition; `db_bytes` is the database size.
    pub fn render(&self, db_bytes: u64) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP crm_deliveries_total Webhook deliveries by platform, event and outcome.\n",
        );
        out.push_str("# TYPE crm_deliveries_total counter\n");
        for ((platform, event, outcome), n) in self.deliveries.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "crm_deliveries_total{{platform=\"{}\",event=\"{}\",outcome=\"{}\"}} {n}",
                escape(platform),
                escape(event),
                escape(outcome)
            );
        }
        out.push_str("# HELP crm_answer_seconds Time from a delivery's arrival to its answer.\n");
        out.push_str("# TYPE crm_answer_seconds histogram\n");
        {
            let latency = self.latency.lock().unwrap();
            for (i, bound) in BUCKETS.iter().enumerate() {
                let n = latency.0.get(i).copied().unwrap_or(0);
                let _ = writeln!(out, "crm_answer_seconds_bucket{{le=\"{bound}\"}} {n}");
            }
            let _ = writeln!(
                out,
                "crm_answer_seconds_bucket{{le=\"+Inf\"}} {}",
                latency.1
            );
            let _ = writeln!(out, "crm_answer_seconds_sum {}", latency.2);
            let _ = writeln!(out, "crm_answer_seconds_count {}", latency.1);
        }
        for (name, help, value) in [
            ("crm_leads_created_total", "Leads created.", &self.created),
            (
                "crm_leads_merged_total",
                "Existing leads matched and changed.",
                &self.merged,
            ),
            (
                "crm_leads_folded_total",
                "Anonymous leads folded into another.",
                &self.folded,
            ),
            (
                "crm_leads_flagged_total",
                "Possible-duplicate links made.",
                &self.flagged,
            ),
            (
                "crm_inbox_failures_total",
                "Deliveries stored as failed (the body did not translate); see `replay --failed`.",
                &self.inbox_failures,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        out.push_str(
            "# HELP crm_retention_deleted_total Rows deleted by the retention job, by kind.\n",
        );
        out.push_str("# TYPE crm_retention_deleted_total counter\n");
        {
            let deleted = self.retention.lock().unwrap();
            for kind in crate::retention::Kind::ALL.map(crate::retention::Kind::as_str) {
                let n = deleted.get(kind).copied().unwrap_or(0);
                let _ = writeln!(out, "crm_retention_deleted_total{{kind=\"{kind}\"}} {n}");
            }
        }
        out.push_str("# HELP crm_database_bytes Size of the database file and its WAL.\n");
        out.push_str("# TYPE crm_database_bytes gauge\n");
        let _ = writeln!(out, "crm_database_bytes {db_bytes}");
        out
    }
}

/// Escapes a label value for the text format: backslash, double quote, newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            escape(
                r#"a"b\c
d"#
            ),
            r#"a\"b\\c\nd"#
        );
    }
}
