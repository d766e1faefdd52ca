//! Analytics over time windows: hand-computed fixtures for every metric, window edges, empty
//! windows, the hourly rollups against a brute-force count, trends, recommendations, circuits,
//! and the read models against a rebuild from the events.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use healstore::analytics::advice::AdviceOptions;
use healstore::analytics::{Analytics, EffectivenessOptions, MttrBy, MttrTo, read_model_digests};
use healstore::events::{
    CircuitTransitioned, FailureDetected, FailureResolved, HealingAttempted, HealingCompleted,
    Severity,
};
use healstore::{ExpectedVersion, HealEvent, NewEvent, Store, Window};
use serde_json::Map;

use crate::common::{Rng, open, t0, temp_db};

// ----- building logs by hand -------------------------------------------------------------------

pub fn ms(n: i64) -> Duration {
    Duration::milliseconds(n)
}

/// Writes the story of one failure into its stream: detection, then the given results
/// (strategy, success, duration, at), then a remediation (`failure_resolved`) if `resolved`
/// is given, then a recovery (`failure_recovered`) if `recovered` is.
pub struct Story<'a> {
    pub id: &'a str,
    pub failure_type: &'a str,
    pub agent: Option<&'a str>,
    pub task: Option<&'a str>,
    pub detected_at: DateTime<Utc>,
    pub results: Vec<(&'a str, bool, i64, DateTime<Utc>)>,
    pub resolved: Option<(&'a str, DateTime<Utc>)>,
    pub recovered: Option<(&'a str, DateTime<Utc>)>,
    pub decision: &'a str,
}

impl<'a> Story<'a> {
    pub fn new(id: &'a str, failure_type: &'a str, at: DateTime<Utc>) -> Self {
        Story {
            id,
            failure_type,
            agent: None,
            task: None,
            detected_at: at,
            results: Vec::new(),
            resolved: None,
            recovered: None,
            decision: "act",
        }
    }

    pub fn agent(mut self, a: &'a str) -> Self {
        self.agent = Some(a);
        self
    }

    pub fn task(mut self, t: &'a str) -> Self {
        self.task = Some(t);
        self
    }

    /// A remediation: the healing actions of `strategy` succeeded at `at`.
    pub fn remediated(self, strategy: &'a str, at: DateTime<Utc>) -> Self {
        self.resolved(strategy, at)
    }

    /// A recovery at `at`, known `how` (`signal`, `status`, `confirmed`).
    pub fn recovered(mut self, how: &'a str, at: DateTime<Utc>) -> Self {
        self.recovered = Some((how, at));
        self
    }

    pub fn result(mut self, strategy: &'a str, ok: bool, ms: i64, at: DateTime<Utc>) -> Self {
        self.results.push((strategy, ok, ms, at));
        self
    }

    pub fn resolved(mut self, strategy: &'a str, at: DateTime<Utc>) -> Self {
        self.resolved = Some((strategy, at));
        self
    }

    pub fn decision(mut self, d: &'a str) -> Self {
        self.decision = d;
        self
    }

    pub fn events(&self) -> Vec<NewEvent> {
        let agent = self.agent.map(str::to_owned);
        let mut out = vec![
            HealEvent::FailureDetected(FailureDetected {
                failure_id: self.id.into(),
                failure_type: self.failure_type.into(),
                severity: Severity::High,
                agent_id: agent.clone(),
                task_id: self.task.map(str::to_owned),
                source_event: None,
                metadata: Map::new(),
            })
            .to_new_event(self.detected_at),
        ];
        for (strategy, ok, ms, at) in &self.results {
            out.push(
                HealEvent::HealingAttempted(HealingAttempted {
                    failure_id: self.id.into(),
                    strategy: (*strategy).into(),
                    agent_id: agent.clone(),
                    failure_type: Some(self.failure_type.into()),
                    decision: self.decision.into(),
                    reason: "test".into(),
                    actions: Vec::new(),
                    details: Map::new(),
                })
                .to_new_event(*at - Duration::milliseconds(*ms)),
            );
            out.push(
                HealEvent::HealingCompleted(HealingCompleted {
                    failure_id: self.id.into(),
                    strategy: (*strategy).into(),
                    agent_id: agent.clone(),
                    failure_type: Some(self.failure_type.into()),
                    success: *ok,
                    duration_ms: *ms,
                    actions_taken: Vec::new(),
                    metadata: Map::new(),
                })
                .to_new_event(*at),
            );
        }
        if let Some((strategy, at)) = self.resolved {
            out.push(
                HealEvent::FailureResolved(FailureResolved {
                    failure_id: self.id.into(),
                    failure_type: self.failure_type.into(),
                    agent_id: agent.clone(),
                    strategy: Some(strategy.into()),
                    detected_at: self.detected_at,
                })
                .to_new_event(at),
            );
        }
        if let Some((how, at)) = self.recovered {
            out.push(recovered_event(self.id, self.agent, how, at));
        }
        out
    }

    pub async fn write(&self, store: &Store) {
        store
            .append(
                &format!("failure-{}", self.id),
                ExpectedVersion::NoStream,
                self.events(),
            )
            .await
            .unwrap();
    }
}

/// A `failure_recovered` fact, written as any producer would write it.
pub fn recovered_event(id: &str, agent: Option<&str>, how: &str, at: DateTime<Utc>) -> NewEvent {
    let mut payload = serde_json::json!({"failure_id": id, "how": how});
    if let Some(a) = agent {
        payload["agent_id"] = serde_json::json!(a);
    }
    NewEvent::new("failure_recovered", at, payload)
}

pub async fn transition(store: &Store, circuit: &str, from: &str, to: &str, at: DateTime<Utc>) {
    let e = HealEvent::CircuitTransitioned(CircuitTransitioned {
        circuit: circuit.into(),
        agent_id: Some(circuit.into()),
        from: from.into(),
        to: to.into(),
        reason: "test".into(),
        details: Map::new(),
    })
    .to_new_event(at);
    let mut payload = e.payload.clone();
    payload["strategy"] = serde_json::json!("CircuitBreaker");
    let e = NewEvent::new("circuit_transitioned", at, payload);
    store
        .append(
            &format!("strategy-CircuitBreaker-{circuit}"),
            ExpectedVersion::Any,
            vec![e],
        )
        .await
        .unwrap();
}

fn window(from: DateTime<Utc>, to: DateTime<Utc>) -> Window {
    Window::new(from, to).unwrap()
}

/// The upstream test data: AgentRestart succeeds in 150 ms and 175 ms, TaskRetry fails in
/// 250 ms. The two agent failures are remediated, and recover (the coordinator reports the
/// agents healthy), 200 ms and 400 ms after detection; the task timeout does neither.
async fn upstream_fixture(store: &Store) {
    let t = t0();
    Story::new("f-1", "agent_down", t)
        .agent("a-1")
        .result("AgentRestart", true, 150, t + ms(180))
        .resolved("AgentRestart", t + ms(200))
        .recovered("status", t + ms(200))
        .write(store)
        .await;
    let t2 = t + Duration::seconds(1);
    Story::new("f-2", "agent_down", t2)
        .agent("a-2")
        .result("AgentRestart", true, 175, t2 + ms(390))
        .resolved("AgentRestart", t2 + ms(400))
        .recovered("status", t2 + ms(400))
        .write(store)
        .await;
    let t3 = t + Duration::seconds(2);
    Story::new("f-3", "task_timeout", t3)
        .agent("a-1")
        .result("TaskRetry", false, 250, t3 + ms(300))
        .write(store)
        .await;
}

// ----- overall statistics ------------------------------------------------------------------------

#[tokio::test]
async fn stats_match_the_hand_computed_upstream_fixture() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    upstream_fixture(&store).await;
    let a = Analytics::new(&store);
    let s = a
        .stats(&window(t0(), t0() + Duration::hours(1)))
        .await
        .unwrap();
    assert_eq!(s.total_failures, 3);
    assert_eq!(s.total_healings, 3);
    assert_eq!(s.successful_healings, 2);
    assert_eq!(s.success_rate, 2.0 / 3.0, "unrounded");
    assert_eq!(s.avg_healing_time_ms, 575.0 / 3.0); // (150 + 175 + 250) / 3
    assert_eq!((s.remediated, s.mttr_remediate_ms), (2, 300.0));
    assert_eq!(s.resolved, 2);
    // Detection to recovery, not the duration of the heal calls (that would be 162.5).
    assert_eq!(s.mttr_ms, 300.0);
    assert_eq!(s.mttr_p50_ms, 200.0);
    assert_eq!(s.mttr_p90_ms, 400.0);
    assert_eq!(s.mttr_p99_ms, 400.0);
    assert_eq!(s.unresolved, 1);
    assert_eq!(
        s.by_strategy,
        BTreeMap::from([("AgentRestart".into(), 2), ("TaskRetry".into(), 1)])
    );
    assert_eq!(
        s.by_failure_type,
        BTreeMap::from([("agent_down".into(), 2), ("task_timeout".into(), 1)])
    );

    let e = a
        .effectiveness(
            &window(t0(), t0() + Duration::hours(1)),
            &EffectivenessOptions::default(),
        )
        .await
        .unwrap();
    let restart = &e.strategies[0];
    assert_eq!(restart.strategy, "AgentRestart");
    assert_eq!(
        (restart.success_count, restart.failure_count),
        (2, 0),
        "{restart:?}"
    );
    assert_eq!(restart.avg_healing_time_ms, 162.5);
    assert_eq!(restart.trend, "insufficient_data");
    assert_eq!(restart.recommendation, "monitor", "too few results");
    assert_eq!(e.strategies[1].success_rate, 0.0);

    // Health: 50 x 2/3 + 30 x (1 - 300/500) + 20 x mean(1.0, 0.0) = 33.33 + 12 + 10.
    let d = a
        .dashboard(
            &window(t0(), t0() + Duration::hours(1)),
            &AdviceOptions::default(),
            t0() + Duration::hours(1),
        )
        .await
        .unwrap();
    let exact = 50.0 * 2.0 / 3.0 + 12.0 + 10.0;
    assert!((d.health_score - exact).abs() < 1e-9, "{}", d.health_score);
    assert_eq!(d.health.mttr_points, 12.0);
    assert_eq!(d.health.strategy_points, 10.0);
    let target = |m: &str| d.targets.iter().find(|t| t.metric == m).unwrap().met;
    assert!(!target("success_rate"));
    assert!(target("mttr_recover_ms"));
    assert!(target("strategy:AgentRestart"));
    assert!(!target("strategy:TaskRetry"));
    assert!(!target("health_score"));
    assert_eq!(d.failures_by_hour[12], 3);
    assert_eq!(d.top_agents[0], ("a-1".to_owned(), 2));
    store.close().await.unwrap();
}

#[tokio::test]
async fn window_start_is_inclusive_and_end_exclusive() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    upstream_fixture(&store).await;
    let a = Analytics::new(&store);
    // Starts exactly at f-1's detection, ends exactly at f-3's: f-1 and f-2 are in.
    let w = window(t0(), t0() + Duration::seconds(2));
    let s = a.stats(&w).await.unwrap();
    assert_eq!(s.total_failures, 2);
    assert_eq!(s.resolved, 2);
    // One microsecond later on both sides: f-1 out, f-3 in.
    let w = window(
        t0() + Duration::microseconds(1),
        t0() + Duration::seconds(2) + Duration::microseconds(1),
    );
    let s = a.stats(&w).await.unwrap();
    assert_eq!(s.by_failure_type.get("agent_down"), Some(&1));
    assert_eq!(s.by_failure_type.get("task_timeout"), Some(&1));
    // A window ending at f-1's resolution excludes it; one covering only that instant has it.
    let s = a
        .stats(&window(t0() + ms(200), t0() + ms(201)))
        .await
        .unwrap();
    assert_eq!((s.total_failures, s.resolved, s.mttr_ms), (0, 1, 200.0));
    store.close().await.unwrap();
}

