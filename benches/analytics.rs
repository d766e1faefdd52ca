//! Analytics benchmark: 1,000,000 failures with their healing events over 30 days.
//!
//! The store is generated once with SQL straight into the event table, its read models then
//! built by the set-based rebuild (equal to what the triggers maintain on appends: a test
//! compares them), and cached under `target/`. Each failure has
//! its detection, a healing decision, a result (85 % succeed, 50-500 ms) and, when healed, a
//! remediation 0-2 s later and a recovery 0-5 s after that; one failure in a thousand also
//! opens and closes a circuit. About 4.7 million events in all.
//!
//! Timed (median of 5 runs after a warm-up; "now" is deliberately not on an hour boundary, so
//! every window has partial hours at both edges): stats over 24 h, effectiveness over 7 days,
//! the whole dashboard over 24 h and each of its parts, and pattern learning over 7 days.
//! Each is compared, in the same run, with computing the same kind of answer by reading the
//! raw events into memory through the store's read API (the baseline). Goals: every dashboard
//! query at most 100 ms; pattern learning over 7 days at most 2 s.
//!
//! Then every part over windows of 1, 7 and 30 days on this store and of 1, 7, 30 and 90 days
//! on a second one, 3,000,000 failures over 90 days (cached too; `HEALSTORE_BENCH_3M=0` skips
//! it), each against its goal (100 ms up to 30 days, 300 ms for 90) and the same window's
//! cost on both stores (goal: at most 1.3x); then the upstream workload (10,000 failures healed
//! within the last hour; stats, effectiveness and recommendations over that hour, goal 20 ms).
//!
//! `cargo bench --bench analytics` (`HEALSTORE_BENCH_QUICK=1` for 50,000 and 150,000 failures;
//! `HEALSTORE_BENCH_ONLY=windows` for the windows of both stores and the upstream workload
//! alone).
//! Peak memory (VmHWM) is reported after the SQL phase, after the baselines, after each
//! store's windows and at the end.

mod common;

use common::store::{DAY_US, now, prepare};
use common::{print_machine, vm_hwm_kib};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::TryStreamExt;
use healstore::analytics::advice::AdviceOptions;
use healstore::analytics::{Analytics, EffectivenessOptions, LearnOptions, MttrTo, PredictOptions};
use healstore::{EventFilter, RecordedEvent, Store, StoreOptions, Window};

