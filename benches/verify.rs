//! Tamper evidence: what `verify` costs over 1,000,000 events, and what the hash chain costs
//! appends.
//!
//! - **verify**: a store of 1,000,000 events (250,000 failures, each detected, attempted,
//!   completed and resolved), imported through the store (so every event is chained) and
//!   cached under `target/`. Baseline: reading those events alone through the store's read API
//!   (`Store::read`, every event decoded). Then `Store::verify` without and with the read
//!   models' comparison, and with SQLite's quick and full integrity checks. Every run compares
//!   the schema with a fresh in-memory migration and walks the chain, parsing every payload to
//!   recompute its indexed columns (as the writer extracts them); the read models are rebuilt
//!   into temporary tables inside a read transaction (no write lock) and compared with the
//!   stored ones. Goal: verify at most 3x the time of reading.
//! - **chain cost**: 16 and 256 concurrent appenders at durability `normal` (where the CPU, not
//!   the disk, limits), with the chain and without it (`StoreOptions::hash_chain`), alternating
//!   three times, each in a fresh file; medians. Goal: the chain costs at most 10 % of append
//!   throughput.
//!
//! `cargo bench --bench verify` (`HEALSTORE_BENCH_QUICK=1` for 20x fewer events).

mod common;

use common::{print_machine, vm_hwm_kib};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use futures_util::TryStreamExt;
use healstore::{
    Durability, EventFilter, ExpectedVersion, NewEvent, Store, StoreOptions, VerifyOptions,
};
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let quick = std::env::var("HEALSTORE_BENCH_QUICK").is_ok_and(|v| v == "1");
    let scale = if quick { 20 } else { 1 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    print_machine();
    rt.block_on(async {
        let failures = 250_000 / scale;
        let path = std::path::PathBuf::from(format!("target/bench-verify-{failures}.db"));
        let store = prepare(&path, failures).await?;
        let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(store.read_pool())
            .await?;
        println!("store: {events} events ({})", path.display());

        println!("\n== verify (median of 3) ==");
        let read = median(3, || async {
            let n = store
                .read(EventFilter::default())
                .try_fold(0u64, |n, _| async move { Ok(n + 1) })
                .await?;
            anyhow::ensure!(n as i64 == events, "read {n} of {events}");
            Ok(())
        })
        .await?;
        let run = |o: VerifyOptions| {
            let store = store.clone();
            move || {
                let store = store.clone();
                let o = o.clone();
                async move {
                    let r = store.verify(&o).await?;
                    anyhow::ensure!(r.ok, "verify failed: {:?}", r.first_problem());
                    Ok(())
                }
            }
        };
        let chain_only = median(
            3,
            run(VerifyOptions {
                full_integrity: false,
                read_models: false,
                ..VerifyOptions::default()
            }),
        )
        .await?;
        let with_integrity = median(
            3,
            run(VerifyOptions {
                full_integrity: true,
                read_models: false,
                ..VerifyOptions::default()
            }),
        )
        .await?;
        let full = median(3, run(VerifyOptions::default())).await?;
        let everything = median(
            3,
            run(VerifyOptions {
                full_integrity: true,
                read_models: true,
                ..VerifyOptions::default()
            }),
        )
        .await?;
        let ratio = |d: Duration| d.as_secs_f64() / read.as_secs_f64();
        println!("{:<52} {:>9} {:>9}", "", "seconds", "x read");
        println!(
            "{:<52} {:>9.2} {:>9.2}",
            "read every event (baseline)",
            read.as_secs_f64(),
            1.0
        );
        println!(
            "{:<52} {:>9.2} {:>9.2}",
            "verify without read models: quick check",
            chain_only.as_secs_f64(),
            ratio(chain_only)
        );
        println!(
            "{:<52} {:>9.2} {:>9.2}",
            "verify without read models: full integrity check",
            with_integrity.as_secs_f64(),
            ratio(with_integrity)
        );
        println!(
            "{:<52} {:>9.2} {:>9.2}",
            "verify (the default): quick check + the rest",
            full.as_secs_f64(),
            ratio(full)
        );
        println!(
            "{:<52} {:>9.2} {:>9.2}",
            "verify --full-integrity: everything",
            everything.as_secs_f64(),
            ratio(everything)
        );
        store.close().await?;

        println!("\n== chain cost on appends (durability normal, medians of 3) ==");
        println!(
            "{:>9} {:>8} {:>14} {:>14} {:>8}",
            "appenders", "events", "chained ev/s", "unchained ev/s", "cost"
        );
        let mut worst: f64 = 0.0;
        for appenders in [16usize, 256] {
            let events = 40_000 / scale;
            let mut with = Vec::new();
            let mut without = Vec::new();
            for _ in 0..3 {
                with.push(appends(appenders, events, true).await?);
                without.push(appends(appenders, events, false).await?);
            }
            with.sort_by(f64::total_cmp);
            without.sort_by(f64::total_cmp);
            let (w, wo) = (with[1], without[1]);
            let cost = 1.0 - w / wo;
            worst = worst.max(cost);
            println!(
                "{appenders:>9} {events:>8} {w:>14.0} {wo:>14.0} {:>7.1}%",
                cost * 100.0
            );
        }
        println!(
            "\npeak memory (VmHWM): {} MiB",
            vm_hwm_kib().map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0))
        );
        println!("\ngoals:");
        println!(
            "  verify (the default: every check, SQLite's quick check) <= 3x reading: {:.2}x  {}",
            ratio(full),
            if ratio(full) <= 3.0 { "MET" } else { "NOT MET" }
        );
        println!(
            "  the chain costs <= 10 % of append throughput: {:.1} %  {}",
            worst * 100.0,
            if worst <= 0.10 { "MET" } else { "NOT MET" }
        );
        anyhow::Ok(())
    })
}

