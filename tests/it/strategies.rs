//! The built-in strategies, as specifications: given these events (folded into a state), when
//! this failure or signal arrives at this time, then this decision, these events and these
//! actions. Time is passed in; nothing sleeps.
//!
//! The first part calls the pure strategy functions; the second runs them in the real healer on
//! a real store, with a recording coordinator that can be told to fail. Tests named
//! `upstream_*` pin a defect of the earlier Python implementation of this design: each one
//! fails on that implementation's behaviour.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use futures_util::StreamExt;
use healstore::heal::coordinator::CoordResult;
use healstore::heal::strategies::degradation::{
    DegradationEvent, DegradationState, Enforced, GradualDegradation, GradualDegradationConfig,
};
use healstore::heal::strategies::quorum::{QuorumEvent, QuorumRecovery, QuorumRecoveryConfig};
use healstore::heal::strategies::rebalance::{
    RebalanceEvent, ResourceRebalance, ResourceRebalanceConfig,
};
use healstore::heal::strategies::restart::{
    AgentRestart, AgentRestartConfig, BackoffOverride, RestartEvent, RestartState,
};
use healstore::heal::strategies::retry::{
    ResetCause, RetryEvent, RetryState, TaskRetry, TaskRetryConfig,
};
use healstore::heal::{
    Action, AgentStatus, Composite, Coordinator, CoordinatorError, Decision, Failure, Healer,
    Priority, Severity, Signal, Strategy, Topology, Verdict,
};
use healstore::{Clock, EventFilter, ManualClock, RecordedEvent, Store, StoreOptions};
use serde_json::{Map, Value, json};

use crate::common::{t0, temp_db};

// ----- helpers ------------------------------------------------------------------------------

fn secs(s: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(s)
}

/// The state a strategy folds from these events.
fn given<S: Strategy>(s: &S, events: &[S::Event]) -> S::State {
    let mut state = S::State::default();
    for e in events {
        s.apply(&mut state, e);
    }
    state
}

/// Decides and folds the decision's events, as the healer does.
fn step<S: Strategy>(
    s: &S,
    state: &mut S::State,
    f: &Failure,
    now: DateTime<Utc>,
) -> Decision<S::Event> {
    let d = s.decide(state, f, now);
    for e in &d.events {
        s.apply(state, e);
    }
    d
}

/// Reacts to a signal for one key and folds the reaction's events.
fn signal<S: Strategy>(
    s: &S,
    state: &mut S::State,
    key: &str,
    sig: &Signal,
    now: DateTime<Utc>,
) -> Option<Vec<Action>> {
    let r = s.on_signal(state, key, sig, now)?;
    for e in &r.events {
        s.apply(state, e);
    }
    Some(r.actions)
}

fn agent_down(agent: &str, at: DateTime<Utc>) -> Failure {
    Failure::new("agent_down", Severity::High, at).with_agent(agent)
}

fn task_timeout(task: &str, at: DateTime<Utc>) -> Failure {
    Failure::new("task_timeout", Severity::Medium, at)
        .with_task(task)
        .with_agent("agent-1")
}

fn exhaustion(current: f64, limit: f64, at: DateTime<Utc>) -> Failure {
    Failure::new("token_exhaustion", Severity::High, at)
        .with_meta("resource_type", "tokens")
        .with_meta("current_usage", current)
        .with_meta("limit", limit)
}

fn usage(resource: &str, current: f64, limit: f64) -> Signal {
    Signal::ResourceUsage {
        resource_type: resource.into(),
        current_usage: current,
        limit,
    }
}

fn quorum_loss(at: DateTime<Utc>) -> Failure {
    Failure::new("quorum_loss", Severity::Critical, at)
}

const LOW: [Priority; 2] = [Priority::Low, Priority::Background];

// ----- AgentRestart -------------------------------------------------------------------------

/// Restart number `level` in a row, at `at`, followed by a backoff of `backoff_s` seconds.
fn scheduled(at: DateTime<Utc>, level: u32, backoff_s: i64) -> RestartEvent {
    RestartEvent::RestartScheduled {
        at,
        cause: "agent_down".into(),
        level,
        backoff_ms: backoff_s as u64 * 1000,
        next_allowed_at: at + Duration::seconds(backoff_s),
    }
}

#[test]
fn restart_first_failure_restarts_at_once_and_opens_a_10_s_backoff() {
    let s = AgentRestart::default();
    let d = s.decide(&RestartState::default(), &agent_down("a1", t0()), t0());
    assert_eq!(d.verdict, Verdict::Act);
    assert_eq!(
        d.actions,
        vec![Action::RestartAgent {
            agent_id: "a1".into()
        }]
    );
    assert_eq!(
        d.events,
        vec![RestartEvent::RestartScheduled {
            at: t0(),
            cause: "agent_down".into(),
            level: 1,
            backoff_ms: 10_000,
            next_allowed_at: secs(10),
        }]
    );
}

#[test]
fn restart_within_the_backoff_is_held_with_level_and_times() {
    let s = AgentRestart::default();
    let mut state = given(&s, &[scheduled(t0(), 1, 10)]);

    let d = step(&s, &mut state, &agent_down("a1", secs(5)), secs(5));
    assert_eq!(d.verdict, Verdict::Hold);
    assert!(
        d.reason.starts_with("restart backoff until "),
        "{}",
        d.reason
    );
    assert!(d.actions.is_empty());
    assert_eq!(d.details["level"], json!(1));
    assert_eq!(d.details["remaining_ms"], json!(5_000));
    assert_eq!(d.details["next_allowed_at"], json!(secs(10)));
    assert_eq!(
        d.events,
        vec![RestartEvent::RestartHeld {
            at: secs(5),
            cause: "agent_down".into(),
            until: secs(10),
        }]
    );

    // At the instant the backoff ends, the restart is allowed.
    let d = step(&s, &mut state, &agent_down("a1", secs(10)), secs(10));
    assert_eq!(d.verdict, Verdict::Act);
}

#[test]
fn restart_backoff_doubles_from_10_s_to_a_5_min_cap() {
    let s = AgentRestart::default();
    let mut state = RestartState::default();
    let mut now = t0();
    let mut backoffs = Vec::new();
    for _ in 0..8 {
        let d = step(&s, &mut state, &agent_down("a1", now), now);
        assert_eq!(d.verdict, Verdict::Act);
        let ms = d.details["backoff_ms"].as_i64().unwrap();
        backoffs.push(ms / 1000);
        now += Duration::milliseconds(ms);
    }
    assert_eq!(backoffs, vec![10, 20, 40, 80, 160, 300, 300, 300]);
    assert_eq!(state.level, 8);
    assert_eq!(state.restarts, 8);
}

#[test]
fn restart_backoff_resets_after_10_min_of_sustained_health() {
    let s = AgentRestart::default();
    let mut state = given(
        &s,
        &[
            scheduled(t0(), 1, 10),
            scheduled(secs(10), 2, 20),
            scheduled(secs(30), 3, 40),
        ],
    );

    // One millisecond short of 10 minutes: no reset, the fourth restart waits 80 s.
    let almost = secs(30) + Duration::minutes(10) - Duration::milliseconds(1);
    let d = s.decide(&state, &agent_down("a1", almost), almost);
    assert_eq!(d.details["backoff_ms"], json!(80_000));
    assert_eq!(d.events.len(), 1);

    // Ten minutes without a failure since the last restart: the backoff starts over.
    let later = secs(30) + Duration::minutes(10);
    let d = step(&s, &mut state, &agent_down("a1", later), later);
    assert_eq!(d.verdict, Verdict::Act);
    assert_eq!(
        d.events,
        vec![
            RestartEvent::RestartBackoffReset {
                at: later,
                previous_level: 3,
                healthy_since: secs(30),
            },
            RestartEvent::RestartScheduled {
                at: later,
                cause: "agent_down".into(),
                level: 1,
                backoff_ms: 10_000,
                next_allowed_at: later + Duration::seconds(10),
            },
        ]
    );
    assert_eq!(state.level, 1);
    assert_eq!(state.resets, 1);
}