#[tokio::test]
async fn empty_windows_give_zeros_and_no_nan() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    upstream_fixture(&store).await;
    let a = Analytics::new(&store);
    let w = window(t0() - Duration::days(3), t0() - Duration::days(2));
    let s = a.stats(&w).await.unwrap();
    assert_eq!(
        (s.total_failures, s.total_healings, s.resolved, s.unresolved),
        (0, 0, 0, 0)
    );
    for v in [
        s.success_rate,
        s.avg_healing_time_ms,
        s.mttr_ms,
        s.mttr_p50_ms,
        s.mttr_p99_ms,
    ] {
        assert_eq!(v, 0.0);
    }
    let d = a
        .dashboard(&w, &AdviceOptions::default(), t0())
        .await
        .unwrap();
    let text = serde_json::to_string(&d).unwrap();
    assert!(!text.contains("NaN") && !text.contains("null,"), "{text}");
    assert_eq!(d.health_score, 100.0, "nothing failed");
    let target = |m: &str| d.targets.iter().find(|t| t.metric == m).unwrap();
    assert!(!target("success_rate").measured && !target("mttr_recover_ms").measured);
    assert!(target("health_score").measured && target("health_score").met);
    assert_eq!(d.recommendations.len(), 1);
    assert_eq!(d.recommendations[0].rule, "performing_well");
    assert!(
        a.mttr_series(&w, MttrTo::Recover, None, Duration::hours(1))
            .await
            .unwrap()
            .is_empty()
    );
    store.close().await.unwrap();
}

