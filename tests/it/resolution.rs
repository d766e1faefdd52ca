//! What "resolved" means. A failure is *remediated* when the healing actions succeeded (a
//! restart went through, a retry was scheduled, a circuit opened) and *recovered* when there
//! is evidence that the failed agent or task works again: a success signal after the failure,
//! a healthy status from the coordinator after a remediation, or a caller's confirmation.
//! Each has its own time from detection; MTTR is the time to recover.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use healstore::analytics::Analytics;
use healstore::config::Config;
use healstore::heal::{Coordinator, Failure, Healer, NoopCoordinator, Severity};
use healstore::{Durability, ManualClock, Store, StoreOptions, Window};
use serde_json::{Value, json};

use crate::analytics::{Story, ms};
use crate::common::{
    assert_same_files, db_files, expect_error, expect_success, open, read_all, run, t0, temp_db,
};

fn window(from: DateTime<Utc>, to: DateTime<Utc>) -> Window {
    Window::new(from, to).unwrap()
}

async fn stats(store: &Store, w: Window) -> Value {
    serde_json::to_value(Analytics::new(store).stats(&w).await.unwrap()).unwrap()
}

/// Four failures with explicit times:
///
/// | failure | detected | remediated | recovered |
/// |---|---|---|---|
/// | f-1 agent_down a-1 | 0 | 200 ms | 5 s (signal) |
/// | f-2 agent_down a-2 | 1 s | 1.4 s | 1.4 s (status) |
/// | f-3 task_timeout a-1 | 2 s | 2.1 s | never |
/// | f-4 agent_down a-3 | 3 s | never | 63 s (confirmed) |
async fn hand_made_history(store: &Store) {
    let t = t0();
    let s = Duration::seconds;
    Story::new("f-1", "agent_down", t)
        .agent("a-1")
        .result("AgentRestart", true, 150, t + ms(200))
        .remediated("AgentRestart", t + ms(200))
        .recovered("signal", t + s(5))
        .write(store)
        .await;
    Story::new("f-2", "agent_down", t + s(1))
        .agent("a-2")
        .result("AgentRestart", true, 300, t + ms(1400))
        .remediated("AgentRestart", t + ms(1400))
        .recovered("status", t + ms(1400))
        .write(store)
        .await;
    Story::new("f-3", "task_timeout", t + s(2))
        .agent("a-1")
        .task("task-9")
        .result("TaskRetry", true, 50, t + ms(2100))
        .remediated("TaskRetry", t + ms(2100))
        .write(store)
        .await;
    Story::new("f-4", "agent_down", t + s(3))
        .agent("a-3")
        .recovered("confirmed", t + s(63))
        .write(store)
        .await;
}