#[test]
fn restart_a_held_failure_interrupts_sustained_health() {
    let s = AgentRestart::default();
    let state = given(
        &s,
        &[
            scheduled(t0(), 1, 10),
            scheduled(secs(10), 2, 20),
            RestartEvent::RestartHeld {
                at: secs(20),
                cause: "agent_down".into(),
                until: secs(30),
            },
        ],
    );

    // Ten minutes after the last restart, but not after the held failure: no reset.
    let now = secs(10) + Duration::minutes(10);
    let d = s.decide(&state, &agent_down("a1", now), now);
    assert_eq!(d.verdict, Verdict::Act);
    assert_eq!(d.details["level"], json!(2));
    assert_eq!(d.details["backoff_ms"], json!(40_000));
}

#[test]
fn restart_a_tick_records_a_reset_that_became_due() {
    let s = AgentRestart::default();
    let mut state = RestartState::default();
    step(&s, &mut state, &agent_down("a1", t0()), t0());
    assert_eq!(s.signal_keys(&Signal::Tick, &["a1".into()]), vec!["a1"]);
    assert!(
        s.on_signal(&state, "a1", &Signal::Tick, secs(599))
            .is_none()
    );
    assert_eq!(s.describe(&state, secs(5))["in_backoff"], json!(true));

    let r = s.on_signal(&state, "a1", &Signal::Tick, secs(600)).unwrap();
    assert_eq!(
        r.events,
        vec![RestartEvent::RestartBackoffReset {
            at: secs(600),
            previous_level: 1,
            healthy_since: t0(),
        }]
    );
    assert!(r.actions.is_empty());
    // Success signals say nothing about a restart backoff.
    let ok = Signal::AgentSucceeded {
        agent_id: "a1".into(),
        task_id: None,
    };
    assert!(s.signal_keys(&ok, &["a1".into()]).is_empty());
}

#[test]
fn restart_declines_a_failure_without_an_agent() {
    let s = AgentRestart::default();
    let f = Failure::new("agent_down", Severity::High, t0());
    let d = s.decide(&RestartState::default(), &f, t0());
    assert_eq!(d.verdict, Verdict::Decline);
    assert!(d.actions.is_empty() && d.events.is_empty());
    assert!(!s.can_heal(&Failure::new("task_timeout", Severity::Medium, t0())));
    assert!(s.can_heal(&Failure::new("heartbeat_failed", Severity::High, t0()).with_agent("a")));
}

#[test]
fn restart_a_failed_restart_is_recorded_and_keeps_the_level() {
    let s = AgentRestart::default();
    let f = agent_down("a1", t0());
    let mut state = RestartState::default();
    step(&s, &mut state, &f, t0());
    assert!(s.on_result(&state, &f, true, secs(1)).is_empty());
    let events = s.on_result(&state, &f, false, secs(1));
    assert_eq!(events, vec![RestartEvent::RestartFailed { at: secs(1) }]);
    for e in &events {
        s.apply(&mut state, e);
    }
    assert_eq!(state.failed_restarts, 1);
    assert_eq!(state.level, 1);
    assert_eq!(state.next_allowed_at, Some(secs(10)));
}

#[test]
fn restart_backoff_per_cause_from_the_configuration() {
    let config: AgentRestartConfig = toml::from_str(
        r#"
        base_ms = 20000
        [per_failure_type.heartbeat_failed]
        base_ms = 1000
        max_ms = 5000
        "#,
    )
    .unwrap();
    assert_eq!(
        config.per_failure_type["heartbeat_failed"],
        BackoffOverride {
            base_ms: Some(1000),
            multiplier: None,
            max_ms: Some(5000),
        }
    );
    assert_eq!(config.max_ms, 300_000, "unset fields keep their defaults");
    let s = AgentRestart::new(config);
    let fresh = RestartState::default();

    // Detection turns a heartbeat failure into agent_down; the cause is its source type.
    let detected = agent_down("a1", t0()).with_meta("source_type", "heartbeat_failed");
    assert_eq!(
        s.decide(&fresh, &detected, t0()).details["backoff_ms"],
        json!(1_000)
    );
    let direct = Failure::new("heartbeat_failed", Severity::High, t0()).with_agent("a1");
    assert_eq!(
        s.decide(&fresh, &direct, t0()).details["backoff_ms"],
        json!(1_000)
    );
    let other = agent_down("a1", t0());
    assert_eq!(
        s.decide(&fresh, &other, t0()).details["backoff_ms"],
        json!(20_000)
    );

    // The cap of the cause applies.
    let deep = RestartState {
        level: 10,
        ..Default::default()
    };
    assert_eq!(
        s.decide(&deep, &detected, t0()).details["backoff_ms"],
        json!(5_000)
    );

    let unknown = toml::from_str::<AgentRestartConfig>("base = 5");
    assert!(unknown.is_err(), "unknown fields are an error");
}

// ----- TaskRetry ----------------------------------------------------------------------------

#[test]
fn retry_waits_1_2_4_seconds_with_deterministic_jitter() {
    let s = TaskRetry::default();
    let f = task_timeout("t1", t0()).with_id("f-1");
    let mut state = RetryState::default();
    let mut delays = Vec::new();
    for (i, base) in [1_000u64, 2_000, 4_000].into_iter().enumerate() {
        let d = step(&s, &mut state, &f, secs(i as i64));
        assert_eq!(d.verdict, Verdict::Act);
        let Action::RetryTask {
            task_id,
            delay_ms,
            agent_id,
        } = &d.actions[0]
        else {
            panic!("not a retry: {:?}", d.actions);
        };
        assert_eq!(task_id, "t1");
        assert_eq!(agent_id, &None, "the coordinator picks a healthy agent");
        let (lo, hi) = (base * 8 / 10, base * 12 / 10);
        assert!(
            (lo..=hi).contains(delay_ms),
            "{delay_ms} outside {lo}..={hi}"
        );
        assert_eq!(
            d.events,
            vec![RetryEvent::RetryScheduled {
                at: secs(i as i64),
                attempt: i as u32 + 1,
                delay_ms: *delay_ms,
            }]
        );
        delays.push(*delay_ms);
    }
    // Pure: the same failure and attempt give the same wait, in any process.
    assert_eq!(
        delays,
        (1..=3).map(|n| s.delay_ms("f-1", n)).collect::<Vec<_>>()
    );
    // Spread: failures of a burst do not all come back at the same instant.
    let spread: HashSet<u64> = (0..20).map(|i| s.delay_ms(&format!("f-{i}"), 1)).collect();
    assert!(spread.len() > 10, "{spread:?}");
    assert!(spread.iter().all(|d| (800..=1200).contains(d)));
}

/// Retries 1, 2, 3 of a task, one a second from t0.
fn three_retries() -> Vec<RetryEvent> {
    (0..3)
        .map(|i| RetryEvent::RetryScheduled {
            at: secs(i),
            attempt: i as u32 + 1,
            delay_ms: 1000 << i,
        })
        .collect()
}

#[test]
fn retry_past_the_limit_fails() {
    let s = TaskRetry::default();
    let mut state = given(&s, &three_retries());
    let d = step(&s, &mut state, &task_timeout("t1", secs(3)), secs(3));
    assert_eq!(d.verdict, Verdict::Fail);
    assert_eq!(d.reason, "retry limit reached: 3 attempts");
    assert!(d.actions.is_empty());
    assert_eq!(
        d.events,
        vec![RetryEvent::RetryLimitReached {
            at: secs(3),
            attempts: 3,
        }]
    );
}