/// A random log over many hours; every statistic of random windows (aligned to hours or not)
/// must equal a brute-force count over the events read back.
#[tokio::test]
async fn rollups_and_edges_agree_with_a_brute_force_count() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    let mut rng = Rng::seeded("rollups_and_edges");
    let types = ["agent_down", "task_timeout", "resource_exhaustion"];
    let strategies = ["AgentRestart", "TaskRetry", "GradualDegradation"];
    let span_us = 10 * 3_600_000_000i64;
    let mut ids = Vec::new();
    for i in 0..400 {
        ids.push(format!("r-{i}"));
    }
    // (detected, type, results[(strategy, ok, ms, at)], remediated, recovered)
    let mut brute = Vec::new();
    for id in &ids {
        let at = t0() + Duration::microseconds(rng.between(0, span_us as u64 - 1) as i64);
        let k = rng.between(0, 2) as usize;
        let mut story = Story::new(id, types[k], at).agent("a");
        let n = rng.between(0, 2);
        let mut t = at;
        let mut results = Vec::new();
        let mut resolved = None;
        for _ in 0..n {
            let d = 1 + rng.between(0, 4_999) as i64;
            t += Duration::milliseconds(d + rng.between(0, 599_999) as i64);
            let ok = rng.between(0, 2) != 0;
            story = story.result(strategies[k], ok, d, t);
            results.push((strategies[k], ok, d, t));
            if ok {
                resolved = Some(t);
                break;
            }
        }
        if let Some(r) = resolved {
            story = story.resolved(strategies[k], r);
        }
        // Recovered (or not) independently of the remediation, up to two hours later.
        let recovered = (rng.between(0, 2) != 0)
            .then(|| at + Duration::microseconds(rng.between(0, 7_200_000_000) as i64));
        if let Some(r) = recovered {
            story = story.recovered("signal", r);
        }
        story.write(&store).await;
        brute.push((at, types[k], results, resolved, recovered));
    }
    let a = Analytics::new(&store);
    let mut windows = vec![
        window(t0(), t0() + Duration::hours(11)),
        window(t0() + Duration::hours(2), t0() + Duration::hours(5)),
    ];
    for _ in 0..12 {
        let s = rng.between(0, span_us as u64 - 1) as i64;
        let len = 1 + rng.between(0, span_us as u64 - 1) as i64;
        windows.push(window(
            t0() + Duration::microseconds(s),
            t0() + Duration::microseconds(s + len),
        ));
    }
    for w in windows {
        let inside = |t: DateTime<Utc>| t >= w.since && t < w.until;
        let s = a.stats(&w).await.unwrap();
        let j = serde_json::to_value(&s).unwrap();
        let detected = brute.iter().filter(|b| inside(b.0)).count() as i64;
        let results: Vec<_> = brute
            .iter()
            .flat_map(|b| b.2.iter())
            .filter(|r| inside(r.3))
            .collect();
        let oks = results.iter().filter(|r| r.1).count() as i64;
        let dur: i64 = results.iter().map(|r| r.2).sum();
        assert_eq!(s.total_failures, detected, "{w:?}");
        assert_eq!(s.total_healings, results.len() as i64, "{w:?}");
        assert_eq!(s.successful_healings, oks, "{w:?}");
        if !results.is_empty() {
            let avg = dur as f64 / results.len() as f64;
            assert!((s.avg_healing_time_ms - avg).abs() < 0.001, "{w:?}");
        }
        // Remediation (the 4th field) and recovery (the 5th), each with count, mean and
        // nearest-rank percentiles, and the failures detected but not done by the window's end.
        for (name, remediation) in [("remediate", true), ("recover", false)] {
            let times: Vec<i64> = brute
                .iter()
                .filter_map(|b| {
                    let done = if remediation { b.3 } else { b.4 };
                    done.filter(|r| inside(*r))
                        .map(|r| (r - b.0).num_microseconds().unwrap())
                })
                .collect();
            let count = if remediation {
                "remediated"
            } else {
                "recovered"
            };
            assert_eq!(j[count], times.len() as i64, "{name} {w:?}");
            let mean_key = format!("mttr_{name}_ms");
            if times.is_empty() {
                assert_eq!(j[&mean_key], 0.0, "{name} {w:?}");
                continue;
            }
            let mean = times.iter().sum::<i64>() as f64 / times.len() as f64 / 1000.0;
            let got = j[&mean_key].as_f64().unwrap();
            assert!((got - mean).abs() < 0.001, "{name} {w:?}: {got} vs {mean}");
            let mut sorted = times.clone();
            sorted.sort();
            let rank =
                |p: usize| sorted[((sorted.len() * p).div_ceil(100)).max(1) - 1] as f64 / 1000.0;
            for p in [50, 90, 99] {
                assert_eq!(
                    j[format!("mttr_{name}_p{p}_ms")],
                    rank(p),
                    "{name} p{p} {w:?}"
                );
            }
        }
        let unrecovered = brute
            .iter()
            .filter(|b| inside(b.0) && b.4.is_none_or(|r| r >= w.until))
            .count() as i64;
        assert_eq!(j["unrecovered"], unrecovered, "{w:?}");
        let by_type: i64 = s.by_failure_type.values().sum();
        assert_eq!(by_type, detected);
    }
    store.close().await.unwrap();
}

