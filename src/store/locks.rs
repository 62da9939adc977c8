//! Who else has the database open, from SQLite's file locks.
//!
//! Every SQLite connection in WAL mode holds a shared POSIX lock on bytes of
//! the database file for as long as it is open. A lock test (`F_GETLK`)
//! over those bytes finds the locks of other processes; the process's own
//! never conflict with it.

use std::fs::File;
use std::mem::ManuallyDrop;
use std::os::fd::AsRawFd;
use std::path::Path;

/// SQLite's `PENDING_BYTE + 2`: the first byte of its shared-lock range.
const SHARED_FIRST: libc::off_t = 0x4000_0000 + 2;
/// SQLite's `SHARED_SIZE`.
const SHARED_SIZE: libc::off_t = 510;

/// Whether a write lock over SQLite's shared-lock bytes of `file` would
/// conflict with a lock someone holds, asked with `command`: `F_GETLK`
/// (other processes' locks) or `F_OFD_GETLK` (this process's too).
pub(crate) fn shared_lock_held(file: &File, command: libc::c_int) -> std::io::Result<bool> {
    // SAFETY: an all-zero flock is a valid value of the C struct.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = SHARED_FIRST;
    lock.l_len = SHARED_SIZE;
    // SAFETY: a valid descriptor, a lock-test command and a pointer to a
    // flock that lives across the call.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), command, &mut lock) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(i32::from(lock.l_type) != libc::F_UNLCK)
}

/// Tells whether another process (the service, another command, the
/// `sqlite3` shell) has the database open.
pub struct OtherProcesses {
    /// Never closed: closing any descriptor of the file would release every
    /// POSIX lock this process's own connections hold on it. One descriptor
    /// per probe, for the life of the process.
    file: ManuallyDrop<File>,
}

impl OtherProcesses {
    /// A probe of the database at `path`.
    pub fn of(path: &Path) -> std::io::Result<OtherProcesses> {
        Ok(OtherProcesses {
            file: ManuallyDrop::new(File::open(path)?),
        })
    }

    /// Whether another process holds the database open now. A failed lock
    /// test says yes: it is the careful answer.
    pub fn present(&self) -> bool {
        shared_lock_held(&self.file, libc::F_GETLK).unwrap_or(true)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    use super::OtherProcesses;

    /// Names the database [`holder`] opens.
    const HOLDER_DB: &str = "CRM_TEST_HOLDER_DB";

    /// Not a test: the other process of the test below. Opens
    /// `$CRM_TEST_HOLDER_DB` and keeps it open until stdin closes.
    #[test]
    #[ignore = "helper process of another_process_holding_the_database_is_seen"]
    fn holder() {
        let Some(path) = std::env::var_os(HOLDER_DB) else {
            return;
        };
        let conn = rusqlite::Connection::open(path).unwrap();
        let _: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        println!("open");
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut rest);
    }

    #[test]
    fn another_process_holding_the_database_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crm.sqlite3");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x);")
            .unwrap();
        let probe = OtherProcesses::of(&path).unwrap();
        assert!(
            !probe.present(),
            "this process's own connection is not another"
        );

        let mut other = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "store::locks::tests::holder",
                "--nocapture",
            ])
            .env(HOLDER_DB, &path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(other.stdout.take().unwrap()).lines();
        assert!(
            lines.any(|l| l.unwrap().trim() == "open"),
            "the other process opened the database"
        );
        assert!(probe.present(), "another process has it open");

        drop(other.stdin.take());
        other.wait().unwrap();
        assert!(!probe.present(), "the other process is gone");
        // The probe's own descriptor left this process's lock alone.
        conn.execute("INSERT INTO t VALUES (1)", []).unwrap();
        assert!(
            crate::store::locks::shared_lock_held(&probe.file, libc::F_OFD_GETLK).unwrap(),
            "this process still holds its lock"
        );
    }
}
