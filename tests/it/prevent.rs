//! Preventions: predictions proposed as preventive actions, approved once (never again on
//! replay, never twice across healers), rejected with a reason, approved automatically within
//! the policy and the healer's limits, recorded without acting in shadow mode; the holdout's
//! choice is deterministic and recorded, and its comparison finds a prevention that works
//! and flags one that does not.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Duration, TimeZone, Utc};
use healstore::analytics::{Analytics, PredictOptions, Prediction};
use healstore::config::Config;
use healstore::events::{FailureDetected, Severity};
use healstore::heal::coordinator::CoordResult;
use healstore::heal::prevention::{self, AutoApproval, PreventionPolicy};
use healstore::heal::{
    Action, AgentStatus, Coordinator, Decision, Failure, Healer, Mode, NoopCoordinator, Priority,
    Strategy, Topology,
};
use healstore::{ErrorKind, ExpectedVersion, HealEvent, Store, Window};
use serde_json::{Map, Value};

use crate::common::{Rng, expect_error, expect_success, open, run, temp_db};

fn day0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap()
}

/// Counts what reaches the fleet.
#[derive(Default)]
struct Counting {
    restarts: AtomicUsize,
    concurrency: AtomicUsize,
    calls: AtomicUsize,
}

#[async_trait]
impl Coordinator for Counting {
    async fn agent_status(&self, agent_id: &str) -> CoordResult<Option<AgentStatus>> {
        NoopCoordinator.agent_status(agent_id).await
    }
    async fn register_agent(&self, agent_id: &str, m: Map<String, Value>) -> CoordResult<()> {
        self.restarts.fetch_add(1, Ordering::SeqCst);
        self.calls.fetch_add(1, Ordering::SeqCst);
        NoopCoordinator.register_agent(agent_id, m).await
    }
    async fn unregister_agent(&self, agent_id: &str) -> CoordResult<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        NoopCoordinator.unregister_agent(agent_id).await
    }
    async fn topology(&self) -> CoordResult<Topology> {
        NoopCoordinator.topology().await
    }
    async fn pause_tasks(&self, p: &[Priority]) -> CoordResult<u32> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        NoopCoordinator.pause_tasks(p).await
    }
    async fn resume_tasks(&self, p: &[Priority]) -> CoordResult<u32> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        NoopCoordinator.resume_tasks(p).await
    }
    async fn set_concurrency(&self, n: u32) -> CoordResult<()> {
        self.concurrency.fetch_add(1, Ordering::SeqCst);
        self.calls.fetch_add(1, Ordering::SeqCst);
        NoopCoordinator.set_concurrency(n).await
    }
    async fn set_caching(&self, e: bool) -> CoordResult<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        NoopCoordinator.set_caching(e).await
    }
    async fn set_prompt_simplification(&self, e: bool) -> CoordResult<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        NoopCoordinator.set_prompt_simplification(e).await
    }
    async fn retry_task(&self, t: &str, a: Option<&str>, d: u64) -> CoordResult<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        NoopCoordinator.retry_task(t, a, d).await
    }
    async fn spawn_agents(&self, n: u32) -> CoordResult<Vec<String>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        NoopCoordinator.spawn_agents(n).await
    }
}

/// A custom strategy offering its own prevention: lower the concurrency before a predicted
/// timeout.
struct Throttle;

impl Strategy for Throttle {
    type State = ();
    type Event = Value;
    fn name(&self) -> &str {
        "Throttle"
    }
    fn can_heal(&self, f: &Failure) -> bool {
        f.failure_type == "task_timeout"
    }
    fn decide(&self, _: &(), _: &Failure, _: DateTime<Utc>) -> Decision<Value> {
        Decision::act("throttle").action(Action::SetConcurrency { max_per_agent: 2 })
    }
    fn prevent(&self, _: &(), p: &Prediction, _: DateTime<Utc>) -> Decision<Value> {
        Decision::act(format!("throttle before the predicted {}", p.failure_type))
            .detail("max_per_agent", 2)
            .action(Action::SetConcurrency { max_per_agent: 2 })
    }
    fn apply(&self, _: &mut (), _: &Value) {}
}

fn policy(share: f64, auto: Option<AutoApproval>) -> PreventionPolicy {
    PreventionPolicy {
        min_probability: 0.6,
        holdout_share: share,
        holdout_seed: 7,
        auto,
    }
}

fn config(p: PreventionPolicy) -> Config {
    Config {
        prevention: p,
        ..Config::default()
    }
}

async fn healer(store: &Store, c: &Config, coord: Option<Arc<Counting>>) -> Healer {
    let mut b = c.builder();
    if let Some(coord) = coord {
        b = b.coordinator(coord);
    }
    b.open(store.clone()).await.unwrap()
}

/// A prediction written by hand: `failure_type` on `agent`, from `source`.
fn prediction(
    id: &str,
    agent: &str,
    failure_type: &str,
    source: &str,
    p: f64,
    at: DateTime<Utc>,
) -> Prediction {
    Prediction {
        prediction_id: format!("pred-{id}"),
        agent_id: Some(agent.into()),
        failure_type: failure_type.into(),
        probability: p,
        source: source.into(),
        pattern_id: None,
        basis: "planted".into(),
        expected_at: healstore::time::format_time(at + Duration::minutes(1)),
        expected_by: healstore::time::format_time(at + Duration::minutes(10)),
        expected_in_ms: 60_000,
        window_ms: 600_000,
        recommended_strategy: None,
        recommended_action: "prepare".into(),
    }
}

async fn fail(store: &Store, id: &str, t: &str, agent: &str, at: DateTime<Utc>) {
    store
        .append(
            &format!("failure-{id}"),
            ExpectedVersion::NoStream,
            vec![
                HealEvent::FailureDetected(FailureDetected {
                    failure_id: id.into(),
                    failure_type: t.into(),
                    severity: Severity::High,
                    agent_id: Some(agent.into()),
                    task_id: None,
                    source_event: None,
                    metadata: Map::new(),
                })
                .to_new_event(at),
            ],
        )
        .await
        .unwrap();
}

