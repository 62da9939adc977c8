//! WAL checkpoints, kept off the path of the deliveries waiting for an answer.
//!
//! SQLite's automatic checkpoint runs inside the COMMIT that crosses its
//! threshold: it copies every page the WAL holds into the database file and
//! syncs both, which takes 10-70 ms on a large database, and every delivery
//! queued behind that commit waits as long. Instead:
//!
//! - a checkpointer thread with a connection of its own copies committed
//!   frames into the database shortly after each commit, in PASSIVE mode,
//!   which never blocks the writer or the readers;
//! - once the WAL holds [`RESTART_FRAMES`] frames, the writer, between
//!   batches and after answering, runs a passive checkpoint itself. Little
//!   is left to copy by then, and SQLite starts writing at the beginning of
//!   the WAL file again only for a writer that began its transaction while
//!   the whole log was copied: without this the file would grow forever.
//!
//! Durability is SQLite's own: a checkpoint syncs the WAL before copying and
//! the database before the log is reused, whichever connection runs it.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::hooks::Wal;
use rusqlite::{Connection, OpenFlags};

/// WAL size (in 4 KiB frames) at which the writer restarts the log, so the
/// WAL file stays near 64 MiB. Each restart stops the writer for a few
/// milliseconds (two syncs): at 1,000 deliveries/s (8 frames each) every
/// 2 s. With 4,000 frames it came every 0.5 s and held 1 % of deliveries
/// up, which was the p99 (3 ms instead of 1.7 ms with 1M leads).
pub(super) const RESTART_FRAMES: i32 = 16_000;
/// The checkpointer runs at most this often, so that pages written by
/// several commits are copied and synced once.
const PASS_INTERVAL: Duration = Duration::from_millis(10);

thread_local! {
    /// Frames in the WAL after the last commit on this thread's connection.
    static WAL_FRAMES: Cell<i32> = const { Cell::new(0) };
}

/// Replaces SQLite's automatic checkpoint on the writer's connection with a
/// count of the frames in the WAL.
pub(super) fn watch(conn: &Connection) {
    conn.wal_hook(Some(record_frames));
}

fn record_frames(_: &Wal, frames: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.with(|f| f.set(frames));
    Ok(())
}

/// On the writer thread, between batches: restarts the log once it is
/// long. The checkpointer stands aside meanwhile, so that the writer's
/// checkpoint is not refused as busy, and what is left to copy is what was
/// committed since the checkpointer's last pass.
pub(super) fn restart_if_due(conn: &Connection, checkpointer: &Checkpointer) {
    if WAL_FRAMES.with(Cell::get) < RESTART_FRAMES {
        return;
    }
    let turn = &checkpointer.turn;
    turn.writer_waits.store(true, Ordering::SeqCst);
    if turn.pass_running.load(Ordering::SeqCst) {
        // Tried again after the next batch, once that pass is over.
        return;
    }
    match passive(conn) {
        // Everything copied: the next transaction writes from the start.
        Ok(Pass {
            busy: false,
            log,
            copied,
        }) if copied == log => {
            WAL_FRAMES.with(|f| f.set(0));
            turn.writer_waits.store(false, Ordering::SeqCst);
        }
        // The checkpointer had just started, or a reader still needs old
        // frames: tried again after the next batch.
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "writer checkpoint failed"),
    }
}

/// What a passive checkpoint did.
struct Pass {
    /// Another checkpoint was running.
    busy: bool,
    /// Frames in the WAL.
    log: i64,
    /// Frames copied into the database so far.
    copied: i64,
}

fn passive(conn: &Connection) -> rusqlite::Result<Pass> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok(Pass {
            busy: r.get::<_, i64>(0)? != 0,
            log: r.get(1)?,
            copied: r.get(2)?,
        })
    })
}

/// Who checkpoints when: the writer's restart goes first.
#[derive(Default)]
struct Turn {
    /// The writer wants to restart the log.
    writer_waits: AtomicBool,
    /// The checkpointer is in a pass.
    pass_running: AtomicBool,
}

/// The checkpointer thread, woken after each commit.
pub(super) struct Checkpointer {
    kick: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
    turn: Arc<Turn>,
}

impl Checkpointer {
    /// Starts the thread for the database at `path`.
    pub(super) fn start(path: &Path) -> Checkpointer {
        let (kick, rx) = sync_channel(1);
        let path = path.to_owned();
        let turn = Arc::new(Turn::default());
        let shared = turn.clone();
        let thread = std::thread::Builder::new()
            .name("crm-checkpoint".into())
            .spawn(move || run(path, rx, &shared))
            .inspect_err(|e| tracing::error!(error = %e, "cannot start the checkpointer; the writer checkpoints alone"))
            .ok();
        Checkpointer {
            kick: thread.is_some().then_some(kick),
            thread,
            turn,
        }
    }

    /// Says a commit added frames; never blocks.
    pub(super) fn kick(&self) {
        if let Some(kick) = &self.kick {
            let _ = kick.try_send(());
        }
    }

