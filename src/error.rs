//! The library's error type, and how a caller should handle each variant.

use std::path::{Path, PathBuf};

/// What a caller should do about an [`Error`]: the variants grouped by kind (see
/// [`Error::kind`]). A server maps kinds to status codes; the command line prints the message
/// and exits 2 for every kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Another process holds the database's write lock longer than the store waits for it
    /// (see [`crate::StoreOptions::busy_timeout`]). Nothing was written: retry later.
    RetryLater,
    /// The request contradicts what is stored (another writer got there first, an id reused
    /// for different content, an outcome already recorded). Re-read and decide again.
    Conflict,
    /// The input is not acceptable (an event, a time, a filter, a setting, a configuration).
    /// Fix it; retrying the same input fails the same way.
    InvalidInput,
    /// What the request names (a failure, a database file) does not exist.
    NotFound,
    /// The file is not a healstore database (a foreign SQLite file, or one written by a newer
    /// healstore). Nothing was changed.
    NotHealstore,
    /// The file is damaged, or a migration failed.
    Corrupt,
    /// The disk (or the database's size limit) is full. Nothing of the failed write was kept.
    DiskFull,
    /// The database (or its directory) cannot be written: read-only file, directory or file
    /// system, or missing permission.
    ReadOnly,
    /// Reading or writing a file failed (the database, an archive, an input file).
    Io,
    /// The store was closed before the request could be served.
    Closed,
    /// Any other database error.
    Internal,
}

impl ErrorKind {
    /// The kind as a stable machine-readable code (`retry_later`, `conflict`, `invalid_input`,
    /// `not_found`, `not_healstore`, `corrupt`, `disk_full`, `read_only`, `io`, `closed`,
    /// `internal`), for error records in JSON.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::RetryLater => "retry_later",
            ErrorKind::Conflict => "conflict",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::NotFound => "not_found",
            ErrorKind::NotHealstore => "not_healstore",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::DiskFull => "disk_full",
            ErrorKind::ReadOnly => "read_only",
            ErrorKind::Io => "io",
            ErrorKind::Closed => "closed",
            ErrorKind::Internal => "internal",
        }
    }
}

/// Everything that can go wrong in the library. [`Error::kind`] groups the variants by what a
/// caller should do; every message is one line that already says what happened (print it
/// alone: no variant carries a `source` that would repeat it).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database file could not be opened or created.
    #[error("cannot open database {}: {reason}", path.display())]
    Open { path: PathBuf, reason: String },

    /// What the request names does not exist (a failure id, a database file).
    #[error("{0}")]
    NotFound(String),

    /// The file is not a healstore database: another application's SQLite database (any
    /// schema object healstore did not create, another application id), or, where one is
    /// required, an empty file. `what` completes the sentence naming the file (see
    /// [`Error::foreign`] and [`Error::not_healstore`]).
    #[error("{} {what}", path.display())]
    NotHealstore { path: PathBuf, what: String },

    /// The file is damaged or is not an SQLite database at all.
    #[error("{} is corrupt or not an SQLite database: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },

    /// A strategy state cannot be rebuilt: its stream's earliest events are archived and the
    /// snapshot standing for them is missing or older. Nothing is decided on it (a default
    /// state would be a guess): put the snapshot back, or import the archives and the log
    /// into a new database, which rebuilds every state.
    #[error("{} is damaged: {reason}", path.display())]
    StateLost { path: PathBuf, reason: String },

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

    /// The append was queued behind another one it depends on (see
    /// [`crate::Store::submit_atomic_after`]), and that one was not stored: neither is this.
    /// Read the streams again and decide again.
    #[error("not stored: append {ticket}, which this one was decided after, was not stored")]
    DependencyFailed { ticket: u64 },

    /// An event id is already stored for an event with different content.
    #[error(
        "event id {event_id:?} is already stored at position {position} with different content"
    )]
    EventIdReused { event_id: String, position: i64 },

    /// Any other request that contradicts what is stored (an outcome already recorded...).
    #[error("conflict: {0}")]
    Conflict(String),

    /// An event failed validation (empty ids, a payload that does not fit its known type...).
    #[error("invalid event: {0}")]
    InvalidEvent(String),

    /// Any other input that is not acceptable (a time, a filter, a setting).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// The disk (or the file-size limit) is full. Nothing of the failed write was kept; writes
    /// succeed again once space returns.
    #[error("no space left, the write failed and nothing was stored: {0}")]
    DiskFull(String),

    /// The database cannot be written: a read-only file, directory or file system.
    #[error("read-only: {0}")]
    ReadOnly(String),

    /// Reading or writing a file failed.
    #[error("I/O error: {0}")]
    Io(String),

    /// Another process held the write lock longer than the store waits
    /// ([`crate::StoreOptions::busy_timeout`]); the message says what holds it when known.
    /// Nothing was written: retry later.
    #[error("the database is busy, retry later: {0}")]
    Busy(String),

    /// The store was closed (or its writer stopped) before the request could be served.
    #[error("the store is closed")]
    Closed,

    /// Any other database error: SQLite's message and result code.
    #[error("database error: {0}")]
    Database(String),
}

