//! `crm-responder audit --since DATE`: prints the audit log from a date on,
//! oldest first. Reading it is itself recorded.

use std::io::Write;

use crate::audit::{Entry, Event, action};
use crate::store::Db;

/// Entries read per page.
const PAGE: usize = 500;

/// Prints every entry made at or after `since` to `out`, as text (one line
/// each) or JSON lines; answers how many.
pub async fn command(
    db: &Db,
    since: &str,
    json: bool,
    out: &mut impl Write,
) -> Result<u64, String> {
    db.audit(Entry::by_cli(
        action::AUDIT_READ,
        Some(format!("since {since}")),
    ))
    .await
    .map_err(|e| e.to_string())?;
    let mut after = None;
    let mut n = 0;
    loop {
        let (events, next) = db
            .audit_events(since.to_owned(), after, PAGE)
            .await
            .map_err(|e| e.to_string())?;
        for event in &events {
            write_event(event, json, out).map_err(|e| e.to_string())?;
            n += 1;
        }
        match next {
            Some(next) => after = Some(next),
            None => return Ok(n),
        }
    }
}

fn write_event(event: &Event, json: bool, out: &mut impl Write) -> std::io::Result<()> {
    if json {
        let line = serde_json::to_string(event).map_err(std::io::Error::other)?;
        return writeln!(out, "{line}");
    }
    writeln!(
        out,
        "{}  {}  {}  {}  from {}",
        event.at,
        event.actor,
        event.action,
        event.target.as_deref().unwrap_or("-"),
        event.address.as_deref().unwrap_or("-")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_one_line_of_text_or_json() {
        let event = Event {
            id: 1,
            at: "2026-12-05T21:00:00.000Z".into(),
            actor: "ann".into(),
            action: action::LEAD_VIEW.into(),
            target: Some("lead 7".into()),
            address: Some("10.0.0.5".into()),
        };
        let mut out = Vec::new();
        write_event(&event, false, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-12-05T21:00:00.000Z  ann  lead_view  lead 7  from 10.0.0.5\n"
        );
        let mut out = Vec::new();
        write_event(&event, true, &mut out).unwrap();
        let back: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(back["actor"], "ann");
        assert!(back.get("id").is_none());
    }
}
