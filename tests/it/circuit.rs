//! The circuit breaker, as a specification: given these events, when this failure (or signal)
//! arrives at this time, then this decision, these events and these actions. Most tests call
//! the strategy directly with hand-made times; the last ones run it inside a healer on a real
//! store, across restarts and processes.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use healstore::heal::strategies::circuit::{
    CircuitBreaker, CircuitBreakerConfig, CircuitEvent, CircuitState, CircuitStatus, Window,
};
use healstore::heal::{
    Action, Decision, Failure, Healer, Reaction, Severity, Signal, Strategy, Verdict,
};
use healstore::{HealEvent, ManualClock, Store, StoreOptions};
use serde_json::{Value, json};

use crate::common::{read_all, t0, temp_db};

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// `t0` plus some seconds.
fn at(secs: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(secs)
}

fn ms(ms: i64) -> Duration {
    Duration::milliseconds(ms)
}

fn down(agent: &str, now: DateTime<Utc>) -> Failure {
    Failure::new("agent_down", Severity::High, now).with_agent(agent)
}

/// One circuit breaker and the state of one circuit, fed the events of its own decisions and
/// reactions exactly as the healer would (through their stored JSON form).
struct Given {
    cb: CircuitBreaker,
    state: CircuitState,
    /// Every event recorded so far, in order.
    log: Vec<CircuitEvent>,
}

impl Given {
    fn breaker() -> Given {
        Given::with(CircuitBreakerConfig::default())
    }

    fn with(config: CircuitBreakerConfig) -> Given {
        Given {
            cb: CircuitBreaker::try_new(config).expect("a valid configuration"),
            state: CircuitState::default(),
            log: Vec::new(),
        }
    }

    fn record(&mut self, events: &[CircuitEvent]) {
        for e in events {
            // Through JSON, with the fields the healer adds, as a stored event is folded.
            let mut v = serde_json::to_value(e).unwrap();
            v["strategy"] = json!("CircuitBreaker");
            v["key"] = json!("whatever");
            let back: CircuitEvent = serde_json::from_value(v).unwrap();
            assert_eq!(&back, e, "events survive their stored form");
            self.cb.apply(&mut self.state, &back);
            self.log.push(back);
        }
    }

    /// When this failure arrives at `now`: the decision, its events recorded.
    fn failure(&mut self, f: Failure, now: DateTime<Utc>) -> Decision<CircuitEvent> {
        let d = self.cb.decide(&self.state, &f, now);
        self.record(&d.events);
        d
    }

    fn fails(&mut self, agent: &str, now: DateTime<Utc>) -> Decision<CircuitEvent> {
        self.failure(down(agent, now), now)
    }

    fn signal(
        &mut self,
        key: &str,
        s: Signal,
        now: DateTime<Utc>,
    ) -> Option<Reaction<CircuitEvent>> {
        let r = self.cb.on_signal(&self.state, key, &s, now);
        if let Some(r) = &r {
            self.record(&r.events);
        }
        r
    }

    fn succeeds(&mut self, agent: &str, now: DateTime<Utc>) -> Reaction<CircuitEvent> {
        let s = Signal::AgentSucceeded {
            agent_id: agent.into(),
            task_id: None,
        };
        self.signal(agent, s, now)
            .expect("a success always gets a reaction")
    }

    fn permit(&mut self, agent: &str, now: DateTime<Utc>) -> Reaction<CircuitEvent> {
        let s = Signal::Permit {
            agent_id: agent.into(),
        };
        self.signal(agent, s, now)
            .expect("a permit always gets an answer")
    }

    fn tick(&mut self, key: &str, now: DateTime<Utc>) -> Option<Reaction<CircuitEvent>> {
        self.signal(key, Signal::Tick, now)
    }

