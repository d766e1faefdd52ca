//! Configuration checked before it is recorded or used: every bad setting is refused in one
//! line naming its key, on the command line (exit 2, database unchanged) and in the library
//! (nothing recorded, no healer opened).

use std::sync::Arc;

use healstore::config::{Config, RouteConfig, StrategyKind};
use healstore::heal::strategies::circuit::CircuitBreaker;
use healstore::heal::strategies::retry::TaskRetryConfig;
use healstore::heal::{Composite, Healer, HealerOptions, Limits};
use healstore::{ManualClock, Store, StoreOptions};

use crate::common::{assert_same_files, db_files, expect_error, expect_success, run, t0, temp_db};

/// One bad value of each kind: (what, the file, what the error must say).
fn bad_settings() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        (
            "a route naming a strategy twice",
            "[[route]]\nfailure_types = [\"agent_down\"]\n\
             strategies = [\"circuit_breaker\", \"circuit_breaker\"]\n",
            "invalid configuration: route[0].strategies = [circuit_breaker, circuit_breaker]: \
             lists circuit_breaker twice",
        ),
        (
            "a negative number",
            "[task_retry]\nmultiplier = -2.0\n",
            "invalid configuration: task_retry.multiplier = -2: must be a finite number of at \
             least 1",
        ),
        (
            "a fraction out of its range",
            "[task_retry]\njitter = 5.0\n",
            "invalid configuration: task_retry.jitter = 5: must be a number from 0 to 1",
        ),
        (
            "NaN",
            "[gradual_degradation]\nhysteresis = nan\n",
            "invalid configuration: gradual_degradation.hysteresis = NaN: must be a number from \
             0 to 1",
        ),
        (
            "an infinity",
            "[agent_restart]\nmultiplier = inf\n",
            "invalid configuration: agent_restart.multiplier = inf: must be a finite number",
        ),
        (
            "a minimum above its maximum",
            "[task_retry]\nbase_ms = 60000\nmax_ms = 30000\n",
            "invalid configuration: task_retry.base_ms = 60000: must not be above \
             task_retry.max_ms (30000)",
        ),
        (
            "a negative count",
            "[limits]\nmax_actions_per_agent_per_hour = -1\n",
            "invalid configuration: limits.max_actions_per_agent_per_hour = -1: must be a whole \
             number from 0 to 4294967295",
        ),
        (
            "a zero count",
            "[quorum_recovery]\nrequired_quorum = 0\n",
            "invalid configuration: quorum_recovery.required_quorum = 0: must be at least 1",
        ),
        (
            "a zero fleet",
            "[limits]\nfleet_size = 0\n",
            "invalid configuration: limits.fleet_size = 0: must be at least 1",
        ),
        (
            "a share above the whole",
            "[limits]\nmax_disabled_fraction = 1.5\n",
            "invalid configuration: limits.max_disabled_fraction = 1.5: must be a number from 0 \
             to 1",
        ),
        (
            "a duration beyond 100 years",
            "[circuit_breaker]\nopen_ms = 4000000000000\nmax_open_ms = 4000000000000\n",
            "invalid configuration: circuit_breaker.open_ms = 4000000000000: must be a duration",
        ),
        (
            "an empty window",
            "[circuit_breaker]\nwindow = { kind = \"count\", size = 0 }\n",
            "invalid configuration: circuit_breaker.window.size = 0: must be at least 1",
        ),
        (
            "a level's setting",
            "[[gradual_degradation.levels]]\nname = \"X\"\nthreshold = 0.5\n\
             quality_threshold = 2.0\n",
            "invalid configuration: gradual_degradation.levels[0].quality_threshold = 2: must be \
             a number from 0 to 1",
        ),
        (
            "a per-cause setting",
            "[agent_restart.per_failure_type.agent_down]\nmultiplier = 0.5\n",
            "invalid configuration: agent_restart.per_failure_type.agent_down.multiplier = 0.5: \
             must be a finite number of at least 1",
        ),
        (
            "a usage ratio at or below zero",
            "[resource_rebalance]\nrecover_below = -0.1\n",
            "invalid configuration: resource_rebalance.recover_below = -0.1: must be a number \
             above 0 and at most 1",
        ),
    ]
}

