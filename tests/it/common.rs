//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use healstore::{NewEvent, Store, StoreOptions};

/// A fixed instant, so that tests never depend on the wall clock.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).unwrap()
}

/// A fresh directory and a database path inside it.
pub fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test.db");
    (dir, path)
}

pub async fn open(path: &Path) -> Store {
    Store::open(path, StoreOptions::default()).await.unwrap()
}

/// An event of an unknown (to the store, "custom") type with a small payload.
pub fn ev(id: &str, at: DateTime<Utc>) -> NewEvent {
    NewEvent::new("test_happened", at, serde_json::json!({"n": id})).with_id(id)
}

/// The healstore binary built for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_healstore"))
}

// ---------------------------------------------------------------------------------------------
// Helpers for the multi-process (`process.rs`) and command-line (`cli.rs`) tests.
// ---------------------------------------------------------------------------------------------

/// How long any single child process may take before a test gives up on it. Generous: a
/// loaded two-core CI machine running debug builds is slow, and a hang should fail, not block.
pub const CHILD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// `healstore --db <db>`, isolated from the caller's environment (no `HEALSTORE_*` variables,
/// no log filter, run in the database's directory so that no stray `healstore.toml` applies),
/// ready for more arguments.
pub fn healstore(db: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(bin());
    c.arg("--db")
        .arg(db)
        .env_remove("HEALSTORE_DB")
        .env_remove("HEALSTORE_DURABILITY")
        .env_remove("HEALSTORE_CONFIG")
        .env_remove("HEALSTORE_TOKENS")
        .env_remove("HEALSTORE_LOG_FORMAT")
        .env_remove("RUST_LOG");
    if let Some(dir) = db.parent().filter(|d| d.is_dir()) {
        c.current_dir(dir);
    }
    c
}

/// Runs `healstore --db <db> <args>` with empty standard input, to completion.
pub fn run(db: &Path, args: &[&str]) -> std::process::Output {
    run_with_input(db, args, b"")
}

/// Runs `healstore --db <db> <args>` with `input` on standard input, to completion.
pub fn run_with_input(db: &Path, args: &[&str], input: &[u8]) -> std::process::Output {
    use std::process::Stdio;
    let mut child = healstore(db)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn healstore");
    let stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let mut stdin = stdin;
        // The child may exit without reading everything (an early error): not our concern.
        let _ = std::io::Write::write_all(&mut stdin, &input);
    });
    let out = wait_with_deadline(child, CHILD_TIMEOUT);
    feeder.join().expect("stdin feeder");
    out
}

/// Collects a child's stdout and stderr (those still piped) and waits for it to exit, killing
/// it and failing the test if it runs past `timeout`.
pub fn wait_with_deadline(
    mut child: std::process::Child,
    timeout: std::time::Duration,
) -> std::process::Output {
    use std::io::Read;
    fn drain<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "healstore (pid {}) still running after {timeout:?}",
                child.id()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    std::process::Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

pub fn stdout_text(out: &std::process::Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

pub fn stderr_text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that the command succeeded and returns its standard output.
#[track_caller]
pub fn expect_success(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "healstore failed with {}; stderr:\n{}",
        out.status,
        stderr_text(out)
    );
    stdout_text(out)
}

/// Asserts the CLI's error contract: exit code 2, nothing on stdout, and stderr a single line
/// `healstore: error: ...` that contains `needle`. Returns that line.
#[track_caller]
pub fn expect_error(out: &std::process::Output, needle: &str) -> String {
    let stderr = stderr_text(out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit code 2, got {}; stderr:\n{stderr}",
        out.status
    );
    assert!(
        !stderr.contains("panicked"),
        "healstore panicked:\n{stderr}"
    );
    let line = stderr.trim_end();
    assert_eq!(
        line.lines().count(),
        1,
        "expected a one-line error, got:\n{stderr}"
    );
    assert!(
        line.starts_with("healstore: error: "),
        "error lacks the `healstore: error:` prefix: {line}"
    );
    assert!(
        line.contains(needle),
        "error does not mention {needle:?}: {line}"
    );
    assert!(
        out.stdout.is_empty(),
        "a failed command printed on stdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    line.to_owned()
}

/// The bytes a database consists of on disk: the main file and its write-ahead log (a missing
/// log counts as an empty one; the `-shm` index is a cache and not compared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbFiles {
    pub main: Option<Vec<u8>>,
    pub wal: Vec<u8>,
}

pub fn db_files(path: &Path) -> DbFiles {
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    DbFiles {
        main: std::fs::read(path).ok(),
        wal: std::fs::read(wal).unwrap_or_default(),
    }
}

/// Asserts that two snapshots are the same bytes, without dumping kilobytes on failure.
#[track_caller]
pub fn assert_same_files(before: &DbFiles, after: &DbFiles, what: &str) {
    let describe = |f: &DbFiles| {
        format!(
            "main: {:?} bytes, wal: {} bytes",
            f.main.as_ref().map(Vec::len),
            f.wal.len()
        )
    };
    if before != after {
        let first_diff = match (&before.main, &after.main) {
            (Some(a), Some(b)) => a.iter().zip(b).position(|(x, y)| x != y),
            _ => None,
        };
        panic!(
            "{what}: the database files changed (before {}, after {}; first differing byte of \
             the main file: {first_diff:?})",
            describe(before),
            describe(after)
        );
    }
}

/// A single-threaded runtime for the async parts of otherwise synchronous tests.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// Every event in the database, in position order, read through the library.
pub async fn read_all(path: &Path) -> Vec<healstore::RecordedEvent> {
    use futures_util::StreamExt;
    let options = StoreOptions {
        create: false,
        ..StoreOptions::default()
    };
    let store = Store::open(path, options).await.expect("open the store");
    let events: Vec<_> = store
        .read(healstore::EventFilter::default())
        .map(|r| r.expect("read an event"))
        .collect()
        .await;
    store.close().await.expect("close the store");
    events
}

/// A plain sqlx connection to the file, outside healstore.
pub async fn raw_connection(path: &Path) -> sqlx::SqliteConnection {
    use sqlx::ConnectOptions;
    sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .expect("connect with sqlx")
}

/// `PRAGMA integrity_check`, through a plain sqlx connection ("ok" when the file is sound).
pub async fn integrity_check(path: &Path) -> String {
    use sqlx::Connection;
    let mut conn = raw_connection(path).await;
    let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut conn)
        .await
        .expect("integrity_check");
    conn.close().await.expect("close");
    rows.join("\n")
}

