//! Healing benchmarks: heal latency, and restore time with and without snapshots.
//!
//! - **Heal latency** (`failure in, decision appended`): a single caller heals `agent_down`
//!   failures through the default route (a composite of the circuit breaker and agent restart)
//!   with a coordinator that does nothing, at durability `full` and `normal`. Reported per heal:
//!   the time until the failure and its decisions are committed (`HealReport::decided_us`) and
//!   the whole heal (actions and outcome recorded too). Goal: decision p99 at most 5 ms at
//!   `full`.
//! - **Heal throughput** (the upstream workload): 10,000 raw monitoring events,
//!   `heartbeat_failed`, `task_timeout`, `resource_exhaustion` and `quorum_loss` in turn, over
//!   1,000 agents, detected and healed with the default configuration and a coordinator that
//!   accepts everything, by 1, 16 and 256 concurrent callers, at `full` and `normal`. Half the
//!   failures decide on one of two fleet-wide states (the memory resource's degradation level
//!   and the quorum). Reported: heals/s, events per heal, events/s, and the decision latency
//!   p99. Baseline in the same run: the same events appended by as many concurrent appenders,
//!   one event per append (the append benchmark's method). Goals at 256: at least 5,000
//!   heals/s at `normal` and 2,500 at `full`, and at least 40 % of the baseline's events/s.
//!   `HEALSTORE_BENCH_ONLY=throughput` runs this part alone (`HEALSTORE_BENCH_CONC=256` only
//!   the 256 rows).
//! - **Restore**: 10,000 circuits and 1,000,000 circuit events. Baseline: reading those events
//!   alone. Then a healer opened with no snapshot (a full replay), and one opened after a
//!   checkpoint with 1 % of the events written after it. Goal: the restore with snapshots at
//!   most 10 % of the full replay.
//! - **Short-lived keys** (run in a process of its own, so that its peak memory is its own):
//!   one healer heals 1,000,000 task failures, each of a new task that is retried and then
//!   succeeds (its state back at rest), 64 at a time, checkpointing every 50,000. At 10,000,
//!   100,000 and 1,000,000 keys: the states and locks in memory, resident and peak memory, and
//!   the time a fresh healer takes to open (restore) on the file. Goal: all flat. Then `permit`
//!   on a closed circuit (one failure counted, in memory) of that caught-up healer, p50 and
//!   p99. Goal: at most 20 µs.
//!
//! `cargo bench --bench heal` (`HEALSTORE_BENCH_QUICK=1` for a 20x smaller run;
//! `HEALSTORE_BENCH_ONLY=keys` for the short-lived keys alone; `HEALSTORE_BENCH_ONLY=pg` for
//! the upstream workload on PostgreSQL alone, one healer and 4 healers on stores of their own,
//! server from `HEALSTORE_BENCH_PG`, default `postgres://postgres@127.0.0.1:5432/test`). Peak memory is the process's
//! VmHWM.

mod common;

