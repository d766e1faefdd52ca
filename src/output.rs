//! Files healstore writes besides its database: archives (`archive --to`) and dashboard pages
//! (`dashboard --html`, `demo --html`). One set of rules for all of them:
//!
//! - never the database or one of its companion files (`-wal`, `-shm`, `-journal`), however
//!   the path is spelled: paths are compared after resolving the directory, and an existing
//!   target is compared with the database's files by identity (device and inode), which also
//!   catches hard links;
//! - never an existing file, unless the caller allows replacing one (`--force` for pages; never
//!   for archives, whose earlier events would be lost);
//! - never anything but a regular file: a device, a FIFO, a symbolic link or a directory is
//!   refused, with or without `--force`;
//! - written to a temporary file beside the target, synced, and only then put in place (a hard
//!   link, which fails if the name was taken meanwhile, or a rename when replacing is allowed);
//!   on any error, and if the writer is dropped unfinished, the temporary file is removed.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// The database's companion files, by suffix.
const COMPANIONS: &[&str] = &["", "-wal", "-shm", "-journal"];

/// Whether an existing target may be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// An existing file is refused; `hint` says what to do instead.
    Refuse { hint: &'static str },
    /// An existing regular file is replaced (`--force`).
    Replace,
}

/// Checks `target` against the rules in the module's documentation, without touching
/// anything. `database` is the database the command works on (it need not exist).
pub fn check(target: &Path, database: &Path, existing: Existing) -> Result<()> {
    let refuse =
        |why: String| Error::InvalidInput(format!("refusing to write {}: {why}", target.display()));
    if target.as_os_str().is_empty() {
        return Err(Error::InvalidInput("the output file name is empty".into()));
    }
    let resolved = resolve(target)
        .map_err(|e| Error::InvalidInput(format!("cannot write {}: {e}", target.display())))?;
    // The database as named (directory resolved) and where it leads, if it is a link.
    let named = resolve_dir(database).unwrap_or_else(|_| database.to_path_buf());
    let db = resolve(database).unwrap_or_else(|_| named.clone());
    for suffix in COMPANIONS {
        if [&named, &db]
            .iter()
            .any(|d| resolved.as_os_str() == with_suffix(d, suffix).as_os_str())
        {
            return Err(refuse(format!(
                "it is the database{}",
                companion_name(suffix)
            )));
        }
    }
    let meta = match std::fs::symlink_metadata(target) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(Error::from_io(
                format_args!("cannot write {}", target.display()),
                &e,
            ));
        }
    };
    let kind = meta.file_type();
    if kind.is_symlink() {
        return Err(refuse(
            "it is a symbolic link; name the file itself".to_string(),
        ));
    }
    if kind.is_dir() {
        return Err(refuse("it is a directory".into()));
    }
    if !kind.is_file() {
        return Err(refuse(
            "it is not a regular file (a device, FIFO or socket)".into(),
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        for suffix in COMPANIONS {
            if let Ok(m) = std::fs::metadata(with_suffix(database, suffix))
                && m.dev() == meta.dev()
                && m.ino() == meta.ino()
            {
                return Err(refuse(format!(
                    "it is the database{} under another name",
                    companion_name(suffix)
                )));
            }
        }
    }
    match existing {
        Existing::Replace => Ok(()),
        Existing::Refuse { hint } => Err(refuse(format!("the file exists; {hint}"))),
    }
}

/// A file being written: a temporary file beside its target until [`OutputFile::commit`].
#[derive(Debug)]
pub struct OutputFile {
    target: PathBuf,
    database: PathBuf,
    existing: Existing,
    tmp: PathBuf,
    file: Option<File>,
}

impl OutputFile {
    /// Checks `target` and creates the temporary file beside it (permissions `mode` on Unix).
    pub fn create(
        target: &Path,
        database: &Path,
        existing: Existing,
        mode: u32,
    ) -> Result<OutputFile> {
        check(target, database, existing)?;
        let dir = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".into());
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let tmp = dir.join(format!(
            ".{name}.{}-{}.tmp",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        let file = o
            .open(&tmp)
            .map_err(|e| Error::from_io(format_args!("cannot write {}", target.display()), &e))?;
        Ok(OutputFile {
            target: target.to_path_buf(),
            database: database.to_path_buf(),
            existing,
            tmp,
            file: Some(file),
        })
    }

    /// The temporary file, to write to.
    pub fn file(&mut self) -> &mut File {
        self.file
            .as_mut()
            .expect("an output file is open until committed")
    }

    /// The target's name, for messages.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Syncs the temporary file and puts it in place (then syncs its directory). The target
    /// is checked again first; without [`Existing::Replace`], a name taken in the meantime is
    /// refused, never overwritten.
    pub fn commit(mut self) -> Result<()> {
        let io = |what: &str, e: std::io::Error| {
            Error::from_io(format_args!("cannot {what} {}", self.target.display()), &e)
        };
        let file = self.file.take().expect("committed once");
        file.sync_all().map_err(|e| io("sync", e))?;
        drop(file);
        check(&self.target, &self.database, self.existing)?;
        match self.existing {
            Existing::Replace => {
                std::fs::rename(&self.tmp, &self.target).map_err(|e| io("write", e))?
            }
            Existing::Refuse { hint } => match std::fs::hard_link(&self.tmp, &self.target) {
                Ok(()) => {
                    let _ = std::fs::remove_file(&self.tmp);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(Error::InvalidInput(format!(
                        "refusing to write {}: the file exists; {hint}",
                        self.target.display()
                    )));
                }
                // A file system without hard links: the check above just found the name free.
                Err(_) => std::fs::rename(&self.tmp, &self.target).map_err(|e| io("write", e))?,
            },
        }
        // Installed: nothing left to remove.
        self.tmp = PathBuf::new();
        if let Some(dir) = self.target.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        self.file.take();
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to `target` by the rules above.
pub fn write(target: &Path, database: &Path, existing: Existing, bytes: &[u8]) -> Result<()> {
    let mut out = OutputFile::create(target, database, existing, 0o644)?;
    out.file()
        .write_all(bytes)
        .map_err(|e| Error::from_io(format_args!("cannot write {}", target.display()), &e))?;
    out.commit()
}

/// `path` with its directory resolved (symbolic links, `..`, relative spelling); the last
/// component is kept as given, unless the whole path resolves (an existing file reached
/// through links is compared by where it leads).
fn resolve(path: &Path) -> std::io::Result<PathBuf> {
    if let Ok(p) = std::fs::canonicalize(path) {
        return Ok(p);
    }
    resolve_dir(path)
}

/// `path` with its directory resolved and its last component as given.
fn resolve_dir(path: &Path) -> std::io::Result<PathBuf> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("it names no file"))?;
    Ok(std::fs::canonicalize(dir)?.join(name))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn companion_name(suffix: &str) -> String {
    if suffix.is_empty() {
        String::new()
    } else {
        format!("'s {suffix} file")
    }
}
