//! The analytics benchmark's store, shared with the backtest benchmark: 1,000,000 failures
//! with their healing events over 30 days (by default), generated once with SQL straight into
//! the event table (the read models then built by the rebuild, which a test holds equal to the
//! triggers' tables) and
//! cached under `target/`.

use std::time::Instant;

use chrono::{DateTime, TimeZone, Utc};
use healstore::analytics::Analytics;
use healstore::{Store, StoreOptions};
use sqlx::{ConnectOptions, Connection};

pub const DAY_US: i64 = 86_400_000_000;

/// The end of the generated data.
pub fn end() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
}

/// "Now" for every query: 17 min 23.456789 s before the data ends, off any hour boundary.
pub fn now() -> DateTime<Utc> {
    end() - chrono::Duration::microseconds(1_043_456_789)
}

/// The store of `n` failures over `days` days at `path`: reused when it holds them, else
/// generated (about a minute per million failures on an idle machine).
pub async fn prepare(path: &std::path::Path, n: i64, days: i64) -> anyhow::Result<Store> {
    if path.exists() {
        let store = Store::open(path, StoreOptions::default()).await?;
        let have: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM failures")
            .fetch_one(store.read_pool())
            .await
            .unwrap_or(0);
        if have == n {
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
    // Create the schema through the store, then fill it on one plain connection.
    Store::open(path, StoreOptions::default())
        .await?
        .close()
        .await?;
    let started = Instant::now();
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .pragma("synchronous", "OFF")
        .pragma("cache_size", "-65536")
        .connect()
        .await?;
    let start_us = (end() - chrono::Duration::days(days)).timestamp_micros();
    let step = days * DAY_US / n;
    let batch = 50_000.min(n);
    // The read models' triggers are set aside while the events go in, and the read models
    // built afterwards by the rebuild (which a test holds equal to what the triggers keep):
    // row by row, the triggers took over an hour for 3,000,000 failures on a loaded machine.
    let triggers: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'rm\\_%' ESCAPE '\\'",
    )
    .fetch_all(&mut conn)
    .await?;
    let mut tx = conn.begin().await?;
    for (name, _) in &triggers {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TRIGGER {name}")))
            .execute(&mut *tx)
            .await?;
    }
    let mut lo = 0;
    while lo < n {
        let hi = (lo + batch).min(n);
        sqlx::query(GENERATE)
            .bind(lo)
            .bind(hi)
            .bind(start_us)
            .bind(step)
            .execute(&mut *tx)
            .await?;
        lo = hi;
        eprint!("\rgenerating: {lo}/{n} failures");
    }
    for (_, sql) in &triggers {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    eprintln!(
        "\rgenerated {n} failures in {:.1} s; building the read models",
        started.elapsed().as_secs_f64()
    );
    let store = Store::open(path, StoreOptions::default()).await?;
    Analytics::new(&store).rebuild().await?;
    eprintln!(
        "generated and built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(store)
}

/// One batch of failures `[?1, ?2)`: five events each (three when the heal failed), plus a
/// circuit opening and closing for every thousandth. Pseudo-random fields come from
/// multiplicative hashes of the failure's number, so the data is the same in every run.
const GENERATE: &str = r#"
WITH RECURSIVE seq(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < ?2),
f AS (
    SELECT i,
        ?3 + i * ?4 + (i * 2654435761) % ?4 AS t,
        CASE WHEN (i * 40503 + 11) % 999983 % 100 < 30 THEN 'agent_down'
             WHEN (i * 40503 + 11) % 999983 % 100 < 60 THEN 'task_timeout'
             WHEN (i * 40503 + 11) % 999983 % 100 < 75 THEN 'resource_exhaustion'
             WHEN (i * 40503 + 11) % 999983 % 100 < 85 THEN 'execution_error'
             WHEN (i * 40503 + 11) % 999983 % 100 < 95 THEN 'heartbeat_failed'
             ELSE 'quorum_loss' END AS ft,
        'agent-' || ((i * 2654435761 + 97) % 1000003 % 200) AS agent,
        ((i * 69069 + 7) % 1000033 % 100) < 85 AS ok,
        50 + (i * 1103515245) % 450 AS dur,
        (i * 22695477) % 2000000 AS extra
    FROM seq
),
g AS (
    SELECT *, CASE WHEN ft IN ('agent_down', 'heartbeat_failed') THEN 'AgentRestart'
                   WHEN ft IN ('task_timeout', 'execution_error') THEN 'TaskRetry'
                   WHEN ft = 'resource_exhaustion' THEN 'GradualDegradation'
                   ELSE 'QuorumRecovery' END AS strat,
              'b-' || i AS fid
    FROM f
),
k(k) AS (VALUES (1), (2), (3), (4), (5), (6), (7), (8))
INSERT INTO events (event_id, stream_id, stream_version, event_type, schema_version,
                    occurred_at, recorded_at, payload, failure_id, agent_id, failure_type,
                    strategy, success, duration_ms)
SELECT
    fid || '-' || k,
    CASE WHEN k <= 4 OR k = 8 THEN 'failure-' || fid ELSE 'cb-' || fid END,
    CASE WHEN k <= 4 THEN k WHEN k = 8 THEN 5 ELSE k - 4 END,
    CASE k WHEN 1 THEN 'failure_detected' WHEN 2 THEN 'healing_attempted'
           WHEN 3 THEN 'healing_completed' WHEN 4 THEN 'failure_resolved'
           WHEN 8 THEN 'failure_recovered' ELSE 'circuit_transitioned' END,
    1,
    CASE k WHEN 1 THEN t WHEN 2 THEN t + 1000 WHEN 3 THEN t + dur * 1000
           WHEN 4 THEN t + dur * 1000 + extra WHEN 5 THEN t + 1
           WHEN 6 THEN t + 60000000 WHEN 7 THEN t + 65000000
           ELSE t + dur * 1000 + extra + (i * 7919) % 5000000 END,
    t,
    CASE k
      WHEN 1 THEN json_object('failure_id', fid, 'failure_type', ft, 'severity', 'high',
                              'agent_id', agent, 'metadata', json_object())
      WHEN 2 THEN json_object('failure_id', fid, 'strategy', strat, 'agent_id', agent,
                              'failure_type', ft, 'decision', 'act', 'reason', 'generated',
                              'actions', json_array(), 'details', json_object())
      WHEN 3 THEN json_object('failure_id', fid, 'strategy', strat, 'agent_id', agent,
                              'failure_type', ft, 'success', json(CASE WHEN ok THEN 'true' ELSE 'false' END),
                              'duration_ms', dur, 'actions_taken', json_array(),
                              'metadata', json_object())
      WHEN 4 THEN json_object('failure_id', fid, 'failure_type', ft, 'agent_id', agent,
                              'strategy', strat,
                              'detected_at', strftime('%Y-%m-%dT%H:%M:%fZ', t / 1000000.0, 'unixepoch'))
      WHEN 8 THEN json_object('failure_id', fid, 'agent_id', agent, 'how', 'signal')
      ELSE json_object('circuit', agent, 'agent_id', agent, 'strategy', 'CircuitBreaker',
                       'from', CASE k WHEN 5 THEN 'closed' WHEN 6 THEN 'open' ELSE 'half_open' END,
                       'to', CASE k WHEN 5 THEN 'open' WHEN 6 THEN 'half_open' ELSE 'closed' END,
                       'reason', 'generated', 'details', json_object())
    END,
    CASE WHEN k <= 4 OR k = 8 THEN fid END,
    agent,
    CASE WHEN k <= 4 THEN ft END,
    CASE WHEN k IN (2, 3, 4) THEN strat WHEN k BETWEEN 5 AND 7 THEN 'CircuitBreaker' END,
    CASE WHEN k = 3 THEN ok END,
    CASE WHEN k = 3 THEN dur END
FROM g JOIN k ON (k <= 3 OR (k IN (4, 8) AND ok) OR (k BETWEEN 5 AND 7 AND i % 1000 = 0))
ORDER BY i, k
"#;
