//! Overall statistics over a window, and MTTR as a time series.
//!
//! Definitions (the upstream design measured MTTR as the mean duration of successful heal
//! calls; here it is what the name says):
//!
//! - `total_failures`: failures detected in the window;
//! - `total_healings`: healing results (`healing_completed`) recorded in the window, successful
//!   or not; `success_rate` and `avg_healing_time_ms` are over those;
//! - `mttr_ms`: the mean time from detection to resolution over the failures *resolved* in the
//!   window (wherever their detection lies), with nearest-rank percentiles;
//! - `unresolved`: failures detected in the window and not resolved before its end.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Analytics, Window, WindowInfo, ratio, round};
use crate::error::{Error, Result};
use crate::time::{format_time, from_micros};

/// Overall statistics for a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub window: WindowInfo,
    pub total_failures: i64,
    pub total_healings: i64,
    pub successful_healings: i64,
    pub success_rate: f64,
    pub avg_healing_time_ms: f64,
    pub resolved: i64,
    pub mttr_ms: f64,
    pub mttr_p50_ms: f64,
    pub mttr_p90_ms: f64,
    pub mttr_p99_ms: f64,
    pub unresolved: i64,
    /// Healing results per strategy.
    pub by_strategy: BTreeMap<String, i64>,
    /// Failures detected per type.
    pub by_failure_type: BTreeMap<String, i64>,
}

/// The SQL for the failure side of the stats: detections and resolutions per type, from the
/// hourly rollup for whole hours and from the per-failure model at the edges. Times to recover
/// are added as floating point (`TOTAL`): an integer sum of times that may span millennia could
/// overflow. Parameters: since, h1, h2, until.
const FAILURES_BY_TYPE: &str = "\
SELECT failure_type, SUM(d), SUM(r), TOTAL(t) FROM (
    SELECT failure_type, detected AS d, resolved AS r, ttr_sum_us AS t
    FROM failure_hourly WHERE hour >= ?2 AND hour < ?3
    UNION ALL
    SELECT failure_type, 1, 0, 0 FROM failures WHERE detected_at >= ?1 AND detected_at < ?2
    UNION ALL
    SELECT failure_type, 1, 0, 0 FROM failures WHERE detected_at >= ?3 AND detected_at < ?4
    UNION ALL
    SELECT failure_type, 0, 1, ttr_us FROM failures WHERE resolved_at >= ?1 AND resolved_at < ?2
    UNION ALL
    SELECT failure_type, 0, 1, ttr_us FROM failures WHERE resolved_at >= ?3 AND resolved_at < ?4
) GROUP BY failure_type";

/// Healing results per strategy and failure type, the same way (parameters as above); the
/// partial hours' results are read from the log and, for archived events, from
/// `archived_facts`.
pub(crate) const RESULTS_BY_STRATEGY_TYPE: &str = concat!(
    "SELECT strategy, failure_type, SUM(n), SUM(s), SUM(d) FROM (
    SELECT strategy, failure_type, results AS n, successes AS s, duration_sum_ms AS d
    FROM healing_hourly WHERE hour >= ?2 AND hour < ?3
    UNION ALL
    SELECT e.strategy, ",
    healing_failure_type!(),
    ", 1, e.success, MAX(0, COALESCE(e.duration_ms, 0))
    FROM events e WHERE e.occurred_at >= ?1 AND e.occurred_at < ?2 AND ",
    counted_result!(),
    "
    UNION ALL
    SELECT e.strategy, ",
    healing_failure_type!(),
    ", 1, e.success, MAX(0, COALESCE(e.duration_ms, 0))
    FROM events e WHERE e.occurred_at >= ?3 AND e.occurred_at < ?4 AND ",
    counted_result!(),
    "
    UNION ALL
    SELECT strategy, failure_type, 1, success, duration_ms FROM archived_facts
    WHERE event_type = 'healing_completed' AND occurred_at >= ?1 AND occurred_at < ?2
    UNION ALL
    SELECT strategy, failure_type, 1, success, duration_ms FROM archived_facts
    WHERE event_type = 'healing_completed' AND occurred_at >= ?3 AND occurred_at < ?4
) GROUP BY strategy, failure_type"
);