use common::{print_machine, vm_hwm_kib};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use healstore::config::Config;
use healstore::heal::{Coordinator, Failure, NoopCoordinator, Severity};
use healstore::{Durability, EventFilter, ExpectedVersion, NewEvent, Store, StoreOptions};
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let quick = std::env::var("HEALSTORE_BENCH_QUICK").is_ok_and(|v| v == "1");
    let scale = if quick { 20 } else { 1 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if std::env::var_os(KEYS_CHILD).is_some() {
        return rt.block_on(short_lived_keys(1_000_000 / scale));
    }
    print_machine();
    let only = std::env::var("HEALSTORE_BENCH_ONLY").unwrap_or_default();
    if only == "keys" {
        return run_keys_child();
    }
    rt.block_on(async {
        if only == "pg" {
            let server = match std::env::var("HEALSTORE_BENCH_PG") {
                Ok(v) if !v.is_empty() && v != "0" && v != "1" => v,
                _ => "postgres://postgres@127.0.0.1:5432/test".to_owned(),
            };
            pg_section(&server, 10_000 / scale).await?;
            return anyhow::Ok(());
        }
        if only == "throughput" {
            throughput_section(10_000 / scale).await?;
            return anyhow::Ok(());
        }
        println!("\n== heal latency (single caller, no-op coordinator) ==");
        println!(
            "{:<8} {:>7} {:>12} {:>12} {:>12} {:>12} {:>12}",
            "durab.", "heals", "decide p50", "decide p99", "decide max", "heal p50", "heal p99"
        );
        let mut decide_p99_full = 0.0;
        let mut raw_p99 = Vec::new();
        for d in [Durability::Full, Durability::Normal] {
            let r = heal_latency(d, 3000 / scale).await?;
            if d == Durability::Full {
                decide_p99_full = r.1;
            }
            raw_p99.push((d, r.1));
        }
        println!("\nbaseline: one INSERT of one event row per transaction, same schema, same run");
        println!(
            "{:<8} {:>7} {:>12} {:>12} {:>14}",
            "durab.", "commits", "p50", "p99", "heal p99/raw"
        );
        for (d, heal_p99) in raw_p99 {
            let (p50, p99) = raw_commit_latency(d, 3000 / scale).await?;
            println!(
                "{:<8} {:>7} {:>9.2} ms {:>9.2} ms {:>13.2}x",
                if d == Durability::Full {
                    "full"
                } else {
                    "normal"
                },
                3000 / scale,
                p50,
                p99,
                heal_p99 / p99
            );
        }
        let only_latency = std::env::var("HEALSTORE_BENCH_ONLY").is_ok_and(|v| v == "latency");
        println!("\n== restore: 10,000 circuits ==");
        let restore = if only_latency {
            println!("(skipped: HEALSTORE_BENCH_ONLY=latency)");
            None
        } else {
            Some(restore(10_000 / scale, 100).await?)
        };
        throughput_section(10_000 / scale).await?;
        println!(
            "\npeak memory (VmHWM): {} MiB",
            vm_hwm_kib().map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0))
        );
        println!("\ngoals:");
        println!(
            "  heal decision p99 at full <= 5 ms: {:.2} ms  {}",
            decide_p99_full,
            if decide_p99_full <= 5.0 {
                "MET"
            } else {
                "NOT MET"
            }
        );
        match restore {
            Some(r) => println!(
                "  restore with snapshots <= 10 % of a full replay: {:.1} %  {}",
                r * 100.0,
                if r <= 0.10 { "MET" } else { "NOT MET" }
            ),
            None => println!("  restore with snapshots <= 10 % of a full replay: not measured"),
        }
        anyhow::Ok(())
    })?;
    if only == "latency" || only == "throughput" || only == "pg" {
        return Ok(());
    }
    run_keys_child()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Returns (decision p50, decision p99) in ms.
async fn heal_latency(durability: Durability, heals: usize) -> anyhow::Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(
        dir.path().join("bench.db"),
        StoreOptions {
            durability,
            ..Default::default()
        },
    )
    .await?;
    let healer = Config::default()
        .builder()
        .coordinator(Arc::new(NoopCoordinator) as Arc<dyn Coordinator>)
        .open(store)
        .await?;
    let warmup = heals / 10;
    let mut decide = Vec::with_capacity(heals);
    let mut whole = Vec::with_capacity(heals);
    for i in 0..heals + warmup {
        let f = Failure::new("agent_down", Severity::High, Utc::now())
            .with_agent(format!("agent-{}", i % 1000));
        let t = Instant::now();
        let r = healer.heal(f).await?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if i >= warmup {
            decide.push(r.decided_us as f64 / 1000.0);
            whole.push(ms);
        }
    }
    healer.close().await?;
    decide.sort_by(f64::total_cmp);
    whole.sort_by(f64::total_cmp);
    let name = match durability {
        Durability::Full => "full",
        Durability::Normal => "normal",
    };
    println!(
        "{:<8} {:>7} {:>9.2} ms {:>9.2} ms {:>9.2} ms {:>9.2} ms {:>9.2} ms",
        name,
        heals,
        percentile(&decide, 0.5),
        percentile(&decide, 0.99),
        decide.last().copied().unwrap_or(0.0),
        percentile(&whole, 0.5),
        percentile(&whole, 0.99)
    );
    Ok((percentile(&decide, 0.5), percentile(&decide, 0.99)))
}

