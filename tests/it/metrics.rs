//! Prometheus metrics: a scrape parsed by a Prometheus-format parser, each figure checked
//! against the store it describes.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Duration;
use healstore::analytics::Analytics;
use healstore::analytics::advice::AdviceOptions;
use healstore::config::Config;
use healstore::heal::{Coordinator, Failure, Healer, NoopCoordinator, Severity};
use healstore::metrics::{Metrics, MetricsOptions};
use healstore::{Clock, Durability, ManualClock, RecordedEvent, Store, StoreOptions, Window};
use prometheus_parse::{Scrape, Value};

use crate::common::{read_all, t0, temp_db};

/// Every sample of a scrape, by metric name and sorted labels.
pub struct Parsed(BTreeMap<(String, Vec<(String, String)>), Value>);

impl Parsed {
    pub fn parse(text: &str) -> Parsed {
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
        let mut map = BTreeMap::new();
        for s in scrape.samples {
            let mut labels: Vec<(String, String)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels.sort();
            map.insert((s.metric, labels), s.value);
        }
        Parsed(map)
    }

    /// The samples of one metric, by their labels.
    pub fn family(&self, metric: &str) -> BTreeMap<Vec<(String, String)>, f64> {
        self.0
            .iter()
            .filter(|((m, _), _)| m == metric)
            .map(|((_, l), v)| {
                let v = match v {
                    Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                    Value::Histogram(b) => b.last().map_or(0.0, |b| b.count),
                    Value::Summary(_) => f64::NAN,
                };
                (l.clone(), v)
            })
            .collect()
    }

    pub fn value(&self, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut want: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        want.sort();
        self.family(metric).get(&want).copied()
    }
}

/// Per metric, the value of each label set.
pub type Expected = BTreeMap<&'static str, BTreeMap<Vec<(String, String)>, f64>>;

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    v.sort();
    v
}

fn field(e: &RecordedEvent, name: &str) -> String {
    e.payload
        .get(name)
        .and_then(|v| v.as_str())
        .unwrap_or("unknown")
        .to_owned()
}

/// What the scrape must say, counted from the log's events.
pub fn expected_from_log(events: &[RecordedEvent]) -> Expected {
    let mut out: Expected = BTreeMap::new();
    let mut add = |metric: &'static str, l: Vec<(String, String)>, v: f64| {
        *out.entry(metric).or_default().entry(l).or_default() += v;
    };
    for e in events {
        add(
            "healstore_log_events_total",
            labels(&[("event_type", &e.event_type)]),
            1.0,
        );
        match e.event_type.as_str() {
            "failure_detected" => add(
                "healstore_failures_detected_total",
                labels(&[
                    ("failure_type", &field(e, "failure_type")),
                    ("severity", &field(e, "severity")),
                ]),
                1.0,
            ),
            "healing_attempted" => add(
                "healstore_healing_decisions_total",
                labels(&[
                    ("strategy", &field(e, "strategy")),
                    ("decision", &field(e, "decision")),
                ]),
                1.0,
            ),
            "action_executed" => {
                let ok = e.payload["success"].as_bool().unwrap();
                add(
                    "healstore_healing_actions_total",
                    labels(&[
                        ("action", &field(e, "action")),
                        ("result", if ok { "success" } else { "failure" }),
                    ]),
                    1.0,
                )
            }
            "healing_completed" => {
                let l = labels(&[("strategy", &field(e, "strategy"))]);
                add("healstore_healing_duration_seconds_count", l.clone(), 1.0);
                add(
                    "healstore_healing_duration_seconds_sum",
                    l,
                    e.payload["duration_ms"].as_i64().unwrap() as f64 / 1e3,
                );
            }
            "circuit_transitioned" => add(
                "healstore_circuit_transitions_total",
                labels(&[("from", &field(e, "from")), ("to", &field(e, "to"))]),
                1.0,
            ),
            _ => {}
        }
    }
    out
}

/// Compares each expected family with the scrape's, sample for sample.
pub fn assert_families(parsed: &Parsed, expected: &Expected) {
    for (metric, want) in expected {
        let got = parsed.family(metric);
        assert_eq!(got.len(), want.len(), "{metric}: {got:?} against {want:?}");
        for (l, v) in want {
            let g = got.get(l).copied();
            assert!(
                g.is_some_and(|g| (g - v).abs() < 1e-9),
                "{metric}{l:?}: scraped {g:?}, the log says {v}"
            );
        }
    }
}

