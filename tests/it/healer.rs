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
    assert_eq!(again.attempts, first.attempts, "answered as first recorded");
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
        // detected, circuit declined, restart acted, action, completed, remediated, and
        // recovered (the coordinator reports the agent active after its restart)
        7
    );
}

// ----- a custom strategy, as a user would write one ------------------------------------------

mod custom {
    use chrono::{DateTime, Utc};
    use healstore::heal::{Action, Decision, Failure, Strategy};
    use serde::{Deserialize, Serialize};

    /// Restarts an agent, but at most `max` times in its life.
    pub struct LimitedRestart {
        pub max: u32,
    }

    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct Restarts {
        pub count: u32,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    pub enum RestartEvent {
        LimitedRestartCounted { at: DateTime<Utc> },
    }

    impl Strategy for LimitedRestart {
        type State = Restarts;
        type Event = RestartEvent;
        fn name(&self) -> &str {
            "LimitedRestart"
        }
        fn can_heal(&self, f: &Failure) -> bool {
            f.agent_id.is_some()
        }
        fn decide(&self, s: &Restarts, f: &Failure, now: DateTime<Utc>) -> Decision<RestartEvent> {
            let agent = f.agent_id.clone().unwrap_or_default();
            if s.count >= self.max {
                return Decision::fail(format!("{agent} was restarted {} times already", s.count))
                    .detail("restarts", s.count);
            }
            Decision::act(format!("restart {agent}"))
                .event(RestartEvent::LimitedRestartCounted { at: now })
                .action(Action::RestartAgent { agent_id: agent })
        }
        fn apply(&self, s: &mut Restarts, e: &RestartEvent) {
            match e {
                RestartEvent::LimitedRestartCounted { .. } => s.count += 1,
            }
        }
    }
}

async fn custom_healer(path: &std::path::Path, clock: Arc<ManualClock>) -> Healer {
    let store = Store::open(path, options(clock)).await.unwrap();
    Healer::builder()
        .register(&["agent_down"], custom::LimitedRestart { max: 2 })
        .coordinator(Arc::new(NoopCoordinator) as Arc<dyn Coordinator>)
        .open(store)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_custom_strategy_acts_through_the_coordinator_and_its_state_survives_a_restart() {
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let h = custom_healer(&path, clock.clone()).await;
    let down = || Failure::new("agent_down", Severity::High, t0()).with_agent("a");

    for _ in 0..2 {
        let r = h.heal(down()).await.unwrap();
        assert!(r.result.success);
        assert_eq!(r.result.strategy_used, "LimitedRestart");
        assert_eq!(r.attempts[0].results, [Ok("restarted agent a".to_owned())]);
    }
    h.close().await.unwrap();

    // A new process: the count comes back from the log.
    let h = custom_healer(&path, clock.clone()).await;
    let r = h.heal(down()).await.unwrap();
    assert!(!r.result.success);
    assert_eq!(r.attempts[0].decision, "failed");
    assert_eq!(r.attempts[0].reason, "a was restarted 2 times already");
    let states = h.states(Some("LimitedRestart")).await.unwrap();
    assert_eq!(states[0].state, serde_json::json!({"count": 2}));
}

// ----- modes and limits ----------------------------------------------------------------------

async fn healer_with(path: &std::path::Path, clock: Arc<ManualClock>, toml: &str) -> Healer {
    let store = Store::open(path, options(clock)).await.unwrap();
    Config::parse(toml)
        .unwrap()
        .builder()
        .coordinator(Arc::new(NoopCoordinator) as Arc<dyn Coordinator>)
        .open(store)
        .await
        .unwrap()
}

#[tokio::test]
async fn beyond_the_hourly_action_limit_decisions_are_withheld_and_recorded() {
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let h = healer_with(
        &path,
        clock.clone(),
        "[limits]\nmax_actions_per_agent_per_hour = 2\n[agent_restart]\nbase_ms = 1\nmax_ms = 1\n",
    )
    .await;
    let mut decisions = Vec::new();
    for _ in 0..3 {
        let f = Failure::new("agent_down", Severity::High, clock.now_value()).with_agent("a");
        let r = h.heal(f).await.unwrap();
        decisions.push(r.attempts.last().unwrap().decision.clone());
        clock.advance(Duration::seconds(60));
    }
    assert_eq!(decisions, ["act", "act", "withheld"]);
    // An hour after the first action, the budget is back.
    clock.advance(Duration::minutes(60));
    let f = Failure::new("agent_down", Severity::High, clock.now_value()).with_agent("a");
    let r = h.heal(f).await.unwrap();
    assert_eq!(r.attempts.last().unwrap().decision, "act");
}

#[tokio::test]
async fn no_more_than_the_allowed_share_of_the_fleet_is_isolated() {
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let h = healer_with(
        &path,
        clock.clone(),
        "[limits]\nmax_disabled_fraction = 0.25\nfleet_size = 4\n\
         [[route]]\nfailure_types = [\"agent_down\"]\nstrategies = [\"circuit_breaker\"]\n\
         [circuit_breaker]\nfailure_threshold = 1\n",
    )
    .await;
    let mut last = Vec::new();
    for agent in ["a", "b"] {
        let f = Failure::new("agent_down", Severity::High, t0()).with_agent(agent);
        let r = h.heal(f).await.unwrap();
        last.push(r.attempts.last().unwrap().clone());
    }
    assert_eq!(last[0].decision, "act", "1 of 4 isolated: within 25 %");
    assert_eq!(last[1].decision, "withheld", "2 of 4 would be 50 %");
    assert!(
        last[1].reason.contains("2 of 4 agents"),
        "{}",
        last[1].reason
    );
    let circuits = h.states(Some("CircuitBreaker")).await.unwrap();
    assert!(
        circuits.iter().all(|c| c.key != "b"),
        "a withheld decision changes no state"
    );
}

#[tokio::test]
async fn an_agent_released_since_it_was_counted_no_longer_counts_against_the_fleet_share() {
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let h = healer_with(
        &path,
        clock.clone(),
        "[limits]\nmax_disabled_fraction = 0.25\nfleet_size = 4\n\
         [[route]]\nfailure_types = [\"agent_down\"]\nstrategies = [\"circuit_breaker\"]\n\
         [circuit_breaker]\nfailure_threshold = 1\n",
    )
    .await;
    let heal = |agent: &str| {
        Failure::new(
            "agent_down",
            Severity::High,
            healstore::Clock::now(clock.as_ref()),
        )
        .with_agent(agent)
    };
    // Given a isolated (the one agent in four the limit allows),
    let r = h.heal(heal("a")).await.unwrap();
    assert_eq!(r.attempts[0].decision, "act");
    // when its circuit is reset (its state back at rest),
    clock.advance(Duration::seconds(1));
    h.command(Some("CircuitBreaker"), "a", "reset", "repaired")
        .await
        .unwrap();
    // then another agent may be isolated in its place,
    clock.advance(Duration::seconds(1));
    let r = h.heal(heal("b")).await.unwrap();
    assert_eq!(r.attempts[0].decision, "act", "{}", r.attempts[0].reason);
    // and a third may not.
    let r = h.heal(heal("c")).await.unwrap();
    assert_eq!(
        r.attempts[0].decision, "withheld",
        "{}",
        r.attempts[0].reason
    );
}

#[tokio::test]
async fn shadow_mode_decides_and_records_but_does_not_act() {
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let h = healer_with(&path, clock.clone(), "mode = \"shadow\"\n").await;
    let f = Failure::new("task_timeout", Severity::Medium, t0()).with_task("t");
    let r = h.heal(f).await.unwrap();
    let a = r.attempts.last().unwrap();
    assert_eq!(a.decision, "shadow");
    assert!(a.results.is_empty(), "nothing was carried out");
    assert!(
        !a.actions.is_empty(),
        "what would have been done is recorded"
    );
    // The state moved as if it had acted: the next decision is the second attempt.
    let f = Failure::new("task_timeout", Severity::Medium, t0()).with_task("t");
    let r = h.heal(f).await.unwrap();
    assert!(
        r.attempts[0].reason.contains("attempt 2"),
        "{}",
        r.attempts[0].reason
    );
}

#[tokio::test]
async fn with_auto_heal_off_decisions_are_suggestions_and_change_no_state() {
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let h = healer_with(&path, clock.clone(), "mode = \"suggest_only\"\n").await;
    for _ in 0..2 {
        let f = Failure::new("task_timeout", Severity::Medium, t0()).with_task("t");
        let r = h.heal(f).await.unwrap();
        let a = r.attempts.last().unwrap();
        assert_eq!(a.decision, "suggest_only");
        assert!(a.reason.contains("attempt 1"), "{}", a.reason);
    }
    assert!(h.states(Some("TaskRetry")).await.unwrap().is_empty());
}

#[tokio::test]
async fn with_auto_heal_off_no_verdict_changes_strategy_state() {
    // Not only acting verdicts: a circuit counting failures below its threshold (a hold) must
    // leave no state behind either, or the circuit would be half-way open with healing off.
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let h = healer_with(&path, clock.clone(), "mode = \"suggest_only\"\n").await;
    for i in 0..8 {
        let f = Failure::new("agent_down", Severity::High, t0()).with_agent("a-1");
        let r = h.heal(f).await.unwrap();
        assert!(!r.attempts.is_empty(), "round {i}");
        for a in &r.attempts {
            assert!(
                a.details.get("events_not_recorded").is_some() || a.decision != "hold",
                "round {i}: {a:?}"
            );
        }
    }
    assert!(
        h.states(None).await.unwrap().is_empty(),
        "{:?}",
        h.states(None).await.unwrap()
    );
}

#[tokio::test]
async fn failures_without_a_strategy_are_recorded_too() {
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let h = healer(&path, clock.clone()).await;
    let f = Failure::new("cosmic_ray", Severity::Low, t0());
    let r = h.heal(f.clone()).await.unwrap();
    assert_eq!(r.attempts[0].decision, "no_strategy");
    assert_eq!(h.store().stream_version(&f.stream_id()).await.unwrap(), 2);
}

// ----- the command line of the healing engine ------------------------------------------------

#[test]
fn the_cli_records_decisions_outcomes_and_shows_the_audit_trail() {
    let (_dir, path) = temp_db();
    let (code, out, err) = cli(
        &path,
        &[
            "--now",
            "2026-11-01T12:00:00Z",
            "--format",
            "json",
            "record",
            "failure",
            "--type",
            "task_timeout",
            "--task",
            "t-1",
            "--agent",
            "a",
            "--id",
            "f-1",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["failure_id"], "f-1");
    assert_eq!(report["attempts"][0]["decision"], "delegated");
    assert_eq!(report["delegated_actions"][0]["action"], "retry_task");

    let (code, out, err) = cli(
        &path,
        &[
            "--format",
            "json",
            "record",
            "outcome",
            "--failure",
            "f-1",
            "--success",
            "--duration-ms",
            "250",
            "--at",
            "2026-11-01T12:00:02Z",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let outcome: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(outcome["time_to_remediate_ms"], 2000);
    // Reporting twice is refused.
    let (code, _, err) = cli(
        &path,
        &["record", "outcome", "--failure", "f-1", "--failed"],
    );
    assert_eq!(code, 2);
    assert!(err.contains("already recorded"), "{err}");

    let (code, out, err) = cli(&path, &["audit", "f-1"]);
    assert_eq!(code, 0, "{err}");
    for needle in [
        "failure_detected",
        "TaskRetry decided delegated",
        "healing_completed",
        "healed in 250 ms",
        "failure_resolved",
    ] {
        assert!(out.contains(needle), "{needle:?} missing from:\n{out}");
    }

    // A raw event through detection; a manual circuit command with its reason.
    let (code, out, err) = cli(
        &path,
        &[
            "record",
            "event",
            "--json",
            r#"{"type":"agent_failed","agent_id":"b","health_state":"FAILED"}"#,
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("failure_id:"), "{out}");
    let (code, _, err) = cli(
        &path,
        &["circuit", "open", "--agent", "b", "--reason", "maintenance"],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = cli(&path, &["circuit", "permit", "--agent", "b"]);
    assert_eq!(code, 1, "a forced-open circuit rejects");
    let (code, out, _) = cli(&path, &["audit", "--agent", "b"]);
    assert_eq!(code, 0);
    assert!(out.contains("maintenance"), "{out}");
    let (code, _, err) = cli(&path, &["circuit", "close", "--agent", "b"]);
    assert_eq!(code, 2, "a command needs a reason");
    assert!(err.starts_with("healstore: error:"), "{err}");
}

#[test]
fn a_second_demo_run_continues_after_the_first() {
    let (_dir, path) = temp_db();
    let run = |now: &str| {
        let (code, out, err) = cli(
            &path,
            &["--now", now, "--format", "json", "demo", "--ticks", "30"],
        );
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    // The first run's 30 ticks end at 12:00; the second, a minute later, has room for 12.
    let first = run("2026-11-01T12:00:00Z");
    let second = run("2026-11-01T12:01:00Z");
    assert_eq!(first["ticks"], 30);
    assert_eq!(second["ticks"], 11, "{second}");
    assert_eq!(second["simulated_until"], "2026-11-01T12:01:00.000000Z");
    assert!(first["failures"]["failures"].as_u64().unwrap() > 0);
    let until = healstore::time::parse_time(first["simulated_until"].as_str().unwrap()).unwrap();
    let from = healstore::time::parse_time(second["simulated_from"].as_str().unwrap()).unwrap();
    assert!(
        from > until,
        "the second run starts after the first one's events"
    );
    assert!(second["head_position"].as_i64() > first["head_position"].as_i64());
}

// ----- concurrency ---------------------------------------------------------------------------

/// A coordinator whose restart of `slow` says it has started and waits until released;
/// everything else succeeds at once.
struct Gate {
    reached: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl Coordinator for Gate {
    async fn agent_status(
        &self,
        agent_id: &str,
    ) -> healstore::heal::coordinator::CoordResult<Option<healstore::heal::AgentStatus>> {
        NoopCoordinator.agent_status(agent_id).await
    }
    async fn register_agent(
        &self,
        agent_id: &str,
        _: serde_json::Map<String, serde_json::Value>,
    ) -> healstore::heal::coordinator::CoordResult<()> {
        if agent_id == "slow" {
            self.reached.notify_one();
            self.release.notified().await;
        }
        Ok(())
    }
    async fn unregister_agent(&self, _: &str) -> healstore::heal::coordinator::CoordResult<()> {
        Ok(())
    }
    async fn topology(
        &self,
    ) -> healstore::heal::coordinator::CoordResult<healstore::heal::Topology> {
        NoopCoordinator.topology().await
    }
    async fn pause_tasks(
        &self,
        _: &[healstore::heal::Priority],
    ) -> healstore::heal::coordinator::CoordResult<u32> {
        Ok(0)
    }
    async fn resume_tasks(
        &self,
        _: &[healstore::heal::Priority],
    ) -> healstore::heal::coordinator::CoordResult<u32> {
        Ok(0)
    }
    async fn set_concurrency(&self, _: u32) -> healstore::heal::coordinator::CoordResult<()> {
        Ok(())
    }
    async fn set_caching(&self, _: bool) -> healstore::heal::coordinator::CoordResult<()> {
        Ok(())
    }
    async fn set_prompt_simplification(
        &self,
        _: bool,
    ) -> healstore::heal::coordinator::CoordResult<()> {
        Ok(())
    }
    async fn retry_task(
        &self,
        _: &str,
        _: Option<&str>,
        _: u64,
    ) -> healstore::heal::coordinator::CoordResult<()> {
        Ok(())
    }
    async fn spawn_agents(&self, _: u32) -> healstore::heal::coordinator::CoordResult<Vec<String>> {
        Ok(Vec::new())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healing_one_agent_does_not_wait_for_another_agents_slow_action() {
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let gate = Arc::new(Gate {
        reached: tokio::sync::Notify::new(),
        release: tokio::sync::Notify::new(),
    });
    let store = Store::open(&path, options(clock.clone())).await.unwrap();
    let h = Arc::new(
        Config::default()
            .builder()
            .coordinator(gate.clone() as Arc<dyn Coordinator>)
            .open(store)
            .await
            .unwrap(),
    );
    let slow = {
        let h = h.clone();
        tokio::spawn(async move {
            let f = Failure::new("agent_down", Severity::High, t0()).with_agent("slow");
            h.heal(f).await.unwrap()
        })
    };
    // Once the slow heal is inside its action, heal another agent: it must finish while the
    // slow one is still blocked in the coordinator.
    gate.reached.notified().await;
    let f = Failure::new("agent_down", Severity::High, t0()).with_agent("fast");
    let fast = tokio::time::timeout(std::time::Duration::from_secs(10), h.heal(f))
        .await
        .expect("another agent's heal is not blocked")
        .unwrap();
    assert!(fast.result.success);
    assert!(
        !slow.is_finished(),
        "the slow heal is still waiting on its action"
    );
    gate.release.notify_one();
    assert!(slow.await.unwrap().result.success);
}

#[tokio::test]
async fn two_healers_on_one_database_open_a_circuit_once() {
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let a = Arc::new(healer(&path, clock.clone()).await);
    let b = Arc::new(healer(&path, clock.clone()).await);
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let h = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let f = Failure::new("agent_down", Severity::High, t0()).with_agent("x");
                h.heal(f).await.unwrap()
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut opened = 0;
    let mut events = a.store().read(healstore::EventFilter {
        stream_id: Some(healstore::heal::strategy_stream("CircuitBreaker", "x")),
        ..Default::default()
    });
    use futures_util::StreamExt;
    while let Some(e) = events.next().await {
        let e = e.unwrap();
        if e.event_type == "circuit_transitioned" && e.payload["to"] == "open" {
            opened += 1;
        }
    }
    assert_eq!(
        opened, 1,
        "ten failures across two healers open the circuit once"
    );
    let states_a = a.states(Some("CircuitBreaker")).await.unwrap();
    let states_b = b.states(Some("CircuitBreaker")).await.unwrap();
    assert_eq!(states_a, states_b, "both healers see the same circuit");
    assert_eq!(states_a[0].state["state"], "open");
}

#[tokio::test]
async fn states_restored_from_the_log_equal_the_ones_in_memory_whatever_the_clock_precision() {
    let (_dir, path) = temp_db();
    // A clock with nanoseconds, as the system clock has: the log keeps microseconds.
    let clock = Arc::new(ManualClock::new(t0() + Duration::nanoseconds(123_456_789)));
    let h = healer(&path, clock.clone()).await;
    for i in 0..7 {
        let f = Failure::new("agent_down", Severity::High, clock.now_value()).with_agent("a");
        h.heal(f).await.unwrap();
        let f = Failure::new("task_timeout", Severity::Medium, clock.now_value()).with_task("t");
        h.heal(f).await.unwrap();
        clock.advance(Duration::nanoseconds(1_000_000_007 * i));
    }
    h.record_success("a", Some("t"), clock.now_value())
        .await
        .unwrap();
    let in_memory = h.snapshots().await.unwrap();
    h.store().clone().close().await.unwrap();
    drop(h);
    let h = healer(&path, clock.clone()).await;
    assert_eq!(h.snapshots().await.unwrap(), in_memory);
}

#[test]
fn refused_record_commands_on_a_database_the_healer_never_opened_change_nothing() {
    use crate::common::{assert_same_files, db_files, expect_error, run, run_with_input};
    let (_dir, path) = temp_db();
    let line = r#"{"stream_id":"s","event_type":"note","occurred_at":"2026-11-01T12:00:00Z","payload":{}}"#;
    crate::common::expect_success(&run_with_input(&path, &["import", "-"], line.as_bytes()));
    let before = db_files(&path);
    for (args, needle) in [
        (
            vec!["record", "outcome", "--failure", "nope", "--success"],
            "no failure",
        ),
        (
            vec![
                "record",
                "usage",
                "--resource",
                "tokens",
                "--current",
                "NaN",
                "--limit",
                "10",
            ],
            "not a valid measurement",
        ),
        (
            vec!["record", "failure", "--type", "agent_down", "--id", ""],
            "must not be empty",
        ),
        (
            vec!["record", "success", "--agent", ""],
            "must not be empty",
        ),
    ] {
        expect_error(&run(&path, &args), needle);
        assert_same_files(&before, &db_files(&path), &format!("{args:?}"));
    }
}

#[tokio::test]
async fn rising_resource_usage_predicts_exhaustion_and_falling_usage_does_not() {
    use healstore::analytics::{Analytics, PredictOptions};
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let h = healer(&path, clock.clone()).await;
    // Tokens at 70, 78, 86 and 92 % of the limit, a minute apart: the usage is recorded as
    // facts, and the least-squares line reaches the limit about 65 s after the last report.
    for (i, share) in [0.70, 0.78, 0.86, 0.92].into_iter().enumerate() {
        let at = t0() + chrono::Duration::minutes(i as i64);
        h.record_usage("tokens", share * 1000.0, 1000.0, at)
            .await
            .unwrap();
    }
    let facts: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM events WHERE event_type = 'resource_usage_reported'",
    )
    .fetch_one(h.store().read_pool())
    .await
    .unwrap();
    assert_eq!(facts, 4);
    let a = Analytics::new(h.store());
    let now = t0() + chrono::Duration::minutes(3) + chrono::Duration::seconds(10);
    let r = a.predict(now, &PredictOptions::default()).await.unwrap();
    let p = r
        .predictions
        .iter()
        .find(|p| p.source == "resource_trend")
        .unwrap_or_else(|| panic!("{r:#?}"));
    assert_eq!(p.failure_type, "resource_exhaustion");
    assert_eq!(p.probability, 0.92);
    // Slope 0.0744 a minute: 0.08 / 0.0744 min = 64.5 s after the last report, 54.5 s from now.
    assert!((50_000..60_000).contains(&p.expected_in_ms), "{p:?}");
    assert!(p.basis.contains("tokens"), "{}", p.basis);
    assert_eq!(
        p.recommended_strategy.as_deref(),
        Some("GradualDegradation")
    );

    // Memory high but falling: nothing predicted for it.
    for (i, share) in [0.97, 0.95, 0.93].into_iter().enumerate() {
        let at = t0() + chrono::Duration::minutes(10 + i as i64);
        h.record_usage("memory", share * 100.0, 100.0, at)
            .await
            .unwrap();
    }
    let later = t0() + chrono::Duration::minutes(13);
    let r = a
        .predict(
            later,
            &PredictOptions {
                record: false,
                ..PredictOptions::default()
            },
        )
        .await
        .unwrap();
    assert!(
        !r.predictions.iter().any(|p| p.basis.contains("memory")),
        "{r:#?}"
    );
    h.close().await.unwrap();
}

// ----- retried heals -------------------------------------------------------------------------

/// A healer in decision mode (no coordinator: acting decisions are delegated to the caller).
async fn deciding_healer(path: &std::path::Path, clock: Arc<ManualClock>) -> Healer {
    let store = Store::open(path, options(clock)).await.unwrap();
    Config::default().builder().open(store).await.unwrap()
}

#[tokio::test]
async fn a_retried_heal_returns_the_original_decision_and_actions_whatever_its_detection_time() {
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let h = deciding_healer(&path, clock.clone()).await;
    // Given a failure whose restart was delegated to the caller,
    let f = Failure::new("agent_down", Severity::High, t0())
        .with_agent("a1")
        .with_id("F1");
    let first = h.heal(f.clone()).await.unwrap();
    assert!(!first.duplicate);
    assert!(
        !first.delegated.is_empty(),
        "a delegated restart: {first:?}"
    );
    let version = h.store().stream_version("failure-F1").await.unwrap();

    // when the caller, whose answer was lost, heals it again a minute later (detected anew),
    clock.advance(Duration::minutes(1));
    let mut again = f.clone();
    again.detected_at = t0() + Duration::minutes(1);
    let second = h.heal(again.clone()).await.unwrap();

    // then it is answered with the original decision and the actions to carry out,
    assert!(second.duplicate);
    assert_eq!(second.attempts, first.attempts);
    assert_eq!(second.delegated, first.delegated);
    assert_eq!(
        second.failure, first.failure,
        "the failure as first recorded"
    );
    assert_eq!(second.result.strategy_used, first.result.strategy_used);
    // and nothing is recorded again.
    assert_eq!(
        h.store().stream_version("failure-F1").await.unwrap(),
        version
    );
    h.close().await.unwrap();

    // Another process (a new healer on the same file) answers the same.
    let h = deciding_healer(&path, clock.clone()).await;
    let third = h.heal(again).await.unwrap();
    assert!(third.duplicate);
    assert_eq!(third.attempts, first.attempts);
    assert_eq!(third.delegated, first.delegated);
    h.close().await.unwrap();
}

#[tokio::test]
async fn a_retried_heal_that_acted_returns_the_actions_results_and_outcome() {
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let h = healer(&path, clock.clone()).await;
    let f = Failure::new("agent_down", Severity::High, t0())
        .with_agent("a1")
        .with_id("F2");
    let first = h.heal(f.clone()).await.unwrap();
    assert!(first.result.success, "{first:?}");
    clock.advance(Duration::seconds(5));
    let mut again = f;
    again.detected_at = t0() + Duration::seconds(5);
    let second = h.heal(again).await.unwrap();
    assert!(second.duplicate);
    assert_eq!(
        second.attempts, first.attempts,
        "decisions, results, success"
    );
    assert_eq!(second.result.success, first.result.success);
    assert_eq!(second.result.actions_taken, first.result.actions_taken);
    assert!(second.delegated.is_empty());
}

#[tokio::test]
async fn a_retried_heal_with_other_facts_is_refused_as_a_conflict_and_records_nothing() {
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let h = deciding_healer(&path, clock.clone()).await;
    let f = Failure::new("task_timeout", Severity::High, t0())
        .with_agent("a1")
        .with_task("t1")
        .with_id("F3");
    h.heal(f.clone()).await.unwrap();
    let head = h.store().head_position().await.unwrap();
    let other_type = Failure {
        failure_type: "agent_down".into(),
        ..f.clone()
    };
    let other_agent = f.clone().with_agent("a2");
    let other_task = f.clone().with_task("t2");
    let no_task = Failure {
        task_id: None,
        ..f.clone()
    };
    for (what, retry) in [
        ("type", other_type),
        ("agent", other_agent),
        ("task", other_task),
        ("task", no_task),
    ] {
        let err = h.heal(retry).await.unwrap_err().to_string();
        assert!(
            err.contains("F3") && err.contains("conflict") && err.contains(what),
            "{what}: {err}"
        );
    }
    assert_eq!(h.store().head_position().await.unwrap(), head);
}

#[test]
fn record_failure_retried_without_at_returns_the_first_answer() {
    use crate::common::{expect_error, expect_success, run};
    let (_dir, db) = temp_db();
    let record = |now: &str, agent: &str| {
        run(
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
                "--id",
                "F1",
            ],
        )
    };
    let first: serde_json::Value =
        serde_json::from_str(&expect_success(&record("2026-11-01T12:00:00Z", "a1"))).unwrap();
    assert_eq!(first["duplicate"], false);
    assert!(
        !first["delegated_actions"].as_array().unwrap().is_empty(),
        "{first}"
    );
    // The retry has no `--at`: its detection time is its own now, a minute later.
    let second: serde_json::Value =
        serde_json::from_str(&expect_success(&record("2026-11-01T12:01:00Z", "a1"))).unwrap();
    assert_eq!(second["duplicate"], true);
    for key in [
        "attempts",
        "delegated_actions",
        "route",
        "failure_type",
        "agent_id",
    ] {
        assert_eq!(second[key], first[key], "{key}");
    }
    // The text form shows the recorded decision and its actions too.
    let text = expect_success(&run(
        &db,
        &[
            "--now",
            "2026-11-01T12:02:00Z",
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
    assert!(text.contains("already recorded"), "{text}");
    assert!(text.contains("restart_agent"), "{text}");
    // A retry naming another agent is a conflict: exit 2, one line, nothing recorded.
    let before = crate::common::block_on(crate::common::read_all(&db)).len();
    expect_error(&record("2026-11-01T12:03:00Z", "a2"), "conflict");
    assert_eq!(
        crate::common::block_on(crate::common::read_all(&db)).len(),
        before
    );
}

#[cfg(target_os = "linux")]
#[test]
fn record_failure_whose_answer_cannot_be_written_says_it_was_recorded_and_how_to_get_it() {
    use crate::common::{expect_success, healstore, run, stderr_text};
    let (_dir, db) = temp_db();
    // Given standard output on a full device,
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let out = healstore(&db)
        .args([
            "--now",
            "2026-11-01T12:00:00Z",
            "record",
            "failure",
            "--type",
            "agent_down",
            "--agent",
            "a1",
            "--id",
            "F9",
        ])
        .stdout(full)
        .output()
        .unwrap();
    // then the command fails (its answer is lost), saying that the failure was recorded and
    // that a retry with the same id returns the answer,
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_text(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("F9") && err.contains("was recorded"), "{err}");
    assert!(err.contains("--id F9"), "{err}");
    // and the retry does.
    let retry: serde_json::Value = serde_json::from_str(&expect_success(&run(
        &db,
        &[
            "--now",
            "2026-11-01T12:00:30Z",
            "--format",
            "json",
            "record",
            "failure",
            "--type",
            "agent_down",
            "--agent",
            "a1",
            "--id",
            "F9",
        ],
    )))
    .unwrap();
    assert_eq!(retry["duplicate"], true);
    assert!(
        !retry["delegated_actions"].as_array().unwrap().is_empty(),
        "{retry}"
    );
}

// ----- one result per attempt ----------------------------------------------------------------

/// The outcome facts (`healing_completed`) recorded for one failure.
async fn completions(store: &Store, failure_id: &str) -> usize {
    use futures_util::StreamExt;
    let mut n = 0;
    let mut events = store.read(healstore::EventFilter::stream(format!(
        "failure-{failure_id}"
    )));
    while let Some(e) = events.next().await {
        if e.unwrap().event_type == "healing_completed" {
            n += 1;
        }
    }
    n
}

#[tokio::test]
async fn concurrent_outcomes_of_one_delegated_decision_are_recorded_once() {
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    // Two healers on one file (two processes), each with four callers reporting at once.
    let a = Arc::new(deciding_healer(&path, clock.clone()).await);
    let f = Failure::new("agent_down", Severity::High, t0())
        .with_agent("a1")
        .with_id("F-out");
    assert!(!a.heal(f).await.unwrap().delegated.is_empty());
    let b = Arc::new(deciding_healer(&path, clock.clone()).await);
    let at = t0() + Duration::seconds(3);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let h = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { h.record_outcome("F-out", true, None, at).await })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    assert_eq!(completions(a.store(), "F-out").await, 1, "{answers:?}");
    let mut fresh = 0;
    for answer in answers {
        match answer {
            Ok(r) if !r.duplicate => fresh += 1,
            Ok(r) => {
                // A duplicate is answered with the recorded result.
                assert!(r.success);
                assert_eq!(r.duration_ms, 3000);
            }
            Err(e) => panic!("a retried outcome is answered, not refused: {e}"),
        }
    }
    assert_eq!(fresh, 1, "one outcome recorded");
    // The other result for the same attempt is a conflict.
    let err = a
        .record_outcome("F-out", false, None, at)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("conflict") && err.contains("F-out"), "{err}");
    assert_eq!(completions(a.store(), "F-out").await, 1);
}

#[tokio::test]
async fn concurrent_heals_of_one_state_in_two_healers_each_count_once_in_an_unbroken_stream() {
    use futures_util::StreamExt;
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let a = Arc::new(healer(&path, clock.clone()).await);
    let b = Arc::new(healer(&path, clock.clone()).await);
    // One fleet-wide state: every heal decides on it. Within a healer, decisions follow one
    // another without waiting for each other's commit; between the two healers they conflict.
    let n = 90;
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let h = if i % 3 == 0 { b.clone() } else { a.clone() };
            tokio::spawn(async move {
                let f = Failure::new("quorum_loss", Severity::Critical, t0())
                    .with_id(format!("q-{i}"))
                    .with_meta("required_quorum", 3)
                    .with_meta("healthy_agents", 2);
                h.heal(f).await.unwrap()
            })
        })
        .collect();
    for t in tasks {
        let r = t.await.unwrap();
        assert!(!r.duplicate);
        assert_eq!(r.attempts.last().unwrap().decision, "act", "{r:?}");
        assert!(r.result.success, "{r:?}");
    }
    let stream = healstore::heal::strategy_stream("QuorumRecovery", "fleet");
    let mut events = a.store().read(healstore::EventFilter {
        stream_id: Some(stream.clone()),
        ..Default::default()
    });
    let mut versions = Vec::new();
    let mut requested = 0;
    while let Some(e) = events.next().await {
        let e = e.unwrap();
        versions.push(e.stream_version);
        if e.payload["type"] == "quorum_recovery_requested" {
            requested += 1;
        }
    }
    assert_eq!(requested, n, "one request per heal, none lost or doubled");
    assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());
    let fresh = healer(&path, clock.clone()).await;
    let expected = fresh.snapshots().await.unwrap();
    assert!(expected.contains_key(&stream) || versions.is_empty());
    assert_eq!(a.snapshots().await.unwrap(), expected, "first healer");
    assert_eq!(b.snapshots().await.unwrap(), expected, "second healer");
}
