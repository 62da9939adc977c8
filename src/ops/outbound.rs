//! `crm-responder outbound status|replay|enable`: the outbound webhooks'
//! endpoints as the outbox sees them, re-sending, and re-enabling an
//! endpoint that answered 410 Gone.

use std::process::ExitCode;

use clap::Subcommand;

use crate::config::{Config, OutboundConfig};
use crate::store::Db;
use crate::store::outbox::{self, EndpointStatus};

/// `crm-responder outbound …`
#[derive(Debug, Subcommand)]
pub enum OutboundCommand {
    /// Each endpoint: state, backlog, oldest pending, last success, last error.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send again (same webhook-id) every event since DATE of the types the
    /// endpoint subscribes to, including events from before it was added.
    Replay {
        /// The endpoint's name in [[outbound]].
        #[arg(long)]
        endpoint: String,
        /// A date (2026-11-23, midnight UTC) or an RFC 3339 time.
        #[arg(long, value_parser = crate::ops::replay::parse_since)]
        since: String,
    },
    /// Enable an endpoint disabled by a 410 Gone (changing its url does too).
    Enable {
        /// The endpoint's name in [[outbound]].
        name: String,
    },
}

/// One endpoint's row: its status, and whether it is configured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// The outbox's view of it.
    #[serde(flatten)]
    pub status: EndpointStatus,
    /// `enabled`, `disabled` (410 Gone at its current url), or
    /// `not configured` (gone from `[[outbound]]`; its backlog waits).
    pub state: &'static str,
    /// The event types it subscribes to.
    pub events: Vec<String>,
    /// Seconds since the oldest pending delivery was first due.
    pub oldest_pending_seconds: Option<i64>,
}

/// Every configured endpoint, and every other one the outbox still has rows for.
pub fn rows(configured: &[OutboundConfig], known: Vec<EndpointStatus>) -> Vec<Row> {
    let now = outbox::now_ms();
    let mut rows: Vec<Row> = configured
        .iter()
        .map(|e| {
            let status = known
                .iter()
                .find(|s| s.name == e.name)
                .cloned()
                .unwrap_or_else(|| EndpointStatus {
                    name: e.name.clone(),
                    ..EndpointStatus::default()
                });
            let state = if status.disabled_url.as_deref() == Some(e.url.as_str()) {
                "disabled"
            } else {
                "enabled"
            };
            (status, state, e.events.clone())
        })
        .chain(
            known
                .iter()
                .filter(|s| !configured.iter().any(|e| e.name == s.name))
                .map(|s| (s.clone(), "not configured", Vec::new())),
        )
        .map(|(status, state, events)| Row {
            oldest_pending_seconds: status.oldest_pending_ms.map(|t| (now - t).max(0) / 1000),
            status,
            state,
            events,
        })
        .collect();
    rows.sort_by(|a, b| a.status.name.cmp(&b.status.name));
    rows
}

/// Runs one `outbound` command.
pub async fn command(
    db: &Db,
    config: &Config,
    action: OutboundCommand,
) -> Result<ExitCode, String> {
    match action {
        OutboundCommand::Status { json } => {
            let known = db.read(outbox::status).await.map_err(|e| e.to_string())?;
            let rows = rows(&config.outbound, known);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "endpoints": rows }))
                        .map_err(|e| e.to_string())?
                );
            } else {
                print_table(&rows);
            }
        }
        OutboundCommand::Replay { endpoint, since } => {
            let configured = find(config, &endpoint)?;
            let kinds = configured.kinds();
            let name = endpoint.clone();
            let since_text = since.clone();
            let n = db
                .write(move |c| outbox::replay(c, &name, &kinds, &since_text))
                .await
                .map_err(|e| e.to_string())?;
            println!("{n} events since {since} queued again for {endpoint}");
        }
        OutboundCommand::Enable { name } => {
            find(config, &name)?;
            let n = name.clone();
            let was = db
                .write(move |c| outbox::enable(c, &n))
                .await
                .map_err(|e| e.to_string())?;
            if was {
                println!("{name} enabled; its backlog is sent from now on");
            } else {
                println!("{name} was not disabled");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn find<'a>(config: &'a Config, name: &str) -> Result<&'a OutboundConfig, String> {
    config
        .outbound
        .iter()
        .find(|e| e.name == name)
        .ok_or_else(|| format!("no [[outbound]] endpoint is named {name:?}"))
}

fn print_table(rows: &[Row]) {
    if rows.is_empty() {
        println!("no [[outbound]] endpoints configured");
        return;
    }
    println!(
        "{:<20} {:<15} {:>8} {:>12} {:>10} {:>7}  {:<24}  LAST ERROR",
        "ENDPOINT", "STATE", "PENDING", "OLDEST (s)", "DELIVERED", "FAILED", "LAST SUCCESS"
    );
    for row in rows {
        let s = &row.status;
        let error = match (&s.last_error, &s.last_error_at) {
            (Some(e), Some(at)) => format!("{at} {e}"),
            _ => "-".into(),
        };
        println!(
            "{:<20} {:<15} {:>8} {:>12} {:>10} {:>7}  {:<24}  {}",
            s.name,
            row.state,
            s.pending,
            row.oldest_pending_seconds
                .map_or("-".into(), |a| a.to_string()),
            s.delivered,
            s.failed,
            s.last_success_at.as_deref().unwrap_or("-"),
            error
        );
    }
}
