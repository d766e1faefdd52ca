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
//! Percentiles are nearest-rank: exact over at most [`EXACT_MAX`] times, else read from the
//! merged per-second, per-minute, per-hour and per-day histograms, each within 1 % of the
//! exact value ([`super::hist`]); `exact` says which. Every figure is read from rollups for
//! the window's whole days, hours, minutes and seconds and row by row only for the partial
//! seconds at its edges (the series grouped by type, strategy or agent, and the exact
//! percentiles, read the failures done in the window row by row).

use std::collections::BTreeMap;

use serde::Serialize;

use super::hist::Histogram;
use super::{
    Analytics, Arms, DAY_US, HOUR_US, MINUTE_US, Pieces, SECOND_US, Window, WindowInfo, fact_unit,
    floor_to, ratio,
};
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
    /// Whether the percentiles above are exact (nearest rank over the times themselves, when
    /// the window holds at most [`EXACT_MAX`] of them) or read from the merged histograms
    /// (each within 1 % of the exact value; see [`super::hist`]). Counts and means are always exact.
    pub exact: bool,
    /// Healing results per strategy.
    pub by_strategy: BTreeMap<String, i64>,
    /// Failures detected per type.
    pub by_failure_type: BTreeMap<String, i64>,
}

/// Percentiles over at most this many times are exact (read row by row, nearest rank);
/// above it they come from the merged histograms, within [`super::hist::RELATIVE_ERROR`].
pub const EXACT_MAX: i64 = 2_000;

/// The spans of the failure and healing rollups (`*_secondly`, `*_minutely`, `*_hourly`) and
/// of the detection/recovery pairs.
pub(crate) const FACT_SPANS: &[i64] = &[SECOND_US, MINUTE_US, HOUR_US];
/// The spans of the histograms and of the per-agent rollup.
pub(crate) const ALL_SPANS: &[i64] = &[SECOND_US, MINUTE_US, HOUR_US, DAY_US];

/// The arms for the failure side of the stats: detections, remediations and recoveries per
/// type, from the hourly, minute and second rollups for whole units and from the per-failure
/// model at the edges. Columns: failure_type, d, m, mt, r, rt.
pub(crate) fn failure_arms(p: &Pieces) -> Arms {
    let mut arms = Arms::default();
    for &(span, a, b) in &p.levels {
        let (unit, col) = fact_unit(span);
        arms.push(
            format!(
                "SELECT failure_type, detected AS d, remediated AS m, remediate_us_sum AS mt, \
                 recovered AS r, recover_us_sum AS rt FROM failure_{unit} \
                 WHERE {col} >= ? AND {col} < ?"
            ),
            &[a, b],
        );
    }
    for &(a, b) in &p.rows {
        arms.push(
            "SELECT failure_type, 1 AS d, 0 AS m, 0 AS mt, 0 AS r, 0 AS rt FROM failures \
             WHERE detected_at >= ? AND detected_at < ?",
            &[a, b],
        );
        arms.push(
            "SELECT failure_type, 0 AS d, 1 AS m, remediate_us AS mt, 0 AS r, 0 AS rt \
             FROM failures WHERE remediated_at >= ? AND remediated_at < ?",
            &[a, b],
        );
        arms.push(
            "SELECT failure_type, 0 AS d, 0 AS m, 0 AS mt, 1 AS r, recover_us AS rt \
             FROM failures WHERE recovered_at >= ? AND recovered_at < ?",
            &[a, b],
        );
    }
    arms
}

/// Detections, remediations and recoveries per type; times added as floating point (`TOTAL`):
/// an integer sum of times that may span millennia could overflow.
const FAILURES_BY_TYPE: &str = "SELECT failure_type, SUM(d), SUM(m), TOTAL(mt), SUM(r), TOTAL(rt) \
     FROM ({}) GROUP BY failure_type";

/// The arms for healing results per strategy and failure type (columns strategy,
/// failure_type, n, s, d): the rollups for whole units, the log and `archived_facts` at the
/// edges.
fn result_arms(p: &Pieces) -> Arms {
    let mut arms = Arms::default();
    for &(span, a, b) in &p.levels {
        let (unit, col) = fact_unit(span);
        arms.push(
            format!(
                "SELECT strategy, failure_type, results AS n, successes AS s, \
                 duration_sum_ms AS d FROM healing_{unit} WHERE {col} >= ? AND {col} < ?"
            ),
            &[a, b],
        );
    }
    for &(a, b) in &p.rows {
        arms.push(
            concat!(
                "SELECT e.strategy AS strategy, ",
                healing_failure_type!(),
                " AS failure_type, 1 AS n, e.success AS s, MAX(0, COALESCE(e.duration_ms, 0)) AS d \
                 FROM events e WHERE e.occurred_at >= ? AND e.occurred_at < ? AND ",
                counted_result!()
            ),
            &[a, b],
        );
        arms.push(
            "SELECT strategy, failure_type, 1 AS n, success AS s, duration_ms AS d \
             FROM archived_facts WHERE event_type = 'healing_completed' \
             AND occurred_at >= ? AND occurred_at < ?",
            &[a, b],
        );
    }
    arms
}

