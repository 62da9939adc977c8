//! What `GET /metrics` shows: counters and gauges in a `prometheus-client`
//! registry, encoded in the Prometheus text format (version 0.0.4).
//!
//! Counting a delivery is an atomic add: its counter is looked up once per
//! label set and kept in a fixed table ([`Seen`]), and the latency
//! histogram is a row of atomics ([`Latency`]), not the crate's histogram,
//! which takes a lock per observation.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::event::Platform;
use crate::store::apply::Outcome;

/// The `Content-Type` of what [`Metrics::render`] returns.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the answer-latency histogram.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Delivery label sets whose counters are kept at hand; beyond that many,
/// a delivery's counter is looked up in the family (a read lock).
const SEEN_SLOTS: usize = 256;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    platform: &'static str,
    event: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutboundLabels {
    endpoint: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

/// What a scrape reads from elsewhere, set just before encoding.
#[derive(Debug, Default)]
pub struct Scrape {
    /// Size of the SQLite file and its WAL (0 on PostgreSQL).
    pub database_bytes: u64,
    /// PostgreSQL's connections `(busy, open)`; `None` on SQLite.
    pub pool: Option<(usize, usize)>,
    /// Spooled deliveries waiting.
    pub spool_depth: usize,
    /// Outbound endpoints configured.
    pub outbound: Vec<String>,
    /// Each endpoint's backlog: `(name, pending deliveries, age in seconds
    /// of the oldest)`; empty when the store could not say.
    pub backlog: Vec<(String, i64, f64)>,
}

/// What the service has done since it started.
pub struct Metrics {
    registry: Registry,
    deliveries: Family<DeliveryLabels, Counter>,
    seen: Seen,
    latency: Latency,
    created: Counter,
    merged: Counter,
    folded: Counter,
    flagged: Counter,
    inbox_failures: Counter,
    retention: Family<KindLabels, Counter>,
    database_bytes: Gauge,
    pool: Family<StateLabels, Gauge>,
    spool_depth: Gauge,
    outbound: Family<OutboundLabels, Counter>,
    backlog: Family<EndpointLabels, Gauge>,
    backlog_age: Family<EndpointLabels, Gauge<f64, AtomicU64>>,
    /// Scrapes one at a time: each sets the live gauges, then encodes.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Metrics {
            registry: Registry::default(),
            deliveries: Family::default(),
            seen: Seen::default(),
            latency: Latency::default(),
            created: Counter::default(),
            merged: Counter::default(),
            folded: Counter::default(),
            flagged: Counter::default(),
            inbox_failures: Counter::default(),
            retention: Family::default(),
            database_bytes: Gauge::default(),
            pool: Family::default(),
            spool_depth: Gauge::default(),
            outbound: Family::default(),
            backlog: Family::default(),
            backlog_age: Family::default(),
            scrape: Mutex::new(()),
        };
        // Every kind shows, counted or not.
        for kind in crate::retention::Kind::ALL.map(crate::retention::Kind::as_str) {
            metrics.retention.get_or_create_owned(&KindLabels { kind });
        }
        metrics.registered()
    }
}