fn main() -> anyhow::Result<()> {
    let quick = std::env::var("HEALSTORE_BENCH_QUICK").is_ok_and(|v| v == "1");
    let n: i64 = if quick { 50_000 } else { 1_000_000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    print_machine();
    rt.block_on(async {
        // `-r`: the data with recoveries (an older cache file has none).
        // `-h`: the data with the rollups of schema 12 (an older cache file is upgraded by its
        // migration, which takes as long as generating it again).
        let path = std::path::PathBuf::from(format!("target/bench-analytics-{n}-r.db"));
        let store = prepare(&path, n, 30).await?;
        let events: i64 = sqlx::query_scalar("SELECT MAX(position) FROM events")
            .fetch_one(store.read_pool())
            .await?;
        println!("store: {n} failures, {events} events over 30 days ({})", path.display());
        // `HEALSTORE_BENCH_ONLY=windows`: only the windows of both stores and the upstream
        // workload (neither the parts over 24 hours nor the in-memory baselines).
        let only = std::env::var("HEALSTORE_BENCH_ONLY").unwrap_or_default();
        let only_windows = only == "windows";
        // `HEALSTORE_BENCH_ONLY=patterns`: only pattern learning and one agent's predictions.
        if only == "patterns" {
            patterns_section(&store).await?;
            store.close().await?;
            return Ok(());
        }
        let a = Analytics::new(&store);
        let day = Window::last(chrono::Duration::hours(24), now())?;
        let week = Window::last(chrono::Duration::days(7), now())?;
        let month = Window::last(chrono::Duration::days(30), now())?;
        let advice = AdviceOptions::default();
        let eff = EffectivenessOptions::default();
        let learn = LearnOptions::default();

        if !only_windows {
        println!("\n== SQL over the read models (median of 5 after a warm-up) ==");
        let stats_24h = time(5, || a.stats(&day)).await?;
        let eff_7d = time(5, || a.effectiveness(&week, &eff)).await?;
        let dash = time(5, || a.dashboard(&day, &advice, now())).await?;
        let parts = [
            ("  stats 24h", time(5, || a.stats(&day)).await?),
            ("  effectiveness 24h", time(5, || a.effectiveness(&day, &eff)).await?),
            ("  circuits 24h", time(5, || a.circuits(&day, 3)).await?),
            ("  recommendations 24h", time(5, || a.recommendations(&day, &advice)).await?),
            (
                "  mttr means 24h (the chart)",
                time(5, || a.mttr_means(&day, chrono::Duration::hours(1))).await?,
            ),
            (
                "  mttr series 24h (CLI, percentiles)",
                time(5, || {
                    a.mttr_series(&day, MttrTo::Recover, None, chrono::Duration::hours(1))
                })
                .await?,
            ),
        ];
        let learn_7d = time(3, || a.learn_patterns(&week, &learn)).await?;
        let stats_30d = time(3, || a.stats(&month)).await?;
        let found = a.learn_patterns(&week, &learn).await?.len();
        println!("{:<34} {:>10}", "query", "median");
        let row = |name: &str, d: Duration| println!("{name:<34} {:>7.1} ms", ms(d));
        row("stats 24h", stats_24h);
        row("effectiveness 7d", eff_7d);
        row("dashboard 24h (everything)", dash);
        for (name, d) in &parts {
            row(name, *d);
        }
        row("pattern learning 7d", learn_7d);
        row("stats 30d", stats_30d);
        println!("(pattern learning found {found} patterns in the generated data)");
        let hwm_sql = vm_hwm_kib();

        println!("\n== baseline: the raw events read into memory, same run (median of 3) ==");
        let b_stats = time(3, || baseline_stats(&store, &day)).await?;
        let b_eff = time(3, || baseline_effectiveness(&store, &week)).await?;
        let b_dash = time(3, || baseline_dashboard(&store, &day)).await?;
        let b_learn = time(3, || baseline_patterns(&store, &week)).await?;
        println!(
            "{:<34} {:>10} {:>10} {:>10}",
            "answer", "SQL", "baseline", "SQL/base"
        );
        let cmp = |name: &str, s: Duration, b: Duration| {
            println!(
                "{name:<34} {:>7.1} ms {:>7.1} ms {:>9.3}",
                ms(s),
                ms(b),
                s.as_secs_f64() / b.as_secs_f64()
            )
        };
        cmp("stats 24h", stats_24h, b_stats);
        cmp("effectiveness 7d", eff_7d, b_eff);
        cmp("dashboard 24h", dash, b_dash);
        cmp("pattern learning 7d", learn_7d, b_learn);
        let hwm_all = vm_hwm_kib();
        println!(
            "\npeak memory (VmHWM): {} MiB after the SQL phase, {} MiB after the baselines",
            mib(hwm_sql),
            mib(hwm_all)
        );

        let slowest_part = parts.iter().map(|p| p.1).max().unwrap_or_default();
        println!("\ngoals:");
        println!(
            "  every dashboard query <= 100 ms: slowest part {:.1} ms, whole dashboard {:.1} ms  {}",
            ms(slowest_part),
            ms(dash),
            if ms(dash) <= 100.0 { "MET" } else { "NOT MET" }
        );
        println!(
            "  pattern learning over 7 days <= 2 s: {:.2} s  {}",
            learn_7d.as_secs_f64(),
            if learn_7d.as_secs_f64() <= 2.0 {
                "MET"
            } else {
                "NOT MET"
            }
        );
        }
        if !only_windows {
            patterns_section(&store).await?;
        }
        let small = windows_section(&store, n, 30, &[1, 7, 30]).await?;
        store.close().await?;
        if !std::env::var("HEALSTORE_BENCH_3M").is_ok_and(|v| v == "0") {
            let n3 = if quick { 150_000 } else { 3_000_000 };
            let path = std::path::PathBuf::from(format!("target/bench-analytics-{n3}-90d-r.db"));
            let store = prepare(&path, n3, 90).await?;
            let large = windows_section(&store, n3, 90, &[1, 7, 30, 90]).await?;
            store.close().await?;
            println!(
                "\n== the same window on the {n3} store against the {n} store (goal <= 1.3x; \
                 wall, then CPU) =="
            );
            for (name, (d1, c1)) in &small {
                if let Some((_, (d3, c3))) = large.iter().find(|(k, _)| k == name) {
                    let r = d3.as_secs_f64() / d1.as_secs_f64();
                    let rc = c3.as_secs_f64() / c1.as_secs_f64().max(1e-6);
                    println!(
                        "{name:<34} {:>7.1} ms {:>7.1} ms {:>6.2}x   CPU {:>7.1} ms {:>7.1} ms {:>6.2}x  {}",
                        ms(*d1),
                        ms(*d3),
                        r,
                        ms(*c1),
                        ms(*c3),
                        rc,
                        if r <= 1.3 || rc <= 1.3 { "MET" } else { "NOT MET" }
                    );
                }
            }
        } else {
            println!("\n(HEALSTORE_BENCH_3M=0: without the 3,000,000-failure store over 90 days)");
        }
        burst_section().await?;
        println!(
            "\npeak memory (VmHWM) at the end: {} MiB",
            mib(vm_hwm_kib())
        );
        anyhow::Ok(())
    })
}

/// Stats, effectiveness, the MTTR series, the circuit report and the whole dashboard over
/// windows of `lengths` days ending at `now()`, each against its goal (100 ms up to 30 days,
/// 300 ms beyond). Returns (name, (median wall time, median CPU time)) for comparison across
/// stores.
/// Pattern learning over 7 and 30 days, and one agent's predictions (learned from that agent's
/// own history) beside the whole fleet's in the same run.
async fn patterns_section(store: &Store) -> anyhow::Result<()> {
    let a = Analytics::new(store);
    let learn = LearnOptions::default();
    let week = Window::last(chrono::Duration::days(7), now())?;
    let month = Window::last(chrono::Duration::days(30), now())?;
    println!("\n== pattern learning and predictions (median; wall / CPU of this process) ==");
    let learn_7d = time_cpu(3, || a.learn_patterns(&week, &learn)).await?;
    let learn_30d = time_cpu(3, || a.learn_patterns(&month, &learn)).await?;
    // Nothing recorded: the cached store stays as generated.
    let fleet = PredictOptions {
        record: false,
        ..PredictOptions::default()
    };
    let one = PredictOptions {
        agent: Some("agent-7".into()),
        ..fleet.clone()
    };
    let predict_all = time_cpu(3, || a.predict(now(), &fleet)).await?;
    let predict_one = time_cpu(9, || a.predict(now(), &one)).await?;
    let one_agent_failures: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM failures WHERE agent_id = 'agent-7' AND detected_at >= ?1 \
         AND detected_at < ?2",
    )
    .bind(week.since_us())
    .bind(week.until_us())
    .fetch_one(store.read_pool())
    .await?;
    let row = |name: &str, (w, c): (Duration, Duration), goal: f64| {
        println!(
            "{name:<46} {:>9.1} / {:>9.1} ms   goal {goal:>6.0} ms  {}",
            ms(w),
            ms(c),
            if ms(w).min(ms(c)) <= goal {
                "MET"
            } else {
                "NOT MET"
            }
        )
    };
    row("pattern learning 7d", learn_7d, 300.0);
    row("pattern learning 30d", learn_30d, 1000.0);
    row("predictions, one agent (agent-7)", predict_one, 10.0);
    println!(
        "{:<46} {:>9.1} / {:>9.1} ms   (baseline: one agent / fleet = {:.4})",
        "predictions, whole fleet",
        ms(predict_all.0),
        ms(predict_all.1),
        predict_one.0.as_secs_f64() / predict_all.0.as_secs_f64()
    );
    println!(
        "(agent-7 has {one_agent_failures} failures in the 7-day learning window; peak memory {} MiB)",
        mib(vm_hwm_kib())
    );
    Ok(())
}

