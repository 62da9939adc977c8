//! One delivery, from the platform's bytes to the answer: translated into
//! an [`Event`], stored raw and applied in one transaction by the writer,
//! or spooled when storage cannot take it in time, and answered in the
//! platform's terms. The HTTP layer only authenticates and reads the body;
//! `explain` and the spool's drainer use the same path.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use crate::config::Config;
use crate::event::{Event, Platform, now_rfc3339};
use crate::metrics::Metrics;
use crate::platforms::{self, jivo};
use crate::spool::Spool;
use crate::store::apply::{self, Outcome, Policy};
use crate::store::inbox::NewDelivery;
use crate::store::{Db, DbError};

/// What a delivery is handled with.
pub struct Ingest<'a> {
    /// The settings in force for this delivery.
    pub config: &'a Config,
    /// The storage gateway.
    pub db: &'a Db,
    /// Where deliveries wait during a storage fault.
    pub spool: &'a Spool,
    /// Counters for `/metrics`.
    pub metrics: &'a Metrics,
}

/// Why a delivery was not accepted.
#[derive(Debug)]
pub enum Refused {
    /// The body is not one the platform sends (stored as failed for a
    /// later replay): the sender gets 400.
    BadBody(String),
    /// Storage could not take it (nor the spool): 503 for a transient
    /// fault, so the sender retries.
    Storage(DbError),
}

/// Stores and applies one authenticated delivery. A body that does not parse
/// is stored as failed (for a later replay) and answered 400; storage
/// trouble is a 503 so the sender retries.
pub async fn deliver(
    state: &Ingest<'_>,
    platform: Platform,
    body: Bytes,
) -> Result<(Event, Outcome), Refused> {
    let started = Instant::now();
    let config = state.config;
    let parsed = platforms::translate(platform, &body);
    let received_at = now_rfc3339();
    let (event, idem_key) = match parsed {
        Ok(parsed) => parsed,
        Err(reason) => {
            let delivery = NewDelivery::failed(platform, body, received_at);
            let event = delivery.event.clone();
            let error = reason.clone();
            state
                .db
                .write(move |conn| apply::record_failed(conn, &delivery, &error))
                .await
                .map_err(Refused::Storage)?;
            state
                .metrics
                .delivery(platform, &event, "rejected", started.elapsed());
            state.metrics.inbox_failure();
            // The reason may quote the body's values: not in the log.
            let logged = crate::privacy::redact(&reason);
            tracing::info!(%platform, %event, outcome = "rejected", reason = %logged, "delivery");
            return Err(Refused::BadBody(reason));
        }
    };
    let write = receive_on_writer(
        state,
        platform,
        &event,
        &idem_key,
        body.clone(),
        received_at.clone(),
    );
    let result = if event.wants_card {
        // The agent is looking at an empty panel until we answer.
        let deadline = Duration::from_millis(config.jivo.answer_deadline_ms);
        match tokio::time::timeout(deadline, write).await {
            Ok(result) => result,
            Err(_) => Err(DbError::Unavailable(format!(
                "no answer from storage within {} ms",
                deadline.as_millis()
            ))),
        }
    } else {
        write.await
    };
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(DbError::Unavailable(cause)) if event.wants_card => {
            let spool = state.spool.clone();
            let put =
                tokio::task::spawn_blocking(move || spool.put(platform, &received_at, &body)).await;
            return match put {
                Ok(Ok(_)) => {
                    state
                        .metrics
                        .delivery(platform, &event.name, "spooled", started.elapsed());
                    tracing::warn!(%platform, event = %event.name, outcome = "spooled", %cause, "delivery");
                    Ok((
                        event,
                        Outcome {
                            spooled: true,
                            ..Outcome::default()
                        },
                    ))
                }
                failed => {
                    let error = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "spool task failed".to_owned(),
                    };
                    state
                        .metrics
                        .delivery(platform, &event.name, "error", started.elapsed());
                    tracing::error!(%platform, event = %event.name, outcome = "error", %cause, %error, "delivery not spooled");
                    Err(Refused::Storage(DbError::Unavailable(format!(
                        "{cause}; spool: {error}"
                    ))))
                }
            };
        }
        Err(e) => {
            state
                .metrics
                .delivery(platform, &event.name, "error", started.elapsed());
            tracing::warn!(%platform, event = %event.name, outcome = "error", error = %e, "delivery");
            return Err(Refused::Storage(e));
        }
    };
    let label = if outcome.redelivery {
        "redelivery"
    } else {
        "applied"
    };
    state
        .metrics
        .delivery(platform, &event.name, label, started.elapsed());
    state.metrics.leads(&outcome);
    tracing::info!(
        %platform,
        event = %event.name,
        lead = outcome.lead_id,
        outcome = label,
        micros = started.elapsed().as_micros() as u64,
        "delivery"
    );
    Ok((event, outcome))
}

