//! `explain`: runs one delivery through the CRM decision against the
//! current database and says what would happen, writing nothing.
//!
//! On SQLite the live file is opened `query_only` and copied into memory
//! with the online backup API; the delivery is applied to the copy by the
//! same code as a live one. The database file (and its WAL) stay
//! byte-identical, and the service keeps serving meanwhile. On PostgreSQL
//! the delivery is applied inside a transaction that is always rolled back.

use std::path::Path;
use std::process::ExitCode;

use bytes::Bytes;
use rusqlite::Connection;
use serde::Serialize;
use serde_json::Value;

use crate::config::{Config, Store};
use crate::crm::explain::Explanation;
use crate::event::{Platform, now_rfc3339};
use crate::platforms::{self, lenient};
use crate::store::apply::{self, Policy};
use crate::store::inbox::NewDelivery;
use crate::store::{Db, Location};

/// What a delivery would do.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The platform the body was read as.
    pub platform: &'static str,
    /// The event it translated into.
    pub event: String,
    /// The lead it would land on (none: it identifies nobody).
    pub lead: Option<i64>,
    /// The same body was applied before: a redelivery changes nothing.
    pub redelivery: bool,
    /// The decision, when one was made.
    pub explanation: Option<Explanation>,
    /// The body of the 200 answer the platform would get.
    pub answer: Value,
}

/// Guesses the platform from a body's envelope: `event_name` is Jivo,
/// `action`/`event_type` LiveChat, `type` with `visitor` Rocket.Chat.
pub fn guess_platform(body: &[u8]) -> Result<Platform, String> {
    let map = lenient::json_object(body)?;
    if map.contains_key("event_name") {
        Ok(Platform::Jivo)
    } else if map.contains_key("action") || map.contains_key("event_type") {
        Ok(Platform::LiveChat)
    } else if map.contains_key("type") && map.contains_key("visitor") {
        Ok(Platform::RocketChat)
    } else {
        Err("cannot tell the platform from the body; pass --platform".to_owned())
    }
}

/// Explains `body` against the configured database.
pub fn run(config: &Config, body: &[u8], platform: Option<Platform>) -> Result<Report, String> {
    let platform = match platform {
        Some(p) => p,
        None => guess_platform(body)?,
    };
    let (event, key) = platforms::translate(platform, body)
        .map_err(|e| format!("the body does not translate ({platform}): {e}"))?;
    let delivery = NewDelivery::parsed(
        platform,
        &event.name,
        &key,
        Bytes::copy_from_slice(body),
        now_rfc3339(),
    );
    let policy = Policy::of(config);
    let outcome = match config.database.store() {
        Store::Sqlite(path) => {
            let conn = snapshot(&path)?;
            apply::receive(&conn, &policy, &delivery, &event).map_err(|e| e.to_string())?
        }
        Store::Postgres(_) => {
            let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
            let _entered = runtime.enter();
            let db = Db::connect(&Location::of(&config.database))
                .map_err(|e| format!("database ({}): {e}", config.database.describe()))?;
            let outcome = db.rehearse(|conn| apply::receive(conn, &policy, &delivery, &event));
            db.close();
            outcome.map_err(|e| e.to_string())?
        }
    };
    let answer = crate::ingest::answer(platform, config, &event, &outcome);
    Ok(Report {
        platform: platform.as_str(),
        event: event.name,
        lead: outcome.lead_id,
        redelivery: outcome.redelivery,
        explanation: outcome.explanation,
        answer,
    })
}

/// A private in-memory copy of the database: whatever is applied to it is
/// gone when it is dropped.
fn snapshot(path: &Path) -> Result<Connection, String> {
    let err = |e: rusqlite::Error| format!("{}: {e}", path.display());
    if !path.exists() {
        return Err(format!("{}: no such database", path.display()));
    }
    let live = super::replay::open_source(path).map_err(err)?;
    let mut copy = Connection::open_in_memory().map_err(err)?;
    rusqlite::backup::Backup::new(&live, &mut copy)
        .and_then(|b| b.run_to_completion(256, std::time::Duration::ZERO, None))
        .map_err(err)?;
    copy.pragma_update(None, "foreign_keys", "ON")
        .map_err(err)?;
    Ok(copy)
}

/// The report as readable lines.
pub fn print(report: &Report) {
    println!("{} {}", report.platform, report.event);
    match (&report.explanation, report.lead) {
        (_, Some(lead)) if report.redelivery => {
            println!("already applied to lead {lead}: a redelivery changes nothing")
        }
        (Some(why), _) => {
            for line in why.lines() {
                println!("  {line}");
            }
        }
        (None, _) => println!("  identifies nobody and carries nothing to keep: no lead"),
    }
    let answer = serde_json::to_string_pretty(&report.answer).unwrap_or_default();
    println!("answer (200):\n{answer}");
}

/// `crm-responder explain FILE`: reads the body, explains it, prints text or JSON.
pub fn command(config: &Config, file: &Path, platform: Option<Platform>, json: bool) -> ExitCode {
    let body = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    match run(config, &body, platform) {
        Ok(report) if json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(report) => {
            print(&report);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        std::fs::read(&path).unwrap()
    }

    #[test]
    fn the_platform_is_told_from_the_envelope() {
        let cases = [
            ("jivo/chat_accepted.json", Platform::Jivo),
            ("rocketchat/LivechatSession.json", Platform::RocketChat),
            ("livechat/v2/chat_started.json", Platform::LiveChat),
            ("livechat/v3/incoming_chat.json", Platform::LiveChat),
        ];
        for (name, platform) in cases {
            assert_eq!(guess_platform(&fixture(name)), Ok(platform), "{name}");
        }
        assert!(guess_platform(b"{\"hello\": 1}").is_err());
        assert!(guess_platform(b"not json").is_err());
    }
}