#[test]
fn retry_wait_is_capped_by_max_ms_jitter_included() {
    let s = TaskRetry::new(TaskRetryConfig {
        max_ms: 1_500,
        ..Default::default()
    });
    for i in 0..50 {
        assert!(s.delay_ms(&format!("f-{i}"), 3) <= 1_500);
    }
    let same_agent = TaskRetry::new(TaskRetryConfig {
        retry_on_same_agent: true,
        ..Default::default()
    });
    let d = same_agent.decide(&RetryState::default(), &task_timeout("t1", t0()), t0());
    assert_eq!(d.actions[0].agent(), Some("agent-1"));
}

#[test]
fn retry_declines_a_failure_without_a_task() {
    let s = TaskRetry::default();
    let f = Failure::new("execution_error", Severity::Medium, t0()).with_agent("a1");
    let d = s.decide(&RetryState::default(), &f, t0());
    assert_eq!(d.verdict, Verdict::Decline);
    assert!(d.events.is_empty() && d.actions.is_empty());
}

#[test]
fn retry_a_retry_that_could_not_be_scheduled_is_recorded() {
    let s = TaskRetry::default();
    let f = task_timeout("t1", t0());
    let mut state = RetryState::default();
    step(&s, &mut state, &f, t0());
    let events = s.on_result(&state, &f, false, secs(1));
    assert_eq!(events, vec![RetryEvent::RetryFailed { at: secs(1) }]);
    s.apply(&mut state, &events[0]);
    assert_eq!((state.attempts, state.failed_retries), (1, 1));
}

#[test]
fn upstream_retry_attempts_reset_when_the_task_succeeds() {
    let s = TaskRetry::default();
    let mut state = given(&s, &three_retries());
    let ok = Signal::AgentSucceeded {
        agent_id: "agent-2".into(),
        task_id: Some("t1".into()),
    };
    assert_eq!(s.signal_keys(&ok, &[]), vec!["t1"]);
    let no_task = Signal::AgentSucceeded {
        agent_id: "agent-2".into(),
        task_id: None,
    };
    assert!(s.signal_keys(&no_task, &["t1".into()]).is_empty());

    let r = s.on_signal(&state, "t1", &ok, secs(10)).unwrap();
    assert_eq!(
        r.events,
        vec![RetryEvent::RetryAttemptsReset {
            at: secs(10),
            previous_attempts: 3,
            cause: ResetCause::Succeeded,
        }]
    );
    s.apply(&mut state, &r.events[0]);
    // Nothing to forget: no event.
    assert!(s.on_signal(&state, "t1", &ok, secs(11)).is_none());

    let d = step(&s, &mut state, &task_timeout("t1", secs(20)), secs(20));
    assert_eq!(d.verdict, Verdict::Act);
    assert_eq!(d.details["attempts"], json!(0));
}

#[test]
fn upstream_retry_attempts_expire_after_an_hour_without_failure() {
    let s = TaskRetry::default();
    let mut state = given(&s, &three_retries());
    let almost = secs(2) + Duration::hours(1) - Duration::milliseconds(1);
    assert_eq!(
        s.decide(&state, &task_timeout("t1", almost), almost)
            .verdict,
        Verdict::Fail
    );

    let later = secs(2) + Duration::hours(1);
    let d = step(&s, &mut state, &task_timeout("t1", later), later);
    assert_eq!(d.verdict, Verdict::Act);
    assert_eq!(
        d.events[0],
        RetryEvent::RetryAttemptsReset {
            at: later,
            previous_attempts: 3,
            cause: ResetCause::Expired,
        }
    );
    assert!(matches!(
        d.events[1],
        RetryEvent::RetryScheduled { attempt: 1, .. }
    ));
    assert_eq!(state.attempts, 1);
    assert_eq!(state.resets, 1);
}

#[test]
fn retry_failures_past_the_limit_keep_the_attempts_from_expiring() {
    let s = TaskRetry::default();
    let mut state = given(&s, &three_retries());
    let refused = secs(2) + Duration::minutes(50);
    assert_eq!(
        step(&s, &mut state, &task_timeout("t1", refused), refused).verdict,
        Verdict::Fail
    );
    // An hour after the last retry, but the task failed 10 minutes ago: still at the limit.
    let now = secs(2) + Duration::hours(1);
    assert_eq!(
        s.decide(&state, &task_timeout("t1", now), now).verdict,
        Verdict::Fail
    );
}

// ----- ResourceRebalance --------------------------------------------------------------------

#[test]
fn rebalance_pauses_low_priority_work_then_escalates_while_pressure_persists() {
    let s = ResourceRebalance::default();
    let mut state = Default::default();
    let f = |at| exhaustion(95.0, 100.0, at);

    let d = step(&s, &mut state, &f(t0()), t0());
    assert_eq!(d.verdict, Verdict::Act);
    assert_eq!(
        d.actions,
        vec![Action::PauseTasks {
            priorities: LOW.to_vec()
        }]
    );
    assert_eq!(
        d.events,
        vec![RebalanceEvent::RebalancePaused {
            at: t0(),
            stage: 1,
            priorities: LOW.to_vec(),
        }]
    );

    // Another failure within 5 minutes: the pressure persists, MEDIUM work is paused too.
    let d = step(&s, &mut state, &f(secs(60)), secs(60));
    assert_eq!(d.verdict, Verdict::Act);
    assert_eq!(
        d.actions,
        vec![Action::PauseTasks {
            priorities: vec![Priority::Medium, Priority::Low, Priority::Background]
        }]
    );
    assert_eq!(state.stage, 2);

    // Nothing left to pause: the strategy fails (a chain moves on), nothing is claimed.
    let d = step(&s, &mut state, &f(secs(120)), secs(120));
    assert_eq!(d.verdict, Verdict::Fail);
    assert!(d.actions.is_empty() && d.events.is_empty());

    // Pressure back long after the last pause: the pause is asserted again (new tasks too).
    let d = step(&s, &mut state, &f(secs(60 + 301)), secs(60 + 301));
    assert_eq!(d.verdict, Verdict::Act);
    assert_eq!(state.stage, 2);
    assert_eq!(state.rebalances, 3);
}

#[test]
fn rebalance_resumes_paused_work_when_usage_falls_below_0_7() {
    let s = ResourceRebalance::default();
    let mut state = given(
        &s,
        &[RebalanceEvent::RebalancePaused {
            at: t0(),
            stage: 2,
            priorities: vec![Priority::Medium, Priority::Low, Priority::Background],
        }],
    );

    assert_eq!(
        s.signal_keys(&usage("tokens", 1.0, 2.0), &[]),
        vec!["tokens"]
    );
    assert!(s.signal_keys(&Signal::Tick, &["tokens".into()]).is_empty());
    assert_eq!(
        signal(
            &s,
            &mut state,
            "tokens",
            &usage("tokens", 75.0, 100.0),
            secs(9)
        ),
        None
    );
    let actions = signal(
        &s,
        &mut state,
        "tokens",
        &usage("tokens", 60.0, 100.0),
        secs(10),
    );
    assert_eq!(
        actions,
        Some(vec![Action::ResumeTasks {
            priorities: vec![Priority::Medium, Priority::Low, Priority::Background]
        }])
    );
    assert_eq!((state.stage, state.recoveries), (0, 1));
    assert!(state.paused.is_empty());
    // Nothing paused: nothing to resume.
    assert_eq!(
        signal(
            &s,
            &mut state,
            "tokens",
            &usage("tokens", 1.0, 100.0),
            secs(11)
        ),
        None
    );
}

#[test]
fn rebalance_keys_by_resource_type_and_never_pauses_critical_work() {
    let s = ResourceRebalance::new(ResourceRebalanceConfig {
        stages: vec![vec![Priority::Critical, Priority::Low]],
        ..Default::default()
    });
    assert_eq!(s.key(&exhaustion(1.0, 2.0, t0())), "tokens");
    let bare = Failure::new("quota_exceeded", Severity::High, t0());
    assert_eq!(s.key(&bare), "quota_exceeded");
    let d = s.decide(&Default::default(), &bare, t0());
    assert_eq!(
        d.actions,
        vec![Action::PauseTasks {
            priorities: vec![Priority::Low]
        }]
    );
    assert!(!s.can_heal(&Failure::new("high_latency", Severity::High, t0())));
}

