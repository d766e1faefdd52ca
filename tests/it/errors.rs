//! Errors as callers see them: a write that meets another process's write lock waits for it
//! or fails with a "retry later" error naming what holds the lock; every kind of failure
//! (busy, read-only, disk full, conflict, not found, not a healstore database, invalid input)
//! is a distinct variant and kind in the library and a distinct one-line message on stderr,
//! each said once; diagnostics from tracing are plain `healstore: <level>: ...` lines.

#![cfg(unix)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use healstore::{Error, ErrorKind, ExpectedVersion, Store, StoreOptions};

use crate::common::{
    self, assert_same_files, block_on, db_files, ev, expect_error, expect_success, healstore,
    read_all, run, t0, test_line,
};

/// A bound on waiting for a child's output (a hang must fail the test, not block it).
const WAIT: Duration = Duration::from_secs(60);

/// A connection outside healstore holding the database's write lock (`BEGIN IMMEDIATE`) until
/// it is released.
struct LockHolder {
    runtime: tokio::runtime::Runtime,
    conn: Option<sqlx::SqliteConnection>,
}

impl LockHolder {
    fn take(db: &Path) -> LockHolder {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let conn = runtime.block_on(async {
            let mut conn = common::raw_connection(db).await;
            sqlx::raw_sql("BEGIN IMMEDIATE")
                .execute(&mut conn)
                .await
                .unwrap();
            conn
        });
        LockHolder {
            runtime,
            conn: Some(conn),
        }
    }

    fn release(mut self) {
        let conn = self.conn.take().unwrap();
        self.runtime.block_on(async move {
            let mut conn = conn;
            sqlx::raw_sql("ROLLBACK").execute(&mut conn).await.unwrap();
            sqlx::Connection::close(conn).await.unwrap();
        });
    }
}

/// A database with one recorded failure (so that the configuration is recorded already).
fn prepared_db() -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, db) = common::temp_db();
    expect_success(&run(
        &db,
        &[
            "record",
            "failure",
            "--type",
            "agent_down",
            "--agent",
            "a0",
            "--id",
            "F0",
        ],
    ));
    (dir, db)
}

/// Reads a child's stderr line by line on a thread.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits until a line containing `needle` arrives; returns every line read.
#[track_caller]
fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return seen;
                }
            }
            Err(_) => panic!(
                "no line with {needle:?} on stderr; got:\n{}",
                seen.join("\n")
            ),
        }
    }
}

#[test]
fn writes_started_while_another_process_holds_the_write_lock_succeed_once_it_is_released() {
    // Given a database whose write lock another connection holds,
    let (_dir, db) = prepared_db();
    let holder = LockHolder::take(&db);

    // when `record failure` and `append` start meanwhile (their trace shows when they reach
    // their write: the group commit that waits for the lock),
    let mut record = healstore(&db)
        .args([
            "record",
            "failure",
            "--type",
            "agent_down",
            "--agent",
            "a1",
            "--id",
            "F1",
        ])
        .env("RUST_LOG", "healstore::store::writer=trace")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let record_err = stderr_lines(&mut record);
    let mut append = healstore(&db)
        .args(["--format", "json", "append", "-"])
        .env("RUST_LOG", "healstore::store::writer=trace")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let append_err = stderr_lines(&mut append);
    {
        let mut stdin = append.stdin.take().unwrap();
        writeln!(stdin, "{}", test_line("held-1", "s-held", 1)).unwrap();
    }
    wait_for_line(&record_err, "group commit");
    wait_for_line(&append_err, "group commit");
    assert!(
        record.try_wait().unwrap().is_none(),
        "record ended while the lock was held"
    );
    assert!(
        append.try_wait().unwrap().is_none(),
        "append ended while the lock was held"
    );

    // then both wait, and succeed once the lock is released.
    holder.release();
    let record = common::wait_with_deadline(record, common::CHILD_TIMEOUT);
    let append = common::wait_with_deadline(append, common::CHILD_TIMEOUT);
    let leftover: Vec<String> = record_err.try_iter().chain(append_err.try_iter()).collect();
    assert!(record.status.success(), "record failed: {leftover:?}");
    assert!(append.status.success(), "append failed: {leftover:?}");
    let events = block_on(read_all(&db));
    assert!(events.iter().any(|e| e.event_id == "F1-detected"));
    assert!(events.iter().any(|e| e.event_id == "held-1"));
}

