//! A fleet of healers sharing one PostgreSQL log: the command line's healing commands, limits
//! that hold across processes and across healers on stores of their own (as on several
//! hosts), circuits seen by every healer and kept across restarts, retried heals answered
//! once, and a healing process killed mid-stream.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use chrono::Duration;
use futures_util::StreamExt;
use healstore::config::Config;
use healstore::heal::{Coordinator, Failure, Healer, NoopCoordinator, Severity};
use healstore::{Durability, EventFilter, ManualClock, Store, StoreOptions};
use serde_json::Value;

use super::PgDb;
use crate::common::{self, CHILD_TIMEOUT, assert_log_invariants, bin, expect_success, t0};

/// `healstore --db <url>` run in `dir` (where a `healstore.toml` may be), isolated from the
/// caller's environment.
fn cli(db: &PgDb, dir: &Path) -> Command {
    let mut c = Command::new(bin());
    c.arg("--db")
        .arg(&db.url)
        .current_dir(dir)
        .env_remove("HEALSTORE_DB")
        .env_remove("HEALSTORE_DURABILITY")
        .env_remove("HEALSTORE_CONFIG")
        .env_remove("HEALSTORE_TOKENS")
        .env_remove("HEALSTORE_LOG_FORMAT")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn run(db: &PgDb, dir: &Path, args: &[&str]) -> std::process::Output {
    let child = cli(db, dir).args(args).spawn().expect("spawn healstore");
    common::wait_with_deadline(child, CHILD_TIMEOUT)
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_str(&expect_success(out)).expect("JSON on stdout")
}

/// Every argument list as a process of its own, all started before any is awaited.
fn run_at_once(db: &PgDb, dir: &Path, runs: &[Vec<String>]) -> Vec<std::process::Output> {
    let children: Vec<Child> = runs
        .iter()
        .map(|args| cli(db, dir).args(args).spawn().expect("spawn healstore"))
        .collect();
    children
        .into_iter()
        .map(|c| common::wait_with_deadline(c, CHILD_TIMEOUT))
        .collect()
}

/// The first attempt's decision of each `record failure` answer.
fn first_decisions(outputs: &[std::process::Output]) -> Vec<String> {
    outputs
        .iter()
        .map(|o| {
            json(o)["attempts"][0]["decision"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// A fresh database and a directory holding `config` as `healstore.toml`, the configuration
/// already recorded (so that concurrent processes race only on their decisions).
async fn db_with_config(config: &str) -> (PgDb, tempfile::TempDir) {
    let db = PgDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("healstore.toml"), config).unwrap();
    expect_success(&run(&db, dir.path(), &["init"]));
    expect_success(&run(
        &db,
        dir.path(),
        &["--now", "2026-11-01T12:00:00Z", "states"],
    ));
    (db, dir)
}

fn record_failure(now: &str, failure_type: &str, agent: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--now",
        now,
        "--format",
        "json",
        "record",
        "failure",
        "--type",
        failure_type,
        "--agent",
        agent,
    ]
    .map(str::to_owned)
    .to_vec();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

async fn healer(db: &PgDb, clock: Arc<ManualClock>, toml: &str) -> Healer {
    let store = Store::open(
        &db.url,
        StoreOptions {
            clock,
            durability: Durability::Normal,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    Config::parse(toml)
        .unwrap()
        .builder()
        .coordinator(Arc::new(NoopCoordinator) as Arc<dyn Coordinator>)
        .open(store)
        .await
        .unwrap()
}

/// A healer in decision mode (acting decisions are delegated to the caller).
async fn deciding_healer(db: &PgDb, clock: Arc<ManualClock>) -> Healer {
    let store = Store::open(
        &db.url,
        StoreOptions {
            clock,
            durability: Durability::Normal,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    Config::default().builder().open(store).await.unwrap()
}

async fn circuit_state(h: &Healer, agent: &str) -> String {
    h.circuits(Some(agent)).await.unwrap()[0]["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_command_line_heals_records_signals_and_lists_states() {
    let (db, dir) = db_with_config("").await;
    let dir = dir.path();
    // Five failures in a row open agent a's circuit (the first restart is delegated).
    for i in 1..=5 {
        let at = format!("2026-11-01T12:00:0{i}Z");
        let doc = json(&run(
            &db,
            dir,
            &record_failure(&at, "agent_down", "a", &["--id", &format!("F{i}")])
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        ));
        assert_eq!(doc["failure_id"], format!("F{i}"), "{doc}");
    }
    let circuits = json(&run(
        &db,
        dir,
        &[
            "--now",
            "2026-11-01T12:00:10Z",
            "--format",
            "json",
            "circuits",
        ],
    ));
    assert_eq!(circuits["circuits"][0]["state"], "open", "{circuits}");
    let permit = run(
        &db,
        dir,
        &[
            "--now",
            "2026-11-01T12:00:10Z",
            "circuit",
            "permit",
            "--agent",
            "a",
        ],
    );
    assert_eq!(permit.status.code(), Some(1), "rejected while open");
    // The first failure's delegated restart succeeded.
    let outcome = json(&run(
        &db,
        dir,
        &[
            "--now",
            "2026-11-01T12:00:11Z",
            "--format",
            "json",
            "record",
            "outcome",
            "--failure",
            "F1",
            "--success",
        ],
    ));
    assert_eq!(
        (&outcome["success"], &outcome["duplicate"]),
        (&true.into(), &false.into())
    );
    // A tick after the deadline makes the circuit half-open.
    expect_success(&run(&db, dir, &["--now", "2026-11-01T12:02:00Z", "tick"]));
    let states = json(&run(
        &db,
        dir,
        &[
            "--now",
            "2026-11-01T12:02:00Z",
            "--format",
            "json",
            "states",
            "--strategy",
            "CircuitBreaker",
        ],
    ));
    assert_eq!(
        states["states"][0]["state"]["state"], "half_open",
        "{states}"
    );
    // A success signal recovers the agent's open failures (found through `failures`).
    let success = json(&run(
        &db,
        dir,
        &[
            "--now",
            "2026-11-01T12:02:01Z",
            "--format",
            "json",
            "record",
            "success",
            "--agent",
            "a",
        ],
    ));
    assert_eq!(
        success["recovered"],
        serde_json::json!(["F1", "F2", "F3", "F4", "F5"]),
        "{success}"
    );
    // A confirmation of one of them is answered with the recorded recovery.
    let recovered = json(&run(
        &db,
        dir,
        &[
            "--now",
            "2026-11-01T12:03:00Z",
            "--format",
            "json",
            "record",
            "recovered",
            "--failure",
            "F3",
        ],
    ));
    assert_eq!(
        (&recovered["how"], &recovered["duplicate"]),
        (&"signal".into(), &true.into()),
        "{recovered}"
    );
    assert_eq!(recovered["time_to_recover_ms"], 118_000);
    let usage = run(
        &db,
        dir,
        &[
            "--now",
            "2026-11-01T12:03:00Z",
            "record",
            "usage",
            "--resource",
            "tokens",
            "--current",
            "95",
            "--limit",
            "100",
        ],
    );
    expect_success(&usage);
    let closed = run(
        &db,
        dir,
        &[
            "--now",
            "2026-11-01T12:03:01Z",
            "circuit",
            "close",
            "--agent",
            "a",
            "--reason",
            "repaired",
        ],
    );
    expect_success(&closed);
    let permit = run(
        &db,
        dir,
        &[
            "--now",
            "2026-11-01T12:03:02Z",
            "circuit",
            "permit",
            "--agent",
            "a",
        ],
    );
    assert_eq!(permit.status.code(), Some(0), "admitted once closed");
    // The failures read model agrees with the log; the snapshots with their streams.
    let mut conn = db.connect().await;
    type Row = (String, Option<String>, Option<String>, Option<i64>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT failure_id, last_decision, recovered_how, remediate_us FROM failures \
         ORDER BY position",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(rows.len(), 5);
    assert_eq!(
        rows[0].3,
        Some(10_000_000),
        "F1 remediated 10 s after detection"
    );
    assert!(
        rows.iter().all(|r| r.2.as_deref() == Some("signal")),
        "{rows:?}"
    );
    let verify = run(&db, dir, &["--format", "json", "verify"]);
    let report = json(&verify);
    assert_eq!(report["ok"], true, "{report}");
    let snapshots = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "snapshots")
        .unwrap();
    assert!(
        snapshots["detail"]
            .as_str()
            .unwrap()
            .contains("equals a fold"),
        "{snapshots}"
    );
    // What still needs the analytics read models is refused, writing nothing.
    for args in [&["stats"][..], &["audit", "F1"]] {
        let out = run(&db, dir, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

#[tokio::test]
async fn processes_sharing_the_database_admit_at_most_the_half_open_trial_limit() {
    let (db, dir) = db_with_config("").await;
    let dir = dir.path();
    for i in 0..5 {
        let at = format!("2026-11-01T12:00:0{i}Z");
        let args = record_failure(&at, "agent_down", "a", &[]);
        expect_success(&run(
            &db,
            dir,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        ));
    }
    // Two minutes later the wait is over: eight processes ask at once.
    let runs: Vec<Vec<String>> = (0..8)
        .map(|_| {
            [
                "--now",
                "2026-11-01T12:02:00Z",
                "circuit",
                "permit",
                "--agent",
                "a",
            ]
            .map(str::to_owned)
            .to_vec()
        })
        .collect();
    let mut admitted = 0;
    for out in run_at_once(&db, dir, &runs) {
        match out.status.code() {
            Some(0) => admitted += 1,
            Some(1) => {}
            other => panic!("exit {other:?}: {}", common::stderr_text(&out)),
        }
    }
    assert_eq!(
        admitted, 3,
        "exactly the three trial calls of the default config"
    );
}

#[tokio::test]
async fn processes_sharing_the_database_never_exceed_the_hourly_action_limit_or_fleet_share() {
    for round in 0..2 {
        // At most three automated actions per agent and hour: twelve processes record a
        // timeout of a different task of agent A at once.
        let (db, dir) = db_with_config("[limits]\nmax_actions_per_agent_per_hour = 3\n").await;
        let runs: Vec<Vec<String>> = (1..=12)
            .map(|i| {
                record_failure(
                    "2026-11-01T12:00:01Z",
                    "task_timeout",
                    "A",
                    &["--task", &format!("T{i}")],
                )
            })
            .collect();
        let decisions = first_decisions(&run_at_once(&db, dir.path(), &runs));
        let acted = decisions.iter().filter(|d| *d == "delegated").count();
        let withheld = decisions.iter().filter(|d| *d == "withheld").count();
        assert_eq!((acted, withheld), (3, 9), "round {round}: {decisions:?}");
        let store = Store::open(&db.url, StoreOptions::default()).await.unwrap();
        let events: Vec<_> = store
            .read(EventFilter::default())
            .map(|e| e.unwrap())
            .collect()
            .await;
        assert_log_invariants(&events);
        store.close().await.unwrap();
    }
    // A fleet of 8 of which a quarter may be isolated: eight processes, one agent each.
    let (db, dir) = db_with_config(
        "[limits]\nmax_disabled_fraction = 0.25\nfleet_size = 8\n\n\
         [circuit_breaker]\nfailure_threshold = 1\n",
    )
    .await;
    let runs: Vec<Vec<String>> = (1..=8)
        .map(|i| record_failure("2026-11-01T12:00:01Z", "agent_down", &format!("G{i}"), &[]))
        .collect();
    let decisions = first_decisions(&run_at_once(&db, dir.path(), &runs));
    let isolated = decisions.iter().filter(|d| *d == "delegated").count();
    let withheld = decisions.iter().filter(|d| *d == "withheld").count();
    assert_eq!((isolated, withheld), (2, 6), "{decisions:?}");
    let circuits = expect_success(&run(
        &db,
        dir.path(),
        &[
            "--now",
            "2026-11-01T12:00:02Z",
            "--format",
            "json",
            "circuits",
        ],
    ));
    assert_eq!(
        circuits.matches("\"state\":\"open\"").count(),
        2,
        "{circuits}"
    );
}

/// Healers on stores of their own (as on several hosts, each with its writer and
/// connections), deciding at once: the hourly action limit and the half-open trial limit hold
/// for all of them together, round after round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn healers_on_separate_stores_keep_the_limits_together() {
    const HEALERS: usize = 3;
    let db = PgDb::new().await;
    let clock = Arc::new(ManualClock::new(t0()));
    let toml = "[limits]\nmax_actions_per_agent_per_hour = 3\n";
    let mut healers = Vec::new();
    for _ in 0..HEALERS {
        healers.push(Arc::new(healer(&db, clock.clone(), toml).await));
    }
    for round in 0..3 {
        // Each round an hour later: the budget is whole again.
        clock.set(t0() + Duration::hours(2 * round));
        let tasks: Vec<_> = (0..12)
            .map(|i| {
                let h = healers[i % HEALERS].clone();
                let at = clock.now_value();
                tokio::spawn(async move {
                    let f = Failure::new("task_timeout", Severity::Medium, at)
                        .with_agent("A")
                        .with_task(format!("r{round}-t{i}"));
                    h.heal(f).await.unwrap().attempts[0].decision.clone()
                })
            })
            .collect();
        let mut decisions = Vec::new();
        for t in tasks {
            decisions.push(t.await.unwrap());
        }
        let acted = decisions.iter().filter(|d| *d == "act").count();
        let withheld = decisions.iter().filter(|d| *d == "withheld").count();
        assert_eq!((acted, withheld), (3, 9), "round {round}: {decisions:?}");

        // Agent B's circuit opens (five failures, spread over the healers), its wait passes,
        // and every healer asks for permits at once.
        let agent = format!("B{round}");
        for i in 0..5 {
            let f =
                Failure::new("agent_down", Severity::High, clock.now_value()).with_agent(&agent);
            healers[i % HEALERS].heal(f).await.unwrap();
        }
        assert_eq!(circuit_state(&healers[1], &agent).await, "open");
        clock.advance(Duration::minutes(2));
        let permits: Vec<_> = (0..12)
            .map(|i| {
                let h = healers[i % HEALERS].clone();
                let agent = agent.clone();
                tokio::spawn(async move { h.permit(&agent).await.unwrap().permitted })
            })
            .collect();
        let mut admitted = 0;
        for p in permits {
            if p.await.unwrap() == Some(true) {
                admitted += 1;
            }
        }
        assert_eq!(
            admitted, 3,
            "round {round}: the three trial calls, across healers"
        );
    }
    let events: Vec<_> = healers[0]
        .store()
        .read(EventFilter::default())
        .map(|e| e.unwrap())
        .collect()
        .await;
    assert_log_invariants(&events);
    // Every healer's states equal a fresh fold of the log.
    let fresh = healer(&db, clock.clone(), toml).await;
    let expected = fresh.snapshots().await.unwrap();
    for (i, h) in healers.iter().enumerate() {
        assert_eq!(h.snapshots().await.unwrap(), expected, "healer {i}");
    }
}

#[tokio::test]
async fn a_circuit_opened_by_one_healer_is_seen_by_another_and_kept_across_restarts() {
    let db = PgDb::new().await;
    let clock = Arc::new(ManualClock::new(t0()));
    let a = healer(&db, clock.clone(), "").await;
    let b = healer(&db, clock.clone(), "").await;
    assert_eq!(b.permit("x").await.unwrap().permitted, Some(true));
    for _ in 0..5 {
        let f = Failure::new("agent_down", Severity::High, clock.now_value()).with_agent("x");
        a.heal(f).await.unwrap();
    }
    // The running healer B sees the opening at its next permit.
    assert_eq!(b.permit("x").await.unwrap().permitted, Some(false));
    assert_eq!(circuit_state(&b, "x").await, "open");
    // Both restart (A closed cleanly with a checkpoint, B dropped as if killed).
    a.close().await.unwrap();
    drop(b);
    let a = healer(&db, clock.clone(), "").await;
    let b = healer(&db, clock.clone(), "").await;
    assert_eq!(circuit_state(&a, "x").await, "open");
    assert_eq!(b.permit("x").await.unwrap().permitted, Some(false));
    // The wait passes: B's tick records the half-open transition, A sees it.
    clock.advance(Duration::minutes(2));
    b.tick().await.unwrap();
    assert_eq!(circuit_state(&a, "x").await, "half_open");
    b.close().await.unwrap();
    // Restored from snapshots, the states equal a fold of the log from scratch.
    let restored = a.snapshots().await.unwrap();
    a.store().drop_snapshots().await.unwrap();
    // (closed without a checkpoint: one now would claim states it no longer has snapshots of)
    a.store().clone().close().await.unwrap();
    drop(a);
    let fresh = healer(&db, clock.clone(), "").await;
    assert_eq!(fresh.snapshots().await.unwrap(), restored);
    assert_eq!(circuit_state(&fresh, "x").await, "half_open");
    fresh.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_heal_is_answered_with_the_first_answer_by_any_healer() {
    let db = PgDb::new().await;
    let clock = Arc::new(ManualClock::new(t0()));
    let a = deciding_healer(&db, clock.clone()).await;
    let b = deciding_healer(&db, clock.clone()).await;
    let f = Failure::new("agent_down", Severity::High, t0())
        .with_agent("a1")
        .with_id("F1");
    let first = a.heal(f.clone()).await.unwrap();
    assert!(!first.duplicate && !first.delegated.is_empty(), "{first:?}");
    let head = a.store().head_position().await.unwrap();
    // Retried a minute later on another healer (the caller's answer was lost).
    clock.advance(Duration::minutes(1));
    let mut again = f.clone();
    again.detected_at = t0() + Duration::minutes(1);
    let second = b.heal(again.clone()).await.unwrap();
    assert!(second.duplicate);
    assert_eq!(second.attempts, first.attempts);
    assert_eq!(second.delegated, first.delegated);
    assert_eq!(second.failure, first.failure);
    assert_eq!(
        b.store().head_position().await.unwrap(),
        head,
        "nothing written"
    );
    // Other facts under the same id are a conflict.
    let mut other = f.clone();
    other.agent_id = Some("a2".into());
    let err = b.heal(other).await.unwrap_err();
    assert!(err.to_string().contains("conflict"), "{err}");

    // The same new failure healed at once by both healers: recorded once.
    let a = Arc::new(a);
    let b = Arc::new(b);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let h = if i % 2 == 0 { a.clone() } else { b.clone() };
            let f = Failure::new("agent_down", Severity::High, clock.now_value())
                .with_agent("a3")
                .with_id("F-race");
            tokio::spawn(async move { h.heal(f).await.unwrap() })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    assert_eq!(answers.iter().filter(|r| !r.duplicate).count(), 1);
    assert!(answers.iter().all(|r| r.attempts == answers[0].attempts));
    let detected = a
        .store()
        .read(EventFilter::stream("failure-F-race"))
        .filter(|e| {
            let detected = e.as_ref().unwrap().event_type == "failure_detected";
            async move { detected }
        })
        .count()
        .await;
    assert_eq!(detected, 1);
}

/// `healstore heal` killed with SIGKILL while it heals: every failure it answered is in the
/// log, and the states restored afterwards equal a fold of the log.
#[tokio::test]
async fn a_healing_process_killed_mid_stream_loses_no_answered_failure() {
    use std::io::{BufRead, BufReader, Write};
    let db = PgDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    expect_success(&run(&db, dir.path(), &["init"]));
    let mut child = cli(&db, dir.path())
        .args(["--now", "2026-11-01T12:30:00Z", "--format", "json", "heal"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    // Lines written from a thread (the process is killed while it still reads them).
    let feeder = std::thread::spawn(move || {
        for i in 0..100_000 {
            let line = serde_json::json!({
                "type": "heartbeat_failed",
                "agent_id": format!("agent-{}", i % 7),
                "failure_id": format!("K{i}"),
                "timestamp": "2026-11-01T12:00:00Z",
            });
            if writeln!(stdin, "{line}").is_err() {
                break;
            }
        }
    });
    let mut answered = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let doc: Value = serde_json::from_str(&line.unwrap()).unwrap();
        answered.push(doc["failure_id"].as_str().unwrap().to_owned());
        if answered.len() == 150 {
            child.kill().unwrap();
            break;
        }
    }
    child.wait().unwrap();
    feeder.join().unwrap();
    assert_eq!(answered.len(), 150);
    let clock = Arc::new(ManualClock::new(t0() + Duration::minutes(30)));
    let h = healer(&db, clock.clone(), "").await;
    for id in &answered {
        let version = h
            .store()
            .stream_version(&format!("failure-{id}"))
            .await
            .unwrap();
        assert!(version > 0, "answered failure {id} is in the log");
    }
    let events: Vec<_> = h
        .store()
        .read(EventFilter::default())
        .map(|e| e.unwrap())
        .collect()
        .await;
    assert_log_invariants(&events);
    let restored = h.snapshots().await.unwrap();
    h.store().drop_snapshots().await.unwrap();
    h.store().clone().close().await.unwrap();
    drop(h);
    let fresh = healer(&db, clock, "").await;
    assert_eq!(fresh.snapshots().await.unwrap(), restored);
}

/// A database whose collation ignores punctuation (as glibc's `en_US.UTF-8` does, a common
/// default; here ICU's `en-US` with punctuation shifted) would sort `strategy-CircuitBreaker-x`
/// after `strategy.`: stream ids are compared byte for byte all the same, so a healer's
/// catch-up reads another healer's decisions.
#[tokio::test]
async fn healers_see_each_others_decisions_whatever_the_databases_collation() {
    let db = PgDb::with(
        "LOCALE_PROVIDER icu ICU_LOCALE 'en-US-u-ka-shifted' LOCALE 'C.UTF-8' TEMPLATE template0",
    )
    .await;
    let mut conn = db.connect().await;
    let ignored: bool = sqlx::query_scalar("SELECT 'strategy-a' > 'strategy.'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(ignored, "the database's collation ignores punctuation");
    let clock = Arc::new(ManualClock::new(t0()));
    let a = healer(&db, clock.clone(), "").await;
    let b = healer(&db, clock.clone(), "").await;
    for _ in 0..5 {
        let f = Failure::new("agent_down", Severity::High, clock.now_value()).with_agent("x");
        a.heal(f).await.unwrap();
    }
    assert_eq!(b.permit("x").await.unwrap().permitted, Some(false));
    assert_eq!(circuit_state(&b, "x").await, "open");
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// PostgreSQL cannot turn a JSON text holding `\u0000` into text: a failure whose metadata
/// holds a NUL (a raw log line) keeps its task and severity in `failures` all the same, so
/// its task's success recovers it and another task's does not, as on SQLite.
#[tokio::test]
async fn a_failure_whose_metadata_holds_a_nul_keeps_its_task_in_the_read_model() {
    let db = PgDb::new().await;
    let clock = Arc::new(ManualClock::new(t0()));
    let h = deciding_healer(&db, clock.clone()).await;
    let f = Failure::new("task_timeout", Severity::Medium, t0())
        .with_agent("a")
        .with_task("t1")
        .with_id("N1")
        .with_meta("log", "bad\u{0}byte");
    h.heal(f).await.unwrap();
    let other = h
        .record_success("a", Some("t2"), t0() + Duration::minutes(1))
        .await
        .unwrap();
    assert!(other.recovered.is_empty(), "{other:?}");
    let own = h
        .record_success("a", Some("t1"), t0() + Duration::minutes(2))
        .await
        .unwrap();
    assert_eq!(own.recovered, ["N1"]);
    let mut conn = db.connect().await;
    let row: (Option<String>, Option<String>) =
        sqlx::query_as("SELECT task_id, severity FROM failures WHERE failure_id = 'N1'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(row, (Some("t1".into()), Some("medium".into())));
    h.close().await.unwrap();
}