/// Nearest-rank percentiles of the time to recover over failures resolved in `[?1, ?2)`: the
/// times sorted once (materialized), then the ranks ?3, ?4, ?5 (0-based) picked from them.
/// Window functions over the same rows were five times slower.
const MTTR_PERCENTILES: &str = "\
WITH r AS MATERIALIZED (
    SELECT ttr_us FROM failures WHERE resolved_at >= ?1 AND resolved_at < ?2 ORDER BY ttr_us
)
SELECT (SELECT ttr_us FROM r LIMIT 1 OFFSET ?3),
       (SELECT ttr_us FROM r LIMIT 1 OFFSET ?4),
       (SELECT ttr_us FROM r LIMIT 1 OFFSET ?5)";

/// The 0-based nearest rank of percentile `p` among `n` values.
fn rank(n: i64, p: i64) -> i64 {
    ((n * p + 99) / 100).max(1) - 1
}

/// One healing-results row: strategy, failure type, results, successes, summed duration.
pub(crate) type ResultRow = (String, String, i64, i64, i64);

impl Analytics {
    /// Overall statistics for the window.
    pub async fn stats(&self, window: &Window) -> Result<Stats> {
        let sp = window.split();
        // Independent queries run at once, each on its own reader connection.
        let by_type = async {
            sqlx::query_as::<_, (String, i64, i64, f64)>(FAILURES_BY_TYPE)
                .bind(sp.since)
                .bind(sp.h1)
                .bind(sp.h2)
                .bind(sp.until)
                .fetch_all(self.pool())
                .await
                .map_err(crate::Error::from)
        };
        let unresolved = async {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM failures WHERE detected_at >= ?1 AND detected_at < ?2 \
                 AND (resolved_at IS NULL OR resolved_at >= ?2)",
            )
            .bind(sp.since)
            .bind(sp.until)
            .fetch_one(self.pool())
            .await
            .map_err(crate::Error::from)
        };
        let (rows, results, unresolved) =
            tokio::try_join!(by_type, self.results_by_strategy_type(window), unresolved)?;
        let mut by_failure_type = BTreeMap::new();
        let (mut detected, mut resolved, mut ttr_sum) = (0i64, 0i64, 0f64);
        for (t, d, r, s) in rows {
            if d > 0 {
                by_failure_type.insert(t, d);
            }
            detected += d;
            resolved += r;
            ttr_sum += s;
        }

        let mut by_strategy = BTreeMap::new();
        let (mut n, mut ok, mut dur) = (0i64, 0i64, 0i64);
        for (s, _, rn, rs, rd) in results {
            *by_strategy.entry(s).or_insert(0) += rn;
            n += rn;
            ok += rs;
            dur += rd;
        }

        let (p50, p90, p99): (Option<i64>, Option<i64>, Option<i64>) = if resolved == 0 {
            (None, None, None)
        } else {
            sqlx::query_as(MTTR_PERCENTILES)
                .bind(sp.since)
                .bind(sp.until)
                .bind(rank(resolved, 50))
                .bind(rank(resolved, 90))
                .bind(rank(resolved, 99))
                .fetch_one(self.pool())
                .await?
        };

