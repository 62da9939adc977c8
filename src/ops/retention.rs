//! `crm-responder retention [--dry-run]`: runs the retention job once, or
//! only counts what it would delete.

use std::io::Write;

use crate::config::Config;
use crate::retention::{self, Kind, Part};
use crate::store::Db;

/// Runs (or, with `dry_run`, counts) retention under `config`; prints one
/// line per kind to `out`.
pub async fn command(
    db: &Db,
    config: &Config,
    dry_run: bool,
    out: &mut impl Write,
) -> Result<(), String> {
    let parts = retention::run(db, config, dry_run, None)
        .await
        .map_err(|e| e.to_string())?;
    print(&parts, dry_run, out).map_err(|e| e.to_string())
}

/// The report: each kind with its limit, cut-off and count; the kinds
/// without a limit as kept.
pub fn print(parts: &[Part], dry_run: bool, out: &mut impl Write) -> std::io::Result<()> {
    if dry_run {
        writeln!(out, "retention dry run: nothing is deleted")?;
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    for kind in Kind::ALL {
        match parts.iter().find(|p| p.kind == kind) {
            Some(p) => writeln!(
                out,
                "{:15} {verb} {} older than {} ({} days)",
                kind.as_str(),
                p.count,
                p.cutoff,
                p.days
            )?,
            None => writeln!(out, "{:15} kept for ever (no limit set)", kind.as_str())?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_each_kind_its_cutoff_and_count() {
        let parts = [Part {
            kind: Kind::RawDeliveries,
            days: 30,
            cutoff: "2026-11-05T00:00:00.000Z".into(),
            count: 12,
        }];
        let mut out = Vec::new();
        print(&parts, true, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(
                "raw_deliveries  would delete 12 older than 2026-11-05T00:00:00.000Z (30 days)"
            ),
            "{text}"
        );
        assert!(text.contains("transcripts     kept for ever"), "{text}");
    }
}
