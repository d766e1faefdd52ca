//! Overall statistics over a window, and MTTR as a time series.
//!
//! Definitions (the upstream design measured MTTR as the mean duration of successful heal
//! calls; here it is what the name says, the mean time to *recovery*):
//!
//! - `total_failures`: failures detected in the window;
//! - `total_healings`: healing results (`healing_completed`) recorded in the window, successful
//!   or not; `success_rate` and `avg_healing_time_ms` are over those;
//! - `remediated`, `mttr_remediate_ms` (and percentiles): failures *remediated* in the window
//!   (the healing actions succeeded: `failure_resolved`), wherever their detection lies, and
//!   the mean time from detection to remediation;
//! - `recovered`, `mttr_recover_ms` (and percentiles): failures *recovered* in the window
//!   (evidence that the agent or task works again: `failure_recovered`) and the mean time from
//!   detection to recovery; `resolved`, `mttr_ms` and `mttr_p50/p90/p99_ms` are the same
//!   figures under the names MTTR has always had;
//! - `unrecovered` (also `unresolved`): failures detected in the window and not recovered
//!   before its end.
//!
//! Percentiles are nearest-rank.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Analytics, Window, WindowInfo, ratio};
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
    /// Failures remediated in the window, and the time from detection to remediation.
    pub remediated: i64,
    pub mttr_remediate_ms: f64,
    pub mttr_remediate_p50_ms: f64,
    pub mttr_remediate_p90_ms: f64,
    pub mttr_remediate_p99_ms: f64,
    /// Failures recovered in the window, and the time from detection to recovery.
    pub recovered: i64,
    pub mttr_recover_ms: f64,
    pub mttr_recover_p50_ms: f64,
    pub mttr_recover_p90_ms: f64,
    pub mttr_recover_p99_ms: f64,
    /// Failures detected in the window and not recovered before its end.
    pub unrecovered: i64,
    /// `recovered`, `mttr_recover_ms` and its percentiles, `unrecovered`: MTTR is the time to
    /// recover.
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

/// The SQL for the failure side of the stats: detections, remediations and recoveries per
/// type, from the hourly rollup for whole hours and from the per-failure model at the edges.
/// Times to remediate and recover are added as floating point (`TOTAL`): an integer sum of
/// times that may span millennia could overflow. Parameters: since, h1, h2, until.
const FAILURES_BY_TYPE: &str = "\
SELECT failure_type, SUM(d), SUM(m), TOTAL(mt), SUM(r), TOTAL(rt) FROM (
    SELECT failure_type, detected AS d, remediated AS m, remediate_us_sum AS mt,
           recovered AS r, recover_us_sum AS rt
    FROM failure_hourly WHERE hour >= ?2 AND hour < ?3
    UNION ALL
    SELECT failure_type, 1, 0, 0, 0, 0 FROM failures WHERE detected_at >= ?1 AND detected_at < ?2
    UNION ALL
    SELECT failure_type, 1, 0, 0, 0, 0 FROM failures WHERE detected_at >= ?3 AND detected_at < ?4
    UNION ALL
    SELECT failure_type, 0, 1, remediate_us, 0, 0 FROM failures
    WHERE remediated_at >= ?1 AND remediated_at < ?2
    UNION ALL
    SELECT failure_type, 0, 1, remediate_us, 0, 0 FROM failures
    WHERE remediated_at >= ?3 AND remediated_at < ?4
    UNION ALL
    SELECT failure_type, 0, 0, 0, 1, recover_us FROM failures
    WHERE recovered_at >= ?1 AND recovered_at < ?2
    UNION ALL
    SELECT failure_type, 0, 0, 0, 1, recover_us FROM failures
    WHERE recovered_at >= ?3 AND recovered_at < ?4
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

/// What an MTTR is measured to: the failure's remediation or its recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MttrTo {
    /// Detection to recovery (evidence that the agent or task works again): MTTR proper.
    #[default]
    Recover,
    /// Detection to remediation (the healing actions succeeded).
    Remediate,
}

impl MttrTo {
    /// The `failures` columns: the instant, the time from detection, the strategy.
    fn columns(self) -> (&'static str, &'static str) {
        match self {
            MttrTo::Recover => ("recovered_at", "recover_us"),
            MttrTo::Remediate => ("remediated_at", "remediate_us"),
        }
    }
}

