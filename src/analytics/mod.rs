//! Analytics over time windows, computed by SQL in the database.
//!
//! Every figure here is a query over the read models that triggers maintain in the same
//! transaction as the events ([`rebuild_read_models`] recreates them from the events):
//!
//! - `failures`: one row per failure (detection, healing counts, remediation and recovery, each
//!   with its time from detection and that time's histogram bucket);
//! - `failure_hourly`, `attempt_hourly`, `healing_hourly`: hourly rollups, and
//!   `failure_minutely`, `attempt_minutely`, `healing_minutely` and `failure_secondly`,
//!   `attempt_secondly`, `healing_secondly` the same by the minute and by the second;
//! - `agent_rollup`: failures detected per agent by the second, minute, hour and day;
//! - `ttr_histogram`: the times to remediate and to recover as log-scale histograms by the
//!   second, minute, hour and day ([`hist`]), for percentiles within 1 %;
//! - `recovery_pairs`: failures counted by the second, minute and hour of their detection and
//!   of their recovery, for the failures not recovered by a window's end;
//! - `patterns` and `predictions`: the latest learned patterns and every prediction made;
//! - `archived_facts`: what the queries below read event by event, kept for archived events.
//!
//! A window `[since, until)` is cut ([`Pieces::cut`]) into its whole days (where a rollup has
//! them), its whole hours, the whole minutes and seconds on either side, and the partial
//! seconds at its edges: the rollups answer the units and only the partial seconds are read
//! row by row from the per-failure model or the log's indexes. A query's cost grows with the
//! window's length in time (at most 2 x 23 hours, 2 x 59 minutes and 2 x 59 seconds besides
//! its days), not with the number of events in it, and a burst in the current minute costs no
//! more than a quiet one (it would cost its whole burst if the last partial minute were read
//! row by row, as it was: a fleet's latest failures are healed in the current minute). Queries
//! that read events one by one (the partial seconds' healing results and decisions, a
//! strategy's latest results for its trend, success signals, recent usage reports) read the
//! log and `archived_facts` together, so that an archive changes no answer. Nothing here loads
//! the log into memory.
//!
//! - [`stats`]: overall statistics and MTTR history;
//! - [`effectiveness`]: per strategy and per (strategy, failure type), with trend and verdict;
//! - [`circuits`]: time open and half-open, reopenings, flapping;
//! - [`advice`]: recommendations, the health score and the dashboard;
//! - [`patterns`]: sequence, frequency, correlation and temporal patterns;
//! - [`predict`]: predictions from the latest events and the learned patterns, and their
//!   accuracy;
//! - [`html`]: the dashboard as one self-contained page.

// SQL over `events e` that says which events the analytics read one by one, and what they read
// of them: shared by those queries and by ARCHIVE_FACTS, so that the facts kept of archived
// events are exactly what the queries would have read in the log.

/// The healing results counted (as the rollup's trigger and rebuild.sql count them).
macro_rules! counted_result {
    () => {
        "e.event_type = 'healing_completed' AND e.schema_version = 1 \
         AND e.failure_id IS NOT NULL AND e.strategy IS NOT NULL AND e.success IS NOT NULL"
    };
}

/// The healing decisions counted.
macro_rules! counted_decision {
    () => {
        "e.event_type = 'healing_attempted' AND e.schema_version = 1 \
         AND e.failure_id IS NOT NULL AND e.strategy IS NOT NULL"
    };
}

/// A healing event's failure type: its own, else its failure's (detected before it), else ''.
macro_rules! healing_failure_type {
    () => {
        "COALESCE(e.failure_type, (SELECT f.failure_type FROM failures f \
         WHERE f.failure_id = e.failure_id AND f.position < e.position), '')"
    };
}

/// The success signals counted.
macro_rules! counted_success {
    () => {
        "e.event_type = 'agent_succeeded' AND e.agent_id IS NOT NULL"
    };
}

/// The usage reports counted, and their usage as a share of the limit.
macro_rules! counted_usage {
    () => {
        "e.event_type = 'resource_usage_reported' AND e.schema_version = 1 \
         AND CAST(e.payload ->> '$.limit' AS REAL) > 0"
    };
}
macro_rules! usage_share {
    () => {
        "CAST(e.payload ->> '$.current_usage' AS REAL) / CAST(e.payload ->> '$.limit' AS REAL)"
    };
}

