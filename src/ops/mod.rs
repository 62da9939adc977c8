//! Operator commands that work on the database directly, one file each:
//! `import`, `export`, `replay`, `backup`, `explain`, `preview`,
//! `migrate-store`, `token`, `erase`, `export-person`, `outbound`, `audit` and `retention`. They run as their own process beside (or instead of) the
//! service; SQLite's locking and the busy timeout keep both consistent.

pub mod audit_log;
pub mod backup;
pub mod erase;
pub mod explain;
pub mod export;
pub mod import;
pub mod migrate_store;
pub mod outbound;
pub mod preview;
pub mod replay;
pub mod retention;
pub mod tokens;

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar on stderr when it is a terminal; hidden otherwise (CI,
/// pipes, log files), so output stays clean. `counts` is the indicatif
/// template of the position, e.g. `{bytes}/{total_bytes}`.
pub fn progress(total: u64, counts: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let template = format!("{{elapsed_precise}} [{{wide_bar}}] {counts} ({{eta}} left)");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
