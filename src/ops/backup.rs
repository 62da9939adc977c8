//! `backup PATH`: a consistent copy of the live database through SQLite's
//! online backup API, while the service keeps serving.
//!
//! The copy is read inside one read transaction, so it is the database as of
//! one instant; in WAL mode that blocks no writer, and the backup never
//! restarts because of them. Pages are copied in steps with short pauses so
//! the copy does not starve the service of I/O. It is written to a temporary
//! name, checked with `PRAGMA integrity_check`, and only then renamed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

/// Pages copied per step (4 KiB pages: 16 MiB).
const PAGES_PER_STEP: std::os::raw::c_int = 4096;
/// Pause between steps.
const PAUSE: Duration = Duration::from_millis(5);

/// Copies the database at `source` to `dest`; refuses to overwrite an
/// existing file unless `force`. Returns what `integrity_check` said of the
/// copy (`ok` when sound).
pub fn run(source: &Path, dest: &Path, force: bool) -> Result<String, String> {
    if dest.exists() && !force {
        return Err(format!(
            "{} exists; pass --force to overwrite it",
            dest.display()
        ));
    }
    if !source.exists() {
        return Err(format!("{}: no such database", source.display()));
    }
    let partial = with_suffix(dest, ".partial");
    let _ = std::fs::remove_file(&partial);
    let result = copy(source, &partial).and_then(|()| check(&partial));
    match result {
        Ok(report) if report == "ok" => {
            std::fs::rename(&partial, dest)
                .map_err(|e| format!("cannot rename to {}: {e}", dest.display()))?;
            Ok(report)
        }
        Ok(report) => {
            let _ = std::fs::remove_file(&partial);
            Err(format!("the copy failed integrity_check: {report}"))
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

fn copy(source: &Path, dest: &Path) -> Result<(), String> {
    let err = |what: &str, e: rusqlite::Error| format!("{what}: {e}");
    let src = Connection::open_with_flags(source, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| err(&source.display().to_string(), e))?;
    src.busy_timeout(Duration::from_secs(10))
        .map_err(|e| err("busy_timeout", e))?;
    // Hold one read transaction for the whole copy: a fixed snapshot.
    src.execute_batch("BEGIN; SELECT count(*) FROM sqlite_schema;")
        .map_err(|e| err("cannot start the read transaction", e))?;
    let mut dst = Connection::open(dest).map_err(|e| err(&dest.display().to_string(), e))?;
    {
        let backup = Backup::new(&src, &mut dst).map_err(|e| err("cannot start the backup", e))?;
        loop {
            match backup
                .step(PAGES_PER_STEP)
                .map_err(|e| err("backup step failed", e))?
            {
                StepResult::Done => break,
                // More, Busy, Locked: wait a moment and go on.
                _ => std::thread::sleep(PAUSE),
            }
        }
    }
    let _ = src.execute_batch("COMMIT");
    // A standalone file: no WAL beside it to forget when copying it around.
    dst.pragma_update(None, "journal_mode", "DELETE")
        .map_err(|e| err("cannot set the copy's journal mode", e))?;
    Ok(())
}

/// `PRAGMA integrity_check` of the database at `path`, its lines joined.
pub fn check(path: &Path) -> Result<String, String> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut stmt = conn
        .prepare("PRAGMA integrity_check")
        .map_err(|e| e.to_string())?;
    let lines: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .map_err(|e| e.to_string())?
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    Ok(lines.join("\n"))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