/// Stores an already translated delivery and applies its event, in one
/// transaction on the writer.
async fn receive_on_writer(
    state: &Ingest<'_>,
    platform: Platform,
    event: &Event,
    idem_key: &str,
    body: Bytes,
    received_at: String,
) -> Result<Outcome, DbError> {
    let delivery = NewDelivery::parsed(platform, &event.name, idem_key, body, received_at);
    let policy = Policy::of(state.config);
    // Phones are parsed here, on the request's thread: the writer is the
    // one thread every delivery waits for.
    let identifiers = apply::Identifiers::of(event, &policy);
    let event = event.clone();
    state
        .db
        .write_repeatable(move |conn| {
            let identifiers = Some(identifiers.clone());
            apply::receive_identified(conn, &policy, &delivery, &event, identifiers)
        })
        .await
}

/// What became of one spooled delivery.
enum Drained {
    /// Applied (or stored as failed, when its body does not translate).
    Applied(Option<Box<Outcome>>),
    /// Its person was erased after it arrived: dropped, not applied.
    Erased,
    /// It could not be checked against erasures (no `[privacy] secret`
    /// while tombstones exist, or one of another key): left in place.
    Unchecked(String),
}

/// A spooled delivery checked against erasures in the write transaction
/// that would apply it: an erasure commits either before it (and its
/// tombstones are seen here) or after (and finds the applied delivery).
#[derive(Clone)]
struct ErasureCheck {
    key: Option<crate::privacy::Key>,
    ids: std::collections::BTreeSet<crate::privacy::Identifier>,
    received_at: String,
}

impl ErasureCheck {
    /// `Some` when the delivery must not be applied: erased or unchecked.
    fn refuses(&self, conn: &dyn crate::store::sql::Sql) -> Option<Drained> {
        match crate::privacy::Tombstones::load_for(conn, self.key.as_ref(), &self.ids) {
            Ok(tombstones) if tombstones.erases(&self.ids, &self.received_at) => {
                Some(Drained::Erased)
            }
            Ok(_) => None,
            Err(reason) => Some(Drained::Unchecked(reason)),
        }
    }
}

/// Applies one spooled delivery, unless its person was erased since it
/// arrived (see [`ErasureCheck`]).
async fn apply_spooled(
    state: &Ingest<'_>,
    platform: Platform,
    body: Vec<u8>,
    received_at: String,
) -> Result<Drained, DbError> {
    let policy = Policy::of(state.config);
    let check = ErasureCheck {
        key: crate::privacy::Key::of(state.config),
        ids: crate::privacy::in_delivery(platform.as_str(), &body, policy.merge.default_region),
        received_at: received_at.clone(),
    };
    match platforms::translate(platform, &body) {
        Ok((event, idem_key)) => {
            let delivery =
                NewDelivery::parsed(platform, &event.name, &idem_key, body.into(), received_at);
            let identifiers = apply::Identifiers::of(&event, &policy);
            state
                .db
                .write_repeatable(move |conn| {
                    if let Some(refused) = check.refuses(conn) {
                        return Ok(refused);
                    }
                    let identifiers = Some(identifiers.clone());
                    apply::receive_identified(conn, &policy, &delivery, &event, identifiers)
                        .map(|outcome| Drained::Applied(Some(Box::new(outcome))))
                })
                .await
        }
        Err(reason) => {
            let delivery = NewDelivery::failed(platform, body.into(), received_at);
            state
                .db
                .write(move |conn| {
                    if let Some(refused) = check.refuses(conn) {
                        return Ok(refused);
                    }
                    apply::record_failed(conn, &delivery, &reason).map(|()| Drained::Applied(None))
                })
                .await
        }
    }
}