/// Keeps, in `archived_facts`, what the analytics read one by one of the events up to position
/// ?1, which an archive is about to delete (run in its transaction, before the DELETE). The
/// queries read that table beside the log (see migrations/V8__archived_facts.sql).
pub(crate) const ARCHIVE_FACTS: &str = concat!(
    "INSERT INTO archived_facts (position, event_type, occurred_at, strategy, agent_id, \
     failure_type, decision, success, duration_ms, resource, usage_share) \
     SELECT e.position, e.event_type, e.occurred_at, e.strategy, e.agent_id, ",
    healing_failure_type!(),
    ", COALESCE(e.payload ->> '$.decision', ''), NULL, NULL, NULL, NULL \
     FROM events e WHERE e.position <= ?1 AND ",
    counted_decision!(),
    " UNION ALL \
     SELECT e.position, e.event_type, e.occurred_at, e.strategy, e.agent_id, ",
    healing_failure_type!(),
    ", NULL, e.success, MAX(0, COALESCE(e.duration_ms, 0)), NULL, NULL \
     FROM events e WHERE e.position <= ?1 AND ",
    counted_result!(),
    " UNION ALL \
     SELECT e.position, e.event_type, e.occurred_at, NULL, e.agent_id, NULL, NULL, NULL, NULL, \
     NULL, NULL FROM events e WHERE e.position <= ?1 AND ",
    counted_success!(),
    " UNION ALL \
     SELECT e.position, e.event_type, e.occurred_at, NULL, e.agent_id, NULL, NULL, NULL, NULL, \
     e.payload ->> '$.resource_type', ",
    usage_share!(),
    " FROM events e WHERE e.position <= ?1 AND ",
    counted_usage!()
);

pub mod advice;
pub mod circuits;
pub mod effectiveness;
pub mod hist;
pub mod html;
pub mod patterns;
pub mod predict;
pub mod prevention;
pub mod propose;
pub mod request;
pub mod stats;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::{AssertSqlSafe, SqliteConnection, SqlitePool};

use crate::error::{Error, Result};
use crate::store::Store;
use crate::time::{format_time, to_micros};

pub use advice::{Dashboard, HealthScore, Recommendation, Target};
pub use circuits::{CircuitReport, CircuitSpan, CircuitSummary};
pub use effectiveness::{
    Effectiveness, EffectivenessOptions, PairEffectiveness, StrategyEffectiveness,
};
pub use patterns::{LearnOptions, Pattern};
pub use predict::{PredictOptions, Prediction, PredictionOutcome, PredictionReport};
pub use prevention::{PreventionEffect, PreventionReport};
pub use request::{Learning, MttrReport, RecommendationsReport, Verdicts, WindowSpec};
pub use stats::{MttrBy, MttrPoint, MttrTo, Stats};

/// One hour in microseconds: the rollups' bucket.
pub(crate) const HOUR_US: i64 = 3_600_000_000;
/// One second, one minute and one day in microseconds: the finer and the coarser rollups'
/// buckets.
pub(crate) const SECOND_US: i64 = 1_000_000;
pub(crate) const MINUTE_US: i64 = 60_000_000;
pub(crate) const DAY_US: i64 = 86_400_000_000;

/// The fact rollups of a span (`failure_`, `attempt_`, `healing_` + the suffix) and their
/// time column: `secondly` by `second`, `minutely` by `minute`, `hourly` by `hour`.
pub(crate) fn fact_unit(span: i64) -> (&'static str, &'static str) {
    match span {
        SECOND_US => ("secondly", "second"),
        MINUTE_US => ("minutely", "minute"),
        _ => ("hourly", "hour"),
    }
}

/// A window cut into the pieces the rollups answer: whole units of each span (coarsest in
/// the middle), and the partial minutes at the edges, read row by row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Pieces {
    /// (span, start, end): whole units of `span` in `[start, end)`.
    pub levels: Vec<(i64, i64, i64)>,
    /// `[start, end)` ranges below the finest span.
    pub rows: Vec<(i64, i64)>,
}

