//! SIGKILL at random moments: during healing loops (`demo`), during `rebuild`, and during
//! migrations (a new file created by racing processes; an upgrade that computes the hash chain
//! over the stored events). After each kill the file must be sound, the log intact, the read models
//! equal to a rebuild from the events, and strategy state equal to a full replay.

#![cfg(unix)]

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use healstore::analytics::{Analytics, TableDigest, read_model_digests};
use healstore::{Store, StoreOptions};

use crate::common::{
    Rng, assert_log_invariants, block_on, expect_success, healstore, integrity_check,
    raw_connection, read_all, run, run_with_input, temp_db,
};

/// How long a child may take to make the progress a test waits for.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(90);

/// `(count, last position)` of the log, through a plain read connection; `None` while the
/// file or its log does not exist yet.
fn try_log_head(db: &Path) -> Option<(i64, i64)> {
    use sqlx::ConnectOptions;
    if !db.exists() {
        return None;
    }
    block_on(async {
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(db)
            .read_only(true)
            .connect()
            .await
            .ok()?;
        let r: Option<(i64, i64)> =
            sqlx::query_as("SELECT count(*), coalesce(max(position), 0) FROM events")
                .fetch_one(&mut conn)
                .await
                .ok();
        let _ = sqlx::Connection::close(conn).await;
        r
    })
}

#[track_caller]
fn log_head(db: &Path) -> (i64, i64) {
    try_log_head(db).expect("count the events")
}

async fn open_existing(db: &Path) -> Store {
    Store::open(
        db,
        StoreOptions {
            create: false,
            ..StoreOptions::default()
        },
    )
    .await
    .expect("open the store")
}

/// The read models' digests as they are.
fn digests(db: &Path) -> Vec<TableDigest> {
    block_on(async {
        let store = open_existing(db).await;
        let d = read_model_digests(store.read_pool()).await.unwrap();
        store.close().await.unwrap();
        d
    })
}

/// Rebuilds the read models from the events and returns their digests.
fn rebuilt_digests(db: &Path) -> Vec<TableDigest> {
    block_on(async {
        let store = open_existing(db).await;
        Analytics::new(&store).rebuild().await.expect("rebuild");
        let d = read_model_digests(store.read_pool()).await.unwrap();
        store.close().await.unwrap();
        d
    })
}

fn spawn(db: &Path, args: &[&str]) -> Child {
    healstore(db)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn healstore")
}

/// SIGKILLs `child` (no destructor, no rollback, no checkpoint) and reaps it. True when it
/// was still running, false when it had already exited (successfully).
#[track_caller]
fn kill9(child: &mut Child, what: &str) -> bool {
    if let Some(status) = child.try_wait().expect("try_wait") {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        assert!(
            status.success(),
            "{what} ended before the kill: {status}\n{err}"
        );
        return false;
    }
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    // It may have exited by itself between the check and the kill.
    assert!(
        status.signal() == Some(9) || status.success(),
        "{what}: {status}"
    );
    status.signal() == Some(9)
}