/// The failures detected in the window (cut into `p`) that recovered before its end `u`,
/// from the detection/recovery pairs. For detections in whole units of a span, the pairs of
/// that span with the recovery in a unit before `u`'s, then, for each finer span, the pairs of
/// that span with the recovery between `u`'s unit of the next coarser span and `u`'s own unit
/// of this one (so every recovery before `u`'s second is counted once, at the coarsest span
/// that tells it came before `u`); recoveries in `u`'s partial second, and detections in the
/// partial seconds at the edges, row by row. Column: c.
fn recovered_by_end_arms(p: &Pieces, u: i64) -> Arms {
    let mut arms = Arms::default();
    for &(span, a, b) in &p.levels {
        arms.push(
            "SELECT n AS c FROM recovery_pairs \
             WHERE span = ? AND detected >= ? AND detected < ? AND recovered < ?",
            &[span, a, b, floor_to(u, span)],
        );
        let finer: Vec<i64> = FACT_SPANS.iter().copied().filter(|f| *f < span).collect();
        let mut coarser = span;
        for &f in finer.iter().rev() {
            let (lo, hi) = (floor_to(u, coarser), floor_to(u, f));
            if lo < hi {
                arms.push(
                    "SELECT n AS c FROM recovery_pairs INDEXED BY recovery_pairs_by_recovered \
                     WHERE span = ? AND recovered >= ? AND recovered < ? \
                     AND detected >= ? AND detected < ?",
                    &[f, lo, hi, a, b],
                );
            }
            coarser = f;
        }
    }
    if let (Some(a), Some(b)) = (
        p.levels.iter().map(|l| l.1).min(),
        p.levels.iter().map(|l| l.2).max(),
    ) {
        // The whole units are contiguous: one range of detections. The recoveries of the
        // partial second are the few rows: `+` keeps SQLite from walking the detections
        // instead (the whole window's, through the covering index on them).
        arms.push(
            "SELECT 1 AS c FROM failures WHERE recovered_at >= ? AND recovered_at < ? \
             AND +detected_at >= ? AND +detected_at < ?",
            &[floor_to(u, SECOND_US), u, a, b],
        );
    }
    for &(a, b) in &p.rows {
        arms.push(
            "SELECT 1 AS c FROM failures \
             WHERE detected_at >= ? AND detected_at < ? AND recovered_at < ?",
            &[a, b, u],
        );
    }
    arms
}

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
    fn kind(self) -> &'static str {
        match self {
            MttrTo::Recover => "recover",
            MttrTo::Remediate => "remediate",
        }
    }

    /// The rollups' columns: how many, and their summed time.
    fn rollup_columns(self) -> (&'static str, &'static str) {
        match self {
            MttrTo::Recover => ("recovered", "recover_us_sum"),
            MttrTo::Remediate => ("remediated", "remediate_us_sum"),
        }
    }

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

/// The arms of a histogram of the time to remediate or recover over failures done in the
/// window cut into `p` (the rollup for whole units, the times bucketed row by row at the
/// edges), each row tagged with its series bucket of `b` microseconds (0 for none). Columns:
/// sb, bk, c.
fn histogram_arms(p: &Pieces, to: MttrTo, b: i64) -> Arms {
    let (at, _) = to.columns();
    let kind = to.kind();
    let sb = |col: &str| {
        if b > 0 {
            format!("({col} - (({col} % {b}) + {b}) % {b})")
        } else {
            "0".to_owned()
        }
    };
    let mut arms = Arms::default();
    for &(span, lo, hi) in &p.levels {
        arms.push(
            format!(
                "SELECT {} AS sb, bucket AS bk, n AS c FROM ttr_histogram \
                 WHERE span = ? AND kind = '{kind}' AND start >= ? AND start < ?",
                sb("start")
            ),
            &[span, lo, hi],
        );
    }
    for &(lo, hi) in &p.rows {
        arms.push(
            format!(
                "SELECT {} AS sb, {kind}_bucket AS bk, 1 AS c FROM failures \
                 WHERE {at} >= ? AND {at} < ?",
                sb(at)
            ),
            &[lo, hi],
        );
    }
    arms
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
    exact: bool,
    n: i64,
    mean: f64,
    p50: f64,
    p90: f64,
    p99: f64,
}