impl Pieces {
    /// Cuts `[s, u)` by `spans` (ascending, each a multiple of the one before): the whole
    /// units of the coarsest span, then, on each side, the whole units of the next one, and
    /// so on; what is left at the edges is read row by row. At most two ranges per span and
    /// two row ranges, whatever the window's length.
    pub(crate) fn cut(s: i64, u: i64, spans: &[i64]) -> Pieces {
        fn go(s: i64, u: i64, spans: &[i64], out: &mut Pieces) {
            if s >= u {
                return;
            }
            match spans.split_last() {
                None => out.rows.push((s, u)),
                Some((&l, finer)) => {
                    let (a, b) = (ceil_to(s, l), floor_to(u, l));
                    if a < b {
                        go(s, a, finer, out);
                        out.levels.push((l, a, b));
                        go(b, u, finer, out);
                    } else {
                        go(s, u, finer, out);
                    }
                }
            }
        }
        let mut out = Pieces::default();
        go(s, u, spans, &mut out);
        out
    }
}

/// SQL arms joined by UNION ALL, with their positional parameters in order.
#[derive(Debug, Default)]
pub(crate) struct Arms {
    sql: Vec<String>,
    binds: Vec<i64>,
}

impl Arms {
    /// One arm; `sql` has exactly `binds.len()` `?` placeholders, in order.
    pub(crate) fn push(&mut self, sql: impl Into<String>, binds: &[i64]) {
        self.sql.push(sql.into());
        self.binds.extend_from_slice(binds);
    }

    /// `outer` with `{}` replaced by the arms (by `empty` when there are none).
    pub(crate) fn query_as<T>(
        &self,
        outer: &str,
        empty: &str,
    ) -> sqlx::query::QueryAs<'static, sqlx::Sqlite, T, sqlx::sqlite::SqliteArguments>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>,
    {
        let inner = if self.sql.is_empty() {
            empty.to_owned()
        } else {
            self.sql.join(" UNION ALL ")
        };
        let mut q = sqlx::query_as(AssertSqlSafe(outer.replace("{}", &inner)));
        for b in &self.binds {
            q = q.bind(*b);
        }
        q
    }
}

/// A time window, start inclusive, end exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

impl Window {
    /// `[since, until)`; the start must come before the end.
    pub fn new(since: DateTime<Utc>, until: DateTime<Utc>) -> Result<Window> {
        if since >= until {
            return Err(Error::InvalidInput(format!(
                "the window's start {} is not before its end {}",
                format_time(since),
                format_time(until)
            )));
        }
        Ok(Window { since, until })
    }

    /// The `length` ending at `now`.
    pub fn last(length: Duration, now: DateTime<Utc>) -> Result<Window> {
        let since = now.checked_sub_signed(length).ok_or_else(|| {
            Error::InvalidInput(format!("a window of {length} before {now} is out of range"))
        })?;
        Window::new(since, now)
    }

    pub fn since_us(&self) -> i64 {
        to_micros(self.since)
    }

    pub fn until_us(&self) -> i64 {
        to_micros(self.until)
    }

    pub fn length_us(&self) -> i64 {
        self.until_us() - self.since_us()
    }

    /// The window as JSON-friendly text.
    pub fn describe(&self) -> WindowInfo {
        WindowInfo {
            since: format_time(self.since),
            until: format_time(self.until),
            time_range_ms: self.length_us() / 1000,
        }
    }
}

/// The window as reported in every answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowInfo {
    pub since: String,
    pub until: String,
    pub time_range_ms: i64,
}

pub(crate) fn floor_to(t: i64, step: i64) -> i64 {
    t.div_euclid(step) * step
}

pub(crate) fn ceil_to(t: i64, step: i64) -> i64 {
    let f = floor_to(t, step);
    if f == t { t } else { f.saturating_add(step) }
}

/// Parses a length such as `90s`, `15m`, `1h`, `24h`, `7d`, `2w` (a positive whole number and
/// one unit).
pub fn parse_duration(s: &str) -> Result<Duration> {
    let t = s.trim();
    let bad = || {
        Error::InvalidInput(format!(
            "{s:?} is not a length; use a whole number and a unit: 90s, 15m, 1h, 24h, 7d, 2w"
        ))
    };
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = t.split_at(split);
    let n: i64 = num.parse().map_err(|_| bad())?;
    if n <= 0 {
        return Err(bad());
    }
    let secs = match unit {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    let total = n
        .checked_mul(secs)
        .filter(|t| *t <= 100 * 365 * 86_400)
        .ok_or_else(bad)?;
    Ok(Duration::seconds(total))
}

/// Rates are 0 for empty denominators, never NaN.
pub(crate) fn ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 { num / den } else { 0.0 }
}

