//! Append throughput and latency of the healstore event log, against the ceiling of the
//! engine underneath it.
//!
//! Run with `cargo bench --bench append` (`HEALSTORE_BENCH_QUICK=1` for a smoke run with about
//! 20x fewer events; `HEALSTORE_BENCH_ONLY=normal` or `HEALSTORE_BENCH_ONLY=full-256` for only
//! the configurations so named, with their baseline). Results are printed as a table and written to
//! `target/bench-append.json`.
//!
//! # What is measured
//!
//! - **Baseline**: the fastest this data can go into this schema through sqlx. A fresh file is
//!   created by [`Store::open`] (so it has exactly the store's table, indexes and triggers) and
//!   closed; then one plain `SqliteConnection` (WAL, the `synchronous` setting of the durability
//!   being measured) inserts rows of the same shape the store writes (all 15 columns, explicit
//!   positions, the same payloads and index columns) with multi-row INSERTs of 100 rows, all in
//!   one transaction: one fsync in total, no look-ups, no per-append bookkeeping. No real
//!   appender can beat it, so it is the ceiling the store's group commit is compared with. It
//!   is run three times (each in a fresh file) and the median is the reference, because disk
//!   and page-cache behaviour make single runs vary. Its rate depends on the row count
//!   (SQLite's default 2 MiB page cache spills once the transaction outgrows it), so it
//!   inserts about as many rows as the 256-appender runs write.
//! - **Store throughput**: 1, 16 and 256 concurrent appenders (tokio tasks), each appending one
//!   `healing_completed` event at a time to its own stream (`agent-{i}`) and awaiting it before
//!   the next, for a fixed number of events per configuration, at durability `full` and
//!   `normal`. Events/s is total events over wall time; the ratio is to the baseline of the same
//!   durability. Commits are counted afterwards from the database: the writer stamps one
//!   `recorded_at` per group commit, so distinct `recorded_at` values approximate commits.
//! - **Latency**: p50, p99 and max of the time from calling `append` to its return, per
//!   configuration; the single-appender rows are the latency of an unloaded store.
//! - **Peak memory**: `VmHWM` (peak resident set) of this process after each configuration;
//!   it never goes down, so each value is the peak so far.
//! - **Other CPU**: the share of the machine's CPU time used by *other* processes during each
//!   configuration (from `/proc/stat` minus this process). On a small machine anything above a
//!   few percent makes the numbers unreliable.
//!
//! Goals: with 256 appenders the store reaches at least 50 % of the baseline at `normal`
//! durability and at least 25 % at `full`.
//!
//! # PostgreSQL
//!
//! With `HEALSTORE_BENCH_PG` set (to a server URL such as
//! `postgres://postgres@127.0.0.1:5432/test`, or to `1` for that one), a second table compares
//! the PostgreSQL backend with SQLite in the same run, at `full` durability: the same appenders
//! (1, 16, 256) on one store of each, and on PostgreSQL also 4 stores (as 4 hosts) sharing
//! the 256 appenders, which all serialise on the append lock. Each PostgreSQL run uses a
//! database of its own, dropped afterwards. Opt-in, so that the SQLite table never depends on
//! a server being there; an unreachable server set so fails the benchmark.

/// The allocator of the `healstore` binary (and of the other benchmarks: benches/common).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use healstore::{Durability, ExpectedVersion, NewEvent, Store, StoreOptions};
use serde_json::{Value, json};
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Arguments, AssertSqlSafe, ConnectOptions, Connection};

/// Rows per INSERT statement in the baseline.
const BASELINE_ROWS_PER_INSERT: usize = 100;

/// Streams the baseline spreads its rows over, like the 256-appender run.
const BASELINE_STREAMS: usize = 256;

/// What the goals ask of the store with this many appenders.
const GOAL_APPENDERS: usize = 256;

/// Share of the machine's CPU used by other processes above which the results are flagged.
const OTHER_CPU_WARNING: f64 = 0.10;