#[tokio::test]
async fn mttr_history_is_bucketed_and_grouped() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    upstream_fixture(&store).await;
    let t = t0() + Duration::hours(1);
    Story::new("f-4", "task_timeout", t)
        .agent("a-3")
        .result("TaskRetry", true, 10, t + ms(900))
        .resolved("TaskRetry", t + ms(900))
        .recovered("signal", t + ms(1000))
        .write(&store)
        .await;
    let a = Analytics::new(&store);
    let w = window(t0(), t0() + Duration::hours(3));
    let series = a
        .mttr_series(&w, MttrTo::Recover, None, Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(series.len(), 2);
    assert_eq!(series[0].bucket_start, "2026-11-01T12:00:00.000000Z");
    assert_eq!((series[0].resolved, series[0].mttr_ms), (2, 300.0));
    assert_eq!((series[1].resolved, series[1].mttr_ms), (1, 1000.0));
    // To remediation: f-4 took 900 ms.
    let series = a
        .mttr_series(&w, MttrTo::Remediate, None, Duration::hours(1))
        .await
        .unwrap();
    assert_eq!((series[1].resolved, series[1].mttr_ms), (1, 900.0));
    let by = a
        .mttr_series(
            &w,
            MttrTo::Recover,
            Some(MttrBy::Strategy),
            Duration::days(1),
        )
        .await
        .unwrap();
    let groups: Vec<_> = by.iter().map(|p| p.group.clone().unwrap()).collect();
    assert_eq!(
        groups,
        ["AgentRestart", "TaskRetry"],
        "the remediating strategy"
    );
    let by = a
        .mttr_series(
            &w,
            MttrTo::Recover,
            Some(MttrBy::FailureType),
            Duration::days(1),
        )
        .await
        .unwrap();
    assert_eq!(by.len(), 2);
    assert_eq!(by[0].group.as_deref(), Some("agent_down"));
    assert_eq!(by[0].mttr_ms, 300.0);
    assert_eq!(by[1].group.as_deref(), Some("task_timeout"));
    let by = a
        .mttr_series(&w, MttrTo::Recover, Some(MttrBy::Agent), Duration::days(1))
        .await
        .unwrap();
    let groups: Vec<_> = by.iter().map(|p| p.group.clone().unwrap()).collect();
    assert_eq!(groups, ["a-1", "a-2", "a-3"]);
    store.close().await.unwrap();
}

// ----- effectiveness and recommendations ---------------------------------------------------------

/// `n` results of `strategy` on `failure_type`, one a minute from `start`, success decided by
/// `ok(i)`.
async fn results(
    store: &Store,
    prefix: &str,
    strategy: &str,
    failure_type: &str,
    start: DateTime<Utc>,
    n: usize,
    ok: impl Fn(usize) -> bool,
) {
    for i in 0..n {
        let at = start + Duration::minutes(i as i64);
        let id = format!("{prefix}-{i}");
        let mut s = Story::new(&id, failure_type, at).agent("a-1").result(
            strategy,
            ok(i),
            100,
            at + ms(100),
        );
        if ok(i) {
            s = s
                .resolved(strategy, at + ms(100))
                .recovered("signal", at + ms(100));
        }
        s.write(store).await;
    }
}

#[tokio::test]
async fn trends_are_computed_in_time_order() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    // Written newest first, so that log order and time order disagree: the trend must follow
    // time. Degrading: the last 10 of 30 fail. Improving: the first 10 of 30 fail.
    for i in (0..30).rev() {
        let at = t0() + Duration::minutes(i);
        let id = format!("d-{i}");
        Story::new(&id, "task_timeout", at)
            .result("TaskRetry", i < 20, 100, at + ms(100))
            .write(&store)
            .await;
    }
    results(&store, "i", "AgentRestart", "agent_down", t0(), 30, |i| {
        i >= 10
    })
    .await;
    let a = Analytics::new(&store);
    let e = a
        .effectiveness(
            &window(t0(), t0() + Duration::hours(1)),
            &EffectivenessOptions::default(),
        )
        .await
        .unwrap();
    let get = |n: &str| e.strategies.iter().find(|s| s.strategy == n).unwrap();
    let retry = get("TaskRetry");
    assert_eq!(retry.trend, "degrading");
    assert_eq!(retry.recent_success_rate, Some(0.0));
    assert_eq!(retry.earlier_success_rate, Some(1.0));
    assert_eq!(retry.recommendation, "investigate"); // 0.667, degrading
    let restart = get("AgentRestart");
    assert_eq!(restart.trend, "improving");
    assert_eq!(restart.recommendation, "monitor"); // 0.667, not degrading
    // Per (strategy, failure type), with the best strategy per failure type.
    assert_eq!(e.pairs.len(), 2);
    assert_eq!(e.pairs[0].failure_type, "agent_down");
    assert_eq!(e.pairs[1].trend, "degrading");
    assert_eq!(e.best_for.get("task_timeout").unwrap(), "TaskRetry");
    store.close().await.unwrap();
}

#[tokio::test]
async fn every_verdict_and_the_best_strategy_per_failure_type() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    let t = t0();
    results(&store, "k", "Keeper", "x", t, 20, |_| true).await;
    results(&store, "r", "Replaced", "x", t, 20, |i| i % 3 == 0).await;
    results(&store, "t", "Tuned", "y", t, 30, |i| i < 25 || i == 29).await; // 0.87, degrading
    results(&store, "m", "Monitored", "y", t, 20, |i| i % 5 != 0).await; // 0.8, stable
    let a = Analytics::new(&store);
    let e = a
        .effectiveness(
            &window(t, t + Duration::hours(1)),
            &EffectivenessOptions::default(),
        )
        .await
        .unwrap();
    let verdict: BTreeMap<_, _> = e
        .strategies
        .iter()
        .map(|s| (s.strategy.as_str(), s.recommendation.as_str()))
        .collect();
    assert_eq!(
        verdict,
        BTreeMap::from([
            ("Keeper", "keep"),
            ("Monitored", "monitor"),
            ("Replaced", "replace"),
            ("Tuned", "tune"),
        ])
    );
    assert_eq!(e.best_for.get("x").unwrap(), "Keeper");
    assert_eq!(e.best_for.get("y").unwrap(), "Tuned");
    let recs = a
        .recommendations(
            &window(t, t + Duration::hours(1)),
            &AdviceOptions::default(),
        )
        .await
        .unwrap();
    let rules: Vec<_> = recs.iter().map(|r| r.rule.as_str()).collect();
    assert!(rules.contains(&"replace_strategy"), "{rules:?}");
    assert!(rules.contains(&"tune_strategy"), "{rules:?}");
    assert!(!rules.contains(&"performing_well"), "{rules:?}");
    store.close().await.unwrap();
}