impl Error {
    /// What a caller should do about this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Busy(_) => ErrorKind::RetryLater,
            Error::WrongExpectedVersion { .. }
            | Error::DependencyFailed { .. }
            | Error::EventIdReused { .. }
            | Error::Conflict(_) => ErrorKind::Conflict,
            Error::InvalidEvent(_) | Error::InvalidInput(_) => ErrorKind::InvalidInput,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::NotHealstore { .. } | Error::SchemaTooNew { .. } => ErrorKind::NotHealstore,
            Error::Corrupt { .. } | Error::StateLost { .. } | Error::Migration(_) => {
                ErrorKind::Corrupt
            }
            Error::DiskFull(_) => ErrorKind::DiskFull,
            Error::ReadOnly(_) => ErrorKind::ReadOnly,
            Error::Io(_) | Error::Open { .. } => ErrorKind::Io,
            Error::Closed => ErrorKind::Closed,
            Error::Database(_) => ErrorKind::Internal,
        }
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// SQLite primary result codes that healstore distinguishes. sqlx classifies constraint
/// violations itself (`is_unique_violation`), but exposes other conditions only as the numeric
/// code, so they are named here, in one place.
pub(crate) mod sqlite_code {
    pub const PERM: i64 = 3;
    pub const BUSY: i64 = 5;
    pub const LOCKED: i64 = 6;
    pub const READONLY: i64 = 8;
    pub const IOERR: i64 = 10;
    pub const CORRUPT: i64 = 11;
    pub const FULL: i64 = 13;
    pub const CANTOPEN: i64 = 14;
    pub const CONSTRAINT: i64 = 19;
    pub const AUTH: i64 = 23;
    pub const NOTADB: i64 = 26;

    /// The extended result code of a database error.
    pub fn extended(err: &sqlx::Error) -> Option<i64> {
        let db = err.as_database_error()?;
        // (PostgreSQL's SQLSTATEs are mostly digits too: only SQLite's codes are these)
        db.try_downcast_ref::<sqlx::sqlite::SqliteError>()?;
        db.code()?.parse().ok()
    }

    /// The primary result code (the low byte of an extended code) of a database error.
    pub fn of(err: &sqlx::Error) -> Option<i64> {
        Some(extended(err)? & 0xff)
    }
}

/// Said of a busy database when nothing tells what holds its write lock.
pub(crate) const UNKNOWN_HOLDER: &str =
    "another process holds the write lock (a long import or archive?)";