/// The engine's floor for "one commit": a plain sqlx connection, WAL, the same `synchronous`,
/// one single-row INSERT into the events table per `BEGIN IMMEDIATE` transaction.
async fn raw_commit_latency(durability: Durability, commits: usize) -> anyhow::Result<(f64, f64)> {
    use sqlx::{ConnectOptions, Connection};
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("raw.db");
    Store::open(&path, StoreOptions::default())
        .await?
        .close()
        .await?;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(match durability {
            Durability::Full => sqlx::sqlite::SqliteSynchronous::Full,
            Durability::Normal => sqlx::sqlite::SqliteSynchronous::Normal,
        })
        .connect()
        .await?;
    let mut times = Vec::with_capacity(commits);
    let payload = json!({"failure_id": "f", "agent_id": "agent-1", "failure_type": "agent_down",
                         "severity": "high", "metadata": {}})
    .to_string();
    for i in 0..commits + commits / 10 {
        let t = Instant::now();
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO events (event_id, stream_id, stream_version, event_type, \
             schema_version, occurred_at, recorded_at, payload, failure_id, agent_id, \
             failure_type) VALUES (?, ?, 1, 'failure_detected', 1, ?, ?, ?, ?, 'agent-1', \
             'agent_down')",
        )
        .bind(format!("e-{i}"))
        .bind(format!("failure-{i}"))
        .bind(i as i64)
        .bind(i as i64)
        .bind(&payload)
        .bind(format!("f-{i}"))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if i >= commits / 10 {
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    conn.close().await?;
    times.sort_by(f64::total_cmp);
    Ok((percentile(&times, 0.5), percentile(&times, 0.99)))
}

fn circuit_event(agent: usize, n: usize, at: chrono::DateTime<Utc>) -> NewEvent {
    let circuit = format!("agent-{agent}");
    let ts = healstore::time::format_time(at);
    let payload = if n % 3 == 2 {
        json!({"type": "circuit_success_counted", "at": ts, "circuit": circuit, "trial": false,
               "strategy": "CircuitBreaker", "key": circuit})
    } else {
        json!({"type": "circuit_failure_counted", "at": ts, "circuit": circuit,
               "failure_id": format!("f-{agent}-{n}"), "failure_type": "agent_down",
               "strategy": "CircuitBreaker", "key": circuit})
    };
    let kind = payload["type"].as_str().unwrap_or_default().to_owned();
    NewEvent::new(kind, at, payload).with_id(format!("c-{agent}-{n}"))
}

/// Imports `agents x per_agent` circuit events; returns the time the import took.
async fn fill(
    store: &Store,
    agents: usize,
    from: usize,
    to: usize,
    t0: chrono::DateTime<Utc>,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let mut sink = store.begin_import().await?;
    let mut line = 0;
    for n in from..to {
        for a in 0..agents {
            line += 1;
            let at = t0 + chrono::Duration::milliseconds((n * agents + a) as i64);
            sink.send(
                line,
                format!("strategy-CircuitBreaker-agent-{a}"),
                circuit_event(a, n, at),
            )
            .await?;
        }
    }
    sink.finish().await?;
    Ok(t.elapsed())
}

async fn read_alone(store: &Store) -> anyhow::Result<(usize, Duration)> {
    let t = Instant::now();
    let mut s = store.read(EventFilter {
        stream_prefix: Some("strategy-".into()),
        position_order: true,
        ..Default::default()
    });
    let mut n = 0;
    while let Some(e) = s.next().await {
        e?;
        n += 1;
    }
    Ok((n, t.elapsed()))
}

/// Returns the ratio restore-with-snapshots / full replay.
async fn restore(agents: usize, per_agent: usize) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("restore.db");
    let opts = || StoreOptions {
        durability: Durability::Normal,
        ..Default::default()
    };
    let t0 = Utc::now() - chrono::Duration::days(30);
    let store = Store::open(&path, opts()).await?;
    let took = fill(&store, agents, 0, per_agent, t0).await?;
    let total = agents * per_agent;
    println!(
        "generated {total} events for {agents} circuits in {:.1} s ({:.0} events/s, import)",
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64()
    );
    let (n, read) = read_alone(&store).await?;
    store.close().await?;
    println!(
        "{:<44} {:>9.3} s  ({n} events)",
        "baseline: read the events alone",
        read.as_secs_f64()
    );

    let store = Store::open(&path, opts()).await?;
    let t = Instant::now();
    let healer = Config::default().builder().open(store).await?;
    let replay = t.elapsed();
    let states = healer.states(Some("CircuitBreaker")).await?.len();
    println!(
        "{:<44} {:>9.3} s  ({:.2}x reading; {states} circuits)",
        "open with no snapshot (full replay)",
        replay.as_secs_f64(),
        replay.as_secs_f64() / read.as_secs_f64()
    );
    let t = Instant::now();
    let written = healer.checkpoint().await?;
    println!(
        "{:<44} {:>9.3} s  ({written} snapshots)",
        "checkpoint",
        t.elapsed().as_secs_f64()
    );
    let store = healer.store().clone();
    // 1 % more events after the checkpoint.
    let tail_per_agent = (per_agent / 100).max(1);
    fill(&store, agents, per_agent, per_agent + tail_per_agent, t0).await?;
    drop(healer);
    store.close().await?;

    let store = Store::open(&path, opts()).await?;
    let t = Instant::now();
    let healer = Config::default().builder().open(store).await?;
    let with_snapshots = t.elapsed();
    let states_after = healer.states(Some("CircuitBreaker")).await?.len();
    healer.store().clone().close().await?;
    let ratio = with_snapshots.as_secs_f64() / replay.as_secs_f64();
    println!(
        "{:<44} {:>9.3} s  ({:.1} % of the full replay; {states_after} circuits)",
        "open with snapshots + 1 % tail",
        with_snapshots.as_secs_f64(),
        ratio * 100.0
    );
    Ok(ratio)
}