fn main() -> Result<()> {
    let quick = std::env::var("HEALSTORE_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let scale = if quick { 20 } else { 1 };

    let machine = Machine::read();
    machine.print();
    println!(
        "mode: {}\n",
        if quick {
            "quick (HEALSTORE_BENCH_QUICK, counts / 20)"
        } else {
            "full"
        }
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let report = runtime.block_on(run_all(scale))?;

    println!();
    print_table(&report);
    println!();
    let goals = check_goals(&report);
    print_goals(&goals);
    let busiest = report
        .baselines
        .iter()
        .map(|b| b.other_cpu)
        .chain(report.runs.iter().map(|r| r.other_cpu))
        .fold(0.0, f64::max);
    if busiest > OTHER_CPU_WARNING {
        println!(
            "\nWARNING: other processes used up to {:.0} % of the machine's CPU during a \
             configuration; these numbers understate what the store and the engine can do.",
            busiest * 100.0
        );
    }

    let postgres = match std::env::var("HEALSTORE_BENCH_PG") {
        Ok(v) if !v.is_empty() && v != "0" => {
            let server = if v == "1" {
                "postgres://postgres@127.0.0.1:5432/test".to_owned()
            } else {
                v
            };
            Some(runtime.block_on(postgres_vs_sqlite(&server, scale))?)
        }
        _ => None,
    };

    let peak = vm_hwm_kib();
    println!("\npeak memory (VmHWM): {}", format_kib(peak));

    let json = json!({
        "machine": machine.to_json(),
        "quick": quick,
        "baseline": report.baselines.iter().map(Baseline::to_json).collect::<Vec<_>>(),
        "store": report.runs.iter().map(|r| r.to_json(&report)).collect::<Vec<_>>(),
        "goals": goals.iter().map(Goal::to_json).collect::<Vec<_>>(),
        "peak_vm_hwm_kib": peak,
        "max_other_cpu_share": busiest,
        "postgres": postgres,
    });
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-append.json");
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    println!("JSON summary: {}", out.display());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The plan

/// One store configuration to measure.
#[derive(Debug, Clone, Copy)]
struct Spec {
    durability: Durability,
    appenders: usize,
    /// Total events over all appenders (a multiple of `appenders`).
    events: usize,
}

/// Baseline rows per durability (one transaction).
const BASELINE_ROWS: usize = 200_000;

/// Baseline runs per durability; the median is the reference.
const BASELINE_REPEATS: usize = 3;

/// Events per configuration at full scale, chosen so that the whole run takes about three
/// minutes on two cores: one appender at `full` is fsync-bound (a few thousand commits/s at
/// best), the others are bounded by the writer.
fn specs(scale: usize) -> Vec<Spec> {
    let full = [(1, 6_000), (16, 48_000), (GOAL_APPENDERS, 204_800)];
    let normal = [(1, 20_000), (16, 96_000), (GOAL_APPENDERS, 204_800)];
    let mut out = Vec::new();
    for (durability, table) in [(Durability::Full, full), (Durability::Normal, normal)] {
        for (appenders, events) in table {
            let per_appender = (events / scale / appenders).max(1);
            out.push(Spec {
                durability,
                appenders,
                events: per_appender * appenders,
            });
        }
    }
    out
}

fn durability_name(d: Durability) -> &'static str {
    match d {
        Durability::Full => "full",
        Durability::Normal => "normal",
    }
}

fn synchronous(d: Durability) -> SqliteSynchronous {
    match d {
        Durability::Full => SqliteSynchronous::Full,
        Durability::Normal => SqliteSynchronous::Normal,
    }
}

struct Report {
    baselines: Vec<Baseline>,
    runs: Vec<Run>,
}

impl Report {
    fn baseline(&self, d: Durability) -> Option<&Baseline> {
        self.baselines.iter().find(|b| b.durability == d)
    }
}

async fn run_all(scale: usize) -> Result<Report> {
    let mut report = Report {
        baselines: Vec::new(),
        runs: Vec::new(),
    };
    // `HEALSTORE_BENCH_ONLY=normal` or `=normal-256`: only the configurations so named (and
    // the baselines they are compared with).
    let only = std::env::var("HEALSTORE_BENCH_ONLY").unwrap_or_default();
    let specs: Vec<Spec> = specs(scale)
        .into_iter()
        .filter(|s| {
            let name = format!("{}-{}", durability_name(s.durability), s.appenders);
            only.is_empty() || name == only || name.starts_with(&format!("{only}-"))
        })
        .collect();
    for durability in [Durability::Full, Durability::Normal] {
        if !specs.iter().any(|s| s.durability == durability) {
            continue;
        }
        let b = baseline(durability, BASELINE_ROWS / scale).await?;
        println!(
            "baseline {:<6} {:>8} rows  {:>7.2} s  {:>10.0} rows/s (median of {})  other CPU \
             {:.0} %  VmHWM {}",
            durability_name(durability),
            b.rows,
            b.elapsed().as_secs_f64(),
            b.rows_per_sec(),
            b.runs.len(),
            b.other_cpu * 100.0,
            format_kib(b.vm_hwm_kib),
        );
        report.baselines.push(b);
        for spec in specs.iter().filter(|s| s.durability == durability) {
            let r = store_run(*spec).await?;
            println!(
                "store    {:<6} {:>3} appenders {:>7} events  {:>7.2} s  {:>10.0} events/s  \
                 other CPU {:.0} %  VmHWM {}",
                durability_name(durability),
                spec.appenders,
                spec.events,
                r.elapsed.as_secs_f64(),
                r.events_per_sec(),
                r.other_cpu * 100.0,
                format_kib(r.vm_hwm_kib),
            );
            report.runs.push(r);
        }
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// Events

/// The payload of one realistic `healing_completed` v1 event. The failure, agent, type and
/// strategy are also copied by the store into indexed columns, so every index is exercised.
fn payload(agent: usize, n: usize) -> Value {
    json!({
        "failure_id": uuid::Uuid::now_v7().to_string(),
        "agent_id": format!("agent-{agent}"),
        "failure_type": "agent_down",
        "strategy": "AgentRestart",
        "success": !n.is_multiple_of(10),
        "duration_ms": 100 + (n * 37 % 400) as i64,
        "actions_taken": [],
        "metadata": {},
    })
}

fn new_event(agent: usize, n: usize) -> NewEvent {
    NewEvent::new("healing_completed", chrono::Utc::now(), payload(agent, n))
}

// ---------------------------------------------------------------------------------------------
// Baseline

struct Baseline {
    durability: Durability,
    rows: usize,
    /// Each run's time, sorted.
    runs: Vec<Duration>,
    other_cpu: f64,
    vm_hwm_kib: Option<u64>,
}

impl Baseline {
    /// The median run.
    fn elapsed(&self) -> Duration {
        self.runs[self.runs.len() / 2]
    }

    fn rows_per_sec(&self) -> f64 {
        self.rows as f64 / self.elapsed().as_secs_f64()
    }

    fn to_json(&self) -> Value {
        json!({
            "durability": durability_name(self.durability),
            "rows": self.rows,
            "rows_per_insert": BASELINE_ROWS_PER_INSERT,
            "seconds": self.elapsed().as_secs_f64(),
            "rows_per_sec": self.rows_per_sec(),
            "runs_rows_per_sec": self
                .runs
                .iter()
                .map(|d| self.rows as f64 / d.as_secs_f64())
                .collect::<Vec<_>>(),
            "other_cpu_share": self.other_cpu,
            "vm_hwm_kib": self.vm_hwm_kib,
        })
    }
}

/// One row exactly as the store writes it (see the events table).
struct Row {
    position: i64,
    event_id: String,
    stream_id: String,
    stream_version: i64,
    event_type: String,
    schema_version: i64,
    occurred_at: i64,
    recorded_at: i64,
    payload: String,
    failure_id: Option<String>,
    agent_id: Option<String>,
    failure_type: Option<String>,
    strategy: Option<String>,
    success: Option<bool>,
    duration_ms: Option<i64>,
}

/// The baseline's rows, built before the clock starts: `rows` events spread round-robin over
/// [`BASELINE_STREAMS`] streams, as the many-appender runs interleave them.
fn baseline_rows(rows: usize) -> Vec<Row> {
    let recorded_at = chrono::Utc::now().timestamp_micros();
    (0..rows)
        .map(|i| {
            let agent = i % BASELINE_STREAMS;
            let n = i / BASELINE_STREAMS;
            let event = new_event(agent, n);
            let text = |k: &str| {
                event
                    .payload
                    .get(k)
                    .and_then(Value::as_str)
                    .map(String::from)
            };
            Row {
                position: i as i64 + 1,
                stream_id: format!("agent-{agent}"),
                stream_version: n as i64 + 1,
                schema_version: i64::from(event.schema_version),
                occurred_at: event.occurred_at.timestamp_micros(),
                recorded_at,
                payload: event.payload.to_string(),
                failure_id: text("failure_id"),
                agent_id: text("agent_id"),
                failure_type: text("failure_type"),
                strategy: text("strategy"),
                success: event.payload.get("success").and_then(Value::as_bool),
                duration_ms: event.payload.get("duration_ms").and_then(Value::as_i64),
                event_id: event.event_id,
                event_type: event.event_type,
            }
        })
        .collect()
}

fn insert_sql(rows: usize) -> String {
    let row = format!("({})", vec!["?"; 15].join(","));
    format!(
        "INSERT INTO events (position, event_id, stream_id, stream_version, event_type, \
         schema_version, occurred_at, recorded_at, payload, failure_id, agent_id, failure_type, \
         strategy, success, duration_ms) VALUES {}",
        vec![row; rows].join(",")
    )
}

fn bind_row(args: &mut SqliteArguments, r: &Row) -> Result<()> {
    let encode = |e| anyhow::anyhow!("binding a baseline row: {e}");
    args.add(r.position).map_err(encode)?;
    args.add(r.event_id.as_str()).map_err(encode)?;
    args.add(r.stream_id.as_str()).map_err(encode)?;
    args.add(r.stream_version).map_err(encode)?;
    args.add(r.event_type.as_str()).map_err(encode)?;
    args.add(r.schema_version).map_err(encode)?;
    args.add(r.occurred_at).map_err(encode)?;
    args.add(r.recorded_at).map_err(encode)?;
    args.add(r.payload.as_str()).map_err(encode)?;
    args.add(r.failure_id.as_deref()).map_err(encode)?;
    args.add(r.agent_id.as_deref()).map_err(encode)?;
    args.add(r.failure_type.as_deref()).map_err(encode)?;
    args.add(r.strategy.as_deref()).map_err(encode)?;
    args.add(r.success).map_err(encode)?;
    args.add(r.duration_ms).map_err(encode)?;
    Ok(())
}

async fn baseline(durability: Durability, rows: usize) -> Result<Baseline> {
    let cpu = CpuMeter::start();
    let mut runs = Vec::with_capacity(BASELINE_REPEATS);
    for _ in 0..BASELINE_REPEATS {
        runs.push(baseline_once(durability, rows).await?);
    }
    runs.sort_unstable();
    Ok(Baseline {
        durability,
        rows,
        runs,
        other_cpu: cpu.other_share(),
        vm_hwm_kib: vm_hwm_kib(),
    })
}

/// One baseline run in a fresh file: the time from `BEGIN` to the end of `COMMIT`.
async fn baseline_once(durability: Durability, rows: usize) -> Result<Duration> {
    let dir = temp_dir()?;
    let path = dir.path().join("baseline.db");
    // The store creates the schema; then it is out of the way.
    Store::open(
        &path,
        StoreOptions {
            durability,
            ..Default::default()
        },
    )
    .await?
    .close()
    .await?;

    let mut conn = SqliteConnectOptions::new()
        .filename(&path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(synchronous(durability))
        // The same page cache as the store's writer: the ceiling under the same settings.
        .pragma("cache_size", format!("-{}", healstore::WRITER_CACHE_KIB))
        .disable_statement_logging()
        .connect()
        .await
        .context("opening the baseline connection")?;
    let data = baseline_rows(rows);
    // Shared, so that every full chunk hits sqlx's prepared-statement cache without a copy.
    let sql: Arc<str> = insert_sql(BASELINE_ROWS_PER_INSERT).into();

    let start = Instant::now();
    let mut tx = conn.begin().await?;
    for chunk in data.chunks(BASELINE_ROWS_PER_INSERT) {
        let mut args = SqliteArguments::default();
        for r in chunk {
            bind_row(&mut args, r)?;
        }
        let sql = if chunk.len() == BASELINE_ROWS_PER_INSERT {
            sql.clone()
        } else {
            insert_sql(chunk.len()).into()
        };
        sqlx::query_with(AssertSqlSafe(sql), args)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    let elapsed = start.elapsed();

    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut conn)
        .await?;
    ensure!(
        stored == rows as i64,
        "baseline stored {stored} rows, not {rows}"
    );
    conn.close().await?;
    Ok(elapsed)
}

// ---------------------------------------------------------------------------------------------
// Store runs

struct Run {
    spec: Spec,
    elapsed: Duration,
    /// Per-append latencies, sorted.
    latencies: Vec<Duration>,
    /// Distinct `recorded_at` values: about one per group commit.
    commits: u64,
    other_cpu: f64,
    vm_hwm_kib: Option<u64>,
}

impl Run {
    fn events_per_sec(&self) -> f64 {
        self.spec.events as f64 / self.elapsed.as_secs_f64()
    }

    fn ratio(&self, report: &Report) -> Option<f64> {
        report
            .baseline(self.spec.durability)
            .map(|b| self.events_per_sec() / b.rows_per_sec())
    }

    /// Nearest-rank percentile.
    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }

    fn max(&self) -> Duration {
        self.latencies.last().copied().unwrap_or_default()
    }

    fn to_json(&self, report: &Report) -> Value {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        json!({
            "durability": durability_name(self.spec.durability),
            "appenders": self.spec.appenders,
            "events": self.spec.events,
            "seconds": self.elapsed.as_secs_f64(),
            "events_per_sec": self.events_per_sec(),
            "ratio_to_baseline": self.ratio(report),
            "commits": self.commits,
            "events_per_commit": self.spec.events as f64 / self.commits.max(1) as f64,
            "latency_ms": {
                "p50": ms(self.percentile(50.0)),
                "p99": ms(self.percentile(99.0)),
                "max": ms(self.max()),
            },
            "other_cpu_share": self.other_cpu,
            "vm_hwm_kib": self.vm_hwm_kib,
        })
    }
}

async fn store_run(spec: Spec) -> Result<Run> {
    let dir = temp_dir()?;
    let store = Store::open(
        dir.path().join("store.db"),
        StoreOptions {
            durability: spec.durability,
            ..Default::default()
        },
    )
    .await?;
    let per_appender = spec.events / spec.appenders;

    let cpu = CpuMeter::start();
    let start = Instant::now();
    let tasks: Vec<_> = (0..spec.appenders)
        .map(|agent| {
            let store = store.clone();
            tokio::spawn(async move {
                let stream = format!("agent-{agent}");
                let mut latencies = Vec::with_capacity(per_appender);
                for n in 0..per_appender {
                    let event = new_event(agent, n);
                    let t = Instant::now();
                    store
                        .append(&stream, ExpectedVersion::Any, vec![event])
                        .await?;
                    latencies.push(t.elapsed());
                }
                Ok::<_, healstore::Error>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(spec.events);
    for task in tasks {
        latencies.extend(task.await.context("appender task panicked")??);
    }
    let elapsed = start.elapsed();
    let other_cpu = cpu.other_share();
    latencies.sort_unstable();

    // Everything was stored, in the right streams.
    let head = store.head_position().await?;
    ensure!(
        head == spec.events as i64,
        "head position is {head} after {} appends",
        spec.events
    );
    let last = format!("agent-{}", spec.appenders - 1);
    let version = store.stream_version(&last).await?;
    ensure!(
        version == per_appender as u64,
        "stream {last} is at version {version}, not {per_appender}"
    );
    let commits: i64 = sqlx::query_scalar("SELECT count(DISTINCT recorded_at) FROM events")
        .fetch_one(store.read_pool())
        .await?;
    store.close().await?;

    Ok(Run {
        spec,
        elapsed,
        latencies,
        commits: commits as u64,
        other_cpu,
        vm_hwm_kib: vm_hwm_kib(),
    })
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL beside SQLite

/// Appends `events` events from `appenders` tasks spread over `stores`, one at a time each;
/// wall time and sorted latencies.
async fn timed_appends(
    stores: &[Store],
    appenders: usize,
    events: usize,
) -> Result<(Duration, Vec<Duration>)> {
    let per_appender = events / appenders;
    let start = Instant::now();
    let tasks: Vec<_> = (0..appenders)
        .map(|agent| {
            let store = stores[agent % stores.len()].clone();
            tokio::spawn(async move {
                let stream = format!("agent-{agent}");
                let mut latencies = Vec::with_capacity(per_appender);
                for n in 0..per_appender {
                    let t = Instant::now();
                    store
                        .append(&stream, ExpectedVersion::Any, vec![new_event(agent, n)])
                        .await?;
                    latencies.push(t.elapsed());
                }
                Ok::<_, healstore::Error>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(events);
    for task in tasks {
        latencies.extend(task.await.context("appender task panicked")??);
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    let head = stores[0].head_position().await?;
    ensure!(
        head == (per_appender * appenders) as i64,
        "head position is {head} after {events} appends"
    );
    Ok((elapsed, latencies))
}

/// A database of its own on the server, for one run.
async fn pg_database(server: &str) -> Result<(String, String)> {
    let name = format!("healstore_bench_{}", uuid::Uuid::now_v7().simple());
    let mut admin = sqlx::PgConnection::connect(server)
        .await
        .with_context(|| format!("HEALSTORE_BENCH_PG: no PostgreSQL server at {server}"))?;
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    let root = server.rsplit_once('/').map(|(r, _)| r).unwrap_or(server);
    Ok((format!("{root}/{name}"), name))
}

async fn drop_pg_database(server: &str, name: &str) -> Result<()> {
    let mut admin = sqlx::PgConnection::connect(server).await?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    Ok(())
}

/// The PostgreSQL table (see the module's documentation).
async fn postgres_vs_sqlite(server: &str, scale: usize) -> Result<Value> {
    let full = |appenders| match appenders {
        1 => 2_000 / scale.min(10),
        16 => 20_000 / scale,
        _ => 40_960 / scale,
    };
    println!(
        "\nPostgreSQL beside SQLite (durability full, the same events; {server}):\n\
         {:<10} {:>9} {:>6} {:>8} {:>7} {:>10} {:>7} {:>7} {:>9}",
        "backend",
        "appenders",
        "stores",
        "events",
        "seconds",
        "events/s",
        "p50 ms",
        "p99 ms",
        "pg/sqlite"
    );
    let mut rows = Vec::new();
    for (appenders, stores) in [(1, 1), (16, 1), (256, 1), (256, 4)] {
        let events = full(appenders) / appenders * appenders;
        let options = StoreOptions {
            durability: Durability::Full,
            ..Default::default()
        };
        let sqlite = if stores == 1 {
            let dir = temp_dir()?;
            let store = Store::open(dir.path().join("store.db"), options.clone()).await?;
            let r = timed_appends(std::slice::from_ref(&store), appenders, events).await?;
            store.close().await?;
            Some(r)
        } else {
            None
        };
        let (url, name) = pg_database(server).await?;
        let mut open = Vec::new();
        for _ in 0..stores {
            open.push(Store::open(&url, options.clone()).await?);
        }
        let pg = timed_appends(&open, appenders, events).await;
        for s in open {
            s.close().await?;
        }
        drop_pg_database(server, &name).await?;
        let pg = pg?;
        let rate = |(elapsed, _): &(Duration, Vec<Duration>)| events as f64 / elapsed.as_secs_f64();
        let pct = |l: &[Duration], p: f64| {
            l[((l.len() as f64 * p) as usize).min(l.len() - 1)].as_secs_f64() * 1000.0
        };
        for (backend, r) in [("sqlite", sqlite.as_ref()), ("postgres", Some(&pg))] {
            let Some(r) = r else { continue };
            let ratio = match (backend, &sqlite) {
                ("postgres", Some(s)) => format!("{:.2}", rate(r) / rate(s)),
                _ => String::new(),
            };
            println!(
                "{:<10} {:>9} {:>6} {:>8} {:>7.2} {:>10.0} {:>7.2} {:>7.2} {:>9}",
                backend,
                appenders,
                stores,
                events,
                r.0.as_secs_f64(),
                rate(r),
                pct(&r.1, 0.5),
                pct(&r.1, 0.99),
                ratio
            );
            rows.push(json!({
                "backend": backend,
                "appenders": appenders,
                "stores": stores,
                "events": events,
                "seconds": r.0.as_secs_f64(),
                "events_per_sec": rate(r),
                "p50_ms": pct(&r.1, 0.5),
                "p99_ms": pct(&r.1, 0.99),
            }));
        }
    }
    Ok(Value::Array(rows))
}

/// A fresh directory on the same file system as the system's temp dir.
fn temp_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("healstore-bench-")
        .tempdir()
        .context("creating a temp dir")
}

// ---------------------------------------------------------------------------------------------
// Output

/// Column headers and widths of the results table (the first two are left-aligned).
const COLUMNS: [(&str, usize); 14] = [
    ("what", 8),
    ("sync", 6),
    ("appenders", 9),
    ("events", 8),
    ("seconds", 7),
    ("events/s", 9),
    ("vs base", 8),
    ("commits", 7),
    ("ev/commit", 9),
    ("p50 ms", 7),
    ("p99 ms", 7),
    ("max ms", 7),
    ("other CPU", 9),
    ("VmHWM", 10),
];

fn print_row(cells: [String; 14]) {
    let line: Vec<String> = cells
        .iter()
        .zip(COLUMNS)
        .enumerate()
        .map(|(i, (cell, (_, width)))| {
            if i < 2 {
                format!("{cell:<width$}")
            } else {
                format!("{cell:>width$}")
            }
        })
        .collect();
    println!("{}", line.join(" "));
}

fn print_table(report: &Report) {
    print_row(COLUMNS.map(|(name, _)| name.to_owned()));
    let width = COLUMNS.iter().map(|(_, w)| w + 1).sum::<usize>() - 1;
    println!("{}", "-".repeat(width));
    let percent = |x: f64| format!("{:.1} %", x * 100.0);
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1e3);
    let dash = || "-".to_owned();
    for d in [Durability::Full, Durability::Normal] {
        if let Some(b) = report.baseline(d) {
            print_row([
                "baseline".to_owned(),
                durability_name(d).to_owned(),
                dash(),
                b.rows.to_string(),
                format!("{:.2}", b.elapsed().as_secs_f64()),
                format!("{:.0}", b.rows_per_sec()),
                percent(1.0),
                "1".to_owned(),
                b.rows.to_string(),
                dash(),
                dash(),
                dash(),
                format!("{:.0} %", b.other_cpu * 100.0),
                format_kib(b.vm_hwm_kib),
            ]);
        }
        for r in report.runs.iter().filter(|r| r.spec.durability == d) {
            print_row([
                "store".to_owned(),
                durability_name(d).to_owned(),
                r.spec.appenders.to_string(),
                r.spec.events.to_string(),
                format!("{:.2}", r.elapsed.as_secs_f64()),
                format!("{:.0}", r.events_per_sec()),
                r.ratio(report).map_or_else(dash, percent),
                r.commits.to_string(),
                format!("{:.1}", r.spec.events as f64 / r.commits.max(1) as f64),
                ms(r.percentile(50.0)),
                ms(r.percentile(99.0)),
                ms(r.max()),
                format!("{:.0} %", r.other_cpu * 100.0),
                format_kib(r.vm_hwm_kib),
            ]);
        }
    }
    println!(
        "\nbaseline: one plain sqlx connection, INSERTs of {BASELINE_ROWS_PER_INSERT} rows, one \
         transaction, median of {BASELINE_REPEATS} runs; store: one event per append, each \
         appender awaiting its append."
    );
    println!(
        "commits: distinct recorded_at values (one per group commit); other CPU: share of the \
         machine used by other processes; VmHWM: peak RSS of the process so far."
    );
}

struct Goal {
    durability: Durability,
    required: f64,
    achieved: Option<f64>,
}

impl Goal {
    fn met(&self) -> bool {
        self.achieved.is_some_and(|a| a >= self.required)
    }

    fn to_json(&self) -> Value {
        json!({
            "appenders": GOAL_APPENDERS,
            "durability": durability_name(self.durability),
            "required_ratio": self.required,
            "achieved_ratio": self.achieved,
            "met": self.met(),
        })
    }
}

fn check_goals(report: &Report) -> Vec<Goal> {
    [(Durability::Normal, 0.50), (Durability::Full, 0.25)]
        .into_iter()
        .map(|(durability, required)| Goal {
            durability,
            required,
            achieved: report
                .runs
                .iter()
                .find(|r| r.spec.durability == durability && r.spec.appenders == GOAL_APPENDERS)
                .and_then(|r| r.ratio(report)),
        })
        .collect()
}

fn print_goals(goals: &[Goal]) {
    println!("goals ({GOAL_APPENDERS} appenders, share of the same-durability baseline):");
    for g in goals {
        println!(
            "  {:<6} >= {:>3.0} %: {:>6}  {}",
            durability_name(g.durability),
            g.required * 100.0,
            g.achieved
                .map_or_else(|| "-".to_owned(), |a| format!("{:.1} %", a * 100.0)),
            if g.met() { "MET" } else { "NOT MET" }
        );
    }
}

fn format_kib(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "?".to_owned(),
        |k| format!("{:.1} MiB", k as f64 / 1024.0),
    )
}

// ---------------------------------------------------------------------------------------------
// The machine

/// `VmHWM` (peak resident set size) of this process, in KiB.
fn vm_hwm_kib() -> Option<u64> {
    proc_field("/proc/self/status", "VmHWM")
}

/// A `Name: 123 kB` field of a /proc file, in KiB.
fn proc_field(file: &str, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Measures how much CPU other processes use while a configuration runs.
struct CpuMeter {
    machine: Option<(u64, u64)>,
    own: Option<u64>,
}

impl CpuMeter {
    fn start() -> CpuMeter {
        CpuMeter {
            machine: machine_ticks(),
            own: own_ticks(),
        }
    }

    /// The share (0 to 1) of the machine's CPU time used by other processes since `start`.
    fn other_share(&self) -> f64 {
        let (Some((busy0, total0)), Some(own0)) = (self.machine, self.own) else {
            return 0.0;
        };
        let (Some((busy1, total1)), Some(own1)) = (machine_ticks(), own_ticks()) else {
            return 0.0;
        };
        let total = total1.saturating_sub(total0);
        if total == 0 {
            return 0.0;
        }
        let others = busy1
            .saturating_sub(busy0)
            .saturating_sub(own1.saturating_sub(own0));
        others as f64 / total as f64
    }
}

/// Busy and total CPU ticks of the whole machine (first line of /proc/stat).
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4)?;
    Some((total - idle, total))
}

/// CPU ticks used by this process (user + system, fields 14 and 15 of /proc/self/stat).
fn own_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may contain spaces: count fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

struct Machine {
    cpu: String,
    cores: usize,
    mem_total_kib: Option<u64>,
    os: String,
    temp_dir: PathBuf,
    temp_fs: String,
}

impl Machine {
    fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                matches!(k.trim(), "model name" | "Hardware" | "cpu model").then(|| v.trim())
            })
            .unwrap_or("unknown")
            .to_owned();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "?".to_owned())
        };
        let os = format!(
            "{} {}",
            read("/proc/sys/kernel/ostype"),
            read("/proc/sys/kernel/osrelease")
        );
        let temp_dir = std::env::temp_dir();
        let temp_fs = file_system_of(&temp_dir).unwrap_or_else(|| "?".to_owned());
        Machine {
            cpu,
            cores,
            mem_total_kib: proc_field("/proc/meminfo", "MemTotal"),
            os,
            temp_dir,
            temp_fs,
        }
    }

    fn print(&self) {
        println!("machine:");
        println!("  cpu:      {}", self.cpu);
        println!("  cores:    {}", self.cores);
        println!(
            "  memory:   {}",
            self.mem_total_kib.map_or_else(
                || "?".to_owned(),
                |k| format!("{:.1} GiB", k as f64 / 1048576.0)
            )
        );
        println!("  os:       {}", self.os);
        println!("  temp dir: {} ({})", self.temp_dir.display(), self.temp_fs);
    }

    fn to_json(&self) -> Value {
        json!({
            "cpu": self.cpu,
            "cores": self.cores,
            "mem_total_kib": self.mem_total_kib,
            "os": self.os,
            "temp_dir": self.temp_dir,
            "temp_fs": self.temp_fs,
        })
    }
}

/// The file system type and device of the mount holding `path` (fsync costs nothing on
/// tmpfs, which would make `full` durability meaningless).
fn file_system_of(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let mut best: Option<(usize, String)> = None;
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (Some(dev), Some(mount), Some(fs)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if path.starts_with(mount) && best.as_ref().is_none_or(|(len, _)| mount.len() > *len) {
            best = Some((mount.len(), format!("{fs} on {dev}")));
        }
    }
    best.map(|(_, s)| s)
}
