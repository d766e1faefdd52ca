//! Healing benchmarks: heal latency, and restore time with and without snapshots.
//!
//! - **Heal latency** (`failure in, decision appended`): a single caller heals `agent_down`
//!   failures through the default route (a composite of the circuit breaker and agent restart)
//!   with a coordinator that does nothing, at durability `full` and `normal`. Reported per heal:
//!   the time until the failure and its decisions are committed (`HealReport::decided_us`) and
//!   the whole heal (actions and outcome recorded too). Goal: decision p99 at most 5 ms at
//!   `full`.
//! - **Restore**: 10,000 circuits and 1,000,000 circuit events. Baseline: reading those events
//!   alone. Then a healer opened with no snapshot (a full replay), and one opened after a
//!   checkpoint with 1 % of the events written after it. Goal: the restore with snapshots at
//!   most 10 % of the full replay.
//!
//! `cargo bench --bench heal` (`HEALSTORE_BENCH_QUICK=1` for a 20x smaller run). Peak memory is
//! the process's VmHWM.

mod common;

use common::{print_machine, vm_hwm_kib};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use healstore::config::Config;
use healstore::heal::{Coordinator, Failure, NoopCoordinator, Severity};
use healstore::{Durability, EventFilter, NewEvent, Store, StoreOptions};
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let quick = std::env::var("HEALSTORE_BENCH_QUICK").is_ok_and(|v| v == "1");
    let scale = if quick { 20 } else { 1 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    print_machine();
    rt.block_on(async {
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
    })
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