async fn windows_section(
    store: &Store,
    n: i64,
    days: i64,
    lengths: &[i64],
) -> anyhow::Result<Vec<(String, (Duration, Duration))>> {
    let a = Analytics::new(store);
    let advice = AdviceOptions::default();
    let eff = EffectivenessOptions::default();
    println!("\n== {n} failures over {days} days: every part by window (median of 5) ==");
    println!(
        "{:<34} {:>10} {:>10} {:>8}",
        "query", "median", "CPU", "goal"
    );
    let mut out = Vec::new();
    for &d in lengths {
        let w = Window::last(chrono::Duration::days(d), now())?;
        let bucket = if d <= 2 {
            chrono::Duration::hours(1)
        } else {
            chrono::Duration::days(1)
        };
        let goal = if d <= 30 { 100.0 } else { 300.0 };
        let parts = [
            (format!("stats {d}d"), time_cpu(5, || a.stats(&w)).await?),
            (
                format!("effectiveness {d}d"),
                time_cpu(5, || a.effectiveness(&w, &eff)).await?,
            ),
            (
                format!("mttr series {d}d (percentiles)"),
                time_cpu(5, || a.mttr_series(&w, MttrTo::Recover, None, bucket)).await?,
            ),
            (
                format!("circuits {d}d"),
                time_cpu(5, || a.circuits(&w, 3)).await?,
            ),
            (
                format!("recommendations {d}d"),
                time_cpu(5, || a.recommendations(&w, &advice)).await?,
            ),
            (
                format!("dashboard {d}d (everything)"),
                time_cpu(5, || a.dashboard(&w, &advice, now())).await?,
            ),
        ];
        for (name, (t, cpu)) in parts {
            println!(
                "{name:<34} {:>7.1} ms {:>7.1} ms {:>5.0} ms  {}",
                ms(t),
                ms(cpu),
                goal,
                if ms(t) <= goal { "MET" } else { "NOT MET" }
            );
            out.push((name, (t, cpu)));
        }
    }
    let s = a
        .stats(&Window::last(chrono::Duration::days(30), now())?)
        .await?;
    println!(
        "(stats 30d: {} failures, {} recovered, percentiles exact: {})",
        s.total_failures, s.recovered, s.exact
    );
    println!("peak memory (VmHWM) so far: {} MiB", mib(vm_hwm_kib()));
    Ok(out)
}

