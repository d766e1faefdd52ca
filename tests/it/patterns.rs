//! Pattern learning and predictions: planted sequence, frequency, correlation and temporal
//! patterns are found with the right counts; shuffled data yields none; ids are stable;
//! learned patterns are recorded once; predictions are confirmed or missed.

use chrono::{DateTime, Duration, TimeZone, Utc};
use healstore::analytics::{Analytics, LearnOptions, Pattern, PredictOptions};
use healstore::events::{FailureDetected, Severity};
use healstore::{ExpectedVersion, HealEvent, Store, Window};
use serde_json::Map;

use crate::common::{Rng, open, temp_db};

/// Midnight UTC: the planted data's week starts here.
fn day0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap()
}

fn week() -> Window {
    Window::new(day0(), day0() + Duration::days(7)).unwrap()
}

/// A failure to write: (id, type, agent, at).
type F = (String, String, String, DateTime<Utc>);

async fn write(store: &Store, failures: &[F]) {
    for chunk in failures.chunks(200) {
        let parts = chunk
            .iter()
            .map(|(id, t, agent, at)| healstore::StreamAppend {
                stream_id: format!("failure-{id}"),
                expected: ExpectedVersion::NoStream,
                events: vec![
                    HealEvent::FailureDetected(FailureDetected {
                        failure_id: id.clone(),
                        failure_type: t.clone(),
                        severity: Severity::High,
                        agent_id: Some(agent.clone()),
                        task_id: None,
                        source_event: None,
                        metadata: Map::new(),
                    })
                    .to_new_event(*at),
                ],
            })
            .collect();
        store.append_atomic(parts).await.unwrap();
    }
}

fn at(us: u64) -> DateTime<Utc> {
    day0() + Duration::microseconds(us as i64)
}

const WEEK_US: u64 = 7 * 86_400_000_000;

/// A week of background noise and four planted patterns.
fn planted(rng: &mut Rng) -> Vec<F> {
    let mut out = Vec::new();
    let mut n = 0;
    let mut push = |out: &mut Vec<F>, t: &str, agent: &str, when: DateTime<Utc>| {
        n += 1;
        out.push((format!("x-{n}"), t.to_owned(), agent.to_owned(), when));
    };
    // Background: 700 failures of four types on 20 agents at random times.
    for i in 0..700 {
        let t = [
            "agent_down",
            "task_timeout",
            "execution_error",
            "high_latency",
        ][i % 4];
        let agent = format!("bg-{}", rng.between(1, 20));
        push(&mut out, t, &agent, at(rng.between(0, WEEK_US - 1)));
    }
    // Sequence: on seq-1, disk_full then agent_down 30 s later, 12 times, 12 h apart.
    for k in 0..12u64 {
        let base = k * 12 * 3_600_000_000 + rng.between(0, 3_600_000_000);
        push(&mut out, "disk_full", "seq-1", at(base));
        push(&mut out, "agent_down", "seq-1", at(base + 30_000_000));
    }
    // Frequency: on cron-1, backup_failed every 600 s (+- 5 s), 30 times.
    for k in 0..30u64 {
        let jitter = rng.between(0, 10_000_000);
        push(
            &mut out,
            "backup_failed",
            "cron-1",
            at(86_400_000_000 + k * 600_000_000 + jitter),
        );
    }
    // Correlation: consensus_failed 2-4 s after each of 15 quorum losses, on another agent.
    for _ in 0..15 {
        let base = rng.between(0, WEEK_US - 10_000_000);
        push(&mut out, "quorum_loss", "q-1", at(base));
        let agent = format!("q-{}", rng.between(2, 9));
        push(
            &mut out,
            "consensus_failed",
            &agent,
            at(base + rng.between(2_000_000, 4_000_000)),
        );
    }
    // Temporal: batch_timeout four times between 03:00 and 04:00 every day.
    for d in 0..7u64 {
        for _ in 0..4 {
            let agent = format!("bg-{}", rng.between(1, 20));
            let when = d * 86_400_000_000 + 3 * 3_600_000_000 + rng.between(0, 3_599_999_999);
            push(&mut out, "batch_timeout", &agent, at(when));
        }
    }
    out
}

