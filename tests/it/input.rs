//! Input on every path: one maximum line length, enforced while reading with bounded memory
//! (a line that goes on for 200 MB is refused after about a megabyte); imports from pipes,
//! FIFOs and process substitutions, archives included; and no stored event that `export`
//! could not write as a line `import` takes back.

#![cfg(unix)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use healstore::input::{MAX_LINE_BYTES, MAX_PAYLOAD_BYTES};
use healstore::{EventLine, NewEvent};

use crate::common::{
    self, assert_same_files, block_on, db_files, expect_error, expect_success, healstore, read_all,
    run, run_with_input, stdout_text, test_line,
};

const MIB: u64 = 1 << 20;

/// The start of an event line whose payload string then goes on (no closing, no newline).
const OPEN_LINE: &str = r#"{"event_id":"endless","stream_id":"s","event_type":"test_happened","occurred_at":"2026-11-01T12:00:00Z","payload":{"blob":""#;

/// Runs `cmd` to completion with `feed` writing its standard input (on a thread of its own),
/// draining its output; returns the output and the child's peak resident set in bytes: its
/// `VmHWM`, sampled every millisecond while it runs (the last samples before it exits may be
/// missed: a lower bound, but memory that grows with the input grows for as long as the input
/// is read). The kernel's `ru_maxrss` would not do: a child's counts the test process's own
/// resident set at the time of the spawn; for the same reason samples taken before the child
/// execs healstore are left out.
fn run_measured(
    mut cmd: Command,
    feed: impl FnOnce(std::process::ChildStdin) + Send + 'static,
) -> (Output, u64) {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn healstore");
    let stdin = child.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || feed(stdin));
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let status_file = format!("/proc/{}/status", child.id());
    let deadline = Instant::now() + common::CHILD_TIMEOUT;
    let mut peak = 0u64;
    let status = loop {
        // (only once it runs healstore: between the fork and the exec, the child is a copy of
        // this test process, whose resident set it then shows)
        if let Ok(text) = std::fs::read_to_string(&status_file)
            && text.lines().any(|l| {
                l.strip_prefix("Name:")
                    .is_some_and(|n| n.trim() == "healstore")
            })
            && let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kib * 1024);
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("healstore still running after {:?}", common::CHILD_TIMEOUT);
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    feeder.join().expect("feeder");
    let out = Output {
        status,
        stdout: stdout.join().expect("stdout"),
        stderr: stderr.join().expect("stderr"),
    };
    (out, peak)
}

/// `healstore --db db args`, for [`run_measured`].
fn command(db: &Path, args: &[&str]) -> Command {
    let mut c = healstore(db);
    c.args(args);
    c
}

/// A database holding a few events, and its bytes.
fn sample(dir: &Path) -> (PathBuf, common::DbFiles) {
    let db = dir.join("sample.db");
    let text: String = (0..5)
        .map(|i| test_line(&format!("sample-{i}"), "s", i) + "\n")
        .collect();
    expect_success(&run_with_input(&db, &["import", "-"], text.as_bytes()));
    let files = db_files(&db);
    (db, files)
}

#[test]
fn a_200_mb_line_without_a_newline_is_refused_at_once_with_its_line_number() {
    // Given a database and a 200 MB file holding a good line and then one event line that
    // never ends (no newline),
    let dir = tempfile::tempdir().unwrap();
    let (db, files) = sample(dir.path());
    let file = dir.path().join("endless.jsonl");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        writeln!(f, "{}", test_line("good-1", "s", 1)).unwrap();
        f.write_all(OPEN_LINE.as_bytes()).unwrap();
        let chunk = vec![b'a'; MIB as usize];
        for _ in 0..200 {
            f.write_all(&chunk).unwrap();
        }
    }
    for verb in ["import", "append"] {
        // when it is imported or appended,
        let started = Instant::now();
        let (out, peak) = run_measured(
            command(&db, &["--format", "json", verb, file.to_str().unwrap()]),
            drop,
        );
        // then the command fails with exit code 2 and one line naming line 2 and the limit
        // (`append` having committed and acknowledged line 1 first),
        let line = if verb == "append" {
            let acks = common::parse_acks(&stdout_text(&out));
            assert_eq!(acks.len(), 1, "{acks:?}");
            assert_eq!((acks[0].line, acks[0].event_id.as_str()), (1, "good-1"));
            let stderr = common::stderr_text(&out);
            assert_eq!(out.status.code(), Some(2), "{stderr}");
            assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
            assert!(stderr.starts_with("healstore: error: line 2"), "{stderr}");
            stderr
        } else {
            expect_error(&out, "line 2")
        };
        assert!(
            line.contains(&format!("longer than {MAX_LINE_BYTES} bytes")),
            "{verb}: {line}"
        );
        // having held far less than the line in memory,
        eprintln!(
            "{verb} of a 200 MB line: refused in {:?}, peak resident set {} MiB",
            started.elapsed(),
            peak / MIB
        );
        assert!(peak < 64 * MIB, "{verb}: peak resident set {peak} bytes");
        // and writing nothing else.
        if verb == "import" {
            assert!(line.contains("nothing was imported"), "{line}");
            assert_same_files(&files, &db_files(&db), "a refused import");
        }
    }
    let stored: Vec<String> = block_on(read_all(&db))
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(stored.last().map(String::as_str), Some("good-1"));
    assert!(!stored.iter().any(|id| id == "endless"));
}