pub struct Throughput {
    pub heals_per_s: f64,
    pub events_per_heal: f64,
    pub decide_p99_ms: f64,
    pub events: Vec<NewEvent>,
}

/// `concurrency` tasks heal the workload's failures, each taking the next one when its heal
/// returned. Returns the throughput and the events the heals appended (for the append
/// baseline).
async fn heal_throughput(
    durability: Durability,
    concurrency: usize,
    failures: &[Failure],
) -> anyhow::Result<Throughput> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(
        dir.path().join("heal.db"),
        StoreOptions {
            durability,
            ..Default::default()
        },
    )
    .await?;
    let healer = Arc::new(
        Config::default()
            .builder()
            .coordinator(Arc::new(NoopCoordinator) as Arc<dyn Coordinator>)
            .open(store)
            .await?,
    );
    let head0 = healer.store().head_position().await?;
    let failures = Arc::new(failures.to_vec());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (healer, failures, next) = (healer.clone(), failures.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut decided = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(f) = failures.get(i) else { break };
                let r = healer.heal(f.clone()).await?;
                decided.push(r.decided_us as f64 / 1000.0);
            }
            anyhow::Ok(decided)
        }));
    }
    let mut decided = Vec::new();
    for task in tasks {
        decided.extend(task.await??);
    }
    let took = t.elapsed();
    let store = healer.store().clone();
    let head = store.head_position().await?;
    let mut events = Vec::new();
    let mut s = store.read(EventFilter {
        after_position: head0,
        position_order: true,
        ..Default::default()
    });
    while let Some(e) = s.next().await {
        let e = e?;
        events.push(
            NewEvent::new(e.event_type.clone(), e.occurred_at, e.payload.clone())
                .with_id(format!("copy-{}", e.event_id)),
        );
    }
    drop(s);
    drop(healer);
    store.close().await?;
    decided.sort_by(f64::total_cmp);
    Ok(Throughput {
        heals_per_s: failures.len() as f64 / took.as_secs_f64(),
        events_per_heal: (head - head0) as f64 / failures.len() as f64,
        decide_p99_ms: percentile(&decided, 0.99),
        events,
    })
}

