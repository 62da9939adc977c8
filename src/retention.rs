//! The retention job: deletes what `[retention]` and `[audit] keep_days`
//! say is too old, in small write transactions with a pause between them,
//! so that deliveries keep being written meanwhile (the writer is never
//! held for more than one small batch).
//!
//! The service runs it at start, every hour, and at once after a reload
//! (SIGHUP), always under the settings in force; `crm-responder retention`
//! runs it once, and `--dry-run` only counts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::audit::{self, Entry, action};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::leads::Source;
use crate::store::retention as store;
use crate::store::{Db, DbError};

/// How often the service runs the job (besides at start and on reload).
const EVERY: Duration = Duration::from_secs(3600);
/// Raw deliveries (or audit entries) deleted per transaction.
const DELIVERIES_PER_BATCH: usize = 20;
/// Transcripts deleted per transaction (each with its messages).
const TRANSCRIPTS_PER_BATCH: usize = 5;
/// Inactive leads deleted per transaction (each with everything it has).
const LEADS_PER_BATCH: usize = 1;
/// Candidates read per read transaction.
const CANDIDATES_PER_READ: usize = 200;
/// The shortest pause between two write batches.
const PAUSE: Duration = Duration::from_millis(10);
/// A pause is at least this many times the batch before it: the job takes
/// at most a tenth of the writer's time, however slow the disk, so that
/// deliveries queued behind a batch wait for one small batch at most and
/// the page writes of a large backlog do not crowd theirs out.
const PAUSE_FACTOR: u32 = 9;

/// What retention deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `[retention] raw_deliveries_days`.
    RawDeliveries,
    /// `[retention] transcripts_days`.
    Transcripts,
    /// `[retention] inactive_leads_days`.
    InactiveLeads,
    /// `[audit] keep_days`.
    Audit,
}

impl Kind {
    /// Every kind, in the order a run takes them.
    pub const ALL: [Kind; 4] = [
        Kind::RawDeliveries,
        Kind::Transcripts,
        Kind::InactiveLeads,
        Kind::Audit,
    ];

    /// The name in `/metrics` and in the command's output.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::RawDeliveries => "raw_deliveries",
            Kind::Transcripts => "transcripts",
            Kind::InactiveLeads => "inactive_leads",
            Kind::Audit => "audit",
        }
    }

    fn days(self, config: &Config) -> Option<u32> {
        let r = &config.retention;
        match self {
            Kind::RawDeliveries => r.raw_deliveries_days,
            Kind::Transcripts => r.transcripts_days,
            Kind::InactiveLeads => r.inactive_leads_days,
            Kind::Audit => Some(config.audit.keep_days),
        }
    }
}

/// One kind's part of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// What.
    pub kind: Kind,
    /// The limit in days.
    pub days: u32,
    /// Older than this (RFC 3339 UTC) goes.
    pub cutoff: String,
    /// How many were deleted (or, in a dry run, would be).
    pub count: u64,
}

/// The cut-off `days` before `now`, as times are stored.
pub fn cutoff(now: OffsetDateTime, days: u32) -> String {
    let at = now - time::Duration::days(i64::from(days));
    crate::event::unix_to_rfc3339(at.unix_timestamp()).unwrap_or_default()
}

/// Runs retention once under `config`: each kind that has a limit, deleted
/// in batches (or only counted when `dry_run`). `metrics`, when given,
/// counts what goes.
pub async fn run(
    db: &Db,
    config: &Config,
    dry_run: bool,
    metrics: Option<&Metrics>,
) -> Result<Vec<Part>, DbError> {
    let now = OffsetDateTime::now_utc();
    let mut parts = Vec::new();
    for kind in Kind::ALL {
        let Some(days) = kind.days(config) else {
            continue;
        };
        let cutoff = cutoff(now, days);
        let count = if dry_run {
            count(db, kind, &cutoff).await?
        } else {
            let count = delete(db, kind, &cutoff, days, metrics).await?;
            if count > 0 {
                let target = format!("{count} {} older than {cutoff}", kind.as_str());
                db.audit(Entry::now(
                    "retention",
                    action::RETENTION,
                    Some(target),
                    None,
                ))
                .await?;
            }
            count
        };
        parts.push(Part {
            kind,
            days,
            cutoff,
            count,
        });
    }
    Ok(parts)
}

/// How many of `kind` are older than `cutoff`, changing nothing.
async fn count(db: &Db, kind: Kind, cutoff: &str) -> Result<u64, DbError> {
    let cutoff = cutoff.to_owned();
    match kind {
        Kind::RawDeliveries => db
            .read(move |conn| store::count_old_deliveries(conn, &cutoff))
            .await
            .map(|n| n as u64),
        Kind::Transcripts => db
            .read(move |conn| store::count_old_transcripts(conn, &cutoff))
            .await
            .map(|n| n as u64),
        Kind::Audit => db
            .read(move |conn| audit::count_before(conn, &cutoff))
            .await
            .map(|n| n as u64),
        Kind::InactiveLeads => {
            let mut total = 0;
            let mut after = None;
            loop {
                let (leads, next) = candidates(db, &cutoff, after).await?;
                total += leads.len() as u64;
                match next {
                    Some(next) => after = Some(next),
                    None => return Ok(total),
                }
            }
        }
    }
}

