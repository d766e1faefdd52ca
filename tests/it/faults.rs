//! Fault injection against the real binary: many writer and reader processes on one file, a
//! corpus of malformed inputs, arguments, configurations and damaged database files, property
//! tests of the event line decoder and of import, and a file system that runs out of space.

#![cfg(unix)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

use healstore::{EventLine, RecordedEvent};
use proptest::prelude::*;

use crate::common::{
    self, Ack, assert_log_invariants, assert_same_files, block_on, db_files, expect_error,
    expect_success, healstore, integrity_check, parse_acks, read_all, run, run_with_input,
    stderr_text, stdout_text, test_line,
};

// =============================================================================================
// 1. Eight writer processes and two reader processes on one database file
// =============================================================================================

const WRITERS: usize = 8;
const TOTAL_EVENTS: usize = 10_000;
const PER_WRITER: usize = TOTAL_EVENTS / WRITERS;
/// Streams every writer appends to, so that writers contend for the same stream versions.
const SHARED_STREAMS: usize = 12;
/// How long the readers may take to see everything (a bound for a hang, not a speed goal).
const READ_DEADLINE: Duration = Duration::from_secs(240);

/// Writer `w`'s input: most events go to the shared streams, some to a stream of its own.
fn writer_input(w: usize) -> Vec<String> {
    (0..PER_WRITER)
        .map(|n| {
            let stream = if n % 4 == 3 {
                format!("own-{w}")
            } else {
                format!("shared-{}", (n + w) % SHARED_STREAMS)
            };
            test_line(&format!("w{w}-{n}"), &stream, n as u64)
        })
        .collect()
}

/// What a reader process saw: (position, event id) in the order printed.
type Seen = Vec<(i64, String)>;

fn seen_of(line: &str) -> (i64, String) {
    let e = EventLine::parse(line).unwrap_or_else(|e| panic!("bad event line {line:?}: {e}"));
    (
        e.position.expect("events prints positions"),
        e.event_id.expect("events prints event ids"),
    )
}

/// A `healstore events --follow` process, read until it has printed `TOTAL_EVENTS` events,
/// then stopped.
fn follow_reader(db: PathBuf) -> std::thread::JoinHandle<Seen> {
    std::thread::spawn(move || {
        let mut child = healstore(&db)
            .args(["--format", "json", "events", "--follow"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the follower");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + READ_DEADLINE;
        let mut seen = Vec::with_capacity(TOTAL_EVENTS);
        while seen.len() < TOTAL_EVENTS {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => seen.push(seen_of(&line)),
                Err(e) => {
                    let _ = child.kill();
                    let out = common::wait_with_deadline(child, common::CHILD_TIMEOUT);
                    panic!(
                        "the follower printed {} of {TOTAL_EVENTS} events ({e:?}); status {}, \
                         stderr:\n{}",
                        seen.len(),
                        out.status,
                        stderr_text(&out)
                    );
                }
            }
        }
        // It is still following (it only ends when stopped), and has reported no error.
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "the follower exited on its own"
        );
        child.kill().expect("stop the follower");
        let out = common::wait_with_deadline(child, common::CHILD_TIMEOUT);
        assert!(
            out.stderr.is_empty(),
            "the follower wrote on stderr:\n{}",
            stderr_text(&out)
        );
        seen
    })
}

/// A reader that catches up with repeated `healstore events --after LAST --limit N` runs (a
/// new process each time, as a polling consumer would), until it has seen everything.
fn catch_up_reader(db: PathBuf) -> std::thread::JoinHandle<(Seen, usize)> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + READ_DEADLINE;
        let mut seen: Seen = Vec::with_capacity(TOTAL_EVENTS);
        let mut runs = 0;
        while seen.len() < TOTAL_EVENTS {
            assert!(
                Instant::now() < deadline,
                "the catch-up reader saw {} of {TOTAL_EVENTS} events within {READ_DEADLINE:?}",
                seen.len()
            );
            let after = seen.last().map_or(0, |(p, _)| *p).to_string();
            let out = run(
                &db,
                &[
                    "--format", "json", "events", "--after", &after, "--limit", "700",
                ],
            );
            runs += 1;
            assert!(
                out.status.success() && out.stderr.is_empty(),
                "catch-up read {runs} (after {after}) failed with {}:\n{}",
                out.status,
                stderr_text(&out)
            );
            seen.extend(stdout_text(&out).lines().map(seen_of));
        }
        (seen, runs)
    })
}

#[test]
fn eight_writers_and_two_readers_share_one_file_without_errors_losses_or_gaps() {
    // Given a new database,
    let (_dir, db) = common::temp_db();
    expect_success(&run(&db, &["init"]));
    let started = Instant::now();

    // when two readers (a live follower and a polling catch-up reader) watch it
    let follower = follow_reader(db.clone());
    let poller = catch_up_reader(db.clone());
    // while eight `healstore append` processes write 10,000 events to it at the same time,
    // over streams they share,
    let lockstep = Arc::new(Barrier::new(WRITERS));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (child, feeder) =
                common::spawn_appender(&db, writer_input(w), Arc::clone(&lockstep), 25);
            // (every output is drained at once: a writer blocked on a full stdout would stall
            // the other feeders at the barrier)
            let wait = std::thread::spawn(move || {
                common::wait_with_deadline(child, common::CHILD_TIMEOUT)
            });
            (wait, feeder)
        })
        .collect();
    let outputs: Vec<std::process::Output> = writers
        .into_iter()
        .map(|(wait, feeder)| {
            let out = wait.join().expect("writer");
            feeder.join().expect("feeder");
            out
        })
        .collect();
    let written = started.elapsed();

    // then no writer saw any error (no "database is locked", nothing at all on stderr),
    let mut acks: Vec<Vec<Ack>> = Vec::new();
    for (w, out) in outputs.iter().enumerate() {
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "writer {w} ended with {}; stderr:\n{}",
            out.status,
            stderr_text(out)
        );
        acks.push(parse_acks(&stdout_text(out)));
    }

    // the log holds every event exactly once at positions 1..=N, streams dense,
    let all = block_on(read_all(&db));
    assert_eq!(all.len(), TOTAL_EVENTS);
    let positions: Vec<i64> = all.iter().map(|e| e.position).collect();
    let expected: Vec<i64> = (1..=TOTAL_EVENTS as i64).collect();
    assert_eq!(positions, expected, "positions are not exactly 1..=N");
    assert_log_invariants(&all);
    assert_eq!(block_on(integrity_check(&db)), "ok");

    // every writer's events are acknowledged where they are stored, in the order sent,
    let by_id: HashMap<&str, &RecordedEvent> =
        all.iter().map(|e| (e.event_id.as_str(), e)).collect();
    for (w, acks) in acks.iter().enumerate() {
        assert_eq!(acks.len(), PER_WRITER, "writer {w}: one ack per line");
        for (n, ack) in acks.iter().enumerate() {
            assert_eq!(ack.line, n as u64 + 1, "writer {w}");
            assert_eq!(ack.event_id, format!("w{w}-{n}"));
            assert!(
                !ack.duplicate,
                "writer {w}: {} reported duplicate",
                ack.event_id
            );
            let stored = by_id[ack.event_id.as_str()];
            assert_eq!(
                (stored.position, stored.stream_version),
                (ack.position, ack.stream_version),
                "writer {w}: {} acknowledged elsewhere than stored",
                ack.event_id
            );
        }
        let mine: Vec<&str> = all
            .iter()
            .map(|e| e.event_id.as_str())
            .filter(|id| id.starts_with(&format!("w{w}-")))
            .collect();
        let sent: Vec<String> = (0..PER_WRITER).map(|n| format!("w{w}-{n}")).collect();
        assert_eq!(mine, sent, "writer {w}: events are not in the order sent");
    }

    // and each reader saw the whole log in order, skipping nothing and repeating nothing.
    let log: Seen = all
        .iter()
        .map(|e| (e.position, e.event_id.clone()))
        .collect();
    let followed = follower.join().expect("follower");
    let (polled, runs) = poller.join().expect("catch-up reader");
    assert!(
        followed == log,
        "the follower's sequence differs from the log"
    );
    assert!(
        polled == log,
        "the catch-up reader's sequence differs from the log"
    );
    eprintln!(
        "{TOTAL_EVENTS} events by {WRITERS} writers in {written:?}; readers done after {:?} \
         ({runs} catch-up reads)",
        started.elapsed()
    );
}