/// Nearest-rank percentiles of the time to remediate or recover (`{us}`) over failures done
/// (`{at}`) in `[?1, ?2)`: the times sorted once (materialized), then the ranks ?3, ?4, ?5
/// (0-based) picked from them. Window functions over the same rows were five times slower.
fn percentiles_sql(to: MttrTo) -> String {
    let (at, us) = to.columns();
    format!(
        "WITH r AS MATERIALIZED (
            SELECT {us} AS t FROM failures WHERE {at} >= ?1 AND {at} < ?2 ORDER BY {us}
        )
        SELECT (SELECT t FROM r LIMIT 1 OFFSET ?3),
               (SELECT t FROM r LIMIT 1 OFFSET ?4),
               (SELECT t FROM r LIMIT 1 OFFSET ?5)"
    )
}

/// The 0-based nearest rank of percentile `p` among `n` values.
fn rank(n: i64, p: i64) -> i64 {
    ((n * p + 99) / 100).max(1) - 1
}

/// One healing-results row: strategy, failure type, results, successes, summed duration.
pub(crate) type ResultRow = (String, String, i64, i64, i64);

/// Count, mean and nearest-rank percentiles (p50, p90, p99) of a time from detection, in ms.
#[derive(Debug, Clone, Copy, Default)]
struct TimeTo {
    n: i64,
    mean: f64,
    p50: f64,
    p90: f64,
    p99: f64,
}

impl Analytics {
    /// Overall statistics for the window.
    pub async fn stats(&self, window: &Window) -> Result<Stats> {
        let sp = window.split();
        // Independent queries run at once, each on its own reader connection.
        let by_type = async {
            sqlx::query_as::<_, (String, i64, i64, f64, i64, f64)>(FAILURES_BY_TYPE)
                .bind(sp.since)
                .bind(sp.h1)
                .bind(sp.h2)
                .bind(sp.until)
                .fetch_all(self.pool())
                .await
                .map_err(crate::Error::from)
        };
        let unrecovered = async {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM failures WHERE detected_at >= ?1 AND detected_at < ?2 \
                 AND (recovered_at IS NULL OR recovered_at >= ?2)",
            )
            .bind(sp.since)
            .bind(sp.until)
            .fetch_one(self.pool())
            .await
            .map_err(crate::Error::from)
        };
        let (rows, results, unrecovered) =
            tokio::try_join!(by_type, self.results_by_strategy_type(window), unrecovered)?;
        let mut by_failure_type = BTreeMap::new();
        let (mut detected, mut remediated, mut remediate_sum, mut recovered, mut recover_sum) =
            (0i64, 0i64, 0f64, 0i64, 0f64);
        for (t, d, m, mt, r, rt) in rows {
            if d > 0 {
                by_failure_type.insert(t, d);
            }
            detected += d;
            remediated += m;
            remediate_sum += mt;
            recovered += r;
            recover_sum += rt;
        }

        let mut by_strategy = BTreeMap::new();
        let (mut n, mut ok, mut dur) = (0i64, 0i64, 0i64);
        for (s, _, rn, rs, rd) in results {
            *by_strategy.entry(s).or_insert(0) += rn;
            n += rn;
            ok += rs;
            dur += rd;
        }