#[test]
fn a_write_held_up_past_the_busy_timeout_fails_with_retry_later_and_writes_nothing() {
    // Given a database whose write lock another (non-healstore) connection holds,
    let (_dir, db) = prepared_db();
    let holder = LockHolder::take(&db);
    let before = db_files(&db);

    // when a write is configured to wait at most 200 ms,
    let out = run(
        &db,
        &[
            "--busy-timeout",
            "200ms",
            "record",
            "failure",
            "--type",
            "agent_down",
            "--agent",
            "a1",
        ],
    );
    // then it fails with a one-line "retry later" error that says another process holds the
    // lock, SQLite's message once, exit 2; and nothing was written.
    let line = expect_error(&out, "retry later");
    assert!(
        line.contains("another process holds the write lock"),
        "{line}"
    );
    assert_eq!(line.matches("database is locked").count(), 1, "{line}");
    assert!(!line.contains("invalid input"), "{line}");
    let via_env = healstore(&db)
        .env("HEALSTORE_BUSY_TIMEOUT", "0s")
        .args(["append", "-"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    // (an append with no input writes nothing and needs no lock)
    assert!(via_env.status.success());
    holder.release();
    assert_same_files(&before, &db_files(&db), "a write refused as busy");
}

#[test]
fn a_write_held_up_by_an_import_names_the_import_in_its_retry_later_error() {
    // Given an import in progress (its input still open: it holds the write lock),
    let (_dir, db) = prepared_db();
    let mut import = healstore(&db)
        .args(["import", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut feed = import.stdin.take().unwrap();
    writeln!(feed, "{}", test_line("imp-1", "s-imp", 1)).unwrap();
    feed.flush().unwrap();
    // (the import records that it holds the lock beside the database; wait for that state)
    let note = healstore::store::holder_note_path(&db);
    let deadline = Instant::now() + WAIT;
    while !note.exists() {
        assert!(
            Instant::now() < deadline,
            "the import never took the write lock"
        );
        assert!(
            import.try_wait().unwrap().is_none(),
            "the import ended early"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    // when a write gives up waiting after 200 ms,
    let out = run(
        &db,
        &[
            "--busy-timeout",
            "200ms",
            "record",
            "failure",
            "--type",
            "agent_down",
            "--agent",
            "a1",
        ],
    );
    // then its error names the import and its process.
    let line = expect_error(&out, "retry later");
    assert!(
        line.contains(&format!("held by an import (pid {}", import.id())),
        "{line}"
    );

    // And once the import ends, the note is gone and writes go through.
    drop(feed);
    let done = common::wait_with_deadline(import, common::CHILD_TIMEOUT);
    assert!(done.status.success(), "{}", common::stderr_text(&done));
    assert!(!note.exists(), "the holder note outlived the import");
    expect_success(&run(
        &db,
        &[
            "--busy-timeout",
            "0s",
            "record",
            "failure",
            "--type",
            "agent_down",
            "--agent",
            "a1",
        ],
    ));
}

#[test]
fn the_library_reports_a_busy_database_as_retry_later_and_waits_long_by_default() {
    block_on(async {
        let (_dir, db) = common::temp_db();
        common::open(&db).await.close().await.unwrap();
        let mut holder = common::raw_connection(&db).await;
        sqlx::raw_sql("BEGIN IMMEDIATE")
            .execute(&mut holder)
            .await
            .unwrap();
        let store = Store::open(
            &db,
            StoreOptions {
                busy_timeout: Duration::from_millis(100),
                ..StoreOptions::default()
            },
        )
        .await
        .unwrap();
        let err = store
            .append("s", ExpectedVersion::Any, vec![ev("e1", t0())])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Busy(_)), "{err:?}");
        assert_eq!(err.kind(), ErrorKind::RetryLater);
        let text = err.to_string();
        assert!(text.contains("retry later"), "{text}");
        assert_eq!(text.matches("database is locked").count(), 1, "{text}");
        sqlx::raw_sql("ROLLBACK")
            .execute(&mut holder)
            .await
            .unwrap();
        // Released: the same store writes.
        store
            .append("s", ExpectedVersion::Any, vec![ev("e1", t0())])
            .await
            .unwrap();
        store.close().await.unwrap();
        // A long import holds the lock for minutes: by default a write waits that long.
        assert!(StoreOptions::default().busy_timeout >= Duration::from_secs(600));
    });
}

/// Runs `healstore` as an unprivileged user (root ignores file permissions).
fn as_nobody(db: &Path) -> std::process::Command {
    let mut c = std::process::Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(common::bin())
        .arg("--db")
        .arg(db)
        .env_remove("HEALSTORE_DB")
        .env_remove("RUST_LOG");
    c
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

#[test]
fn a_read_only_database_is_reported_as_read_only_not_invalid_input() {
    use std::os::unix::fs::PermissionsExt;
    // Given a database file that its user may read but not write (a directory the user may
    // write, for SQLite's shared-memory index),
    let (dir, db) = prepared_db();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444)).unwrap();
    let before = db_files(&db);
    // when a failure is recorded (as an unprivileged user: root may write any file),
    let mut cmd = if is_root() {
        as_nobody(&db)
    } else {
        healstore(&db)
    };
    let out = cmd
        .args(["record", "failure", "--type", "agent_down", "--agent", "a1"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    // then the error says the database is read-only, once, exit 2; nothing changed.
    let line = expect_error(&out, "read-only");
    assert!(line.contains("readonly database"), "{line}");
    assert!(!line.contains("invalid input"), "{line}");
    assert_eq!(line.matches("readonly").count(), 1, "{line}");
    assert_eq!(before.main, db_files(&db).main, "the database changed");
}

#[test]
fn each_kind_of_failure_is_its_own_variant_and_kind() {
    block_on(async {
        use healstore::config::Config;
        use healstore::heal::{Coordinator, Healer, NoopCoordinator};
        // Not a healstore database: a foreign SQLite file.
        let (_dir, foreign) = common::temp_db();
        {
            use sqlx::ConnectOptions;
            let mut c = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&foreign)
                .create_if_missing(true)
                .connect()
                .await
                .unwrap();
            sqlx::raw_sql("CREATE TABLE t (x)")
                .execute(&mut c)
                .await
                .unwrap();
        }
        let err = Store::open(&foreign, StoreOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotHealstore, "{err}");

        // A missing database file that may not be created: not found.
        let (_dir, missing) = common::temp_db();
        let err = Store::open(
            &missing,
            StoreOptions {
                create: false,
                ..StoreOptions::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        assert!(err.to_string().contains("does not exist"), "{err}");

        // Conflicts: another writer got there first; an outcome of an unknown failure is not
        // found; an outcome recorded twice is a conflict.
        let (_dir, db) = common::temp_db();
        let store = common::open(&db).await;
        store
            .append("s", ExpectedVersion::NoStream, vec![ev("c1", t0())])
            .await
            .unwrap();
        let err = store
            .append("s", ExpectedVersion::NoStream, vec![ev("c2", t0())])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        let healer: Healer = Config::default()
            .builder()
            .coordinator(std::sync::Arc::new(NoopCoordinator) as std::sync::Arc<dyn Coordinator>)
            .open(store.clone())
            .await
            .unwrap();
        let err = healer
            .record_outcome("no-such-failure", true, None, t0())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        assert!(matches!(err, Error::NotFound(_)), "{err:?}");

        // Invalid input.
        let err = store
            .append("", ExpectedVersion::Any, vec![ev("c3", t0())])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        healer.close().await.unwrap();
        store.close().await.unwrap();
    });
}

#[test]
fn an_outcome_recorded_twice_is_a_conflict_on_the_command_line() {
    let (_dir, db) = common::temp_db();
    expect_success(&run(
        &db,
        &[
            "record",
            "failure",
            "--type",
            "agent_down",
            "--agent",
            "a1",
            "--id",
            "F1",
        ],
    ));
    expect_success(&run(
        &db,
        &["record", "outcome", "--failure", "F1", "--success"],
    ));
    // The same result again is answered with the recorded one; another result conflicts.
    let again = expect_success(&run(
        &db,
        &["record", "outcome", "--failure", "F1", "--success"],
    ));
    assert!(again.contains("already recorded"), "{again}");
    let out = run(&db, &["record", "outcome", "--failure", "F1", "--failed"]);
    let line = expect_error(&out, "already recorded");
    assert!(line.contains("conflict"), "{line}");
    let out = run(&db, &["record", "outcome", "--failure", "F9", "--success"]);
    let line = expect_error(&out, "no failure with id");
    assert!(!line.contains("invalid input"), "{line}");
}

#[test]
fn a_full_disk_is_reported_once_as_full() {
    block_on(async {
        let (_dir, db) = common::temp_db();
        common::open(&db).await.close().await.unwrap();
        let pages = std::fs::metadata(&db).unwrap().len() / 4096;
        let store = Store::open(
            &db,
            StoreOptions {
                max_pages: Some(pages as u32 + 20),
                ..StoreOptions::default()
            },
        )
        .await
        .unwrap();
        let big = "x".repeat(4000);
        let mut full = None;
        for i in 0..2000 {
            let e = healstore::NewEvent::new("note", t0(), serde_json::json!({"pad": big}))
                .with_id(format!("n-{i}"));
            if let Err(e) = store.append("s", ExpectedVersion::Any, vec![e]).await {
                full = Some(e);
                break;
            }
        }
        let err = full.expect("the cap is reached");
        assert_eq!(err.kind(), ErrorKind::DiskFull, "{err:?}");
        let text = err.to_string();
        assert!(text.contains("SQLite code 13"), "{text}");
        assert_eq!(
            text.matches("database or disk is full").count(),
            1,
            "{text}"
        );
        assert!(!text.contains("error returned from database"), "{text}");
        store.close().await.unwrap();
    });
}

#[test]
fn diagnostics_on_stderr_are_plain_healstore_lines() {
    // Given a database (its stderr redirected to a file: not a terminal),
    let (dir, db) = prepared_db();
    let log = dir.path().join("stderr.txt");
    // when healstore runs with every diagnostic on,
    let out = healstore(&db)
        .env("RUST_LOG", "trace")
        .args(["record", "failure", "--type", "agent_down", "--agent", "a1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .status()
        .unwrap();
    assert!(out.success());
    // then every line on stderr is `healstore: <level>: ...`, without colour codes.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.is_empty(), "no diagnostics at trace level");
    assert!(!text.contains('\u{1b}'), "colour codes on stderr:\n{text}");
    for line in text.lines() {
        let level = line
            .strip_prefix("healstore: ")
            .and_then(|l| l.split(": ").next())
            .unwrap_or("");
        assert!(
            ["error", "warning", "info", "debug", "trace"].contains(&level),
            "not a healstore diagnostic line: {line}"
        );
    }
}

#[test]
fn a_warning_is_a_healstore_warning_line() {
    // Given a strategy snapshot that no longer decodes,
    let (_dir, db) = prepared_db();
    block_on(async {
        let mut c = common::raw_connection(&db).await;
        let n = sqlx::query("UPDATE strategy_snapshots SET state = 'not a state'")
            .execute(&mut c)
            .await
            .unwrap()
            .rows_affected();
        assert!(n > 0, "no snapshot to damage");
    });
    // when the healer restores from it (it warns, and rebuilds from the events),
    let out = healstore(&db)
        .args(["circuits"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr_text(&out));
    // then the warning is one plain `healstore: warning:` line.
    let text = common::stderr_text(&out);
    assert!(!text.contains('\u{1b}'), "colour codes on stderr:\n{text}");
    let warnings: Vec<&str> = text.lines().collect();
    assert!(!warnings.is_empty(), "no warning");
    for line in warnings {
        assert!(line.starts_with("healstore: warning: "), "{line}");
    }
}
