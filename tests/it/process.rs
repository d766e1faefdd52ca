//! Several OS processes on one database file: crashes (SIGKILL) in the middle of appends,
//! concurrent writers, concurrent first-time migration, and live tails across processes.
//!
//! These tests drive the real `healstore` binary; the parent process plays the role of the
//! event source and checks the file afterwards through the library and through plain sqlx.

#![cfg(unix)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use healstore::{EventLine, RecordedEvent};

use crate::common::{
    self, Ack, Rng, assert_log_invariants, block_on, expect_success, healstore, integrity_check,
    parse_acks, read_all, run, run_with_input, test_line,
};

/// Bound on waiting for a child's next output line (a loaded CI machine is slow; a hang must
/// still fail the test rather than block it).
const LINE_TIMEOUT: Duration = Duration::from_secs(60);

/// The crash test's event `n` of `round`: seven streams shared across rounds, so that stream
/// versions must stay dense across crashes.
fn crash_line(round: u32, n: u64) -> String {
    test_line(&format!("e-{round}-{n}"), &format!("s-{}", n % 7), n)
}

/// Reads a child's stdout line by line on a thread, so that the test can wait with a deadline.
/// Only complete (newline-terminated) lines are delivered: a line cut short by a SIGKILL is
/// not an acknowledgement.
fn line_reader(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if line.ends_with('\n') => {
                    if tx.send(line.trim_end().to_owned()).is_err() {
                        break;
                    }
                }
                Ok(_) => break,
            }
        }
    });
    rx
}

/// Collects a child's stderr on a thread (for failure messages).
fn stderr_collector(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut stderr = child.stderr.take().expect("stderr piped");
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    })
}

/// What one crash round produced.
struct Crash {
    /// Acknowledgements the child printed before it died, in order.
    acks: Vec<Ack>,
    /// How many input lines the parent handed to the child's stdin (an upper bound of what it
    /// can have read).
    fed: u64,
}

/// Feeds `healstore append -` an endless stream of events, reads its acknowledgements, and
/// SIGKILLs it `kill_after` after the first acknowledgement.
fn append_then_sigkill(db: &Path, round: u32, kill_after: Duration) -> Crash {
    let mut child = healstore(db)
        .args(["--format", "json", "append", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn healstore append");
    let mut stdin = child.stdin.take().expect("stdin piped");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            // Writes in small batches until told to stop or until the pipe breaks (the child
            // died). Returns how many lines were handed over, counting a batch cut short.
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 5_000_000 {
                let mut batch = String::new();
                for i in n..n + 16 {
                    batch.push_str(&crash_line(round, i));
                    batch.push('\n');
                }
                n += 16;
                if stdin.write_all(batch.as_bytes()).is_err() {
                    break;
                }
            }
            n
        })
    };
    let lines = line_reader(&mut child);
    let stderr = stderr_collector(&mut child);

    let mut acks = Vec::new();
    let mut first_ack: Option<Instant> = None;
    loop {
        let line = match lines.recv_timeout(LINE_TIMEOUT) {
            Ok(l) => l,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                stop.store(true, Ordering::Relaxed);
                panic!(
                    "round {round}: no acknowledgement ({e:?}) after {} acks; stderr:\n{}",
                    acks.len(),
                    stderr.join().unwrap_or_default()
                );
            }
        };
        acks.push(serde_json::from_str::<Ack>(&line).expect("an ack"));
        let first = *first_ack.get_or_insert_with(Instant::now);
        if first.elapsed() >= kill_after {
            break;
        }
    }
    // SIGKILL: no destructor, no flush, no rollback, no checkpoint.
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    stop.store(true, Ordering::Relaxed);
    assert_eq!(
        status.signal(),
        Some(9),
        "round {round}: the child was supposed to die of SIGKILL, but ended with {status}"
    );
    // Acknowledgements already in the pipe were printed before the crash: they count too.
    acks.extend(
        lines
            .iter()
            .map(|l| serde_json::from_str::<Ack>(&l).expect("an ack")),
    );
    let fed = writer.join().expect("writer thread");
    let _ = stderr.join();
    Crash { acks, fed }
}