// =============================================================================================
// 2. A corpus of malformed inputs: exit code 2, a one-line error, the files unchanged
// =============================================================================================

/// Which database file a corpus case runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Db {
    /// A healstore database holding a few imported events (the healer never opened it).
    Sample,
    /// The sample database after the healer has run on it once (its configuration is
    /// recorded): for refusals that only the healer can make.
    Healed,
    /// Another application's SQLite database.
    Foreign,
    /// A healstore database cut to half its size.
    Truncated,
    /// Random bytes.
    Random,
    /// Only the first page's 100-byte header of a healstore database.
    HeaderOnly,
    /// A directory.
    Directory,
    /// A healstore database migrated by a newer healstore (schema version 999).
    Newer,
}

struct Case {
    name: &'static str,
    db: Db,
    args: Vec<String>,
    stdin: Vec<u8>,
    /// What the one-line error must contain.
    needle: &'static str,
}

/// The files the corpus runs against and refers to.
struct Fixtures {
    dir: tempfile::TempDir,
}

impl Fixtures {
    fn db(&self, kind: Db) -> PathBuf {
        self.dir.path().join(format!("{kind:?}.db").to_lowercase())
    }

    /// Writes a file next to the databases and returns its path as an argument.
    fn file(&self, name: &str, bytes: impl AsRef<[u8]>) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).expect("write a fixture");
        path.to_str().expect("UTF-8 temp path").to_owned()
    }
}

/// A database holding `n` events imported by the binary (written as it writes them).
fn imported_db(db: &Path, n: usize) {
    let text: String = (0..n)
        .map(|i| {
            test_line(
                &format!("sample-{i}"),
                &format!("stream-{}", i % 3),
                i as u64,
            ) + "\n"
        })
        .collect();
    expect_success(&run_with_input(db, &["import", "-"], text.as_bytes()));
}