#[tokio::test]
async fn a_scrape_agrees_with_the_store() {
    let (_dir, path) = temp_db();
    let clock = Arc::new(ManualClock::new(t0()));
    let store = Store::open(
        &path,
        StoreOptions {
            clock: clock.clone(),
            durability: Durability::Normal,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // Something before the metrics start: not counted (counters count from the start).
    let h: Healer = Config::default()
        .builder()
        .coordinator(Arc::new(NoopCoordinator) as Arc<dyn Coordinator>)
        .open(store.clone())
        .await
        .unwrap();
    h.heal(Failure::new("agent_down", Severity::Low, t0()).with_agent("a-0"))
        .await
        .unwrap();
    let start = store.head_position().await.unwrap();
    assert!(start > 0);

    let metrics = Metrics::new(MetricsOptions {
        health_window: std::time::Duration::from_secs(3600),
        ..Default::default()
    });
    metrics.attach(&store).await.unwrap();

    // Five failures in a row open a-1's circuit; a-2 fails once; a task times out; a-3's
    // circuit is forced open by hand; a-2 recovers.
    for i in 0..6 {
        clock.set(t0() + Duration::seconds(10 + i));
        h.heal(Failure::new("agent_down", Severity::High, clock.now()).with_agent("a-1"))
            .await
            .unwrap();
    }
    clock.set(t0() + Duration::seconds(30));
    h.heal(Failure::new("heartbeat_failed", Severity::Medium, clock.now()).with_agent("a-2"))
        .await
        .unwrap();
    h.heal(
        Failure::new("task_timeout", Severity::Critical, clock.now())
            .with_agent("a-2")
            .with_task("t-1"),
    )
    .await
    .unwrap();
    h.command(None, "a-3", "open", "maintenance").await.unwrap();
    clock.set(t0() + Duration::seconds(40));
    h.record_success("a-2", None, clock.now()).await.unwrap();
    let health = metrics.refresh_health().await.unwrap();

    let text = metrics.render(Some(&h)).await.unwrap();
    let parsed = Parsed::parse(&text);
    let all = read_all(&path).await;
    let since: Vec<RecordedEvent> = all.iter().filter(|e| e.position > start).cloned().collect();
    assert!(since.iter().any(|e| e.event_type == "circuit_transitioned"));
    assert!(since.iter().any(|e| e.event_type == "action_executed"));
    assert_families(&parsed, &expected_from_log(&since));

    // Times to recovery: one per recovery, the read model's figure.
    let recoveries = since
        .iter()
        .filter(|e| e.event_type == "failure_recovered")
        .count();
    assert!(recoveries > 0);
    let recovered: f64 = parsed
        .family("healstore_time_to_recovery_seconds_count")
        .values()
        .sum();
    assert_eq!(recovered, recoveries as f64);

    // The head, the writer's appends and group commits.
    let head = all.last().unwrap().position;
    assert_eq!(
        parsed.value("healstore_log_head_position", &[]),
        Some(head as f64)
    );
    assert_eq!(
        parsed.value("healstore_group_commit_events_sum", &[]),
        Some(since.len() as f64),
        "every event since the start was stored by this process's writer"
    );
    assert!(
        parsed
            .value("healstore_appends_total", &[("result", "ok")])
            .unwrap()
            >= 1.0
    );
    assert!(
        parsed
            .value("healstore_append_duration_seconds_count", &[])
            .unwrap()
            >= 1.0
    );

    // Circuits: as the healer has them, one gauge per state.
    let circuits = h.states(Some("CircuitBreaker")).await.unwrap();
    let state_of = |agent: &str| {
        circuits
            .iter()
            .find(|c| c.key == agent)
            .map(|c| c.state["state"].as_str().unwrap().to_owned())
    };
    assert_eq!(state_of("a-1").as_deref(), Some("open"));
    assert_eq!(state_of("a-3").as_deref(), Some("forced_open"));
    for c in &circuits {
        for state in ["closed", "open", "half_open", "forced_open"] {
            let want = if Some(state) == c.state["state"].as_str() {
                1.0
            } else {
                0.0
            };
            assert_eq!(
                parsed.value(
                    "healstore_circuit_state",
                    &[("agent", &c.key), ("state", state)]
                ),
                Some(want),
                "{} {state}",
                c.key
            );
        }
    }
    assert_eq!(
        parsed.value("healstore_circuits", &[("state", "open")]),
        Some(1.0)
    );

    // The health score: the dashboard's over the same window.
    let window = Window::last(Duration::hours(1), clock.now()).unwrap();
    let dashboard = Analytics::new(&store)
        .dashboard(&window, &AdviceOptions::default(), clock.now())
        .await
        .unwrap();
    assert_eq!(health, dashboard.health_score);
    assert_eq!(parsed.value("healstore_health_score", &[]), Some(health));

    // Another process's appends are counted too (the log is read, not the writer).
    let out = crate::common::run(
        &path,
        &[
            "record",
            "failure",
            "--type",
            "agent_down",
            "--agent",
            "a-9",
            "--now",
            "2026-11-01T12:01:00Z",
        ],
    );
    crate::common::expect_success(&out);
    let parsed = Parsed::parse(&metrics.render(Some(&h)).await.unwrap());
    let all = read_all(&path).await;
    let since: Vec<RecordedEvent> = all.iter().filter(|e| e.position > start).cloned().collect();
    assert_families(&parsed, &expected_from_log(&since));
    assert_eq!(
        parsed.value(
            "healstore_failures_detected_total",
            &[("failure_type", "agent_down"), ("severity", "high")]
        ),
        Some(7.0)
    );
    drop(h);
    metrics.stop();
    store.close().await.unwrap();
}

#[tokio::test]
async fn labels_from_input_are_bounded() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path, StoreOptions::default()).await.unwrap();
    let metrics = Metrics::new(MetricsOptions {
        label_values_max: 3,
        ..Default::default()
    });
    metrics.attach(&store).await.unwrap();
    for i in 0..10 {
        let e = healstore::NewEvent::new(
            "failure_detected",
            t0(),
            serde_json::json!({"failure_id": format!("f-{i}"), "failure_type": format!("type-{i}"), "severity": "low"}),
        );
        store
            .append(
                &format!("failure-f-{i}"),
                healstore::ExpectedVersion::NoStream,
                vec![e],
            )
            .await
            .unwrap();
    }
    let parsed = Parsed::parse(&metrics.render(None).await.unwrap());
    let failures = parsed.family("healstore_failures_detected_total");
    assert_eq!(failures.len(), 4, "{failures:?}");
    assert_eq!(
        parsed.value(
            "healstore_failures_detected_total",
            &[("failure_type", "_other"), ("severity", "low")]
        ),
        Some(7.0)
    );
    for (l, _) in failures {
        assert!(
            !l.iter().any(|(_, v)| v.starts_with("f-")),
            "no failure id in a label"
        );
    }
    metrics.stop();
    store.close().await.unwrap();
}