/// The next inactive leads and where the walk goes on (`None`: done).
async fn candidates(
    db: &Db,
    cutoff: &str,
    after: Option<store::LeadCursor>,
) -> Result<(Vec<i64>, Option<store::LeadCursor>), DbError> {
    let cutoff = cutoff.to_owned();
    db.read(move |conn| store::lead_candidates(conn, &cutoff, after.as_ref(), CANDIDATES_PER_READ))
        .await
}

/// Deletes every one of `kind` older than `cutoff`, batch by batch.
async fn delete(
    db: &Db,
    kind: Kind,
    cutoff: &str,
    days: u32,
    metrics: Option<&Metrics>,
) -> Result<u64, DbError> {
    let mut total = 0u64;
    let mut counted = |n: usize| {
        total += n as u64;
        if let Some(m) = metrics {
            m.retention_deleted(kind.as_str(), n as u64);
        }
    };
    match kind {
        Kind::RawDeliveries | Kind::Audit => loop {
            let cut = cutoff.to_owned();
            let started = Instant::now();
            let n = db
                .write(move |conn| match kind {
                    Kind::Audit => audit::prune(conn, &cut, DELIVERIES_PER_BATCH),
                    _ => store::delete_old_deliveries(conn, &cut, DELIVERIES_PER_BATCH),
                })
                .await?;
            counted(n);
            // Fewer than asked: nothing older is left (or another instance
            // on the same database took some; its next run finds the rest).
            if n < DELIVERIES_PER_BATCH {
                break;
            }
            pause(started).await;
        },
        Kind::Transcripts => {
            let mut after = 0;
            loop {
                let cut = cutoff.to_owned();
                let ids = db
                    .read(move |conn| {
                        store::old_transcripts(conn, &cut, after, CANDIDATES_PER_READ)
                    })
                    .await?;
                let Some(&last) = ids.last() else { break };
                after = last;
                for chunk in ids.chunks(TRANSCRIPTS_PER_BATCH) {
                    let (chunk, cut) = (chunk.to_vec(), cutoff.to_owned());
                    let source = retention_source(days);
                    let started = Instant::now();
                    let n = db
                        .write(move |conn| {
                            let mut n = 0;
                            for id in &chunk {
                                n += usize::from(
                                    store::delete_transcript(conn, *id, &cut, &source)?.is_some(),
                                );
                            }
                            Ok(n)
                        })
                        .await?;
                    counted(n);
                    pause(started).await;
                }
            }
        }
        Kind::InactiveLeads => {
            let mut after = None;
            loop {
                let (leads, next) = candidates(db, cutoff, after).await?;
                for chunk in leads.chunks(LEADS_PER_BATCH) {
                    let (chunk, cut) = (chunk.to_vec(), cutoff.to_owned());
                    let started = Instant::now();
                    let n = db
                        .write(move |conn| {
                            let mut n = 0;
                            for lead in &chunk {
                                // Checked again in the writer: a chat may have
                                // come since the candidates were read.
                                if !store::is_inactive(conn, *lead, &cut)? {
                                    continue;
                                }
                                let gone = store::forget_lead(conn, *lead)?;
                                let target = format!(
                                    "lead {lead}: inactive since {cut} ({} leads, {} conversations, {} deliveries)",
                                    gone.leads, gone.conversations, gone.deliveries
                                );
                                audit::record(
                                    conn,
                                    &Entry::now("retention", action::RETENTION, Some(target), None),
                                )?;
                                n += 1;
                            }
                            Ok(n)
                        })
                        .await?;
                    counted(n);
                    pause(started).await;
                }
                match next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
    }
    Ok(total)
}

/// Waits after a batch that began at `started` (queued, written and
/// committed): [`PAUSE_FACTOR`] times as long, and at least [`PAUSE`].
async fn pause(started: Instant) {
    tokio::time::sleep((started.elapsed() * PAUSE_FACTOR).max(PAUSE)).await;
}

/// How a retention change is named in a lead's history.
fn retention_source(days: u32) -> Source {
    Source {
        delivery_id: None,
        label: format!("retention (older than {days} days)"),
        at: crate::event::now_rfc3339(),
    }
}

/// The service's retention loop: at start, every hour, and whenever
/// `wake` is notified (a reload), under the settings in force then.
pub async fn run_forever(state: Arc<crate::http::AppState>) {
    loop {
        let config = state.config();
        match run(&state.db, &config, false, Some(&state.metrics)).await {
            Ok(parts) => {
                for part in parts.iter().filter(|p| p.count > 0) {
                    tracing::info!(kind = part.kind.as_str(), deleted = part.count, cutoff = %part.cutoff, "retention");
                }
            }
            Err(e) => tracing::warn!(error = %e, "retention run failed; tried again later"),
        }
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = state.retention_wake.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cutoff_is_whole_days_before_now() {
        let now = OffsetDateTime::from_unix_timestamp(1_764_979_200).unwrap(); // 2025-12-06T00:00:00Z
        assert_eq!(cutoff(now, 30), "2025-11-06T00:00:00.000Z");
        assert_eq!(cutoff(now, 1), "2025-12-05T00:00:00.000Z");
    }
}