/// The events of one crash round, from a full read of the log.
fn round_events(all: &[RecordedEvent], round: u32) -> Vec<&RecordedEvent> {
    let prefix = format!("e-{round}-");
    all.iter()
        .filter(|e| e.event_id.starts_with(&prefix))
        .collect()
}

#[test]
fn sigkill_during_appends_loses_no_acknowledged_event_and_leaves_a_sound_file() {
    // Given a database that crash rounds keep appending to,
    let (_dir, db) = common::temp_db();
    expect_success(&run(&db, &["init"]));
    let mut rng = Rng::seeded("sigkill crash test");

    for round in 0..5u32 {
        // when `healstore append` is SIGKILLed at a random moment while events stream in,
        let kill_after = Duration::from_millis(rng.between(20, 300));
        let crash = append_then_sigkill(&db, round, kill_after);
        let before: Vec<RecordedEvent> = block_on(read_all(&db));

        // then the file is sound,
        assert_eq!(block_on(integrity_check(&db)), "ok", "round {round}");
        // the log's invariants hold across everything written so far,
        assert_log_invariants(&before);
        // every acknowledged event is stored where its acknowledgement said,
        let by_id: HashMap<&str, &RecordedEvent> =
            before.iter().map(|e| (e.event_id.as_str(), e)).collect();
        assert!(
            !crash.acks.is_empty(),
            "round {round}: nothing acknowledged"
        );
        for (i, ack) in crash.acks.iter().enumerate() {
            assert_eq!(ack.line, i as u64 + 1, "acks come in input order");
            assert_eq!(ack.event_id, format!("e-{round}-{i}"));
            assert!(!ack.duplicate, "a fresh id was reported as a duplicate");
            let stored = by_id.get(ack.event_id.as_str()).unwrap_or_else(|| {
                panic!("round {round}: acknowledged {} is not stored", ack.event_id)
            });
            assert_eq!(
                (stored.position, stored.stream_version),
                (ack.position, ack.stream_version),
                "round {round}: {} is stored elsewhere than acknowledged",
                ack.event_id
            );
        }
        // and what this round stored is a prefix of its input, in input order (commits happen
        // in order; a crash cuts the sequence, never punches holes into it).
        let stored_now = round_events(&before, round);
        for (i, e) in stored_now.iter().enumerate() {
            assert_eq!(e.event_id, format!("e-{round}-{i}"), "round {round}");
        }
        let committed = stored_now.len() as u64;
        eprintln!(
            "round {round}: killed {kill_after:?} after the first ack; {} acknowledged, \
             {committed} committed, {} fed",
            crash.acks.len(),
            crash.fed
        );
        assert!(committed >= crash.acks.len() as u64);
        assert!(committed <= crash.fed);

        // When the producer retries everything it fed (it cannot know what was committed),
        let input: String = (0..crash.fed)
            .map(|n| crash_line(round, n) + "\n")
            .collect();
        let retry = run_with_input(&db, &["--format", "json", "append", "-"], input.as_bytes());
        let acks = parse_acks(&expect_success(&retry));

        // then every line is acknowledged, the ones already stored as duplicates at their
        // original positions, the rest as new,
        assert_eq!(acks.len() as u64, crash.fed);
        let old_positions: HashMap<&str, (i64, u64)> = stored_now
            .iter()
            .map(|e| (e.event_id.as_str(), (e.position, e.stream_version)))
            .collect();
        for ack in &acks {
            match old_positions.get(ack.event_id.as_str()) {
                Some(&(position, version)) => {
                    assert!(ack.duplicate, "{} was stored twice", ack.event_id);
                    assert_eq!((ack.position, ack.stream_version), (position, version));
                }
                None => assert!(!ack.duplicate, "{} was never stored", ack.event_id),
            }
        }
        // and the log is the old log plus exactly the missing events, each once.
        let after = block_on(read_all(&db));
        assert_log_invariants(&after);
        assert_eq!(after[..before.len()], before[..], "history was rewritten");
        assert_eq!(round_events(&after, round).len() as u64, crash.fed);
        assert_eq!(block_on(integrity_check(&db)), "ok", "round {round}");
    }
}