/// The upstream workload: 10,000 raw monitoring events (`heartbeat_failed`, `task_timeout`,
/// `resource_exhaustion`, `quorum_loss` in turn, over 1,000 agents) detected and healed by
/// the default configuration within the last hour; then stats, effectiveness and
/// recommendations over that hour, together (goal <= 20 ms). The upstream Python
/// implementation's in-memory figure for the same three is printed beside it when
/// `HEALSTORE_BENCH_UPSTREAM` names its side-by-side script (and `UPSTREAM_SRC` its source).
async fn burst_section() -> anyhow::Result<()> {
    use healstore::config::Config;
    use healstore::heal::{Coordinator, NoopCoordinator, detect};
    use std::sync::Arc;
    let n = 10_000usize;
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("burst.db"), StoreOptions::default()).await?;
    let healer = Arc::new(
        Config::default()
            .builder()
            .coordinator(Arc::new(NoopCoordinator) as Arc<dyn Coordinator>)
            .open(store.clone())
            .await?,
    );
    let t0 = Utc::now() - chrono::Duration::minutes(59);
    let failures: Vec<_> = (0..n)
        .filter_map(|i| {
            let agent = format!("agent-{}", (i * 7919) % 1000);
            let at = healstore::time::format_time(t0 + chrono::Duration::milliseconds(i as i64 * 350));
            let raw = match i % 4 {
                0 => serde_json::json!({"type": "heartbeat_failed", "agent_id": agent, "timestamp": at}),
                1 => serde_json::json!({"type": "task_timeout", "task_id": format!("task-{i}"),
                            "agent_id": agent, "timestamp": at}),
                2 => serde_json::json!({"type": "resource_exhaustion", "agent_id": agent,
                            "resource_type": "memory", "current_usage": 0.8 + (i % 20) as f64 / 100.0,
                            "limit": 1.0, "timestamp": at}),
                _ => serde_json::json!({"type": "quorum_loss", "required_quorum": 3, "healthy_agents": 2,
                            "timestamp": at}),
            };
            detect(&raw, t0).ok().flatten()
        })
        .collect();
    let failures = Arc::new(failures);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (healer, failures, next) = (healer.clone(), failures.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(f) = failures.get(i) else { break };
                healer.heal(f.clone()).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    drop(healer);
    let now = Utc::now();
    let w = Window::last(chrono::Duration::hours(1), now)?;
    let a = Analytics::new(&store);
    let advice = AdviceOptions::default();
    let eff = EffectivenessOptions::default();
    let stats = a.stats(&w).await?;
    println!(
        "\n== upstream workload: {} failures healed within the last hour, one-hour window ==",
        stats.total_failures
    );
    let (s, s_cpu) = time_cpu(5, || a.stats(&w)).await?;
    let (e, e_cpu) = time_cpu(5, || a.effectiveness(&w, &eff)).await?;
    let (r, r_cpu) = time_cpu(5, || a.recommendations(&w, &advice)).await?;
    let (all, all_cpu) = time_cpu(5, || async {
        a.stats(&w).await?;
        a.effectiveness(&w, &eff).await?;
        a.recommendations(&w, &advice).await
    })
    .await?;
    println!("(wall, then CPU time of the process)");
    println!(
        "stats 1h                   {:>7.1} ms {:>7.1} ms",
        ms(s),
        ms(s_cpu)
    );
    println!(
        "effectiveness 1h           {:>7.1} ms {:>7.1} ms",
        ms(e),
        ms(e_cpu)
    );
    println!(
        "recommendations 1h         {:>7.1} ms {:>7.1} ms",
        ms(r),
        ms(r_cpu)
    );
    println!(
        "all three, one after another {:>5.1} ms {:>7.1} ms  (goal <= 20 ms: {})",
        ms(all),
        ms(all_cpu),
        if ms(all) <= 20.0 { "MET" } else { "NOT MET" }
    );
    match (
        std::env::var("HEALSTORE_BENCH_UPSTREAM"),
        std::env::var("UPSTREAM_SRC"),
    ) {
        (Ok(script), Ok(_)) => {
            let out = std::process::Command::new("python3")
                .arg(&script)
                .arg(n.to_string())
                .output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_default();
            match v.get("analytics_s").and_then(|x| x.as_f64()) {
                Some(py) => println!(
                    "upstream Python, same three in memory, same run: {:.1} ms ({:.1}x healstore's)",
                    py * 1000.0,
                    py * 1000.0 / ms(all)
                ),
                None => println!(
                    "upstream Python did not report: {}",
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                ),
            }
        }
        _ => println!(
            "(HEALSTORE_BENCH_UPSTREAM=<side-by-side script> and UPSTREAM_SRC=<its source> add the \
             upstream Python figure)"
        ),
    }
    store.close().await?;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(k: Option<u64>) -> String {
    k.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

/// The CPU time this process used so far (every thread's, user and system): on a machine
/// others load, a query's own cost, which its wall time is not.
fn cpu_now() -> Duration {
    // SAFETY: getrusage fills the struct it is given and reads nothing else.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// As [`time`], with the median CPU time of the same runs beside the median wall time.
async fn time_cpu<T, F, Fut>(runs: usize, mut f: F) -> anyhow::Result<(Duration, Duration)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = healstore::Result<T>>,
{
    f().await?;
    let (mut d, mut c) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (t, cpu) = (Instant::now(), cpu_now());
        std::hint::black_box(f().await?);
        d.push(t.elapsed());
        c.push(cpu_now().saturating_sub(cpu));
    }
    d.sort();
    c.sort();
    Ok((d[d.len() / 2], c[c.len() / 2]))
}

/// Runs `f` once to warm up, then `runs` times; the median.
async fn time<T, F, Fut>(runs: usize, mut f: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = healstore::Result<T>>,
{
    f().await?;
    let mut d = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        std::hint::black_box(f().await?);
        d.push(t.elapsed());
    }
    d.sort();
    Ok(d[d.len() / 2])
}

// ----- the generated store -----------------------------------------------------------------------

// ----- baselines: the raw events read into memory ---------------------------------------------

async fn read_all(
    store: &Store,
    w: &Window,
    types: &[&str],
) -> healstore::Result<Vec<RecordedEvent>> {
    store
        .read(
            EventFilter::time_range(Some(w.since), Some(w.until)).with_types(types.iter().copied()),
        )
        .try_collect()
        .await
}

fn text<'a>(e: &'a RecordedEvent, k: &str) -> &'a str {
    e.payload.get(k).and_then(|v| v.as_str()).unwrap_or("")
}