/// a-1 fails twenty times with memory_exhaustion, task_timeout, agent_down (10 s apart, two
/// hours between rounds); then it reports the first two just before `now`.
async fn planted_sequence(store: &Store) -> DateTime<Utc> {
    for i in 0..20 {
        let t = day0() + Duration::hours(2 * i);
        let agent = "a-1";
        fail(store, &format!("m-{i}"), "memory_exhaustion", agent, t).await;
        fail(
            store,
            &format!("t-{i}"),
            "task_timeout",
            agent,
            t + Duration::seconds(10),
        )
        .await;
        fail(
            store,
            &format!("d-{i}"),
            "agent_down",
            agent,
            t + Duration::seconds(20),
        )
        .await;
    }
    let now = day0() + Duration::days(2);
    fail(
        store,
        "m-a1",
        "memory_exhaustion",
        "a-1",
        now - Duration::seconds(20),
    )
    .await;
    fail(
        store,
        "t-a1",
        "task_timeout",
        "a-1",
        now - Duration::seconds(10),
    )
    .await;
    now
}

#[tokio::test]
async fn a_sequence_prediction_becomes_a_restart_approved_once_and_never_again_on_replay() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    let now = planted_sequence(&store).await;
    let options = PredictOptions {
        agent: Some("a-1".into()),
        learn_window: Duration::days(3),
        ..PredictOptions::default()
    };
    let r = Analytics::new(&store).predict(now, &options).await.unwrap();
    let p = r
        .predictions
        .iter()
        .find(|p| p.failure_type == "agent_down")
        .unwrap_or_else(|| panic!("no agent_down prediction: {r:#?}"))
        .clone();
    assert_eq!(p.source, "sequence");

    let coord = Arc::new(Counting::default());
    let c = config(policy(0.0, None));
    let h = healer(&store, &c, Some(coord.clone())).await;
    let proposals = h
        .propose_preventions(std::slice::from_ref(&p), now)
        .await
        .unwrap();
    let pr = &proposals[0];
    assert_eq!(pr.status, "proposed", "{pr:#?}");
    let v = pr.prevention.as_ref().unwrap();
    assert_eq!(v.strategy, "AgentRestart");
    assert_eq!(v.actions, vec!["restart_agent"]);
    assert_eq!(v.agent_id.as_deref(), Some("a-1"));
    assert_eq!(v.status, "pending");
    assert!(v.details.contains_key("prediction"));
    assert_eq!(
        coord.calls.load(Ordering::SeqCst),
        0,
        "a proposal does nothing"
    );

    // Proposing again writes nothing.
    let again = h
        .propose_preventions(std::slice::from_ref(&p), now)
        .await
        .unwrap();
    assert_eq!(again[0].status, "already_proposed");

    let a = h
        .approve_prevention(&pr.prevention_id, "alice", Some("looks right"), now)
        .await
        .unwrap();
    assert_eq!(a.decision, "act");
    assert_eq!(a.prevention.status, "executed");
    assert_eq!(a.prevention.decided_by.as_deref(), Some("alice"));
    assert_eq!(coord.restarts.load(Ordering::SeqCst), 1);

    // Approving twice, or rejecting an approved one, is a conflict and acts on nothing.
    let e = h
        .approve_prevention(&pr.prevention_id, "bob", None, now)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(e.to_string().contains("already approved by alice"), "{e}");
    let e = h
        .reject_prevention(&pr.prevention_id, "bob", "too late", now)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert_eq!(coord.restarts.load(Ordering::SeqCst), 1);
    h.close().await.unwrap();

    // Replay: a new healer restores everything from the log and acts on nothing.
    let store = open(&path).await;
    let coord2 = Arc::new(Counting::default());
    let h = healer(&store, &c, Some(coord2.clone())).await;
    let list = prevention::list(&store, None, None).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].status, "executed");
    assert_eq!(coord2.calls.load(Ordering::SeqCst), 0);
    // The action is in the log as an action like any other (the audit report reads it).
    let events = crate::common::read_all(&path).await;
    let executed: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == "action_executed")
        .collect();
    assert_eq!(executed.len(), 1);
    assert_eq!(executed[0].payload["action"], "restart_agent");
    h.close().await.unwrap();
}

#[tokio::test]
async fn a_rejection_records_who_and_why_and_cannot_be_approved_afterwards() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    let now = day0();
    let coord = Arc::new(Counting::default());
    let h = healer(&store, &config(policy(0.0, None)), Some(coord.clone())).await;
    let p = prediction("r1", "a-1", "agent_down", "sequence", 0.9, now);
    let pr = h.propose_preventions(&[p], now).await.unwrap().remove(0);
    let e = h
        .reject_prevention(&pr.prevention_id, "carol", " ", now)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let v = h
        .reject_prevention(&pr.prevention_id, "carol", "agent is being retired", now)
        .await
        .unwrap();
    assert_eq!(v.status, "rejected");
    assert_eq!(v.decided_by.as_deref(), Some("carol"));
    assert_eq!(v.decision_reason.as_deref(), Some("agent is being retired"));
    let e = h
        .approve_prevention(&pr.prevention_id, "dave", None, now)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("rejected by carol"), "{e}");
    assert_eq!(coord.calls.load(Ordering::SeqCst), 0);
    // Unknown ids are not found.
    let e = h
        .approve_prevention("prev-nothing", "dave", None, now)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    h.close().await.unwrap();
}