fn find<'a>(ps: &'a [Pattern], kind: &str, types: &[&str]) -> Option<&'a Pattern> {
    ps.iter().find(|p| {
        p.kind == kind
            && p.failure_types
                .iter()
                .map(String::as_str)
                .eq(types.iter().copied())
    })
}

#[tokio::test]
async fn planted_patterns_are_found_with_the_right_counts() {
    for seed in [1u64, 2, 3] {
        let (_dir, path) = temp_db();
        let store = open(&path).await;
        let mut rng = Rng::fixed(seed);
        write(&store, &planted(&mut rng)).await;
        let a = Analytics::new(&store);
        let ps = a
            .learn_patterns(&week(), &LearnOptions::default())
            .await
            .unwrap();
        let names: Vec<_> = ps.iter().map(|p| p.description.clone()).collect();

        let seq = ps
            .iter()
            .find(|p| {
                p.kind == "sequence"
                    && p.agent_id.as_deref() == Some("seq-1")
                    && p.failure_types == ["disk_full", "agent_down"]
            })
            .unwrap_or_else(|| panic!("seed {seed}: no sequence in {names:#?}"));
        assert_eq!(seq.scope, "agent");
        assert_eq!((seq.support, seq.confidence), (12, 1.0), "seed {seed}");
        assert_eq!(seq.mean_gap_ms, Some(30_000.0));

        let freq = ps
            .iter()
            .find(|p| p.kind == "frequency" && p.agent_id.as_deref() == Some("cron-1"))
            .unwrap_or_else(|| panic!("seed {seed}: no frequency in {names:#?}"));
        assert_eq!(freq.failure_types, ["backup_failed"]);
        assert_eq!(freq.support, 30);
        let gap = freq.mean_gap_ms.unwrap();
        assert!((gap - 600_000.0).abs() < 1_000.0, "{gap}");
        assert!(freq.confidence > 0.9);

        let cor = find(&ps, "correlation", &["quorum_loss", "consensus_failed"])
            .unwrap_or_else(|| panic!("seed {seed}: no correlation in {names:#?}"));
        assert_eq!((cor.support, cor.confidence), (15, 1.0));
        assert!(cor.lift.unwrap() > 100.0, "{cor:?}");

        let tmp = find(&ps, "temporal", &["batch_timeout"])
            .unwrap_or_else(|| panic!("seed {seed}: no temporal in {names:#?}"));
        assert_eq!((tmp.hour, tmp.support, tmp.confidence), (Some(3), 28, 1.0));

        // Nothing from the background alone: no pattern of background types on background
        // agents (or fleet-wide).
        let background = [
            "agent_down",
            "task_timeout",
            "execution_error",
            "high_latency",
        ];
        for p in &ps {
            let bg_agent = p.agent_id.as_deref().is_none_or(|a| a.starts_with("bg-"));
            assert!(
                !(bg_agent
                    && p.failure_types
                        .iter()
                        .all(|t| background.contains(&t.as_str()))),
                "seed {seed}: spurious {p:?}"
            );
        }
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn shuffled_data_has_no_patterns() {
    for seed in [4u64, 5, 6] {
        let (_dir, path) = temp_db();
        let store = open(&path).await;
        let mut rng = Rng::fixed(seed);
        let mut data = planted(&mut rng);
        // Same failures, types and agents, at random times: every structure is gone.
        let agents: Vec<String> = data.iter().map(|f| f.2.clone()).collect();
        for (i, f) in data.iter_mut().enumerate() {
            f.3 = at(rng.between(0, WEEK_US - 1));
            f.2 = agents[rng.between(0, agents.len() as u64 - 1) as usize].clone();
            let _ = i;
        }
        write(&store, &data).await;
        let a = Analytics::new(&store);
        let ps = a
            .learn_patterns(&week(), &LearnOptions::default())
            .await
            .unwrap();
        assert!(ps.is_empty(), "seed {seed}: {ps:#?}");
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn pattern_ids_are_stable_and_learning_is_recorded_once() {
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (_dir, path) = temp_db();
        let store = open(&path).await;
        write(&store, &planted(&mut Rng::fixed(1))).await;
        let a = Analytics::new(&store);
        let now = day0() + Duration::days(7);
        let first = a
            .learn_and_record(&week(), &LearnOptions::default(), now)
            .await
            .unwrap();
        assert_eq!(first.recorded, first.patterns.len());
        assert!(!first.patterns.is_empty());
        let again = a
            .learn_and_record(&week(), &LearnOptions::default(), now + Duration::hours(1))
            .await
            .unwrap();
        assert_eq!(
            again.recorded, 0,
            "unchanged patterns are not recorded again"
        );
        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM patterns")
            .fetch_one(store.read_pool())
            .await
            .unwrap();
        assert_eq!(stored as usize, first.patterns.len());
        let recorded: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE event_type = 'pattern_learned'")
                .fetch_one(store.read_pool())
                .await
                .unwrap();
        assert_eq!(recorded as usize, first.patterns.len());
        ids.push(
            first
                .patterns
                .iter()
                .map(|p| p.pattern_id.clone())
                .collect::<Vec<_>>(),
        );
        store.close().await.unwrap();
    }
    assert_eq!(ids[0], ids[1], "same data, same ids, in another database");
}

#[tokio::test]
async fn predictions_are_made_from_patterns_and_judged_by_what_happens() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    let mut rng = Rng::fixed(1);
    write(&store, &planted(&mut rng)).await;
    let a = Analytics::new(&store);
    // seq-1 reports disk_full now: agent_down should follow within the hour.
    let now = day0() + Duration::days(7) + Duration::minutes(10);
    write(
        &store,
        &[(
            "trigger-1".into(),
            "disk_full".into(),
            "seq-1".into(),
            now - Duration::seconds(5),
        )],
    )
    .await;
    let options = PredictOptions {
        agent: Some("seq-1".into()),
        learn_window: Duration::days(8),
        ..PredictOptions::default()
    };
    let r = a.predict(now, &options).await.unwrap();
    let p = r
        .predictions
        .iter()
        .find(|p| p.failure_type == "agent_down")
        .unwrap_or_else(|| panic!("{r:#?}"));
    assert_eq!(p.agent_id.as_deref(), Some("seq-1"));
    assert_eq!(p.source, "sequence");
    assert!(p.probability >= 0.9);
    assert_eq!(p.expected_in_ms, 25_000, "30 s after the trigger");
    assert_eq!(r.recorded, r.predictions.len());
    assert_eq!(r.pending, r.predictions.len() as i64);
    // Asking again records nothing new.
    let again = a
        .predict(now + Duration::seconds(1), &options)
        .await
        .unwrap();
    assert_eq!(again.recorded, 0);

    // The predicted failure happens: confirmed. Everything else predicted for seq-1 is
    // missed once its window has passed.
    write(
        &store,
        &[(
            "follow-1".into(),
            "agent_down".into(),
            "seq-1".into(),
            now + Duration::seconds(20),
        )],
    )
    .await;
    let later = now + Duration::days(1);
    let w = Window::new(now - Duration::hours(1), later).unwrap();
    let outcomes = a
        .prediction_outcomes(&w, healstore::time::to_micros(later), Some("seq-1"))
        .await
        .unwrap();
    let o = outcomes
        .iter()
        .find(|o| o.prediction_id == p.prediction_id)
        .unwrap();
    assert_eq!(o.status, "confirmed");
    let confirmed = outcomes.iter().filter(|o| o.status == "confirmed").count();
    let missed = outcomes.iter().filter(|o| o.status == "missed").count();
    assert_eq!(confirmed + missed, outcomes.len());
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_prediction_whose_window_passes_is_missed() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    write(&store, &planted(&mut Rng::fixed(2))).await;
    let a = Analytics::new(&store);
    let now = day0() + Duration::days(7) + Duration::minutes(10);
    write(
        &store,
        &[(
            "trigger-2".into(),
            "disk_full".into(),
            "seq-1".into(),
            now - Duration::seconds(5),
        )],
    )
    .await;
    let options = PredictOptions {
        agent: Some("seq-1".into()),
        learn_window: Duration::days(8),
        ..PredictOptions::default()
    };
    let r = a.predict(now, &options).await.unwrap();
    assert!(r.predictions.iter().any(|p| p.failure_type == "agent_down"));
    // Two hours later, nothing happened on seq-1.
    let r = a
        .predict(
            now + Duration::hours(2),
            &PredictOptions {
                record: false,
                ..options
            },
        )
        .await
        .unwrap();
    assert_eq!(r.confirmed, 0);
    assert!(r.missed >= 1, "{r:#?}");
    assert_eq!(r.accuracy, 0.0);
    assert_eq!(r.false_positive_rate, 1.0);
    store.close().await.unwrap();
}

/// One agent's learning (through its index) finds exactly the patterns that learning over the
/// whole fleet finds for that agent, and its predictions are the fleet's predictions on that
/// agent: planted data, plus failures of one agent at the same microsecond (ties).
#[tokio::test]
async fn one_agents_patterns_and_predictions_equal_the_fleets_for_that_agent() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    let mut rng = Rng::fixed(7);
    let mut failures = planted(&mut rng);
    // Ties: pairs of failures of two types on bg-3 at the same instant, each followed by
    // task_timeout, so that a tie's order decides the 2-gram.
    for k in 0..40u64 {
        let when = at(k * 3_600_000_000 + 1_000);
        failures.push((format!("tie-a-{k}"), "oom".into(), "bg-3".into(), when));
        failures.push((
            format!("tie-b-{k}"),
            "disk_full".into(),
            "bg-3".into(),
            when,
        ));
        failures.push((
            format!("tie-c-{k}"),
            "task_timeout".into(),
            "bg-3".into(),
            when + Duration::seconds(3),
        ));
    }
    write(&store, &failures).await;
    let a = Analytics::new(&store);
    let o = LearnOptions::default();
    let all = a.learn_patterns(&week(), &o).await.unwrap();
    let mut agents: Vec<String> = failures.iter().map(|f| f.2.clone()).collect();
    agents.sort();
    agents.dedup();
    let mut found = 0;
    for agent in &agents {
        let want: Vec<&Pattern> = all
            .iter()
            .filter(|p| p.scope == "agent" && p.agent_id.as_deref() == Some(agent.as_str()))
            .collect();
        let got = a.learn_agent_patterns(&week(), &o, agent).await.unwrap();
        assert_eq!(got.iter().collect::<Vec<_>>(), want, "agent {agent}");
        found += got.len();
    }
    assert!(
        all.iter().any(|p| p.agent_id.as_deref() == Some("seq-1")
            && p.failure_types == ["disk_full", "agent_down"]),
        "{all:#?}"
    );
    assert!(
        all.iter()
            .any(|p| p.agent_id.as_deref() == Some("bg-3") && p.kind == "sequence"),
        "the ties make a sequence on bg-3: {all:#?}"
    );
    assert!(found >= 3, "{found}");

    // Predictions at a moment when seq-1 and bg-3 have just failed.
    let now = day0() + Duration::days(7) + Duration::minutes(10);
    write(
        &store,
        &[
            (
                "t-1".into(),
                "disk_full".into(),
                "seq-1".into(),
                now - Duration::seconds(5),
            ),
            (
                "t-2".into(),
                "oom".into(),
                "bg-3".into(),
                now - Duration::seconds(2),
            ),
        ],
    )
    .await;
    let fleet = PredictOptions {
        learn_window: Duration::days(8),
        ..PredictOptions::default()
    };
    let everyone = a.predict(now, &fleet).await.unwrap();
    for agent in ["seq-1", "bg-3", "cron-1", "bg-5"] {
        let one = a
            .predict(
                now,
                &PredictOptions {
                    agent: Some(agent.into()),
                    ..fleet.clone()
                },
            )
            .await
            .unwrap();
        let want: Vec<_> = everyone
            .predictions
            .iter()
            .filter(|p| p.agent_id.as_deref() == Some(agent))
            .collect();
        assert_eq!(
            one.predictions.iter().collect::<Vec<_>>(),
            want,
            "agent {agent}"
        );
        if agent == "seq-1" {
            assert!(
                one.predictions
                    .iter()
                    .any(|p| p.failure_type == "agent_down"),
                "{one:#?}"
            );
        }
    }
    store.close().await.unwrap();
}