// ----- QuorumRecovery -----------------------------------------------------------------------

#[test]
fn quorum_spawns_the_missing_agents_when_the_failure_counts_the_live_ones() {
    let s = QuorumRecovery::default();
    let f = quorum_loss(t0()).with_meta("healthy_agents", 1);
    assert_eq!(s.key(&f), "fleet");
    let d = s.decide(&Default::default(), &f, t0());
    assert_eq!(d.verdict, Verdict::Act);
    assert_eq!(d.actions, vec![Action::SpawnAgents { count: 2 }]);
    assert_eq!(
        d.events,
        vec![QuorumEvent::QuorumRecoveryRequested {
            at: t0(),
            required: 3,
            live: Some(1),
            spawn: Some(2),
        }]
    );

    // The failure's own quorum wins over the configured one.
    let f = quorum_loss(t0())
        .with_meta("required_quorum", 5)
        .with_meta("active_agents", 2);
    let d = s.decide(&Default::default(), &f, t0());
    assert_eq!(d.actions, vec![Action::SpawnAgents { count: 3 }]);
    let f = quorum_loss(t0()).with_meta("agent_count", 2);
    assert_eq!(
        s.decide(&Default::default(), &f, t0()).actions,
        vec![Action::SpawnAgents { count: 1 }]
    );
}

#[test]
fn quorum_already_met_is_declined() {
    let s = QuorumRecovery::new(QuorumRecoveryConfig {
        required_quorum: 2,
        ..Default::default()
    });
    let f = quorum_loss(t0()).with_meta("healthy_agents", 4);
    let d = s.decide(&Default::default(), &f, t0());
    assert_eq!(d.verdict, Verdict::Decline);
    assert!(d.reason.starts_with("quorum already met"), "{}", d.reason);
    assert!(d.actions.is_empty() && d.events.is_empty());
}

#[test]
fn quorum_without_a_live_count_has_the_coordinator_compare_its_topology() {
    let s = QuorumRecovery::default();
    let d = s.decide(&Default::default(), &quorum_loss(t0()), t0());
    assert_eq!(d.verdict, Verdict::Act);
    assert_eq!(d.actions, vec![Action::EnsureAgents { min_healthy: 3 }]);
}

#[test]
fn quorum_declines_malformed_counts() {
    let s = QuorumRecovery::default();
    for (k, v) in [
        ("healthy_agents", json!(-1)),
        ("healthy_agents", json!("three")),
        ("required_quorum", json!(2.5)),
        ("required_quorum", json!(0)),
    ] {
        let f = quorum_loss(t0()).with_meta(k, v.clone());
        let d = s.decide(&Default::default(), &f, t0());
        assert_eq!(d.verdict, Verdict::Decline, "{k} = {v}");
        assert!(d.actions.is_empty());
    }
}

#[test]
fn quorum_recoveries_count_only_once_carried_out() {
    let s = QuorumRecovery::default();
    let f = quorum_loss(t0()).with_meta("healthy_agents", 1);
    let mut state = Default::default();
    step(&s, &mut state, &f, t0());
    for e in s.on_result(&state, &f, false, secs(1)) {
        s.apply(&mut state, &e);
    }
    step(&s, &mut state, &f, secs(2));
    for e in s.on_result(&state, &f, true, secs(3)) {
        s.apply(&mut state, &e);
    }
    assert_eq!(
        (state.requests, state.recoveries, state.failed_recoveries),
        (2, 1, 1)
    );
    assert_eq!(state.last_recovered_at, Some(secs(3)));
}

// ----- GradualDegradation -------------------------------------------------------------------

fn degraded(s: &GradualDegradation, level_usage: f64) -> DegradationState {
    let mut state = DegradationState::default();
    let d = step(s, &mut state, &exhaustion(level_usage, 1.0, t0()), t0());
    assert_eq!(d.verdict, Verdict::Act);
    state
}

#[test]
fn upstream_degradation_usage_is_current_usage_over_limit() {
    let s = GradualDegradation::default();
    let fresh = DegradationState::default();

    // Detected failures carry current_usage and limit (upstream read usage_percent only).
    let d = s.decide(&fresh, &exhaustion(8_500.0, 10_000.0, t0()), t0());
    assert_eq!(d.verdict, Verdict::Act);
    assert_eq!(d.details["usage"], json!(0.85));
    assert_eq!(d.details["to"]["level_name"], json!("REDUCED_1"));
    assert_eq!(
        d.actions,
        vec![Action::PauseTasks {
            priorities: LOW.to_vec()
        }]
    );

    // current_usage / limit wins over usage_percent...
    let both = exhaustion(96.0, 100.0, t0()).with_meta("usage_percent", 10);
    assert_eq!(
        s.decide(&fresh, &both, t0()).details["to"]["level_name"],
        json!("MINIMAL")
    );
    // ...which is the fallback when neither is there.
    let percent =
        Failure::new("memory_pressure", Severity::High, t0()).with_meta("usage_percent", 92);
    let d = s.decide(&fresh, &percent, t0());
    assert_eq!(d.details["to"]["level_name"], json!("REDUCED_2"));
    assert_eq!(s.key(&percent), "memory_pressure");
}

#[test]
fn degradation_without_usable_numbers_is_declined_with_a_reason() {
    let s = GradualDegradation::default();
    let fresh = DegradationState::default();
    let base = || Failure::new("resource_exhaustion", Severity::High, t0());
    let cases = [
        (base(), "no usage"),
        (exhaustion(5.0, 0.0, t0()), "limit is 0"),
        (base().with_meta("current_usage", 5), "without a limit"),
        (base().with_meta("limit", 5), "without current_usage"),
        (
            base()
                .with_meta("current_usage", "lots")
                .with_meta("limit", 5),
            "not a number",
        ),
        (exhaustion(5.0, -1.0, t0()), "not a usage"),
    ];
    for (f, why) in cases {
        let d = s.decide(&fresh, &f, t0());
        assert_eq!(d.verdict, Verdict::Decline, "{:?}", f.metadata);
        assert!(d.reason.contains(why), "{:?}: {}", f.metadata, d.reason);
        assert!(d.actions.is_empty() && d.events.is_empty());
    }
    let d = s.decide(&fresh, &exhaustion(50.0, 100.0, t0()), t0());
    assert_eq!(d.verdict, Verdict::Decline);
    assert!(
        d.reason.starts_with("no degradation needed"),
        "{}",
        d.reason
    );
}

#[test]
fn upstream_degradation_actions_are_cumulative_and_emitted_once() {
    let s = GradualDegradation::default();
    // FULL straight to MINIMAL: every level's measures, each once.
    let d = s.decide(
        &DegradationState::default(),
        &exhaustion(0.97, 1.0, t0()),
        t0(),
    );
    assert_eq!(
        d.actions,
        vec![
            Action::PauseTasks {
                priorities: LOW.to_vec()
            },
            Action::SetConcurrency { max_per_agent: 2 },
            Action::SetCaching { enabled: true },
            Action::SetPromptSimplification { enabled: true },
        ]
    );
    let DegradationEvent::DegradationRaised {
        from, to, enforced, ..
    } = &d.events[0]
    else {
        panic!("{:?}", d.events);
    };
    assert_eq!((*from, *to), (0, 3));
    assert_eq!(
        enforced,
        &Enforced {
            tasks_paused: true,
            concurrency: Some(2),
            caching: true,
            prompts_simplified: true,
        }
    );

    // From REDUCED_1 to MINIMAL: the pause is already in effect and is not sent again.
    let mut state = degraded(&s, 0.82);
    let d = step(&s, &mut state, &exhaustion(0.96, 1.0, secs(1)), secs(1));
    assert_eq!(
        d.actions,
        vec![
            Action::SetConcurrency { max_per_agent: 2 },
            Action::SetCaching { enabled: true },
            Action::SetPromptSimplification { enabled: true },
        ]
    );
    assert_eq!(state.level, 3);
}