    /// Stops the thread after its current pass.
    pub(super) fn stop(&mut self) {
        self.kick.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(path: PathBuf, kicks: Receiver<()>, turn: &Turn) {
    let mut open: Option<Connection> = None;
    // The last failure logged, so that a lasting one is logged once.
    let mut failing: Option<String> = None;
    while kicks.recv().is_ok() {
        let started = Instant::now();
        turn.pass_running.store(true, Ordering::SeqCst);
        if turn.writer_waits.load(Ordering::SeqCst) {
            turn.pass_running.store(false, Ordering::SeqCst);
            std::thread::sleep(PASS_INTERVAL);
            continue;
        }
        let result = match &open {
            Some(conn) => pass(conn),
            None => self::open(&path)
                .map_err(|e| e.to_string())
                .and_then(|conn| pass(open.insert(conn))),
        };
        match result {
            Ok(_) => {
                if failing.take().is_some() {
                    tracing::info!("checkpoints work again");
                }
            }
            Err(e) => {
                if failing.as_ref() != Some(&e) {
                    tracing::warn!(error = %e, "checkpoint failed; the WAL grows until it works");
                    failing = Some(e);
                }
                // Opened again on the next pass: the file may have been
                // replaced or its filesystem remounted.
                open = None;
            }
        }
        turn.pass_running.store(false, Ordering::SeqCst);
        std::thread::sleep(PASS_INTERVAL.saturating_sub(started.elapsed()));
    }
}

/// A passive checkpoint, then the pages it copied flushed to disk. SQLite
/// syncs the database file only when a checkpoint reaches the end of the
/// log, which under steady traffic is the writer's restart: it would flush
/// every page copied since the last restart while deliveries wait.
fn pass(conn: &Connection) -> Result<Pass, String> {
    let pass = passive(conn).map_err(|e| e.to_string())?;
    sync(conn).map_err(|e| format!("cannot sync the database file: {e}"))?;
    Ok(pass)
}

/// Flushes the database file through the connection's own file handle.
///
/// Not through a descriptor of our own: POSIX locks belong to the process,
/// and closing any descriptor of the file releases every lock the
/// process's connections hold on it (SQLite keeps its own descriptors open
/// for that reason). Without those locks another process could take the
/// database for its own, and a last connection closing deletes the WAL.
fn sync(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::ffi;
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: the handle is this thread's open connection; the file
    // pointer SQLite gives back lives as long as the connection, which
    // outlives this call, and its methods are the VFS's own.
    let rc = unsafe {
        let rc = ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_FILE_POINTER,
            (&raw mut file).cast(),
        );
        match file
            .as_ref()
            .and_then(|f| f.pMethods.as_ref())
            .and_then(|m| m.xSync)
        {
            Some(x_sync) if rc == ffi::SQLITE_OK => x_sync(file, ffi::SQLITE_SYNC_NORMAL),
            // No file yet (nothing was ever read or written): nothing to flush.
            _ => rc,
        }
    };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), None))
    }
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // A passive checkpoint never waits for a lock.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Checkpointer, RESTART_FRAMES};
    use crate::store::Db;

    /// Whether some connection, of this process too, holds SQLite's
    /// shared lock on the database file `probe` is open on (an open file
    /// description lock test conflicts with this process's own locks).
    fn shared_lock_held(probe: &std::fs::File) -> bool {
        crate::store::locks::shared_lock_held(probe, libc::F_OFD_GETLK).unwrap()
    }

    /// POSIX locks belong to the process and go with the first `close` of
    /// any descriptor of the file: a checkpointer that opened the database
    /// file itself and closed it (when stopped, or after a failed pass)
    /// took every connection's lock with it, and another process could then
    /// take the database as its own (a last connection closing checkpoints
    /// and deletes the WAL the service still writes to).
    #[test]
    fn the_checkpointer_leaves_the_connections_locks_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crm.sqlite3");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1);",
        )
        .unwrap();
        // Kept open until the end: closing it would release the locks too.
        let probe = std::fs::File::open(&path).unwrap();
        assert!(shared_lock_held(&probe), "a WAL connection holds the lock");

        let mut checkpointer = Checkpointer::start(&path);
        conn.execute("INSERT INTO t VALUES (2)", []).unwrap();
        checkpointer.kick();
        std::thread::sleep(Duration::from_millis(200));
        checkpointer.stop();

        assert!(
            shared_lock_held(&probe),
            "the connection still holds its lock after the checkpointer's passes and stop"
        );
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 2);
    }

    /// Bytes of one WAL frame of a 4 KiB page.
    const FRAME: u64 = 4096 + 24;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_is_reused_under_steady_writes_and_nothing_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crm.sqlite3");
        let db = Db::open(&path, Duration::from_secs(5)).unwrap();
        let commits = i64::from(RESTART_FRAMES);
        // Four pages of text per row: the row's page and three overflow
        // pages, each a WAL frame of its commit.
        let filler = "x".repeat(14_000);
        for i in 0..commits {
            let description = format!("{i} {filler}");
            db.write(move |conn| {
                conn.execute(
                    "INSERT INTO leads (description, created_at, updated_at) VALUES (?1, 'now', 'now')",
                    crate::args![description],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        }
        // Without restarts the WAL would hold eight frames per commit at
        // least (the row's page, three overflow pages, and a page of each of
        // the four list indexes of schema version 7): eight times the
        // restart size. How far past the restart size
        // it gets depends on how long the checkpointer's passes take, which
        // on a loaded machine can be long at this rate (several times the
        // service's at 1,000 deliveries/s).
        let wal = std::fs::metadata(dir.path().join("crm.sqlite3-wal"))
            .unwrap()
            .len();
        assert!(
            wal < 8 * commits as u64 * FRAME / 2,
            "the WAL grew to {wal} bytes"
        );
        db.close();
        // Closing checkpoints and empties the log; every row is in the file.
        let wal = std::fs::metadata(dir.path().join("crm.sqlite3-wal")).map_or(0, |m| m.len());
        assert_eq!(wal, 0);
        let conn = rusqlite::Connection::open(&path).unwrap();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM leads", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, commits);
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }
}