#[test]
fn an_endless_line_on_standard_input_is_refused_after_reading_about_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (db, files) = sample(dir.path());
    for verb in ["import", "append"] {
        // Given a producer that would send 256 MB of one line on standard input,
        let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let count = std::sync::Arc::clone(&written);
        let feed = move |mut stdin: std::process::ChildStdin| {
            let chunk = vec![b'a'; 64 * 1024];
            if stdin.write_all(OPEN_LINE.as_bytes()).is_err() {
                return;
            }
            for _ in 0..4096 {
                if stdin.write_all(&chunk).is_err() {
                    return;
                }
                count.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        };
        // when it is imported or appended from standard input,
        let (out, _) = run_measured(command(&db, &[verb, "-"]), feed);
        // then the command fails naming line 1, nothing is written,
        let line = expect_error(&out, "line 1");
        assert!(line.contains("longer than"), "{line}");
        assert_same_files(&files, &db_files(&db), verb);
        // and it stopped reading soon after the limit: the producer could not write much
        // more than the limit, a read buffer and the pipe's.
        let n = written.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!("{verb}: the producer wrote {n} bytes before the pipe closed");
        assert!(n < 4 * MIB, "{verb}: {n} bytes were read");
    }
}

#[test]
fn lines_of_the_largest_size_import_with_bounded_memory() {
    // Given a file of 80 event lines, each as long as a stored event's line can be (its payload
    // at the limit),
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("big.db");
    let file = dir.path().join("large-lines.jsonl");
    const LINES: usize = 80;
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        for i in 0..LINES {
            // (`{"blob":"..."}` is 11 bytes besides the text)
            let line = serde_json::json!({
                "event_id": format!("large-{i}"),
                "stream_id": format!("s-{}", i % 7),
                "event_type": "test_happened",
                "occurred_at": "2026-11-01T12:00:00Z",
                "payload": {"blob": "y".repeat(MAX_PAYLOAD_BYTES - 11)},
            })
            .to_string();
            assert!(line.len() <= MAX_LINE_BYTES);
            writeln!(f, "{line}").unwrap();
        }
    }
    // when it is imported,
    let started = Instant::now();
    let (out, peak) = run_measured(
        command(&db, &["--format", "json", "import", file.to_str().unwrap()]),
        drop,
    );
    // then every event is imported, with memory bounded by what the import holds in flight
    // and SQLite's page cache rather than by the file (80 MB),
    let report: serde_json::Value = serde_json::from_str(&expect_success(&out)).unwrap();
    assert_eq!(report["imported"], LINES);
    eprintln!(
        "import of {LINES} lines of {} bytes: {:?}, peak resident set {} MiB",
        MAX_PAYLOAD_BYTES,
        started.elapsed(),
        peak / MIB
    );
    assert!(peak < 200 * MIB, "peak resident set {peak} bytes");
    // and `append` takes them too.
    let appended = dir.path().join("appended.db");
    let (out, peak) = run_measured(
        command(
            &appended,
            &["--format", "json", "append", file.to_str().unwrap()],
        ),
        drop,
    );
    assert_eq!(common::parse_acks(&expect_success(&out)).len(), LINES);
    eprintln!("append of the same: peak resident set {} MiB", peak / MIB);
    assert!(peak < 200 * MIB, "peak resident set {peak} bytes");
}

/// JSON Lines of `n` events.
fn events_text(prefix: &str, n: u64) -> String {
    (0..n)
        .map(|i| test_line(&format!("{prefix}-{i}"), &format!("s-{}", i % 3), i) + "\n")
        .collect()
}