#[tokio::test]
async fn the_automatic_policy_respects_probability_actions_and_limits() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    let now = day0();
    let coord = Arc::new(Counting::default());
    let auto = AutoApproval {
        min_probability: 0.8,
        actions: vec!["restart_agent".into()],
        max_per_agent_per_hour: 1,
    };
    let mut c = config(policy(0.0, Some(auto)));
    c.limits.max_actions_per_agent_per_hour = Some(1);
    let h = healer(&store, &c, Some(coord.clone())).await;

    // Below the policy's probability (above the proposal's): proposed, left to a person.
    let low = prediction("low", "a-1", "agent_down", "sequence", 0.7, now);
    // Approved by the policy and carried out.
    let high = prediction("high", "a-1", "agent_down", "sequence", 0.9, now);
    // The same agent again within the hour: over the policy's per-agent limit.
    let again = prediction("again", "a-1", "heartbeat_failed", "sequence", 0.95, now);
    // An action the policy does not allow (a degradation step).
    let other = prediction(
        "mem",
        "a-2",
        "memory_exhaustion",
        "resource_trend",
        0.95,
        now,
    );
    // Below the proposal threshold: nothing written.
    let faint = prediction("faint", "a-3", "agent_down", "sequence", 0.3, now);
    let r = h
        .propose_preventions(&[low, high, again, other, faint], now)
        .await
        .unwrap();
    let status: Vec<&str> = r.iter().map(|p| p.status.as_str()).collect();
    assert_eq!(
        status,
        vec![
            "proposed",
            "auto_approved",
            "proposed",
            "proposed",
            "below_threshold"
        ],
        "{r:#?}"
    );
    assert!(
        r[0].policy
            .as_ref()
            .unwrap()
            .contains("below the automatic"),
        "{r:#?}"
    );
    assert_eq!(r[1].approval.as_ref().unwrap().by, "policy");
    assert!(r[2].policy.as_ref().unwrap().contains("limit"), "{r:#?}");
    assert!(
        r[3].policy.as_ref().unwrap().contains("not among"),
        "{r:#?}"
    );
    assert_eq!(coord.restarts.load(Ordering::SeqCst), 1);

    // A generous policy meets the healer's own hourly limit on an agent (one action): the
    // second automatic prevention on a-4 is withheld and left to a person.
    h.close().await.unwrap();
    let store = open(&path).await;
    let mut c2 = c.clone();
    c2.prevention.auto.as_mut().unwrap().max_per_agent_per_hour = 10;
    let h = healer(&store, &c2, Some(coord.clone())).await;
    let r = h
        .propose_preventions(
            &[
                prediction("n1", "a-4", "agent_down", "sequence", 0.9, now),
                prediction("n2", "a-4", "heartbeat_failed", "sequence", 0.9, now),
            ],
            now,
        )
        .await
        .unwrap();
    assert_eq!(r[0].status, "auto_approved", "{r:#?}");
    assert_eq!(r[1].status, "proposed", "{r:#?}");
    assert!(
        r[1].policy.as_ref().unwrap().contains("healer's limits"),
        "{r:#?}"
    );
    assert_eq!(coord.restarts.load(Ordering::SeqCst), 2);
    h.close().await.unwrap();
}

#[tokio::test]
async fn shadow_mode_records_approvals_without_acting() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    let now = day0();
    let coord = Arc::new(Counting::default());
    let auto = AutoApproval {
        min_probability: 0.5,
        actions: vec!["restart_agent".into()],
        max_per_agent_per_hour: 10,
    };
    let mut c = config(policy(0.0, Some(auto)));
    c.mode = Mode::Shadow;
    let h = healer(&store, &c, Some(coord.clone())).await;
    let r = h
        .propose_preventions(
            &[prediction("s1", "a-1", "agent_down", "sequence", 0.9, now)],
            now,
        )
        .await
        .unwrap();
    assert_eq!(r[0].status, "auto_approved");
    let a = r[0].approval.as_ref().unwrap();
    assert_eq!(a.decision, "shadow");
    assert_eq!(a.prevention.status, "shadow");
    assert_eq!(coord.calls.load(Ordering::SeqCst), 0);
    h.close().await.unwrap();
}

#[tokio::test]
async fn two_healers_approving_at_once_act_once() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    let now = day0();
    let c = config(policy(0.0, None));
    let coord = Arc::new(Counting::default());
    let h1 = healer(&store, &c, Some(coord.clone())).await;
    let pr = h1
        .propose_preventions(
            &[prediction(
                "race",
                "a-1",
                "agent_down",
                "sequence",
                0.9,
                now,
            )],
            now,
        )
        .await
        .unwrap()
        .remove(0);
    let other = open(&path).await;
    let h2 = healer(&other, &c, Some(coord.clone())).await;
    let (a, b) = tokio::join!(
        h1.approve_prevention(&pr.prevention_id, "alice", None, now),
        h2.approve_prevention(&pr.prevention_id, "bob", None, now),
    );
    assert_eq!(a.is_ok() as u8 + b.is_ok() as u8, 1, "{a:?} {b:?}");
    let e = a.err().or(b.err()).unwrap();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert_eq!(coord.restarts.load(Ordering::SeqCst), 1);
    h1.close().await.unwrap();
    h2.close().await.unwrap();
}

#[tokio::test]
async fn the_holdout_is_deterministic_recorded_and_never_acted_on() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    let now = day0();
    let coord = Arc::new(Counting::default());
    let auto = AutoApproval {
        min_probability: 0.5,
        actions: vec!["restart_agent".into()],
        max_per_agent_per_hour: 100,
    };
    let h = healer(
        &store,
        &config(policy(0.3, Some(auto))),
        Some(coord.clone()),
    )
    .await;
    let preds: Vec<Prediction> = (0..40)
        .map(|i| {
            prediction(
                &format!("h{i}"),
                &format!("a-{i}"),
                "agent_down",
                "sequence",
                0.9,
                now,
            )
        })
        .collect();
    let r = h.propose_preventions(&preds, now).await.unwrap();
    let held: Vec<_> = r.iter().filter(|p| p.status == "held_back").collect();
    assert!(!held.is_empty() && held.len() < 40);
    for p in &r {
        let v = p.prevention.as_ref().unwrap();
        let expected = prevention::holdout(7, 0.3, &p.prediction_id);
        assert_eq!(v.holdout, expected, "recorded as computed");
        assert_eq!(v.status == "held_back", expected.held_back);
    }
    assert_eq!(coord.restarts.load(Ordering::SeqCst), 40 - held.len());
    let e = h
        .approve_prevention(&held[0].prevention_id, "alice", None, now)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("held back by the holdout"), "{e}");
    h.close().await.unwrap();
}