/// The append benchmark's method on the same events: `concurrency` appenders, each appending
/// one event at a time (to the event's own stream in the heal run) and awaiting it. Returns
/// events/s.
async fn append_throughput(
    durability: Durability,
    concurrency: usize,
    events: &[NewEvent],
) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(
        dir.path().join("append.db"),
        StoreOptions {
            durability,
            ..Default::default()
        },
    )
    .await?;
    let events = Arc::new(events.to_vec());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for a in 0..concurrency {
        let (store, events, next) = (store.clone(), events.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(e) = events.get(i) else { break };
                store
                    .append(&format!("copy-{a}"), ExpectedVersion::Any, vec![e.clone()])
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let took = t.elapsed();
    store.close().await?;
    Ok(events.len() as f64 / took.as_secs_f64())
}

/// Heal throughput at 1, 16 and 256 concurrent heals against appending the same events.
async fn throughput_section(n: usize) -> anyhow::Result<()> {
    println!("\n== heal throughput: upstream workload, {n} failures over 1,000 agents ==");
    println!(
        "{:<8} {:>6} {:>10} {:>11} {:>12} {:>13} {:>9} {:>12}",
        "durab.",
        "conc.",
        "heals/s",
        "events/heal",
        "events/s",
        "append ev/s",
        "ratio",
        "decide p99"
    );
    let failures = common::upstream_workload(n, 1000, Utc::now() - chrono::Duration::hours(1));
    let mut goals = Vec::new();
    for d in [Durability::Normal, Durability::Full] {
        let only_256 = std::env::var("HEALSTORE_BENCH_CONC").is_ok_and(|v| v == "256");
        for c in [1, 16, 256] {
            if only_256 && c != 256 {
                continue;
            }
            let h = heal_throughput(d, c, &failures).await?;
            let append = append_throughput(d, c, &h.events).await?;
            let events_per_s = h.heals_per_s * h.events_per_heal;
            let ratio = events_per_s / append;
            println!(
                "{:<8} {:>6} {:>10.0} {:>11.2} {:>12.0} {:>13.0} {:>8.0}% {:>9.2} ms",
                if d == Durability::Full {
                    "full"
                } else {
                    "normal"
                },
                c,
                h.heals_per_s,
                h.events_per_heal,
                events_per_s,
                append,
                ratio * 100.0,
                h.decide_p99_ms
            );
            if c == 256 {
                goals.push((d, h.heals_per_s, ratio));
            }
        }
    }
    println!(
        "peak memory (VmHWM): {} MiB",
        vm_hwm_kib().map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0))
    );
    for (d, hps, ratio) in goals {
        let (name, want) = match d {
            Durability::Full => ("full", 2500.0),
            Durability::Normal => ("normal", 5000.0),
        };
        println!(
            "  at 256, {name}: >= {want:.0} heals/s: {hps:.0}  {}; >= 40 % of append: {:.0} %  {}",
            if hps >= want { "MET" } else { "NOT MET" },
            ratio * 100.0,
            if ratio >= 0.40 { "MET" } else { "NOT MET" }
        );
    }
    Ok(())
}

// ----- PostgreSQL ------------------------------------------------------------------------------

/// `HEALSTORE_BENCH_ONLY=pg` (server from `HEALSTORE_BENCH_PG`, default the local one): the
/// upstream workload healed on PostgreSQL at `full` durability, by one healer and by 4
/// healers on stores of their own (as 4 hosts) sharing the callers, each run in a database of
/// its own, dropped afterwards. Heals that give up (a decision that kept losing races to the
/// other healers past the retry limit) are counted, not fatal.
async fn pg_section(server: &str, n: usize) -> anyhow::Result<()> {
    println!("\n== heal throughput on PostgreSQL ({server}): upstream workload, {n} failures ==");
    println!(
        "{:<8} {:>7} {:>6} {:>10} {:>11} {:>12} {:>12} {:>8}",
        "durab.", "healers", "conc.", "heals/s", "events/heal", "events/s", "decide p99", "gave up"
    );
    let failures = common::upstream_workload(n, 1000, Utc::now() - chrono::Duration::hours(1));
    for (healers, conc) in [(1, 1), (1, 16), (1, 256), (4, 256)] {
        let d = Durability::Full;
        let (url, name) = pg_database(server).await?;
        let r = pg_heal_throughput(&url, d, healers, conc, &failures).await;
        pg_drop(server, &name).await?;
        let (hps, eph, p99, gave_up) = r?;
        println!(
            "{:<8} {:>7} {:>6} {:>10.0} {:>11.2} {:>12.0} {:>9.2} ms {:>8}",
            "full",
            healers,
            conc,
            hps,
            eph,
            hps * eph,
            p99,
            gave_up
        );
    }
    Ok(())
}