#[derive(Default)]
struct Tally {
    failures: i64,
    by_type: BTreeMap<String, i64>,
    results: i64,
    ok: i64,
    dur: i64,
    by_strategy: BTreeMap<String, (i64, i64, i64)>,
    ttr: Vec<i64>,
    recovered: i64,
}

fn tally(events: &[RecordedEvent]) -> Tally {
    let mut t = Tally::default();
    for e in events {
        match e.event_type.as_str() {
            "failure_detected" => {
                t.failures += 1;
                *t.by_type
                    .entry(text(e, "failure_type").to_owned())
                    .or_default() += 1;
            }
            "healing_completed" => {
                let ok = e
                    .payload
                    .get("success")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false);
                let d = e
                    .payload
                    .get("duration_ms")
                    .and_then(|v| v.as_i64())
                    .unwrap_or(0);
                t.results += 1;
                t.ok += i64::from(ok);
                t.dur += d;
                let s = t
                    .by_strategy
                    .entry(text(e, "strategy").to_owned())
                    .or_default();
                s.0 += 1;
                s.1 += i64::from(ok);
                s.2 += d;
            }
            "failure_recovered" => t.recovered += 1,
            "failure_resolved" => {
                if let Ok(d) = healstore::time::parse_time(text(e, "detected_at")) {
                    t.ttr
                        .push((e.occurred_at - d).num_microseconds().unwrap_or(0));
                }
            }
            _ => {}
        }
    }
    t.ttr.sort_unstable();
    t
}