/// The event ids in a database, in position order.
fn ids(db: &Path) -> Vec<String> {
    block_on(read_all(db))
        .into_iter()
        .map(|e| e.event_id)
        .collect()
}

/// Writes `bytes` into the FIFO at `path` once a reader opened it, giving up (without
/// blocking forever) if none does within the child timeout.
fn feed_fifo(path: PathBuf, bytes: Vec<u8>) -> std::thread::JoinHandle<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::thread::spawn(move || {
        let deadline = Instant::now() + common::CHILD_TIMEOUT;
        // A non-blocking open fails until a reader is there (ENXIO).
        let f = loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&path)
            {
                Ok(f) => break f,
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("open the FIFO for writing: {e}"),
            }
        };
        // Blocking writes from here on.
        use std::os::fd::AsRawFd;
        // SAFETY: clears O_NONBLOCK on a descriptor this thread owns.
        unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, 0) };
        let mut f = f;
        f.write_all(&bytes).expect("write into the FIFO");
    })
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(status.success());
}

/// `bash -c 'exec healstore --db DB ARGS... <(cat FILE)'`: the input as a process
/// substitution (a pipe named /dev/fd/N).
fn run_with_process_substitution(db: &Path, args: &[&str], file: &Path) -> Output {
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg(r#"db="$1"; file="$2"; shift 2; exec "$0" --db "$db" "$@" <(cat "$file")"#)
        .arg(common::bin())
        .arg(db)
        .arg(file)
        .args(args)
        .env_remove("HEALSTORE_DB")
        .env_remove("HEALSTORE_DURABILITY")
        .env_remove("HEALSTORE_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    common::wait_with_deadline(c.spawn().expect("spawn bash"), common::CHILD_TIMEOUT)
}

/// A database whose oldest events were archived into `archive`; returns the archived ids.
fn archived_db(db: &Path, archive: &Path) -> Vec<String> {
    let text: String = (0..30)
        .map(|i| {
            serde_json::json!({
                "event_id": format!("old-{i}"),
                "stream_id": format!("s-{}", i % 3),
                "event_type": "test_happened",
                "occurred_at": format!("2026-11-01T12:{i:02}:00Z"),
                "payload": {"n": i},
            })
            .to_string()
                + "\n"
        })
        .collect();
    expect_success(&run_with_input(db, &["import", "-"], text.as_bytes()));
    let out = run(
        db,
        &[
            "--format",
            "json",
            "--now",
            "2026-11-02T00:00:00Z",
            "archive",
            "--before",
            "2026-11-01T12:20:00Z",
            "--to",
            archive.to_str().unwrap(),
        ],
    );
    let report: serde_json::Value = serde_json::from_str(&expect_success(&out)).unwrap();
    assert_eq!(report["events"], 20, "{report}");
    (0..20).map(|i| format!("old-{i}")).collect()
}

#[test]
fn import_reads_fifos_and_process_substitutions_of_json_lines_and_archives() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("old.jsonl.gz");
    let archived = archived_db(&dir.path().join("origin.db"), &archive);
    let plain = dir.path().join("plain.jsonl");
    std::fs::write(&plain, events_text("plain", 40)).unwrap();
    let plain_ids: Vec<String> = (0..40).map(|i| format!("plain-{i}")).collect();

    for (what, file, expected) in [
        ("JSON Lines", &plain, &plain_ids),
        ("an archive", &archive, &archived),
    ] {
        // Given a FIFO that a producer writes the input into,
        let fifo = dir.path().join(format!("fifo-{}", expected[0]));
        mkfifo(&fifo);
        let db = dir.path().join(format!("from-fifo-{}.db", expected[0]));
        let producer = feed_fifo(fifo.clone(), std::fs::read(file).unwrap());
        // when `import FIFO` reads it,
        let out = run(&db, &["--format", "json", "import", fifo.to_str().unwrap()]);
        producer.join().expect("producer");
        // then every event is imported;
        let report: serde_json::Value = serde_json::from_str(&expect_success(&out)).unwrap();
        assert_eq!(report["imported"], expected.len(), "{what} through a FIFO");
        assert_eq!(&ids(&db), expected, "{what} through a FIFO");

        // and the same through a process substitution (`<(cat FILE)`).
        let db = dir
            .path()
            .join(format!("from-substitution-{}.db", expected[0]));
        let out = run_with_process_substitution(&db, &["--format", "json", "import"], file);
        let report: serde_json::Value = serde_json::from_str(&expect_success(&out)).unwrap();
        assert_eq!(report["imported"], expected.len(), "{what} through <(...)");
        assert_eq!(&ids(&db), expected, "{what} through <(...)");
    }
}

#[test]
fn an_archive_piped_into_import_imports_and_its_own_log_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let origin = dir.path().join("origin.db");
    let archive = dir.path().join("old.jsonl.gz");
    let archived = archived_db(&origin, &archive);
    let bytes = std::fs::read(&archive).unwrap();
    // Given an archive, when it is piped into `import -` of a new database (`cat FILE |
    // healstore import -`),
    let copy = dir.path().join("copy.db");
    let out = run_with_input(&copy, &["--format", "json", "import", "-"], &bytes);
    // then its events are imported, and they verify with the archive's end hash;
    let report: serde_json::Value = serde_json::from_str(&expect_success(&out)).unwrap();
    assert_eq!(report["imported"], 20);
    assert_eq!(ids(&copy), archived);
    let verified: serde_json::Value = serde_json::from_str(&expect_success(&run(
        &copy,
        &["--format", "json", "verify"],
    )))
    .unwrap();
    let header: serde_json::Value = serde_json::from_str(&expect_success(&run(
        &origin,
        &[
            "--format",
            "json",
            "verify",
            "--archive",
            archive.to_str().unwrap(),
        ],
    )))
    .unwrap();
    assert_eq!(verified["head_hash"], header["header"]["end_hash"]);
    // and piped into the database it was cut from, it is refused and changes nothing.
    let files = db_files(&origin);
    let out = run_with_input(&origin, &["import", "-"], &bytes);
    expect_error(&out, "was cut from this database");
    assert_same_files(
        &files,
        &db_files(&origin),
        "a refused archive on standard input",
    );
    // A damaged archive on standard input is refused with a one-line error.
    let mut damaged = bytes.clone();
    damaged.truncate(bytes.len() / 2);
    let files = db_files(&copy);
    let out = run_with_input(&copy, &["import", "-"], &damaged);
    expect_error(&out, "nothing was imported");
    assert_same_files(&files, &db_files(&copy), "a damaged archive");
}