#[tokio::test]
async fn the_holdout_comparison_finds_the_prevention_that_works_and_flags_the_one_that_does_not() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    let coord = Arc::new(Counting::default());
    let auto = AutoApproval {
        min_probability: 0.5,
        actions: vec!["restart_agent".into(), "set_concurrency".into()],
        max_per_agent_per_hour: 100,
    };
    let c = config(policy(0.25, Some(auto)));
    let h = c
        .builder()
        .register(&["task_timeout"], Throttle)
        .coordinator(coord.clone())
        .open(store.clone())
        .await
        .unwrap();
    let mut rng = Rng::fixed(11);
    let base = day0();
    for i in 0..800i64 {
        let at = base + Duration::minutes(i);
        let agent = format!("s-{i}");
        // Restarts truly help (60 % of predicted failures happen without, 20 % with);
        // throttling does nothing (50 % either way).
        let (t, source) = if i % 2 == 0 {
            ("agent_down", "sequence")
        } else {
            ("task_timeout", "correlation")
        };
        let p = prediction(&format!("sim{i}"), &agent, t, source, 0.9, at);
        let r = h.propose_preventions(&[p], at).await.unwrap().remove(0);
        let acted = r.status == "auto_approved";
        assert!(acted || r.status == "held_back", "{r:#?}");
        let chance = match (t, acted) {
            ("agent_down", true) => 20,
            ("agent_down", false) => 60,
            _ => 50,
        };
        if rng.between(0, 99) < chance {
            fail(
                &store,
                &format!("sim-f{i}"),
                t,
                &agent,
                at + Duration::minutes(5),
            )
            .await;
        }
    }
    let end = base + Duration::minutes(800 + 20);
    let w = Window::new(base - Duration::hours(1), end).unwrap();
    let a = Analytics::new(&store);
    let report = a.prevention_report(&w).await.unwrap();
    let restart = report
        .effects
        .iter()
        .find(|e| e.action == "restart_agent")
        .unwrap();
    let throttle = report
        .effects
        .iter()
        .find(|e| e.action == "set_concurrency")
        .unwrap();
    assert_eq!(restart.source, "sequence");
    assert!(
        restart.held_back >= 50 && restart.prevented >= 250,
        "{restart:#?}"
    );
    assert!(restart.ci_low > 0.0, "{restart:#?}");
    assert_eq!(restart.verdict, "benefit");
    assert!(!restart.flagged);
    assert_eq!(restart.agents_disrupted, restart.prevented);
    assert!(
        throttle.ci_low <= 0.0 && throttle.ci_high >= 0.0,
        "{throttle:#?}"
    );
    assert!(throttle.flagged, "{throttle:#?}");
    assert_eq!(throttle.verdict, "no_benefit_shown");
    assert_eq!(throttle.agents_disrupted, 0);
    assert_eq!(
        coord.concurrency.load(Ordering::SeqCst) as i64,
        throttle.prevented
    );

    let recs = a
        .recommendations(&w, &healstore::analytics::advice::AdviceOptions::default())
        .await
        .unwrap();
    let flagged: Vec<_> = recs
        .iter()
        .filter(|r| r.rule == "ineffective_prevention")
        .collect();
    assert_eq!(flagged.len(), 1, "{recs:#?}");
    assert_eq!(
        flagged[0].subject.as_deref(),
        Some("correlation/set_concurrency")
    );
    h.close().await.unwrap();
}

#[test]
fn the_command_line_lists_approves_reports_and_rejects() {
    let (_dir, path) = temp_db();
    let now = day0();
    crate::common::block_on(async {
        let store = open(&path).await;
        let h = healer(&store, &config(policy(0.0, None)), None).await;
        let preds = [
            prediction("c1", "a-1", "agent_down", "sequence", 0.9, now),
            prediction("c2", "a-2", "agent_down", "sequence", 0.9, now),
        ];
        h.propose_preventions(&preds, now).await.unwrap();
        h.close().await.unwrap();
    });
    let t = healstore::time::format_time(now);
    let p = |args: &[&str]| {
        let mut v = vec!["--now", t.as_str()];
        v.extend_from_slice(args);
        run(&path, &v)
    };
    let list = expect_success(&p(&[
        "--format", "json", "prevent", "list", "--status", "pending",
    ]));
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["preventions"].as_array().unwrap().len(), 2);

    // Without a coordinator, the approved actions are handed to the caller.
    let out = expect_success(&p(&["prevent", "approve", "prev-c1", "--by", "alice"]));
    assert!(
        out.contains("delegated") && out.contains("restart agent a-1"),
        "{out}"
    );
    expect_error(
        &p(&["prevent", "approve", "prev-c1", "--by", "bob"]),
        "already approved by alice",
    );
    let out = expect_success(&p(&["prevent", "outcome", "prev-c1", "--success"]));
    assert!(out.contains("executed"), "{out}");
    let out = expect_success(&p(&["prevent", "outcome", "prev-c1", "--success"]));
    assert!(out.contains("already recorded"), "{out}");
    expect_error(
        &p(&["prevent", "outcome", "prev-c1", "--failed"]),
        "already has the outcome",
    );

    let out = expect_success(&p(&[
        "prevent",
        "reject",
        "prev-c2",
        "--by",
        "carol",
        "--reason",
        "maintenance window",
    ]));
    assert!(
        out.contains("rejected by carol: maintenance window"),
        "{out}"
    );
    let v = expect_success(&p(&["--format", "json", "prevent", "list"]));
    let v: Value = serde_json::from_str(&v).unwrap();
    let statuses: Vec<&str> = v["preventions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, vec!["executed", "rejected"]);
    let since = healstore::time::format_time(now - Duration::hours(1));
    let until = healstore::time::format_time(now + Duration::hours(1));
    let out = expect_success(&p(&[
        "prevent", "report", "--since", &since, "--until", &until,
    ]));
    assert!(out.contains("2 proposed"), "{out}");
}