impl Analytics {
    /// Overall statistics for the window.
    pub async fn stats(&self, window: &Window) -> Result<Stats> {
        let (s, u) = (window.since_us(), window.until_us());
        let p = Pieces::cut(s, u, FACT_SPANS);
        let failure = failure_arms(&p);
        let recovered_by_end = recovered_by_end_arms(&p, u);
        // Independent queries run at once, each on its own reader connection.
        let by_type = async {
            failure
                .query_as::<(String, i64, i64, f64, i64, f64)>(FAILURES_BY_TYPE, "")
                .fetch_all(self.pool())
                .await
                .map_err(crate::Error::from)
        };
        let recovered_by_end = async {
            recovered_by_end
                .query_as::<(i64,)>("SELECT COALESCE(SUM(c), 0) FROM ({})", "")
                .fetch_one(self.pool())
                .await
                .map(|r| r.0)
                .map_err(crate::Error::from)
        };
        let (rows, results, recovered_by_end) = tokio::try_join!(
            by_type,
            self.results_by_strategy_type(window),
            recovered_by_end
        )?;
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
        let unrecovered = detected - recovered_by_end;

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
            exact: remediate.exact && recover.exact,
            by_strategy,
            by_failure_type,
        })
    }

    /// The mean (from the rollups' sum) and percentiles of the time to remediate or recover
    /// over the `n` failures done in the window: exact up to [`EXACT_MAX`] of them, else from
    /// the histograms.
    async fn time_to(&self, window: &Window, to: MttrTo, n: i64, sum_us: f64) -> Result<TimeTo> {
        if n == 0 {
            return Ok(TimeTo {
                exact: true,
                ..TimeTo::default()
            });
        }
        let ms = |us: Option<i64>| us.map_or(0.0, |v| v as f64 / 1000.0);
        let mean = ratio(sum_us, n as f64) / 1000.0;
        if n > EXACT_MAX {
            let p = Pieces::cut(window.since_us(), window.until_us(), ALL_SPANS);
            let rows: Vec<(i64, i64, i64)> = histogram_arms(&p, to, 0)
                .query_as("SELECT sb, bk, SUM(c) FROM ({}) GROUP BY bk", "")
                .fetch_all(self.pool())
                .await?;
            let mut h = Histogram::new();
            for (_, b, c) in rows {
                h.add_bucket(b, c);
            }
            return Ok(TimeTo {
                exact: false,
                n,
                mean,
                p50: ms(h.percentile(50)),
                p90: ms(h.percentile(90)),
                p99: ms(h.percentile(99)),
            });
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
        Ok(TimeTo {
            exact: true,
            n,
            mean,
            p50: ms(p50),
            p90: ms(p90),
            p99: ms(p99),
        })
    }

    /// Healing results in the window per (strategy, failure type).
    pub(crate) async fn results_by_strategy_type(&self, window: &Window) -> Result<Vec<ResultRow>> {
        let p = Pieces::cut(window.since_us(), window.until_us(), FACT_SPANS);
        Ok(result_arms(&p)
            .query_as(
                "SELECT strategy, failure_type, SUM(n), SUM(s), SUM(d) FROM ({}) \
                 GROUP BY strategy, failure_type",
                "",
            )
            .fetch_all(self.pool())
            .await?)
    }

    /// The failures recovered (or remediated) in the window and their summed time, from the
    /// rollups (for the MTTR of the window's halves).
    pub(crate) async fn done_sums(&self, window: &Window, to: MttrTo) -> Result<(i64, f64)> {
        let p = Pieces::cut(window.since_us(), window.until_us(), FACT_SPANS);
        let (n, t) = match to {
            MttrTo::Recover => ("r", "rt"),
            MttrTo::Remediate => ("m", "mt"),
        };
        let (count, sum): (Option<i64>, f64) = failure_arms(&p)
            .query_as(&format!("SELECT SUM({n}), TOTAL({t}) FROM ({{}})"), "")
            .fetch_one(self.pool())
            .await?;
        Ok((count.unwrap_or(0), sum))
    }

    /// MTTR as a time series: failures recovered (or, with [`MttrTo::Remediate`], remediated)
    /// in the window, grouped into buckets of `bucket` (aligned to the Unix epoch, so `1d`
    /// buckets start at midnight UTC) and, when asked, by failure type, remediating strategy
    /// or agent.
    ///
    /// Without a grouping, and with more than [`EXACT_MAX`] failures in the window, the series
    /// is read from the rollups (counts and means exact, percentiles and maxima from the
    /// histograms: `exact: false`); else row by row, exactly.
    pub async fn mttr_series(
        &self,
        window: &Window,
        to: MttrTo,
        by: Option<MttrBy>,
        bucket: chrono::Duration,
    ) -> Result<Vec<MttrPoint>> {
        let b = bucket_us(bucket)?;
        if by.is_none()
            && let Some(points) = self.rollup_series(window, to, b, true).await?
        {
            return Ok(points);
        }
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
                    exact: true,
                })
            })
            .collect()
    }

    /// An ungrouped series from the rollups, when the window holds more than [`EXACT_MAX`]
    /// failures done and the bucket is a whole number of seconds: counts and sums from the
    /// second, minute and hourly rollups, percentiles (when asked) and maxima from the histograms.
    /// None: answer row by row.
    async fn rollup_series(
        &self,
        window: &Window,
        to: MttrTo,
        b: i64,
        percentiles: bool,
    ) -> Result<Option<Vec<MttrPoint>>> {
        let spans: Vec<i64> = FACT_SPANS.iter().copied().filter(|s| b % s == 0).collect();
        if spans.is_empty() {
            return Ok(None);
        }
        let (s, u) = (window.since_us(), window.until_us());
        let p = Pieces::cut(s, u, &spans);
        let (n_col, sum_col) = to.rollup_columns();
        let (at, us) = to.columns();
        let sb = |col: &str| format!("({col} - (({col} % {b}) + {b}) % {b})");
        let mut arms = Arms::default();
        for &(span, lo, hi) in &p.levels {
            let (unit, col) = fact_unit(span);
            arms.push(
                format!(
                    "SELECT {} AS sb, {n_col} AS n, {sum_col} AS t FROM failure_{unit} \
                     WHERE {col} >= ? AND {col} < ? AND {n_col} > 0",
                    sb(col)
                ),
                &[lo, hi],
            );
        }
        for &(lo, hi) in &p.rows {
            arms.push(
                format!(
                    "SELECT {} AS sb, 1 AS n, {us} AS t FROM failures WHERE {at} >= ? AND {at} < ?",
                    sb(at)
                ),
                &[lo, hi],
            );
        }
        let sums: Vec<(i64, i64, f64)> = arms
            .query_as(
                "SELECT sb, SUM(n), TOTAL(t) FROM ({}) GROUP BY sb ORDER BY sb",
                "",
            )
            .fetch_all(self.pool())
            .await?;
        let total: i64 = sums.iter().map(|r| r.1).sum();
        if total <= EXACT_MAX {
            return Ok(None);
        }
        let hspans: Vec<i64> = ALL_SPANS.iter().copied().filter(|s| b % s == 0).collect();
        let hp = Pieces::cut(s, u, &hspans);
        let rows: Vec<(i64, i64, i64)> = histogram_arms(&hp, to, b)
            .query_as("SELECT sb, bk, SUM(c) FROM ({}) GROUP BY sb, bk", "")
            .fetch_all(self.pool())
            .await?;
        let mut hists: BTreeMap<i64, Histogram> = BTreeMap::new();
        for (sbk, bk, c) in rows {
            hists.entry(sbk).or_default().add_bucket(bk, c);
        }
        let ms = |us: Option<i64>| us.map_or(0.0, |v| v as f64 / 1000.0);
        let empty = Histogram::new();
        sums.into_iter()
            .filter(|r| r.1 > 0)
            .map(|(sbk, n, sum)| {
                let h = hists.get(&sbk).unwrap_or(&empty);
                Ok(MttrPoint {
                    bucket_start: format_time(from_micros(sbk)?),
                    group: None,
                    resolved: n,
                    mttr_ms: ratio(sum, n as f64) / 1000.0,
                    p50_ms: if percentiles {
                        ms(h.percentile(50))
                    } else {
                        0.0
                    },
                    p90_ms: if percentiles {
                        ms(h.percentile(90))
                    } else {
                        0.0
                    },
                    max_ms: ms(h.max()),
                    exact: false,
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
}

impl Analytics {
    /// The time to recover per bucket without percentiles (count, mean, max): what the
    /// dashboard charts. From the rollups as [`Self::mttr_series`] reads them (the maxima then
    /// from the histograms), else a plain pass over the recovery index.
    pub async fn mttr_means(
        &self,
        window: &Window,
        bucket: chrono::Duration,
    ) -> Result<Vec<MttrPoint>> {
        let b = bucket_us(bucket)?;
        if let Some(points) = self
            .rollup_series(window, MttrTo::Recover, b, false)
            .await?
        {
            return Ok(points);
        }
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
                    exact: true,
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
    /// Whether the percentiles and the maximum are exact, or read from the histograms (within
    /// 1 %); counts and means are always exact.
    pub exact: bool,
}

type SeriesRow = (i64, String, i64, f64, Option<i64>, Option<i64>, Option<i64>);