impl Metrics {
    /// Registers every series, in the order `/metrics` shows them. Counter
    /// names go in without `_total`: the encoder adds it (and the period
    /// ending each help text).
    fn registered(mut self) -> Self {
        let r = &mut self.registry;
        r.register(
            "crm_deliveries",
            "Webhook deliveries by platform, event and outcome",
            self.deliveries.clone(),
        );
        r.register(
            "crm_answer_seconds",
            "Time from a delivery's arrival to its answer",
            self.latency.clone(),
        );
        r.register("crm_leads_created", "Leads created", self.created.clone());
        r.register(
            "crm_leads_merged",
            "Existing leads matched and changed",
            self.merged.clone(),
        );
        r.register(
            "crm_leads_folded",
            "Anonymous leads folded into another",
            self.folded.clone(),
        );
        r.register(
            "crm_leads_flagged",
            "Possible-duplicate links made",
            self.flagged.clone(),
        );
        r.register(
            "crm_inbox_failures",
            "Deliveries stored as failed (the body did not translate); see `replay --failed`",
            self.inbox_failures.clone(),
        );
        r.register(
            "crm_retention_deleted",
            "Rows deleted by the retention job, by kind",
            self.retention.clone(),
        );
        r.register(
            "crm_database_bytes",
            "Size of the database file and its WAL",
            self.database_bytes.clone(),
        );
        r.register(
            "crm_db_pool_connections",
            "PostgreSQL connections of this instance, by state",
            self.pool.clone(),
        );
        r.register(
            "crm_spool_depth",
            "Deliveries acknowledged during a storage fault, not yet applied",
            self.spool_depth.clone(),
        );
        r.register(
            "crm_outbound_deliveries",
            "Outbound webhook attempts by endpoint and outcome (sent, retried, failed, disabled)",
            self.outbound.clone(),
        );
        r.register(
            "crm_outbound_backlog",
            "Outbound deliveries waiting, by endpoint",
            self.backlog.clone(),
        );
        r.register(
            "crm_outbound_backlog_age_seconds",
            "Age of the oldest outbound delivery waiting, by endpoint (0 when none waits)",
            self.backlog_age.clone(),
        );
        self
    }