#[tokio::test]
async fn time_to_remediate_and_time_to_recover_from_a_hand_made_history() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    hand_made_history(&store).await;
    let s = stats(&store, window(t0(), t0() + Duration::hours(1))).await;
    // Remediation: 200, 400 and 100 ms.
    assert_eq!(s["remediated"], 3, "{s}");
    assert_eq!(s["mttr_remediate_ms"], 700.0 / 3.0);
    assert_eq!(s["mttr_remediate_p50_ms"], 200.0);
    assert_eq!(s["mttr_remediate_p90_ms"], 400.0);
    assert_eq!(s["mttr_remediate_p99_ms"], 400.0);
    // Recovery: 5,000, 400 and 60,000 ms; the task is remediated but has not recovered.
    assert_eq!(s["recovered"], 3);
    assert_eq!(s["mttr_recover_ms"], 21_800.0);
    assert_eq!(s["mttr_recover_p50_ms"], 5_000.0);
    assert_eq!(s["mttr_recover_p90_ms"], 60_000.0);
    assert_eq!(s["mttr_recover_p99_ms"], 60_000.0);
    assert_eq!(s["unrecovered"], 1);
    // `resolved` and `mttr_ms` are the recovery figures.
    assert_eq!(s["resolved"], 3);
    assert_eq!(s["mttr_ms"], 21_800.0);
    assert_eq!(s["mttr_p50_ms"], 5_000.0);
    assert_eq!(s["unresolved"], 1);

    // A window ending at f-1's recovery (exclusive) counts only f-2's; f-1, f-3 and f-4 are
    // not recovered by its end. Remediations are counted at their own times.
    let s = stats(&store, window(t0(), t0() + Duration::seconds(5))).await;
    assert_eq!(
        (s["recovered"].clone(), s["mttr_recover_ms"].clone()),
        (json!(1), json!(400.0))
    );
    assert_eq!(s["unrecovered"], 3);
    assert_eq!(s["remediated"], 3);
    // A window holding only f-4's recovery.
    let s = stats(
        &store,
        window(t0() + Duration::seconds(60), t0() + Duration::seconds(64)),
    )
    .await;
    assert_eq!(
        (s["total_failures"].clone(), s["recovered"].clone()),
        (json!(0), json!(1))
    );
    assert_eq!(s["mttr_recover_ms"], 60_000.0);
    assert_eq!(s["remediated"], 0);
    assert_eq!(s["mttr_remediate_ms"], 0.0);

    // The dashboard's MTTR target (500 ms) applies to recovery: 21.8 s misses it and earns no
    // health points, although remediation took 233 ms.
    let d = Analytics::new(&store)
        .dashboard(
            &window(t0(), t0() + Duration::hours(1)),
            &Default::default(),
            t0() + Duration::hours(1),
        )
        .await
        .unwrap();
    let target = d
        .targets
        .iter()
        .find(|t| t.metric == "mttr_recover_ms")
        .expect("a recovery target");
    assert_eq!(target.value, 21_800.0);
    assert!(!target.met && target.measured);
    assert_eq!(d.health.mttr_points, 0.0);
    let rules: Vec<&str> = d.recommendations.iter().map(|r| r.rule.as_str()).collect();
    assert!(rules.contains(&"high_mttr"), "{rules:?}");
    store.close().await.unwrap();
}

// ----- recovery recorded by the healer ----------------------------------------------------------

fn options(clock: Arc<ManualClock>) -> StoreOptions {
    StoreOptions {
        clock,
        durability: Durability::Normal,
        ..Default::default()
    }
}

/// The default configuration, deciding only (no coordinator: actions are delegated).
async fn deciding_healer(path: &std::path::Path, clock: Arc<ManualClock>) -> Healer {
    let store = Store::open(path, options(clock)).await.unwrap();
    Config::default().builder().open(store).await.unwrap()
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(secs)
}

/// The `failure_recovered` events of each failure, in order.
async fn recoveries(path: &std::path::Path) -> Vec<healstore::RecordedEvent> {
    read_all(path)
        .await
        .into_iter()
        .filter(|e| e.event_type == "failure_recovered")
        .collect()
}