async fn pg_database(server: &str) -> anyhow::Result<(String, String)> {
    use sqlx::Connection as _;
    let name = format!("healstore_bench_{}", uuid::Uuid::now_v7().simple());
    let mut admin = sqlx::PgConnection::connect(server).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    let root = server.rsplit_once('/').map(|(r, _)| r).unwrap_or(server);
    Ok((format!("{root}/{name}"), name))
}

async fn pg_drop(server: &str, name: &str) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let mut admin = sqlx::PgConnection::connect(server).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    Ok(())
}

/// (heals/s, events per heal, decision p99 in ms, heals that gave up).
async fn pg_heal_throughput(
    url: &str,
    durability: Durability,
    healers: usize,
    concurrency: usize,
    failures: &[Failure],
) -> anyhow::Result<(f64, f64, f64, usize)> {
    let mut hs = Vec::new();
    for _ in 0..healers {
        let store = Store::open(
            url,
            StoreOptions {
                durability,
                ..Default::default()
            },
        )
        .await?;
        hs.push(Arc::new(
            Config::default()
                .builder()
                .coordinator(Arc::new(NoopCoordinator) as Arc<dyn Coordinator>)
                .open(store)
                .await?,
        ));
    }
    let head0 = hs[0].store().head_position().await?;
    let failures = Arc::new(failures.to_vec());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..concurrency {
        let (healer, failures, next) = (hs[c % healers].clone(), failures.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut decided = Vec::new();
            let mut gave_up = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(f) = failures.get(i) else { break };
                match healer.heal(f.clone()).await {
                    Ok(r) => decided.push(r.decided_us as f64 / 1000.0),
                    Err(_) => gave_up += 1,
                }
            }
            (decided, gave_up)
        }));
    }
    let mut decided = Vec::new();
    let mut gave_up = 0;
    for task in tasks {
        let (d, g) = task.await?;
        decided.extend(d);
        gave_up += g;
    }
    let took = t.elapsed();
    let head = hs[0].store().head_position().await?;
    for h in hs {
        let store = h.store().clone();
        drop(h);
        store.close().await?;
    }
    decided.sort_by(f64::total_cmp);
    Ok((
        failures.len() as f64 / took.as_secs_f64(),
        (head - head0) as f64 / failures.len() as f64,
        percentile(&decided, 0.99),
        gave_up,
    ))
}

// ----- short-lived keys ------------------------------------------------------------------------

/// Set in the child process that runs the short-lived keys alone.
const KEYS_CHILD: &str = "HEALSTORE_BENCH_KEYS_CHILD";

/// Runs [`short_lived_keys`] in a child process (this benchmark again), so that the peak
/// memory it reports is its own and not the earlier sections'.
fn run_keys_child() -> anyhow::Result<()> {
    let status = std::process::Command::new(std::env::current_exe()?)
        .env(KEYS_CHILD, "1")
        .status()?;
    anyhow::ensure!(
        status.success(),
        "the short-lived keys run failed: {status}"
    );
    Ok(())
}

/// The process's resident set (`VmRSS`), in KiB.
fn vm_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