/// Analytics over one store's read models.
#[derive(Debug, Clone)]
pub struct Analytics {
    pool: SqlitePool,
    store: Store,
}

impl Analytics {
    pub fn new(store: &Store) -> Analytics {
        Analytics {
            pool: store.read_pool().clone(),
            store: store.clone(),
        }
    }

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Drops every read model and rebuilds it from the events, in one transaction: readers
    /// see the old tables or the new ones, never a half-built state, and a crash part-way
    /// leaves the old ones. Strategy snapshots are dropped too (the healer rebuilds them by
    /// replaying its streams).
    pub async fn rebuild(&self) -> Result<RebuildReport> {
        self.store.rebuild_read_models().await
    }
}

/// What `rebuild` did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RebuildReport {
    pub failures: i64,
    pub failure_hourly: i64,
    pub attempt_hourly: i64,
    pub healing_hourly: i64,
    pub patterns: i64,
    pub predictions: i64,
    pub circuit_transitions: i64,
    pub snapshots_dropped: bool,
}

const REBUILD_SQL: &str = include_str!("rebuild.sql");

/// Recreates the analytics read models from the events on `conn`, which must be inside a
/// write transaction.
pub(crate) async fn rebuild_read_models(conn: &mut SqliteConnection) -> sqlx::Result<()> {
    sqlx::raw_sql(AssertSqlSafe(REBUILD_SQL))
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

/// Row counts of the read models (for reports and tests).
pub(crate) async fn read_model_counts(conn: &mut SqliteConnection) -> sqlx::Result<RebuildReport> {
    let (failures, failure_hourly, attempt_hourly, healing_hourly, patterns, predictions): (
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
    ) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM failures), (SELECT COUNT(*) FROM failure_hourly), \
         (SELECT COUNT(*) FROM attempt_hourly), (SELECT COUNT(*) FROM healing_hourly), \
         (SELECT COUNT(*) FROM patterns), (SELECT COUNT(*) FROM predictions)",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(RebuildReport {
        failures,
        failure_hourly,
        attempt_hourly,
        healing_hourly,
        patterns,
        predictions,
        circuit_transitions: sqlx::query_scalar("SELECT COUNT(*) FROM circuit_transitions")
            .fetch_one(&mut *conn)
            .await?,
        snapshots_dropped: false,
    })
}

/// The read models' tables, their columns, and their canonical row order.
pub(crate) const READ_MODEL_TABLES: &[(&str, &str, &str)] = &[
    (
        "failures",
        "position, failure_id, failure_type, agent_id, task_id, severity, detected_at, attempts, \
         results, successes, last_decision, remediated_position, remediated_at, remediated_by, \
         remediate_us, recovered_position, recovered_at, recovered_how, recover_us, \
         remediate_bucket, recover_bucket",
        "position",
    ),
    (
        "failure_hourly",
        "hour, failure_type, detected, remediated, remediate_us_sum, recovered, recover_us_sum",
        "hour, failure_type",
    ),
    (
        "attempt_hourly",
        "hour, strategy, failure_type, decision, attempts",
        "hour, strategy, failure_type, decision",
    ),
    (
        "healing_hourly",
        "hour, strategy, failure_type, results, successes, duration_sum_ms",
        "hour, strategy, failure_type",
    ),
    (
        "patterns",
        "pattern_id, kind, agent_id, support, confidence, learned_at, position, content",
        "pattern_id",
    ),
    (
        "predictions",
        "prediction_id, agent_id, failure_type, probability, made_at, expected_at, expected_by, \
         pattern_id, position, content",
        "prediction_id",
    ),
    (
        "circuit_transitions",
        "position, strategy, circuit, agent_id, from_state, to_state, at, open_until",
        "position",
    ),
    (
        "preventions",
        "stream_id, prevention_id, proposed_at, proposed_version, proposal, status, \
         decided_version, decided_at, decided_type, decision, executed_version, executed_at, \
         executed, version",
        "stream_id",
    ),
    (
        "failure_minutely",
        "minute, failure_type, detected, remediated, remediate_us_sum, recovered, recover_us_sum",
        "minute, failure_type",
    ),
    (
        "attempt_minutely",
        "minute, strategy, failure_type, decision, attempts",
        "minute, strategy, failure_type, decision",
    ),
    (
        "healing_minutely",
        "minute, strategy, failure_type, results, successes, duration_sum_ms",
        "minute, strategy, failure_type",
    ),
    (
        "agent_rollup",
        "span, start, agent_id, detected",
        "span, start, agent_id",
    ),
    (
        "ttr_histogram",
        "span, start, kind, bucket, n",
        "span, start, kind, bucket",
    ),
    (
        "recovery_pairs",
        "span, detected, recovered, n",
        "span, detected, recovered",
    ),
    (
        "failure_secondly",
        "second, failure_type, detected, remediated, remediate_us_sum, recovered, recover_us_sum",
        "second, failure_type",
    ),
    (
        "attempt_secondly",
        "second, strategy, failure_type, decision, attempts",
        "second, strategy, failure_type, decision",
    ),
    (
        "healing_secondly",
        "second, strategy, failure_type, results, successes, duration_sum_ms",
        "second, strategy, failure_type",
    ),
];