    /// Counts a delivery by platform, event and outcome, and its latency.
    pub fn delivery(&self, platform: Platform, event: &str, outcome: &'static str, took: Duration) {
        // Unknown event names are attacker-controlled: bound the label set.
        let event =
            if event.len() <= 40 && event.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                event
            } else {
                "other"
            };
        self.seen
            .inc(&self.deliveries, platform.as_str(), event, outcome);
        self.latency.observe(took);
    }

    /// Counts what a delivery did to leads.
    pub fn leads(&self, outcome: &Outcome) {
        if outcome.created {
            self.created.inc();
        }
        if outcome.merged {
            self.merged.inc();
        }
        if outcome.folded {
            self.folded.inc();
        }
        self.flagged.inc_by(outcome.flagged as u64);
    }

    /// Counts an outbound attempt at `endpoint` by outcome: `sent`,
    /// `retried` (failed, to be tried again), `failed` (given up),
    /// `disabled` (410 Gone).
    pub fn outbound(&self, endpoint: &str, outcome: &'static str) {
        self.outbound
            .get_or_create(&OutboundLabels {
                endpoint: endpoint.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Counts a delivery stored as failed (its body did not translate).
    pub fn inbox_failure(&self) {
        self.inbox_failures.inc();
    }

    /// Counts `n` of `kind` deleted by the retention job.
    pub fn retention_deleted(&self, kind: &'static str, n: u64) {
        self.retention.get_or_create(&KindLabels { kind }).inc_by(n);
    }

    /// The Prometheus text exposition, with `live`'s values.
    pub fn render(&self, live: &Scrape) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.database_bytes.set(live.database_bytes as i64);
        self.spool_depth.set(live.spool_depth as i64);
        if let Some((busy, open)) = live.pool {
            let state = |state| self.pool.get_or_create_owned(&StateLabels { state });
            state("busy").set(busy as i64);
            state("open").set(open as i64);
        }
        // Configured endpoints show before their first attempt; the backlog
        // is the store's now, so endpoints no longer configured leave it.
        for endpoint in &live.outbound {
            for outcome in ["sent", "retried", "failed", "disabled"] {
                self.outbound.get_or_create_owned(&OutboundLabels {
                    endpoint: endpoint.clone(),
                    outcome,
                });
            }
        }
        self.backlog.clear();
        self.backlog_age.clear();
        for (endpoint, pending, age) in &live.backlog {
            let labels = EndpointLabels {
                endpoint: endpoint.clone(),
            };
            self.backlog.get_or_create(&labels).set(*pending);
            self.backlog_age.get_or_create(&labels).set(*age);
        }
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }
}

/// Delivery counters already looked up: an open-addressed table of label
/// sets and their counters (the same ones the family encodes), filled once
/// per label set, read without a lock.
struct Seen {
    slots: Box<[OnceLock<(DeliveryLabels, Counter)>]>,
}

impl Default for Seen {
    fn default() -> Self {
        Seen {
            slots: (0..SEEN_SLOTS).map(|_| OnceLock::new()).collect(),
        }
    }
}

impl Seen {
    /// Adds one to the counter of `platform`, `event`, `outcome`: found in
    /// the table, or looked up in `family` (and kept) the first time.
    fn inc(
        &self,
        family: &Family<DeliveryLabels, Counter>,
        platform: &'static str,
        event: &str,
        outcome: &'static str,
    ) {
        let start = BuildHasherDefault::<DefaultHasher>::default()
            .hash_one((platform, event, outcome)) as usize;
        for i in 0..SEEN_SLOTS {
            let slot = &self.slots[start.wrapping_add(i) % SEEN_SLOTS];
            if let Some((labels, counter)) = slot.get() {
                if labels.platform == platform && labels.event == event && labels.outcome == outcome
                {
                    counter.inc();
                    return;
                }
                continue;
            }
            let labels = DeliveryLabels {
                platform,
                event: event.to_owned(),
                outcome,
            };
            let counter = family.get_or_create_owned(&labels);
            // Another thread may have filled the slot meanwhile: the counter
            // is the family's either way, and is kept next time round.
            counter.inc();
            let _ = slot.set((labels, counter));
            return;
        }
        family
            .get_or_create(&DeliveryLabels {
                platform,
                event: event.to_owned(),
                outcome,
            })
            .inc();
    }
}

/// The answer-latency histogram: a count per bucket (the last one above
/// every bound) and the sum in nanoseconds, each an atomic add.
#[derive(Clone, Debug, Default)]
struct Latency(Arc<LatencyCounts>);

#[derive(Debug, Default)]
struct LatencyCounts {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    nanos: AtomicU64,
}

impl Latency {
    fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(BUCKETS.len());
        self.0.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.0.nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let bounds = BUCKETS.iter().copied().chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds
            .zip(self.0.buckets.iter().map(|n| n.load(Ordering::Relaxed)))
            .collect();
        // The count is the buckets' sum, so `+Inf` and `_count` always agree.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.0.nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::default();
        metrics.outbound("a\"b\\c\nd", "sent");
        let text = metrics.render(&Scrape::default());
        assert!(
            text.contains(
                r#"crm_outbound_deliveries_total{endpoint="a\"b\\c\nd",outcome="sent"} 1"#
            ),
            "{text}"
        );
    }

    #[test]
    fn a_delivery_counts_once_in_its_label_set_and_in_the_histogram() {
        let metrics = Metrics::default();
        for _ in 0..3 {
            metrics.delivery(
                Platform::Jivo,
                "chat_accepted",
                "applied",
                Duration::from_millis(3),
            );
        }
        metrics.delivery(
            Platform::Jivo,
            "a name\nwith a newline",
            "rejected",
            Duration::from_secs(9),
        );
        let text = metrics.render(&Scrape::default());
        for line in [
            r#"crm_deliveries_total{platform="jivo",event="chat_accepted",outcome="applied"} 3"#,
            r#"crm_deliveries_total{platform="jivo",event="other",outcome="rejected"} 1"#,
            r#"crm_answer_seconds_bucket{le="0.002"} 0"#,
            r#"crm_answer_seconds_bucket{le="0.005"} 3"#,
            r#"crm_answer_seconds_bucket{le="5"} 3"#,
            r#"crm_answer_seconds_bucket{le="+Inf"} 4"#,
            "crm_answer_seconds_sum 9.009",
            "crm_answer_seconds_count 4",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in {text}");
        }
    }
}