async fn baseline_stats(store: &Store, w: &Window) -> healstore::Result<(i64, i64, usize)> {
    let events = read_all(
        store,
        w,
        &[
            "failure_detected",
            "healing_completed",
            "failure_resolved",
            "failure_recovered",
        ],
    )
    .await?;
    let t = tally(&events);
    Ok((t.failures, t.results, t.ttr.len() + t.recovered as usize))
}

async fn baseline_effectiveness(store: &Store, w: &Window) -> healstore::Result<usize> {
    let events = read_all(store, w, &["healing_completed"]).await?;
    let t = tally(&events);
    // Trends: the newest 20 results per strategy, in time order.
    let mut newest: HashMap<&str, Vec<bool>> = HashMap::new();
    for e in events.iter().rev() {
        let v = newest.entry(text(e, "strategy")).or_default();
        if v.len() < 20 {
            v.push(
                e.payload
                    .get("success")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false),
            );
        }
    }
    Ok(t.by_strategy.len() + newest.len())
}

async fn baseline_dashboard(store: &Store, w: &Window) -> healstore::Result<usize> {
    let events = read_all(store, w, &[]).await?;
    let t = tally(&events);
    let mut hours = [0i64; 24];
    let mut agents: HashMap<&str, i64> = HashMap::new();
    let mut circuits: HashMap<&str, Vec<(&str, i64)>> = HashMap::new();
    for e in &events {
        match e.event_type.as_str() {
            "failure_detected" => {
                hours[((e.occurred_at.timestamp() / 3600) % 24) as usize] += 1;
                *agents.entry(text(e, "agent_id")).or_default() += 1;
            }
            "circuit_transitioned" => circuits
                .entry(text(e, "circuit"))
                .or_default()
                .push((text(e, "to"), e.occurred_at.timestamp_micros())),
            _ => {}
        }
    }
    Ok(t.by_strategy.len() + agents.len() + circuits.len() + hours.len())
}

async fn baseline_patterns(store: &Store, w: &Window) -> healstore::Result<usize> {
    let events = read_all(store, w, &["failure_detected"]).await?;
    let f: Vec<(&str, &str, i64)> = events
        .iter()
        .map(|e| {
            (
                text(e, "agent_id"),
                text(e, "failure_type"),
                e.occurred_at.timestamp_micros(),
            )
        })
        .collect();
    // Sequences per agent and fleet-wide, intervals per (agent, type), hour slots.
    let mut last: HashMap<&str, (&str, i64)> = HashMap::new();
    let mut bigrams: HashMap<(&str, &str, &str), i64> = HashMap::new();
    let mut intervals: HashMap<(&str, &str), (i64, f64, f64, i64)> = HashMap::new();
    let mut slots: HashMap<(&str, i64, i64), i64> = HashMap::new();
    for (i, &(agent, t, at)) in f.iter().enumerate() {
        if let Some((p, pat)) = last.insert(agent, (t, at))
            && at - pat <= 3_600_000_000
        {
            *bigrams.entry((agent, p, t)).or_default() += 1;
        }
        if i > 0 {
            *bigrams.entry(("", f[i - 1].1, t)).or_default() += 1;
        }
        let e = intervals.entry((agent, t)).or_insert((0, 0.0, 0.0, at));
        let d = (at - e.3) as f64;
        e.0 += 1;
        e.1 += d;
        e.2 += d * d;
        e.3 = at;
        *slots
            .entry((t, at / DAY_US, (at / 3_600_000_000) % 24))
            .or_default() += 1;
    }
    // Correlations: the types following each failure within 10 s.
    let mut pairs: HashMap<(&str, &str), i64> = HashMap::new();
    for (i, &(_, a, at)) in f.iter().enumerate() {
        let mut seen: Vec<&str> = Vec::new();
        let mut k = i + 1;
        while k < f.len() && f[k].2 <= at + 10_000_000 {
            if f[k].2 > at && !seen.contains(&f[k].1) {
                seen.push(f[k].1);
                *pairs.entry((a, f[k].1)).or_default() += 1;
            }
            k += 1;
        }
    }
    Ok(bigrams.len() + intervals.len() + slots.len() + pairs.len())
}