    fn command(
        &mut self,
        key: &str,
        command: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Reaction<CircuitEvent> {
        let s = Signal::Command {
            key: key.into(),
            command: command.into(),
            reason: reason.into(),
        };
        self.signal(key, s, now)
            .expect("a command always gets an answer")
    }

    /// `n` failures of `agent`, one a second from `start`; returns the last decision.
    fn fails_times(&mut self, agent: &str, n: i64, start: i64) -> Decision<CircuitEvent> {
        let mut last = None;
        for i in 0..n {
            last = Some(self.fails(agent, at(start + i)));
        }
        last.expect("at least one failure")
    }

    fn status(&self, now: DateTime<Utc>) -> CircuitStatus {
        self.cb.status_at(&self.state, now)
    }

    fn describe(&self, now: DateTime<Utc>) -> Value {
        self.cb.describe(&self.state, now)
    }
}

fn types<E: serde::Serialize>(events: &[E]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            serde_json::to_value(e).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// `(from, to)` of every transition among the events.
fn transitions(events: &[CircuitEvent]) -> Vec<(CircuitStatus, CircuitStatus)> {
    events
        .iter()
        .filter_map(|e| match e {
            CircuitEvent::CircuitTransitioned { from, to, .. } => Some((*from, *to)),
            _ => None,
        })
        .collect()
}

fn unregister(agent: &str) -> Action {
    Action::UnregisterAgent {
        agent_id: agent.into(),
    }
}

fn trial_registration(agent: &str) -> Action {
    Action::RegisterAgent {
        agent_id: agent.into(),
        metadata: json!({"circuit_state": "half_open", "test_mode": true})
            .as_object()
            .unwrap()
            .clone(),
    }
}

/// The stored deadline of the last opening.
fn open_until(g: &Given) -> DateTime<Utc> {
    g.state.open_until.expect("the circuit is open")
}

/// Opens `agent`'s circuit at `at(0)` .. `at(4)` with the defaults: the deadline is `at(64)`.
fn opened(agent: &str) -> Given {
    let mut g = Given::breaker();
    g.fails_times(agent, 5, 0);
    assert_eq!(g.status(at(4)), CircuitStatus::Open);
    assert_eq!(open_until(&g), at(64));
    g
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

#[test]
fn the_defaults_are_the_seed_numbers() {
    let c = CircuitBreakerConfig::default();

    assert_eq!(c.failure_threshold, 5, "five failures open the circuit");
    assert_eq!(c.success_threshold, 2, "two successes close it");
    assert_eq!(c.open_ms, 60_000, "it stays open a minute");
    assert_eq!(c.half_open_max_calls, 3, "three trial calls in half-open");
    assert_eq!(c.backoff_multiplier, 2.0);
    assert_eq!(c.max_open_ms, 600_000);
    assert_eq!(c.decay_ms, 600_000);
    assert_eq!(c.failure_rate_threshold, None);
    assert_eq!(c.window, Window::Count { size: 20 });
    assert_eq!(c.minimum_calls, 10);
    assert_eq!(
        c.failure_types,
        [
            "agent_failed",
            "task_timeout",
            "execution_error",
            "agent_down",
            "heartbeat_failed"
        ]
    );
    c.validate().unwrap();
    assert_eq!(CircuitBreaker::default().name(), "CircuitBreaker");
}

#[test]
fn the_configuration_reads_from_toml_with_defaults_and_refuses_unknown_fields() {
    let empty: CircuitBreakerConfig = toml::from_str("").unwrap();
    assert_eq!(empty, CircuitBreakerConfig::default());

    let c: CircuitBreakerConfig = toml::from_str(
        r#"
        failure_types = ["agent_down"]
        failure_threshold = 3
        open_ms = 30000
        backoff_multiplier = 3
        failure_rate_threshold = 0.5
        window = { kind = "time", window_ms = 120000 }
        minimum_calls = 4
        "#,
    )
    .unwrap();
    assert_eq!(c.failure_threshold, 3);
    assert_eq!(c.backoff_multiplier, 3.0);
    assert_eq!(c.failure_rate_threshold, Some(0.5));
    assert_eq!(c.window, Window::Time { window_ms: 120_000 });
    assert_eq!(c.success_threshold, 2, "unset fields keep their defaults");

    // What is written reads back the same.
    let text = toml::to_string(&c).unwrap();
    assert_eq!(toml::from_str::<CircuitBreakerConfig>(&text).unwrap(), c);

    for bad in [
        "failure_treshold = 3",
        "open_seconds = 60",
        "window = { kind = \"count\", size = 20, extra = 1 }",
        "window = { kind = \"sliding\" }",
    ] {
        assert!(
            toml::from_str::<CircuitBreakerConfig>(bad).is_err(),
            "{bad} should be refused"
        );
    }
}

#[test]
fn settings_that_could_never_trip_or_recover_are_refused() {
    let base = CircuitBreakerConfig::default;
    let cases = [
        (
            CircuitBreakerConfig {
                failure_threshold: 0,
                ..base()
            },
            "failure_threshold",
        ),
        (
            CircuitBreakerConfig {
                success_threshold: 4,
                ..base()
            },
            "half_open_max_calls",
        ),
        (
            CircuitBreakerConfig {
                max_open_ms: 1_000,
                ..base()
            },
            "max_open_ms",
        ),
        (
            CircuitBreakerConfig {
                backoff_multiplier: 0.5,
                ..base()
            },
            "backoff_multiplier",
        ),
        (
            CircuitBreakerConfig {
                backoff_multiplier: f64::NAN,
                ..base()
            },
            "backoff_multiplier",
        ),
        (
            CircuitBreakerConfig {
                failure_rate_threshold: Some(1.5),
                ..base()
            },
            "failure_rate_threshold",
        ),
        (
            CircuitBreakerConfig {
                failure_rate_threshold: Some(0.5),
                window: Window::Count { size: 5 },
                ..base()
            },
            "minimum_calls",
        ),
        (
            CircuitBreakerConfig {
                window: Window::Time { window_ms: 0 },
                ..base()
            },
            "window",
        ),
        (
            CircuitBreakerConfig {
                failure_types: vec![],
                ..base()
            },
            "failure_types",
        ),
    ];
    for (config, field) in cases {
        let err = config.validate().expect_err(field).to_string();
        assert!(err.contains(field), "{err:?} should name {field}");
        assert!(CircuitBreaker::try_new(config).is_err());
    }
}

#[test]
fn only_the_configured_failure_types_are_counted() {
    let cb = CircuitBreaker::new(CircuitBreakerConfig {
        failure_types: vec!["agent_down".into()],
        ..CircuitBreakerConfig::default()
    });
    assert!(cb.can_heal(&down("a", t0())));
    assert!(!cb.can_heal(&Failure::new("task_failed", Severity::Low, t0()).with_agent("a")));
}

// ---------------------------------------------------------------------------------------------
// Closed
// ---------------------------------------------------------------------------------------------

#[test]
fn below_the_threshold_a_failure_is_counted_and_declined_so_a_chain_goes_on() {
    let mut g = Given::breaker();

    for i in 1..=4 {
        let d = g.fails("a", at(i));
        assert_eq!(d.verdict, Verdict::Decline, "failure {i}");
        assert_eq!(types(&d.events), ["circuit_failure_counted"]);
        assert!(d.actions.is_empty());
        assert_eq!(d.details["consecutive_failures"], json!(i));
        assert_eq!(d.details["failure_threshold"], json!(5));
    }
    assert!(g.log.len() == 4);
    let view = g.describe(at(4));
    assert_eq!(view["state"], "closed");
    assert_eq!(view["consecutive_failures"], 4);
    assert_eq!(view["next_transition_at"], Value::Null);
}

#[test]
fn the_circuit_opens_at_exactly_the_fifth_consecutive_failure_and_unregisters_the_agent() {
    let mut g = Given::breaker();
    g.fails_times("a", 4, 0);

    let d = g.fails("a", at(4));

    assert_eq!(d.verdict, Verdict::Act);
    assert_eq!(
        types(&d.events),
        ["circuit_failure_counted", "circuit_transitioned"]
    );
    assert_eq!(
        transitions(&d.events),
        [(CircuitStatus::Closed, CircuitStatus::Open)]
    );
    assert_eq!(d.actions, [unregister("a")]);
    assert_eq!(d.details["consecutive_failures"], 5);
    assert_eq!(d.details["trigger"], "consecutive_failures");
    assert_eq!(d.details["reopen_count"], 0);
    assert_eq!(d.details["open_ms"], 60_000);
    assert_eq!(d.details["open_until"], "2026-11-01T12:01:04.000000Z");
    assert!(d.reason.contains("5 failures in a row"), "{}", d.reason);
    // The transition records the same numbers, for the audit.
    let CircuitEvent::CircuitTransitioned {
        details, agent_id, ..
    } = &d.events[1]
    else {
        panic!("not a transition")
    };
    assert_eq!(agent_id.as_deref(), Some("a"));
    assert_eq!(details["consecutive_failures"], 5);
    assert_eq!(details["window_calls"], 5);
    assert_eq!(details["failure_rate"], 1.0);

    let view = g.describe(at(4));
    assert_eq!(view["state"], "open");
    assert_eq!(view["agent_id"], "a");
    assert_eq!(view["opened_at"], "2026-11-01T12:00:04.000000Z");
    assert_eq!(view["next_transition_at"], "2026-11-01T12:01:04.000000Z");
    assert!(g.cb.disables_agent(&g.state, at(4)));
}

#[test]
fn a_success_resets_the_run_of_failures() {
    // Upstream regression: successes were never counted, so five failures in an agent's whole
    // life opened its circuit.
    let mut g = Given::breaker();
    g.fails_times("a", 4, 0);

    let r = g.succeeds("a", at(10));
    assert_eq!(types(&r.events), ["circuit_success_counted"]);
    assert_eq!(g.state.consecutive_failures, 0);

    for i in 0..4 {
        assert_eq!(g.fails("a", at(20 + i)).verdict, Verdict::Decline);
    }
    assert_eq!(g.status(at(23)), CircuitStatus::Closed);
    assert_eq!(g.fails("a", at(24)).verdict, Verdict::Act, "five in a row");
}

#[test]
fn the_failure_rate_over_a_count_window_trips_only_once_minimum_calls_are_in() {
    let mut g = Given::with(CircuitBreakerConfig {
        failure_threshold: 100,
        failure_rate_threshold: Some(0.5),
        window: Window::Count { size: 10 },
        minimum_calls: 6,
        ..CircuitBreakerConfig::default()
    });

    // F S F S F: 3 failures in 5 calls (60 %), but fewer than 6 calls: no verdict on the rate.
    g.fails("a", at(1));
    g.succeeds("a", at(2));
    g.fails("a", at(3));
    g.succeeds("a", at(4));
    let d = g.fails("a", at(5));
    assert_eq!(d.verdict, Verdict::Decline);
    assert_eq!(d.details["window_calls"], 5);
    assert!(d.reason.contains("needed to judge"), "{}", d.reason);

    // S: 6 calls, 50 %; a success never trips. Then F: 4 of 7 (57 %) >= 50 %: open.
    g.succeeds("a", at(6));
    let d = g.fails("a", at(7));
    assert_eq!(d.verdict, Verdict::Act);
    assert_eq!(d.details["trigger"], "failure_rate");
    assert_eq!(d.details["window_calls"], 7);
    assert_eq!(d.details["window_failures"], 4);
    assert_eq!(d.actions, [unregister("a")]);
    assert_eq!(g.status(at(7)), CircuitStatus::Open);
}

#[test]
fn a_count_window_forgets_outcomes_older_than_its_size() {
    let mut g = Given::with(CircuitBreakerConfig {
        failure_threshold: 100,
        failure_rate_threshold: Some(0.5),
        window: Window::Count { size: 4 },
        minimum_calls: 4,
        ..CircuitBreakerConfig::default()
    });
    // F F F S S S, then F: the last 4 are S S S F (25 %), though 4 of 7 calls failed overall.
    for i in 0..3 {
        g.fails("a", at(i));
    }
    for i in 3..6 {
        g.succeeds("a", at(i));
    }
    let d = g.fails("a", at(6));
    assert_eq!(d.verdict, Verdict::Decline);
    assert_eq!(d.details["window_calls"], 4);
    assert_eq!(d.details["window_failures"], 1);

    // Memory stays bounded by the window's size.
    for i in 0..100 {
        g.succeeds("a", at(10 + i));
    }
    assert_eq!(g.state.window.len(), 4);
}

#[test]
fn the_failure_rate_over_a_time_window_counts_only_recent_calls() {
    let mut g = Given::with(CircuitBreakerConfig {
        failure_threshold: 100,
        failure_rate_threshold: Some(0.5),
        window: Window::Time { window_ms: 60_000 },
        minimum_calls: 4,
        ..CircuitBreakerConfig::default()
    });
    for s in [0, 10, 20] {
        g.fails("a", at(s));
    }
    // A minute later those three have left the window: one call is no verdict.
    let d = g.fails("a", at(100));
    assert_eq!(d.verdict, Verdict::Decline);
    assert_eq!(d.details["window_calls"], 1);

    g.succeeds("a", at(101));
    assert_eq!(g.fails("a", at(102)).verdict, Verdict::Decline, "3 calls");
    let d = g.fails("a", at(103));
    assert_eq!(
        d.verdict,
        Verdict::Act,
        "3 failures in 4 calls within a minute"
    );
    assert_eq!(d.details["window_calls"], 4);
    assert_eq!(d.details["window_failures"], 3);
}

#[test]
fn a_time_window_is_bounded_in_memory_however_busy_the_agent() {
    let mut g = Given::with(CircuitBreakerConfig {
        window: Window::Time {
            window_ms: 3_600_000,
        },
        // The window is only kept when a rate can trip the breaker.
        failure_rate_threshold: Some(0.99),
        ..CircuitBreakerConfig::default()
    });
    for i in 0..12_000 {
        g.succeeds("a", t0() + ms(i));
    }
    assert_eq!(g.state.window.len(), 10_000);
    // Entries out of the window's time are pruned as newer ones arrive.
    g.succeeds("a", t0() + Duration::hours(2));
    assert_eq!(g.state.window.len(), 1);
}

#[test]
fn a_failure_for_an_agent_never_seen_before_is_simply_the_first_one() {
    // Upstream regression: recording a failure for an unknown agent crashed.
    let g = Given::breaker();
    let d =
        g.cb.decide(&CircuitState::default(), &down("new-agent", at(0)), at(0));
    assert_eq!(d.verdict, Verdict::Decline);
    assert_eq!(d.details["consecutive_failures"], 1);

    let mut g = Given::breaker();
    assert_eq!(g.permit("stranger", at(0)).permitted, Some(true));
    // A success of a healthy agent changes nothing a decision depends on: no event.
    assert!(g.succeeds("stranger", at(0)).events.is_empty());
    assert_eq!(g.tick("stranger", at(0)), None);
}

#[test]
fn agentless_failures_have_one_circuit_per_resource() {
    let cb = CircuitBreaker::new(CircuitBreakerConfig {
        failure_types: vec!["resource_exhaustion".into(), "quorum_loss".into()],
        ..CircuitBreakerConfig::default()
    });
    let mem = Failure::new("resource_exhaustion", Severity::High, at(0))
        .with_meta("resource_type", "memory");
    let quorum = Failure::new("quorum_loss", Severity::High, at(0));
    assert_eq!(cb.key(&mem), "resource:memory");
    assert_eq!(cb.key(&quorum), "failure_type:quorum_loss");
    assert_eq!(cb.key(&down("a", at(0))), "a");

    // Tripping a resource's circuit isolates no agent.
    let mut g = Given::with(cb.config().clone());
    let mut last = None;
    for i in 0..5 {
        last = Some(g.failure(mem.clone().with_id(format!("m-{i}")), at(i)));
    }
    let d = last.unwrap();
    assert_eq!(d.verdict, Verdict::Act);
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    let CircuitEvent::CircuitTransitioned {
        circuit, agent_id, ..
    } = &d.events[1]
    else {
        panic!("not a transition")
    };
    assert_eq!(circuit, "resource:memory");
    assert_eq!(agent_id, &None);
    assert_eq!(g.describe(at(4))["agent_id"], Value::Null);
    assert!(
        !g.cb.disables_agent(&g.state, at(4)),
        "no agent is disabled"
    );
    assert_eq!(g.tick("resource:memory", at(64)).unwrap().actions, []);
}

// ---------------------------------------------------------------------------------------------
// Open
// ---------------------------------------------------------------------------------------------

#[test]
fn an_open_circuit_rejects_calls_and_writes_nothing_for_them() {
    let mut g = opened("a");
    let before = g.log.len();

    for s in [5, 30, 63] {
        let r = g.permit("a", at(s));
        assert_eq!(r.permitted, Some(false), "at {s} s");
        assert!(r.events.is_empty());
        assert!(r.reason.contains("open until"), "{}", r.reason);
    }
    assert_eq!(g.log.len(), before);
    // A closed circuit answers without writing either.
    let mut fresh = Given::breaker();
    let r = fresh.permit("b", at(0));
    assert_eq!((r.permitted, r.events.len()), (Some(true), 0));
}

#[test]
fn failures_while_open_are_counted_but_never_move_the_deadline() {
    let mut g = opened("a");

    for s in [10, 30, 50, 63] {
        let d = g.fails("a", at(s));
        assert_eq!(d.verdict, Verdict::Hold, "at {s} s");
        assert_eq!(types(&d.events), ["circuit_failure_counted"]);
        assert!(d.actions.is_empty());
        assert!(
            d.reason.contains("isolated until 2026-11-01T12:01:04"),
            "{}",
            d.reason
        );
    }
    assert_eq!(open_until(&g), at(64), "the deadline did not move");
    assert_eq!(g.state.consecutive_failures, 9);
    assert_eq!(g.status(at(64)), CircuitStatus::HalfOpen);
}

#[test]
fn a_success_while_open_is_counted_without_a_transition() {
    let mut g = opened("a");
    let r = g.succeeds("a", at(30));
    assert_eq!(types(&r.events), ["circuit_success_counted"]);
    assert_eq!(g.status(at(30)), CircuitStatus::Open);
    assert_eq!(open_until(&g), at(64));
}

#[test]
fn past_the_deadline_the_circuit_is_half_open_even_with_nothing_recorded() {
    // Nothing ran between the opening and now (the process was down): the view at `now`
    // still tells the truth.
    let g = opened("a");
    let deadline = at(64);

    let before = g.describe(deadline - ms(1));
    assert_eq!(before["state"], "open");
    assert_eq!(before["next_transition_at"], "2026-11-01T12:01:04.000000Z");
    assert!(g.cb.disables_agent(&g.state, deadline - ms(1)));

    for now in [deadline, deadline + Duration::days(3)] {
        let view = g.describe(now);
        assert_eq!(view["state"], "half_open");
        assert_eq!(view["recorded_state"], "open");
        assert_eq!(view["next_transition_at"], Value::Null);
        assert_eq!(view["half_open"]["trials_started"], 0);
        assert!(!g.cb.disables_agent(&g.state, now));
    }
}

#[test]
fn a_tick_past_the_deadline_records_half_open_and_registers_the_agent_for_trials() {
    let mut g = opened("a");
    assert_eq!(g.tick("a", at(63)), None, "not due yet");

    let r = g.tick("a", at(64)).expect("due");
    assert_eq!(
        transitions(&r.events),
        [(CircuitStatus::Open, CircuitStatus::HalfOpen)]
    );
    assert_eq!(r.actions, [trial_registration("a")]);
    assert_eq!(g.state.state, CircuitStatus::HalfOpen);

    assert_eq!(g.tick("a", at(65)), None, "already recorded");
    let mut closed = Given::breaker();
    closed.fails("b", at(0));
    assert_eq!(closed.tick("b", at(1000)), None);
}

// ---------------------------------------------------------------------------------------------
// Half-open
// ---------------------------------------------------------------------------------------------

#[test]
fn half_open_admits_exactly_three_trial_calls_then_rejects() {
    // Upstream regression: half-open re-opened on the very next call, so its limit of trial
    // calls was never reached.
    let mut g = opened("a");

    let first = g.permit("a", at(70));
    assert_eq!(first.permitted, Some(true));
    assert_eq!(
        types(&first.events),
        ["circuit_transitioned", "circuit_trial_started"],
        "the half-open period is recorded before its first trial"
    );
    assert_eq!(first.actions, [trial_registration("a")]);
    for s in [71, 72] {
        let r = g.permit("a", at(s));
        assert_eq!(r.permitted, Some(true));
        assert_eq!(types(&r.events), ["circuit_trial_started"]);
        assert!(r.actions.is_empty());
    }
    assert_eq!(g.describe(at(72))["half_open"]["trials_started"], 3);

    for s in [73, 100, 1000] {
        let r = g.permit("a", at(s));
        assert_eq!(r.permitted, Some(false), "at {s} s");
        assert!(r.events.is_empty());
        assert!(r.reason.contains("all 3 trial calls"), "{}", r.reason);
    }
}

#[test]
fn two_successes_in_half_open_close_the_circuit() {
    let mut g = opened("a");
    g.tick("a", at(64));
    g.permit("a", at(65));
    g.permit("a", at(65));

    let r = g.succeeds("a", at(66));
    assert_eq!(types(&r.events), ["circuit_success_counted"]);
    assert_eq!(g.status(at(66)), CircuitStatus::HalfOpen);
    assert_eq!(g.describe(at(66))["half_open"]["successes"], 1);

    let r = g.succeeds("a", at(67));
    assert_eq!(
        types(&r.events),
        ["circuit_success_counted", "circuit_transitioned"]
    );
    assert_eq!(
        transitions(&r.events),
        [(CircuitStatus::HalfOpen, CircuitStatus::Closed)]
    );
    assert!(r.reason.contains("2 of 2 trial successes"), "{}", r.reason);
    assert!(
        r.actions.is_empty(),
        "the agent was registered for its trial"
    );

    let view = g.describe(at(67));
    assert_eq!(view["state"], "closed");
    assert_eq!(view["consecutive_failures"], 0);
    assert_eq!(view["window"]["calls"], 0, "a closed circuit judges afresh");
    assert_eq!(g.permit("a", at(68)).permitted, Some(true));
}

#[test]
fn a_success_past_an_unrecorded_deadline_records_half_open_first() {
    let mut g = opened("a");
    let r = g.succeeds("a", at(100));
    assert_eq!(
        types(&r.events),
        ["circuit_transitioned", "circuit_success_counted"]
    );
    assert_eq!(r.actions, [trial_registration("a")]);
    assert_eq!(g.describe(at(100))["half_open"]["successes"], 1);
}

#[test]
fn a_failure_in_half_open_reopens_for_longer_each_time_up_to_the_cap() {
    let mut g = opened("a");
    let mut now = open_until(&g);
    // 60 s for the first opening, then 120, 240, 480, and the 600 s cap.
    for (level, expected_s) in [(1, 120), (2, 240), (3, 480), (4, 600), (5, 600)] {
        let d = g.fails("a", now);

        assert_eq!(d.verdict, Verdict::Act, "re-open {level}");
        assert_eq!(
            transitions(&d.events),
            [
                (CircuitStatus::Open, CircuitStatus::HalfOpen),
                (CircuitStatus::HalfOpen, CircuitStatus::Open)
            ],
            "the effective half-open period is recorded first"
        );
        assert_eq!(d.actions, [unregister("a")]);
        assert_eq!(d.details["reopen_count"], level);
        assert_eq!(d.details["open_ms"], expected_s * 1000);
        assert_eq!(g.state.reopen_count, level);
        assert_eq!(open_until(&g), now + Duration::seconds(expected_s));
        assert_eq!(g.describe(now)["reopen_count"], level);
        now = open_until(&g);
    }
}

#[test]
fn a_failed_trial_after_a_recorded_half_open_reopens_without_a_second_half_open_record() {
    let mut g = opened("a");
    g.tick("a", at(64));
    g.permit("a", at(65));
    g.succeeds("a", at(66));

    let d = g.fails("a", at(67));
    assert_eq!(
        transitions(&d.events),
        [(CircuitStatus::HalfOpen, CircuitStatus::Open)]
    );
    assert_eq!(d.details["trial_successes"], 1);
    assert_eq!(open_until(&g), at(67 + 120));
}

// ---------------------------------------------------------------------------------------------
// Escalation memory
// ---------------------------------------------------------------------------------------------

/// A circuit that re-opened twice (level 2), then closed after two trial successes at the
/// returned instant.
fn escalated_then_closed() -> (Given, DateTime<Utc>) {
    let mut g = opened("a");
    g.fails("a", open_until(&g)); // level 1
    g.fails("a", open_until(&g)); // level 2
    let due = open_until(&g);
    g.succeeds("a", due);
    g.succeeds("a", due + ms(1));
    assert_eq!(g.status(due + ms(1)), CircuitStatus::Closed);
    assert_eq!(g.state.reopen_count, 2, "closing keeps the escalation");
    (g, due + ms(1))
}

#[test]
fn the_reopen_count_decays_one_level_per_healthy_decay_period() {
    let (g, closed_at) = escalated_then_closed();
    let level = |after: Duration| g.describe(closed_at + after)["reopen_count"].clone();

    assert_eq!(level(Duration::minutes(9)), 2);
    assert_eq!(level(Duration::minutes(10)), 1);
    assert_eq!(level(Duration::minutes(20)), 0);
    assert_eq!(level(Duration::days(30)), 0);
}

#[test]
fn a_failure_restarts_the_healthy_period_but_keeps_the_decay_earned() {
    let (mut g, closed_at) = escalated_then_closed();

    let d = g.fails("a", closed_at + Duration::minutes(15));
    assert_eq!(d.verdict, Verdict::Decline);
    assert_eq!(
        types(&d.events),
        ["circuit_reopen_count_decayed", "circuit_failure_counted"]
    );
    assert_eq!(g.state.reopen_count, 1);
    let level = |after: Duration| g.describe(closed_at + after)["reopen_count"].clone();
    assert_eq!(
        level(Duration::minutes(24)),
        1,
        "healthy for 9 minutes only"
    );
    assert_eq!(level(Duration::minutes(25)), 0);
}

#[test]
fn tripping_again_before_the_escalation_decayed_opens_for_longer() {
    let (mut g, closed_at) = escalated_then_closed();
    // Five failures 11 minutes after closing: one level has decayed (2 -> 1): 120 s.
    let start = closed_at + Duration::minutes(11);
    let mut d = None;
    for i in 0..5 {
        d = Some(g.fails("a", start + Duration::seconds(i)));
    }
    let d = d.unwrap();
    assert_eq!(d.verdict, Verdict::Act);
    assert_eq!(d.details["reopen_count"], 1);
    assert_eq!(d.details["open_ms"], 120_000);
    assert_eq!(
        open_until(&g),
        start + Duration::seconds(4) + Duration::seconds(120)
    );
}

// ---------------------------------------------------------------------------------------------
// Operator commands
// ---------------------------------------------------------------------------------------------

#[test]
fn force_open_isolates_until_an_operator_closes_the_circuit() {
    let mut g = Given::breaker();
    g.fails("a", at(0));

    let r = g.command("a", "open", "bad deploy on a", at(1));
    assert_eq!(
        transitions(&r.events),
        [(CircuitStatus::Closed, CircuitStatus::ForcedOpen)]
    );
    assert_eq!(r.actions, [unregister("a")]);
    let CircuitEvent::CircuitTransitioned {
        reason, details, ..
    } = &r.events[0]
    else {
        panic!("not a transition")
    };
    assert!(reason.contains("bad deploy on a"), "{reason}");
    assert_eq!(details["command"], "open");

    let much_later = at(1) + Duration::days(365);
    assert_eq!(
        g.status(much_later),
        CircuitStatus::ForcedOpen,
        "no deadline"
    );
    assert!(g.cb.disables_agent(&g.state, much_later));
    assert_eq!(g.permit("a", much_later).permitted, Some(false));
    assert_eq!(g.fails("a", much_later).verdict, Verdict::Hold);
    assert_eq!(g.tick("a", much_later), None);
    assert!(
        g.command("a", "open", "again", much_later)
            .events
            .is_empty()
    );

    let r = g.command("a", "close", "fixed in v2", much_later);
    assert_eq!(
        transitions(&r.events),
        [(CircuitStatus::ForcedOpen, CircuitStatus::Closed)]
    );
    assert!(matches!(&r.actions[..], [Action::RegisterAgent { agent_id, .. }] if agent_id == "a"));
    assert!(r.reason.contains("fixed in v2"));
    assert_eq!(g.permit("a", much_later).permitted, Some(true));
    assert!(
        g.command("a", "close", "again", much_later)
            .events
            .is_empty()
    );
}

#[test]
fn close_keeps_the_escalation_and_reset_forgets_everything() {
    let mut g = opened("a");
    g.fails("a", open_until(&g)); // level 1, open again
    let now = g.state.changed_at.unwrap() + Duration::seconds(1);

    let r = g.command("a", "close", "checked by hand", now);
    assert_eq!(
        transitions(&r.events),
        [(CircuitStatus::Open, CircuitStatus::Closed)]
    );
    assert_eq!(r.actions.len(), 1, "the agent is registered again");
    assert_eq!(g.state.reopen_count, 1, "close keeps the escalation memory");

    g.fails("a", now);
    let r = g.command("a", "reset", "new hardware", now);
    assert_eq!(
        transitions(&r.events),
        [(CircuitStatus::Closed, CircuitStatus::Closed)]
    );
    assert!(r.actions.is_empty(), "a closed agent is registered already");
    assert_eq!(g.state.reopen_count, 0);
    assert_eq!(g.state.consecutive_failures, 0);
    assert!(g.state.window.is_empty());
}

#[test]
fn reset_of_an_open_circuit_registers_the_agent_again() {
    let mut g = opened("a");
    let r = g.command("a", "reset", "replaced the node", at(10));
    assert_eq!(
        transitions(&r.events),
        [(CircuitStatus::Open, CircuitStatus::Closed)]
    );
    assert!(matches!(&r.actions[..], [Action::RegisterAgent { agent_id, .. }] if agent_id == "a"));
    assert!(r.reason.contains("replaced the node"));
    assert_eq!(g.describe(at(10))["state"], "closed");
}

#[test]
fn an_unknown_command_changes_nothing_and_says_so() {
    let mut g = opened("a");
    let before = g.state.clone();
    let r = g.command("a", "explode", "why not", at(10));
    assert!(r.events.is_empty() && r.actions.is_empty());
    assert!(r.reason.contains("unknown"), "{}", r.reason);
    assert_eq!(g.state, before);
}

// ---------------------------------------------------------------------------------------------
// Events and replay
// ---------------------------------------------------------------------------------------------

#[test]
fn transitions_are_stored_as_valid_circuit_transitioned_facts() {
    let mut g = opened("a");
    g.fails("a", at(64));
    let cb = &g.cb;

    let stored: Vec<String> = g.log.iter().map(|e| cb.event_type(e)).collect();
    assert!(
        stored.iter().all(|t| t.starts_with("circuit_")),
        "{stored:?}"
    );
    for e in &g.log {
        if let CircuitEvent::CircuitTransitioned { .. } = e {
            assert_eq!(cb.event_type(e), "circuit_transitioned");
            let mut payload = serde_json::to_value(e).unwrap();
            payload["strategy"] = json!("CircuitBreaker");
            payload["key"] = json!("a");
            let Some(HealEvent::CircuitTransitioned(t)) =
                HealEvent::decode("circuit_transitioned", 1, &payload)
            else {
                panic!("{payload} does not decode as circuit_transitioned")
            };
            assert_eq!(t.circuit, "a");
            assert_eq!(t.agent_id.as_deref(), Some("a"));
            assert!(["closed", "open", "half_open"].contains(&t.from.as_str()));
            assert!(!t.reason.is_empty());
        }
    }
    assert_eq!(
        transitions(&g.log),
        [
            (CircuitStatus::Closed, CircuitStatus::Open),
            (CircuitStatus::Open, CircuitStatus::HalfOpen),
            (CircuitStatus::HalfOpen, CircuitStatus::Open),
        ]
    );
}

#[test]
fn replaying_the_events_rebuilds_the_same_state_and_snapshots_round_trip() {
    let (mut g, closed_at) = escalated_then_closed();
    g.fails("a", closed_at + Duration::minutes(15));
    g.command(
        "a",
        "open",
        "maintenance",
        closed_at + Duration::minutes(16),
    );

    let mut replayed = CircuitState::default();
    for e in &g.log {
        g.cb.apply(&mut replayed, e);
    }
    assert_eq!(replayed, g.state);

    let snapshot = serde_json::to_value(&g.state).unwrap();
    let restored: CircuitState = serde_json::from_value(snapshot).unwrap();
    assert_eq!(restored, g.state);
}

// ---------------------------------------------------------------------------------------------
// Inside a healer, on a real store
// ---------------------------------------------------------------------------------------------

async fn healer_at(path: &std::path::Path, clock: Arc<ManualClock>) -> Healer {
    let store = Store::open(
        path,
        StoreOptions {
            clock,
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    Healer::builder()
        .register(
            &["agent_down"],
            CircuitBreaker::new(CircuitBreakerConfig::default()),
        )
        .open(store)
        .await
        .unwrap()
}

/// Five `agent_down` failures of `agent`, one a second from the clock's time.
async fn five_failures(healer: &Healer, clock: &ManualClock, agent: &str) {
    for i in 0..5 {
        let f = down(agent, healer.now()).with_id(format!("{agent}-f{i}"));
        healer.heal(f).await.unwrap();
        clock.advance(Duration::seconds(1));
    }
}

async fn circuit_view(healer: &Healer, key: &str) -> Value {
    let states = healer.states(Some("CircuitBreaker")).await.unwrap();
    states
        .into_iter()
        .find(|s| s.key == key)
        .unwrap_or_else(|| panic!("no circuit for {key}"))
        .state
}

#[tokio::test]
async fn an_open_circuit_survives_a_restart_and_is_half_open_once_its_deadline_passed() {
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let healer = healer_at(&path, clock.clone()).await;
    five_failures(&healer, &clock, "a").await; // opens at t0 + 4 s, until t0 + 64 s
    healer.close().await.unwrap();

    // A new process, 30 s later: the circuit is still open, with its stored deadline.
    clock.set(at(30));
    let healer = healer_at(&path, clock.clone()).await;
    let view = circuit_view(&healer, "a").await;
    assert_eq!(view["state"], "open");
    assert_eq!(view["consecutive_failures"], 5);
    assert_eq!(view["next_transition_at"], "2026-11-01T12:01:04.000000Z");
    assert_eq!(healer.permit("a").await.unwrap().permitted, Some(false));
    healer.close().await.unwrap();

    // Nothing ran past the deadline; the next process sees a half-open circuit at once.
    clock.set(at(100));
    let healer = healer_at(&path, clock.clone()).await;
    let view = circuit_view(&healer, "a").await;
    assert_eq!(view["state"], "half_open");
    assert_eq!(view["recorded_state"], "open");
    let tick = healer.tick().await.unwrap();
    assert_eq!(tick.reactions.len(), 1);
    assert_eq!(tick.reactions[0].events, ["circuit_transitioned"]);
    assert_eq!(tick.reactions[0].actions, [trial_registration("a")]);
    assert_eq!(
        circuit_view(&healer, "a").await["recorded_state"],
        "half_open"
    );
    healer.close().await.unwrap();

    // The log holds the story, as typed facts.
    let events = read_all(&path).await;
    let moves: Vec<(String, String)> = events
        .iter()
        .filter_map(|e| match e.decode() {
            Some(HealEvent::CircuitTransitioned(t)) => Some((t.from, t.to)),
            _ => None,
        })
        .collect();
    assert_eq!(
        moves,
        [
            ("closed".to_owned(), "open".to_owned()),
            ("open".to_owned(), "half_open".to_owned())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_healers_on_one_file_admit_at_most_three_trial_calls_in_total() {
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let one = Arc::new(healer_at(&path, clock.clone()).await);
    let two = Arc::new(healer_at(&path, clock.clone()).await);
    five_failures(&one, &clock, "a").await;
    clock.set(at(64)); // the deadline: half-open, nothing recorded yet

    let mut calls = Vec::new();
    for i in 0..16 {
        let h = if i % 2 == 0 { one.clone() } else { two.clone() };
        calls.push(tokio::spawn(async move { h.permit("a").await.unwrap() }));
    }
    let mut admitted = 0;
    for c in calls {
        if c.await.unwrap().permitted == Some(true) {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 3, "three trial calls across both processes");

    for h in [one, two] {
        let h = Arc::try_unwrap(h).ok().expect("no other owner");
        h.close().await.unwrap();
    }
    let events = read_all(&path).await;
    let count = |t: &str| events.iter().filter(|e| e.event_type == t).count();
    assert_eq!(count("circuit_trial_started"), 3);
    assert_eq!(
        count("circuit_transitioned"),
        2,
        "open, then half-open once"
    );
    crate::common::assert_log_invariants(&events);
}

#[tokio::test]
async fn without_a_coordinator_the_opening_is_delegated_with_an_unregister_action() {
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let healer = healer_at(&path, clock.clone()).await;

    let mut decisions = Vec::new();
    for i in 0..6 {
        let f = down("a", healer.now()).with_id(format!("f{i}"));
        let report = healer.heal(f).await.unwrap();
        assert_eq!(report.attempts.len(), 1);
        decisions.push(report);
        clock.advance(Duration::seconds(1));
    }

    let labels: Vec<&str> = decisions
        .iter()
        .map(|r| r.attempts[0].decision.as_str())
        .collect();
    assert_eq!(
        labels,
        [
            "declined",
            "declined",
            "declined",
            "declined",
            "delegated",
            "held"
        ]
    );
    let opening = &decisions[4];
    assert_eq!(opening.attempts[0].actions, [unregister("a")]);
    assert_eq!(opening.delegated, [unregister("a")]);
    assert_eq!(opening.attempts[0].details["consecutive_failures"], 5);
    assert_eq!(opening.result.strategy_used, "CircuitBreaker");
    assert_eq!(circuit_view(&healer, "a").await["state"], "open");
    assert!(decisions[5].attempts[0].reason.contains("isolated until"));
    healer.close().await.unwrap();
}

#[test]
fn a_half_open_circuit_whose_trials_never_report_back_re_opens_after_the_maximum_wait() {
    let mut g = Given::with(CircuitBreakerConfig {
        half_open_max_wait_ms: Some(30_000),
        ..CircuitBreakerConfig::default()
    });
    g.fails_times("a", 5, 0);
    g.tick("a", at(64)).expect("half-open at the deadline");
    assert!(g.permit("a", at(65)).permitted == Some(true));
    // The trial call never reports back.
    assert_eq!(g.tick("a", at(93)), None, "29 s: still waiting");
    let r = g.tick("a", at(94)).expect("30 s without a verdict");
    assert_eq!(
        transitions(&r.events),
        [(CircuitStatus::HalfOpen, CircuitStatus::Open)]
    );
    assert_eq!(r.actions, [unregister("a")]);
    assert_eq!(g.state.reopen_count, 1, "escalated like a failed trial");
    assert_eq!(
        open_until(&g),
        at(94 + 120),
        "the second opening lasts twice as long"
    );
    // Without the setting, the circuit keeps waiting for a verdict.
    let mut patient = opened("b");
    patient.tick("b", at(64)).expect("half-open");
    assert_eq!(patient.tick("b", at(100_000)), None);
}

#[test]
fn a_zero_half_open_wait_is_refused() {
    let c = CircuitBreakerConfig {
        half_open_max_wait_ms: Some(0),
        ..CircuitBreakerConfig::default()
    };
    assert!(c.validate().is_err());
}

// ---------------------------------------------------------------------------------------------
// Time in state: transitions dated when they happened
// ---------------------------------------------------------------------------------------------

async fn report(path: &std::path::Path, from: DateTime<Utc>, to: DateTime<Utc>) -> Value {
    let store = Store::open(path, StoreOptions::default()).await.unwrap();
    let r = healstore::Analytics::new(&store)
        .circuits(&healstore::Window::new(from, to).unwrap(), 3)
        .await
        .unwrap();
    store.close().await.unwrap();
    serde_json::to_value(r).unwrap()
}

fn circuit_of<'a>(report: &'a Value, key: &str) -> &'a Value {
    report["circuits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["circuit"] == key)
        .unwrap_or_else(|| panic!("no {key} in {report}"))
}

#[tokio::test]
async fn time_in_state_is_right_when_nothing_ran_after_the_deadline() {
    // A circuit opens at t0 + 4 s until t0 + 64 s; nothing ticks, permits or signals after.
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let healer = healer_at(&path, clock.clone()).await;
    five_failures(&healer, &clock, "a").await;
    healer.close().await.unwrap();

    // Over [t0, t0 + 100 s): open for 60 s, then half-open for 36 s, and half-open at the end.
    let r = report(&path, t0(), at(100)).await;
    let c = circuit_of(&r, "a");
    assert_eq!(c["open_ms"], 60_000, "{c}");
    assert_eq!(c["half_open_ms"], 36_000, "{c}");
    assert_eq!(c["state"], "half_open");
    assert_eq!(c["opens"], 1);
    assert_eq!(c["transitions"], 2);
    // A window that starts after the deadline: half-open throughout.
    let r = report(&path, at(70), at(90)).await;
    let c = circuit_of(&r, "a");
    assert_eq!(
        (c["open_ms"].clone(), c["half_open_ms"].clone()),
        (json!(0), json!(20_000))
    );
    assert_eq!(c["state"], "half_open");
    // One that ends before it: open throughout.
    let r = report(&path, at(10), at(40)).await;
    let c = circuit_of(&r, "a");
    assert_eq!(
        (c["open_ms"].clone(), c["half_open_ms"].clone()),
        (json!(30_000), json!(0))
    );
    assert_eq!(c["state"], "open");

    // A tick long after the deadline records the half-open period, dated at the deadline.
    clock.set(at(500));
    let healer = healer_at(&path, clock.clone()).await;
    healer.tick().await.unwrap();
    healer.close().await.unwrap();
    let half_open = read_all(&path)
        .await
        .into_iter()
        .filter(|e| e.event_type == "circuit_transitioned")
        .find(|e| e.payload["to"] == "half_open")
        .expect("recorded");
    assert_eq!(half_open.occurred_at, at(64), "dated when it happened");
    assert_eq!(half_open.recorded_at, at(500), "recorded when noticed");
    let r = report(&path, t0(), at(600)).await;
    let c = circuit_of(&r, "a");
    assert_eq!(c["open_ms"], 60_000, "{c}");
    assert_eq!(c["half_open_ms"], 536_000);
    assert_eq!(
        c["transitions"], 2,
        "the recorded transition is the one that happened"
    );
}

#[test]
fn circuits_and_circuit_report_agree_at_any_now() {
    use crate::common::{expect_success, run};
    let (_dir, db) = temp_db();
    let cli = |args: &[&str]| -> Value {
        let mut all = vec!["--format", "json"];
        all.extend_from_slice(args);
        let out = expect_success(&run(&db, &all));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };
    let time = |s: i64| healstore::time::format_time(at(s));
    // Five failures of `a` open its circuit at 4 s until 64 s.
    for i in 0..5 {
        let id = format!("f-{i}");
        let t = time(i);
        cli(&[
            "--now",
            &t,
            "record",
            "failure",
            "--type",
            "agent_down",
            "--agent",
            "a",
            "--id",
            &id,
        ]);
    }
    let agree = |now: i64, expected: &str| {
        let now = time(now);
        // A closed circuit with nothing left to remember is not held: `circuits --agent`
        // says so (an error), and the circuit is closed.
        let out = run(
            &db,
            &[
                "--format", "json", "--now", &now, "circuits", "--agent", "a",
            ],
        );
        let state = if out.status.success() {
            let listed: Value = serde_json::from_slice(&out.stdout).expect("JSON");
            assert_eq!(
                listed["circuits"].as_array().map(Vec::len),
                Some(1),
                "{listed}"
            );
            listed["circuits"][0]["state"].clone()
        } else {
            let e = crate::common::expect_error(&out, "no circuit is held for agent \"a\"");
            assert!(!e.is_empty());
            json!("closed")
        };
        let r = cli(&["--now", &now, "circuit-report", "--window", "1d"]);
        let c = circuit_of(&r, "a");
        assert_eq!(state, expected, "circuits at {now}");
        assert_eq!(c["state"], expected, "circuit-report at {now}: {c}");
    };
    agree(10, "open");
    agree(63, "open");
    agree(64, "half_open");
    agree(100, "half_open");
    // A permit at 120 s records the half-open period and a trial call.
    let code = run(
        &db,
        &["--now", &time(120), "circuit", "permit", "--agent", "a"],
    );
    assert_eq!(code.status.code(), Some(0));
    agree(120, "half_open");
    agree(121, "half_open");
    // Two successes close it.
    for s in [130, 131] {
        cli(&["--now", &time(s), "record", "success", "--agent", "a"]);
    }
    agree(131, "closed");
    let r = cli(&[
        "--now",
        &time(200),
        "circuit-report",
        "--since",
        &time(0),
        "--until",
        &time(200),
    ]);
    let c = circuit_of(&r, "a");
    assert_eq!(c["open_ms"], 60_000, "{c}");
    assert_eq!(c["half_open_ms"], 67_000, "{c}");
}

#[test]
fn a_half_open_period_noticed_late_is_dated_at_the_deadline_and_waits_from_when_it_was_noticed() {
    let mut g = Given::with(CircuitBreakerConfig {
        half_open_max_wait_ms: Some(30_000),
        ..CircuitBreakerConfig::default()
    });
    g.fails_times("a", 5, 0); // open at 4 s until 64 s
    // Nothing ran until 200 s: the tick records the half-open period the deadline began.
    let r = g.tick("a", at(200)).expect("due");
    let CircuitEvent::CircuitTransitioned { at: when, to, .. } = &r.events[0] else {
        panic!("{r:?}");
    };
    assert_eq!((*when, *to), (at(64), CircuitStatus::HalfOpen));
    assert_eq!(g.cb.occurred_at(&r.events[0]), Some(at(64)));
    assert_eq!(g.state.changed_at, Some(at(64)));
    assert_eq!(r.actions, [trial_registration("a")]);
    // The agent was put back for its trials at 200 s: the wait for a verdict starts then.
    assert_eq!(g.tick("a", at(229)), None, "29 s after it was noticed");
    let r = g.tick("a", at(230)).expect("30 s without a verdict");
    assert_eq!(
        transitions(&r.events),
        [(CircuitStatus::HalfOpen, CircuitStatus::Open)]
    );
    // A half-open period recorded at its deadline carries no separate notice.
    let mut on_time = opened("b");
    let r = on_time.tick("b", at(64)).expect("due");
    let v = serde_json::to_value(&r.events[0]).unwrap();
    assert!(v.get("noticed_at").is_none(), "{v}");
}

#[tokio::test]
async fn a_long_lived_healer_operates_a_circuit_again_after_it_came_back_to_rest() {
    // Given a healer with every state restored (as a server keeps one), a circuit forced
    // open and closed again (at rest: it leaves memory, though its stream has events),
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let healer = healer_at(&path, clock.clone()).await;
    for command in ["open", "close"] {
        healer
            .command(Some("CircuitBreaker"), "a", command, "maintenance")
            .await
            .unwrap();
    }
    // when it is operated again, more than once,
    for command in ["reset", "open", "close", "reset"] {
        let r = healer
            .command(Some("CircuitBreaker"), "a", command, "maintenance")
            .await
            .unwrap_or_else(|e| panic!("{command}: {e}"));
        assert_eq!(r.reactions.len(), 1, "{command}");
    }
    // then each command is recorded at the stream's next version.
    healer.close().await.unwrap();
    let versions: Vec<u64> = read_all(&path)
        .await
        .iter()
        .filter(|e| e.stream_id == "strategy-CircuitBreaker-a")
        .map(|e| e.stream_version)
        .collect();
    assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());
    assert!(versions.len() >= 4, "{versions:?}");
}