#[test]
fn upstream_degradation_configured_thresholds_are_honoured() {
    let config: GradualDegradationConfig = toml::from_str(
        r#"
        hysteresis = 0.1
        [[levels]]
        name = "SLOW"
        threshold = 0.6
        actions = ["reduce_concurrency"]
        concurrency = 3
        [[levels]]
        name = "QUIET"
        threshold = 0.5
        actions = ["pause_low_priority"]
        "#,
    )
    .unwrap();
    let s = GradualDegradation::new(config);
    // Sorted by threshold, with a normal level added below.
    let names: Vec<&str> = s.levels().iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["FULL", "QUIET", "SLOW"]);

    let fresh = DegradationState::default();
    let d = s.decide(&fresh, &exhaustion(0.55, 1.0, t0()), t0());
    assert_eq!(d.details["to"]["level_name"], json!("QUIET"));
    let d = s.decide(&fresh, &exhaustion(0.65, 1.0, t0()), t0());
    assert_eq!(
        d.actions,
        vec![
            Action::PauseTasks {
                priorities: LOW.to_vec()
            },
            Action::SetConcurrency { max_per_agent: 3 },
        ]
    );
    // The defaults would not degrade at 0.55 at all.
    let d = GradualDegradation::default().decide(&fresh, &exhaustion(0.55, 1.0, t0()), t0());
    assert_eq!(d.verdict, Verdict::Decline);

    let bad = toml::from_str::<GradualDegradationConfig>(
        "[[levels]]\nname = \"X\"\nthreshold = 0.5\nactions = [\"reboot\"]",
    );
    assert!(bad.is_err(), "unknown measures are an error");
}

#[test]
fn upstream_degradation_recovers_toward_full_one_level_per_report_with_hysteresis() {
    let s = GradualDegradation::default();
    let mut state = given(
        &s,
        &[DegradationEvent::DegradationRaised {
            at: t0(),
            from: 0,
            to: 3,
            level_name: "MINIMAL".into(),
            usage: 0.97,
            enforced: Enforced {
                tasks_paused: true,
                concurrency: Some(2),
                caching: true,
                prompts_simplified: true,
            },
        }],
    );
    let report = |u: f64| usage("tokens", u * 1000.0, 1000.0);
    assert_eq!(s.signal_keys(&report(0.5), &[]), vec!["tokens"]);

    // 0.93 is below MINIMAL's 0.95 but not below 0.95 - 0.05: hold.
    assert_eq!(
        signal(&s, &mut state, "tokens", &report(0.93), secs(1)),
        None
    );
    assert_eq!(state.level, 3);

    // Far below: one level per report, each undoing what its level added.
    let steps: Vec<_> = (0..4)
        .map(|i| signal(&s, &mut state, "tokens", &report(0.3), secs(10 + i)))
        .collect();
    assert_eq!(
        steps,
        vec![
            Some(vec![
                Action::SetPromptSimplification { enabled: false },
                Action::SetCaching { enabled: false },
            ]),
            Some(vec![Action::SetConcurrency { max_per_agent: 10 }]),
            Some(vec![Action::ResumeTasks {
                priorities: LOW.to_vec()
            }]),
            None,
        ]
    );
    assert_eq!(state.level, 0);
    assert_eq!(state.enforced, Enforced::default());
    assert_eq!((state.raised, state.lowered), (1, 3));
}

#[test]
fn degradation_a_usage_between_thresholds_holds_and_a_low_failure_steps_down() {
    let s = GradualDegradation::default();
    let mut state = degraded(&s, 0.91); // REDUCED_2
    // Between 0.85 and 0.95: hold, nothing changes.
    let d = step(&s, &mut state, &exhaustion(0.87, 1.0, secs(1)), secs(1));
    assert_eq!(d.verdict, Verdict::Hold);
    assert!(d.reason.contains("REDUCED_2"), "{}", d.reason);
    assert!(d.events.is_empty() && d.actions.is_empty());
    // A failure reporting a low usage steps down one level, like a usage report.
    let d = step(&s, &mut state, &exhaustion(0.5, 1.0, secs(2)), secs(2));
    assert_eq!(d.verdict, Verdict::Act);
    assert_eq!(
        d.actions,
        vec![Action::SetConcurrency { max_per_agent: 10 }]
    );
    assert_eq!(state.level, 1);
}

#[test]
fn degradation_a_failed_enforcement_is_sent_again_in_full() {
    let s = GradualDegradation::default();
    let f = exhaustion(0.91, 1.0, t0());
    let mut state = degraded(&s, 0.91);
    for e in s.on_result(&state, &f, false, secs(1)) {
        s.apply(&mut state, &e);
    }
    assert!(state.enforcement_failed);
    let d = step(&s, &mut state, &exhaustion(0.92, 1.0, secs(2)), secs(2));
    assert_eq!(d.verdict, Verdict::Act);
    assert_eq!(
        d.actions,
        vec![
            Action::PauseTasks {
                priorities: LOW.to_vec()
            },
            Action::SetConcurrency { max_per_agent: 2 },
            Action::SetCaching { enabled: false },
            Action::SetPromptSimplification { enabled: false },
        ]
    );
    assert!(matches!(
        d.events[0],
        DegradationEvent::DegradationReasserted { level: 2, .. }
    ));
    assert!(!state.enforcement_failed);
}

#[test]
fn degradation_describe_shows_the_level_and_its_properties() {
    let s = GradualDegradation::default();
    let state = degraded(&s, 0.96);
    let v = s.describe(&state, secs(1));
    assert_eq!(v["level_name"], json!("MINIMAL"));
    assert_eq!(v["usage"], json!(0.96));
    assert_eq!(v["concurrency"], json!(2));
    assert_eq!(v["timeout_multiplier"], json!(0.2));
    assert_eq!(v["quality_threshold"], json!(0.5));
    assert_eq!(
        v["disabled_features"],
        json!([
            "detailed_metrics",
            "verbose_logging",
            "pattern_learning",
            "analytics",
            "optimization"
        ])
    );
    assert_eq!(
        v["measures"],
        json!([
            "pause_low_priority",
            "reduce_concurrency",
            "enable_caching",
            "simplify_prompts"
        ])
    );
    let full = s.describe(&DegradationState::default(), t0());
    assert_eq!(full["level_name"], json!("FULL"));
    assert_eq!(full["concurrency"], json!(10));
    assert_eq!(full["disabled_features"], json!([]));
    assert_eq!(
        s.levels()
            .iter()
            .map(|l| l.quality_threshold)
            .collect::<Vec<_>>(),
        vec![0.95, 0.85, 0.75, 0.5]
    );
}

#[test]
fn nan_settings_neither_block_recovery_nor_resume_everything() {
    // TOML accepts `nan`; a comparison with NaN is always false.
    let s = GradualDegradation::new(toml::from_str("hysteresis = nan").unwrap());
    let mut state = degraded(&s, 0.82);
    let low = usage("tokens", 0.1, 1.0);
    assert!(signal(&s, &mut state, "tokens", &low, secs(1)).is_some());
    assert_eq!(state.level, 0);

    let r = ResourceRebalance::new(toml::from_str("recover_below = nan").unwrap());
    let paused = RebalanceEvent::RebalancePaused {
        at: t0(),
        stage: 1,
        priorities: LOW.to_vec(),
    };
    let mut state = given(&r, &[paused]);
    assert_eq!(signal(&r, &mut state, "tokens", &low, secs(1)), None);
}

// ----- every strategy -----------------------------------------------------------------------