#[test]
fn two_processes_appending_at_once_share_one_gapless_total_order() {
    // Given a new, empty database,
    let (_dir, db) = common::temp_db();
    // (created beforehand: concurrent creation is the subject of its own test below)
    expect_success(&run(&db, &["init"]));
    const PER_PROCESS: u64 = 1500;
    let input = |who: &str| -> Vec<String> {
        (0..PER_PROCESS)
            .map(|n| {
                // Half of each producer's events go to streams both write to.
                let stream = if n % 2 == 0 {
                    format!("shared-{}", n % 3)
                } else {
                    format!("{who}-own-{}", n % 4)
                };
                test_line(&format!("{who}-{n}"), &stream, n)
            })
            .collect()
    };

    // when two `healstore append` processes write to it at the same time,
    let lockstep = Arc::new(std::sync::Barrier::new(2));
    let (a, feed_a) = common::spawn_appender(&db, input("a"), Arc::clone(&lockstep), 20);
    let (b, feed_b) = common::spawn_appender(&db, input("b"), lockstep, 20);
    // (both outputs are drained at once: a producer blocked on its full stdout would stall
    // the other one's feeder at the lockstep barrier)
    let wait_a = std::thread::spawn(move || common::wait_with_deadline(a, common::CHILD_TIMEOUT));
    let wait_b = std::thread::spawn(move || common::wait_with_deadline(b, common::CHILD_TIMEOUT));
    let out_a = wait_a.join().expect("producer a");
    let out_b = wait_b.join().expect("producer b");
    feed_a.join().expect("feeder a");
    feed_b.join().expect("feeder b");
    let acks_a = parse_acks(&expect_success(&out_a));
    let acks_b = parse_acks(&expect_success(&out_b));

    // then both inputs are stored completely, at positions 1..=N without gaps or duplicates,
    let all = block_on(read_all(&db));
    assert_eq!(all.len() as u64, 2 * PER_PROCESS);
    let positions: Vec<i64> = all.iter().map(|e| e.position).collect();
    let expected: Vec<i64> = (1..=2 * PER_PROCESS as i64).collect();
    assert_eq!(positions, expected, "positions are not exactly 1..=N");
    // every stream's versions are dense,
    assert_log_invariants(&all);
    assert_eq!(block_on(integrity_check(&db)), "ok");

    let switches = all
        .windows(2)
        .filter(|w| w[0].event_id[..1] != w[1].event_id[..1])
        .count();
    eprintln!("the two producers' events alternate {switches} times in the log");

    let by_id: HashMap<&str, &RecordedEvent> =
        all.iter().map(|e| (e.event_id.as_str(), e)).collect();
    for (who, acks) in [("a", &acks_a), ("b", &acks_b)] {
        // each process's acknowledgements match what is stored,
        assert_eq!(acks.len() as u64, PER_PROCESS, "{who}: one ack per line");
        for (n, ack) in acks.iter().enumerate() {
            assert_eq!(ack.line, n as u64 + 1);
            assert_eq!(ack.event_id, format!("{who}-{n}"));
            assert!(!ack.duplicate);
            let stored = by_id[ack.event_id.as_str()];
            assert_eq!(
                (stored.position, stored.stream_version),
                (ack.position, ack.stream_version),
                "{who}: {} acknowledged elsewhere than stored",
                ack.event_id
            );
        }
        // and each process's events appear in the order it sent them.
        let mine: Vec<&str> = all
            .iter()
            .map(|e| e.event_id.as_str())
            .filter(|id| id.starts_with(&format!("{who}-")))
            .collect();
        let sent: Vec<String> = (0..PER_PROCESS).map(|n| format!("{who}-{n}")).collect();
        assert_eq!(mine, sent, "{who}: events are not in the order sent");
    }
}

