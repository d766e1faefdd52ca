//! Backtests: recorded history replayed through a configuration. The configuration in effect
//! decides as recorded (100 %) on logs written by the healer and the demo, with configuration
//! changes, operator commands and several processes; a candidate's figures are checked by
//! hand; the store is never written; bad candidates are refused.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use healstore::analytics::Window;
use healstore::backtest::{BacktestOptions, Candidate, Report, backtest};
use healstore::config::Config;
use healstore::heal::{Failure, Healer, NoopCoordinator, Severity};
use healstore::{ManualClock, Store, StoreOptions};
use proptest::prelude::*;

use crate::common::{
    assert_same_files, block_on, db_files, expect_error, expect_success, run, t0, temp_db,
};

const CIRCUIT_ONLY: &str = r#"
[[route]]
failure_types = ["agent_down"]
strategies = ["circuit_breaker"]
"#;

fn at(s: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(s)
}

fn down(agent: &str, id: &str, now: DateTime<Utc>) -> Failure {
    Failure::new("agent_down", Severity::High, now)
        .with_agent(agent)
        .with_id(id)
}

async fn store_at(path: &Path, clock: Arc<ManualClock>) -> Store {
    Store::open(
        path,
        StoreOptions {
            clock,
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap()
}

/// A healer with `config` (recorded in the log first), acting through a coordinator that
/// does nothing and succeeds.
async fn healer(store: Store, config: &Config) -> Healer {
    config.record(&store).await.unwrap();
    config
        .builder()
        .coordinator(Arc::new(NoopCoordinator))
        .open(store)
        .await
        .unwrap()
}

async fn replay(path: &Path, since: DateTime<Utc>, until: DateTime<Utc>, c: Candidate) -> Report {
    let store = Store::open(path, StoreOptions::default()).await.unwrap();
    let options = BacktestOptions {
        seed: 7,
        ..BacktestOptions::new(Window::new(since, until).unwrap())
    };
    let mut r = backtest(&store, &options, &[c]).await.unwrap();
    store.close().await.unwrap();
    r.remove(0)
}

#[track_caller]
fn assert_faithful(r: &Report) {
    assert!(r.decisions > 0, "nothing was replayed");
    assert_eq!(
        r.matching, r.decisions,
        "first mismatch: {:#?}",
        r.first_mismatch
    );
    assert_eq!(r.match_share, 1.0);
    assert!(r.changed.is_empty());
    assert_eq!(r.recorded.decisions, r.backtest.decisions);
    assert_eq!(r.recorded.actions, r.backtest.actions);
    // Recoveries, openings and isolation too: time passes in the replay as it did.
    assert_eq!(r.recorded.mttr, r.backtest.mttr);
    assert_eq!(r.recorded.recovered, r.backtest.recovered);
    assert_eq!(r.recorded.unrecovered, r.backtest.unrecovered);
    assert_eq!(r.recorded.circuits_opened, r.backtest.circuits_opened);
    assert!(
        (r.recorded.agent_minutes_isolated - r.backtest.agent_minutes_isolated).abs() < 1e-9,
        "isolated: recorded {}, replayed {}",
        r.recorded.agent_minutes_isolated,
        r.backtest.agent_minutes_isolated
    );
}

fn config(extra: &str) -> Config {
    Config::parse(&format!("{CIRCUIT_ONLY}{extra}")).unwrap()
}

/// Eight `agent_down` failures of agent `a`, ten seconds apart from t0.
async fn eight_failures(path: &Path, threshold: u32) {
    let clock = Arc::new(ManualClock::new(t0()));
    let store = store_at(path, clock.clone()).await;
    let cfg = config(&format!(
        "[circuit_breaker]\nfailure_threshold = {threshold}\n"
    ));
    let h = healer(store, &cfg).await;
    for i in 0..8 {
        clock.set(at(10 * i));
        h.heal(down("a", &format!("f{i}"), at(10 * i)))
            .await
            .unwrap();
    }
    h.close().await.unwrap();
}

#[test]
fn a_lower_failure_threshold_opens_the_circuit_two_failures_earlier() {
    block_on(async {
        let (_dir, path) = temp_db();
        eight_failures(&path, 5).await;
        let candidate = Candidate::Config {
            name: "threshold 3".into(),
            config: Box::new(config("[circuit_breaker]\nfailure_threshold = 3\n")),
        };
        let r = replay(&path, t0(), at(90), candidate).await;
        let n = |f: &healstore::backtest::Figures, k: &str| f.decisions.get(k).copied();
        // Recorded: f0..f3 counted (declined), f4 opens (60 s, until 100 s), f5..f7 held.
        assert_eq!(n(&r.recorded, "declined"), Some(4));
        assert_eq!(n(&r.recorded, "act"), Some(1));
        assert_eq!(n(&r.recorded, "held"), Some(3));
        // Candidate: f0, f1 counted, f2 opens (until 80 s), f3..f7 held.
        assert_eq!(n(&r.backtest, "declined"), Some(2));
        assert_eq!(n(&r.backtest, "act"), Some(1));
        assert_eq!(n(&r.backtest, "held"), Some(5));
        assert_eq!(r.recorded.circuits_opened, 1);
        assert_eq!(r.backtest.circuits_opened, 1);
        // Isolated: recorded 40 s .. 90 s (the window's end) = 50 s; candidate 20 s .. 80 s
        // (its deadline) = 60 s.
        assert!((r.recorded.agent_minutes_isolated - 50.0 / 60.0).abs() < 1e-9);
        assert!((r.backtest.agent_minutes_isolated - 1.0).abs() < 1e-9);
        // The opening moved from f4 to f2: f2 is the first failure whose decision changed
        // (f0 and f1 are declined by both, with the threshold in their reasons).
        assert_eq!(r.first_mismatch.as_ref().unwrap().failure_id, "f0");
        let first = &r.changed[0];
        assert_eq!(first.failure_id, "f2");
        assert_eq!(first.recorded[0].decision, "declined");
        assert_eq!(first.candidate[0].decision, "act");
        let changed: Vec<&str> = r.changed.iter().map(|c| c.failure_id.as_str()).collect();
        assert_eq!(&changed[..3], &["f2", "f3", "f4"]);
        // The candidate's opening is another failure than history's: its outcome is modelled
        // on history's one outcome of that action on agent_down (a success).
        assert_eq!(r.recorded.outcomes.observed, 1);
        assert_eq!(r.backtest.outcomes.modelled, 1);
        assert_eq!(r.backtest.successes.modelled, 1);
        assert_eq!(r.backtest.outcomes.observed, 0);
    });
}

#[test]
fn the_configuration_in_effect_decides_as_recorded_across_a_change() {
    block_on(async {
        let (_dir, path) = temp_db();
        let clock = Arc::new(ManualClock::new(t0()));
        let store = store_at(&path, clock.clone()).await;
        let h = healer(store, &config("[circuit_breaker]\nfailure_threshold = 5\n")).await;
        for i in 0..6 {
            clock.set(at(i));
            h.heal(down("a", &format!("a{i}"), at(i))).await.unwrap();
        }
        h.close().await.unwrap();
        clock.set(at(10));
        let store = store_at(&path, clock.clone()).await;
        let h = healer(store, &config("[circuit_breaker]\nfailure_threshold = 2\n")).await;
        for i in 0..6 {
            clock.set(at(20 + i));
            h.heal(down("b", &format!("b{i}"), at(20 + i)))
                .await
                .unwrap();
        }
        h.close().await.unwrap();
        let r = replay(&path, t0(), at(60), Candidate::Current).await;
        assert_faithful(&r);
        // b opened after two failures: the second configuration was replayed.
        assert_eq!(r.backtest.circuits_opened, 2);
    });
}

#[test]
fn operator_commands_and_success_signals_are_replayed() {
    block_on(async {
        let (_dir, path) = temp_db();
        let clock = Arc::new(ManualClock::new(t0()));
        let store = store_at(&path, clock.clone()).await;
        let h = healer(store, &config("[circuit_breaker]\nfailure_threshold = 3\n")).await;
        for i in 0..3 {
            clock.set(at(i));
            h.heal(down("a", &format!("a{i}"), at(i))).await.unwrap();
        }
        clock.set(at(5));
        h.command(Some("CircuitBreaker"), "a", "close", "fixed by hand")
            .await
            .unwrap();
        h.command(Some("CircuitBreaker"), "b", "open", "maintenance")
            .await
            .unwrap();
        for i in 0..3 {
            clock.set(at(10 + i));
            h.heal(down("a", &format!("c{i}"), at(10 + i)))
                .await
                .unwrap();
            h.heal(down("b", &format!("d{i}"), at(10 + i)))
                .await
                .unwrap();
        }
        clock.set(at(200));
        h.record_success("a", None, at(200)).await.unwrap();
        h.permit("a").await.unwrap();
        h.heal(down("a", "e0", at(200))).await.unwrap();
        h.close().await.unwrap();
        let r = replay(&path, t0(), at(300), Candidate::Current).await;
        assert_faithful(&r);
        assert_eq!(r.recorded.circuits_opened, r.backtest.circuits_opened);
        assert_eq!(r.recorded.half_open_trials, r.backtest.half_open_trials);
    });
}

#[test]
fn appends_of_two_processes_replay_as_recorded() {
    block_on(async {
        let (_dir, path) = temp_db();
        let clock = Arc::new(ManualClock::new(t0()));
        let cfg = config("[circuit_breaker]\nfailure_threshold = 3\n");
        let h1 = healer(store_at(&path, clock.clone()).await, &cfg).await;
        let h2 = healer(store_at(&path, clock.clone()).await, &cfg).await;
        for i in 0..12 {
            clock.set(at(i));
            let h = if i % 2 == 0 { &h1 } else { &h2 };
            let agent = if i % 3 == 0 { "a" } else { "b" };
            h.heal(down(agent, &format!("f{i}"), at(i))).await.unwrap();
        }
        h1.close().await.unwrap();
        h2.close().await.unwrap();
        let r = replay(&path, t0(), at(60), Candidate::Current).await;
        assert_faithful(&r);
    });
}

#[test]
fn the_demo_log_replays_at_one_hundred_percent_and_is_not_written() {
    let (_dir, path) = temp_db();
    let end = "2026-11-01T12:05:00Z";
    expect_success(&run(
        &path,
        &["--now", end, "demo", "--ticks", "60", "--seed", "3"],
    ));
    let before = db_files(&path);
    let out = expect_success(&run(
        &path,
        &[
            "--now",
            end,
            "--format",
            "json",
            "backtest",
            "--current",
            "--window",
            "1h",
        ],
    ));
    assert_same_files(&before, &db_files(&path), "backtest --current");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["decisions"].as_u64().unwrap() > 50, "{v}");
    assert_eq!(
        v["matching"], v["decisions"],
        "first mismatch: {}",
        v["first_mismatch"]
    );
    // A candidate, as a table, writes nothing either.
    let dir = tempfile::tempdir().unwrap();
    let cand = dir.path().join("candidate.toml");
    std::fs::write(&cand, "[circuit_breaker]\nfailure_threshold = 2\n").unwrap();
    let out = expect_success(&run(
        &path,
        &[
            "--now",
            end,
            "--config",
            cand.to_str().unwrap(),
            "backtest",
            "--window",
            "1h",
        ],
    ));
    assert!(out.contains("circuits opened"), "{out}");
    assert_same_files(&before, &db_files(&path), "backtest --config");
}

#[test]
fn bad_candidates_are_refused_in_one_line() {
    let (_dir, path) = temp_db();
    expect_success(&run(
        &path,
        &["--now", "2026-11-01T12:01:00Z", "demo", "--ticks", "5"],
    ));
    let dir = tempfile::tempdir().unwrap();
    for (text, needle) in [
        (
            "[[route]]\nfailure_types = [\"agent_down\"]\nstrategies = [\"Teleport\"]\n",
            "Teleport",
        ),
        (
            "[circuit_breaker]\nfailure_threshold = 0\n",
            "failure_threshold",
        ),
    ] {
        let cand = dir.path().join("bad.toml");
        std::fs::write(&cand, text).unwrap();
        let before = db_files(&path);
        let out = run(
            &path,
            &[
                "--config",
                cand.to_str().unwrap(),
                "backtest",
                "--window",
                "1h",
            ],
        );
        assert_eq!(out.status.code(), Some(2));
        let err = expect_error(&out, needle);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert_same_files(&before, &db_files(&path), "a refused candidate");
    }
    let out = run(&path, &["backtest", "--window", "1h"]);
    assert_eq!(out.status.code(), Some(2));
}

/// One input of a random history.
#[derive(Debug, Clone)]
enum Input {
    Failure { agent: u8, task: bool },
    Success { agent: u8 },
    Command { agent: u8, open: bool },
    Permit { agent: u8 },
    Wait { seconds: u16 },
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        6 => (0u8..3, any::<bool>()).prop_map(|(agent, task)| Input::Failure { agent, task }),
        2 => (0u8..3).prop_map(|agent| Input::Success { agent }),
        1 => (0u8..3, any::<bool>()).prop_map(|(agent, open)| Input::Command { agent, open }),
        1 => (0u8..3).prop_map(|agent| Input::Permit { agent }),
        2 => (1u16..90).prop_map(|seconds| Input::Wait { seconds }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// For random histories, the backtest of the configuration in effect takes the live
    /// healer's decisions.
    #[test]
    fn the_backtest_of_the_configuration_in_effect_is_the_live_healer(
        inputs in proptest::collection::vec(input(), 1..40),
        threshold in 2u32..5,
    ) {
        block_on(async {
            let (_dir, path) = temp_db();
            let clock = Arc::new(ManualClock::new(t0()));
            let cfg = Config::parse(&format!(
                "[circuit_breaker]\nfailure_threshold = {threshold}\nopen_ms = 30000\n"
            ))
            .unwrap();
            let h = healer(store_at(&path, clock.clone()).await, &cfg).await;
            let mut now = t0();
            for (i, inp) in inputs.iter().enumerate() {
                now += Duration::milliseconds(100);
                clock.set(now);
                let agent = |a: &u8| format!("agent-{a}");
                match inp {
                    Input::Failure { agent: a, task } => {
                        let mut f = Failure::new(
                            if *task { "task_timeout" } else { "agent_down" },
                            Severity::High,
                            now,
                        )
                        .with_agent(agent(a))
                        .with_id(format!("f{i}"));
                        if *task {
                            f = f.with_task(format!("t{}", i % 4));
                        }
                        h.heal(f).await.unwrap();
                    }
                    Input::Success { agent: a } => {
                        h.record_success(&agent(a), None, now).await.unwrap();
                    }
                    Input::Command { agent: a, open } => {
                        let c = if *open { "open" } else { "close" };
                        h.command(Some("CircuitBreaker"), &agent(a), c, "test")
                            .await
                            .unwrap();
                    }
                    Input::Permit { agent: a } => {
                        h.permit(&agent(a)).await.unwrap();
                    }
                    Input::Wait { seconds } => {
                        now += Duration::seconds(i64::from(*seconds));
                    }
                }
            }
            h.close().await.unwrap();
            let r = replay(&path, t0(), now + Duration::seconds(1), Candidate::Current).await;
            prop_assert_eq!(r.matching, r.decisions, "first mismatch: {:#?}", r.first_mismatch);
            Ok(())
        })?;
    }
}

fn candidate(name: &str, c: Config) -> Candidate {
    Candidate::Config {
        name: name.into(),
        config: Box::new(c),
    }
}

#[test]
fn deadlines_take_effect_at_their_instants_between_inputs() {
    block_on(async {
        let (_dir, path) = temp_db();
        // History: threshold 5, never reached; nothing ticks.
        let clock = Arc::new(ManualClock::new(t0()));
        let store = store_at(&path, clock.clone()).await;
        let h = healer(store, &config("[circuit_breaker]\nfailure_threshold = 5\n")).await;
        for (i, s) in [0, 1, 2, 50].into_iter().enumerate() {
            clock.set(at(s));
            h.heal(down("a", &format!("f{i}"), at(s))).await.unwrap();
        }
        h.close().await.unwrap();
        // The candidate opens at f2 (2 s) for 10 s; half-open at 12 s; no verdict within
        // 5 s: re-opened at 17 s for 20 s; half-open at 37 s; re-opened at 42 s for 40 s
        // (until 82 s, past the window's end at 60 s). No input falls between.
        let c = config(
            "[circuit_breaker]\nfailure_threshold = 3\nopen_ms = 10000\n\
             half_open_max_wait_ms = 5000\n",
        );
        let r = replay(&path, t0(), at(60), candidate("timed", c)).await;
        assert_eq!(r.backtest.circuits_opened, 3);
        let isolated_s = r.backtest.agent_minutes_isolated * 60.0;
        assert!(
            (isolated_s - 48.0).abs() < 1e-9,
            "isolated {isolated_s} s, expected 10 + 20 + 18"
        );
        assert_eq!(r.recorded.circuits_opened, 0);
        assert_eq!(r.recorded.agent_minutes_isolated, 0.0);
        // f3 at 50 s meets the third opening, with its deadline.
        let f3 = r.changed.iter().find(|c| c.failure_id == "f3").unwrap();
        assert_eq!(f3.candidate[0].decision, "held");
        assert!(
            f3.candidate[0]
                .reason
                .contains(&healstore::time::format_time(at(82))),
            "{:?}",
            f3.candidate[0]
        );
    });
}

#[test]
fn mttr_is_detection_to_recovery_as_the_analytics_measure_it() {
    block_on(async {
        let (_dir, path) = temp_db();
        let clock = Arc::new(ManualClock::new(t0()));
        let store = store_at(&path, clock.clone()).await;
        let h = healer(store, &config("[circuit_breaker]\nfailure_threshold = 5\n")).await;
        for (id, agent, s) in [
            ("f0", "a", 0),
            ("f1", "a", 1),
            ("f2", "b", 2),
            ("f3", "c", 3),
        ] {
            clock.set(at(s));
            h.heal(down(agent, id, at(s))).await.unwrap();
        }
        clock.set(at(10));
        h.record_success("a", None, at(10)).await.unwrap(); // f0 10 s, f1 9 s
        clock.set(at(20));
        h.record_recovered("f2", at(20)).await.unwrap(); // 18 s; f3 never recovers
        clock.set(at(30));
        h.close().await.unwrap();
        let window = Window::new(t0(), at(60)).unwrap();
        let store = Store::open(&path, StoreOptions::default()).await.unwrap();
        let stats = healstore::Analytics::new(&store)
            .stats(&window)
            .await
            .unwrap();
        store.close().await.unwrap();
        let expected = (10_000.0 + 9_000.0 + 18_000.0) / 3.0;
        assert!((stats.mttr_recover_ms - expected).abs() < 1e-6);
        let r = replay(&path, t0(), at(60), Candidate::Current).await;
        assert_faithful(&r);
        assert_eq!(r.recorded.mttr.ms, Some(expected));
        assert_eq!(r.recorded.mttr.observed, 3);
        assert_eq!(r.recorded.recovered.total(), 3);
        assert_eq!(r.recorded.unrecovered, 1);
        // A candidate that opens a's circuit at f1: the world's evidence (the success
        // signal, the confirmation) is replayed as recorded.
        let c = config("[circuit_breaker]\nfailure_threshold = 2\n");
        let r = replay(&path, t0(), at(60), candidate("threshold 2", c)).await;
        assert_eq!(r.backtest.decisions.get("act"), Some(&1));
        assert_eq!(r.backtest.mttr.ms, Some(expected));
        assert_eq!(r.backtest.unrecovered, 1);
        // Recoveries after the window's end do not count.
        let r = replay(&path, t0(), at(15), Candidate::Current).await;
        assert_eq!(r.recorded.recovered.total(), 2);
        assert_eq!(r.recorded.unrecovered, 2);
        assert_eq!(r.backtest.recovered, r.recorded.recovered);
    });
}

#[test]
fn a_sweep_is_the_single_backtests_of_its_combinations_over_one_read() {
    block_on(async {
        let (_dir, path) = temp_db();
        eight_failures(&path, 5).await;
        let base = config("");
        let settings = vec![
            (
                "circuit_breaker.failure_threshold".to_owned(),
                vec!["3".to_owned(), "5".to_owned(), "8".to_owned()],
            ),
            (
                "circuit_breaker.open_ms".to_owned(),
                vec!["30000".to_owned(), "60000".to_owned()],
            ),
        ];
        let store = Store::open(&path, StoreOptions::default()).await.unwrap();
        let options = BacktestOptions {
            seed: 7,
            ..BacktestOptions::new(Window::new(t0(), at(90)).unwrap())
        };
        let s = healstore::backtest::sweep(&store, &options, "base", &base, &settings)
            .await
            .unwrap();
        store.close().await.unwrap();
        assert_eq!(s.rows.len(), 6);
        assert!(
            s.rows
                .windows(2)
                .all(|w| w[0].figures.health_score >= w[1].figures.health_score)
        );
        for row in &s.rows {
            let mut c = base.clone();
            for set in &row.settings {
                c = c.with_setting(&set.key, &set.value).unwrap();
            }
            let single = replay(&path, t0(), at(90), candidate(&row.label, c)).await;
            assert_eq!(row.figures, single.backtest, "{}", row.label);
            assert_eq!(row.matching, single.matching, "{}", row.label);
            assert_eq!(
                row.changed_failures, single.changed_failures,
                "{}",
                row.label
            );
            assert_eq!(s.recorded, single.recorded);
        }
        let labels: Vec<&str> = s.rows.iter().map(|r| r.label.as_str()).collect();
        assert!(
            labels.contains(&"circuit_breaker.failure_threshold=8 circuit_breaker.open_ms=30000")
        );
    });
}

#[test]
fn sweeps_on_the_command_line_and_their_refusals() {
    let (_dir, path) = temp_db();
    let end = "2026-11-01T12:05:00Z";
    expect_success(&run(
        &path,
        &["--now", end, "demo", "--ticks", "60", "--seed", "3"],
    ));
    let before = db_files(&path);
    let sweep_args = |extra: &[&str]| {
        let mut v = vec!["--now", end, "backtest", "--current", "--window", "1h"];
        v.extend_from_slice(extra);
        v.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let args = sweep_args(&[
        "--set",
        "circuit_breaker.failure_threshold=2,5",
        "--set",
        "circuit_breaker.open_ms=30000,60000",
    ]);
    let mut json_args = vec!["--format".to_owned(), "json".to_owned()];
    json_args.extend(args.iter().cloned());
    let out = expect_success(&run(
        &path,
        &json_args.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{v}");
    let scores: Vec<f64> = rows
        .iter()
        .map(|r| r["figures"]["health_score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    // The combination that is the configuration in effect decides as recorded.
    let same = rows
        .iter()
        .find(|r| r["label"] == "circuit_breaker.failure_threshold=5 circuit_breaker.open_ms=60000")
        .unwrap();
    assert_eq!(same["matching"], same["decisions"], "{same}");
    let table = expect_success(&run(
        &path,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    assert!(
        table.contains("circuit_breaker.failure_threshold=2"),
        "{table}"
    );
    assert!(table.contains("(recorded)"), "{table}");
    assert_same_files(&before, &db_files(&path), "backtest --set");
    for (set, needle) in [
        ("circuit_breaker.no_such_thing=1,2", "no_such_thing"),
        ("circuit_breaker.failure_threshold=3,0", "failure_threshold"),
        ("circuit_breaker.failure_threshold=", "no value"),
        ("circuit_breaker.failure_threshold=3,,5", "empty value"),
        ("circuit_breaker.failure_threshold", "KEY=V1,V2"),
    ] {
        let out = run(
            &path,
            &sweep_args(&["--set", set])
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        let err = expect_error(&out, needle);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert_same_files(&before, &db_files(&path), set);
    }
}

#[test]
fn the_html_report_holds_the_figures_and_fetches_nothing() {
    let (_dir, path) = temp_db();
    let end = "2026-11-01T12:05:00Z";
    expect_success(&run(
        &path,
        &["--now", end, "demo", "--ticks", "60", "--seed", "3"],
    ));
    let dir = tempfile::tempdir().unwrap();
    let cand = dir.path().join("candidate.toml");
    std::fs::write(&cand, "[circuit_breaker]\nfailure_threshold = 2\n").unwrap();
    let page_path = dir.path().join("backtest.html");
    let before = db_files(&path);
    let base = [
        "--now",
        end,
        "--config",
        cand.to_str().unwrap(),
        "backtest",
        "--window",
        "1h",
        "--changed",
        "1000",
    ];
    let mut html_args = base.to_vec();
    html_args.extend(["--html", page_path.to_str().unwrap()]);
    let out = expect_success(&run(&path, &html_args));
    assert!(out.contains("wrote"), "{out}");
    assert_same_files(&before, &db_files(&path), "backtest --html");
    let page = std::fs::read_to_string(&page_path).unwrap();
    let mut json_args = vec!["--format", "json"];
    json_args.extend(base);
    let v: serde_json::Value =
        serde_json::from_str(&expect_success(&run(&path, &json_args))).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("healstore backtest"));
    for side in ["recorded", "backtest"] {
        let f = &v[side];
        let score = format!("{:.1}", f["health_score"].as_f64().unwrap());
        assert!(page.contains(&score), "{side} health {score}");
        for (verdict, n) in f["decisions"].as_object().unwrap() {
            assert!(page.contains(&format!("{verdict} (")), "{verdict}");
            assert!(
                page.contains(&format!(": {}", n.as_u64().unwrap())),
                "{verdict} {n}"
            );
        }
        let isolated = format!("{:.1}", f["agent_minutes_isolated"].as_f64().unwrap());
        assert!(page.contains(&isolated), "{side} isolated {isolated}");
    }
    let changed = v["changed"].as_array().unwrap();
    assert!(!changed.is_empty());
    for c in changed {
        assert!(page.contains(c["failure_id"].as_str().unwrap()));
    }
    for chart in [
        "Decisions by verdict",
        "Actions by kind",
        "Outcomes and recoveries",
        "Mean times from detection",
        "Isolation and limits",
    ] {
        assert!(page.contains(chart), "{chart}");
    }
    // Self-contained: no script, nothing fetched.
    for needle in ["http://", "https://", "<script", "src=", "@import", "url("] {
        assert!(!page.contains(needle), "the page holds {needle}");
    }
    // An existing page is not replaced without --force.
    let out = run(&path, &html_args);
    expect_error(&out, "exists");
    html_args.push("--force");
    expect_success(&run(&path, &html_args));
}

/// Failures whose delegated actions await an outcome: a third never get one, the others get
/// theirs two seconds later (failed ones going on to the route's next strategy). Each failure
/// is released once the read is past the last event naming it: the reports are the ones of a
/// replay that keeps every failure to the window's end, and the failures held at once are
/// the few in flight, not the ones whose outcome never came.
#[test]
fn failures_awaiting_outcomes_are_released_with_the_same_report() {
    block_on(async {
        let (_dir, path) = temp_db();
        let clock = Arc::new(ManualClock::new(t0()));
        let store = store_at(&path, clock.clone()).await;
        let recorded = Config::default();
        recorded.record(&store).await.unwrap();
        // No coordinator: acting decisions are delegated, their outcomes reported later.
        let h = recorded.builder().open(store).await.unwrap();
        let n = 300;
        for i in 0..n {
            clock.set(at(i));
            let f = Failure::new("task_timeout", Severity::High, at(i))
                .with_agent(format!("agent-{}", i % 7))
                .with_task(format!("task-{i}"))
                .with_id(format!("f{i}"));
            h.heal(f).await.unwrap();
            let j = i - 2;
            if j >= 0 && j % 3 != 0 {
                h.record_outcome(&format!("f{j}"), j % 3 == 1, Some(1500), at(i))
                    .await
                    .unwrap();
            }
        }
        h.close().await.unwrap();
        // A candidate that routes timeouts through a circuit breaker first.
        let candidate = Candidate::Config {
            name: "breaker first".into(),
            config: Box::new(
                Config::parse(
                    "[[route]]\nfailure_types = [\"task_timeout\"]\n\
                     strategies = [\"circuit_breaker\", \"task_retry\"]\n\
                     [circuit_breaker]\nfailure_threshold = 2\nopen_ms = 4000\n",
                )
                .unwrap(),
            ),
        };
        let store = Store::open(&path, StoreOptions::default()).await.unwrap();
        let window = Window::new(t0(), at(n + 10)).unwrap();
        for c in [Candidate::Current, candidate] {
            let run = |keep: bool| {
                let (store, c) = (&store, c.clone());
                async move {
                    let options = BacktestOptions {
                        seed: 7,
                        max_changed: 25,
                        keep_failures_to_end: keep,
                        ..BacktestOptions::new(window)
                    };
                    backtest(store, &options, &[c]).await.unwrap().remove(0)
                }
            };
            let (mut released, mut kept) = (run(false).await, run(true).await);
            assert_eq!(released.failures, n as u64);
            assert!(
                released.failures_held <= 10,
                "held at once: {}",
                released.failures_held
            );
            assert!(kept.failures_held >= 100, "kept: {}", kept.failures_held);
            released.failures_held = 0;
            kept.failures_held = 0;
            assert_eq!(released, kept);
            if matches!(c, Candidate::Current) {
                assert_faithful(&released);
                assert!(released.recorded.outcomes.observed > 0);
            } else {
                assert!(released.changed_failures > 0);
                assert!(
                    released.backtest.outcomes.modelled + released.backtest.outcomes.unknown > 0
                );
            }
        }
        store.close().await.unwrap();
    });
}