async fn rules_for(store: &Store, w: Window) -> Vec<String> {
    Analytics::new(store)
        .recommendations(&w, &AdviceOptions::default())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.rule)
        .collect()
}

#[tokio::test]
async fn each_recommendation_rule_fires_on_data_that_calls_for_it() {
    let t = t0();
    let w = window(t, t + Duration::hours(2));

    // Low overall success, the most common failure, unrecovered failures.
    let (_d1, p1) = temp_db();
    let s = open(&p1).await;
    results(&s, "l", "TaskRetry", "task_timeout", t, 20, |i| i % 2 == 0).await;
    let rules = rules_for(&s, w).await;
    for r in [
        "low_success_rate",
        "most_common_failure",
        "unrecovered_failures",
        "enable_circuit_breaker",
    ] {
        assert!(rules.iter().any(|x| x == r), "{r} missing from {rules:?}");
    }
    s.close().await.unwrap();

    // Excellent success, resource exhaustion without degradation, performing well otherwise
    // (enable_degradation is a warning, so it is checked apart).
    let (_d2, p2) = temp_db();
    let s = open(&p2).await;
    results(&s, "e", "AgentRestart", "agent_down", t, 20, |_| true).await;
    let rules = rules_for(&s, w).await;
    assert!(
        rules.contains(&"excellent_success_rate".to_owned()),
        "{rules:?}"
    );
    assert!(rules.contains(&"performing_well".to_owned()), "{rules:?}");
    results(
        &s,
        "x",
        "ResourceRebalance",
        "resource_exhaustion",
        t,
        2,
        |_| true,
    )
    .await;
    let rules = rules_for(&s, w).await;
    assert!(
        rules.contains(&"enable_degradation".to_owned()),
        "{rules:?}"
    );
    assert!(!rules.contains(&"performing_well".to_owned()), "{rules:?}");
    // Once GradualDegradation acts on them, the advice is gone.
    results(
        &s,
        "g",
        "GradualDegradation",
        "resource_exhaustion",
        t,
        1,
        |_| true,
    )
    .await;
    let rules = rules_for(&s, w).await;
    assert!(
        !rules.contains(&"enable_degradation".to_owned()),
        "{rules:?}"
    );
    s.close().await.unwrap();

    // High MTTR, rising MTTR.
    let (_d3, p3) = temp_db();
    let s = open(&p3).await;
    for i in 0..10 {
        let at = t + Duration::minutes(i * 10);
        let ttr = if i < 5 { 1_000 } else { 12_000 };
        let id = format!("m-{i}");
        Story::new(&id, "agent_down", at)
            .result("AgentRestart", true, 50, at + ms(50))
            .resolved("AgentRestart", at + ms(50))
            .recovered("signal", at + ms(ttr))
            .write(&s)
            .await;
    }
    let rules = rules_for(&s, window(t, t + Duration::minutes(100))).await;
    assert!(rules.contains(&"high_mttr".to_owned()), "{rules:?}");
    assert!(rules.contains(&"rising_mttr".to_owned()), "{rules:?}");
    s.close().await.unwrap();

    // Healer limits reached, and a flapping circuit.
    let (_d4, p4) = temp_db();
    let s = open(&p4).await;
    Story::new("w-1", "agent_down", t)
        .decision("withheld")
        .result("AgentRestart", false, 0, t + ms(1))
        .write(&s)
        .await;
    for k in 0..3 {
        let base = t + Duration::minutes(10 * k);
        transition(&s, "a-9", "closed", "open", base).await;
        transition(&s, "a-9", "open", "closed", base + Duration::minutes(1)).await;
    }
    let rules = rules_for(&s, w).await;
    assert!(
        rules.contains(&"healer_limits_reached".to_owned()),
        "{rules:?}"
    );
    assert!(rules.contains(&"flapping_circuit".to_owned()), "{rules:?}");
    s.close().await.unwrap();
}

// ----- circuits ------------------------------------------------------------------------------------

#[tokio::test]
async fn circuit_time_in_state_reopens_and_flapping() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    let t = t0();
    let s = Duration::seconds;
    transition(&store, "a-1", "closed", "open", t + s(10)).await;
    transition(&store, "a-1", "open", "half_open", t + s(70)).await;
    transition(&store, "a-1", "half_open", "open", t + s(75)).await;
    transition(&store, "a-1", "open", "half_open", t + s(135)).await;
    transition(&store, "a-1", "half_open", "closed", t + s(140)).await;
    transition(&store, "a-2", "closed", "open", t + s(190)).await;
    let a = Analytics::new(&store);
    let r = a.circuits(&window(t, t + s(200)), 2).await.unwrap();
    let c1 = r.circuits.iter().find(|c| c.circuit == "a-1").unwrap();
    assert_eq!((c1.opens, c1.reopens, c1.transitions), (2, 1, 5));
    assert_eq!((c1.open_ms, c1.half_open_ms), (120_000, 10_000));
    assert_eq!(c1.state, "closed");
    assert!(c1.flapping);
    assert_eq!(c1.spans.len(), 6);
    let c2 = r.circuits.iter().find(|c| c.circuit == "a-2").unwrap();
    assert_eq!(
        (c2.opens, c2.open_ms, c2.state.as_str()),
        (1, 10_000, "open")
    );
    assert!(!c2.flapping);
    assert_eq!(r.flapping, ["a-1"]);
    assert_eq!((r.total_opens, r.total_reopens), (3, 1));

    // A window starting while a-1 is open: its state comes from the transition before.
    let r = a.circuits(&window(t + s(30), t + s(72)), 3).await.unwrap();
    let c1 = r.circuits.iter().find(|c| c.circuit == "a-1").unwrap();
    assert_eq!((c1.opens, c1.open_ms, c1.half_open_ms), (0, 40_000, 2_000));
    store.close().await.unwrap();
}

