//! `healstore heal`: raw monitoring events in as JSON Lines, healed many at once, one answer
//! per line in input order as each is committed; bad lines answered on their own and changing
//! nothing; live sources (pipes and FIFOs that stay open) answered line by line; re-runs
//! idempotent by failure id; a closed output, a signal and the end of the input end it cleanly.

#![cfg(unix)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Stdio};
use std::sync::mpsc;

use serde_json::{Value, json};

use crate::common::{
    self, CHILD_TIMEOUT, assert_same_files, block_on, db_files, expect_success, healstore,
    read_all, run, run_with_input, stderr_text, stdout_text,
};

const NOW: &str = "2026-11-01T12:30:00Z";

fn parse(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn text(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// `heal` over `lines` on standard input, with `args` after the command.
fn heal(db: &Path, lines: &[String], args: &[&str]) -> std::process::Output {
    let mut all = vec!["--now", NOW, "--format", "json", "heal"];
    all.extend_from_slice(args);
    run_with_input(db, &all, text(lines).as_bytes())
}

/// A raw heartbeat failure of `agent`, with a failure id and its own time.
fn heartbeat(id: &str, agent: &str, minute: u32) -> String {
    json!({
        "type": "heartbeat_failed",
        "agent_id": agent,
        "failure_id": id,
        "timestamp": format!("2026-11-01T12:{minute:02}:00Z"),
    })
    .to_string()
}

/// What a report decided, without what varies from run to run (durations).
fn decisions(report: &Value) -> Value {
    let attempts: Vec<Value> = report["attempts"]
        .as_array()
        .unwrap_or_else(|| panic!("no attempts: {report}"))
        .iter()
        .map(|a| json!([a["strategy"], a["decision"], a["reason"], a["actions"]]))
        .collect();
    json!({
        "failure_id": report["failure_id"],
        "attempts": attempts,
        "delegated": report["delegated_actions"],
        "route": report["route"],
    })
}

/// The events of the given type in the database.
fn events_of(db: &Path, event_type: &str) -> Vec<healstore::RecordedEvent> {
    block_on(read_all(db))
        .into_iter()
        .filter(|e| e.event_type == event_type)
        .collect()
}

#[test]
fn answers_come_in_input_order_and_decisions_are_those_of_one_line_at_a_time() {
    // Given 300 failures of 6 agents (each agent's circuit opening after 5 in a row, restarts
    // held in backoff, ...), interleaved,
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..300)
        .map(|i| heartbeat(&format!("f-{i}"), &format!("agent-{}", i % 6), i / 10))
        .collect();
    // when they are healed 256 at a time, and one at a time,
    let many = dir.path().join("many.db");
    let out = heal(&many, &lines, &["--pipeline", "256"]);
    let concurrent = parse(&expect_success(&out));
    let one = dir.path().join("one.db");
    let sequential = parse(&expect_success(&heal(&one, &lines, &["--pipeline", "1"])));
    // then every line is answered once, in input order, with its own failure,
    assert_eq!(concurrent.len(), lines.len());
    for (i, r) in concurrent.iter().enumerate() {
        assert_eq!(r["line"], i + 1, "{r}");
        assert_eq!(r["failure_id"], format!("f-{i}"), "{r}");
        assert_eq!(r["duplicate"], false);
    }
    // and each line's decisions are the ones taken when the lines are healed in turn: the
    // decisions on one state follow the input's order (the fifth failure in a row opens the
    // circuit, not whichever happened to be decided fifth),
    for (c, s) in concurrent.iter().zip(&sequential) {
        assert_eq!(decisions(c), decisions(s));
    }
    let opened = concurrent
        .iter()
        .filter(|r| {
            r["attempts"].as_array().unwrap().iter().any(|a| {
                a["reason"]
                    .as_str()
                    .unwrap_or("")
                    .contains("circuit opened")
            })
        })
        .count();
    assert!(opened >= 6, "each agent's circuit opens: {opened}");
    // and the store holds one failure per line, dated by the event's own time.
    let detected = events_of(&many, "failure_detected");
    assert_eq!(detected.len(), lines.len());
    let first = detected
        .iter()
        .find(|e| e.payload["failure_id"] == "f-0")
        .unwrap();
    assert_eq!(
        healstore::time::format_time(first.occurred_at),
        "2026-11-01T12:00:00.000000Z"
    );
    common::assert_log_invariants(&block_on(read_all(&many)));
}

#[test]
fn bad_lines_are_answered_on_their_own_change_nothing_and_the_rest_is_healed() {
    // Given a stream with a bad line of every kind between good ones,
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mixed.db");
    let long = format!(
        r#"{{"type":"heartbeat_failed","agent_id":"a","pad":"{}"}}"#,
        "x".repeat(healstore::input::MAX_LINE_BYTES)
    );
    let mut input = Vec::new();
    let mut add = |line: &[u8]| {
        input.extend_from_slice(line);
        input.push(b'\n');
    };
    add(heartbeat("good-1", "agent-1", 0).as_bytes()); // 1
    add(b"{\"type\": \"heartbeat_failed\", "); // 2: not JSON
    add(long.as_bytes()); // 3: too long
    add(b"{\"type\":\"heartbeat_failed\",\"agent_id\":\"\xff\"}"); // 4: not UTF-8
    add(b"[1, 2, 3]"); // 5: not a raw event
    add(br#"{"type":"task_timeout"}"#); // 6: a task timeout without its task
    add(br#"{"type":"agent_failed","agent_id":"a","health_state":"degraded"}"#); // 7: no failure
    add(b""); // 8: blank, skipped
    let long_agent = "a".repeat(300);
    add(json!({"type": "heartbeat_failed", "agent_id": long_agent})
        .to_string()
        .as_bytes()); // 9
    add(heartbeat("good-1", "agent-2", 1).as_bytes()); // 10: the id, other facts
    add(br#"{"type":"task_timeout","task_id":"t-1","failure_id":"good-2"}"#); // 11: no timestamp
    // when it is healed,
    let out = common::run_with_input(
        &db,
        // (one line at a time: line 10 reuses line 1's failure id, and which of two heals in
        // flight together is recorded first is theirs to race)
        &[
            "--now",
            NOW,
            "--format",
            "json",
            "heal",
            "--pipeline",
            "1",
            "-",
        ],
        &input,
    );
    // then every line but the blank one is answered, in order: the good ones healed, the bad
    // ones with an error record naming what is wrong, the stream going on after each;
    assert_eq!(out.status.code(), Some(1), "{}", stderr_text(&out));
    let answers = parse(&stdout_text(&out));
    let numbers: Vec<u64> = answers
        .iter()
        .map(|a| a["line"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6, 7, 9, 10, 11]);
    let code = |i: usize| answers[i]["error"]["code"].as_str().map(str::to_owned);
    let message = |i: usize| answers[i]["error"]["message"].as_str().unwrap().to_owned();
    assert_eq!(answers[0]["failure_id"], "good-1");
    assert_eq!(code(0), None);
    for (i, needle) in [
        (1, "not JSON"),
        (2, "longer than 1048576 bytes"),
        (3, "UTF-8"),
        (4, "JSON object"),
        (5, "needs a task_id"),
        (7, "agent_id is 300 bytes long"),
    ] {
        assert_eq!(code(i).as_deref(), Some("invalid_input"), "{}", answers[i]);
        assert!(message(i).contains(needle), "{}", answers[i]);
    }
    assert_eq!(answers[6], json!({"line": 7, "detected": false}));
    assert_eq!(code(8).as_deref(), Some("conflict"), "{}", answers[8]);
    assert!(message(8).contains("already recorded with other facts"));
    assert_eq!(answers[9]["failure_id"], "good-2");
    // the exit code says lines were refused, on one line of stderr;
    let stderr = stderr_text(&out);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("healstore: warning: 7 of 10 lines were refused (the first: line 2)")
    );
    // the store holds the two good failures and nothing of the others (an event without a
    // time dated `--now`);
    // (two unrelated heals in flight together commit in either order)
    let mut detected = events_of(&db, "failure_detected");
    detected.sort_by_key(|e| e.payload["failure_id"].as_str().unwrap().to_owned());
    let ids: Vec<&str> = detected
        .iter()
        .map(|e| e.payload["failure_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["good-1", "good-2"]);
    assert_eq!(detected[0].payload["agent_id"], "agent-1");
    assert_eq!(
        healstore::time::format_time(detected[1].occurred_at),
        "2026-11-01T12:30:00.000000Z"
    );
    // and a stream of nothing but bad lines leaves the database byte for byte as it was.
    let before = db_files(&db);
    let bad: Vec<String> = [
        "nonsense",
        r#"{"type":"heartbeat_failed"}"#,
        r#"{"type":"nothing_wrong"}"#,
        &heartbeat("good-1", "agent-3", 2),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let out = heal(&db, &bad, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_text(&out));
    assert_eq!(parse(&stdout_text(&out)).len(), 4);
    assert_same_files(&before, &db_files(&db), "a stream of refused lines");
}

#[test]
fn a_rerun_of_the_same_input_answers_the_first_decisions_and_writes_nothing() {
    // Given a file of failures (one of them twice) healed once,
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rerun.db");
    let mut lines: Vec<String> = (0..40)
        .map(|i| heartbeat(&format!("r-{i}"), &format!("agent-{}", i % 3), i))
        .collect();
    lines.push(
        json!({"type": "task_failed", "task_id": "t-9", "agent_id": "agent-1", "failure_id": "r-task"})
            .to_string(),
    );
    lines.push(lines[5].clone());
    let file = dir.path().join("failures.jsonl");
    std::fs::write(&file, text(&lines)).unwrap();
    let args = [
        "--now",
        NOW,
        "--format",
        "json",
        "heal",
        file.to_str().unwrap(),
    ];
    let first = parse(&expect_success(&run(&db, &args)));
    assert_eq!(first.len(), lines.len());
    assert_eq!(first[41]["duplicate"], true, "the same id twice in one run");
    assert_eq!(decisions(&first[41]), decisions(&first[5]));
    let events = block_on(read_all(&db));
    assert_eq!(events_of(&db, "failure_detected").len(), 41);
    // when it is healed again (later),
    let before = db_files(&db);
    let again = parse(&expect_success(&run(
        &db,
        &[
            "--now",
            "2026-11-02T00:00:00Z",
            "--format",
            "json",
            "heal",
            file.to_str().unwrap(),
        ],
    )));
    // then each line is answered with the decisions first recorded for it, as a duplicate,
    assert_eq!(again.len(), lines.len());
    for (a, f) in again.iter().zip(&first) {
        assert_eq!(a["duplicate"], true, "{a}");
        assert_eq!(a["line"], f["line"]);
        assert_eq!(decisions(a), decisions(f));
    }
    // and nothing was written.
    assert_same_files(&before, &db_files(&db), "a re-run");
    assert_eq!(block_on(read_all(&db)).len(), events.len());
}

/// Reads a child's output lines on a thread of their own, so that a test can wait for the
/// next one with a deadline.
fn line_reader(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_answer(rx: &mpsc::Receiver<String>, what: &str) -> Value {
    let line = rx
        .recv_timeout(CHILD_TIMEOUT)
        .unwrap_or_else(|e| panic!("no answer to {what}: {e}"));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// Writes one line at a time into `input` and reads its answer before writing the next: the
/// source stays open throughout, so each answer must come before the end of the input.
fn converse(input: &mut impl Write, answers: &mpsc::Receiver<String>, from: usize, n: usize) {
    for i in from..from + n {
        writeln!(
            input,
            "{}",
            heartbeat(&format!("live-{i}"), "agent-live", 0)
        )
        .unwrap();
        input.flush().unwrap();
        let a = next_answer(answers, &format!("line {}", i + 1));
        assert_eq!(a["line"], i + 1, "{a}");
        assert_eq!(a["failure_id"], format!("live-{i}"), "{a}");
    }
}

fn spawn_heal(db: &Path, input: Option<&Path>) -> Child {
    let mut c = healstore(db);
    c.args(["--now", NOW, "--format", "json", "heal"]);
    if let Some(p) = input {
        c.arg(p);
    }
    c.stdin(if input.is_some() {
        Stdio::null()
    } else {
        Stdio::piped()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn healstore heal")
}

#[test]
fn a_pipe_that_stays_open_is_answered_line_by_line() {
    // Given `heal` reading standard input from a source that writes a line and waits,
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pipe.db");
    let mut child = spawn_heal(&db, None);
    let mut stdin = child.stdin.take().unwrap();
    let answers = line_reader(child.stdout.take().unwrap());
    // then each line is answered while the source is still open,
    converse(&mut stdin, &answers, 0, 5);
    // and the end of the input ends the command: exit 0, each line stored once.
    drop(stdin);
    let out = common::wait_with_deadline(child, CHILD_TIMEOUT);
    assert!(out.status.success(), "{}", stderr_text(&out));
    assert!(
        answers.recv_timeout(CHILD_TIMEOUT).is_err(),
        "no more answers"
    );
    assert_eq!(events_of(&db, "failure_detected").len(), 5);
}

#[test]
fn a_fifo_is_answered_line_by_line_while_its_writer_keeps_it_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fifo.db");
    let fifo = dir.path().join("events.fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    // Given `heal` reading a FIFO (its open waits for a writer),
    let mut child = spawn_heal(&db, Some(&fifo));
    let answers = line_reader(child.stdout.take().unwrap());
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    // then each line written is answered while the writer keeps the FIFO open,
    converse(&mut writer, &answers, 0, 4);
    // and when the writer closes it, the command ends.
    drop(writer);
    let out = common::wait_with_deadline(child, CHILD_TIMEOUT);
    assert!(out.status.success(), "{}", stderr_text(&out));
    assert_eq!(events_of(&db, "failure_detected").len(), 4);
}

#[test]
fn sigterm_ends_a_live_stream_with_its_lines_answered_though_the_source_stays_open() {
    // Given `heal` on a source that stays open, with lines answered,
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("term.db");
    let mut child = spawn_heal(&db, None);
    let mut stdin = child.stdin.take().unwrap();
    let answers = line_reader(child.stdout.take().unwrap());
    converse(&mut stdin, &answers, 0, 3);
    // when it is sent SIGTERM (the source still open, no more input coming),
    // SAFETY: a plain kill(2) of the child this test started.
    let r = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(r, 0);
    // then it exits 0 by itself, without waiting for more input, the log sound.
    let out = common::wait_with_deadline(child, CHILD_TIMEOUT);
    assert!(out.status.success(), "{}", stderr_text(&out));
    drop(stdin);
    assert_eq!(events_of(&db, "failure_detected").len(), 3);
    let v = expect_success(&run(&db, &["verify"]));
    assert!(v.lines().any(|l| l.starts_with("verified: ")), "{v}");
}

#[test]
fn a_closed_output_is_not_an_error() {
    // Given many lines healed into a reader that takes the first answer and goes away,
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("head.db");
    let lines: Vec<String> = (0..2000)
        .map(|i| heartbeat(&format!("h-{i}"), &format!("agent-{}", i % 50), 0))
        .collect();
    let mut child = healstore(&db)
        .args(["--now", NOW, "--format", "json", "heal", "--pipeline", "4"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        // (the command may stop reading: not this feeder's concern)
        let _ = stdin.write_all(text(&lines).as_bytes());
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("\"h-0\""), "{first}");
    drop(stdout);
    // then the command ends by itself, exit 0, nothing on stderr,
    let out = common::wait_with_deadline(child, CHILD_TIMEOUT);
    feeder.join().unwrap();
    assert!(out.status.success(), "{}", stderr_text(&out));
    assert_eq!(stderr_text(&out), "");
    // and what it healed is whole in the store (each failure with its decision).
    let detected = events_of(&db, "failure_detected").len();
    assert!(detected >= 1);
    assert!(events_of(&db, "healing_attempted").len() >= detected);
    let v = expect_success(&run(&db, &["verify"]));
    assert!(v.lines().any(|l| l.starts_with("verified: ")), "{v}");
}

#[test]
fn gzip_input_table_output_and_an_endless_line_skipped() {
    let dir = tempfile::tempdir().unwrap();
    // Given compressed JSON Lines,
    let db = dir.path().join("gz.db");
    let lines: Vec<String> = (0..3)
        .map(|i| heartbeat(&format!("z-{i}"), "agent-z", i))
        .collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(text(&lines).as_bytes()).unwrap();
    let packed = gz.finish().unwrap();
    // then they are healed as the plain text is, one table line per input line;
    let out = run_with_input(&db, &["--now", NOW, "heal"], &packed);
    let table = expect_success(&out);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(
        rows[0].starts_with("line 1: z-0 agent_down agent agent-z: "),
        "{table}"
    );
    assert!(
        rows[0].contains("carry out: restart agent agent-z"),
        "{table}"
    );
    // and a line without end (200 MB) is refused once, its rest skipped, and the line after
    // it healed, without the command holding the line.
    let db = dir.path().join("endless.db");
    let mut child = healstore(&db)
        .args(["--now", NOW, "--format", "json", "heal"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        stdin
            .write_all(b"{\"type\":\"heartbeat_failed\",\"pad\":\"")
            .unwrap();
        for _ in 0..200 {
            stdin.write_all(&chunk).unwrap();
        }
        stdin.write_all(b"\"}\n").unwrap();
        writeln!(stdin, "{}", heartbeat("after", "agent-y", 0)).unwrap();
    });
    let out = common::wait_with_deadline(child, CHILD_TIMEOUT);
    feeder.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_text(&out));
    let answers = parse(&stdout_text(&out));
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(answers[0]["error"]["code"], "invalid_input");
    assert_eq!(answers[1]["line"], 2);
    assert_eq!(answers[1]["failure_id"], "after");
}

#[test]
fn a_missing_input_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("none.db");
    let missing: PathBuf = dir.path().join("missing.jsonl");
    let out = run(&db, &["heal", missing.to_str().unwrap()]);
    common::expect_error(&out, "cannot read");
    assert!(!db.exists());
}