        let (remediate, recover) = tokio::try_join!(
            self.time_to(window, MttrTo::Remediate, remediated, remediate_sum),
            self.time_to(window, MttrTo::Recover, recovered, recover_sum),
        )?;
        Ok(Stats {
            window: window.describe(),
            total_failures: detected,
            total_healings: n,
            successful_healings: ok,
            success_rate: ratio(ok as f64, n as f64),
            avg_healing_time_ms: ratio(dur as f64, n as f64),
            remediated: remediate.n,
            mttr_remediate_ms: remediate.mean,
            mttr_remediate_p50_ms: remediate.p50,
            mttr_remediate_p90_ms: remediate.p90,
            mttr_remediate_p99_ms: remediate.p99,
            recovered: recover.n,
            mttr_recover_ms: recover.mean,
            mttr_recover_p50_ms: recover.p50,
            mttr_recover_p90_ms: recover.p90,
            mttr_recover_p99_ms: recover.p99,
            unrecovered,
            resolved: recover.n,
            mttr_ms: recover.mean,
            mttr_p50_ms: recover.p50,
            mttr_p90_ms: recover.p90,
            mttr_p99_ms: recover.p99,
            unresolved: unrecovered,
            by_strategy,
            by_failure_type,
        })
    }

    /// The mean (from the rollups' sum) and percentiles of the time to remediate or recover
    /// over the `n` failures done in the window.
    async fn time_to(&self, window: &Window, to: MttrTo, n: i64, sum_us: f64) -> Result<TimeTo> {
        if n == 0 {
            return Ok(TimeTo::default());
        }
        let (p50, p90, p99): (Option<i64>, Option<i64>, Option<i64>) =
            sqlx::query_as(sqlx::AssertSqlSafe(percentiles_sql(to)))
                .bind(window.since_us())
                .bind(window.until_us())
                .bind(rank(n, 50))
                .bind(rank(n, 90))
                .bind(rank(n, 99))
                .fetch_one(self.pool())
                .await?;
        let ms = |us: Option<i64>| us.map_or(0.0, |v| v as f64 / 1000.0);
        Ok(TimeTo {
            n,
            mean: ratio(sum_us, n as f64) / 1000.0,
            p50: ms(p50),
            p90: ms(p90),
            p99: ms(p99),
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

    /// MTTR as a time series: failures recovered (or, with [`MttrTo::Remediate`], remediated)
    /// in the window, grouped into buckets of `bucket` (aligned to the Unix epoch, so `1d`
    /// buckets start at midnight UTC) and, when asked, by failure type, remediating strategy
    /// or agent.
    pub async fn mttr_series(
        &self,
        window: &Window,
        to: MttrTo,
        by: Option<MttrBy>,
        bucket: chrono::Duration,
    ) -> Result<Vec<MttrPoint>> {
        let b = bucket_us(bucket)?;
        let (at, us) = to.columns();
        let key = match by {
            None => "''",
            Some(MttrBy::FailureType) => "failure_type",
            Some(MttrBy::Strategy) => "COALESCE(remediated_by, '')",
            Some(MttrBy::Agent) => "COALESCE(agent_id, '')",
        };
        let sql = format!(
            "WITH r AS ( \
               SELECT ({at} - (({at} % ?3) + ?3) % ?3) AS bucket, {key} AS k, {us} AS t, \
                 ROW_NUMBER() OVER (PARTITION BY ({at} - (({at} % ?3) + ?3) % ?3), {key} \
                                    ORDER BY {us}) AS rn, \
                 COUNT(*) OVER (PARTITION BY ({at} - (({at} % ?3) + ?3) % ?3), {key}) AS n \
               FROM failures WHERE {at} >= ?1 AND {at} < ?2) \
             SELECT bucket, k, COUNT(*), TOTAL(t), \
               MAX(CASE WHEN rn = MAX(1, (n * 50 + 99) / 100) THEN t END), \
               MAX(CASE WHEN rn = MAX(1, (n * 90 + 99) / 100) THEN t END), \
               MAX(t) \
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
                    mttr_ms: ratio(sum, n as f64) / 1000.0,
                    p50_ms: ms(p50),
                    p90_ms: ms(p90),
                    max_ms: ms(max),
                })
            })
            .collect()
    }
}

impl Analytics {
    /// The time to recover per bucket without percentiles (count, mean, max): what the
    /// dashboard charts. A plain pass over the recovery index, several times cheaper than
    /// [`Self::mttr_series`].
    pub async fn mttr_means(
        &self,
        window: &Window,
        bucket: chrono::Duration,
    ) -> Result<Vec<MttrPoint>> {
        let b = bucket_us(bucket)?;
        let rows: Vec<(i64, i64, f64, i64)> = sqlx::query_as(
            "SELECT (recovered_at - ((recovered_at % ?3) + ?3) % ?3) AS bucket, COUNT(*), \
                    TOTAL(recover_us), MAX(recover_us) \
             FROM failures WHERE recovered_at >= ?1 AND recovered_at < ?2 \
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
                    mttr_ms: ratio(sum, n as f64) / 1000.0,
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
    /// The strategy that remediated the failure (none for a failure that recovered without
    /// a remediation).
    Strategy,
    Agent,
}

/// One bucket (and group) of an MTTR series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MttrPoint {
    pub bucket_start: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The failures recovered (or remediated, for a series to remediation) in the bucket.
    pub resolved: i64,
    pub mttr_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub max_ms: f64,
}

type SeriesRow = (i64, String, i64, f64, Option<i64>, Option<i64>, Option<i64>);