#[tokio::test]
async fn no_event_is_stored_that_export_could_not_write_as_a_line_import_takes_back() {
    // Given a store,
    let (dir, path) = common::temp_db();
    let store = common::open(&path).await;
    // ids as long as they may be, of characters JSON escapes (each written as two bytes),
    let id = |c: char| std::iter::repeat_n(c, healstore::event::MAX_ID_LEN).collect::<String>();
    let event = |payload_len: usize| {
        NewEvent::new(
            id('"'),
            common::t0(),
            serde_json::json!({"blob": "z".repeat(payload_len - 11)}),
        )
        .with_id(id('\\'))
    };
    // an event whose payload is one byte over the limit is refused, by an append and by an
    // import alike,
    let err = store
        .append_one(&id('"'), event(MAX_PAYLOAD_BYTES + 1))
        .await
        .unwrap_err();
    assert!(matches!(err, healstore::Error::InvalidEvent(_)), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("at most {MAX_PAYLOAD_BYTES}")),
        "{err}"
    );
    let mut sink = store.begin_import().await.unwrap();
    let refused = sink
        .send(1, id('"'), event(MAX_PAYLOAD_BYTES + 1))
        .await
        .unwrap_err();
    assert_eq!(refused.to_string(), err.to_string());
    sink.abort().await;
    // and one at the limit is stored,
    store
        .append_one(&id('"'), event(MAX_PAYLOAD_BYTES))
        .await
        .unwrap();
    store.close().await.unwrap();
    // exported as a line within the limit,
    let exported = expect_success(&run(&path, &["export"]));
    let line = exported.lines().next().unwrap();
    assert!(
        line.len() <= MAX_LINE_BYTES,
        "an exported line of {} bytes",
        line.len()
    );
    assert!(EventLine::parse(line).is_ok());
    // which imports into another database as the same event.
    let copy = dir.path().join("copy.db");
    let out = run_with_input(
        &copy,
        &["--format", "json", "import", "-"],
        exported.as_bytes(),
    );
    let report: serde_json::Value = serde_json::from_str(&stdout_text(&out)).unwrap();
    assert_eq!(report["imported"], 1);
    assert_eq!(expect_success(&run(&copy, &["export"])), exported);
}