/// Decisions of every strategy over a spread of states, failures and times.
fn all_decisions() -> Vec<(String, Verdict, Vec<Action>)> {
    fn run<S: Strategy>(
        s: &S,
        failures: &[Failure],
        out: &mut Vec<(String, Verdict, Vec<Action>)>,
    ) {
        let mut state = S::State::default();
        for (i, f) in failures.iter().enumerate() {
            let d = step(s, &mut state, f, secs(i as i64 * 7));
            out.push((s.name().to_owned(), d.verdict, d.actions));
        }
    }
    let mut out = Vec::new();
    let agents: Vec<Failure> = (0..12).map(|i| agent_down("a1", secs(i * 7))).collect();
    run(&AgentRestart::default(), &agents, &mut out);
    let tasks: Vec<Failure> = (0..6).map(|i| task_timeout("t1", secs(i * 7))).collect();
    run(&TaskRetry::default(), &tasks, &mut out);
    let usages = [0.95, 0.97, 0.99, 0.5, 0.85, 0.91, 0.96, 0.2, 0.2, 0.2, 0.2];
    let resources: Vec<Failure> = usages
        .iter()
        .enumerate()
        .map(|(i, u)| exhaustion(*u, 1.0, secs(i as i64 * 7)))
        .collect();
    run(&ResourceRebalance::default(), &resources, &mut out);
    run(&GradualDegradation::default(), &resources, &mut out);
    let quorum = [
        quorum_loss(t0()),
        quorum_loss(t0()).with_meta("healthy_agents", 1),
        quorum_loss(t0()).with_meta("healthy_agents", 3),
    ];
    run(&QuorumRecovery::default(), &quorum, &mut out);
    out
}

#[test]
fn upstream_no_strategy_acts_without_an_action() {
    // The healer counts an attempt as a success only when its actions succeed; an "act"
    // without actions would succeed vacuously, which is how three upstream built-ins reported
    // success doing nothing.
    let decisions = all_decisions();
    for (name, verdict, actions) in &decisions {
        if *verdict == Verdict::Act {
            assert!(!actions.is_empty(), "{name} acts without an action");
        } else {
            assert!(
                actions.is_empty(),
                "{name} {verdict:?} with actions {actions:?}"
            );
        }
    }
    let verdicts: Vec<(String, Verdict)> = decisions.into_iter().map(|(n, v, _)| (n, v)).collect();
    for (name, v) in [
        ("AgentRestart", Verdict::Hold),
        ("TaskRetry", Verdict::Fail),
        ("ResourceRebalance", Verdict::Fail),
        ("GradualDegradation", Verdict::Hold),
        ("QuorumRecovery", Verdict::Decline),
    ] {
        assert!(
            verdicts.contains(&(name.to_owned(), v)),
            "{name} never {v:?}"
        );
    }
}

/// Events as the healer stores them: the strategy's JSON with `strategy` and `key` added.
fn round_trips<S: Strategy>(s: &S, events: &[S::Event], prefix: &str) {
    for e in events {
        let mut v = serde_json::to_value(e).unwrap();
        let t = s.event_type(e);
        assert!(t.starts_with(prefix), "{t} lacks the prefix {prefix}");
        assert!(v.get("at").is_some(), "{t} carries no time");
        v["strategy"] = json!(s.name());
        v["key"] = json!("k");
        let back: S::Event = serde_json::from_value(v).unwrap();
        assert_eq!(&back, e);
    }
}

#[test]
fn every_event_is_a_dated_strategy_fact_that_survives_storage() {
    let s = AgentRestart::default();
    let mut st = RestartState::default();
    let mut ev = Vec::new();
    ev.extend(step(&s, &mut st, &agent_down("a", t0()), t0()).events);
    ev.extend(step(&s, &mut st, &agent_down("a", secs(1)), secs(1)).events);
    ev.extend(s.on_result(&st, &agent_down("a", t0()), false, secs(2)));
    ev.extend(step(&s, &mut st, &agent_down("a", secs(900)), secs(900)).events);
    assert_eq!(ev.len(), 5);
    round_trips(&s, &ev, "restart_");

    let s = TaskRetry::default();
    let mut st = RetryState::default();
    let mut ev = Vec::new();
    for i in 0..4 {
        ev.extend(step(&s, &mut st, &task_timeout("t", secs(i)), secs(i)).events);
    }
    ev.extend(s.on_result(&st, &task_timeout("t", t0()), false, secs(5)));
    ev.extend(step(&s, &mut st, &task_timeout("t", secs(9_000)), secs(9_000)).events);
    round_trips(&s, &ev, "retry_");

    let s = ResourceRebalance::default();
    let mut st = Default::default();
    let mut ev = step(&s, &mut st, &exhaustion(0.9, 1.0, t0()), t0()).events;
    ev.extend(s.on_result(&st, &exhaustion(0.9, 1.0, t0()), false, secs(1)));
    ev.extend(
        s.on_signal(&st, "tokens", &usage("tokens", 0.1, 1.0), secs(2))
            .unwrap()
            .events,
    );
    round_trips(&s, &ev, "rebalance_");

    let s = QuorumRecovery::default();
    let mut ev = s
        .decide(&Default::default(), &quorum_loss(t0()), t0())
        .events;
    ev.extend(s.on_result(&Default::default(), &quorum_loss(t0()), true, t0()));
    ev.extend(s.on_result(&Default::default(), &quorum_loss(t0()), false, t0()));
    round_trips(&s, &ev, "quorum_");

    let s = GradualDegradation::default();
    let mut st = DegradationState::default();
    let mut ev = step(&s, &mut st, &exhaustion(0.97, 1.0, t0()), t0()).events;
    let failed = s.on_result(&st, &exhaustion(0.97, 1.0, t0()), false, secs(1));
    s.apply(&mut st, &failed[0]);
    ev.extend(failed);
    // The failed enforcement is sent again.
    ev.extend(step(&s, &mut st, &exhaustion(0.97, 1.0, secs(2)), secs(2)).events);
    ev.extend(
        s.on_signal(&st, "tokens", &usage("tokens", 0.1, 1.0), secs(3))
            .unwrap()
            .events,
    );
    assert_eq!(ev.len(), 4);
    round_trips(&s, &ev, "degradation_");
}

// ----- in the healer, on a real store -------------------------------------------------------

/// A fleet that records every call and fails the operations it is told to fail.
#[derive(Default)]
struct Fleet {
    agents: BTreeMap<String, Map<String, Value>>,
    calls: Vec<String>,
    failing: HashSet<&'static str>,
    spawned: u32,
}

#[derive(Default)]
struct TestCoordinator(Mutex<Fleet>);

