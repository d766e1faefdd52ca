//! Backtest benchmark: the analytics benchmark's store (1,000,000 failures with their healing
//! events over 30 days, `common::store`) replayed through a candidate configuration.
//!
//! Timed: one backtest over 7 days and over 30 days (failures replayed per second), and a
//! sweep of 12 combinations over 7 days (every engine fed from one read of the log) against
//! one backtest over the same 7 days, in the same run. The baseline is reading the window's
//! events alone through the store's read API and decoding them (what every backtest does
//! before deciding anything). Peak memory (VmHWM) is reset before each part and reported
//! after it, so that each window's own peak shows. Goals: at least 200,000 failures replayed
//! per second; the 12-combination sweep at most 3 times one backtest; memory bounded whatever
//! the window (the 30-day peak close to the 7-day one).
//!
//! `cargo bench --bench backtest` (`HEALSTORE_BENCH_QUICK=1` for 50,000 failures;
//! `HEALSTORE_BENCH_ONLY=7d|30d|sweep` for one part, with the 7-day backtest as reference for
//! the sweep).

mod common;

use common::store::{now, prepare};
use common::{print_machine, vm_hwm_kib};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use healstore::backtest::{BacktestOptions, Candidate, backtest, sweep};
use healstore::config::Config;
use healstore::{EventFilter, Store, Window};

/// Resets the peak resident set to the current one (Linux `clear_refs`), so that the next
/// VmHWM is the next part's own peak.
fn reset_hwm() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn mib(k: Option<u64>) -> String {
    k.map_or("?".into(), |k| format!("{:.0}", k as f64 / 1024.0))
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

async fn read_baseline(store: &Store, w: &Window) -> anyhow::Result<(u64, Duration)> {
    let t = Instant::now();
    let mut n = 0u64;
    let mut events = store.read(EventFilter {
        since: Some(w.since),
        until: Some(w.until),
        position_order: true,
        ..Default::default()
    });
    while let Some(e) = events.next().await {
        let e = e?;
        if e.decode().is_some() {
            n += 1;
        }
    }
    Ok((n, t.elapsed()))
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::var("HEALSTORE_BENCH_QUICK").is_ok_and(|v| v == "1");
    let only = std::env::var("HEALSTORE_BENCH_ONLY").unwrap_or_default();
    let run = |part: &str| only.is_empty() || only == part;
    let n: i64 = if quick { 50_000 } else { 1_000_000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    print_machine();
    println!("load average at the start: {}", load());
    rt.block_on(async {
        let path = std::path::PathBuf::from(format!("target/bench-analytics-{n}-r.db"));
        let store = prepare(&path, n, 30).await?;
        println!("store: {n} failures over 30 days ({})", path.display());
        // The candidate: the default routes with a lower circuit threshold.
        let base = Config::default();
        let candidate = Candidate::Config {
            name: "failure_threshold=3".into(),
            config: Box::new(base.with_setting("circuit_breaker.failure_threshold", "3")?),
        };
        let week = Window::last(chrono::Duration::days(7), now())?;
        let month = Window::last(chrono::Duration::days(30), now())?;

        println!("\n== one backtest (one run each) ==");
        println!(
            "{:<10} {:>9} {:>9} {:>12} {:>10} {:>9} {:>10}  load",
            "window", "failures", "seconds", "failures/s", "read only", "/read", "peak MiB"
        );
        let mut one_week = None;
        for (name, w) in [("7d", week), ("30d", month)] {
            if !(run(name) || (name == "7d" && run("sweep"))) {
                continue;
            }
            let (events, read) = read_baseline(&store, &w).await?;
            reset_hwm();
            let t = Instant::now();
            let reports = backtest(
                &store,
                &BacktestOptions {
                    max_changed: 20,
                    ..BacktestOptions::new(w)
                },
                std::slice::from_ref(&candidate),
            )
            .await?;
            let d = t.elapsed();
            let hwm = vm_hwm_kib();
            let r = &reports[0];
            let rate = r.failures as f64 / d.as_secs_f64();
            println!(
                "{name:<10} {:>9} {:>9.2} {:>12.0} {:>9.2}s {:>9.2} {:>10}  {}",
                r.failures,
                d.as_secs_f64(),
                rate,
                read.as_secs_f64(),
                d.as_secs_f64() / read.as_secs_f64(),
                mib(hwm),
                load()
            );
            println!(
                "           ({events} events read; {} of {} decisions as recorded, {} failures changed; at most {} failures held at once; goal >= 200,000 failures/s: {})",
                r.matching,
                r.decisions,
                r.changed_failures,
                r.failures_held,
                if rate >= 200_000.0 { "MET" } else { "NOT MET" }
            );
            if name == "7d" {
                one_week = Some(d);
            }
        }

        if run("sweep") {
            let settings = vec![
                (
                    "circuit_breaker.failure_threshold".to_owned(),
                    vec!["3".to_owned(), "5".to_owned(), "8".to_owned()],
                ),
                (
                    "circuit_breaker.open_ms".to_owned(),
                    vec!["30000".to_owned(), "60000".to_owned()],
                ),
                (
                    "circuit_breaker.half_open_max_calls".to_owned(),
                    vec!["2".to_owned(), "3".to_owned()],
                ),
            ];
            reset_hwm();
            let t = Instant::now();
            let s = sweep(&store, &BacktestOptions::new(week), "default", &base, &settings).await?;
            let d = t.elapsed();
            let hwm = vm_hwm_kib();
            println!("\n== sweep of {} combinations over 7 days ==", s.rows.len());
            let one = one_week.unwrap_or_default();
            let ratio = d.as_secs_f64() / one.as_secs_f64();
            println!(
                "sweep {:.2} s, one backtest {:.2} s: {:.2}x (goal <= 3x: {}); {:.0} failure-replays/s; peak {} MiB; load {}",
                d.as_secs_f64(),
                one.as_secs_f64(),
                ratio,
                if ratio <= 3.0 { "MET" } else { "NOT MET" },
                (s.failures * s.rows.len() as u64) as f64 / d.as_secs_f64(),
                mib(hwm),
                load()
            );
            println!("best: {} (health {:.1})", s.rows[0].label, s.rows[0].figures.health_score);
        }
        store.close().await?;
        anyhow::Ok(())
    })
}