/// The variant of a PostgreSQL error whose SQLSTATE class says more than "internal".
fn pg_error(err: &sqlx::Error, path: &Path, detail: &str) -> Option<Error> {
    let db = err.as_database_error()?;
    db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()?;
    let code = db.code()?;
    Some(match &code[..] {
        // lock_not_available (lock_timeout), deadlock, serialization, too many connections
        "55P03" | "40P01" | "40001" | "53300" => Error::Busy(format!(
            "{} is busy: another writer holds its append lock ({detail})",
            path.display()
        )),
        "53100" => Error::DiskFull(detail.to_owned()),
        "25006" | "42501" => Error::ReadOnly(format!("cannot write {}: {detail}", path.display())),
        "3D000" | "28000" | "28P01" => Error::Open {
            path: path.to_path_buf(),
            reason: detail.to_owned(),
        },
        _ => return None,
    })
}

/// SQLite's message, once, with its result code: `database is locked (SQLite code 5)`.
fn describe(err: &sqlx::Error) -> String {
    match err.as_database_error() {
        Some(db) => match sqlite_code::extended(err) {
            Some(code) => format!("{} (SQLite code {code})", db.message()),
            None => db.message().to_owned(),
        },
        None => match err {
            sqlx::Error::Io(e) => e.to_string(),
            other => other.to_string(),
        },
    }
}

impl Error {
    /// Another application's SQLite database; `detail` says how it shows.
    pub(crate) fn foreign(path: &Path, detail: impl std::fmt::Display) -> Error {
        Error::NotHealstore {
            path: path.to_path_buf(),
            what: format!("is an SQLite database but not a healstore database ({detail})"),
        }
    }

    /// A file that is not a healstore database for `reason` (`the file is empty`).
    pub(crate) fn not_healstore(path: &Path, reason: impl std::fmt::Display) -> Error {
        Error::NotHealstore {
            path: path.to_path_buf(),
            what: format!("is not a healstore database: {reason}"),
        }
    }

    /// Maps a database error to the variant of its kind, naming the file where that helps.
    pub(crate) fn from_db(err: sqlx::Error, path: &Path) -> Error {
        let detail = describe(&err);
        if let Some(e) = pg_error(&err, path, &detail) {
            return e;
        }
        match sqlite_code::of(&err) {
            Some(sqlite_code::FULL) => Error::DiskFull(detail),
            Some(sqlite_code::CORRUPT) | Some(sqlite_code::NOTADB) => Error::Corrupt {
                path: path.to_path_buf(),
                reason: detail,
            },
            Some(sqlite_code::CANTOPEN) => Error::Open {
                path: path.to_path_buf(),
                reason: detail,
            },
            Some(sqlite_code::READONLY) | Some(sqlite_code::PERM) | Some(sqlite_code::AUTH) => {
                Error::ReadOnly(format!("cannot write {}: {detail}", path.display()))
            }
            Some(sqlite_code::IOERR) => Error::Io(format!("{}: {detail}", path.display())),
            Some(sqlite_code::BUSY) | Some(sqlite_code::LOCKED) => Error::Busy(format!(
                "{} ({detail})",
                crate::store::holder::describe(path)
            )),
            _ => match err {
                sqlx::Error::Io(e) => Error::Io(format!("{}: {e}", path.display())),
                sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => Error::Closed,
                sqlx::Error::PoolTimedOut => Error::Busy(format!(
                    "no database connection became free in time: {detail}"
                )),
                _ => Error::Database(detail),
            },
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

impl Error {
    /// Maps a file-system error to the variant of its kind; `what` says what was being done
    /// (`cannot write /x/archive.gz`).
    pub(crate) fn from_io(what: impl std::fmt::Display, err: &std::io::Error) -> Error {
        use std::io::ErrorKind as K;
        let message = format!("{what}: {err}");
        match err.kind() {
            K::StorageFull | K::QuotaExceeded | K::FileTooLarge => Error::DiskFull(message),
            K::ReadOnlyFilesystem | K::PermissionDenied => Error::ReadOnly(message),
            K::NotFound => Error::NotFound(message),
            _ => Error::Io(message),
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Error {
        Error::from_db(err, Path::new("the database"))
    }
}