async fn median<F, Fut>(runs: usize, mut f: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut d = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        f().await?;
        d.push(t.elapsed());
    }
    d.sort();
    Ok(d[d.len() / 2])
}

/// Events per second of `appenders` tasks appending `events` in all, one at a time each.
async fn appends(appenders: usize, events: usize, chained: bool) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(
        dir.path().join("chain.db"),
        StoreOptions {
            durability: Durability::Normal,
            hash_chain: chained,
            ..Default::default()
        },
    )
    .await?;
    let per = events / appenders;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for a in 0..appenders {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..per {
                let e = NewEvent::new(
                    "healing_completed",
                    Utc::now(),
                    json!({
                        "failure_id": format!("f-{a}-{n}"), "agent_id": format!("agent-{a}"),
                        "failure_type": "agent_down", "strategy": "AgentRestart",
                        "success": n % 10 != 0, "duration_ms": 100 + n % 400,
                        "actions_taken": [], "metadata": {},
                    }),
                );
                store
                    .append(&format!("agent-{a}"), ExpectedVersion::Any, vec![e])
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let rate = (per * appenders) as f64 / start.elapsed().as_secs_f64();
    store.close().await?;
    Ok(rate)
}

async fn prepare(path: &std::path::Path, failures: usize) -> anyhow::Result<Store> {
    let options = || StoreOptions {
        durability: Durability::Normal,
        ..Default::default()
    };
    if path.exists() {
        let store = Store::open(path, options()).await?;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM failures")
            .fetch_one(store.read_pool())
            .await
            .unwrap_or(0);
        if n == failures as i64 {
            println!("reusing {}", path.display());
            return Ok(store);
        }
        store.close().await?;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let store = Store::open(path, options()).await?;
    let started = Instant::now();
    let t0 = Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).unwrap();
    let types = Arc::new(["agent_down", "task_timeout", "resource_exhaustion"]);
    let mut sink = store.begin_import().await?;
    let mut line = 0u64;
    for i in 0..failures {
        let at = t0 + chrono::Duration::milliseconds(i as i64 * 10_000);
        let ft = types[i % 3];
        let id = format!("f-{i}");
        let agent = format!("agent-{}", i % 200);
        let stream = format!("failure-{id}");
        let ok = i % 7 != 0;
        let evs = [
            (
                "failure_detected",
                at,
                json!({"failure_id": id, "failure_type": ft, "severity": "high", "agent_id": agent, "metadata": {}}),
            ),
            (
                "healing_attempted",
                at + chrono::Duration::milliseconds(1),
                json!({"failure_id": id, "strategy": "AgentRestart", "agent_id": agent, "failure_type": ft, "decision": "act", "reason": "bench", "actions": [], "details": {}}),
            ),
            (
                "healing_completed",
                at + chrono::Duration::milliseconds(150),
                json!({"failure_id": id, "strategy": "AgentRestart", "agent_id": agent, "failure_type": ft, "success": ok, "duration_ms": 150, "actions_taken": [], "metadata": {}}),
            ),
            (
                "failure_resolved",
                at + chrono::Duration::milliseconds(200),
                json!({"failure_id": id, "failure_type": ft, "agent_id": agent, "strategy": "AgentRestart", "detected_at": healstore::time::format_time(at)}),
            ),
        ];
        for (n, (t, when, payload)) in evs.into_iter().enumerate() {
            line += 1;
            let e = NewEvent::new(t, when, payload).with_id(format!("{id}-{n}"));
            sink.send(line, stream.clone(), e).await?;
        }
    }
    sink.finish().await?;
    println!(
        "imported {} events in {:.1} s",
        line,
        started.elapsed().as_secs_f64()
    );
    Ok(store)
}