/// Waits (polling) until `done` holds, the child has exited, or `deadline` passes.
fn poll_until(child: &mut Child, deadline: Instant, mut done: impl FnMut() -> bool) {
    while !done() {
        if child.try_wait().expect("try_wait").is_some() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the child made no progress in time"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `healstore states --format json` at a fixed instant.
fn states(db: &Path) -> serde_json::Value {
    let out = expect_success(&run(
        db,
        &[
            "--now",
            "2027-01-01T00:00:00Z",
            "--format",
            "json",
            "states",
        ],
    ));
    serde_json::from_str(&out).expect("states JSON")
}

#[test]
fn sigkill_during_healing_loops_leaves_a_sound_file_consistent_read_models_and_state() {
    let (_dir, db) = temp_db();
    let mut rng = Rng::seeded("sigkill during demo");
    for round in 0..4u64 {
        // Given a healer running a long simulated fleet,
        let seed = round.to_string();
        // Each round's period (100,000 ticks of 5 s, about 5.8 days, ending at `--now`) after
        // the previous round's.
        let now = healstore::time::format_time(
            healstore::time::parse_time("2026-11-01T00:00:00Z").unwrap()
                + chrono::Duration::days(7 * round as i64),
        );
        let (count0, _) = try_log_head(&db).unwrap_or((0, 0));
        let mut child = spawn(
            &db,
            &["--now", &now, "demo", "--ticks", "100000", "--seed", &seed],
        );
        // when it is SIGKILLed after it has written a random number of events,
        let target = count0 + rng.between(30, 1500) as i64;
        poll_until(&mut child, Instant::now() + PROGRESS_TIMEOUT, || {
            try_log_head(&db).is_some_and(|(n, _)| n >= target)
        });
        assert!(kill9(&mut child, "demo"), "round {round}: demo ended early");
        let (count, head) = log_head(&db);
        eprintln!("round {round}: killed after {} new events", count - count0);
        assert!(count >= target, "round {round}");

        // then the file is sound and the log's invariants hold,
        assert_eq!(block_on(integrity_check(&db)), "ok", "round {round}");
        assert_log_invariants(&block_on(read_all(&db)));
        // the read models equal a rebuild from the events,
        let incremental = digests(&db);
        assert!(
            incremental
                .iter()
                .any(|d| d.table == "failures" && d.rows > 0)
        );
        assert_eq!(incremental, rebuilt_digests(&db), "round {round}");
        // strategy state restored (from snapshots and the log after them) equals a full
        // replay (`rebuild` dropped the snapshots: the command below replays everything),
        let restored = states(&db);
        expect_success(&run(&db, &["rebuild"]));
        let replayed = states(&db);
        assert!(!restored["states"].as_array().unwrap().is_empty());
        assert_eq!(restored, replayed, "round {round}");
        // and nothing was lost or added: the events are the ones counted right after the
        // kill, and a next run continues without error.
        let (count_now, head_now) = log_head(&db);
        assert_eq!((count_now, head_now), (count, head), "round {round}");
        expect_success(&run(
            &db,
            &["--now", &now, "demo", "--ticks", "5", "--seed", &seed],
        ));
        assert!(
            log_head(&db).0 > count,
            "round {round}: the next run wrote nothing"
        );
        assert_eq!(block_on(integrity_check(&db)), "ok", "round {round}");
    }
}

/// A JSON Lines log of `n` healed failures (five events each) over `n` minutes.
fn big_log(n: usize) -> String {
    let t0 = healstore::time::parse_time("2026-10-01T00:00:00Z").unwrap();
    let mut out = String::with_capacity(n * 1200);
    let types = ["agent_down", "task_timeout", "resource_exhaustion"];
    let strategies = ["AgentRestart", "TaskRetry", "GradualDegradation"];
    for i in 0..n {
        let id = format!("f{i}");
        let stream = format!("failure-{id}");
        let at = |ms: i64| {
            healstore::time::format_time(
                t0 + chrono::Duration::minutes(i as i64) + chrono::Duration::milliseconds(ms),
            )
        };
        let (ty, st) = (types[i % 3], strategies[i % 3]);
        let agent = format!("agent-{}", i % 50);
        let ok = i % 4 != 0;
        let mut push = |k: &str, ev: &str, ms: i64, payload: serde_json::Value| {
            out.push_str(
                &serde_json::json!({"event_id": format!("{id}-{k}"), "stream_id": stream,
                    "event_type": ev, "occurred_at": at(ms), "payload": payload})
                .to_string(),
            );
            out.push('\n');
        };
        push(
            "d",
            "failure_detected",
            0,
            serde_json::json!({"failure_id": id, "failure_type": ty, "severity": "high",
                               "agent_id": agent}),
        );
        push(
            "a",
            "healing_attempted",
            5,
            serde_json::json!({"failure_id": id, "strategy": st, "agent_id": agent,
                "failure_type": ty, "decision": "act", "reason": "r",
                "actions": [{"action": "restart_agent", "agent_id": agent}]}),
        );
        push(
            "x",
            "action_executed",
            10 + (i % 7) as i64,
            serde_json::json!({"failure_id": id, "strategy": st, "agent_id": agent,
                "action": "restart_agent", "success": ok, "duration_ms": 5}),
        );
        push(
            "c",
            "healing_completed",
            20 + (i % 900) as i64,
            serde_json::json!({"failure_id": id, "strategy": st, "agent_id": agent,
                "failure_type": ty, "success": ok, "duration_ms": 15 + (i % 900) as i64}),
        );
        if ok {
            push(
                "r",
                "failure_resolved",
                20 + (i % 900) as i64,
                serde_json::json!({"failure_id": id, "failure_type": ty, "agent_id": agent,
                    "strategy": st, "detected_at": at(0)}),
            );
        }
    }
    out
}

/// Makes the read models differ from what a rebuild would produce (one failure row's counts),
/// so that "the old read models" and "the rebuilt ones" can be told apart.
fn tamper_read_models(db: &Path) {
    block_on(async {
        let mut conn = raw_connection(db).await;
        sqlx::query(
            "UPDATE failures SET attempts = attempts + 1000 \
             WHERE position = (SELECT min(position) FROM failures)",
        )
        .execute(&mut conn)
        .await
        .expect("tamper");
        sqlx::Connection::close(conn).await.expect("close");
    })
}

fn snapshot_count(db: &Path) -> i64 {
    block_on(async {
        let mut conn = raw_connection(db).await;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM strategy_snapshots")
            .fetch_one(&mut conn)
            .await
            .expect("count snapshots");
        sqlx::Connection::close(conn).await.expect("close");
        n
    })
}

#[test]
fn sigkill_during_rebuild_leaves_the_old_or_the_new_read_models_never_a_mix() {
    // Given a database with enough events that a rebuild takes a while,
    let (_dir, db) = temp_db();
    expect_success(&run_with_input(
        &db,
        &["import", "-"],
        big_log(20_000).as_bytes(),
    ));
    assert_eq!(digests(&db), rebuilt_digests(&db));
    // whose rebuild by the command takes this long, start to end,
    let started = Instant::now();
    expect_success(&run(&db, &["rebuild"]));
    let full = started.elapsed();
    eprintln!("a rebuild takes {full:?}");

    let mut rng = Rng::seeded("sigkill during rebuild");
    let (mut old, mut new, mut mid_run) = (0, 0, 0);
    for round in 0..8 {
        // (with strategy snapshots, which a rebuild drops, written by a short healing run),
        // (each round a minute after the previous one: the demo's period ends at `--now`),
        let now = healstore::time::format_time(
            healstore::time::parse_time("2026-11-01T00:00:00Z").unwrap()
                + chrono::Duration::minutes(round),
        );
        expect_success(&run(&db, &["--now", &now, "demo", "--ticks", "5"]));
        assert!(snapshot_count(&db) > 0, "round {round}: no snapshots");
        let head = log_head(&db);
        let fresh = digests(&db);
        // and read models made to differ from a rebuild's, so that old and new can be told
        // apart,
        tamper_read_models(&db);
        let tampered = digests(&db);
        assert_ne!(tampered, fresh);
        // when `rebuild` is SIGKILLed at a random moment of its run,
        let at = Duration::from_micros(rng.between(0, full.as_micros() as u64));
        let mut child = spawn(&db, &["rebuild"]);
        let t = Instant::now();
        poll_until(&mut child, t + PROGRESS_TIMEOUT, || t.elapsed() >= at);
        if kill9(&mut child, "rebuild") {
            mid_run += 1;
        }

        // then the file is sound, no event is lost,
        assert_eq!(block_on(integrity_check(&db)), "ok", "round {round}");
        assert_eq!(log_head(&db), head, "round {round}");
        // and the read models are either all the old ones (with the snapshots) or all the
        // rebuilt ones (snapshots dropped), never a mix.
        let now = digests(&db);
        if now == tampered {
            old += 1;
            assert!(
                snapshot_count(&db) > 0,
                "round {round}: old read models, no snapshots"
            );
            // (A finished rebuild repairs them.)
            assert_eq!(rebuilt_digests(&db), fresh, "round {round}");
        } else {
            assert_eq!(now, fresh, "round {round}: half-applied read models");
            assert_eq!(
                snapshot_count(&db),
                0,
                "round {round}: new read models, old snapshots"
            );
            new += 1;
        }
    }
    eprintln!("{mid_run} kills during the run: {old} left the old read models, {new} the new");
    assert!(mid_run > 0, "no kill landed while rebuild was running");
}

/// Every schema object's SQL, sorted (what "the full schema" is).
fn schema(db: &Path) -> Vec<(String, String)> {
    block_on(async {
        let mut conn = raw_connection(db).await;
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, coalesce(sql, '') FROM sqlite_schema \
             WHERE name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .fetch_all(&mut conn)
        .await
        .expect("read the schema");
        sqlx::Connection::close(conn).await.expect("close");
        rows
    })
}

fn migration_versions(db: &Path) -> Vec<i64> {
    block_on(async {
        let mut conn = raw_connection(db).await;
        let v = sqlx::query_scalar("SELECT version FROM refinery_schema_history ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .expect("read the migration history");
        sqlx::Connection::close(conn).await.expect("close");
        v
    })
}

#[test]
fn sigkill_during_concurrent_first_migrations_leaves_a_file_that_opens_with_the_full_schema() {
    let (dir, reference) = temp_db();
    expect_success(&run(&reference, &["init"]));
    let full_schema = schema(&reference);
    let mut rng = Rng::seeded("sigkill during first migration");
    let mut killed = 0;
    for round in 0..12 {
        // Given a file that does not exist yet, created by several racing processes,
        let db = dir.path().join(format!("race-{round}.db"));
        let mut children: Vec<Child> = (0..5).map(|_| spawn(&db, &["init"])).collect();
        // some of which are SIGKILLed at random moments (while the file appears and is
        // migrated),
        let t = Instant::now();
        for child in children.iter_mut() {
            if rng.between(0, 2) == 0 {
                continue;
            }
            let at = t + Duration::from_micros(rng.between(0, 40_000));
            poll_until(child, t + PROGRESS_TIMEOUT, || Instant::now() >= at);
            if kill9(child, "init") {
                killed += 1;
            }
        }
        for child in children {
            let out = crate::common::wait_with_deadline(child, crate::common::CHILD_TIMEOUT);
            assert!(
                out.status.success() || out.status.signal() == Some(9),
                "round {round}: {}",
                crate::common::stderr_text(&out)
            );
        }
        // then the file opens (a new `init` completes whatever was cut short), is sound, and
        // has the full schema, migrated once.
        expect_success(&run(&db, &["init"]));
        assert_eq!(block_on(integrity_check(&db)), "ok", "round {round}");
        assert_eq!(schema(&db), full_schema, "round {round}");
        let expected: Vec<i64> = (1..=healstore::SCHEMA_VERSION).collect();
        assert_eq!(migration_versions(&db), expected, "round {round}");
        assert_eq!(log_head(&db), (0, 0));
    }
    eprintln!("{killed} inits killed while running");
    assert!(killed > 0, "no kill landed while init was running");
}

/// Turns a current database back into one of schema version 3: the last migration undone
/// (it renames and adds columns), then the objects that migrations 4 on create dropped and
/// their history rows deleted (what an older healstore left; migrations 6 and 7 only recreate
/// triggers and saturate sums, which they do again). Migration 4 computes the hash chain over
/// every stored event, so the upgrade takes time in proportion to the log.
fn downgrade_to_previous_version(db: &Path) {
    block_on(crate::common::run_sql(
        db,
        &crate::common::undo_v10_statements(),
    ));
    let mut statements = Vec::new();
    for migration in [
        include_str!("../../migrations/V9__snapshots_at_rest.sql"),
        include_str!("../../migrations/V8__archived_facts.sql"),
        include_str!("../../migrations/V5__circuit_transitions.sql"),
        include_str!("../../migrations/V4__hash_chain.sql"),
    ] {
        // Undone in reverse order (an index before the column it names).
        for line in migration.lines().rev() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["CREATE", "TRIGGER", name, ..] => statements.push(format!("DROP TRIGGER {name}")),
                ["CREATE", "TABLE", name, ..] => statements.push(format!("DROP TABLE {name}")),
                ["CREATE", "INDEX", name, ..] => {
                    statements.push(format!("DROP INDEX IF EXISTS {name}"))
                }
                ["ALTER", "TABLE", table, "ADD", "COLUMN", column, ..] => {
                    statements.push(format!("ALTER TABLE {table} DROP COLUMN {column}"))
                }
                _ => {}
            }
        }
    }
    assert!(statements.len() >= 4, "{statements:?}");
    block_on(async {
        let mut conn = raw_connection(db).await;
        for s in &statements {
            sqlx::raw_sql(sqlx::AssertSqlSafe(s.clone()))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        sqlx::query("DELETE FROM refinery_schema_history WHERE version >= 4")
            .execute(&mut conn)
            .await
            .expect("forget the migrations");
        sqlx::Connection::close(conn).await.expect("close");
    });
}

#[test]
fn sigkill_during_an_upgrade_leaves_the_old_or_the_new_schema() {
    // Given a database one schema version behind with many events (its upgrade computes the
    // hash chain over them inside the migration's transaction),
    let (dir, current) = temp_db();
    expect_success(&run_with_input(
        &current,
        &["import", "-"],
        big_log(20_000).as_bytes(),
    ));
    let full_schema = schema(&current);
    let fresh = digests(&current);
    let head = log_head(&current);
    let old_db = dir.path().join("old.db");
    std::fs::copy(&current, &old_db).expect("copy");
    downgrade_to_previous_version(&old_db);
    let old_schema = schema(&old_db);
    assert_ne!(old_schema, full_schema);
    let old_bytes = std::fs::read(&old_db).unwrap();
    // whose upgrade by `init` takes this long, start to end,
    let timed = dir.path().join("timed.db");
    std::fs::write(&timed, &old_bytes).unwrap();
    let started = Instant::now();
    expect_success(&run(&timed, &["init"]));
    let full = started.elapsed();
    assert_eq!(schema(&timed), full_schema);
    eprintln!("an upgrade takes {full:?}");

    let mut rng = Rng::seeded("sigkill during upgrade");
    let (mut old, mut new, mut mid_run) = (0, 0, 0);
    for round in 0..6 {
        let db = dir.path().join(format!("upgrade-{round}.db"));
        std::fs::write(&db, &old_bytes).unwrap();
        // when the upgrade is SIGKILLed at a random moment of its run,
        let at = Duration::from_micros(rng.between(0, full.as_micros() as u64));
        let mut child = spawn(&db, &["init"]);
        let t = Instant::now();
        poll_until(&mut child, t + PROGRESS_TIMEOUT, || t.elapsed() >= at);
        if kill9(&mut child, "init") {
            mid_run += 1;
        }
        // then the file is sound with the old schema or the new one, never a mix,
        assert_eq!(block_on(integrity_check(&db)), "ok", "round {round}");
        let s = schema(&db);
        if s == old_schema {
            old += 1;
        } else {
            assert_eq!(s, full_schema, "round {round}: half-migrated schema");
            new += 1;
        }
        // and the next open completes the upgrade with every event and read models equal to
        // a rebuild's.
        expect_success(&run(&db, &["init"]));
        assert_eq!(schema(&db), full_schema, "round {round}");
        assert_eq!(log_head(&db), head, "round {round}");
        assert_eq!(digests(&db), fresh, "round {round}");
    }
    eprintln!("{mid_run} kills during the run: {old} left the old schema, {new} the new");
    assert!(mid_run > 0, "no kill landed while the upgrade was running");
}
