//! The spool: deliveries acknowledged while storage could not take them.
//!
//! When the agent is waiting (Jivo's `chat_accepted`/`chat_updated`) and the
//! database cannot answer within the deadline, the delivery is written here
//! (fsynced, one file each) before the provisional 200 goes out, and applied
//! once storage returns. Applying is idempotent (the inbox key), so a
//! delivery that also reached the database late is not applied twice.
//! Anything that cannot be spooled is answered 503 instead: nothing is
//! acknowledged that is not durable somewhere.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::event::Platform;

/// One spooled delivery.
#[derive(Debug, Serialize, Deserialize)]
pub struct Spooled {
    /// `jivo`, `rocketchat`, `livechat`.
    pub platform: String,
    /// When it arrived (RFC 3339).
    pub received_at: String,
    /// The body, base64.
    pub body: String,
}

impl Spooled {
    /// The body bytes.
    pub fn body(&self) -> Result<Vec<u8>, String> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.body)
            .map_err(|e| e.to_string())
    }

    /// The platform.
    pub fn platform(&self) -> Option<Platform> {
        Platform::parse(&self.platform)
    }
}

/// A directory of spooled deliveries.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// Uses (creating if missing) `dir`.
    pub fn open(dir: &Path) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        Ok(Spool {
            dir: dir.to_owned(),
        })
    }

    /// Writes a delivery durably: to a temporary name, fsynced, renamed, and
    /// the directory fsynced, so a crash leaves either nothing or the whole file.
    pub fn put(&self, platform: Platform, received_at: &str, body: &[u8]) -> io::Result<PathBuf> {
        let record = Spooled {
            platform: platform.as_str().into(),
            received_at: received_at.into(),
            body: base64::engine::general_purpose::STANDARD.encode(body),
        };
        let name = format!(
            "{}-{}.json",
            time::OffsetDateTime::now_utc().unix_timestamp_nanos(),
            &crate::platforms::body_hash(body)[..16]
        );
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let path = self.dir.join(&name);
        let written = (|| {
            let mut file = File::create(&tmp)?;
            file.write_all(&serde_json::to_vec(&record).map_err(io::Error::other)?)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        })();
        if let Err(e) = written {
            // A full disk leaves a partial file: it must not hold the space
            // (or an inode) that recovery needs. Not acknowledged either way.
            let _ = fs::remove_file(&tmp);
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Ok(path)
    }

    /// Spooled files, oldest first.
    pub fn list(&self) -> io::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        files.sort();
        Ok(files)
    }

    /// Removes every spooled delivery `erased(platform, body)` says
    /// belongs to an erased person, its bytes overwritten with zeros and
    /// synced first (a plain unlink leaves them in the file's blocks for
    /// anyone who opens the disk). Answers how many were removed; files that
    /// cannot be read are left for the drain to report.
    pub fn remove_matching(&self, erased: impl Fn(&str, &[u8]) -> bool) -> io::Result<u64> {
        let mut removed = 0;
        for path in self.list()? {
            let Ok(spooled) = Spool::read(&path) else {
                continue;
            };
            let Ok(body) = spooled.body() else { continue };
            if !erased(&spooled.platform, &body) {
                continue;
            }
            overwrite_and_remove(&path)?;
            removed += 1;
        }
        if removed > 0 {
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(removed)
    }

    /// Removes one spooled delivery of an erased person the way
    /// [`Spool::remove_matching`] does: zeroed and synced first.
    pub fn wipe(&self, path: &Path) -> io::Result<()> {
        overwrite_and_remove(path)?;
        File::open(&self.dir)?.sync_all()
    }

    /// How many deliveries wait.
    pub fn depth(&self) -> usize {
        self.list().map(|l| l.len()).unwrap_or(0)
    }

    /// Reads one spooled delivery.
    pub fn read(path: &Path) -> io::Result<Spooled> {
        serde_json::from_slice(&fs::read(path)?).map_err(io::Error::other)
    }
}

/// Overwrites `path` with zeros, syncs it, and removes it: a plain unlink
/// would leave its bytes in the file's blocks.
fn overwrite_and_remove(path: &Path) -> io::Result<()> {
    let len = fs::metadata(path)?.len();
    let mut file = fs::OpenOptions::new().write(true).open(path)?;
    file.write_all(&vec![0u8; len as usize])?;
    file.sync_all()?;
    fs::remove_file(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_list_read_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let a = spool
            .put(Platform::Jivo, "2026-01-01T00:00:00.000Z", b"{\"a\":1}")
            .unwrap();
        spool
            .put(Platform::Jivo, "2026-01-01T00:00:01.000Z", b"\xff binary")
            .unwrap();
        assert_eq!(spool.depth(), 2);
        let first = Spool::read(&spool.list().unwrap()[0]).unwrap();
        assert_eq!(first.body().unwrap(), b"{\"a\":1}");
        assert_eq!(first.platform(), Some(Platform::Jivo));
        fs::remove_file(a).unwrap();
        assert_eq!(
            Spool::read(&spool.list().unwrap()[0])
                .unwrap()
                .body()
                .unwrap(),
            b"\xff binary"
        );
    }
}
