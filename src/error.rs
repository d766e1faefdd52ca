//! The library's error type, and how a caller should handle each variant.

use std::path::PathBuf;

/// Everything that can go wrong in the library.
///
/// Variants are grouped by what a caller should do:
/// - *Fix the input and try again*: [`Error::InvalidEvent`], [`Error::InvalidInput`].
/// - *Re-read the stream and decide again*: [`Error::WrongExpectedVersion`].
/// - *A bug in the caller*: [`Error::EventIdReused`] (one id used for two different events).
/// - *Fix the environment*: [`Error::Open`], [`Error::NotHealstore`], [`Error::Corrupt`],
///   [`Error::SchemaTooNew`], [`Error::DiskFull`].
/// - *Retry later*: [`Error::Database`] when it wraps a transient I/O failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database file could not be opened or created.
    #[error("cannot open database {}: {reason}", path.display())]
    Open { path: PathBuf, reason: String },

    /// The file is an SQLite database, but not one that healstore created.
    #[error("{} is an SQLite database but not a healstore database", path.display())]
    NotHealstore { path: PathBuf },

    /// The file is damaged or is not an SQLite database at all.
    #[error("{} is corrupt or not an SQLite database: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },

    /// The database was written by a newer healstore. Nothing was changed.
    #[error(
        "database schema version {found} is newer than this healstore supports ({supported}); \
         upgrade healstore"
    )]
    SchemaTooNew { found: i64, supported: i64 },

    /// A migration failed; the transaction was rolled back and nothing was changed.
    #[error("migration failed: {0}")]
    Migration(String),

    /// An append stated the version it expected its stream to be at, and another writer got
    /// there first. Nothing was written: read the stream again and decide again.
    #[error("wrong expected version for stream {stream:?}: expected {expected}, found {actual}")]
    WrongExpectedVersion {
        stream: String,
        expected: String,
        actual: u64,
    },

    /// An event id is already stored for an event with different content.
    #[error(
        "event id {event_id:?} is already stored at position {position} with different content"
    )]
    EventIdReused { event_id: String, position: i64 },

    /// An event failed validation (empty ids, a payload that does not fit its known type...).
    #[error("invalid event: {0}")]
    InvalidEvent(String),

    /// Any other input that is not acceptable (a time, a filter, a setting).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// The disk (or the file-size limit) is full. Nothing of the failed write was kept; writes
    /// succeed again once space returns.
    #[error("database or disk is full: {0}")]
    DiskFull(String),

    /// The store was closed (or its writer stopped) before the request could be served.
    #[error("the store is closed")]
    Closed,

    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// SQLite primary result codes that healstore distinguishes. sqlx classifies constraint
/// violations itself (`is_unique_violation`), but exposes other conditions only as the numeric
/// code, so they are named here, in one place.
pub(crate) mod sqlite_code {
    pub const BUSY: i64 = 5;
    pub const LOCKED: i64 = 6;
    pub const CORRUPT: i64 = 11;
    pub const CONSTRAINT: i64 = 19;
    pub const FULL: i64 = 13;
    pub const CANTOPEN: i64 = 14;
    pub const NOTADB: i64 = 26;

    /// The primary result code (the low byte of an extended code) of a database error.
    pub fn of(err: &sqlx::Error) -> Option<i64> {
        let db = err.as_database_error()?;
        let code: i64 = db.code()?.parse().ok()?;
        Some(code & 0xff)
    }
}

impl Error {
    /// Maps a database error to a more specific variant where one exists.
    pub(crate) fn from_db(err: sqlx::Error, path: &std::path::Path) -> Error {
        match sqlite_code::of(&err) {
            Some(sqlite_code::FULL) => Error::DiskFull(err.to_string()),
            Some(sqlite_code::CORRUPT) | Some(sqlite_code::NOTADB) => Error::Corrupt {
                path: path.to_path_buf(),
                reason: err.to_string(),
            },
            Some(sqlite_code::CANTOPEN) => Error::Open {
                path: path.to_path_buf(),
                reason: err.to_string(),
            },
            _ => Error::Database(err),
        }
    }

    /// True when the error is SQLite's "busy" or "locked": another connection holds the lock
    /// longer than the busy timeout. Such an operation can be retried as a whole.
    pub(crate) fn is_busy(err: &sqlx::Error) -> bool {
        matches!(
            sqlite_code::of(err),
            Some(sqlite_code::BUSY) | Some(sqlite_code::LOCKED)
        )
    }
}