#[test]
fn every_bad_setting_is_refused_in_one_line_naming_its_key_and_changes_nothing() {
    let (dir, db) = temp_db();
    // A database whose configuration (the defaults) is recorded already.
    expect_success(&run(&db, &["init"]));
    expect_success(&run(&db, &["--now", "2026-11-01T12:00:00Z", "states"]));
    let before = db_files(&db);
    for (what, text, needle) in bad_settings() {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, text).unwrap();
        let file = file.to_str().unwrap();
        for command in [
            &[
                "record",
                "failure",
                "--type",
                "agent_down",
                "--agent",
                "a-1",
            ][..],
            &["tick"][..],
        ] {
            let mut args = vec!["--config", file, "--now", "2026-11-01T12:00:01Z"];
            args.extend_from_slice(command);
            let out = run(&db, &args);
            let line = expect_error(&out, needle);
            assert!(line.contains(needle), "{what}: {line}");
            assert_same_files(&before, &db_files(&db), what);
        }
        // The library says the same.
        let err = Config::parse(text).expect_err(what).to_string();
        assert!(err.contains(needle), "{what}: {err}");
    }
}

#[test]
fn a_good_configuration_with_every_kind_of_setting_is_accepted() {
    let config = Config::parse(
        "[limits]\nmax_actions_per_agent_per_hour = 1\nmax_disabled_fraction = 0.0\n\
         fleet_size = 1\n\
         [task_retry]\nbase_ms = 0\nmax_ms = 0\njitter = 1.0\nmultiplier = 1.0\n\
         [agent_restart]\nbase_ms = 500\nmax_ms = 500\n\
         [agent_restart.per_failure_type.agent_down]\nbase_ms = 100\n\
         [gradual_degradation]\nhysteresis = 0.0\n\
         [resource_rebalance]\nrecover_below = 1.0\n\
         [circuit_breaker]\nopen_ms = 1\nmax_open_ms = 1\n",
    );
    assert!(config.is_ok(), "{config:?}");
}

async fn empty_store() -> (tempfile::TempDir, Store) {
    let (dir, path) = temp_db();
    let options = StoreOptions {
        clock: Arc::new(ManualClock::new(t0())),
        ..StoreOptions::default()
    };
    (dir, Store::open(&path, options).await.unwrap())
}

