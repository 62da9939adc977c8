//! The one error type of storage, and how each store's errors are sorted
//! into it: what a sender should retry (a 503) and what is a bug (a 500).

use rusqlite::ErrorCode;

/// A storage failure, classified for the HTTP layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DbError {
    /// The database cannot be used right now (locked, disk full, read-only,
    /// I/O error): the sender should retry.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A bug: bad SQL, a violated invariant, a panic.
    #[error("storage error: {0}")]
    Internal(String),
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(
                ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::DiskFull
                | ErrorCode::ReadOnly
                | ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
                | ErrorCode::OutOfMemory
                | ErrorCode::FileLockingProtocolFailed
                | ErrorCode::PermissionDenied,
            ) => DbError::Unavailable(e.to_string()),
            _ => DbError::Internal(e.to_string()),
        }
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        let transient = match e.code() {
            // Connection trouble, too many clients, shutdown, a cancelled
            // (timed-out) statement, lock timeouts, serialization conflicts
            // and a standby after failover all pass: the sender should retry.
            Some(code) => {
                matches!(&code.code()[..2], "08" | "53" | "57" | "58" | "40")
                    || *code == SqlState::LOCK_NOT_AVAILABLE
                    || *code == SqlState::READ_ONLY_SQL_TRANSACTION
            }
            // No server error: the connection failed, closed or timed out,
            // unless a value could not be converted (a bug).
            None => {
                let text = e.to_string();
                e.is_closed() || !(text.contains("serializ") || text.contains("deserializ"))
            }
        };
        let text = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        };
        if transient {
            DbError::Unavailable(text)
        } else {
            DbError::Internal(text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::ffi;

    fn classify(code: std::ffi::c_int) -> DbError {
        DbError::from(rusqlite::Error::SqliteFailure(ffi::Error::new(code), None))
    }

    #[test]
    fn transient_storage_failures_are_unavailable_down_to_extended_codes() {
        for code in [
            ffi::SQLITE_BUSY,
            ffi::SQLITE_BUSY_SNAPSHOT,
            ffi::SQLITE_LOCKED,
            ffi::SQLITE_FULL,
            ffi::SQLITE_READONLY,
            ffi::SQLITE_READONLY_RECOVERY,
            ffi::SQLITE_READONLY_CANTLOCK,
            ffi::SQLITE_READONLY_DBMOVED,
            ffi::SQLITE_READONLY_DIRECTORY,
            ffi::SQLITE_IOERR,
            ffi::SQLITE_IOERR_WRITE,
            ffi::SQLITE_IOERR_FSYNC,
            ffi::SQLITE_IOERR_SHMOPEN,
            ffi::SQLITE_IOERR_NOMEM,
            ffi::SQLITE_CANTOPEN,
            ffi::SQLITE_NOMEM,
            ffi::SQLITE_PROTOCOL,
            ffi::SQLITE_PERM,
        ] {
            assert!(
                matches!(classify(code), DbError::Unavailable(_)),
                "code {code}"
            );
        }
    }

    #[test]
    fn bugs_and_damage_are_internal() {
        for code in [
            ffi::SQLITE_CONSTRAINT_UNIQUE,
            ffi::SQLITE_ERROR,
            ffi::SQLITE_MISUSE,
            ffi::SQLITE_CORRUPT,
        ] {
            assert!(
                matches!(classify(code), DbError::Internal(_)),
                "code {code}"
            );
        }
    }
}