/// Applies spooled deliveries, oldest first, until the spool is empty or
/// storage fails again; those of people erased since they arrived are
/// dropped (zeroed and removed) instead. Returns how many were applied.
pub async fn drain_spool(state: &Ingest<'_>) -> usize {
    let spool = state.spool.clone();
    let Ok(Ok(files)) = tokio::task::spawn_blocking(move || spool.list()).await else {
        return 0;
    };
    let (mut applied, mut dropped) = (0, 0);
    for path in files {
        let read = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || Spool::read(&path)).await
        };
        let record = match read {
            Ok(Ok(record)) => record,
            other => {
                tracing::error!(file = %path.display(), ?other, "unreadable spool file left in place");
                continue;
            }
        };
        let (Some(platform), Ok(body)) = (record.platform(), record.body()) else {
            tracing::error!(file = %path.display(), "malformed spool file left in place");
            continue;
        };
        match apply_spooled(state, platform, body, record.received_at).await {
            Ok(Drained::Applied(outcome)) => {
                if let Some(outcome) = outcome {
                    state.metrics.leads(&outcome);
                }
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::error!(file = %path.display(), error = %e, "cannot remove applied spool file");
                    break;
                }
                applied += 1;
            }
            Ok(Drained::Erased) => {
                let (spool, file) = (state.spool.clone(), path.clone());
                match tokio::task::spawn_blocking(move || spool.wipe(&file)).await {
                    Ok(Ok(())) => dropped += 1,
                    failed => {
                        tracing::error!(file = %path.display(), ?failed, "cannot remove the spooled delivery of an erased person");
                        break;
                    }
                }
            }
            Ok(Drained::Unchecked(reason)) => {
                tracing::error!(file = %path.display(), %reason, "spooled delivery left in place: it cannot be checked against erasures");
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "spool not drained: storage still failing");
                break;
            }
        }
    }
    if dropped > 0 {
        // Counted, never described: what they carried is erased.
        tracing::warn!(
            dropped,
            "spooled deliveries dropped, not applied: their person was erased after they arrived"
        );
    }
    if applied > 0 {
        tracing::info!(applied, "spooled deliveries applied");
    }
    applied
}

/// The answer `platform` gets for an applied delivery (also what
/// `crm-responder explain` prints).
pub fn answer(platform: Platform, config: &Config, event: &Event, outcome: &Outcome) -> Value {
    match platform {
        Platform::Jivo => match &outcome.card {
            Some(card) if event.wants_card => jivo::answer(card, config),
            None if outcome.spooled => jivo::provisional_answer(event, config),
            _ => json!({ "result": "ok" }),
        },
        Platform::RocketChat => {
            let mut answer = lead_answer(config, outcome);
            // Older servers keep only the `data` member of our answer as the
            // room's crmData; newer ones keep it whole. Either way it comes back.
            if answer.get("lead_id").is_some() {
                answer["data"] = json!({
                    "lead_id": answer["lead_id"].clone(),
                    "crm_link": answer["crm_link"].clone(),
                });
            }
            answer
        }
        Platform::LiveChat => lead_answer(config, outcome),
    }
}

/// The small answer Rocket.Chat and LiveChat get.
pub fn lead_answer(config: &Config, outcome: &Outcome) -> Value {
    match outcome.lead_id {
        Some(id) => json!({
            "result": "ok",
            "lead_id": id,
            "crm_link": jivo::lead_link(config, id),
        }),
        None => json!({ "result": "ok" }),
    }
}
