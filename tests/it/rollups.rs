//! The rollups by the second, minute, hour and day against brute force: windows of many
//! lengths and alignments (a millisecond to several days, on and off every boundary, around a
//! burst of many failures to the second), results and withheld decisions among the figures, histogram
//! percentiles within their stated bound of the exact nearest-rank ones, the histogram buckets
//! the triggers write equal to the library's, and a rebuild equal to the incremental tables.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use futures_util::StreamExt;
use healstore::analytics::advice::AdviceOptions;
use healstore::analytics::hist::{self, RELATIVE_ERROR};
use healstore::analytics::stats::EXACT_MAX;
use healstore::analytics::{Analytics, MttrTo, read_model_digests};
use healstore::{Store, Window};

use crate::analytics::Story;
use crate::common::{Rng, open, t0, temp_db};

/// One failure as written: detection, agent, type, remediation and recovery instants, and its
/// healing result (strategy, success, duration in ms, instant; its decision, withheld or not,
/// that duration before).
struct Truth {
    at: DateTime<Utc>,
    agent: String,
    failure_type: &'static str,
    remediated: Option<DateTime<Utc>>,
    recovered: Option<DateTime<Utc>>,
    result: Option<(&'static str, bool, i64, DateTime<Utc>)>,
    withheld: bool,
}

/// A time from a log-uniform spread between 0 and about 2.8 hours, in microseconds, so that
/// every histogram range (exact below 128 µs, then each power of two) is exercised.
fn spread(rng: &mut Rng) -> i64 {
    let bits = rng.between(0, 33);
    let hi = (1u64 << bits) - 1;
    rng.between(0, hi.max(1)) as i64
}

const SPAN_US: i64 = 3 * 86_400_000_000 + 5 * 3_600_000_000;
/// The hour of the burst, and the three seconds of the dense burst inside it.
const BURST_US: i64 = 86_400_000_000 + 7 * 3_600_000_000;
const DENSE_US: i64 = BURST_US + 1_800_000_000 + 12_345_678;

/// `n` failures over three days and five hours from `t0()`, written many at once.
async fn write(store: &Store, n: usize, rng: &mut Rng) -> Vec<Truth> {
    let types = ["agent_down", "task_timeout", "resource_exhaustion"];
    let mut truth = Vec::new();
    for i in 0..n {
        // A burst: a quarter of the failures within one hour of the second day, and an eighth
        // within three seconds of it (many to a second, healed within seconds).
        let at_us = if i % 4 == 0 {
            BURST_US + rng.between(0, 3_599_999_999) as i64
        } else if i % 8 == 1 {
            DENSE_US + rng.between(0, 2_999_999) as i64
        } else {
            rng.between(0, SPAN_US as u64 - 1) as i64
        };
        let at = t0() + Duration::microseconds(at_us);
        let remediated = (rng.between(0, 9) != 0).then(|| {
            let t = if i % 8 == 1 {
                rng.between(0, 4_000_000) as i64
            } else {
                spread(rng)
            };
            at + Duration::microseconds(t)
        });
        let recovered = (rng.between(0, 4) != 0)
            .then(|| remediated.unwrap_or(at) + Duration::microseconds(spread(rng)));
        let result = (rng.between(0, 2) != 0).then(|| {
            let ms = rng.between(1, 2_000) as i64;
            let at = at
                + Duration::milliseconds(ms)
                + Duration::microseconds(rng.between(0, 999_999) as i64);
            (
                ["AgentRestart", "TaskRetry"][rng.between(0, 1) as usize],
                rng.between(0, 3) != 0,
                ms,
                at,
            )
        });
        truth.push(Truth {
            at,
            agent: format!("agent-{}", rng.between(0, 29)),
            failure_type: types[rng.between(0, 2) as usize],
            remediated,
            recovered,
            result,
            withheld: rng.between(0, 4) == 0,
        });
    }
    let ids: Vec<String> = (0..n).map(|i| format!("h-{i}")).collect();
    futures_util::stream::iter(truth.iter().zip(&ids))
        .map(|(t, id)| async move {
            let mut s = Story::new(id, t.failure_type, t.at).agent(&t.agent);
            if let Some(r) = t.remediated {
                s = s.resolved("AgentRestart", r);
            }
            if let Some(r) = t.recovered {
                s = s.recovered("signal", r);
            }
            if let Some((strategy, ok, ms, at)) = t.result {
                s = s.result(strategy, ok, ms, at);
            }
            if t.withheld {
                s = s.decision("withheld");
            }
            s.write(store).await;
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    truth
}

fn window(s: i64, u: i64) -> Window {
    Window::new(
        t0() + Duration::microseconds(s),
        t0() + Duration::microseconds(u),
    )
    .unwrap()
}

/// Windows of every length from under a second to the whole span, at random offsets, and on
/// minute, hour and day boundaries.
fn windows(rng: &mut Rng) -> Vec<Window> {
    let mut out = vec![
        window(-1, SPAN_US + 1),
        window(0, 86_400_000_000),
        window(
            86_400_000_000 + 7 * 3_600_000_000,
            86_400_000_000 + 8 * 3_600_000_000,
        ),
        window(3_600_000_000, 3_600_000_000 + 60_000_000),
        window(
            86_400_000_000 + 7 * 3_600_000_000 + 1_234_567,
            86_400_000_000 + 8 * 3_600_000_000 + 7_654_321,
        ),
    ];
    // Around the dense burst: inside one of its seconds, across its seconds on and off their
    // boundaries, and ending within it.
    let dense_second = DENSE_US - DENSE_US % 1_000_000 + 1_000_000;
    out.extend([
        window(dense_second + 123_456, dense_second + 876_543),
        window(dense_second, dense_second + 2_000_000),
        window(DENSE_US - 1, DENSE_US + 3_500_001),
        window(DENSE_US - 61_000_000, dense_second + 1_500_000),
        window(BURST_US - 7_000_001, DENSE_US + 2_100_000),
        window(DENSE_US + 500_000, BURST_US + 3_600_000_000 + 1),
    ]);
    for len_unit in [
        1_000i64,
        1_000_000,
        60_000_000,
        3_600_000_000,
        86_400_000_000,
    ] {
        for _ in 0..4 {
            let len = rng.between(1, 3) as i64 * len_unit + rng.between(0, 2) as i64 * 60_000_000;
            let s = rng.between(0, (SPAN_US - len).max(1) as u64) as i64;
            // Half the windows start on a boundary of their unit.
            let s = if rng.between(0, 1) == 0 {
                s - s % len_unit
            } else {
                s
            };
            out.push(window(s, s + len));
        }
    }
    for _ in 0..8 {
        let s = rng.between(0, SPAN_US as u64 - 1) as i64;
        let len = 1 + rng.between(0, (SPAN_US - s) as u64) as i64;
        out.push(window(s, s + len));
    }
    out
}

fn nearest_rank(sorted: &[i64], p: usize) -> i64 {
    sorted[(sorted.len() * p).div_ceil(100).max(1) - 1]
}

/// A percentile in ms as the JSON carries it, against the exact one in µs.
fn check(got_ms: f64, exact_us: i64, exact: bool, what: &str) {
    let got_us = (got_ms * 1000.0).round() as i64;
    if exact {
        assert_eq!(got_us, exact_us, "{what}");
    } else {
        let err = (got_us - exact_us).abs() as f64 / exact_us.max(1) as f64;
        assert!(
            err <= RELATIVE_ERROR + 1e-9,
            "{what}: {got_us} against {exact_us} ({err})"
        );
    }
}

#[tokio::test]
async fn windows_of_every_length_and_alignment_agree_with_brute_force() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    let mut rng = Rng::seeded("rollups_windows");
    let truth = write(&store, EXACT_MAX as usize + 900, &mut rng).await;
    let a = Analytics::new(&store);
    let mut approximate = 0;
    for w in windows(&mut rng) {
        let inside = |t: DateTime<Utc>| t >= w.since && t < w.until;
        let s = a.stats(&w).await.unwrap();
        let detected: Vec<&Truth> = truth.iter().filter(|t| inside(t.at)).collect();
        assert_eq!(s.total_failures, detected.len() as i64, "{w:?}");
        let mut by_type: BTreeMap<String, i64> = BTreeMap::new();
        for t in &detected {
            *by_type.entry(t.failure_type.into()).or_default() += 1;
        }
        assert_eq!(s.by_failure_type, by_type, "{w:?}");
        let results: Vec<(&str, bool, i64)> = truth
            .iter()
            .filter_map(|t| t.result.filter(|r| inside(r.3)).map(|r| (r.0, r.1, r.2)))
            .collect();
        assert_eq!(s.total_healings, results.len() as i64, "{w:?}");
        assert_eq!(
            s.successful_healings,
            results.iter().filter(|r| r.1).count() as i64,
            "{w:?}"
        );
        let mut by_strategy: BTreeMap<String, i64> = BTreeMap::new();
        for r in &results {
            *by_strategy.entry(r.0.into()).or_default() += 1;
        }
        assert_eq!(s.by_strategy, by_strategy, "{w:?}");
        let duration: i64 = results.iter().map(|r| r.2).sum();
        let avg = if results.is_empty() {
            0.0
        } else {
            duration as f64 / results.len() as f64
        };
        assert!(
            (s.avg_healing_time_ms - avg).abs() <= 1e-9 * avg.max(1.0),
            "{w:?}"
        );
        let withheld = truth
            .iter()
            .filter(|t| {
                t.withheld
                    && t.result
                        .is_some_and(|r| inside(r.3 - Duration::milliseconds(r.2)))
            })
            .count();
        let unrecovered = detected
            .iter()
            .filter(|t| t.recovered.is_none_or(|r| r >= w.until))
            .count() as i64;
        assert_eq!(s.unrecovered, unrecovered, "{w:?}");

        let mut all_exact = true;
        for (name, remediate) in [("remediate", true), ("recover", false)] {
            let mut times: Vec<i64> = truth
                .iter()
                .filter_map(|t| {
                    let done = if remediate { t.remediated } else { t.recovered };
                    done.filter(|d| inside(*d))
                        .map(|d| (d - t.at).num_microseconds().unwrap())
                })
                .collect();
            times.sort_unstable();
            let j = serde_json::to_value(&s).unwrap();
            let key = if remediate { "remediated" } else { "recovered" };
            assert_eq!(j[key], times.len() as i64, "{name} {w:?}");
            if times.is_empty() {
                continue;
            }
            let exact = times.len() as i64 <= EXACT_MAX;
            all_exact &= exact;
            let mean = times.iter().sum::<i64>() as f64 / times.len() as f64 / 1000.0;
            let got = j[format!("mttr_{name}_ms")].as_f64().unwrap();
            assert!(
                (got - mean).abs() <= 1e-6 * mean.max(1.0),
                "{name} mean {w:?}"
            );
            for p in [50, 90, 99] {
                let got = j[format!("mttr_{name}_p{p}_ms")].as_f64().unwrap();
                check(
                    got,
                    nearest_rank(&times, p),
                    exact,
                    &format!("{name} p{p} {w:?}"),
                );
            }
        }
        assert_eq!(s.exact, all_exact, "{w:?}");
        if !all_exact {
            approximate += 1;
        }

        // The per-agent and hour-of-day breakdowns.
        let d = a
            .dashboard(&w, &AdviceOptions::default(), w.until)
            .await
            .unwrap();
        let mut agents: BTreeMap<&str, i64> = BTreeMap::new();
        let mut hours = vec![0i64; 24];
        for t in &detected {
            *agents.entry(&t.agent).or_default() += 1;
            hours[((t.at.timestamp() / 3600) % 24) as usize] += 1;
        }
        let mut top: Vec<(String, i64)> = agents.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        top.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
        top.truncate(10);
        assert_eq!(d.top_agents, top, "{w:?}");
        assert_eq!(d.failures_by_hour, hours, "{w:?}");
        assert_eq!(d.overall, s);
        let limits = d
            .recommendations
            .iter()
            .find(|r| r.rule == "healer_limits_reached")
            .and_then(|r| r.value);
        assert_eq!(
            limits,
            (withheld > 0).then_some(withheld as f64),
            "withheld decisions {w:?}"
        );
    }
    assert!(
        approximate >= 2,
        "the histograms answered {approximate} windows"
    );
    let before = read_model_digests(store.read_pool()).await.unwrap();
    a.rebuild().await.unwrap();
    assert_eq!(read_model_digests(store.read_pool()).await.unwrap(), before);
    store.close().await.unwrap();
}

#[tokio::test]
async fn mttr_series_from_histograms_stay_within_their_bound() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    let mut rng = Rng::seeded("rollups_series");
    let truth = write(&store, EXACT_MAX as usize + 600, &mut rng).await;
    let a = Analytics::new(&store);
    let w = window(1_234_567, SPAN_US - 7_654_321);
    for (bucket, bucket_us) in [
        (Duration::hours(1), 3_600_000_000i64),
        (Duration::days(1), 86_400_000_000),
        (Duration::minutes(5), 300_000_000),
    ] {
        let series = a
            .mttr_series(&w, MttrTo::Recover, None, bucket)
            .await
            .unwrap();
        let means = a.mttr_means(&w, bucket).await.unwrap();
        let mut by: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for t in &truth {
            if let Some(r) = t.recovered.filter(|r| *r >= w.since && *r < w.until) {
                let at = r.timestamp_micros();
                let start = at - at.rem_euclid(bucket_us);
                by.entry(start)
                    .or_default()
                    .push((r - t.at).num_microseconds().unwrap());
            }
        }
        assert_eq!(series.len(), by.len(), "{bucket}");
        assert_eq!(means.len(), by.len(), "{bucket}");
        for ((start, times), (p, m)) in by.iter_mut().zip(series.iter().zip(&means)) {
            times.sort_unstable();
            let at = healstore::time::format_time(DateTime::from_timestamp_micros(*start).unwrap());
            assert_eq!(p.bucket_start, at);
            assert_eq!(p.resolved, times.len() as i64);
            assert_eq!(m.resolved, times.len() as i64);
            assert!(!p.exact);
            let mean = times.iter().sum::<i64>() as f64 / times.len() as f64 / 1000.0;
            assert!((p.mttr_ms - mean).abs() <= 1e-6 * mean.max(1.0));
            assert!((m.mttr_ms - mean).abs() <= 1e-6 * mean.max(1.0));
            check(p.p50_ms, nearest_rank(times, 50), false, "p50");
            check(p.p90_ms, nearest_rank(times, 90), false, "p90");
            check(p.max_ms, *times.last().unwrap(), false, "max");
            check(m.max_ms, *times.last().unwrap(), false, "max of the means");
        }
    }
    store.close().await.unwrap();
}

#[tokio::test]
async fn trigger_buckets_equal_the_library_buckets_and_a_rebuild_equals_the_triggers() {
    let (_dir, path) = temp_db();
    let store = open(&path).await;
    // Times to recover on every power-of-two boundary, and below 128 µs.
    let mut expected: BTreeMap<i64, i64> = BTreeMap::new();
    let mut times: Vec<i64> = (0..130).collect();
    for k in 7..40 {
        times.extend([(1i64 << k) - 1, 1i64 << k, (1i64 << k) + 1]);
    }
    for (i, us) in times.iter().enumerate() {
        let id = format!("b-{i}");
        let at = t0() + Duration::seconds(i as i64);
        Story::new(&id, "agent_down", at)
            .recovered("signal", at + Duration::microseconds(*us))
            .write(&store)
            .await;
        *expected.entry(hist::bucket(*us)).or_default() += 1;
    }
    let got: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT bucket, SUM(n) FROM ttr_histogram WHERE span = 86400000000 AND kind = 'recover' \
         GROUP BY bucket ORDER BY bucket",
    )
    .fetch_all(store.read_pool())
    .await
    .unwrap();
    assert_eq!(got, expected.into_iter().collect::<Vec<_>>());
    let before = read_model_digests(store.read_pool()).await.unwrap();
    Analytics::new(&store).rebuild().await.unwrap();
    assert_eq!(read_model_digests(store.read_pool()).await.unwrap(), before);
    store.close().await.unwrap();
}
