//! The healer end to end: restart safety (snapshots + events equal a fresh fold, whatever the
//! sequence), a healing process killed with SIGKILL, processes sharing one database, the
//! configuration recorded as events.

use std::sync::Arc;

use chrono::Duration;
use healstore::config::Config;
use healstore::heal::{Coordinator, Failure, Healer, NoopCoordinator, Severity};
use healstore::{Durability, ManualClock, Store, StoreOptions};
use proptest::prelude::*;

use crate::common::{bin, t0, temp_db};

fn options(clock: Arc<ManualClock>) -> StoreOptions {
    StoreOptions {
        clock,
        // Tests do not need power-loss durability; the crash tests below use `full`.
        durability: Durability::Normal,
        ..Default::default()
    }
}

async fn healer(path: &std::path::Path, clock: Arc<ManualClock>) -> Healer {
    let store = Store::open(path, options(clock)).await.unwrap();
    Config::default()
        .builder()
        .coordinator(Arc::new(NoopCoordinator) as Arc<dyn Coordinator>)
        .open(store)
        .await
        .unwrap()
}

#[derive(Debug, Clone)]
enum Op {
    AgentDown(u8),
    TaskTimeout(u8, u8),
    Tokens(u8),
    QuorumLost,
    Success(u8),
    Permit(u8),
    Tick,
    Advance(u16),
    Checkpoint,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4).prop_map(Op::AgentDown),
        2 => ((0u8..4), (0u8..3)).prop_map(|(a, t)| Op::TaskTimeout(a, t)),
        2 => (40u8..100).prop_map(Op::Tokens),
        1 => Just(Op::QuorumLost),
        2 => (0u8..4).prop_map(Op::Success),
        2 => (0u8..4).prop_map(Op::Permit),
        1 => Just(Op::Tick),
        3 => (0u16..200).prop_map(Op::Advance),
        1 => Just(Op::Checkpoint),
    ]
}