/// A circuit transition as the circuit breaker writes it: an opening carries its deadline.
async fn breaker_transition(
    store: &Store,
    circuit: &str,
    from: &str,
    to: &str,
    at: DateTime<Utc>,
    open_until: Option<DateTime<Utc>>,
) {
    let mut payload = serde_json::json!({
        "type": "circuit_transitioned", "strategy": "CircuitBreaker", "key": circuit,
        "circuit": circuit, "agent_id": circuit, "from": from, "to": to, "reason": "test",
        "details": {}, "at": healstore::time::format_time(at), "reopen_count": 0,
    });
    if let Some(u) = open_until {
        payload["open_until"] = serde_json::json!(healstore::time::format_time(u));
    }
    store
        .append(
            &format!("strategy-CircuitBreaker-{circuit}"),
            ExpectedVersion::Any,
            vec![NewEvent::new("circuit_transitioned", at, payload)],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn an_open_circuit_is_half_open_from_its_deadline_however_late_that_was_recorded() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    let t = t0();
    let s = Duration::seconds;
    // a-1 opens at 10 s until 70 s; an older healstore recorded the half-open period only
    // when it noticed it, at 100 s; a failed trial re-opens it at 110 s until 230 s, and
    // nothing is recorded after.
    breaker_transition(&store, "a-1", "closed", "open", t + s(10), Some(t + s(70))).await;
    breaker_transition(&store, "a-1", "open", "half_open", t + s(100), None).await;
    breaker_transition(
        &store,
        "a-1",
        "half_open",
        "open",
        t + s(110),
        Some(t + s(230)),
    )
    .await;
    let a = Analytics::new(&store);
    let r = a.circuits(&window(t, t + s(300)), 3).await.unwrap();
    let c = &r.circuits[0];
    // Open 10-70 and 110-230 s, half-open 70-110 and 230-300 s.
    assert_eq!((c.open_ms, c.half_open_ms), (180_000, 110_000), "{c:?}");
    assert_eq!((c.opens, c.reopens, c.transitions), (2, 1, 4));
    assert_eq!(c.state, "half_open");
    let states: Vec<(&str, &str, &str)> = c
        .spans
        .iter()
        .map(|x| (x.state.as_str(), &x.from[11..19], &x.until[11..19]))
        .collect();
    assert_eq!(
        states,
        [
            ("closed", "12:00:00", "12:00:10"),
            ("open", "12:00:10", "12:01:10"),
            ("half_open", "12:01:10", "12:01:50"),
            ("open", "12:01:50", "12:03:50"),
            ("half_open", "12:03:50", "12:05:00"),
        ]
    );
    // A window that starts while it is open, past the deadline: half-open from its start.
    let r = a
        .circuits(&window(t + s(240), t + s(250)), 3)
        .await
        .unwrap();
    let c = &r.circuits[0];
    assert_eq!((c.open_ms, c.half_open_ms, c.transitions), (0, 10_000, 0));
    // One that ends exactly at the deadline: open to its end, half-open at that instant.
    let r = a
        .circuits(&window(t + s(200), t + s(230)), 3)
        .await
        .unwrap();
    let c = &r.circuits[0];
    assert_eq!((c.open_ms, c.half_open_ms, c.transitions), (30_000, 0, 0));
    assert_eq!(c.state, "half_open");
    store.close().await.unwrap();
}

// ----- read models -----------------------------------------------------------------------------

#[tokio::test]
async fn read_models_rebuilt_from_events_equal_the_incremental_ones() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    upstream_fixture(&store).await;
    results(&store, "q", "TaskRetry", "task_timeout", t0(), 40, |i| {
        i % 4 != 0
    })
    .await;
    // Out-of-order and odd cases: an outcome recorded for an unknown failure, a second
    // resolution (the first wins), healing recorded before detection in another stream.
    let late = HealEvent::FailureResolved(FailureResolved {
        failure_id: "f-1".into(),
        failure_type: "agent_down".into(),
        agent_id: None,
        strategy: Some("Other".into()),
        detected_at: t0(),
    })
    .to_new_event(t0() + Duration::hours(2));
    store
        .append("failure-f-1", ExpectedVersion::Any, vec![late])
        .await
        .unwrap();
    let orphan = HealEvent::HealingCompleted(HealingCompleted {
        failure_id: "nobody".into(),
        strategy: "TaskRetry".into(),
        agent_id: None,
        failure_type: None,
        success: true,
        duration_ms: 5,
        actions_taken: Vec::new(),
        metadata: Map::new(),
    })
    .to_new_event(t0());
    store
        .append("elsewhere", ExpectedVersion::Any, vec![orphan])
        .await
        .unwrap();
    transition(&store, "a-1", "closed", "open", t0()).await;
    // Recoveries: by each kind of evidence, one of an unknown failure, a second one of a
    // failure (the first wins), one of a schema version the read models do not interpret.
    // q-0, q-4 and f-3 (not recovered by their stories) were detected at 0 s, 240 s and 2 s:
    // they recover in 5, 7 and 9 s; f-2 recovered in its story, its confirmation comes second.
    for (id, how, secs) in [
        ("q-0", "signal", 5),
        ("q-4", "status", 247),
        ("f-3", "confirmed", 11),
        ("f-2", "confirmed", 10),
    ] {
        store
            .append(
                &format!("failure-{id}"),
                ExpectedVersion::Any,
                vec![recovered_event(
                    id,
                    None,
                    how,
                    t0() + Duration::seconds(secs),
                )],
            )
            .await
            .unwrap();
    }
    for (stream, e) in [
        (
            "failure-nobody",
            recovered_event("nobody", None, "signal", t0()),
        ),
        (
            "failure-q-0",
            recovered_event("q-0", None, "confirmed", t0() + Duration::hours(3)),
        ),
        ("failure-q-3", {
            let mut e = recovered_event("q-3", None, "signal", t0());
            e.schema_version = 2;
            e
        }),
    ] {
        store
            .append(stream, ExpectedVersion::Any, vec![e])
            .await
            .unwrap();
    }
    // A circuit opening with its deadline (as the circuit breaker writes it).
    let mut payload = serde_json::json!({
        "type": "circuit_transitioned", "strategy": "CircuitBreaker", "key": "a-2",
        "circuit": "a-2", "agent_id": "a-2", "from": "closed", "to": "open", "reason": "test",
        "details": {}, "at": "2026-11-01T12:00:00.000000Z",
        "open_until": "2026-11-01T12:01:00.250001Z", "reopen_count": 0,
    });
    store
        .append(
            "strategy-CircuitBreaker-a-2",
            ExpectedVersion::Any,
            vec![NewEvent::new("circuit_transitioned", t0(), payload.take())],
        )
        .await
        .unwrap();
    let a = Analytics::new(&store);
    a.learn_and_record(
        &window(t0(), t0() + Duration::days(1)),
        &Default::default(),
        t0() + Duration::days(1),
    )
    .await
    .unwrap();

    let before = read_model_digests(store.read_pool()).await.unwrap();
    assert!(before.iter().find(|d| d.table == "failures").unwrap().rows == 43);
    let report = a.rebuild().await.unwrap();
    assert_eq!(report.failures, 43);
    let after = read_model_digests(store.read_pool()).await.unwrap();
    assert_eq!(before, after);
    let s = serde_json::to_value(
        a.stats(&window(t0(), t0() + Duration::hours(1)))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(s["mttr_remediate_p50_ms"], 100.0, "{s}");
    // f-1 and f-2, the 30 q-failures healed (each in 100 ms), q-0, q-4 and f-3.
    assert_eq!(s["recovered"], 35);
    assert_eq!(s["mttr_recover_p99_ms"], 9_000.0);
    assert_eq!(s["unrecovered"], 40 + 3 - 35);
    store.close().await.unwrap();
}

// ----- the command line ----------------------------------------------------------------------------

mod cli {
    use super::*;
    use crate::common::{assert_same_files, block_on, db_files, expect_error, expect_success, run};

    fn fixture_db() -> (tempfile::TempDir, std::path::PathBuf) {
        let (dir, path) = temp_db();
        block_on(async {
            let store = open(&path).await;
            upstream_fixture(&store).await;
            store.close().await.unwrap();
        });
        (dir, path)
    }

    const SINCE: &str = "2026-11-01T12:00:00Z";
    const UNTIL: &str = "2026-11-01T13:00:00Z";

    fn json(path: &std::path::Path, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--format", "json"];
        all.extend_from_slice(args);
        let out = expect_success(&run(path, &all));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    #[test]
    fn stats_and_effectiveness_as_documented_json() {
        let (_dir, path) = fixture_db();
        let s = json(&path, &["stats", "--since", SINCE, "--until", UNTIL]);
        assert_eq!(s["total_failures"], 3);
        assert_eq!(s["total_healings"], 3);
        assert_eq!(s["mttr_ms"], 300.0);
        assert_eq!(s["mttr_p90_ms"], 400.0);
        assert_eq!(s["unresolved"], 1);
        assert_eq!(s["by_strategy"]["AgentRestart"], 2);
        assert_eq!(s["window"]["time_range_ms"], 3_600_000);
        // `--window` ends at `--now`.
        let s = json(
            &path,
            &["--now", "2026-11-01T12:00:01Z", "stats", "--window", "1h"],
        );
        assert_eq!(s["total_failures"], 1);
        let e = json(
            &path,
            &["effectiveness", "--since", SINCE, "--until", UNTIL],
        );
        assert_eq!(e["strategies"][0]["strategy"], "AgentRestart");
        assert_eq!(e["strategies"][0]["avg_healing_time_ms"], 162.5);
        let m = json(
            &path,
            &[
                "mttr",
                "--since",
                SINCE,
                "--until",
                UNTIL,
                "--by",
                "failure-type",
            ],
        );
        assert_eq!(m["series"][0]["group"], "agent_down");
        let r = json(
            &path,
            &["recommendations", "--since", SINCE, "--until", UNTIL],
        );
        assert!(!r["recommendations"].as_array().unwrap().is_empty());
        let c = json(
            &path,
            &["circuit-report", "--since", SINCE, "--until", UNTIL],
        );
        assert_eq!(c["circuits"].as_array().unwrap().len(), 0);
        // Tables for people.
        let table = expect_success(&run(&path, &["stats", "--since", SINCE, "--until", UNTIL]));
        assert!(
            table.contains("mttr_recover_ms") && table.contains("300.0"),
            "{table}"
        );
        assert!(table.contains("mttr_remediate_ms"), "{table}");
        assert!(table.contains("unrecovered"), "{table}");
        // MTTR to remediation as a series.
        let m = json(
            &path,
            &[
                "mttr",
                "--since",
                SINCE,
                "--until",
                UNTIL,
                "--to",
                "remediate",
            ],
        );
        assert_eq!(m["to"], "remediate");
        assert_eq!(m["series"][0]["mttr_ms"], 300.0);
    }

    #[test]
    fn the_dashboard_page_is_self_contained() {
        let (dir, path) = fixture_db();
        let page = dir.path().join("dash.html");
        let out = expect_success(&run(
            &path,
            &[
                "--now",
                UNTIL,
                "dashboard",
                "--since",
                SINCE,
                "--html",
                page.to_str().unwrap(),
            ],
        ));
        assert!(
            out.contains("health score") && out.contains("55.3"),
            "{out}"
        );
        let html = std::fs::read_to_string(&page).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert_eq!(html.matches("<svg").count(), 3, "three charts have data");
        assert!(html.contains("No circuit left the closed state"));
        for outside in ["http://", "https://", "<script", "src=", "@import"] {
            assert!(!html.contains(outside), "the page refers to {outside}");
        }
        let d = json(&path, &["--now", UNTIL, "dashboard", "--since", SINCE]);
        // JSON carries figures unrounded (55.333...); the table rounds for people.
        let score = d["health_score"].as_f64().unwrap();
        assert!((score - (50.0 * 2.0 / 3.0 + 22.0)).abs() < 1e-9, "{score}");
        assert_eq!(d["overall"]["mttr_ms"], 300.0);
        assert_eq!(d["failures_by_hour"].as_array().unwrap().len(), 24);
        assert!(
            d["targets"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["metric"] == "mttr_recover_ms" && t["met"] == true)
        );
    }

    #[test]
    fn bad_windows_are_refused_and_change_nothing() {
        let (_dir, path) = fixture_db();
        let before = db_files(&path);
        for (args, needle) in [
            (vec!["stats", "--window", "0h"], "is not a length"),
            (vec!["stats", "--window", "soon"], "is not a length"),
            (vec!["stats", "--window", "99999999999d"], "is not a length"),
            (
                vec!["stats", "--since", UNTIL, "--until", SINCE],
                "is not before",
            ),
            (vec!["stats", "--since", "yesterday"], "RFC 3339"),
            (
                vec!["stats", "--window", "1h", "--since", SINCE],
                "cannot be used with",
            ),
            (vec!["mttr", "--bucket", "0s"], "is not a length"),
            (vec!["mttr", "--by", "planet"], "invalid value"),
            (
                vec!["patterns", "--min-confidence", "1.5"],
                "between 0 and 1",
            ),
            (vec!["effectiveness", "--min-results", "0"], "invalid value"),
            (
                vec!["dashboard", "--html", "/nonexistent-dir/x.html"],
                "cannot write",
            ),
        ] {
            expect_error(&run(&path, &args), needle);
        }
        assert_same_files(&before, &db_files(&path), "bad analytics arguments");
    }

    #[test]
    fn rebuild_reproduces_the_read_models_and_demo_ends_with_the_dashboard() {
        let (_dir, path) = temp_db();
        let out = expect_success(&run(
            &path,
            &[
                "--now",
                "2026-11-01T12:00:00Z",
                "--format",
                "json",
                "demo",
                "--ticks",
                "40",
                "--seed",
                "3",
            ],
        ));
        let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
        let d = &summary["dashboard"];
        assert!(d["overall"]["total_failures"].as_i64().unwrap() > 0, "{d}");
        assert!(d["health_score"].as_f64().is_some());
        assert!(
            d["overall"]["mttr_ms"].as_f64().unwrap() > 0.0,
            "healing takes time"
        );
        let digests = || {
            block_on(async {
                let store = open(&path).await;
                let d = read_model_digests(store.read_pool()).await.unwrap();
                store.close().await.unwrap();
                d
            })
        };
        let before = digests();
        let r = json(&path, &["rebuild"]);
        assert_eq!(r["failures"], d["overall"]["total_failures"]);
        assert_eq!(r["snapshots_dropped"], true);
        assert_eq!(before, digests());
        let table = expect_success(&run(
            &path,
            &["--now", "2026-11-01T12:01:00Z", "demo", "--ticks", "5"],
        ));
        assert!(table.contains("Healing dashboard"), "{table}");
        assert!(table.contains("Recommendations"), "{table}");
    }

    #[test]
    fn patterns_and_predictions_from_the_command_line() {
        let (_dir, path) = fixture_db();
        let p = json(&path, &["--now", UNTIL, "patterns", "--window", "7d"]);
        assert_eq!(p["patterns"].as_array().unwrap().len(), 0);
        assert_eq!(p["recorded"], 0);
        let r = json(&path, &["--now", UNTIL, "predict", "--agent", "a-1"]);
        assert_eq!(r["predictions"].as_array().unwrap().len(), 0);
        assert_eq!(r["accuracy"], 0.0);
        let out = expect_success(&run(&path, &["--now", UNTIL, "predict"]));
        assert!(out.contains("No failure is predicted"), "{out}");
    }
}

#[tokio::test]
async fn times_to_recover_spanning_millennia_neither_fail_appends_nor_overflow_sums() {
    use chrono::TimeZone;
    // Given failures detected in the year 0 and remediated and recovered in the year 9999
    // (each time is about 2^58 microseconds), forty of them in one hour: their sums are past
    // what a 64-bit integer holds,
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    let detected = Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap();
    let hour = Utc.with_ymd_and_hms(9999, 12, 31, 22, 0, 0).unwrap();
    for i in 0..40i64 {
        let id = format!("old-{i}");
        Story::new(&id, "agent_down", detected + Duration::hours(i))
            .resolved("AgentRestart", hour + Duration::minutes(i))
            .recovered("signal", hour + Duration::minutes(i))
            .write(&store)
            .await;
    }
    // then every append succeeded and the hour's sums saturated at 2^62 microseconds,
    let mut conn = crate::common::raw_connection(&path).await;
    let sums: (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT remediated, remediate_us_sum, recovered, recover_us_sum FROM failure_hourly \
         WHERE remediated > 0",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    sqlx::Connection::close(conn).await.unwrap();
    assert_eq!(sums, (40, 1i64 << 62, 40, 1i64 << 62));
    // the statistics over the hour, over part of it and over a longer window answer (the
    // per-failure rows exactly, the hour's rollup with its saturated sum),
    let a = Analytics::new(&store);
    for (w, saturated) in [
        (window(hour, hour + Duration::hours(1)), true),
        (window(hour, hour + Duration::minutes(50)), false),
        (
            window(hour - Duration::days(3), hour + Duration::minutes(90)),
            true,
        ),
        (
            window(hour + Duration::minutes(1), hour + Duration::minutes(59)),
            false,
        ),
    ] {
        let s = a.stats(&w).await.unwrap();
        assert!(
            s.resolved > 0 && s.mttr_ms.is_finite() && s.mttr_ms > 0.0,
            "{s:?}"
        );
        assert_eq!(s.mttr_remediate_ms, s.mttr_recover_ms, "the same times");
        if saturated {
            let mean_ms = (1i64 << 62) as f64 / 40.0 / 1000.0;
            assert_eq!(s.mttr_ms, (mean_ms * 1000.0).round() / 1000.0);
        } else {
            let expected = (0..40i64)
                .filter(|i| {
                    let at = hour + Duration::minutes(*i);
                    at >= w.since && at < w.until
                })
                .map(|i| {
                    ((hour + Duration::minutes(i)) - (detected + Duration::hours(i)))
                        .num_microseconds()
                        .unwrap() as f64
                })
                .collect::<Vec<_>>();
            let mean = expected.iter().sum::<f64>() / expected.len() as f64 / 1000.0;
            assert!(
                (s.mttr_ms - mean).abs() / mean < 1e-9,
                "{} against {mean}",
                s.mttr_ms
            );
        }
        // and so do the MTTR series, the dashboard and the recommendations.
        let series = a
            .mttr_series(&w, MttrTo::Recover, None, Duration::minutes(10))
            .await
            .unwrap();
        assert_eq!(series.iter().map(|p| p.resolved).sum::<i64>(), s.resolved);
        a.mttr_means(&w, Duration::hours(1)).await.unwrap();
        a.dashboard(&w, &AdviceOptions::default(), hour)
            .await
            .unwrap();
    }
    // A rebuild computes the same saturated sums.
    let before = read_model_digests(store.read_pool()).await.unwrap();
    a.rebuild().await.unwrap();
    assert_eq!(read_model_digests(store.read_pool()).await.unwrap(), before);
    store.close().await.unwrap();
}