/// One healer, `keys` task failures of new tasks, each retried and then succeeding.
async fn short_lived_keys(keys: usize) -> anyhow::Result<()> {
    const AT_ONCE: usize = 64;
    let checkpoint_every = (keys / 20).max(1);
    let milestones: Vec<usize> = [keys / 100, keys / 10, keys]
        .into_iter()
        .filter(|m| *m > 0)
        .collect();
    println!("\n== short-lived keys: {keys} task keys, each retried then succeeding ==");
    println!(
        "{:>9} {:>9} {:>7} {:>6} {:>9} {:>9} {:>11} {:>9}",
        "keys", "keys/s", "states", "locks", "RSS MiB", "peak MiB", "restore ms", "restored"
    );
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("keys.db");
    let opts = || StoreOptions {
        durability: Durability::Normal,
        ..Default::default()
    };
    let healer = Arc::new(
        Config::default()
            .builder()
            .open(Store::open(&path, opts()).await?)
            .await?,
    );
    let mut done = 0;
    let mut restores = Vec::new();
    let mut states_seen = Vec::new();
    for &milestone in &milestones {
        let t = Instant::now();
        let from = done;
        while done < milestone {
            let to = (done + checkpoint_every).min(milestone);
            let workers: Vec<_> = (0..AT_ONCE)
                .map(|w| {
                    let h = healer.clone();
                    tokio::spawn(async move {
                        let mut k = done + w;
                        while k < to {
                            let task = format!("task-{k}");
                            let agent = format!("worker-{}", k % 100);
                            let f = Failure::new("task_timeout", Severity::Medium, Utc::now())
                                .with_agent(agent.clone())
                                .with_task(task.clone());
                            h.heal(f).await?;
                            h.record_success(&agent, Some(&task), Utc::now()).await?;
                            k += AT_ONCE;
                        }
                        anyhow::Ok(())
                    })
                })
                .collect();
            for w in workers {
                w.await??;
            }
            done = to;
            healer.checkpoint().await?;
        }
        let rate = (milestone - from) as f64 / t.elapsed().as_secs_f64();
        let (states, locks) = healer.memory_counts();
        states_seen.push(states);
        // A fresh healer on the same file: what a restart costs now (the store opened first:
        // its connections and schema check are not the healer's restore).
        let store = Store::open(&path, opts()).await?;
        let t = Instant::now();
        let fresh = Config::default().builder().open(store).await?;
        let restore = t.elapsed();
        let restored = fresh.memory_counts().0;
        fresh.store().clone().close().await?;
        drop(fresh);
        restores.push(restore.as_secs_f64() * 1000.0);
        println!(
            "{:>9} {:>9.0} {:>7} {:>6} {:>9} {:>9} {:>11.1} {:>9}",
            milestone,
            rate,
            states,
            locks,
            mib(vm_rss_kib()),
            mib(vm_hwm_kib()),
            restore.as_secs_f64() * 1000.0,
            restored
        );
    }

    // `permit` on a closed circuit with one failure counted (a state in memory), the healer
    // caught up: answered from memory.
    let f = Failure::new("agent_down", Severity::High, Utc::now()).with_agent("agent-p");
    healer.heal(f).await?;
    healer.permit("agent-p").await?;
    let calls = 100_000;
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        let r = healer.permit("agent-p").await?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
        anyhow::ensure!(r.permitted == Some(true), "a closed circuit refused a call");
    }
    times.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
    println!(
        "permit on a closed circuit, in process ({calls} calls): p50 {p50:.1} µs, p99 {p99:.1} µs, max {:.1} µs",
        times.last().copied().unwrap_or(0.0)
    );
    let healer =
        Arc::try_unwrap(healer).map_err(|_| anyhow::anyhow!("the healer is still shared"))?;
    healer.close().await?;

    let flat = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        hi <= (2.0 * lo).max(lo + 20.0)
    };
    let states_flat = states_seen.iter().all(|s| *s <= 200);
    println!("\ngoals:");
    println!(
        "  states in memory flat (at most the workers' own, <= 200): {states_seen:?}  {}",
        if states_flat { "MET" } else { "NOT MET" }
    );
    println!(
        "  restore time flat (largest <= 2x smallest, or within 20 ms): {:?} ms  {}",
        restores
            .iter()
            .map(|r| (r * 10.0).round() / 10.0)
            .collect::<Vec<_>>(),
        if flat(&restores) { "MET" } else { "NOT MET" }
    );
    println!(
        "  permit on a closed circuit p99 <= 20 µs: {p99:.1} µs  {}",
        if p99 <= 20.0 { "MET" } else { "NOT MET" }
    );
    Ok(())
}