fn recommendation(rule: &str, subject: Option<&str>) -> healstore::analytics::Recommendation {
    healstore::analytics::Recommendation {
        rule: rule.into(),
        severity: "warning".into(),
        message: String::new(),
        subject: subject.map(str::to_owned),
        value: None,
        proposal: None,
    }
}

#[test]
fn proposed_configurations_parse_and_change_what_each_recommendation_asked_for() {
    use healstore::analytics::propose;
    use healstore::config::StrategyKind;
    let mut base = Config::parse(
        "[limits]\nmax_actions_per_agent_per_hour = 4\n\n[[route]]\nfailure_types = \
         [\"memory_exhaustion\"]\nstrategies = [\"resource_rebalance\"]\n\n[prevention.auto]\n\
         actions = [\"restart_agent\", \"set_concurrency\"]\n",
    )
    .unwrap();
    base.circuit_breaker
        .failure_types
        .retain(|t| t != "task_timeout");
    let route = |c: &Config, t: &str| {
        c.effective_routes()
            .into_iter()
            .find(|(x, _)| x == t)
            .map(|(_, k)| k)
            .unwrap()
    };
    let mut recs = vec![
        recommendation("enable_circuit_breaker", None),
        recommendation("enable_degradation", None),
        recommendation("flapping_circuit", Some("a-1")),
        recommendation("replace_strategy", Some("CircuitBreaker")),
        recommendation("tune_strategy", Some("TaskRetry")),
        recommendation("healer_limits_reached", None),
        recommendation(
            "ineffective_prevention",
            Some("correlation/set_concurrency"),
        ),
        recommendation("most_common_failure", Some("agent_down")),
    ];
    let props = propose::proposals(&mut recs, &base);
    assert_eq!(props.len(), 7, "{props:#?}");
    assert!(
        recs[7].proposal.is_none(),
        "a root cause is not a configuration change"
    );
    for (r, p) in recs.iter().zip(&props) {
        assert_eq!(r.proposal.as_deref(), Some(p.toml.as_str()));
        // Each fragment is itself valid configuration text.
        let fragment: toml::Table =
            toml::from_str(&p.toml).unwrap_or_else(|e| panic!("{e}: {}", p.toml));
        assert!(!fragment.is_empty());
    }
    let one = |i: usize| props[i].apply(&base).unwrap();
    let c = one(0);
    assert_eq!(
        route(&c, "task_timeout"),
        vec![StrategyKind::CircuitBreaker, StrategyKind::TaskRetry]
    );
    assert!(
        c.circuit_breaker
            .failure_types
            .iter()
            .any(|t| t == "task_timeout")
    );
    let c = one(1);
    assert_eq!(
        route(&c, "memory_exhaustion"),
        vec![StrategyKind::GradualDegradation]
    );
    let c = one(2);
    assert_eq!(c.circuit_breaker.open_ms, 2 * base.circuit_breaker.open_ms);
    let c = one(3);
    assert_eq!(route(&c, "agent_down"), vec![StrategyKind::AgentRestart]);
    let c = one(4);
    assert_eq!(c.task_retry.max_attempts, base.task_retry.max_attempts + 1);
    let c = one(5);
    assert_eq!(c.limits.max_actions_per_agent_per_hour, Some(6));
    let c = one(6);
    assert_eq!(c.prevention.auto.unwrap().actions, vec!["restart_agent"]);

    // Combined, written and read back: every change at once.
    let all = propose::combine(&base, &props).unwrap();
    let text = propose::to_toml(&all).unwrap();
    let back = Config::parse(&text).unwrap();
    assert_eq!(back, all);
    assert_eq!(back.circuit_breaker.open_ms, 120_000);
    assert_eq!(
        route(&back, "task_timeout")[0],
        StrategyKind::CircuitBreaker
    );
    assert_eq!(
        back.task_retry.max_attempts,
        base.task_retry.max_attempts + 1
    );
}