/// One read model's fingerprint: its row count and a SHA-256 over its rows in canonical
/// order. Two databases with equal digests have equal read models.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableDigest {
    pub table: String,
    pub rows: i64,
    pub sha256: String,
}

/// Digests of every read model, streamed row by row (memory stays flat however large they are).
pub async fn read_model_digests(pool: &SqlitePool) -> Result<Vec<TableDigest>> {
    let mut conn = pool.acquire().await?;
    digests_on(&mut conn).await
}

/// [`read_model_digests`] on one connection (inside its transaction, if one is open).
pub(crate) async fn digests_on(conn: &mut SqliteConnection) -> Result<Vec<TableDigest>> {
    use futures_util::TryStreamExt;
    use sha2::{Digest, Sha256};
    let mut out = Vec::new();
    for (table, columns, order) in READ_MODEL_TABLES {
        let sql = format!("SELECT json_array({columns}) FROM {table} ORDER BY {order}");
        let mut rows = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql)).fetch(&mut *conn);
        let mut hash = Sha256::new();
        let mut n = 0i64;
        while let Some(row) = rows.try_next().await? {
            hash.update(row.as_bytes());
            hash.update(b"\n");
            n += 1;
        }
        let digest = hash.finalize();
        out.push(TableDigest {
            table: (*table).to_owned(),
            rows: n,
            sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{DAY_US, HOUR_US, MINUTE_US, Pieces};

    /// Every window is cut into aligned whole units and at most two partial-minute ranges,
    /// covering it exactly once.
    #[test]
    fn cuts_cover_the_window_exactly() {
        let spans = [MINUTE_US, HOUR_US, DAY_US];
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for i in 0..20_000 {
            let s = 1_700_000_000_000_000 + next(10 * DAY_US as u64) as i64;
            let s = if i % 3 == 0 { s - s % HOUR_US } else { s };
            let len = 1 + next([60_000_000, HOUR_US as u64, 9 * DAY_US as u64][i % 3]) as i64;
            let u = s + len;
            let p = Pieces::cut(s, u, &spans);
            let mut ranges: Vec<(i64, i64)> = p.rows.clone();
            for &(span, a, b) in &p.levels {
                assert!(a < b && a % span == 0 && b % span == 0, "{s} {u} {p:?}");
                ranges.push((a, b));
            }
            ranges.sort();
            let mut at = s;
            for (a, b) in ranges {
                assert_eq!(a, at, "{s} {u} {p:?}");
                at = b;
            }
            assert_eq!(at, u);
            assert!(p.rows.len() <= 2);
            assert!(p.rows.iter().map(|(a, b)| b - a).sum::<i64>() < 2 * MINUTE_US);
            for span in spans {
                assert!(p.levels.iter().filter(|l| l.0 == span).count() <= 2);
            }
        }
    }
}