#[tokio::test]
async fn a_success_signal_recovers_the_open_failures_of_its_agent_or_task_once() {
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let h = deciding_healer(&path, clock.clone()).await;
    let down = |id: &str, agent: &str, t: i64| {
        Failure::new("agent_down", Severity::High, at(t))
            .with_agent(agent)
            .with_id(id)
    };
    h.heal(down("f-1", "a-1", 0)).await.unwrap();
    h.heal(
        Failure::new("task_timeout", Severity::Medium, at(1))
            .with_agent("a-1")
            .with_task("t-1")
            .with_id("f-2"),
    )
    .await
    .unwrap();
    h.heal(down("f-3", "a-2", 2)).await.unwrap();
    // f-1's delegated restart went through: remediated, not yet recovered.
    h.record_outcome("f-1", true, Some(100), at(3))
        .await
        .unwrap();
    assert!(recoveries(&path).await.is_empty());

    // a-1 works again: f-1 (a failure of the agent) recovers; f-2 (a failure of task t-1)
    // waits for its task, f-3 is another agent's.
    let r = h.record_success("a-1", None, at(10)).await.unwrap();
    assert_eq!(
        serde_json::to_value(&r).unwrap()["recovered"],
        json!(["f-1"])
    );
    let rec = recoveries(&path).await;
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].stream_id, "failure-f-1");
    assert_eq!(rec[0].occurred_at, at(10));
    assert_eq!(rec[0].payload["how"], "signal");
    assert_eq!(rec[0].payload["agent_id"], "a-1");
    let signal = read_all(&path)
        .await
        .into_iter()
        .find(|e| e.event_type == "agent_succeeded")
        .unwrap();
    assert_eq!(rec[0].payload["evidence_event_id"], json!(signal.event_id));

    // The task succeeds (on another agent): f-2 recovers.
    h.record_success("a-9", Some("t-1"), at(20)).await.unwrap();
    // Signals again: nothing recovers twice.
    let again = h.record_success("a-1", Some("t-1"), at(30)).await.unwrap();
    assert_eq!(
        serde_json::to_value(&again).unwrap()["recovered"],
        json!([])
    );
    // A signal older than a failure is no evidence for it.
    h.heal(down("f-4", "a-1", 40)).await.unwrap();
    h.record_success("a-1", None, at(35)).await.unwrap();
    let rec = recoveries(&path).await;
    let ids: Vec<&str> = rec
        .iter()
        .map(|e| e.payload["failure_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["f-1", "f-2"]);

    let s = stats(h.store(), window(t0(), at(3600))).await;
    assert_eq!(s["remediated"], 1);
    assert_eq!(s["mttr_remediate_ms"], 3_000.0);
    assert_eq!(s["recovered"], 2);
    assert_eq!(s["mttr_recover_ms"], 14_500.0); // 10 s and 19 s
    assert_eq!(s["unrecovered"], 2); // f-3, f-4
    h.close().await.unwrap();
}

/// A coordinator that acts and reports every agent in `state`.
struct Reporting(&'static str);

#[async_trait::async_trait]
impl Coordinator for Reporting {
    async fn agent_status(
        &self,
        agent_id: &str,
    ) -> healstore::heal::coordinator::CoordResult<Option<healstore::heal::AgentStatus>> {
        let mut s = NoopCoordinator.agent_status(agent_id).await?;
        if let Some(s) = &mut s {
            s.state = self.0.into();
        }
        Ok(s)
    }
    async fn register_agent(
        &self,
        _: &str,
        _: serde_json::Map<String, Value>,
    ) -> healstore::heal::coordinator::CoordResult<()> {
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

async fn acting_healer(path: &std::path::Path, toml: &str, coordinator: Reporting) -> Healer {
    let clock = Arc::new(ManualClock::new(t0()));
    let store = Store::open(path, options(clock)).await.unwrap();
    Config::parse(toml)
        .unwrap()
        .builder()
        .coordinator(Arc::new(coordinator) as Arc<dyn Coordinator>)
        .open(store)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_healthy_status_after_a_remediation_is_a_recovery_and_an_opened_circuit_is_not() {
    // A restart after which the coordinator reports the agent active: remediated and
    // recovered at once, by status.
    let (_d1, p1) = temp_db();
    let h = acting_healer(&p1, "", Reporting("active")).await;
    let f = Failure::new("agent_down", Severity::High, t0()).with_agent("a-1");
    assert!(h.heal(f).await.unwrap().result.success);
    let rec = recoveries(&p1).await;
    assert_eq!(rec.len(), 1, "{rec:?}");
    assert_eq!(rec[0].payload["how"], "status");
    let s = stats(h.store(), window(t0(), at(60))).await;
    assert_eq!(
        (s["remediated"].clone(), s["recovered"].clone()),
        (json!(1), json!(1))
    );
    h.close().await.unwrap();

    // The same restart, after which the agent is reported failed: remediated only.
    let (_d2, p2) = temp_db();
    let h = acting_healer(&p2, "", Reporting("failed")).await;
    let f = Failure::new("agent_down", Severity::High, t0()).with_agent("a-1");
    assert!(h.heal(f).await.unwrap().result.success);
    assert!(recoveries(&p2).await.is_empty());
    let s = stats(h.store(), window(t0(), at(60))).await;
    assert_eq!(
        (s["remediated"].clone(), s["recovered"].clone()),
        (json!(1), json!(0))
    );
    assert_eq!(s["unrecovered"], 1);
    h.close().await.unwrap();

    // A circuit that opens takes the agent out of rotation: its action succeeded (remediated)
    // but the agent does not work again, whatever its status says.
    let (_d3, p3) = temp_db();
    let toml = "[[route]]\nfailure_types = [\"agent_down\"]\nstrategies = [\"circuit_breaker\"]\n\
                [circuit_breaker]\nfailure_threshold = 1\nsuccess_threshold = 1\n";
    let h = acting_healer(&p3, toml, Reporting("active")).await;
    let f = Failure::new("agent_down", Severity::High, t0()).with_agent("a-1");
    let report = h.heal(f).await.unwrap();
    assert_eq!(report.attempts[0].actions[0].name(), "unregister_agent");
    assert!(report.result.success);
    assert!(recoveries(&p3).await.is_empty());
    // A task failure: a healthy agent says nothing about the task.
    let f = Failure::new("task_timeout", Severity::High, t0())
        .with_agent("a-2")
        .with_task("t-1");
    assert!(h.heal(f).await.unwrap().result.success);
    assert!(recoveries(&p3).await.is_empty());
    h.close().await.unwrap();
}

// ----- recovery confirmed from the command line --------------------------------------------------

fn json_out(db: &std::path::Path, args: &[&str]) -> Value {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    let out = expect_success(&run(db, &all));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn record_recovered_confirms_a_recovery_once() {
    let (_dir, db) = temp_db();
    json_out(
        &db,
        &[
            "record",
            "failure",
            "--type",
            "agent_down",
            "--agent",
            "a-1",
            "--id",
            "f-1",
            "--at",
            "2026-11-01T12:00:00Z",
        ],
    );
    let before = db_files(&db);
    // Unknown failures, and a recovery before the failure, are refused; nothing changes.
    expect_error(
        &run(&db, &["record", "recovered", "--failure", "nope"]),
        "no failure with id",
    );
    expect_error(
        &run(
            &db,
            &[
                "record",
                "recovered",
                "--failure",
                "f-1",
                "--at",
                "2026-11-01T11:59:59Z",
            ],
        ),
        "before",
    );
    assert_same_files(&before, &db_files(&db), "refused confirmations");

    let r = json_out(
        &db,
        &[
            "record",
            "recovered",
            "--failure",
            "f-1",
            "--at",
            "2026-11-01T12:00:05Z",
        ],
    );
    assert_eq!(r["failure_id"], "f-1");
    assert_eq!(r["how"], "confirmed");
    assert_eq!(r["recovered_at"], "2026-11-01T12:00:05.000000Z");
    assert_eq!(r["time_to_recover_ms"], 5_000);
    assert_eq!(r["duplicate"], false);
    // Confirmed again (later): the recorded recovery is the answer, nothing is written.
    let files = db_files(&db);
    let again = json_out(
        &db,
        &[
            "record",
            "recovered",
            "--failure",
            "f-1",
            "--at",
            "2026-11-01T12:00:09Z",
        ],
    );
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["recovered_at"], "2026-11-01T12:00:05.000000Z");
    assert_eq!(again["time_to_recover_ms"], 5_000);
    assert_same_files(&files, &db_files(&db), "a repeated confirmation");
    let table = expect_success(&run(&db, &["record", "recovered", "--failure", "f-1"]));
    assert!(table.contains("already recorded"), "{table}");

    let s = json_out(
        &db,
        &[
            "stats",
            "--since",
            "2026-11-01T12:00:00Z",
            "--until",
            "2026-11-01T13:00:00Z",
        ],
    );
    assert_eq!(s["recovered"], 1);
    assert_eq!(s["mttr_recover_ms"], 5_000.0);
    assert_eq!(
        s["remediated"], 0,
        "the restart was delegated and never reported"
    );
    let audit = expect_success(&run(&db, &["audit", "f-1"]));
    assert!(audit.contains("failure_recovered"), "{audit}");
}

// ----- the audit report ------------------------------------------------------------------------

#[tokio::test]
async fn the_audit_report_says_when_each_failure_was_remediated_and_recovered() {
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let h = deciding_healer(&path, clock.clone()).await;
    for (id, agent) in [("f-1", "a-1"), ("f-2", "a-2")] {
        let f = Failure::new("agent_down", Severity::High, t0())
            .with_agent(agent)
            .with_id(id);
        h.heal(f).await.unwrap();
    }
    h.record_outcome("f-1", true, None, at(2)).await.unwrap();
    h.record_success("a-1", None, at(7)).await.unwrap();
    use futures_util::StreamExt;
    let records: Vec<Value> = healstore::audit::records(
        h.store(),
        healstore::audit::AuditQuery {
            window: window(t0(), at(60)),
            agent_id: None,
        },
    )
    .map(|r| serde_json::to_value(r.unwrap()).unwrap())
    .collect()
    .await;
    let of = |id: &str| {
        records
            .iter()
            .find(|r| r["failure_id"] == id)
            .unwrap()
            .clone()
    };
    let one = of("f-1");
    assert_eq!(one["remediated"], true, "{one}");
    assert_eq!(one["remediated_at"], "2026-11-01T12:00:02.000000Z");
    assert_eq!(one["remediated_by"], "AgentRestart");
    assert_eq!(one["recovered"], true);
    assert_eq!(one["recovered_at"], "2026-11-01T12:00:07.000000Z");
    assert_eq!(one["recovered_how"], "signal");
    assert!(one.get("resolved").is_none(), "{one}");
    let two = of("f-2");
    assert_eq!(
        (two["remediated"].clone(), two["recovered"].clone()),
        (json!(false), json!(false))
    );
    assert_eq!(two["recovered_how"], Value::Null);
    h.close().await.unwrap();
}

// ----- upgrading a log written before recoveries -------------------------------------------------

#[tokio::test]
async fn a_database_at_schema_9_gets_remediations_recoveries_tasks_and_deadlines_on_upgrade() {
    use healstore::analytics::read_model_digests;
    // A log with remediated, recovered and open failures (one of a task) and a circuit that
    // opened, turned half-open unrecorded, and was recorded half-open later,
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let h = deciding_healer(&path, clock.clone()).await;
    for i in 0..5 {
        clock.set(at(i));
        let f = Failure::new("agent_down", Severity::High, at(i))
            .with_agent("a-1")
            .with_id(format!("f-{i}"));
        h.heal(f).await.unwrap();
    }
    clock.set(at(10));
    h.heal(
        Failure::new("task_timeout", Severity::Medium, at(10))
            .with_agent("a-2")
            .with_task("t-7")
            .with_id("task-f"),
    )
    .await
    .unwrap();
    h.record_outcome("f-0", true, None, at(11)).await.unwrap();
    h.record_outcome("task-f", true, None, at(12))
        .await
        .unwrap();
    h.record_success("a-9", Some("t-7"), at(20)).await.unwrap();
    h.record_recovered("f-1", at(4000)).await.unwrap();
    clock.set(at(200));
    h.tick().await.unwrap(); // records the half-open period, dated at its deadline (64 s)
    h.close().await.unwrap();
    let store = open(&path).await;
    let current = read_model_digests(store.read_pool()).await.unwrap();
    store.close().await.unwrap();

    // as schema version 9 kept it (no task, no recovery, no deadline in the read models),
    crate::common::run_sql(&path, &crate::common::undo_v10_statements()).await;
    {
        use sqlx::Connection;
        let mut c = crate::common::raw_connection(&path).await;
        let v: i64 = sqlx::query_scalar("SELECT MAX(version) FROM refinery_schema_history")
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(v, 9);
        c.close().await.unwrap();
    }

    // is upgraded by the next open, which fills the new columns from the events:
    let store = open(&path).await;
    type Row = (
        String,
        Option<String>,
        Option<i64>,
        Option<String>,
        Option<i64>,
        Option<String>,
        Option<i64>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT failure_id, task_id, remediated_at, remediated_by, recovered_at, recovered_how, \
         recover_us FROM failures ORDER BY position",
    )
    .fetch_all(store.read_pool())
    .await
    .unwrap();
    let us = |t: DateTime<Utc>| t.timestamp_micros();
    let get = |id: &str| rows.iter().find(|r| r.0 == id).unwrap().clone();
    assert_eq!(
        get("f-0"),
        (
            "f-0".into(),
            None,
            Some(us(at(11))),
            Some("AgentRestart".into()),
            None,
            None,
            None
        )
    );
    assert_eq!(
        get("f-1"),
        (
            "f-1".into(),
            None,
            None,
            None,
            Some(us(at(4000))),
            Some("confirmed".into()),
            Some(3_999_000_000)
        )
    );
    assert_eq!(
        get("task-f"),
        (
            "task-f".into(),
            Some("t-7".into()),
            Some(us(at(12))),
            Some("TaskRetry".into()),
            Some(us(at(20))),
            Some("signal".into()),
            Some(10_000_000)
        )
    );
    let deadlines: Vec<(String, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT from_state, to_state, at, open_until FROM circuit_transitions ORDER BY position",
    )
    .fetch_all(store.read_pool())
    .await
    .unwrap();
    assert_eq!(
        deadlines,
        [
            ("closed".into(), "open".into(), us(at(4)), Some(us(at(64)))),
            ("open".into(), "half_open".into(), us(at(64)), None),
        ]
    );
    // the read models are those the current schema kept all along, and a rebuild's.
    assert_eq!(
        read_model_digests(store.read_pool()).await.unwrap(),
        current
    );
    let report = store.verify(&Default::default()).await.unwrap();
    assert!(report.ok, "{report:?}");
    let s = stats(&store, window(t0(), at(5000))).await;
    assert_eq!(
        (s["remediated"].clone(), s["recovered"].clone()),
        (json!(2), json!(2))
    );
    store.close().await.unwrap();
}

#[tokio::test]
async fn the_library_confirms_a_recovery_once_and_refuses_unknown_failures() {
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let h = deciding_healer(&path, clock.clone()).await;
    let f = Failure::new("quorum_loss", Severity::Critical, t0())
        .with_meta("required_quorum", 3)
        .with_meta("healthy_agents", 1)
        .with_id("q-1");
    h.heal(f).await.unwrap();
    // A failure of the fleet: no signal can show its recovery; the caller says so.
    let r = h.record_recovered("q-1", at(90)).await.unwrap();
    assert_eq!(r.how, healstore::events::RecoveryHow::Confirmed);
    assert_eq!((r.time_to_recover_ms, r.duplicate), (90_000, false));
    let again = h.record_recovered("q-1", at(95)).await.unwrap();
    assert_eq!(again.recovered_at, at(90));
    assert!(again.duplicate);
    let err = h.record_recovered("nope", at(1)).await.unwrap_err();
    assert_eq!(err.kind(), healstore::ErrorKind::NotFound, "{err}");
    assert_eq!(recoveries(&path).await.len(), 1);
    // Concurrent confirmations from two healers on one file record it once.
    let h2 = deciding_healer(&path, clock.clone()).await;
    h.heal(
        Failure::new("quorum_loss", Severity::Critical, t0())
            .with_meta("required_quorum", 3)
            .with_meta("healthy_agents", 1)
            .with_id("q-2"),
    )
    .await
    .unwrap();
    let (a, b) = tokio::join!(
        h.record_recovered("q-2", at(10)),
        h2.record_recovered("q-2", at(20))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.recovered_at, b.recovered_at, "one recovery, one answer");
    assert!(a.duplicate != b.duplicate, "{a:?} {b:?}");
    assert_eq!(recoveries(&path).await.len(), 2);
    h.close().await.unwrap();
    h2.close().await.unwrap();
}

#[test]
fn a_recovery_fact_that_does_not_fit_its_shape_is_refused() {
    let (_dir, db) = temp_db();
    let line = |payload: Value| {
        json!({
            "stream_id": "failure-f-1", "event_type": "failure_recovered",
            "occurred_at": "2026-11-01T12:00:00Z", "payload": payload,
        })
        .to_string()
    };
    expect_success(&run(&db, &["init"]));
    let before = db_files(&db);
    for (payload, needle) in [
        (
            json!({"failure_id": "f-1", "how": "hoped"}),
            "unknown variant",
        ),
        (json!({"failure_id": "f-1"}), "missing field `how`"),
        (json!({"failure_id": "", "how": "signal"}), "failure_id"),
        (
            json!({"failure_id": "f-1", "how": "signal", "why": "x"}),
            "unknown field `why`",
        ),
    ] {
        let out = crate::common::run_with_input(
            &db,
            &["import", "-"],
            format!("{}\n", line(payload)).as_bytes(),
        );
        expect_error(&out, needle);
    }
    assert_same_files(&before, &db_files(&db), "refused recovery facts");
}