#[test]
fn recommendations_propose_writes_a_candidate_and_backtests_it() {
    let (dir, path) = temp_db();
    let t0 = day0();
    for i in 0..12 {
        let at = healstore::time::format_time(t0 + Duration::minutes(i));
        let task = format!("task-{i}");
        expect_success(&run(
            &path,
            &[
                "--now",
                &at,
                "record",
                "failure",
                "--type",
                "task_timeout",
                "--agent",
                "a-1",
                "--task",
                &task,
                "--at",
                &at,
            ],
        ));
    }
    let now = healstore::time::format_time(t0 + Duration::hours(1));
    let file = dir.path().join("candidate.toml");
    let f = file.to_str().unwrap();
    let out = expect_success(&run(
        &path,
        &[
            "--now",
            &now,
            "--format",
            "json",
            "recommendations",
            "--window",
            "2h",
            "--propose",
            f,
        ],
    ));
    let doc: Value = serde_json::from_str(&out).unwrap();
    let rec = doc["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == "enable_circuit_breaker")
        .unwrap_or_else(|| panic!("{doc:#}"));
    assert!(rec["proposal"].as_str().unwrap().contains("[[route]]"));
    let p = &doc["proposals"][0];
    assert_eq!(p["rule"], "enable_circuit_breaker");
    assert!(p["decisions_changed"].as_u64().unwrap() > 0, "{p:#}");
    assert!(
        doc["candidate"]["expected"]["health_score"].is_number(),
        "{doc:#}"
    );
    let written = Config::load(Some(&file)).unwrap().0;
    let kinds = written
        .effective_routes()
        .into_iter()
        .find(|(t, _)| t == "task_timeout")
        .unwrap()
        .1;
    assert_eq!(kinds[0], healstore::config::StrategyKind::CircuitBreaker);
    // An existing file is not replaced without --force.
    expect_error(
        &run(
            &path,
            &[
                "--now",
                &now,
                "recommendations",
                "--window",
                "2h",
                "--propose",
                f,
            ],
        ),
        "--force",
    );
    let table = expect_success(&run(
        &path,
        &[
            "--now",
            &now,
            "recommendations",
            "--window",
            "2h",
            "--propose",
            f,
            "--force",
        ],
    ));
    assert!(
        table.contains("expected:") && table.contains("wrote"),
        "{table}"
    );
}

#[tokio::test]
async fn the_server_lists_approves_and_rejects_preventions() {
    use crate::serve_common::{Server, assert_error};
    use serde_json::json;
    let (_dir, path) = temp_db();
    let now = day0();
    {
        let store = open(&path).await;
        let h = healer(&store, &config(policy(0.0, None)), None).await;
        let preds = [
            prediction("w1", "a-1", "agent_down", "sequence", 0.9, now),
            prediction("w2", "a-2", "agent_down", "sequence", 0.9, now),
        ];
        h.propose_preventions(&preds, now).await.unwrap();
        h.close().await.unwrap();
    }
    let server = Server::start(&path, &[]);
    let (status, v) = server.get_json("/v1/preventions?status=pending").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["preventions"].as_array().unwrap().len(), 2);
    let (status, v) = server
        .post_json("/v1/preventions/prev-w1/approve", &json!({"by": "alice"}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["decision"], "delegated");
    assert_eq!(v["actions"][0]["action"], "restart_agent");
    let again = server
        .post_json("/v1/preventions/prev-w1/approve", &json!({"by": "bob"}))
        .await;
    let m = assert_error(&again, 409, "conflict");
    assert!(m.contains("already approved by alice"), "{m}");
    let blank = server
        .post_json(
            "/v1/preventions/prev-w2/reject",
            &json!({"by": "carol", "reason": ""}),
        )
        .await;
    assert_error(&blank, 422, "invalid_input");
    let (status, v) = server
        .post_json(
            "/v1/preventions/prev-w2/reject",
            &json!({"by": "carol", "reason": "maintenance"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "rejected");
    let missing = server
        .post_json("/v1/preventions/prev-none/approve", &json!({"by": "alice"}))
        .await;
    assert_error(&missing, 404, "not_found");
    server.terminate();
}

/// The caller's report on a delegated prevention through the service: the document `prevent
/// outcome --format json` prints, once (the same report again is a duplicate, the other a
/// 409), and every refused request (an unknown or malformed id, a prevention awaiting no
/// outcome, a bad body) is a JSON error that writes nothing.
#[tokio::test]
async fn the_server_records_a_delegated_preventions_outcome_once() {
    use crate::serve_common::{Server, assert_error};
    use serde_json::json;
    let (_dir, path) = temp_db();
    let now = day0();
    {
        let store = open(&path).await;
        let h = healer(&store, &config(policy(0.0, None)), None).await;
        let preds = [
            prediction("o1", "a-1", "agent_down", "sequence", 0.9, now),
            prediction("o2", "a-2", "agent_down", "sequence", 0.9, now),
        ];
        h.propose_preventions(&preds, now).await.unwrap();
        h.close().await.unwrap();
    }
    let server = Server::start(&path, &[]);
    let head = || async {
        let (status, v) = server.get_json("/readyz").await;
        assert_eq!(status, 200, "{v}");
        v["head_position"].as_i64().expect("head_position")
    };
    let (status, v) = server
        .post_json("/v1/preventions/prev-o1/approve", &json!({"by": "alice"}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["decision"], "delegated");
    let before = head().await;

    // Refused, and nothing written: an unknown id, malformed ids, a prevention awaiting no
    // outcome (prev-o2 is pending), a body that is not an outcome, a bad duration or time.
    let refused = [
        (
            "/v1/preventions/prev-none/outcome".to_owned(),
            json!({"success": true}),
            404,
            "not_found",
        ),
        (
            format!("/v1/preventions/prev-{}/outcome", "x".repeat(300)),
            json!({"success": true}),
            422,
            "invalid_input",
        ),
        (
            "/v1/preventions/prev-%01/outcome".to_owned(),
            json!({"success": true}),
            422,
            "invalid_input",
        ),
        (
            "/v1/preventions/prev-o2/outcome".to_owned(),
            json!({"success": true}),
            409,
            "conflict",
        ),
        (
            "/v1/preventions/prev-o1/outcome".to_owned(),
            json!({"succeeded": true}),
            400,
            "bad_request",
        ),
        (
            "/v1/preventions/prev-o1/outcome".to_owned(),
            json!({"success": true, "duration_ms": -1}),
            422,
            "invalid_input",
        ),
        (
            "/v1/preventions/prev-o1/outcome".to_owned(),
            json!({"success": true, "at": "yesterday"}),
            400,
            "bad_request",
        ),
    ];
    for (route, body, status, code) in &refused {
        let answer = server.post_json(route, body).await;
        let (s, v) = &answer;
        assert!(
            *s == *status && v["error"]["code"] == *code,
            "{route} {body}: {s} {v}"
        );
        assert_error(&answer, *status, code);
        assert_eq!(head().await, before, "{route} {body} wrote nothing");
    }

    let (status, v) = server
        .post_json(
            "/v1/preventions/prev-o1/outcome",
            &json!({"success": true, "duration_ms": 250}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["duplicate"], false);
    assert_eq!(v["prevention"]["prevention_id"], "prev-o1");
    assert_eq!(v["prevention"]["status"], "executed");
    let after = head().await;
    assert_eq!(after, before + 1, "one prevention_executed");
    // The same report again is the recorded one; the other result is a conflict.
    let (status, v) = server
        .post_json("/v1/preventions/prev-o1/outcome", &json!({"success": true}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["duplicate"], true);
    assert_eq!(v["prevention"]["status"], "executed");
    let other = server
        .post_json(
            "/v1/preventions/prev-o1/outcome",
            &json!({"success": false}),
        )
        .await;
    let m = assert_error(&other, 409, "conflict");
    assert!(m.contains("already has the outcome executed"), "{m}");
    assert_eq!(head().await, after);
    // The command line answers the same document.
    server.terminate();
    let cli = expect_success(&run(
        &path,
        &[
            "--format",
            "json",
            "prevent",
            "outcome",
            "prev-o1",
            "--success",
        ],
    ));
    let cli: Value = serde_json::from_str(&cli).unwrap();
    assert_eq!(cli["duplicate"], true);
    assert_eq!(cli["prevention"]["status"], "executed");
}

/// The degradation level of memory_exhaustion and its name, if it has a state.
async fn level(h: &Healer) -> Option<(u64, Value)> {
    let states = h.states(Some("GradualDegradation")).await.unwrap();
    states
        .iter()
        .find(|s| s.key == "memory_exhaustion")
        .map(|s| {
            (
                s.state["level"].as_u64().unwrap(),
                s.state["level_name"].clone(),
            )
        })
}

/// A predicted exhaustion of a resource GradualDegradation degrades for: approving its
/// proposal steps the resource's level down once (one level, its actions carried out once),
/// and neither a second approval nor a replay acts again or moves the level further.
#[tokio::test]
async fn approving_a_degradation_step_acts_once_and_moves_the_level_one_step() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    let now = day0();
    let coord = Arc::new(Counting::default());
    let c = config(policy(0.0, None));
    let h = healer(&store, &c, Some(coord.clone())).await;
    assert_eq!(level(&h).await.map(|l| l.0).unwrap_or(0), 0);

    let p = prediction(
        "deg1",
        "a-2",
        "memory_exhaustion",
        "resource_trend",
        0.9,
        now,
    );
    let r = h.propose_preventions(&[p], now).await.unwrap().remove(0);
    assert_eq!(r.status, "proposed", "{r:#?}");
    let v = r.prevention.as_ref().unwrap();
    assert_eq!(v.strategy, "GradualDegradation");
    assert_eq!(v.key, "memory_exhaustion");
    assert_eq!(v.actions, vec!["pause_tasks"], "{v:#?}");
    assert_eq!(
        coord.calls.load(Ordering::SeqCst),
        0,
        "a proposal does nothing"
    );
    assert_eq!(level(&h).await.map(|l| l.0).unwrap_or(0), 0);

    let a = h
        .approve_prevention(&r.prevention_id, "alice", None, now + Duration::seconds(5))
        .await
        .unwrap();
    assert_eq!(a.decision, "act", "{a:#?}");
    assert_eq!(a.prevention.status, "executed", "{a:#?}");
    assert_eq!(a.results.len(), 1);
    assert!(a.results[0].success, "{a:#?}");
    assert_eq!(coord.calls.load(Ordering::SeqCst), 1, "paused once");
    assert_eq!(
        level(&h).await,
        Some((1, Value::String("REDUCED_1".into()))),
        "one level down"
    );

    // Approved again, from this healer or another one: refused, nothing acts, the level stays.
    let e = h
        .approve_prevention(&r.prevention_id, "bob", None, now + Duration::seconds(6))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    h.close().await.unwrap();
    let store = open(&path).await;
    let coord2 = Arc::new(Counting::default());
    let h = healer(&store, &c, Some(coord2.clone())).await;
    let e = h
        .approve_prevention(&r.prevention_id, "carol", None, now + Duration::seconds(7))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert_eq!(coord.calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        coord2.calls.load(Ordering::SeqCst),
        0,
        "a replay acts on nothing"
    );
    assert_eq!(
        level(&h).await.map(|l| l.0),
        Some(1),
        "restored from the log"
    );
    let transitions = crate::common::read_all(&path)
        .await
        .into_iter()
        .filter(|e| e.stream_id.starts_with("strategy-GradualDegradation"))
        .count();
    assert_eq!(transitions, 1, "one level change in the strategy's stream");
    h.close().await.unwrap();
}

/// People approve by hand and choose, here the predictions that were going to pass anyway,
/// while restarts do nothing: the executed ones never fail and compared alone with the
/// holdout they show a benefit that is not there. The primary comparison, every prediction
/// assigned to act against the held-back ones, shows none and flags the kind; the executed
/// comparison is there, as the secondary figure. The read model equals a rebuild from the
/// events (every status present).
#[tokio::test]
async fn the_report_compares_by_intention_to_treat_when_people_choose_what_to_approve() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    let coord = Arc::new(Counting::default());
    let c = config(policy(0.3, None));
    let h = healer(&store, &c, Some(coord.clone())).await;
    let mut rng = Rng::fixed(5);
    let base = day0();
    let (mut approved, mut rejected, mut pending) = (0, 0, 0);
    for i in 0..300i64 {
        let at = base + Duration::minutes(i);
        let agent = format!("m-{i}");
        let p = prediction(
            &format!("itt{i}"),
            &agent,
            "agent_down",
            "sequence",
            0.9,
            at,
        );
        let r = h.propose_preventions(&[p], at).await.unwrap().remove(0);
        // The restart does nothing: half of the predicted failures happen either way.
        let will_fail = rng.between(0, 99) < 50;
        if r.status == "proposed" {
            if !will_fail {
                h.approve_prevention(&r.prevention_id, "alice", None, at)
                    .await
                    .unwrap();
                approved += 1;
            } else if i % 2 == 0 {
                h.reject_prevention(&r.prevention_id, "alice", "looks risky", at)
                    .await
                    .unwrap();
                rejected += 1;
            } else {
                pending += 1;
            }
        } else {
            assert_eq!(r.status, "held_back", "{r:#?}");
        }
        if will_fail {
            fail(
                &store,
                &format!("itt-f{i}"),
                "agent_down",
                &agent,
                at + Duration::minutes(5),
            )
            .await;
        }
    }
    let w = Window::new(base - Duration::hours(1), base + Duration::hours(6)).unwrap();
    let a = Analytics::new(&store);
    let report = a.prevention_report(&w).await.unwrap();
    assert_eq!(report.executed, approved);
    assert_eq!(report.rejected, rejected);
    assert_eq!(report.pending, pending);
    let e = &report.effects[0];
    assert_eq!(report.effects.len(), 1, "{report:#?}");
    assert_eq!(e.assigned, approved + rejected + pending, "{e:#?}");
    assert_eq!(e.assigned + e.held_back, 300);
    assert!(e.held_back >= 60, "{e:#?}");
    // Executed alone: never followed by the failure, a "benefit" that is the people's choice.
    assert_eq!(e.prevented, approved);
    assert_eq!(e.prevented_failed, 0);
    assert!(e.executed_ci_low > 0.0, "{e:#?}");
    // Assigned to act against held back: no benefit shown, flagged.
    assert!((e.assigned_rate - 0.5).abs() < 0.1, "{e:#?}");
    assert!(e.ci_low <= 0.0 && e.ci_high >= 0.0, "{e:#?}");
    assert_eq!(e.verdict, "no_benefit_shown");
    assert!(e.flagged);
    assert_eq!(e.actions_taken, approved);
    assert_eq!(coord.restarts.load(Ordering::SeqCst) as i64, approved);
    let recs = a
        .recommendations(&w, &healstore::analytics::advice::AdviceOptions::default())
        .await
        .unwrap();
    assert!(
        recs.iter()
            .any(|r| r.rule == "ineffective_prevention" && r.severity == "warning"),
        "{recs:#?}"
    );

    // The read model is what a rebuild from the events gives.
    let list = prevention::list(&store, None, None).await.unwrap();
    let digests = healstore::analytics::read_model_digests(store.read_pool())
        .await
        .unwrap();
    assert!(
        digests
            .iter()
            .any(|d| d.table == "preventions" && d.rows == 300),
        "{digests:?}"
    );
    h.close().await.unwrap();
    let store = open(&path).await;
    Analytics::new(&store).rebuild().await.unwrap();
    assert_eq!(
        healstore::analytics::read_model_digests(store.read_pool())
            .await
            .unwrap(),
        digests
    );
    assert_eq!(prevention::list(&store, None, None).await.unwrap(), list);
    store.close().await.unwrap();
}

/// Archiving a log that holds preventions keeps the report, the list and the dashboard's
/// prevention figures exactly as they were (the read model keeps the rows of archived
/// events); an archived prevention can no longer be approved, and the refusal writes nothing.
#[test]
fn archiving_preventions_keeps_the_report_the_list_and_the_dashboard() {
    let (dir, path) = temp_db();
    let base = day0();
    crate::common::block_on(async {
        // The healer's own facts (actions carried out, outcomes) are dated by its clock.
        let clock = Arc::new(healstore::ManualClock::new(base));
        let store = Store::open(
            &path,
            healstore::StoreOptions {
                clock: clock.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let auto = AutoApproval {
            min_probability: 0.8,
            actions: vec!["restart_agent".into()],
            max_per_agent_per_hour: 10,
        };
        let h = healer(
            &store,
            &config(policy(0.3, Some(auto))),
            Some(Arc::new(Counting::default())),
        )
        .await;
        let mut rng = Rng::fixed(3);
        for i in 0..60i64 {
            let at = base + Duration::minutes(i);
            clock.set(at);
            let agent = format!("r-{i}");
            // One in four below the policy's probability: left pending for a person.
            let prob = if i % 4 == 0 { 0.7 } else { 0.9 };
            let p = prediction(
                &format!("ar{i}"),
                &agent,
                "agent_down",
                "sequence",
                prob,
                at,
            );
            h.propose_preventions(&[p], at).await.unwrap();
            if rng.between(0, 99) < 40 {
                fail(
                    &store,
                    &format!("ar-f{i}"),
                    "agent_down",
                    &agent,
                    at + Duration::minutes(3),
                )
                .await;
            }
        }
        h.close().await.unwrap();
    });
    let since = healstore::time::format_time(base - Duration::hours(1));
    let until = healstore::time::format_time(base + Duration::hours(3));
    let json = |args: &[&str]| -> Value {
        let mut all = vec!["--format", "json", "--now", &until];
        all.extend_from_slice(args);
        serde_json::from_str(&expect_success(&run(&path, &all))).unwrap()
    };
    let report = || json(&["prevent", "report", "--since", &since, "--until", &until]);
    let list = || json(&["prevent", "list"]);
    let dashboard =
        || json(&["dashboard", "--since", &since, "--until", &until])["preventions"].clone();
    let (r0, l0, d0) = (report(), list(), dashboard());
    assert_eq!(r0["proposed"], 60, "{r0}");
    assert!(r0["executed"].as_i64().unwrap() > 10, "{r0}");
    assert!(r0["held_back"].as_i64().unwrap() > 5, "{r0}");
    assert!(r0["pending"].as_i64().unwrap() > 5, "{r0}");
    assert!(!r0["effects"].as_array().unwrap().is_empty(), "{r0}");
    assert_eq!(d0, r0, "the dashboard's figures are the report's");
    let pending = l0["preventions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["status"] == "pending")
        .unwrap()["prevention_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let file = dir.path().join("preventions.jsonl.gz");
    let cut = healstore::time::format_time(base + Duration::hours(2));
    let a = json(&["archive", "--before", &cut, "--to", file.to_str().unwrap()]);
    assert!(a["events"].as_i64().unwrap() > 0, "{a}");
    let left: i64 = crate::common::block_on(async {
        let store = open(&path).await;
        let n =
            sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE stream_id LIKE 'prevention-%'")
                .fetch_one(store.read_pool())
                .await
                .unwrap();
        store.close().await.unwrap();
        n
    });
    assert_eq!(left, 0, "every prevention event was archived");
    assert_eq!(report(), r0);
    assert_eq!(list(), l0);
    assert_eq!(dashboard(), d0);

    let files = crate::common::db_files(&path);
    let out = run(
        &path,
        &[
            "--now", &until, "prevent", "approve", &pending, "--by", "alice",
        ],
    );
    assert!(!out.status.success());
    crate::common::assert_same_files(&files, &crate::common::db_files(&path), "refused approval");
    assert_eq!(list(), l0);
}