#[tokio::test]
async fn a_configuration_built_in_code_is_checked_before_it_is_recorded_or_used() {
    let (_dir, store) = empty_store().await;
    let bad = [
        Config {
            task_retry: TaskRetryConfig {
                multiplier: -2.0,
                ..TaskRetryConfig::default()
            },
            ..Config::default()
        },
        Config {
            route: vec![RouteConfig {
                failure_types: vec!["agent_down".into()],
                strategies: vec![StrategyKind::TaskRetry, StrategyKind::TaskRetry],
            }],
            ..Config::default()
        },
        Config {
            limits: Limits {
                max_disabled_fraction: Some(f64::NAN),
                ..Limits::default()
            },
            ..Config::default()
        },
    ];
    for config in bad {
        let said = config.validate().unwrap_err().to_string();
        assert!(said.contains("invalid configuration: "), "{said}");
        assert_eq!(config.record(&store).await.unwrap_err().to_string(), said);
        let open = config.builder().open(store.clone()).await;
        assert!(open.is_err(), "a healer opened with {said}");
        let lazy = config.builder().open_lazy(store.clone()).await;
        assert!(lazy.is_err(), "a lazy healer opened with {said}");
    }
    assert_eq!(
        store.head_position().await.unwrap(),
        0,
        "nothing was recorded"
    );
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_builder_refuses_a_chain_listing_one_strategy_twice_and_bad_limits() {
    let (_dir, store) = empty_store().await;
    let twice = Healer::builder().register_chain(
        &["agent_down"],
        Composite::new()
            .with(1, CircuitBreaker::default())
            .with(2, CircuitBreaker::default()),
    );
    let err = twice.open(store.clone()).await.err().expect("refused");
    assert!(
        err.to_string()
            .contains("the route of agent_down lists CircuitBreaker twice"),
        "{err}"
    );
    let limits = Healer::builder()
        .register(&["agent_down"], CircuitBreaker::default())
        .options(HealerOptions {
            limits: Limits {
                max_actions_per_agent_per_hour: Some(0),
                ..Limits::default()
            },
            ..HealerOptions::default()
        });
    let err = limits.open(store.clone()).await.err().expect("refused");
    assert!(
        err.to_string()
            .contains("limits.max_actions_per_agent_per_hour = 0: must be at least 1"),
        "{err}"
    );
    assert_eq!(store.head_position().await.unwrap(), 0);
    store.close().await.unwrap();
}

#[test]
fn one_setting_changed_by_its_dotted_key() {
    let base = Config::default();
    let c = base
        .with_setting("circuit_breaker.failure_threshold", "3")
        .unwrap();
    assert_eq!(c.circuit_breaker.failure_threshold, 3);
    assert_eq!(
        base.circuit_breaker.failure_threshold, 5,
        "the base is unchanged"
    );
    let c = c
        .with_setting("limits.max_disabled_fraction", "0.5")
        .unwrap();
    assert_eq!(
        c.limits.max_disabled_fraction,
        Some(0.5),
        "an unset option is set"
    );
    assert_eq!(
        c.circuit_breaker.failure_threshold, 3,
        "earlier settings kept"
    );
    let c = base.with_setting("mode", "shadow").unwrap();
    assert_eq!(c.mode, healstore::heal::Mode::Shadow);
    // Everything else equal to the base.
    let back = c.with_setting("mode", "\"auto\"").unwrap();
    assert_eq!(back, base);

    for (key, value, needle) in [
        ("circuit_breaker.no_such_key", "3", "no such setting"),
        ("no_such_section.failure_threshold", "3", "no such setting"),
        ("circuit_breaker", "3", "names a section"),
        ("mode.deeper", "3", "no such setting"),
        (
            "circuit_breaker.failure_threshold",
            "many",
            "circuit_breaker.failure_threshold",
        ),
        (
            "circuit_breaker.failure_threshold",
            "0",
            "failure_threshold",
        ),
        ("task_retry.multiplier", "nan", "multiplier"),
        (
            "route.strategies",
            "[]",
            "routes are set in a configuration file",
        ),
        ("", "3", "dotted path"),
        ("mode", "sometimes", "mode"),
    ] {
        let e = base
            .with_setting(key, value)
            .expect_err(&format!("{key}={value} accepted"));
        let m = e.to_string();
        assert!(m.contains(needle), "{key}={value}: {m}");
        assert_eq!(m.lines().count(), 1, "{m}");
    }
}

#[test]
fn a_sweep_is_every_combination_in_order() {
    let base = Config::default();
    let sets = vec![
        (
            "circuit_breaker.failure_threshold".to_owned(),
            vec!["3".to_owned(), "5".to_owned(), "8".to_owned()],
        ),
        (
            "circuit_breaker.open_ms".to_owned(),
            vec!["30000".to_owned(), "60000".to_owned()],
        ),
    ];
    let all = base.sweep(&sets).unwrap();
    assert_eq!(all.len(), 6);
    assert_eq!(
        all[0].0,
        "circuit_breaker.failure_threshold=3 circuit_breaker.open_ms=30000"
    );
    assert_eq!(
        all[5].0,
        "circuit_breaker.failure_threshold=8 circuit_breaker.open_ms=60000"
    );
    for (label, c) in &all {
        let single = base
            .with_setting(
                "circuit_breaker.failure_threshold",
                &c.circuit_breaker.failure_threshold.to_string(),
            )
            .unwrap()
            .with_setting(
                "circuit_breaker.open_ms",
                &c.circuit_breaker.open_ms.to_string(),
            )
            .unwrap();
        assert_eq!(&single, c, "{label}");
    }
    assert_eq!(
        base.sweep(&[]).unwrap(),
        vec![(String::new(), base.clone())]
    );
    let bad = vec![(
        "circuit_breaker.failure_threshold".to_owned(),
        vec!["3".to_owned(), "-1".to_owned()],
    )];
    assert!(base.sweep(&bad).unwrap_err().to_string().contains("-1"));
    let huge: Vec<(String, Vec<String>)> = (0..4)
        .map(|_| {
            (
                "circuit_breaker.failure_threshold".to_owned(),
                (1..=10).map(|i| i.to_string()).collect(),
            )
        })
        .collect();
    assert!(base.sweep(&huge).unwrap_err().to_string().contains("10000"));
}
