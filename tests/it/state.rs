//! The healer's state you can trust: a strategy stream's state is always its latest snapshot
//! plus that stream's events after it. A missing snapshot costs a fold of the stream, never
//! its state; archived streams keep the snapshots they need (and a missing one is an error,
//! never a default); checkpoints clear nothing until their write committed; states at rest
//! leave memory and need no snapshot.

use std::path::Path;
use std::sync::Arc;

use chrono::Duration;
use healstore::config::Config;
use healstore::heal::{Failure, Healer, Severity};
use healstore::{Durability, ErrorKind, ManualClock, Store, StoreOptions};
use serde_json::Value;

use crate::common::{
    block_on, expect_error, expect_success, raw_connection, run, stdout_text, t0, temp_db,
};

/// Runs statements through a plain connection, outside healstore; the rows the last one
/// changed.
async fn sql_async(path: &Path, statements: &[&str]) -> u64 {
    let mut c = raw_connection(path).await;
    let mut changed = 0;
    for s in statements {
        changed = sqlx::raw_sql(sqlx::AssertSqlSafe(s.to_string()))
            .execute(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .rows_affected();
    }
    sqlx::Connection::close(c).await.unwrap();
    changed
}

async fn sql_scalar_async(path: &Path, q: &str) -> i64 {
    let mut c = raw_connection(path).await;
    let v = sqlx::query_scalar(sqlx::AssertSqlSafe(q.to_string()))
        .fetch_one(&mut c)
        .await
        .unwrap_or_else(|e| panic!("{q}: {e}"));
    sqlx::Connection::close(c).await.unwrap();
    v
}

fn sql(path: &Path, statements: &[&str]) -> u64 {
    block_on(sql_async(path, statements))
}

fn sql_scalar(path: &Path, q: &str) -> i64 {
    block_on(sql_scalar_async(path, q))
}

/// `healstore --now <now> <args>`.
fn at(db: &Path, now: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--now", now];
    all.extend_from_slice(args);
    run(db, &all)
}

/// The circuits the command line lists: agent -> state.
fn circuits(db: &Path, now: &str) -> Vec<(String, String)> {
    let text = expect_success(&at(db, now, &["--format", "json", "circuits"]));
    let doc: Value = serde_json::from_str(&text).unwrap();
    doc["circuits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["agent_id"].as_str().unwrap().to_owned(),
                c["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn permit_code(db: &Path, now: &str, agent: &str) -> i32 {
    at(db, now, &["circuit", "permit", "--agent", agent])
        .status
        .code()
        .unwrap()
}

const SNAPSHOT_OF_X: &str =
    "DELETE FROM strategy_snapshots WHERE stream_id = 'strategy-CircuitBreaker-X'";

#[test]
fn a_deleted_snapshot_costs_a_fold_of_the_stream_never_its_state() {
    let (_dir, db) = temp_db();
    let now = "2026-11-01T12:00:00Z";
    expect_success(&at(
        &db,
        now,
        &["circuit", "open", "--agent", "X", "--reason", "maintenance"],
    ));
    // Twice: first with only the snapshot that command wrote; then once a listing (which
    // holds every state) has written a checkpoint whose position covers X's events, so that
    // a restore reads no event of X unless it notices the snapshot is gone.
    for round in 0..2 {
        assert_eq!(
            sql(&db, &[SNAPSHOT_OF_X]),
            1,
            "round {round}: X had a snapshot"
        );
        assert_eq!(
            permit_code(&db, now, "X"),
            1,
            "round {round}: still refused"
        );
        assert_eq!(
            sql(&db, &[SNAPSHOT_OF_X]),
            1,
            "round {round}: written again"
        );
        assert_eq!(
            circuits(&db, now),
            [("X".to_owned(), "forced_open".to_owned())],
            "round {round}"
        );
        if round == 0 {
            let covered = sql_scalar(
                &db,
                "SELECT count(*) FROM strategy_checkpoints WHERE strategy = 'CircuitBreaker' \
                 AND position > 0",
            );
            assert_eq!(covered, 1, "the listing wrote a checkpoint position");
        }
    }
    let out = at(&db, now, &["--format", "json", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout_text(&out));
}

#[test]
fn archived_states_keep_their_snapshots_and_a_missing_one_is_an_error_not_a_default() {
    let (dir, db) = temp_db();
    // Y forced open; Z failed once and recovered: a closed circuit with nothing counted, at
    // rest, which needs no snapshot while its events are in the log.
    expect_success(&at(
        &db,
        "2026-11-01T12:00:00Z",
        &["circuit", "open", "--agent", "Y", "--reason", "maintenance"],
    ));
    expect_success(&at(
        &db,
        "2026-11-01T12:00:01Z",
        &["record", "failure", "--type", "agent_down", "--agent", "Z"],
    ));
    expect_success(&at(
        &db,
        "2026-11-01T12:00:02Z",
        &["record", "success", "--agent", "Z"],
    ));
    let z_rows = "SELECT count(*) FROM strategy_snapshots \
                  WHERE stream_id = 'strategy-CircuitBreaker-Z'";
    assert_eq!(sql_scalar(&db, z_rows), 0, "Z is at rest");

    // When everything is archived,
    let file = dir.path().join("archive.jsonl.gz");
    expect_success(&at(
        &db,
        "2026-11-01T12:00:03Z",
        &[
            "archive",
            "--before",
            "2026-11-01T13:00:00Z",
            "--to",
            file.to_str().unwrap(),
        ],
    ));
    // then Z keeps a snapshot, at rest (a restore does not read it), and Y its own,
    assert_eq!(
        sql_scalar(&db, &format!("{z_rows} AND at_rest = 1")),
        1,
        "Z's state is kept at rest"
    );
    assert_eq!(
        sql_scalar(
            &db,
            "SELECT count(*) FROM archived_streams a WHERE a.stream_id LIKE 'strategy-%' \
             AND NOT EXISTS (SELECT 1 FROM strategy_snapshots s WHERE s.stream_id = a.stream_id \
                             AND s.stream_version >= a.version)"
        ),
        0,
        "every archived state stream has a snapshot covering it"
    );
    let now = "2026-11-01T12:00:04Z";
    let out = at(&db, now, &["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout_text(&out));
    assert_eq!(permit_code(&db, now, "Z"), 0);
    assert_eq!(permit_code(&db, now, "Y"), 1);
    assert_eq!(
        circuits(&db, now),
        [("Y".to_owned(), "forced_open".to_owned())]
    );

    // and when Y's snapshot goes missing, Y's state is not known: every command that needs
    // it refuses, and verify names it.
    let y = "DELETE FROM strategy_snapshots WHERE stream_id = 'strategy-CircuitBreaker-Y'";
    assert_eq!(sql(&db, &[y]), 1);
    let lost = "is damaged: the state of strategy-CircuitBreaker-Y cannot be rebuilt: its \
                events up to version 1 are archived and its snapshot is missing";
    expect_error(&at(&db, now, &["circuit", "permit", "--agent", "Y"]), lost);
    expect_error(&at(&db, now, &["circuits"]), lost);
    let out = at(&db, now, &["--format", "json", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_str(&stdout_text(&out)).unwrap();
    let check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "snapshots")
        .unwrap();
    assert_eq!(check["ok"], false);
    assert!(
        check["detail"]
            .as_str()
            .unwrap()
            .contains("strategy-CircuitBreaker-Y cannot be rebuilt"),
        "{check}"
    );
    // The library says the same, with its kind.
    let err = block_on(async {
        let store = Store::open(&db, StoreOptions::default()).await.unwrap();
        let r = Config::default().builder().open(store.clone()).await;
        store.close().await.unwrap();
        r.err().expect("refused")
    });
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
}

/// The circuits a healer lists, with their states (caught up with the log).
async fn circuit_states(h: &Healer) -> Vec<(String, String)> {
    h.states(Some("CircuitBreaker"))
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.key, s.state["state"].as_str().unwrap().to_owned()))
        .collect()
}

fn options(clock: Arc<ManualClock>) -> StoreOptions {
    StoreOptions {
        clock,
        durability: Durability::Normal,
        ..StoreOptions::default()
    }
}

/// A healer of the default configuration, without a coordinator (decisions are delegated).
async fn healer(path: &Path, clock: Arc<ManualClock>) -> Healer {
    let store = Store::open(path, options(clock)).await.unwrap();
    Config::default().builder().open(store).await.unwrap()
}

async fn fail(h: &Healer, agent: &str, n: usize) {
    for _ in 0..n {
        let f = Failure::new("agent_down", Severity::High, h.now()).with_agent(agent);
        h.heal(f).await.unwrap();
    }
}

/// The states a fresh healer restores, and the ones a full replay of the log folds (every
/// snapshot dropped first).
async fn restored_and_replayed(
    path: &Path,
    clock: Arc<ManualClock>,
) -> (
    std::collections::HashMap<String, (u64, Value)>,
    std::collections::HashMap<String, (u64, Value)>,
) {
    let h = healer(path, clock.clone()).await;
    let restored = h.snapshots().await.unwrap();
    h.store().drop_snapshots().await.unwrap();
    h.store().clone().close().await.unwrap();
    drop(h);
    let h = healer(path, clock).await;
    let replayed = h.snapshots().await.unwrap();
    h.store().clone().close().await.unwrap();
    (restored, replayed)
}

#[test]
fn an_archive_by_another_process_keeps_the_running_healers_states_and_a_fresh_ones() {
    let (dir, db) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A long-running healer opens the circuits of a and b (never checkpointed),
    let h = rt.block_on(async {
        let h = healer(&db, clock.clone()).await;
        fail(&h, "a", 5).await;
        fail(&h, "b", 5).await;
        h
    });
    // while other processes open c's circuit and reset a's,
    for i in 0..5 {
        expect_success(&at(
            &db,
            &format!("2026-11-01T12:00:0{i}Z"),
            &["record", "failure", "--type", "agent_down", "--agent", "c"],
        ));
    }
    expect_success(&at(
        &db,
        "2026-11-01T12:00:06Z",
        &["circuit", "reset", "--agent", "a", "--reason", "repaired"],
    ));
    // and then one archives every event.
    let file = dir.path().join("archive.jsonl.gz");
    expect_success(&at(
        &db,
        "2026-11-01T12:00:07Z",
        &[
            "archive",
            "--before",
            "2026-11-01T13:00:00Z",
            "--to",
            file.to_str().unwrap(),
        ],
    ));
    clock.set(t0() + Duration::seconds(8));
    let open: Vec<(String, String)> = ["b", "c"]
        .iter()
        .map(|a| ((*a).to_owned(), "open".to_owned()))
        .collect();
    rt.block_on(async {
        // The running healer catches up across the cut: a closed, b and c open.
        assert_eq!(circuit_states(&h).await, open);
        assert_eq!(h.permit("a").await.unwrap().permitted, Some(true));
        assert_eq!(h.permit("b").await.unwrap().permitted, Some(false));
        assert_eq!(h.permit("c").await.unwrap().permitted, Some(false));
        let in_memory = h.snapshots().await.unwrap();
        // A fresh healer restores the same.
        let fresh = healer(&db, clock.clone()).await;
        assert_eq!(circuit_states(&fresh).await, open);
        assert_eq!(fresh.snapshots().await.unwrap(), in_memory);
        fresh.close().await.unwrap();
    });
    // After the healer's next catch-up (another process opened d meanwhile) and its own
    // decisions (b recovers),
    for i in 0..5 {
        expect_success(&at(
            &db,
            &format!("2026-11-01T12:00:1{i}Z"),
            &["record", "failure", "--type", "agent_down", "--agent", "d"],
        ));
    }
    rt.block_on(async {
        clock.set(t0() + Duration::seconds(20));
        h.command(Some("CircuitBreaker"), "b", "reset", "recovered")
            .await
            .unwrap();
        let expected: Vec<(String, String)> = ["c", "d"]
            .iter()
            .map(|a| ((*a).to_owned(), "open".to_owned()))
            .collect();
        assert_eq!(circuit_states(&h).await, expected);
        let in_memory = h.snapshots().await.unwrap();
        h.close().await.unwrap();
        let fresh = healer(&db, clock.clone()).await;
        assert_eq!(fresh.snapshots().await.unwrap(), in_memory);
        fresh.close().await.unwrap();
    });
    let out = at(&db, "2026-11-01T12:00:30Z", &["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout_text(&out));
}

#[tokio::test]
async fn a_failed_checkpoint_marks_nothing_saved_and_the_next_one_writes_everything() {
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let h = healer(&path, clock.clone()).await;
    fail(&h, "a", 5).await; // open
    fail(&h, "b", 2).await; // two failures counted
    h.checkpoint().await.unwrap();
    let rows = |stream: &str| {
        let q = format!("SELECT count(*) FROM strategy_snapshots WHERE stream_id = '{stream}'");
        let path = path.clone();
        async move { sql_scalar_async(&path, &q).await }
    };
    assert_eq!(rows("strategy-CircuitBreaker-b").await, 1);

    // b recovers (at rest: its snapshot is to be deleted), c starts failing, a is forced
    // open; then a checkpoint whose write the database refuses,
    clock.advance(Duration::seconds(1));
    h.record_success("b", None, h.now()).await.unwrap();
    fail(&h, "c", 3).await;
    h.command(Some("CircuitBreaker"), "a", "open", "by hand")
        .await
        .unwrap();
    sql_async(
        &path,
        &[
            "CREATE TRIGGER test_refuse_insert BEFORE INSERT ON strategy_snapshots \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
            "CREATE TRIGGER test_refuse_delete BEFORE DELETE ON strategy_snapshots \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
        ],
    )
    .await;
    let err = h.checkpoint().await.expect_err("the write is refused");
    assert!(err.to_string().contains("refused by the test"), "{err}");
    assert_eq!(
        rows("strategy-CircuitBreaker-b").await,
        1,
        "nothing was deleted"
    );
    assert_eq!(
        rows("strategy-CircuitBreaker-c").await,
        0,
        "nothing was written"
    );

    // then more changes, and a checkpoint that succeeds: it writes everything.
    sql_async(
        &path,
        &[
            "DROP TRIGGER test_refuse_insert",
            "DROP TRIGGER test_refuse_delete",
        ],
    )
    .await;
    fail(&h, "d", 1).await;
    h.checkpoint().await.unwrap();
    assert_eq!(
        rows("strategy-CircuitBreaker-b").await,
        0,
        "b at rest: deleted"
    );
    assert_eq!(rows("strategy-CircuitBreaker-c").await, 1);
    assert_eq!(rows("strategy-CircuitBreaker-d").await, 1);
    let in_memory = h.snapshots().await.unwrap();
    assert_eq!(
        h.verify_snapshots().await.unwrap(),
        [],
        "every snapshot equals its stream's fold"
    );
    h.store().clone().close().await.unwrap();
    drop(h);

    // A restart restores the states in memory, and so does a full replay.
    let (restored, replayed) = restored_and_replayed(&path, clock).await;
    assert_eq!(restored, in_memory);
    assert_eq!(replayed, in_memory);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_on_a_state_that_leaves_memory_before_its_append_is_kept() {
    // States at rest that are still in memory (their snapshot is stored, so only a checkpoint
    // lets them go), each decided on while a checkpoint runs: whichever finishes first, the
    // decision's events must be folded onto the state in memory.
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let h = Arc::new(healer(&path, clock.clone()).await);
    let agents: Vec<String> = (0..40).map(|i| format!("r{i}")).collect();
    for a in &agents {
        fail(&h, a, 1).await;
    }
    h.checkpoint().await.unwrap();
    clock.advance(Duration::seconds(1));
    for a in &agents {
        // At rest again, but stored: kept in memory until the next checkpoint.
        h.record_success(a, None, h.now()).await.unwrap();
    }
    clock.advance(Duration::seconds(1));
    for a in &agents {
        let heal = {
            let h = h.clone();
            let f = Failure::new("agent_down", Severity::High, h.now()).with_agent(a.clone());
            tokio::spawn(async move { h.heal(f).await.unwrap() })
        };
        let checkpoint = {
            let h = h.clone();
            tokio::spawn(async move { h.checkpoint().await.unwrap() })
        };
        heal.await.unwrap();
        checkpoint.await.unwrap();
    }
    let in_memory = h.snapshots().await.unwrap();
    for a in &agents {
        let stream = format!("strategy-CircuitBreaker-{a}");
        assert_eq!(
            in_memory
                .get(&stream)
                .map(|(_, s)| s["consecutive_failures"].clone()),
            Some(Value::from(1)),
            "{a}: the failure counted after the recovery is in memory"
        );
    }
    let h = Arc::try_unwrap(h).ok().expect("no other owner");
    h.close().await.unwrap();
    let (restored, replayed) = restored_and_replayed(&path, clock).await;
    assert_eq!(restored, in_memory);
    assert_eq!(replayed, in_memory);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_task_keys_leave_memory_and_a_restore_reads_no_state_for_them() {
    const TASKS: usize = 20_000;
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let h = Arc::new(healer(&path, clock.clone()).await);
    let mut peak = (0, 0);
    // Tasks that fail once, are retried, and succeed: many at a time, as a fleet runs them.
    for batch in 0..TASKS / 500 {
        let runs: Vec<_> = (0..500)
            .map(|i| {
                let h = h.clone();
                let task = format!("task-{batch}-{i}");
                tokio::spawn(async move {
                    let f = Failure::new("task_timeout", Severity::Medium, h.now())
                        .with_agent("worker")
                        .with_task(task.clone());
                    let r = h.heal(f).await.unwrap();
                    assert_eq!(r.attempts[0].decision, "delegated");
                    h.record_success("worker", Some(&task), h.now())
                        .await
                        .unwrap();
                })
            })
            .collect();
        for r in runs {
            r.await.unwrap();
        }
        // Between batches no task is in flight: none of their states is in memory, and the
        // locks are bounded by the tasks in flight at once, not by the keys ever seen.
        let (states, locks) = h.memory_counts();
        assert_eq!(states, 0, "batch {batch}: {states} states in memory");
        assert!(locks <= 4 * 500, "batch {batch}: {locks} locks");
        peak = (peak.0.max(states), peak.1.max(locks));
        if batch % 10 == 9 {
            h.checkpoint().await.unwrap();
        }
    }
    assert!(peak.1 <= 4 * 500, "{peak:?}");
    let h = Arc::try_unwrap(h).ok().expect("no other owner");
    h.close().await.unwrap();
    let retry_rows = sql_scalar_async(
        &path,
        "SELECT count(*) FROM strategy_snapshots WHERE strategy = 'TaskRetry'",
    )
    .await;
    assert_eq!(retry_rows, 0, "no snapshot for a task at rest");

    // A fresh healer restores no state for them.
    let h = healer(&path, clock.clone()).await;
    assert_eq!(h.memory_counts().0, 0, "no state restored");
    assert!(
        h.states(Some("TaskRetry")).await.unwrap().is_empty(),
        "no task state restored"
    );
    h.close().await.unwrap();
}

#[tokio::test]
async fn a_caught_up_permit_asks_the_database_nothing_and_sees_another_processs_commit_at_once() {
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let store = Store::open(
        &path,
        StoreOptions {
            readers: 1,
            ..options(clock.clone())
        },
    )
    .await
    .unwrap();
    let h = Config::default()
        .builder()
        .open(store.clone())
        .await
        .unwrap();
    // A closed circuit with one failure counted (a state in memory), and a healer caught up.
    fail(&h, "p", 1).await;
    assert_eq!(h.permit("p").await.unwrap().permitted, Some(true));

    // With the store's only read connection taken, a permit that asked the database anything
    // would wait for it: a caught-up healer answers from memory.
    let taken = store.read_pool().acquire().await.unwrap();
    for _ in 0..1000 {
        let r = tokio::time::timeout(std::time::Duration::from_secs(20), h.permit("p"))
            .await
            .expect("a caught-up permit does not wait for the database")
            .unwrap();
        assert_eq!(r.permitted, Some(true));
    }
    drop(taken);

    // Another process opens the circuit: the very next permit sees it.
    let out = tokio::task::spawn_blocking({
        let path = path.clone();
        move || {
            at(
                &path,
                "2026-11-01T12:00:01Z",
                &["circuit", "open", "--agent", "p", "--reason", "maintenance"],
            )
        }
    })
    .await
    .unwrap();
    expect_success(&out);
    assert_eq!(h.permit("p").await.unwrap().permitted, Some(false));
    h.close().await.unwrap();
}