async fn run(h: &Healer, clock: &ManualClock, ops: &[Op]) {
    for op in ops {
        let now = clock.now_value();
        let agent = |a: &u8| format!("agent-{a}");
        match op {
            Op::AgentDown(a) => {
                let f = Failure::new("agent_down", Severity::High, now).with_agent(agent(a));
                h.heal(f).await.unwrap();
            }
            Op::TaskTimeout(a, t) => {
                let f = Failure::new("task_timeout", Severity::Medium, now)
                    .with_agent(agent(a))
                    .with_task(format!("task-{t}"));
                h.heal(f).await.unwrap();
            }
            Op::Tokens(pct) => {
                let f = Failure::new("resource_exhaustion", Severity::High, now)
                    .with_meta("resource_type", "tokens")
                    .with_meta("current_usage", f64::from(*pct))
                    .with_meta("limit", 100.0);
                h.heal(f).await.unwrap();
            }
            Op::QuorumLost => {
                let f = Failure::new("quorum_loss", Severity::Critical, now)
                    .with_meta("required_quorum", 3)
                    .with_meta("healthy_agents", 1);
                h.heal(f).await.unwrap();
            }
            Op::Success(a) => {
                h.record_success(&agent(a), None, now).await.unwrap();
            }
            Op::Permit(a) => {
                h.permit(&agent(a)).await.unwrap();
            }
            Op::Tick => {
                h.tick().await.unwrap();
            }
            Op::Advance(s) => clock.advance(Duration::seconds(i64::from(*s))),
            Op::Checkpoint => {
                h.checkpoint().await.unwrap();
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// For any sequence of failures, signals and checkpoints, the state restored after
    /// reopening (snapshots plus the events after them) equals the state folded in memory, and
    /// so does a full replay without any snapshot.
    #[test]
    fn restored_state_equals_the_state_folded_in_memory(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (_dir, path) = temp_db();
            let clock = Arc::new(ManualClock::new(t0()));
            let h = healer(&path, clock.clone()).await;
            run(&h, &clock, &ops).await;
            let in_memory = h.snapshots().await.unwrap();
            h.close().await.unwrap();

            let h = healer(&path, clock.clone()).await;
            let restored = h.snapshots().await.unwrap();
            h.store().drop_snapshots().await.unwrap();
            drop(h);
            let h = healer(&path, clock.clone()).await;
            let replayed = h.snapshots().await.unwrap();
            h.store().clone().close().await.unwrap();

            prop_assert_eq!(&restored, &in_memory);
            prop_assert_eq!(&replayed, &in_memory);
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn a_damaged_snapshot_is_rebuilt_from_events() {
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let h = healer(&path, clock.clone()).await;
    for i in 0..7 {
        let f = Failure::new("agent_down", Severity::High, clock.now_value()).with_agent("a");
        h.heal(f).await.unwrap();
        clock.advance(Duration::seconds(i));
    }
    let before = h.snapshots().await.unwrap();
    h.close().await.unwrap();

    {
        use sqlx::Connection;
        let url = format!("sqlite://{}", path.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let n = sqlx::query("UPDATE strategy_snapshots SET state = '{\"garbage\": ' ")
            .execute(&mut conn)
            .await
            .unwrap()
            .rows_affected();
        assert!(n > 0, "there were snapshots to damage");
        conn.close().await.unwrap();
    }

    let h = healer(&path, clock.clone()).await;
    assert_eq!(h.snapshots().await.unwrap(), before);
}

#[tokio::test]
async fn the_configuration_is_recorded_once_per_change() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path, options(Arc::new(ManualClock::new(t0()))))
        .await
        .unwrap();
    let config = Config::default();
    assert!(config.record(&store).await.unwrap());
    assert!(
        !config.record(&store).await.unwrap(),
        "unchanged: not recorded again"
    );
    let changed = Config::parse("[circuit_breaker]\nfailure_threshold = 3\n").unwrap();
    assert!(changed.record(&store).await.unwrap());
    assert_eq!(
        store
            .stream_version(healstore::config::CONFIG_STREAM)
            .await
            .unwrap(),
        2
    );
}

#[test]
fn bad_configuration_files_are_refused_with_the_reason() {
    for (text, needle) in [
        ("mode = \"sometimes\"", "mode"),
        (
            "[circuit_breaker]\nfailure_threshold = \"five\"",
            "failure_threshold",
        ),
        ("[circuit_breaker]\nno_such_setting = 1", "no_such_setting"),
        (
            "[limits]\nmax_disabled_fraction = 2.0",
            "max_disabled_fraction",
        ),
        (
            "[[route]]\nfailure_types = []\nstrategies = [\"task_retry\"]",
            "failure type",
        ),
        (
            "[[route]]\nfailure_types = [\"x\"]\nstrategies = [\"magic\"]",
            "magic",
        ),
        ("this is not toml", "invalid"),
    ] {
        let err = Config::parse(text).unwrap_err().to_string();
        assert!(err.contains(needle), "{text:?}: {err}");
    }
}

/// Runs the CLI and returns (exit code, stdout, stderr).
fn cli(db: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(bin())
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn processes_sharing_a_database_admit_at_most_the_half_open_trial_limit() {
    let (_dir, path) = temp_db();
    // Open the circuit of agent a: five failures in a row at 12:00.
    for i in 0..5 {
        let at = format!("2026-11-01T12:00:0{i}Z");
        let (code, _, err) = cli(
            &path,
            &[
                "--now",
                &at,
                "record",
                "failure",
                "--type",
                "agent_down",
                "--agent",
                "a",
            ],
        );
        assert_eq!(code, 0, "{err}");
    }
    let (_, out, _) = cli(
        &path,
        &[
            "--now",
            "2026-11-01T12:00:05Z",
            "--format",
            "json",
            "circuits",
        ],
    );
    assert!(out.contains("\"state\":\"open\""), "{out}");

    // Two minutes later the wait is over: eight processes ask at once.
    let children: Vec<_> = (0..8)
        .map(|_| {
            std::process::Command::new(bin())
                .arg("--db")
                .arg(&path)
                .args([
                    "--now",
                    "2026-11-01T12:02:00Z",
                    "circuit",
                    "permit",
                    "--agent",
                    "a",
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut admitted = 0;
    for c in children {
        let out = c.wait_with_output().unwrap();
        match out.status.code() {
            Some(0) => admitted += 1,
            Some(1) => {}
            other => panic!(
                "unexpected exit {other:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
    assert_eq!(
        admitted, 3,
        "exactly the three trial calls of the default config"
    );
}

#[test]
fn a_healing_loop_killed_with_sigkill_restarts_with_every_circuit_as_it_was() {
    let (_dir, path) = temp_db();
    for round in 0..3 {
        let mut child = std::process::Command::new(bin())
            .arg("--db")
            .arg(&path)
            .args([
                "--durability",
                "full",
                "demo",
                "--ticks",
                "100000",
                "--seed",
                &round.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Let it heal for a while: wait until the log has grown, bounded in time.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let target = 400 * (round + 1);
        loop {
            let (_, out, _) = cli(&path, &["--format", "json", "init"]);
            let head = serde_json::from_str::<serde_json::Value>(&out)
                .ok()
                .and_then(|v| v["head_position"].as_i64())
                .unwrap_or(0);
            if head >= target || std::time::Instant::now() > deadline {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        child.kill().unwrap();
        child.wait().unwrap();

        // After the crash: the state restored from snapshots and events equals a full replay.
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let clock = Arc::new(ManualClock::new(t0()));
            let h = healer(&path, clock.clone()).await;
            let restored = h.snapshots().await.unwrap();
            h.store().drop_snapshots().await.unwrap();
            h.store().clone().close().await.unwrap();
            drop(h);
            let h = healer(&path, clock.clone()).await;
            let replayed = h.snapshots().await.unwrap();
            assert_eq!(restored, replayed);
            assert!(
                restored
                    .keys()
                    .any(|k| k.starts_with("strategy-CircuitBreaker-")),
                "the demo had opened circuits"
            );
            h.close().await.unwrap();
        });
        let (code, out, err) = cli(&path, &["circuits"]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("agent-"), "{out}");
    }
}

#[tokio::test]
async fn healing_a_failure_id_twice_heals_once() {
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let h = healer(&path, clock.clone()).await;
    let f = Failure::new("agent_down", Severity::High, t0())
        .with_agent("a")
        .with_id("f-1");
    let first = h.heal(f.clone()).await.unwrap();
    assert!(!first.duplicate);
    let head = h.store().head_position().await.unwrap();
    let states = h.snapshots().await.unwrap();

    let again = h.heal(f).await.unwrap();

    assert!(again.duplicate);
    assert!(again.attempts.is_empty());
    assert_eq!(
        h.store().head_position().await.unwrap(),
        head,
        "nothing written"
    );
    assert_eq!(
        h.snapshots().await.unwrap(),
        states,
        "no state counted it twice"
    );
}

#[tokio::test]
async fn concurrent_heals_of_one_failure_id_record_it_once() {
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let h = Arc::new(healer(&path, clock.clone()).await);
    let f = Failure::new("agent_down", Severity::High, t0())
        .with_agent("a")
        .with_id("f-race");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let h = h.clone();
            let f = f.clone();
            tokio::spawn(async move { h.heal(f).await.unwrap().duplicate })
        })
        .collect();
    let mut fresh = 0;
    for t in tasks {
        if !t.await.unwrap() {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1);
    assert_eq!(
        h.store().stream_version("failure-f-race").await.unwrap(),
        // detected, circuit declined, restart acted, action, completed, resolved
        6
    );
}
