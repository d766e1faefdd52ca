//! Who holds the write lock for a long operation.
//!
//! SQLite tells a waiting writer only that the database is busy. An import, an archive or a
//! rebuild holds the write lock for as long as it runs, so while it does, healstore leaves a
//! one-line note beside the database (`<db>-holder`: the operation, its process id and when it
//! took the lock), and a writer that gives up waiting names it in its "retry later" error. The
//! note is removed when the operation's transaction ends; a note left by a process that no
//! longer runs (killed) is ignored. Best effort: a directory that cannot be written only loses
//! the note, never the operation.

use std::path::{Path, PathBuf};

/// The note's path for a database file.
pub fn note_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-holder");
    PathBuf::from(name)
}

/// A note that exists while its value lives.
pub(crate) struct Note {
    path: PathBuf,
}

impl Note {
    /// Records that this process holds the write lock for `operation` ("an import").
    pub fn announce(db: &Path, operation: &str, now: chrono::DateTime<chrono::Utc>) -> Note {
        let path = note_path(db);
        let text = format!(
            "{operation} (pid {}, since {})\n",
            std::process::id(),
            crate::time::format_time(now)
        );
        if let Err(e) = write_private(&path, text.as_bytes()) {
            tracing::debug!(error = %e, "cannot write the lock holder note");
        }
        Note { path }
    }
}

impl Drop for Note {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    std::io::Write::write_all(&mut f, bytes)
}

/// What holds the write lock of `db`, for a "retry later" message: the note of a running
/// process, or a guess.
pub(crate) fn describe(db: &Path) -> String {
    read(db)
        .map(|holder| format!("the write lock is held by {holder}"))
        .unwrap_or_else(|| crate::error::UNKNOWN_HOLDER.to_owned())
}

/// The note, when one exists and its process still runs.
fn read(db: &Path) -> Option<String> {
    let text = std::fs::read_to_string(note_path(db)).ok()?;
    let line = text.lines().next()?.trim();
    let pid: u32 = line
        .split("(pid ")
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    if pid == std::process::id() || !running(pid) {
        return None;
    }
    Some(line.chars().take(200).collect())
}

/// Whether a process runs; assumed when the system does not say.
fn running(pid: u32) -> bool {
    let proc = Path::new("/proc");
    if proc.join("self").exists() {
        proc.join(pid.to_string()).exists()
    } else {
        true
    }
}