/// The log's invariants, for events in position order: positions strictly increase, no event
/// id appears twice, and each stream's versions are exactly 1, 2, 3, ... in position order.
#[track_caller]
pub fn assert_log_invariants(events: &[healstore::RecordedEvent]) {
    let mut ids = std::collections::HashSet::new();
    let mut versions: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    let mut last = 0i64;
    for e in events {
        assert!(
            e.position > last,
            "position {} follows position {last}",
            e.position
        );
        last = e.position;
        assert!(
            ids.insert(e.event_id.as_str()),
            "event id {:?} is stored twice",
            e.event_id
        );
        let v = versions.entry(e.stream_id.as_str()).or_insert(0);
        *v += 1;
        assert_eq!(
            e.stream_version, *v,
            "stream {:?} is not dense: event {:?} at position {} has version {}, expected {}",
            e.stream_id, e.event_id, e.position, e.stream_version, *v
        );
    }
}

/// One JSON Lines event of the custom type `test_happened`.
pub fn test_line(event_id: &str, stream_id: &str, n: u64) -> String {
    serde_json::json!({
        "event_id": event_id,
        "stream_id": stream_id,
        "event_type": "test_happened",
        "occurred_at": "2026-11-01T12:00:00Z",
        "payload": {"n": n},
    })
    .to_string()
}

/// What `healstore --format json append` prints for each committed event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    pub line: u64,
    pub event_id: String,
    pub position: i64,
    pub stream_version: u64,
    pub duplicate: bool,
}

/// Parses `append`'s JSON acknowledgements, one a line.
#[track_caller]
pub fn parse_acks(stdout: &str) -> Vec<Ack> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad ack {l:?}: {e}")))
        .collect()
}

/// A small deterministic generator (SplitMix64) for test randomness; seeded from the clock
/// unless `HEALSTORE_TEST_SEED` is set, so that a failure can be replayed.
pub struct Rng(u64);

