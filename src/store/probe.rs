//! A look, without a query, at whether anyone committed to the database since the last look.
//!
//! In WAL mode every commit, by any connection of any process, rewrites the WAL-index header:
//! the first 96 bytes of the `-shm` file, two copies of a 48-byte record holding the WAL's
//! frame count, checksums, salts and a change counter (the layout is documented with SQLite's
//! file formats, "The WAL-Index Format"). A reader learns of new commits only through that
//! header, so while those bytes are what they were, the database holds no commit a query would
//! see that it did not see before. Reading them is one `pread` of the file SQLite keeps mapped
//! (a microsecond), where a query is a round trip to a connection's worker thread.
//!
//! A mark is a hint in one direction only: equal marks mean nothing was committed; anything
//! else (the file missing or short, a read error, a torn read while a commit rewrites the
//! header, a WAL that started over) reads as "maybe", and the caller asks the database.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The WAL-index header's two copies, as read.
pub(crate) type Mark = [u8; 96];

#[derive(Debug)]
pub(crate) struct ChangeProbe {
    /// `None`: a database without such a file (PostgreSQL): always "maybe".
    shm: Option<PathBuf>,
    file: Mutex<Option<std::fs::File>>,
}

impl ChangeProbe {
    pub fn new(database: &Path) -> ChangeProbe {
        let mut shm = database.as_os_str().to_owned();
        shm.push("-shm");
        ChangeProbe {
            shm: Some(PathBuf::from(shm)),
            file: Mutex::new(None),
        }
    }

    /// A probe that never knows (every look asks the database).
    pub fn none() -> ChangeProbe {
        ChangeProbe {
            shm: None,
            file: Mutex::new(None),
        }
    }

    /// The header as it is now; `None` when it cannot be read (ask the database then).
    pub fn mark(&self) -> Option<Mark> {
        let shm = self.shm.as_ref()?;
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if file.is_none() {
            *file = std::fs::File::open(shm).ok();
        }
        let mut mark = [0u8; 96];
        match file.as_ref().map(|f| read_at(f, &mut mark)) {
            Some(Ok(())) => Some(mark),
            _ => {
                // Opened again at the next look (the file may not exist yet).
                *file = None;
                None
            }
        }
    }
}

#[cfg(unix)]
fn read_at(f: &std::fs::File, buf: &mut [u8]) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(f, buf, 0)
}

#[cfg(not(unix))]
fn read_at(_: &std::fs::File, _: &mut [u8]) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}