impl TestCoordinator {
    fn with_agents(ids: &[&str]) -> Arc<Self> {
        let c = TestCoordinator::default();
        for id in ids {
            c.lock().agents.insert((*id).to_owned(), Map::new());
        }
        Arc::new(c)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Fleet> {
        self.0.lock().unwrap()
    }

    fn fail(&self, op: &'static str) {
        self.lock().failing.insert(op);
    }

    fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// Records a call; `Err` when the operation is told to fail.
    fn call(&self, op: &'static str, args: String) -> CoordResult<()> {
        let mut f = self.lock();
        f.calls.push(format!("{op}({args})"));
        if f.failing.contains(op) {
            return Err(CoordinatorError::new(format!("{op} refused")));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Coordinator for TestCoordinator {
    async fn agent_status(&self, agent_id: &str) -> CoordResult<Option<AgentStatus>> {
        self.call("agent_status", agent_id.into())?;
        Ok(self.lock().agents.get(agent_id).map(|m| AgentStatus {
            agent_id: agent_id.into(),
            state: "failed".into(),
            last_heartbeat: None,
            metadata: m.clone(),
        }))
    }
    async fn register_agent(
        &self,
        agent_id: &str,
        metadata: Map<String, Value>,
    ) -> CoordResult<()> {
        self.call("register_agent", agent_id.into())?;
        self.lock().agents.insert(agent_id.into(), metadata);
        Ok(())
    }
    async fn unregister_agent(&self, agent_id: &str) -> CoordResult<()> {
        self.call("unregister_agent", agent_id.into())?;
        self.lock().agents.remove(agent_id);
        Ok(())
    }
    async fn topology(&self) -> CoordResult<Topology> {
        self.call("topology", String::new())?;
        let n = self.lock().agents.len() as u32;
        Ok(Topology {
            agent_count: n,
            healthy_count: n,
        })
    }
    async fn pause_tasks(&self, priorities: &[Priority]) -> CoordResult<u32> {
        self.call("pause_tasks", format!("{priorities:?}"))?;
        Ok(4)
    }
    async fn resume_tasks(&self, priorities: &[Priority]) -> CoordResult<u32> {
        self.call("resume_tasks", format!("{priorities:?}"))?;
        Ok(4)
    }
    async fn set_concurrency(&self, max_per_agent: u32) -> CoordResult<()> {
        self.call("set_concurrency", max_per_agent.to_string())
    }
    async fn set_caching(&self, enabled: bool) -> CoordResult<()> {
        self.call("set_caching", enabled.to_string())
    }
    async fn set_prompt_simplification(&self, enabled: bool) -> CoordResult<()> {
        self.call("set_prompt_simplification", enabled.to_string())
    }
    async fn retry_task(
        &self,
        task_id: &str,
        agent_id: Option<&str>,
        delay_ms: u64,
    ) -> CoordResult<()> {
        self.call("retry_task", format!("{task_id}, {agent_id:?}, {delay_ms}"))
    }
    async fn spawn_agents(&self, count: u32) -> CoordResult<Vec<String>> {
        self.call("spawn_agents", count.to_string())?;
        let mut f = self.lock();
        let mut ids = Vec::new();
        for _ in 0..count {
            f.spawned += 1;
            let id = format!("spawned-{}", f.spawned);
            f.agents.insert(id.clone(), Map::new());
            ids.push(id);
        }
        Ok(ids)
    }
}

async fn store_at(path: &Path) -> (Store, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(t0()));
    let options = StoreOptions {
        clock: clock.clone(),
        ..Default::default()
    };
    (Store::open(path, options).await.unwrap(), clock)
}

async fn stream(healer: &Healer, stream_id: &str) -> Vec<RecordedEvent> {
    healer
        .store()
        .read(EventFilter::stream(stream_id))
        .map(|e| e.unwrap())
        .collect()
        .await
}

/// The failure's story as `event_type` or `event_type:decision|success`.
async fn story(healer: &Healer, f: &Failure) -> Vec<String> {
    stream(healer, &f.stream_id())
        .await
        .iter()
        .map(|e| {
            let p = &e.payload;
            match e.event_type.as_str() {
                "healing_attempted" => format!(
                    "healing_attempted:{}:{}",
                    p["strategy"].as_str().unwrap(),
                    p["decision"].as_str().unwrap()
                ),
                "action_executed" => format!(
                    "action_executed:{}:{}",
                    p["action"].as_str().unwrap(),
                    p["success"]
                ),
                "healing_completed" => format!(
                    "healing_completed:{}:{}",
                    p["strategy"].as_str().unwrap(),
                    p["success"]
                ),
                other => other.to_owned(),
            }
        })
        .collect()
}

async fn state_types(healer: &Healer, strategy: &str, key: &str) -> Vec<String> {
    stream(healer, &healstore::heal::strategy_stream(strategy, key))
        .await
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

#[tokio::test]
async fn upstream_healer_a_restart_of_an_unknown_agent_fails_and_resolves_nothing() {
    let (_dir, path) = temp_db();
    let (store, _clock) = store_at(&path).await;
    let fleet = TestCoordinator::with_agents(&["a2"]);
    let healer = Healer::builder()
        .register(&["agent_down"], AgentRestart::default())
        .coordinator(fleet.clone())
        .open(store)
        .await
        .unwrap();

    let f = agent_down("ghost", t0());
    let report = healer.heal(f.clone()).await.unwrap();
    assert!(!report.result.success);
    assert_eq!(report.attempts[0].success, Some(false));
    let err = report.attempts[0].results[0].clone().unwrap_err();
    assert!(err.contains("unknown"), "{err}");
    assert_eq!(
        story(&healer, &f).await,
        [
            "failure_detected",
            "healing_attempted:AgentRestart:act",
            "action_executed:restart_agent:false",
            "healing_completed:AgentRestart:false",
        ]
    );
    assert_eq!(
        state_types(&healer, "AgentRestart", "ghost").await,
        ["restart_scheduled", "restart_failed"]
    );
    // Nothing was unregistered or registered.
    assert_eq!(fleet.calls(), ["agent_status(ghost)"]);
    healer.close().await.unwrap();
}

#[tokio::test]
async fn healer_a_restart_resolves_and_its_backoff_survives_a_restart_of_the_healer() {
    let (_dir, path) = temp_db();
    let (store, clock) = store_at(&path).await;
    let fleet = TestCoordinator::with_agents(&["a1"]);
    let healer = Healer::builder()
        .register(&["agent_down"], AgentRestart::default())
        .coordinator(fleet.clone())
        .open(store)
        .await
        .unwrap();
    let f = agent_down("a1", t0());
    let report = healer.heal(f.clone()).await.unwrap();
    assert!(report.result.success);
    // After the restart the coordinator is asked whether the agent works again: this one
    // reports it failed, so the failure is remediated, not recovered.
    assert_eq!(
        fleet.calls(),
        [
            "agent_status(a1)",
            "unregister_agent(a1)",
            "register_agent(a1)",
            "agent_status(a1)"
        ]
    );
    assert_eq!(
        story(&healer, &f).await.last().map(String::as_str),
        Some("failure_resolved")
    );
    healer.close().await.unwrap();

    // A new process, 5 s later: the backoff is still there, read from the log.
    clock.advance(Duration::seconds(5));
    let store = Store::open(
        &path,
        StoreOptions {
            clock: clock.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let healer = Healer::builder()
        .register(&["agent_down"], AgentRestart::default())
        .coordinator(fleet.clone())
        .open(store)
        .await
        .unwrap();
    let report = healer.heal(agent_down("a1", secs(5))).await.unwrap();
    assert_eq!(report.attempts[0].decision, "held");
    assert!(!report.result.success);
    assert_eq!(fleet.calls().len(), 4, "no second restart");
    healer.close().await.unwrap();
}

#[tokio::test]
async fn healer_a_composite_chain_stops_at_the_first_success_and_records_every_attempt() {
    let (_dir, path) = temp_db();
    let (store, _clock) = store_at(&path).await;
    let fleet = TestCoordinator::with_agents(&["agent-1"]);
    fleet.fail("retry_task");
    let restart_tasks = AgentRestart::new(AgentRestartConfig {
        failure_types: vec!["task_timeout".into()],
        ..Default::default()
    });
    let chain = Composite::new()
        .with(3, QuorumRecovery::default())
        .with(1, TaskRetry::default())
        .with(2, restart_tasks);
    let healer = Healer::builder()
        .register_chain(&["task_timeout"], chain)
        .coordinator(fleet.clone())
        .open(store)
        .await
        .unwrap();

    let f = task_timeout("t1", t0());
    let report = healer.heal(f.clone()).await.unwrap();
    let tried: Vec<(&str, &str, Option<bool>)> = report
        .attempts
        .iter()
        .map(|a| (a.strategy.as_str(), a.decision.as_str(), a.success))
        .collect();
    // The retry could not be scheduled; the restart worked; the quorum was never tried.
    assert_eq!(
        tried,
        [
            ("TaskRetry", "act", Some(false)),
            ("AgentRestart", "act", Some(true)),
        ]
    );
    assert!(report.result.success);
    assert_eq!(report.result.strategy_used, "Composite[AgentRestart]");
    assert_eq!(
        story(&healer, &f).await,
        [
            "failure_detected",
            "healing_attempted:TaskRetry:act",
            "action_executed:retry_task:false",
            "healing_completed:TaskRetry:false",
            "healing_attempted:AgentRestart:act",
            "action_executed:restart_agent:true",
            "healing_completed:AgentRestart:true",
            "failure_resolved",
        ]
    );
    assert_eq!(
        state_types(&healer, "TaskRetry", "t1").await,
        ["retry_scheduled", "retry_failed"]
    );
    healer.close().await.unwrap();
}

#[tokio::test]
async fn healer_a_retry_past_the_limit_is_a_failed_attempt_until_the_task_succeeds() {
    let (_dir, path) = temp_db();
    let (store, clock) = store_at(&path).await;
    let fleet = TestCoordinator::with_agents(&["agent-1"]);
    let healer = Healer::builder()
        .register(&["task_timeout"], TaskRetry::default())
        .coordinator(fleet.clone())
        .open(store)
        .await
        .unwrap();
    for _ in 0..3 {
        let r = healer.heal(task_timeout("t1", clock.now())).await.unwrap();
        assert!(r.result.success);
        clock.advance(Duration::seconds(10));
    }
    let f = task_timeout("t1", clock.now());
    let r = healer.heal(f.clone()).await.unwrap();
    assert!(!r.result.success);
    assert_eq!(r.attempts[0].decision, "failed");
    assert_eq!(r.attempts[0].reason, "retry limit reached: 3 attempts");
    assert_eq!(
        story(&healer, &f).await,
        [
            "failure_detected",
            "healing_attempted:TaskRetry:failed",
            "healing_completed:TaskRetry:false",
        ]
    );
    let retries = fleet
        .calls()
        .iter()
        .filter(|c| c.starts_with("retry_task"))
        .count();
    assert_eq!(retries, 3);

    // The task succeeds somewhere: its attempts start over.
    let s = healer
        .record_success("agent-1", Some("t1"), clock.now())
        .await
        .unwrap();
    assert_eq!(s.reactions.len(), 1);
    assert_eq!(s.reactions[0].events, ["retry_attempts_reset"]);
    let r = healer.heal(task_timeout("t1", clock.now())).await.unwrap();
    assert!(r.result.success);
    healer.close().await.unwrap();
}

#[tokio::test]
async fn healer_degradation_actions_reach_the_coordinator_and_recovery_undoes_them() {
    let (_dir, path) = temp_db();
    let (store, clock) = store_at(&path).await;
    let fleet = TestCoordinator::with_agents(&["agent-1"]);
    let healer = Healer::builder()
        .register(&["token_exhaustion"], GradualDegradation::default())
        .coordinator(fleet.clone())
        .open(store)
        .await
        .unwrap();

    let f = exhaustion(97_000.0, 100_000.0, t0());
    let r = healer.heal(f.clone()).await.unwrap();
    assert!(r.result.success);
    assert_eq!(
        fleet.calls(),
        [
            "pause_tasks([Low, Background])",
            "set_concurrency(2)",
            "set_caching(true)",
            "set_prompt_simplification(true)",
        ]
    );
    assert_eq!(story(&healer, &f).await.last().unwrap(), "failure_resolved");

    clock.advance(Duration::minutes(1));
    for _ in 0..4 {
        healer
            .record_usage("tokens", 10_000.0, 100_000.0, clock.now())
            .await
            .unwrap();
    }
    assert_eq!(
        fleet.calls()[4..],
        [
            "set_prompt_simplification(false)",
            "set_caching(false)",
            "set_concurrency(10)",
            "resume_tasks([Low, Background])",
        ]
    );
    let states = healer.states(Some("GradualDegradation")).await.unwrap();
    assert_eq!(states[0].key, "tokens");
    assert_eq!(states[0].state["level_name"], json!("FULL"));
    healer.close().await.unwrap();
}

#[tokio::test]
async fn healer_a_refused_degradation_is_a_failed_attempt() {
    let (_dir, path) = temp_db();
    let (store, _clock) = store_at(&path).await;
    let fleet = TestCoordinator::with_agents(&[]);
    fleet.fail("set_concurrency");
    let healer = Healer::builder()
        .register(&["token_exhaustion"], GradualDegradation::default())
        .coordinator(fleet.clone())
        .open(store)
        .await
        .unwrap();
    let f = exhaustion(0.92, 1.0, t0());
    let r = healer.heal(f.clone()).await.unwrap();
    assert!(!r.result.success);
    // Later actions depend on earlier ones: the healer stops at the first refusal.
    assert_eq!(
        fleet.calls(),
        ["pause_tasks([Low, Background])", "set_concurrency(2)"]
    );
    assert!(
        !story(&healer, &f)
            .await
            .contains(&"failure_resolved".to_owned())
    );
    assert_eq!(
        state_types(&healer, "GradualDegradation", "tokens").await,
        ["degradation_raised", "degradation_enforcement_failed"]
    );
    healer.close().await.unwrap();
}

#[tokio::test]
async fn healer_quorum_recovery_spawns_what_the_topology_lacks() {
    let (_dir, path) = temp_db();
    let (store, _clock) = store_at(&path).await;
    let fleet = TestCoordinator::with_agents(&["a1"]);
    let healer = Healer::builder()
        .register(&["quorum_loss"], QuorumRecovery::default())
        .coordinator(fleet.clone())
        .open(store)
        .await
        .unwrap();
    let r = healer.heal(quorum_loss(t0())).await.unwrap();
    assert!(r.result.success);
    assert_eq!(fleet.calls(), ["topology()", "spawn_agents(2)"]);
    assert_eq!(
        state_types(&healer, "QuorumRecovery", "fleet").await,
        ["quorum_recovery_requested", "quorum_recovered"]
    );
    // Met already: the action runs and reports so; nothing is spawned.
    let r = healer.heal(quorum_loss(t0())).await.unwrap();
    assert!(r.result.success);
    assert_eq!(fleet.calls()[2..], ["topology()"]);
    healer.close().await.unwrap();
}

#[tokio::test]
async fn upstream_healer_scenarios_with_outcomes_reported_by_the_caller() {
    // The upstream tests: two restarts that succeeded in 150 ms and 175 ms, a retry that
    // failed after 250 ms. Without a coordinator the actions are delegated and the caller
    // reports how they went.
    let (_dir, path) = temp_db();
    let (store, clock) = store_at(&path).await;
    let healer = Healer::builder()
        .register(&["agent_down"], AgentRestart::default())
        .register(&["task_timeout"], TaskRetry::default())
        .open(store)
        .await
        .unwrap();

    let mut outcomes = Vec::new();
    for (f, success, ms) in [
        (agent_down("agent-1", t0()), true, 150),
        (agent_down("agent-2", t0()), true, 175),
        (task_timeout("task-1", t0()), false, 250),
    ] {
        let r = healer.heal(f.clone()).await.unwrap();
        assert_eq!(r.attempts[0].decision, "delegated");
        assert_eq!(r.delegated.len(), 1);
        assert!(!r.result.success, "nothing is claimed before the outcome");
        let at = clock.now() + Duration::milliseconds(ms);
        let o = healer
            .record_outcome(&f.failure_id, success, Some(ms), at)
            .await
            .unwrap();
        assert_eq!((o.success, o.duration_ms), (success, ms));
        assert_eq!(o.time_to_remediate_ms, success.then_some(ms));
        outcomes.push((f, success, ms));
    }
    for (f, success, ms) in &outcomes {
        let events = stream(&healer, &f.stream_id()).await;
        let done = events
            .iter()
            .find(|e| e.event_type == "healing_completed")
            .unwrap();
        assert_eq!(done.payload["success"], json!(success));
        assert_eq!(done.payload["duration_ms"], json!(ms));
        assert_eq!(
            events.iter().any(|e| e.event_type == "failure_resolved"),
            *success
        );
    }
    assert_eq!(
        state_types(&healer, "TaskRetry", "task-1").await,
        ["retry_scheduled", "retry_failed"]
    );
    assert_eq!(
        state_types(&healer, "AgentRestart", "agent-1").await,
        ["restart_scheduled"]
    );
    healer.close().await.unwrap();
}