        let ms = |us: Option<i64>| us.map_or(0.0, |v| v as f64 / 1000.0);
        Ok(Stats {
            window: window.describe(),
            total_failures: detected,
            total_healings: n,
            successful_healings: ok,
            success_rate: round(ratio(ok as f64, n as f64), 4),
            avg_healing_time_ms: round(ratio(dur as f64, n as f64), 3),
            resolved,
            mttr_ms: round(ratio(ttr_sum, resolved as f64) / 1000.0, 3),
            mttr_p50_ms: ms(p50),
            mttr_p90_ms: ms(p90),
            mttr_p99_ms: ms(p99),
            unresolved,
            by_strategy,
            by_failure_type,
        })
    }

    /// Healing results in the window per (strategy, failure type).
    pub(crate) async fn results_by_strategy_type(&self, window: &Window) -> Result<Vec<ResultRow>> {
        let sp = window.split();
        Ok(sqlx::query_as(RESULTS_BY_STRATEGY_TYPE)
            .bind(sp.since)
            .bind(sp.h1)
            .bind(sp.h2)
            .bind(sp.until)
            .fetch_all(self.pool())
            .await?)
    }

    /// MTTR as a time series: failures resolved in the window, grouped into buckets of
    /// `bucket` (aligned to the Unix epoch, so `1d` buckets start at midnight UTC) and, when
    /// asked, by failure type, resolving strategy or agent.
    pub async fn mttr_series(
        &self,
        window: &Window,
        by: Option<MttrBy>,
        bucket: chrono::Duration,
    ) -> Result<Vec<MttrPoint>> {
        let b = bucket_us(bucket)?;
        let key = match by {
            None => "''",
            Some(MttrBy::FailureType) => "failure_type",
            Some(MttrBy::Strategy) => "COALESCE(resolved_by, '')",
            Some(MttrBy::Agent) => "COALESCE(agent_id, '')",
        };
        let sql = format!(
            "WITH r AS ( \
               SELECT (resolved_at - ((resolved_at % ?3) + ?3) % ?3) AS bucket, {key} AS k, ttr_us, \
                 ROW_NUMBER() OVER (PARTITION BY (resolved_at - ((resolved_at % ?3) + ?3) % ?3), {key} \
                                    ORDER BY ttr_us) AS rn, \
                 COUNT(*) OVER (PARTITION BY (resolved_at - ((resolved_at % ?3) + ?3) % ?3), {key}) AS n \
               FROM failures WHERE resolved_at >= ?1 AND resolved_at < ?2) \
             SELECT bucket, k, COUNT(*), TOTAL(ttr_us), \
               MAX(CASE WHEN rn = MAX(1, (n * 50 + 99) / 100) THEN ttr_us END), \
               MAX(CASE WHEN rn = MAX(1, (n * 90 + 99) / 100) THEN ttr_us END), \
               MAX(ttr_us) \
             FROM r GROUP BY bucket, k ORDER BY bucket, k"
        );
        let rows: Vec<SeriesRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(window.since_us())
            .bind(window.until_us())
            .bind(b)
            .fetch_all(self.pool())
            .await?;
        rows.into_iter()
            .map(|(bucket, k, n, sum, p50, p90, max)| {
                let ms = |us: Option<i64>| us.map_or(0.0, |v| v as f64 / 1000.0);
                Ok(MttrPoint {
                    bucket_start: format_time(from_micros(bucket)?),
                    group: by.map(|_| k),
                    resolved: n,
                    mttr_ms: round(ratio(sum, n as f64) / 1000.0, 3),
                    p50_ms: ms(p50),
                    p90_ms: ms(p90),
                    max_ms: ms(max),
                })
            })
            .collect()
    }
}

impl Analytics {
    /// MTTR per bucket without percentiles (count, mean, max): what the dashboard charts. A
    /// plain pass over the resolution index, several times cheaper than [`Self::mttr_series`].
    pub async fn mttr_means(
        &self,
        window: &Window,
        bucket: chrono::Duration,
    ) -> Result<Vec<MttrPoint>> {
        let b = bucket_us(bucket)?;
        let rows: Vec<(i64, i64, f64, i64)> = sqlx::query_as(
            "SELECT (resolved_at - ((resolved_at % ?3) + ?3) % ?3) AS bucket, COUNT(*), \
                    TOTAL(ttr_us), MAX(ttr_us) \
             FROM failures WHERE resolved_at >= ?1 AND resolved_at < ?2 \
             GROUP BY bucket ORDER BY bucket",
        )
        .bind(window.since_us())
        .bind(window.until_us())
        .bind(b)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|(bucket, n, sum, max)| {
                Ok(MttrPoint {
                    bucket_start: format_time(from_micros(bucket)?),
                    group: None,
                    resolved: n,
                    mttr_ms: round(ratio(sum, n as f64) / 1000.0, 3),
                    p50_ms: 0.0,
                    p90_ms: 0.0,
                    max_ms: max as f64 / 1000.0,
                })
            })
            .collect()
    }
}

/// A bucket length in microseconds; it must be positive.
fn bucket_us(bucket: chrono::Duration) -> Result<i64> {
    bucket.num_microseconds().filter(|b| *b > 0).ok_or_else(|| {
        Error::InvalidInput(format!("a bucket of {bucket} is not a positive length"))
    })
}

/// What an MTTR series is grouped by, besides time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MttrBy {
    FailureType,
    Strategy,
    Agent,
}

/// One bucket (and group) of an MTTR series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MttrPoint {
    pub bucket_start: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub resolved: i64,
    pub mttr_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub max_ms: f64,
}

type SeriesRow = (i64, String, i64, f64, Option<i64>, Option<i64>, Option<i64>);