impl Rng {
    /// A fixed seed, for tests whose data must be the same in every run.
    pub fn fixed(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn seeded(what: &str) -> Rng {
        let seed = std::env::var("HEALSTORE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0x5eed)
            });
        eprintln!("{what}: HEALSTORE_TEST_SEED={seed}");
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// Starts `healstore --format json append -` fed with `lines` (then end of input) in chunks of
/// `chunk`; before each chunk the feeder meets the other feeders at `lockstep`, so that the
/// appenders' inputs, and so their commits, overlap in time. A child that died stops taking
/// input; its feeder keeps meeting the others at the barrier (without writing) so that they
/// are not stranded, and the test fails on that child's exit status.
pub fn spawn_appender(
    db: &Path,
    lines: Vec<String>,
    lockstep: std::sync::Arc<std::sync::Barrier>,
    chunk: usize,
) -> (std::process::Child, std::thread::JoinHandle<()>) {
    use std::process::Stdio;
    let mut child = healstore(db)
        .args(["--format", "json", "append", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn healstore append");
    let mut stdin = child.stdin.take().expect("stdin piped");
    let feeder = std::thread::spawn(move || {
        let mut alive = true;
        for chunk in lines.chunks(chunk) {
            lockstep.wait();
            if alive {
                let mut text = chunk.join("\n");
                text.push('\n');
                alive = std::io::Write::write_all(&mut stdin, text.as_bytes()).is_ok();
            }
        }
    });
    (child, feeder)
}

/// The statements that turn a current database back into what version 9 left: V14's preventions, V13's and V12's rollups
/// dropped (and its healing triggers replaced by V6's), V11's dropped index restored, V10's triggers replaced by those of V6 and V7, its indexes by V3's, its
/// columns dropped or renamed back, the rollup rows only a recovery created removed, and the
/// history rows of 10 on deleted (what an older healstore would have left, less the facts it
/// did not interpret).
pub fn undo_v10_statements() -> Vec<String> {
    let trigger = |sql: &str, name: &str| {
        let start = sql
            .find(&format!("CREATE TRIGGER {name} "))
            .unwrap_or_else(|| panic!("no CREATE TRIGGER {name}"));
        let end = start + sql[start..].find("END;").expect("the trigger ends") + "END;".len();
        sql[start..end].to_owned()
    };
    let v6 = include_str!("../../migrations/V6__read_models_known_versions.sql");
    let v7 = include_str!("../../migrations/V7__saturating_recovery_sums.sql");
    let mut s: Vec<String> = [
        // V14's preventions.
        "DROP TRIGGER rm_prevention_proposed",
        "DROP TRIGGER rm_prevention_decided",
        "DROP TRIGGER rm_prevention_executed",
        "DROP TRIGGER rm_prevention_version",
        "DROP TABLE preventions",
        // V13's rollups by the second (its triggers are dropped below, with V12's).
        "DROP TABLE failure_secondly",
        "DROP TABLE attempt_secondly",
        "DROP TABLE healing_secondly",
        // V12's rollups, and its triggers on healing events (V6's again, pushed below).
        "DROP TRIGGER rm_healing_attempted",
        "DROP TRIGGER rm_healing_completed",
        "DROP TABLE failure_minutely",
        "DROP TABLE attempt_minutely",
        "DROP TABLE healing_minutely",
        "DROP TABLE agent_rollup",
        "DROP TABLE ttr_histogram",
        "DROP TABLE recovery_pairs",
        "CREATE INDEX events_by_failure_type ON events (failure_type, occurred_at) \
         WHERE failure_type IS NOT NULL",
        "DROP TRIGGER rm_failure_recovered",
        "DROP TRIGGER rm_failure_detected",
        "DROP TRIGGER rm_failure_resolved",
        "ALTER TABLE failures DROP COLUMN remediate_bucket",
        "ALTER TABLE failures DROP COLUMN recover_bucket",
        "DROP TRIGGER rm_circuit_transitioned",
        "DROP INDEX failures_by_detected",
        "DROP INDEX failures_by_remediated",
        "DROP INDEX failures_by_recovered",
        "DROP INDEX failures_open_by_agent",
        "DROP INDEX failures_open_by_task",
        "ALTER TABLE failures DROP COLUMN task_id",
        "ALTER TABLE failures DROP COLUMN recovered_position",
        "ALTER TABLE failures DROP COLUMN recovered_at",
        "ALTER TABLE failures DROP COLUMN recovered_how",
        "ALTER TABLE failures DROP COLUMN recover_us",
        "ALTER TABLE failures RENAME COLUMN remediated_position TO resolved_position",
        "ALTER TABLE failures RENAME COLUMN remediated_at TO resolved_at",
        "ALTER TABLE failures RENAME COLUMN remediated_by TO resolved_by",
        "ALTER TABLE failures RENAME COLUMN remediate_us TO ttr_us",
        "DELETE FROM failure_hourly WHERE detected = 0 AND remediated = 0",
        "ALTER TABLE failure_hourly DROP COLUMN recovered",
        "ALTER TABLE failure_hourly DROP COLUMN recover_us_sum",
        "ALTER TABLE failure_hourly RENAME COLUMN remediated TO resolved",
        "ALTER TABLE failure_hourly RENAME COLUMN remediate_us_sum TO ttr_sum_us",
        "ALTER TABLE circuit_transitions DROP COLUMN open_until",
        "CREATE INDEX failures_by_detected ON failures (detected_at, failure_type, agent_id, \
         resolved_at)",
        "CREATE INDEX failures_by_resolved ON failures (resolved_at, ttr_us, failure_type) \
         WHERE resolved_at IS NOT NULL",
        "CREATE INDEX failures_unresolved ON failures (detected_at) WHERE resolved_at IS NULL",
        "DELETE FROM refinery_schema_history WHERE version >= 10",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    s.push(trigger(v6, "rm_failure_detected"));
    s.push(trigger(v7, "rm_failure_resolved"));
    s.push(trigger(v6, "rm_circuit_transitioned"));
    s.push(trigger(v6, "rm_healing_attempted"));
    s.push(trigger(v6, "rm_healing_completed"));
    s
}

/// Runs `statements` on the file through a plain connection, in order.
pub async fn run_sql(path: &Path, statements: &[String]) {
    use sqlx::Connection;
    let mut conn = raw_connection(path).await;
    for s in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(s.clone()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    conn.close().await.expect("close");
}