fn make_fixtures() -> Fixtures {
    let fx = Fixtures {
        dir: tempfile::tempdir().expect("temp dir"),
    };
    imported_db(&fx.db(Db::Sample), 6);
    imported_db(&fx.db(Db::Healed), 6);
    expect_success(&run(&fx.db(Db::Healed), &["tick"]));

    // another application's database (rollback journal, as most are)
    block_on(async {
        use sqlx::{ConnectOptions, Connection};
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(fx.db(Db::Foreign))
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Delete)
            .connect()
            .await
            .unwrap();
        sqlx::raw_sql(
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL); \
             INSERT INTO notes (body) VALUES ('buy milk'), ('call home');",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
    });

    // a truncated copy of a database large enough to have many pages, and its header alone
    let big = fx.dir.path().join("big.db");
    imported_db(&big, 400);
    let bytes = std::fs::read(&big).unwrap();
    assert!(bytes.len() >= 16 * 4096, "the big database is too small");
    std::fs::write(fx.db(Db::Truncated), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(fx.db(Db::HeaderOnly), &bytes[..100]).unwrap();

    let mut rng = common::Rng::seeded("random-bytes database");
    let random: Vec<u8> = (0..4 * 4096).map(|_| rng.next_u64() as u8).collect();
    std::fs::write(fx.db(Db::Random), random).unwrap();

    std::fs::create_dir(fx.db(Db::Directory)).unwrap();

    imported_db(&fx.db(Db::Newer), 3);
    block_on(async {
        use sqlx::Connection;
        let mut conn = common::raw_connection(&fx.db(Db::Newer)).await;
        sqlx::query(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
             VALUES (999, 'from_the_future', '2030-01-01T00:00:00Z', '0')",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    });
    fx
}

/// A valid event line with `fields` spliced in (they may repeat or replace the usual ones only
/// when a case means to).
fn line_with(fields: &str) -> String {
    let payload = if fields.contains(r#""payload":"#) {
        ""
    } else {
        r#","payload":{}"#
    };
    format!(
        r#"{{"stream_id":"s","event_type":"test_happened","occurred_at":"2026-11-01T12:00:00Z",{fields}{payload}}}"#
    )
}

fn lines(ls: &[&str]) -> Vec<u8> {
    let mut text = ls.join("\n");
    text.push('\n');
    text.into_bytes()
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

#[rustfmt::skip] // a table: one case a line
fn corpus(fx: &Fixtures) -> Vec<Case> {
    let case = |name, db, a: Vec<String>, stdin: Vec<u8>, needle| Case {
        name,
        db,
        args: a,
        stdin,
        needle,
    };
    let good = |id: &str| test_line(id, "s", 1);
    let long_id = "x".repeat(healstore::event::MAX_ID_LEN + 1);
    let long_stream = format!(
        r#"{{"event_id":"x","stream_id":"{}","event_type":"t","occurred_at":"2026-11-01T12:00:00Z","payload":{{}}}}"#,
        "s".repeat(healstore::event::MAX_ID_LEN + 1)
    );
    // The sample database's first event, with different content.
    let reused = test_line("sample-0", "stream-0", 999);
    let mut invalid_utf8 = line_with(r#""event_id":"bad-utf8","payload":{"k":"AB"}}"#).into_bytes();
    let at = invalid_utf8.windows(2).position(|w| w == b"AB").unwrap();
    invalid_utf8[at] = 0xff;
    invalid_utf8[at + 1] = 0xfe;
    invalid_utf8.push(b'\n');
    let raw_nul = lines(&[&line_with("\"event_id\":\"nul\0id\"")]);

    // Inputs for the commands that read a file.
    let f = |name: &str, bytes: Vec<u8>| fx.file(name, bytes);
    let good_then_bad = f("good-then-bad.jsonl", lines(&[&good("n-1"), &good("n-2"), r#"{"event_id":"n-3""#]));
    let good_then_reused = f("good-then-reused.jsonl", lines(&[&good("n-1"), &reused, &good("n-3")]));
    let same_id_twice = f(
        "same-id-twice.jsonl",
        lines(&[&test_line("twice", "s", 1), &test_line("twice", "s", 2)]),
    );
    let utf8_third = {
        let mut b = lines(&[&good("n-1"), &good("n-2")]);
        b.extend_from_slice(&invalid_utf8);
        f("invalid-utf8-third.jsonl", b)
    };
    let nul_second = {
        let mut b = lines(&[&good("n-1")]);
        b.extend_from_slice(&raw_nul);
        f("nul-second.jsonl", b)
    };
    let empty_id_last = f("empty-id-last.jsonl", lines(&[&good("n-1"), &line_with(r#""event_id":"""#)]));
    let bad_time_second = f(
        "bad-time-second.jsonl",
        lines(&[&good("n-1"), r#"{"event_id":"n-2","stream_id":"s","event_type":"t","occurred_at":"2026-02-30T00:00:00Z"}"#, &good("n-3")]),
    );
    let missing = fx.dir.path().join("no-such-input.jsonl").to_str().unwrap().to_owned();
    // Known payloads with values out of range, of the wrong type, or oversized.
    let known = |ty: &str, payload: &str| {
        format!(r#"{{"event_id":"k","stream_id":"s","event_type":"{ty}","occurred_at":"2026-11-01T12:00:00Z","payload":{payload}}}"#)
    };
    let completed = |duration: &str| {
        known("healing_completed", &format!(r#"{{"failure_id":"f","strategy":"AgentRestart","success":true,"duration_ms":{duration}}}"#))
    };
    let prediction = |window_ms: &str| {
        known("prediction_made", &format!(r#"{{"prediction_id":"p","failure_type":"agent_down","probability":0.9,"source":"sequence","basis":"b","expected_at":"x","expected_by":"y","expected_in_ms":0,"window_ms":{window_ms},"recommended_action":"r"}}"#))
    };
    let pattern = |support: &str| {
        known("pattern_learned", &format!(r#"{{"pattern_id":"p","kind":"sequence","scope":"fleet","description":"d","failure_types":["a","b"],"support":{support},"confidence":0.9}}"#))
    };
    let agent_of = |len: usize| known("agent_succeeded", &format!(r#"{{"agent_id":"{}"}}"#, "a".repeat(len)));
    let at = |time: &str| format!(r#"{{"event_id":"t","stream_id":"s","event_type":"t","occurred_at":"{time}","payload":{{}}}}"#);
    let recorded = |time: &str| line_with(&format!(r#""event_id":"r","recorded_at":"{time}""#));
    // Lines past the limit of 1 MiB: a 10 MB agent id, 2 MiB of one string, 3 MiB without a
    // newline; and a payload over its own limit in a line under the line limit.
    let ten_mb_agent = agent_of(10 << 20);
    let long_line = line_with(&format!(r#""event_id":"long","payload":{{"blob":"{}"}}"#, "b".repeat(2 << 20)));
    let big_payload = line_with(&format!(
        r#""event_id":"big","payload":{{"blob":"{}"}}"#,
        "b".repeat(healstore::input::MAX_PAYLOAD_BYTES)
    ));
    assert!(big_payload.len() <= healstore::input::MAX_LINE_BYTES);
    let no_newline = f("three-mib-no-newline.jsonl", format!(r#"{{"event_id":"x","payload":"{}"#, "c".repeat(3 << 20)).into_bytes());
    let long_second = f("long-second.jsonl", lines(&[&good("n-1"), &ten_mb_agent, &good("n-3")]));
    let year_10000_second = f("year-10000-second.jsonl", lines(&[&good("n-1"), &at("+10000-01-01T00:00:00Z")]));
    // Archives on standard input: cut short, and gzip without the archive header.
    let archive_bytes = |text: &str| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    let mut cut_short = archive_bytes(&format!(
        "{{\"healstore_archive\":1}}\n{}\n",
        (0..2000).map(|i| good(&format!("a-{i}"))).collect::<Vec<_>>().join("\n")
    ));
    cut_short.truncate(cut_short.len() / 2);
    let headerless = archive_bytes(&format!("{}\n", good("a-1")));
    let a_dir = fx.dir.path().to_str().unwrap().to_owned();
    let valid_input = f("valid.jsonl", lines(&[&good("v-1")]));

    // Configuration files.
    let cfg = |name: &str, text: &str| fx.file(name, text);
    let bad_toml = cfg("bad-toml.toml", "mode = \n[limits\n");
    let unknown_key = cfg("unknown-key.toml", "colour = \"red\"\n");
    let unknown_nested = cfg("unknown-nested.toml", "[circuit_breaker]\nfailure_treshold = 3\n");
    let bad_mode = cfg("bad-mode.toml", "mode = \"turbo\"\n");
    let bad_fraction = cfg("bad-fraction.toml", "[limits]\nmax_disabled_fraction = 2.5\n");
    let zero_threshold = cfg("zero-threshold.toml", "[circuit_breaker]\nfailure_threshold = 0\n");
    let negative_threshold = cfg("negative-threshold.toml", "[circuit_breaker]\nfailure_threshold = -3\n");
    let wrong_type = cfg("wrong-type.toml", "[circuit_breaker]\nopen_ms = \"a minute\"\n");
    let empty_route = cfg("empty-route.toml", "[[route]]\nfailure_types = []\nstrategies = [\"task_retry\"]\n");
    let unknown_strategy = cfg(
        "unknown-strategy.toml",
        "[[route]]\nfailure_types = [\"agent_down\"]\nstrategies = [\"prayer\"]\n",
    );
    let binary_config = fx.file("binary.toml", [0xffu8, 0xfe, 0x00, 0x41]);
    let missing_config = fx.dir.path().join("no-such.toml").to_str().unwrap().to_owned();

    use Db::*;
    let stdin_append = || args(&["append", "-"]);
    let import_stdin = || args(&["import", "-"]);
    let with_config = |path: &str, rest: &[&str]| {
        let mut a = args(&["--config", path]);
        a.extend(args(rest));
        a
    };
    vec![
        // ----- malformed event lines, to `append` -----
        case("append: malformed JSON", Sample, stdin_append(), lines(&[r#"{"event_id":"x","#]), "EOF while parsing"),
        case("append: a JSON array", Sample, stdin_append(), lines(&["[1,2,3]"]), "invalid type"),
        case("append: a JSON string", Sample, stdin_append(), lines(&[r#""hello""#]), "invalid type: string"),
        case("append: stream_id is a number", Sample, stdin_append(), lines(&[r#"{"event_id":"x","stream_id":7,"event_type":"t","occurred_at":"2026-11-01T12:00:00Z"}"#]), "invalid type: integer"),
        case("append: schema_version is a string", Sample, stdin_append(), lines(&[&line_with(r#""event_id":"x","schema_version":"2""#)]), "invalid type: string"),
        case("append: schema_version is negative", Sample, stdin_append(), lines(&[&line_with(r#""event_id":"x","schema_version":-1"#)]), "invalid value: integer `-1`"),
        case("append: schema_version is 0", Sample, stdin_append(), lines(&[&line_with(r#""event_id":"x","schema_version":0"#)]), "schema_version must be at least 1"),
        case("append: schema_version overflows u32", Sample, stdin_append(), lines(&[&line_with(r#""event_id":"x","schema_version":4294967296"#)]), "4294967296"),
        case("append: position is a string", Sample, stdin_append(), lines(&[&line_with(r#""event_id":"x","position":"1""#)]), "invalid type: string"),
        case("append: missing stream_id", Sample, stdin_append(), lines(&[r#"{"event_id":"x","event_type":"t","occurred_at":"2026-11-01T12:00:00Z"}"#]), "missing field `stream_id`"),
        case("append: missing event_type", Sample, stdin_append(), lines(&[r#"{"event_id":"x","stream_id":"s","occurred_at":"2026-11-01T12:00:00Z"}"#]), "missing field `event_type`"),
        case("append: missing occurred_at", Sample, stdin_append(), lines(&[r#"{"event_id":"x","stream_id":"s","event_type":"t"}"#]), "missing field `occurred_at`"),
        case("append: a day that does not exist", Sample, stdin_append(), lines(&[r#"{"event_id":"x","stream_id":"s","event_type":"t","occurred_at":"2026-13-01T00:00:00Z"}"#]), "RFC 3339"),
        case("append: a time without an offset", Sample, stdin_append(), lines(&[r#"{"event_id":"x","stream_id":"s","event_type":"t","occurred_at":"2026-11-01T12:00:00"}"#]), "RFC 3339"),
        case("append: a time as a number", Sample, stdin_append(), lines(&[r#"{"event_id":"x","stream_id":"s","event_type":"t","occurred_at":1700000000}"#]), "invalid type: integer"),
        case("append: a bad recorded_at", Sample, stdin_append(), lines(&[&line_with(r#""event_id":"x","recorded_at":"yesterday""#)]), "RFC 3339"),
        case("append: an empty event id", Sample, stdin_append(), lines(&[&line_with(r#""event_id":"""#)]), "event_id must not be empty"),
        case("append: an oversized event id", Sample, stdin_append(), lines(&[&line_with(&format!(r#""event_id":"{long_id}""#))]), "at most 256"),
        case("append: an oversized stream id", Sample, stdin_append(), lines(&[&long_stream]), "at most 256"),
        case("append: an empty stream id", Sample, stdin_append(), lines(&[r#"{"event_id":"x","stream_id":"","event_type":"t","occurred_at":"2026-11-01T12:00:00Z","payload":{}}"#]), "stream_id must not be empty"),
        case("append: an escaped NUL in the event id", Sample, stdin_append(), lines(&[&line_with(r#""event_id":"a\u0000b""#)]), "control characters"),
        case("append: a raw NUL byte in a string", Sample, stdin_append(), raw_nul.clone(), "control character"),
        case("append: invalid UTF-8", Sample, stdin_append(), invalid_utf8.clone(), "invalid utf-8"),
        case("append: an unknown field", Sample, stdin_append(), lines(&[&line_with(r#""event_id":"x","colour":"red""#)]), "unknown field `colour`"),
        case("append: a duplicated field", Sample, stdin_append(), lines(&[&line_with(r#""event_id":"x","stream_id":"t""#)]), "duplicate field `stream_id`"),
        case("append: trailing characters", Sample, stdin_append(), lines(&[&format!("{} x", good("x"))]), "trailing characters"),
        case("append: an empty event type", Sample, stdin_append(), lines(&[r#"{"event_id":"x","stream_id":"s","event_type":"","occurred_at":"2026-11-01T12:00:00Z","payload":{}}"#]), "event_type must not be empty"),
        case("append: a control character in the event type", Sample, stdin_append(), lines(&[r#"{"event_id":"x","stream_id":"s","event_type":"a\nb","occurred_at":"2026-11-01T12:00:00Z","payload":{}}"#]), "control characters"),
        case("append: a payload that is not an object", Sample, stdin_append(), lines(&[&line_with(r#""event_id":"x","payload":[1]"#)]), "must be a JSON object"),
        case("append: a known type with a payload missing a field", Sample, stdin_append(), lines(&[r#"{"event_id":"x","stream_id":"s","event_type":"failure_detected","occurred_at":"2026-11-01T12:00:00Z","payload":{"failure_type":"agent_down","severity":"high"}}"#]), "missing field `failure_id`"),
        case("append: a known type with an unknown severity", Sample, stdin_append(), lines(&[r#"{"event_id":"x","stream_id":"s","event_type":"failure_detected","occurred_at":"2026-11-01T12:00:00Z","payload":{"failure_id":"f","failure_type":"agent_down","severity":"apocalyptic"}}"#]), "payload does not fit failure_detected"),
        case("append: a stored id with different content", Sample, stdin_append(), lines(&[&reused]), "different content"),
        // ----- numbers out of range or of the wrong type, oversized fields and lines -----
        case("append: a healing duration that overflows the read models", Sample, stdin_append(), lines(&[&completed("6000000000000000000")]), "duration_ms is 6000000000000000000"),
        case("append: the largest integer as a healing duration", Sample, stdin_append(), lines(&[&completed("9223372036854775807")]), "between 0 and 31536000000"),
        case("append: a healing duration past the largest integer", Sample, stdin_append(), lines(&[&completed("9223372036854775808")]), "9223372036854775808"),
        case("append: a negative healing duration", Sample, stdin_append(), lines(&[&completed("-1")]), "duration_ms is -1"),
        case("append: a healing duration as text", Sample, stdin_append(), lines(&[&completed(r#""fast""#)]), r#"invalid type: string "fast""#),
        case("append: a healing duration as a fraction", Sample, stdin_append(), lines(&[&completed("1.5")]), "invalid type: floating point"),
        case("append: a healing duration of 1e400", Sample, stdin_append(), lines(&[&completed("1e400")]), "number out of range"),
        case("append: a prediction window that overflows its end", Sample, stdin_append(), lines(&[&prediction("9000000000000000")]), "window_ms is 9000000000000000"),
        case("append: a pattern's support as text", Sample, stdin_append(), lines(&[&pattern(r#""many""#)]), r#"invalid type: string "many""#),
        case("append: a negative pattern support", Sample, stdin_append(), lines(&[&pattern("-1")]), "support is -1"),
        case("append: a negative usage", Sample, stdin_append(), lines(&[&known("resource_usage_reported", r#"{"resource_type":"memory","current_usage":-1.0,"limit":10.0}"#)]), "not a valid measurement"),
        case("append: a 300-byte agent id", Sample, stdin_append(), lines(&[&agent_of(300)]), "agent_id is 300 bytes long"),
        case("append: a 300-byte agent id in a custom payload", Sample, stdin_append(), lines(&[&line_with(&format!(r#""event_id":"x","payload":{{"agent_id":"{}"}}"#, "a".repeat(300)))]), "agent_id is 300 bytes long"),
        case("append: a 10 MB agent id", Sample, stdin_append(), lines(&[&ten_mb_agent]), "line 1: the line is longer than 1048576 bytes"),
        case("append: an unknown field in a known payload", Sample, stdin_append(), lines(&[&known("agent_succeeded", r#"{"agent_id":"a-1","colour":"red"}"#)]), "unknown field `colour`"),
        case("append: a missing payload", Sample, stdin_append(), lines(&[r#"{"event_id":"x","stream_id":"s","event_type":"t","occurred_at":"2026-11-01T12:00:00Z"}"#]), "missing field `payload`"),
        case("append: a null payload", Sample, stdin_append(), lines(&[&line_with(r#""event_id":"x","payload":null"#)]), "must be a JSON object"),
        case("append: a known type with a null payload", Sample, stdin_append(), lines(&[&known("agent_succeeded", "null")]), "must be a JSON object"),
        case("append: plain text", Sample, stdin_append(), lines(&["hello world"]), "expected value"),
        case("append: a byte order mark before the JSON", Sample, stdin_append(), lines(&[&format!("\u{feff}{}", good("bom"))]), "expected value"),
        case("append: an empty object", Sample, stdin_append(), lines(&["{}"]), "missing field `stream_id`"),
        case("append: the year 10000", Sample, stdin_append(), lines(&[&at("+10000-01-01T00:00:00Z")]), "RFC 3339"),
        case("append: a year before 0", Sample, stdin_append(), lines(&[&at("-0001-12-31T00:00:00Z")]), "RFC 3339"),
        case("append: a recorded_at in the year 10000", Sample, stdin_append(), lines(&[&recorded("+10000-01-01T00:00:00Z")]), "RFC 3339"),
        case("append: a line of over 2 MiB", Sample, stdin_append(), lines(&[&long_line]), "longer than 1048576 bytes"),
        case("append: a payload over its limit in a line under the limit", Sample, stdin_append(), lines(&[&big_payload]), "at most 1044480 are allowed"),
        case("append: 3 MiB without a newline, from a file", Sample, args(&["append", &no_newline]), vec![], "line 1: the line is longer"),
        case("import: a line of over 2 MiB on standard input", Sample, import_stdin(), lines(&[&good("n-1"), &long_line]), "line 2: the line is longer than 1048576 bytes"),
        case("import: a 10 MB agent id on the second line", Sample, args(&["import", &long_second]), vec![], "line 2: the line is longer"),
        case("import: 3 MiB without a newline", Sample, args(&["import", &no_newline]), vec![], "line 1: the line is longer"),
        case("import: a payload over its limit", Sample, import_stdin(), lines(&[&good("n-1"), &big_payload]), "line 2: invalid event: the payload of big is"),
        case("import: the year 10000 on the second line", Sample, args(&["import", &year_10000_second]), vec![], "line 2"),
        case("import: a healing duration that overflows, on standard input", Sample, import_stdin(), lines(&[&good("n-1"), &completed("6000000000000000000")]), "line 2"),
        case("import: an archive cut short, on standard input", Sample, import_stdin(), cut_short, "nothing was imported"),
        case("import: gzip without an archive header, on standard input", Sample, import_stdin(), headerless, "has no archive header"),
        // ----- malformed files to `import`: all or nothing -----
        case("import: a good line, then a malformed one", Sample, args(&["import", &good_then_bad]), vec![], "line 3"),
        case("import: a stored id with different content after a good line", Sample, args(&["import", &good_then_reused]), vec![], "different content"),
        case("import: one id twice in the file, with different content", Sample, args(&["import", &same_id_twice]), vec![], "different content"),
        case("import: invalid UTF-8 on the third line", Sample, args(&["import", &utf8_third]), vec![], "line 3"),
        case("import: a raw NUL byte on the second line", Sample, args(&["import", &nul_second]), vec![], "line 2"),
        case("import: an empty id on the last line", Sample, args(&["import", &empty_id_last]), vec![], "line 2"),
        case("import: February 30th on the second line", Sample, args(&["import", &bad_time_second]), vec![], "line 2"),
        case("import: malformed JSON on standard input", Sample, import_stdin(), lines(&[&good("n-1"), "{"]), "line 2"),
        case("import: an unknown field on standard input", Sample, import_stdin(), lines(&[&line_with(r#""event_id":"x","extra":null"#)]), "unknown field `extra`"),
        case("import: a file that does not exist", Sample, args(&["import", &missing]), vec![], "cannot read"),
        case("import: a directory", Sample, args(&["import", &a_dir]), vec![], "it is a directory"),
        case("append: a file that does not exist", Sample, args(&["append", &missing]), vec![], "cannot read"),
        // ----- bad command lines -----
        case("an unknown command", Sample, args(&["frobnicate"]), vec![], "unrecognized subcommand 'frobnicate'"),
        case("--now that is not a time", Sample, args(&["--now", "noon", "tick"]), vec![], "RFC 3339"),
        case("--now without an offset", Sample, args(&["--now", "2026-11-01T12:00:00", "events"]), vec![], "RFC 3339"),
        case("--format xml", Sample, args(&["--format", "xml", "events"]), vec![], "invalid value 'xml' for '--format"),
        case("--durability paranoid", Sample, args(&["--durability", "paranoid", "append", "-"]), lines(&[&good("d-1")]), "durability must be `full` or `normal`"),
        case("--db without a value", Sample, args(&["events", "--db"]), vec![], "a value is required for '--db"),
        case("--config without a value", Sample, args(&["tick", "--config"]), vec![], "a value is required for '--config"),
        case("events --limit -1", Sample, args(&["events", "--limit=-1"]), vec![], "invalid value '-1' for '--limit"),
        case("events --limit that overflows", Sample, args(&["events", "--limit", "99999999999999999999999"]), vec![], "number too large"),
        case("events --after that is not a number", Sample, args(&["events", "--after", "abc"]), vec![], "invalid value 'abc' for '--after"),
        case("events --after that overflows", Sample, args(&["events", "--after", "9223372036854775808"]), vec![], "number too large"),
        case("events --since without a value", Sample, args(&["events", "--since"]), vec![], "a value is required for '--since"),
        case("events --until that is a date", Sample, args(&["events", "--until", "2026-11-28"]), vec![], "RFC 3339"),
        case("export --since that is a number", Sample, args(&["export", "--since", "1700000000"]), vec![], "RFC 3339"),
        case("append --pipeline 0", Sample, args(&["append", "--pipeline", "0", "-"]), lines(&[&good("p-1")]), "0 is not in 1..=65536"),
        case("append --pipeline too large", Sample, args(&["append", "--pipeline", "70000", "-"]), lines(&[&good("p-1")]), "70000 is not in 1..=65536"),
        case("demo --ticks 0", Sample, args(&["demo", "--ticks", "0"]), vec![], "0 is not in 1..=1000000"),
        case("demo --agents negative", Sample, args(&["demo", "--agents=-5"]), vec![], "invalid value '-5' for '--agents"),
        case("demo --seed negative", Sample, args(&["demo", "--seed=-1"]), vec![], "invalid value '-1' for '--seed"),
        case("record failure without --type", Sample, args(&["record", "failure", "--agent", "a-1"]), vec![], "--type"),
        case("record failure with an unknown severity", Sample, args(&["record", "failure", "--type", "agent_down", "--severity", "apocalyptic"]), vec![], "not one of critical, high, medium, low"),
        case("record failure --meta that is not JSON", Sample, args(&["record", "failure", "--type", "agent_down", "--meta", "{oops"]), vec![], "--meta is not valid JSON"),
        case("record failure --meta that is not an object", Sample, args(&["record", "failure", "--type", "agent_down", "--meta", "[1]"]), vec![], "--meta must be a JSON object"),
        case("record failure --at that is not a time", Sample, args(&["record", "failure", "--type", "agent_down", "--at", "soon"]), vec![], "RFC 3339"),
        case("record event --json that is not JSON", Sample, args(&["record", "event", "--json", "heartbeat"]), vec![], "--json is not valid JSON"),
        case("record event --json that is not an object", Sample, args(&["record", "event", "--json", "[]"]), vec![], "must be a JSON object"),
        case("record event --json without an agent", Sample, args(&["record", "event", "--json", r#"{"type":"heartbeat_failed"}"#]), vec![], "needs an agent_id"),
        case("record event --json with a 300-byte agent id", Sample, args(&["record", "event", "--json", &format!(r#"{{"type":"heartbeat_failed","agent_id":"{}"}}"#, "a".repeat(300))]), vec![], "agent_id is 300 bytes long"),
        case("record outcome without --success or --failed", Sample, args(&["record", "outcome", "--failure", "f-1"]), vec![], "--success"),
        case("record outcome with --success and --failed", Sample, args(&["record", "outcome", "--failure", "f-1", "--success", "--failed"]), vec![], "cannot be used with"),
        case("record outcome --duration-ms that overflows", Sample, args(&["record", "outcome", "--failure", "f-1", "--success", "--duration-ms", "5000000000"]), vec![], "5000000000 is not in"),
        case("record outcome --duration-ms negative", Sample, args(&["record", "outcome", "--failure", "f-1", "--success", "--duration-ms=-5"]), vec![], "invalid value '-5'"),
        case("record usage --current that is not a number", Sample, args(&["record", "usage", "--resource", "tokens", "--current", "lots", "--limit", "10"]), vec![], "invalid float literal"),
        case("record outcome of an unknown failure", Healed, args(&["record", "outcome", "--failure", "no-such-failure", "--success"]), vec![], "no failure with id \"no-such-failure\""),
        case("record usage that is not a number", Healed, args(&["record", "usage", "--resource", "tokens", "--current", "NaN", "--limit", "10"]), vec![], "not a valid measurement"),
        case("record failure with an empty id", Healed, args(&["record", "failure", "--type", "agent_down", "--id", ""]), vec![], "failure_id must not be empty"),
        case("record success without --agent", Sample, args(&["record", "success"]), vec![], "--agent"),
        case("circuit with an unknown operation", Sample, args(&["circuit", "explode", "--agent", "a-1"]), vec![], "invalid value 'explode'"),
        case("circuit open without a reason", Sample, args(&["circuit", "open", "--agent", "a-1"]), vec![], "needs --reason"),
        case("circuit open with a blank reason", Sample, args(&["circuit", "open", "--agent", "a-1", "--reason", "   "]), vec![], "needs --reason"),
        case("circuits --agent without a value", Sample, args(&["circuits", "--agent"]), vec![], "a value is required for '--agent"),
        case("audit without a failure or an agent", Sample, args(&["audit"]), vec![], "give a failure id or --agent"),
        case("audit with a failure and an agent", Sample, args(&["audit", "f-1", "--agent", "a-1"]), vec![], "cannot be used with"),
        case("audit of an unknown failure", Sample, args(&["audit", "no-such-failure"]), vec![], "no failure with id \"no-such-failure\""),
        case("tick with an extra argument", Sample, args(&["tick", "extra"]), vec![], "unexpected argument 'extra'"),
        // ----- malformed configuration files -----
        case("config: not TOML", Sample, with_config(&bad_toml, &["tick"]), vec![], "invalid configuration"),
        case("config: an unknown key", Sample, with_config(&unknown_key, &["states"]), vec![], "unknown field `colour`"),
        case("config: an unknown key in a section", Sample, with_config(&unknown_nested, &["circuits"]), vec![], "unknown field `failure_treshold`"),
        case("config: an unknown mode", Sample, with_config(&bad_mode, &["record", "failure", "--type", "agent_down"]), vec![], "turbo"),
        case("config: a fraction above 1", Sample, with_config(&bad_fraction, &["tick"]), vec![], "limits.max_disabled_fraction = 2.5: must be a number from 0 to 1"),
        case("config: a zero threshold", Sample, with_config(&zero_threshold, &["circuit", "permit", "--agent", "a-1"]), vec![], "circuit_breaker.failure_threshold = 0: must be at least 1"),
        case("config: a negative threshold", Sample, with_config(&negative_threshold, &["tick"]), vec![], "invalid configuration"),
        case("config: a number given as text", Sample, with_config(&wrong_type, &["tick"]), vec![], "invalid type: string"),
        case("config: a route without failure types", Sample, with_config(&empty_route, &["tick"]), vec![], "at least one failure type"),
        case("config: an unknown strategy", Sample, with_config(&unknown_strategy, &["record", "success", "--agent", "a-1"]), vec![], "prayer"),
        case("config: not UTF-8", Sample, with_config(&binary_config, &["tick"]), vec![], "cannot read configuration"),
        case("config: a file that does not exist", Sample, with_config(&missing_config, &["tick"]), vec![], "cannot read configuration"),
        case("config: a directory", Sample, with_config(&a_dir, &["tick"]), vec![], "cannot read configuration"),
        // ----- damaged or foreign database files -----
        case("foreign SQLite database: init", Foreign, args(&["init"]), vec![], "not a healstore database"),
        case("foreign SQLite database: append", Foreign, stdin_append(), lines(&[&good("f-1")]), "not a healstore database"),
        case("foreign SQLite database: record failure", Foreign, args(&["record", "failure", "--type", "agent_down", "--agent", "a-1"]), vec![], "not a healstore database"),
        case("truncated database: events", Truncated, args(&["events"]), vec![], "corrupt"),
        case("truncated database: import", Truncated, args(&["import", &valid_input]), vec![], "corrupt"),
        case("truncated database: tick", Truncated, args(&["tick"]), vec![], "corrupt"),
        case("random bytes: init", Random, args(&["init"]), vec![], "corrupt or not an SQLite database"),
        case("random bytes: circuits", Random, args(&["circuits"]), vec![], "corrupt or not an SQLite database"),
        case("header only: init", HeaderOnly, args(&["init"]), vec![], "corrupt"),
        case("header only: append", HeaderOnly, stdin_append(), lines(&[&good("h-1")]), "corrupt"),
        case("a directory: events", Directory, args(&["events"]), vec![], "it is a directory"),
        case("a directory: record success", Directory, args(&["record", "success", "--agent", "a-1"]), vec![], "it is a directory"),
        case("newer schema: append", Newer, stdin_append(), lines(&[&good("z-1")]), "schema version 999 is newer"),
        case("newer schema: record failure", Newer, args(&["record", "failure", "--type", "agent_down", "--agent", "a-1"]), vec![], "schema version 999 is newer"),
        case("newer schema: export", Newer, args(&["export"]), vec![], "schema version 999 is newer"),
    ]
}

#[test]
fn a_corpus_of_malformed_inputs_gets_one_line_errors_exit_code_2_and_changes_nothing() {
    let fx = make_fixtures();
    let cases = corpus(&fx);
    assert!(cases.len() >= 50, "only {} cases", cases.len());
    let mut names = std::collections::HashSet::new();
    let started = Instant::now();
    let mut failures = Vec::new();
    for c in &cases {
        assert!(names.insert(c.name), "two cases are named {:?}", c.name);
        let db = fx.db(c.db);
        let before = db_files(&db);
        let entries_before = list_dir(fx.dir.path());
        let argv: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let out = run_with_input(&db, &argv, &c.stdin);
        let checked = std::panic::catch_unwind(|| {
            // exit code 2, no panic, one line `healstore: error: ...`, nothing on stdout,
            let line = expect_error(&out, c.needle);
            // naming the database when the database is what is wrong,
            if !matches!(c.db, Db::Sample | Db::Healed | Db::Newer) {
                assert!(
                    line.contains(&db.display().to_string()),
                    "the error does not name the file: {line}"
                );
            }
            // and not one byte of the database changed, nor any file next to it.
            assert_same_files(&before, &db_files(&db), c.name);
            assert_eq!(
                entries_before,
                list_dir(fx.dir.path()),
                "files appeared or vanished next to the database"
            );
            if c.db == Db::Directory {
                assert_eq!(std::fs::read_dir(&db).unwrap().count(), 0);
            }
        });
        if checked.is_err() {
            failures.push(format!("{} ({argv:?})", c.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus cases failed (details above):\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!("{} corpus cases in {:?}", cases.len(), started.elapsed());
}

/// The names in a directory, except SQLite's shared-memory index (a cache that readers may
/// create and remove).
fn list_dir(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with("-shm") && !n.ends_with("-wal"))
        .collect();
    names.sort();
    names
}

// =============================================================================================
// 3. Property tests: the event line decoder and import
// =============================================================================================

/// Printable text (no control characters), as ids must be.
fn id_text() -> impl Strategy<Value = String> {
    "[^\\p{C}]{1,40}"
}

fn json_leaf() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An instant between the years 1 and 9999 (what RFC 3339 can write), to the microsecond.
fn instant() -> impl Strategy<Value = chrono::DateTime<chrono::Utc>> {
    (-62_135_596_800_000_000i64..=253_402_300_799_999_999i64)
        .prop_map(|us| chrono::DateTime::from_timestamp_micros(us).expect("in range"))
}

/// Any event a store could hold, of a type this binary does not interpret.
fn recorded_event() -> impl Strategy<Value = RecordedEvent> {
    (
        (1i64..=i64::MAX, id_text(), id_text(), 1u64..=u64::MAX),
        (id_text(), 1u32..=u32::MAX, instant(), instant()),
        prop::collection::btree_map(".{0,8}", json_value(), 0..5),
    )
        .prop_filter("a type this binary interprets", |((..), (t, ..), _)| {
            !healstore::events::KNOWN_EVENT_TYPES
                .iter()
                .any(|(known, _)| known == t)
        })
        .prop_map(
            |(
                (position, event_id, stream_id, stream_version),
                (event_type, schema_version, occurred_at, recorded_at),
                payload,
            )| {
                RecordedEvent {
                    position,
                    event_id,
                    stream_id,
                    stream_version,
                    event_type,
                    schema_version,
                    occurred_at,
                    recorded_at,
                    payload: serde_json::Value::Object(payload.into_iter().collect()),
                }
            },
        )
}

/// One edit of a line's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    Truncate(usize),
    Duplicate(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), 1usize..8).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (
            any::<usize>(),
            prop::collection::vec(
                prop_oneof![
                    any::<u8>(),
                    prop::sample::select(b"{}[]\":,\\0-9eE.+-ntfu \0".to_vec())
                ],
                1..6
            )
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let at = |i: usize| i % bytes.len();
    match m {
        Mutation::Flip(i, b) => {
            let i = at(*i);
            bytes[i] ^= b | 1;
        }
        Mutation::Delete(i, n) => {
            let i = at(*i);
            let end = (i + n).min(bytes.len());
            bytes.drain(i..end);
        }
        Mutation::Insert(i, b) => {
            let i = at(*i);
            bytes.splice(i..i, b.iter().copied());
        }
        Mutation::Truncate(i) => bytes.truncate(at(*i)),
        Mutation::Duplicate(i, n) => {
            let i = at(*i);
            let end = (i + n).min(bytes.len());
            let slice = bytes[i..end].to_vec();
            bytes.splice(i..i, slice);
        }
    }
}

fn has_float(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Number(n) => n.is_f64(),
        serde_json::Value::Array(a) => a.iter().any(has_float),
        serde_json::Value::Object(o) => o.values().any(has_float),
        _ => false,
    }
}

/// What the decoder must do with any text: decode it or refuse it, never panic; and whatever
/// it decodes must write back as a line that decodes to the same thing.
fn decode_any(text: &str) -> Result<(), TestCaseError> {
    if let Ok(line) = EventLine::parse(text) {
        let json = line.to_json();
        prop_assert!(!json.contains('\n'), "an event line spans lines: {json:?}");
        let back = EventLine::parse(&json);
        prop_assert!(back.is_ok(), "{:?} does not decode again: {:?}", json, back);
        // (serde_json parses floats to within an ulp only: compare exactly without them)
        if !has_float(&line.payload) {
            prop_assert_eq!(back.ok(), Some(line.clone()), "re-decoding {:?}", json);
        }
        // Turning it into an append checks ids and payload shapes: an answer either way.
        let _ = line.into_append();
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_event_line_decoder_never_panics_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        decode_any(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn the_event_line_decoder_never_panics_on_mutated_valid_lines(
        e in recorded_event(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let mut bytes = e.to_line().to_json().into_bytes();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        decode_any(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn an_exported_event_line_decodes_to_the_same_event(e in recorded_event()) {
        let line = e.to_line();
        let text = line.to_json();
        prop_assert!(!text.contains('\n'));
        let back = EventLine::parse(&text).map_err(|err| TestCaseError::fail(format!("{err}: {text}")))?;
        prop_assert_eq!(&back, &line);
        prop_assert_eq!(back.to_json(), text, "the line is not written the same way twice");
        // and imported, it is the same event (only position and stream version are the
        // receiving store's to assign).
        // (ids of up to 40 characters are always short enough)
        let (stream, new) = back
            .into_append()
            .map_err(|err| TestCaseError::fail(err.to_string()))?;
        prop_assert_eq!(stream, e.stream_id);
        prop_assert_eq!(new.event_id, e.event_id);
        prop_assert_eq!(new.event_type, e.event_type);
        prop_assert_eq!(new.schema_version, e.schema_version);
        prop_assert_eq!(new.occurred_at, e.occurred_at);
        prop_assert_eq!(new.recorded_at, Some(e.recorded_at));
        prop_assert_eq!(new.payload, e.payload);
    }
}

/// How the one bad line of an import is made bad.
#[derive(Debug, Clone)]
enum Corruption {
    /// Cut anywhere before its end (never to nothing: an empty line is skipped).
    Truncate(usize),
    /// An `occurred_at` that is not RFC 3339.
    BadTime(String),
    /// A field the format does not have.
    UnknownField(String),
    /// An empty event id.
    EmptyId,
    /// The id of an event already stored, with other content.
    StoredId,
    /// The id of an earlier line of the same file, with other content.
    EarlierId,
    /// Invalid UTF-8 inside the payload.
    InvalidUtf8,
    /// A raw NUL byte inside the event id.
    Nul,
    /// Random edits: the line may stay valid, in which case the import must succeed.
    Random(Vec<Mutation>),
}

fn corruption() -> impl Strategy<Value = Corruption> {
    prop_oneof![
        any::<usize>().prop_map(Corruption::Truncate),
        "[0-9:T-]{0,20}".prop_map(Corruption::BadTime),
        "x_[a-z]{1,8}".prop_map(Corruption::UnknownField),
        Just(Corruption::EmptyId),
        Just(Corruption::StoredId),
        Just(Corruption::EarlierId),
        Just(Corruption::InvalidUtf8),
        Just(Corruption::Nul),
        prop::collection::vec(mutation(), 1..4).prop_map(Corruption::Random),
    ]
}

/// Event `n` of an import file (or of the base database), as JSON.
fn import_event(id: &str, stream: &str, n: usize) -> serde_json::Value {
    serde_json::json!({
        "event_id": id,
        "stream_id": stream,
        "event_type": "test_happened",
        "occurred_at": "2026-11-01T12:00:00Z",
        "payload": {"n": n, "text": "abc"},
    })
}

/// Line `k` of `good`, made bad by `c`, and whether it is surely bad (random edits may leave
/// it valid).
fn corrupt(good: &[String], k: usize, c: &Corruption) -> (Vec<u8>, bool) {
    let mut v: serde_json::Value = serde_json::from_str(&good[k]).unwrap();
    let bytes = match c {
        Corruption::Truncate(i) => {
            let len = good[k].len();
            good[k].as_bytes()[..1 + i % (len - 1)].to_vec()
        }
        Corruption::BadTime(t) => {
            v["occurred_at"] = t.as_str().into();
            v.to_string().into_bytes()
        }
        Corruption::UnknownField(f) => {
            v[f.as_str()] = 1.into();
            v.to_string().into_bytes()
        }
        Corruption::EmptyId => {
            v["event_id"] = "".into();
            v.to_string().into_bytes()
        }
        Corruption::StoredId => {
            v["event_id"] = "base-0".into();
            v.to_string().into_bytes()
        }
        Corruption::EarlierId => {
            // (line 0 has no earlier line: use a stored id there)
            v["event_id"] = if k == 0 {
                "base-1".into()
            } else {
                format!("imp-{}", k - 1).into()
            };
            v.to_string().into_bytes()
        }
        Corruption::InvalidUtf8 => {
            let mut b = v.to_string().into_bytes();
            let at = b
                .windows(3)
                .position(|w| w == b"abc")
                .expect("the payload's text");
            b[at + 1] = 0xff;
            b
        }
        Corruption::Nul => {
            let text = v.to_string();
            text.replacen(&format!("\"imp-{k}\""), &format!("\"imp-\0{k}\""), 1)
                .into_bytes()
        }
        Corruption::Random(ms) => {
            let mut b = good[k].clone().into_bytes();
            for m in ms {
                apply(&mut b, m);
            }
            return (b, false);
        }
    };
    (bytes, true)
}

/// A healstore database with three events, made once; each property case works on a copy.
fn base_db() -> &'static (tempfile::TempDir, Vec<u8>) {
    static BASE: std::sync::OnceLock<(tempfile::TempDir, Vec<u8>)> = std::sync::OnceLock::new();
    BASE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("base.db");
        let text: String = (0..3)
            .map(|n| import_event(&format!("base-{n}"), "base", n).to_string() + "\n")
            .collect();
        expect_success(&run_with_input(&db, &["import", "-"], text.as_bytes()));
        let files = db_files(&db);
        assert!(
            files.wal.is_empty(),
            "the base database kept a write-ahead log"
        );
        let bytes = files.main.expect("the base database exists");
        (dir, bytes)
    })
}

proptest! {
    // Each case runs the binary twice: keep the count small.
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn an_import_with_one_corrupted_line_is_all_or_nothing(
        n in 1usize..12,
        k_seed in any::<usize>(),
        c in corruption(),
    ) {
        let k = k_seed % n;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("test.db");
        std::fs::write(&db, &base_db().1).unwrap();
        let good: Vec<String> = (0..n)
            .map(|i| import_event(&format!("imp-{i}"), &format!("imp-{}", i % 3), i).to_string())
            .collect();
        let (bad, surely_bad) = corrupt(&good, k, &c);
        let mut text = Vec::new();
        for (i, l) in good.iter().enumerate() {
            if i == k {
                text.extend_from_slice(&bad);
            } else {
                text.extend_from_slice(l.as_bytes());
            }
            text.push(b'\n');
        }
        let file = dir.path().join("input.jsonl");
        std::fs::write(&file, &text).unwrap();
        let before = db_files(&db);
        let base = block_on(read_all(&db));

        let out = run(&db, &["--format", "json", "import", file.to_str().unwrap()]);
        if out.status.success() {
            // Only random edits may leave the line valid; then every line is imported.
            prop_assert!(!surely_bad, "a corrupted line was accepted: {:?}", String::from_utf8_lossy(&bad));
            let after = block_on(read_all(&db));
            assert_log_invariants(&after);
            prop_assert_eq!(&after[..base.len()], &base[..]);
            let lines = String::from_utf8(text.clone()).expect("accepted input is UTF-8");
            let non_blank = lines.split('\n').filter(|l| !l.trim().is_empty()).count() as u64;
            let report: serde_json::Value = serde_json::from_str(&stdout_text(&out)).unwrap();
            prop_assert_eq!(
                report["imported"].as_u64().unwrap() + report["duplicates"].as_u64().unwrap(),
                non_blank
            );
            for i in (0..n).filter(|i| *i != k) {
                let id = format!("imp-{i}");
                prop_assert!(after.iter().any(|e| e.event_id == id), "{} is missing", id);
            }
        } else {
            // Refused: one line naming the bad line (or, for random edits, some line), and
            // not one byte of the database changed.
            let line = expect_error(&out, "nothing was imported");
            if surely_bad {
                prop_assert!(line.contains(&format!("line {}", k + 1)), "{}", line);
            }
            assert_same_files(&before, &db_files(&db), "a refused import");
            // Without the bad line, the same file imports completely, after what was there.
            let fixed: String = good
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != k)
                .map(|(_, l)| format!("{l}\n"))
                .collect();
            std::fs::write(&file, fixed).unwrap();
            let out = run(&db, &["--format", "json", "import", file.to_str().unwrap()]);
            let report: serde_json::Value = serde_json::from_str(&expect_success(&out)).unwrap();
            prop_assert_eq!(report["imported"].as_u64(), Some(n as u64 - 1));
            let after = block_on(read_all(&db));
            assert_log_invariants(&after);
            prop_assert_eq!(&after[..base.len()], &base[..]);
            let ids: Vec<&str> = after[base.len()..].iter().map(|e| e.event_id.as_str()).collect();
            let expected: Vec<String> = (0..n).filter(|i| *i != k).map(|i| format!("imp-{i}")).collect();
            prop_assert_eq!(ids, expected);
        }
    }
}

// =============================================================================================
// 4. A full disk
// =============================================================================================

/// An event with a payload of about a kilobyte, so that a few hundred fill a page-size limit.
fn heavy_line(id: &str, n: usize) -> String {
    serde_json::json!({
        "event_id": id,
        "stream_id": format!("heavy-{}", n % 5),
        "event_type": "test_happened",
        "occurred_at": "2026-11-01T12:00:00Z",
        "payload": {"n": n, "blob": format!("{n:08}").repeat(128)},
    })
    .to_string()
}

/// `healstore --db <db> <args>` run under a file-size limit (`ulimit -f`, which any user may
/// lower for their own processes): a write past `limit_bytes` fails as it would on a full
/// disk. SIGXFSZ, which such a write would also raise, is ignored, as on a system where the
/// limit is a quota.
fn run_with_file_size_limit(
    db: &Path,
    limit_bytes: u64,
    a: &[&str],
    input: &[u8],
) -> std::process::Output {
    // `ulimit -f` counts 512-byte blocks in a POSIX shell (some shells count 1024: the limit
    // is then twice as high, which the test allows for).
    let blocks = limit_bytes / 512;
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"trap '' XFSZ && ulimit -f "$1" && shift && exec "$@""#)
        .arg("sh")
        .arg(blocks.to_string())
        .arg(common::bin())
        .arg("--db")
        .arg(db)
        .args(a)
        .env_remove("HEALSTORE_DB")
        .env_remove("HEALSTORE_DURABILITY")
        .env_remove("HEALSTORE_CONFIG")
        .env_remove("RUST_LOG")
        .current_dir(db.parent().expect("a directory"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sh");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = common::wait_with_deadline(child, common::CHILD_TIMEOUT);
    feeder.join().expect("feeder");
    out
}

#[test]
fn a_full_disk_fails_appends_clearly_keeps_what_was_acknowledged_and_appending_resumes() {
    // Given a database holding 200 events,
    let (_dir, db) = common::temp_db();
    let first: String = (0..200)
        .map(|n| heavy_line(&format!("old-{n}"), n) + "\n")
        .collect();
    expect_success(&run_with_input(&db, &["import", "-"], first.as_bytes()));
    let old = block_on(read_all(&db));
    let files = db_files(&db);
    let size = files.main.as_ref().map_or(0, Vec::len) as u64 + files.wal.len() as u64;

    // when `healstore append` is fed far more than fits under a file-size limit a little
    // above the file's size (space runs out part way through),
    const MORE: usize = 4000;
    let input: String = (0..MORE)
        .map(|n| heavy_line(&format!("new-{n}"), n) + "\n")
        .collect();
    let limit = size + 256 * 1024;
    let out = run_with_file_size_limit(
        &db,
        limit,
        &["--format", "json", "append", "--pipeline", "4", "-"],
        input.as_bytes(),
    );

    // then it fails with exit code 2 and one clear line (no panic, not killed by a signal),
    let stderr = stderr_text(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit code 2 when the disk is full, got {}; stderr:\n{stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let line = stderr.trim_end();
    assert_eq!(
        line.lines().count(),
        1,
        "expected a one-line error:\n{stderr}"
    );
    assert!(line.starts_with("healstore: error: line "), "{line}");
    // (a file-size limit makes writes fail with EFBIG, which SQLite reports as an I/O error
    // rather than as SQLITE_FULL, its code for ENOSPC: either is a clear answer)
    assert!(
        line.contains("nothing was stored")
            && (line.contains("disk I/O error") || line.contains("disk is full")),
        "the error does not say that the write failed and why: {line}"
    );
    // having acknowledged some events first, each of which is stored where it was said to be,
    let acks = parse_acks(&stdout_text(&out));
    assert!(
        !acks.is_empty(),
        "nothing was acknowledged before the disk filled up"
    );
    assert!(acks.len() < MORE, "everything fit: the limit did not apply");
    assert_eq!(block_on(integrity_check(&db)), "ok");
    let after = block_on(read_all(&db));
    assert_log_invariants(&after);
    assert_eq!(
        after[..old.len()],
        old[..],
        "events stored before were lost or changed"
    );
    let by_id: HashMap<&str, &RecordedEvent> =
        after.iter().map(|e| (e.event_id.as_str(), e)).collect();
    for ack in &acks {
        assert_eq!(ack.event_id, format!("new-{}", ack.line - 1));
        assert!(
            !ack.duplicate,
            "{} reported as already stored",
            ack.event_id
        );
        let stored = by_id
            .get(ack.event_id.as_str())
            .unwrap_or_else(|| panic!("acknowledged {} is lost", ack.event_id));
        assert_eq!(
            (stored.position, stored.stream_version),
            (ack.position, ack.stream_version)
        );
    }
    eprintln!(
        "limit {limit} bytes over a {size}-byte database: {} of {MORE} appended before: {line}",
        acks.len()
    );

    // When space returns and the producer sends everything again,
    let out = run_with_input(&db, &["--format", "json", "append", "-"], input.as_bytes());
    let retried = parse_acks(&expect_success(&out));
    // then what was stored is reported as already stored where it is, the rest is appended,
    assert_eq!(retried.len(), MORE);
    for ack in &retried {
        match by_id.get(ack.event_id.as_str()) {
            Some(stored) => {
                assert!(ack.duplicate, "{} was stored twice", ack.event_id);
                assert_eq!(
                    (ack.position, ack.stream_version),
                    (stored.position, stored.stream_version)
                );
            }
            None => assert!(!ack.duplicate, "{} was never stored", ack.event_id),
        }
    }
    // and the log holds every event once, in order.
    let all = block_on(read_all(&db));
    assert_log_invariants(&all);
    assert_eq!(all.len(), old.len() + MORE);
    assert_eq!(all[..old.len()], old[..]);
    assert_eq!(block_on(integrity_check(&db)), "ok");
}