#[test]
fn processes_creating_the_same_new_database_at_once_all_succeed_and_migrate_once() {
    // Several rounds, because the race window is small: each round is a fresh file.
    const ROUNDS: usize = 10;
    const PROCESSES: usize = 6;
    for round in 0..ROUNDS {
        // Given a database file that does not exist yet,
        let (_dir, db) = common::temp_db();
        // when several processes open (and so create and migrate) it at the same moment,
        let children: Vec<Child> = (0..PROCESSES)
            .map(|_| {
                healstore(&db)
                    .args(["--format", "json", "init"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn healstore init")
            })
            .collect();
        let outputs: Vec<_> = children
            .into_iter()
            .map(|c| common::wait_with_deadline(c, common::CHILD_TIMEOUT))
            .collect();

        // then every one of them succeeds,
        let failures: Vec<String> = outputs
            .iter()
            .filter(|o| !o.status.success())
            .map(|o| format!("{}: {}", o.status, common::stderr_text(o).trim_end()))
            .collect();
        assert!(
            failures.is_empty(),
            "round {round}: {} of {PROCESSES} processes failed on a new database:\n{}",
            failures.len(),
            failures.join("\n")
        );

        // and every migration is recorded exactly once.
        let versions: Vec<i64> = block_on(async {
            let mut conn = common::raw_connection(&db).await;
            let v =
                sqlx::query_scalar("SELECT version FROM refinery_schema_history ORDER BY version")
                    .fetch_all(&mut conn)
                    .await
                    .expect("read the migration history");
            sqlx::Connection::close(conn).await.expect("close");
            v
        });
        let expected: Vec<i64> = (1..=healstore::SCHEMA_VERSION).collect();
        assert_eq!(versions, expected, "round {round}");
        // Each process reports the database at the current schema, empty.
        for o in &outputs {
            let doc: serde_json::Value =
                serde_json::from_str(&common::stdout_text(o)).expect("init prints JSON");
            assert_eq!(doc["schema_version"], healstore::SCHEMA_VERSION);
            assert_eq!(doc["head_position"], 0);
        }
    }
}

#[test]
fn a_follower_process_prints_events_appended_by_another_process() {
    // Given a database with two events,
    let (_dir, db) = common::temp_db();
    let first: String = (0..2)
        .map(|n| test_line(&format!("old-{n}"), "tail", n) + "\n")
        .collect();
    expect_success(&run_with_input(&db, &["import", "-"], first.as_bytes()));

    // and a `healstore events --follow` process that has printed them (so it is running and
    // caught up),
    let mut follower = healstore(&db)
        .args(["--format", "json", "events", "--follow"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the follower");
    let lines = line_reader(&mut follower);
    let stderr = stderr_collector(&mut follower);
    let next_event = |what: &str| -> EventLine {
        match lines.recv_timeout(LINE_TIMEOUT) {
            Ok(line) => EventLine::parse(&line).expect("an event line"),
            Err(e) => {
                panic!("the follower printed no {what} ({e:?})");
            }
        }
    };
    for n in 0..2 {
        let e = next_event("existing event");
        assert_eq!(e.event_id.as_deref(), Some(format!("old-{n}").as_str()));
    }

    // when another process appends three more,
    let more: String = (0..3)
        .map(|n| test_line(&format!("new-{n}"), "tail", n) + "\n")
        .collect();
    let appended = parse_acks(&expect_success(&run_with_input(
        &db,
        &["--format", "json", "append", "-"],
        more.as_bytes(),
    )));
    assert_eq!(appended.len(), 3);

    // then the follower prints them, in order, with the positions the appender was given,
    for (n, ack) in appended.iter().enumerate() {
        let e = next_event("newly appended event");
        assert_eq!(e.event_id.as_deref(), Some(format!("new-{n}").as_str()));
        assert_eq!(e.position, Some(ack.position));
        assert_eq!(e.stream_version, Some(3 + n as u64));
    }
    // and it is still following (it only ends when stopped).
    assert!(
        follower.try_wait().expect("try_wait").is_none(),
        "the follower exited on its own; stderr:\n{}",
        stderr.join().unwrap_or_default()
    );
    follower.kill().expect("stop the follower");
    follower.wait().expect("wait for the follower");
}

#[test]
fn opening_a_database_that_another_connection_is_creating_waits_instead_of_failing() {
    // Given a new database file on which another process has begun its first write
    // transaction (what a healstore process creating the file does while it migrates),
    let (_dir, db) = common::temp_db();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut creator = runtime.block_on(async {
        use sqlx::ConnectOptions;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::raw_sql("BEGIN IMMEDIATE")
            .execute(&mut conn)
            .await
            .unwrap();
        conn
    });

    // when `healstore init` opens it meanwhile,
    let mut init = healstore(&db)
        .args(["--format", "json", "init"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn healstore init");

    // then it waits for the lock (its busy timeout is 30 s) rather than giving up at once:
    // it must still be running when the other transaction ends, a few seconds later.
    let held_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < held_until {
        if init.try_wait().expect("try_wait").is_some() {
            let out = common::wait_with_deadline(init, common::CHILD_TIMEOUT);
            panic!(
                "healstore init ended ({}) while another connection held the new file's lock, \
                 instead of waiting for it; stderr: {}",
                out.status,
                common::stderr_text(&out).trim_end()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    runtime.block_on(async {
        sqlx::raw_sql("ROLLBACK")
            .execute(&mut creator)
            .await
            .unwrap();
        sqlx::Connection::close(creator).await.unwrap();
    });
    // Once the lock is released, it creates the database.
    let out = common::wait_with_deadline(init, common::CHILD_TIMEOUT);
    let doc: serde_json::Value = serde_json::from_str(&expect_success(&out)).unwrap();
    assert_eq!(doc["schema_version"], healstore::SCHEMA_VERSION);
    assert_eq!(block_on(integrity_check(&db)), "ok");
}

#[test]
fn append_acknowledges_each_line_once_committed_without_waiting_for_more_input() {
    // Given `healstore append` fed by a live source that sends one event at a time and waits
    // for its acknowledgement before sending the next (stdin stays open throughout),
    let (_dir, db) = common::temp_db();
    let mut child = healstore(&db)
        .args(["--format", "json", "append", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn healstore append");
    let mut stdin = child.stdin.take().expect("stdin piped");
    let acks = line_reader(&mut child);
    let stderr = stderr_collector(&mut child);
    // (an ack takes one commit, milliseconds; this bound only stops a hung test)
    const ACK_TIMEOUT: Duration = Duration::from_secs(15);
    for n in 0..3u64 {
        // when it sends a line,
        writeln!(stdin, "{}", test_line(&format!("live-{n}"), "live", n)).expect("send");
        stdin.flush().expect("flush");
        // then the acknowledgement of that line arrives while the source waits.
        let ack = match acks.recv_timeout(ACK_TIMEOUT) {
            Ok(line) => serde_json::from_str::<Ack>(&line).expect("an ack"),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "no acknowledgement of line {} within {ACK_TIMEOUT:?} ({e:?}): `append` \
                     holds committed acks back until more input arrives; stderr: {}",
                    n + 1,
                    stderr.join().unwrap_or_default()
                );
            }
        };
        assert_eq!(ack.line, n + 1);
        assert_eq!(ack.event_id, format!("live-{n}"));
        assert_eq!((ack.position, ack.stream_version), (n as i64 + 1, n + 1));
    }
    // At the end of input it exits with success, having nothing more to say.
    drop(stdin);
    let out = common::wait_with_deadline(child, common::CHILD_TIMEOUT);
    assert!(out.status.success(), "{}", out.status);
    assert!(acks.recv().is_err(), "an acknowledgement was printed twice");
}

/// Runs every argument list as its own `healstore` process, all started before any is
/// awaited (so that their decisions overlap), and returns their outputs in order.
fn run_at_once(db: &Path, runs: &[Vec<String>]) -> Vec<std::process::Output> {
    let children: Vec<Child> = runs
        .iter()
        .map(|args| {
            healstore(db)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn healstore")
        })
        .collect();
    children
        .into_iter()
        .map(|c| common::wait_with_deadline(c, common::CHILD_TIMEOUT))
        .collect()
}

/// The decision label of each `record failure` answer (its first attempt's).
fn first_decisions(outputs: &[std::process::Output]) -> Vec<String> {
    outputs
        .iter()
        .map(|o| {
            let doc: serde_json::Value =
                serde_json::from_str(&expect_success(o)).expect("record prints JSON");
            doc["attempts"][0]["decision"]
                .as_str()
                .expect("a decision")
                .to_owned()
        })
        .collect()
}

/// A database next to a `healstore.toml` holding `config`, with the configuration already
/// recorded (so that the concurrent processes only race on their decisions).
fn db_with_config(config: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, db) = common::temp_db();
    std::fs::write(dir.path().join("healstore.toml"), config).expect("write the configuration");
    expect_success(&run(&db, &["init"]));
    expect_success(&run(&db, &["--now", "2026-11-01T12:00:00Z", "states"]));
    (dir, db)
}

#[test]
fn concurrent_processes_never_isolate_more_than_the_fleet_share_allows() {
    const ROUNDS: usize = 3;
    for round in 0..ROUNDS {
        // Given a fleet of 8, at most a quarter of which may be isolated, and circuits that
        // open at the first failure,
        let (_dir, db) = db_with_config(
            "[limits]\nmax_disabled_fraction = 0.25\nfleet_size = 8\n\n\
             [circuit_breaker]\nfailure_threshold = 1\n",
        );
        // when eight processes record a failure of a different agent each, at once,
        let runs: Vec<Vec<String>> = (1..=8)
            .map(|i| {
                [
                    "--now",
                    "2026-11-01T12:00:01Z",
                    "--format",
                    "json",
                    "record",
                    "failure",
                    "--type",
                    "agent_down",
                    "--agent",
                    &format!("G{i}"),
                ]
                .map(str::to_owned)
                .to_vec()
            })
            .collect();
        let decisions = first_decisions(&run_at_once(&db, &runs));

        // then exactly two agents are isolated and the other six decisions are withheld,
        let isolated = decisions.iter().filter(|d| *d == "delegated").count();
        let withheld = decisions.iter().filter(|d| *d == "withheld").count();
        assert_eq!(
            (isolated, withheld),
            (2, 6),
            "round {round}: decisions {decisions:?}"
        );
        // and the circuits agree: two open.
        let circuits = expect_success(&run(
            &db,
            &[
                "--now",
                "2026-11-01T12:00:02Z",
                "--format",
                "json",
                "circuits",
            ],
        ));
        let open = circuits.matches("\"state\":\"open\"").count();
        assert_eq!(open, 2, "round {round}: {circuits}");
        assert_log_invariants(&block_on(read_all(&db)));
    }
}

#[test]
fn concurrent_processes_never_act_on_one_agent_more_often_than_its_hourly_limit() {
    const ROUNDS: usize = 3;
    for round in 0..ROUNDS {
        // Given at most three automated actions per agent and hour,
        let (_dir, db) = db_with_config("[limits]\nmax_actions_per_agent_per_hour = 3\n");
        // when twelve processes record a timeout of a different task of agent A, at once,
        let runs: Vec<Vec<String>> = (1..=12)
            .map(|i| {
                [
                    "--now",
                    "2026-11-01T12:00:01Z",
                    "--format",
                    "json",
                    "record",
                    "failure",
                    "--type",
                    "task_timeout",
                    "--agent",
                    "A",
                    "--task",
                    &format!("T{i}"),
                ]
                .map(str::to_owned)
                .to_vec()
            })
            .collect();
        let decisions = first_decisions(&run_at_once(&db, &runs));

        // then exactly three retries are handed out and nine are withheld.
        let acted = decisions.iter().filter(|d| *d == "delegated").count();
        let withheld = decisions.iter().filter(|d| *d == "withheld").count();
        assert_eq!(
            (acted, withheld),
            (3, 9),
            "round {round}: decisions {decisions:?}"
        );
        assert_log_invariants(&block_on(read_all(&db)));
    }
}

#[test]
fn concurrent_outcome_processes_for_one_failure_record_it_once() {
    // Given a delegated decision awaiting its outcome,
    let (_dir, db) = db_with_config("");
    let doc: serde_json::Value = serde_json::from_str(&expect_success(&run(
        &db,
        &[
            "--now",
            "2026-11-01T12:00:01Z",
            "--format",
            "json",
            "record",
            "failure",
            "--type",
            "agent_down",
            "--agent",
            "a1",
            "--id",
            "F1",
        ],
    )))
    .expect("record prints JSON");
    assert_eq!(doc["attempts"][1]["decision"], "delegated", "{doc}");

    // when eight processes report its outcome at once,
    let runs: Vec<Vec<String>> = (0..8)
        .map(|_| {
            [
                "--now",
                "2026-11-01T12:00:05Z",
                "--format",
                "json",
                "record",
                "outcome",
                "--failure",
                "F1",
                "--success",
            ]
            .map(str::to_owned)
            .to_vec()
        })
        .collect();
    let outputs = run_at_once(&db, &runs);

    // then the failure's stream holds one outcome,
    let completed = block_on(read_all(&db))
        .iter()
        .filter(|e| e.stream_id == "failure-F1" && e.event_type == "healing_completed")
        .count();
    assert_eq!(completed, 1);
    // and each process is answered, one as recorded and the others as duplicates of it.
    let mut fresh = 0;
    for o in &outputs {
        let r: serde_json::Value = serde_json::from_str(&expect_success(o)).expect("JSON");
        assert_eq!(r["success"], true);
        if r["duplicate"] == false {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1);
}

#[test]
fn an_agent_released_by_another_process_no_longer_counts_against_the_fleet_share() {
    // Given a fleet of 4 of which one agent may be isolated, and G1 isolated,
    let (_dir, db) = db_with_config(
        "[limits]\nmax_disabled_fraction = 0.25\nfleet_size = 4\n\n\
         [circuit_breaker]\nfailure_threshold = 1\n",
    );
    let down = |agent: &str, now: &str| -> String {
        let out = run(
            &db,
            &[
                "--now",
                now,
                "--format",
                "json",
                "record",
                "failure",
                "--type",
                "agent_down",
                "--agent",
                agent,
            ],
        );
        first_decisions(&[out]).remove(0)
    };
    assert_eq!(down("G1", "2026-11-01T12:00:01Z"), "delegated");
    assert_eq!(
        down("G2", "2026-11-01T12:00:02Z"),
        "withheld",
        "2 of 4 is 50 %"
    );
    // when another process releases G1 (its circuit reset: a state at rest),
    expect_success(&run(
        &db,
        &[
            "--now",
            "2026-11-01T12:00:03Z",
            "circuit",
            "reset",
            "--agent",
            "G1",
            "--reason",
            "repaired by hand",
        ],
    ));
    // then G2 may be isolated,
    assert_eq!(down("G2", "2026-11-01T12:00:04Z"), "delegated");
    // and G3 may not (G2 counts now).
    assert_eq!(down("G3", "2026-11-01T12:00:05Z"), "withheld");
}
