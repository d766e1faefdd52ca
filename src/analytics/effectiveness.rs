//! Strategy effectiveness: how often each strategy heals, how fast, whether it is getting
//! better or worse, and what to do about it; also per (strategy, failure type), which tells
//! which remediation works for which failure.
//!
//! The trend compares, in time order, the success rate of the most recent `min(n / 3, 20)`
//! results with the rate of the rest (the upstream design read a newest-first history as
//! oldest-first and inverted it): more than 0.05 better is `improving`, more than 0.05 worse
//! `degrading`, else `stable`; with fewer than `min_results_for_trend` results it is
//! `insufficient_data`.
//!
//! The recommendation follows the seed design, in this order: `keep` (rate >= 0.9 and not
//! degrading), `tune` (rate >= 0.7 and degrading), `replace` (rate < 0.5), `investigate`
//! (degrading), else `monitor`. Below `min_results` results there is no verdict: `monitor`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Analytics, Window, WindowInfo, ratio};
use crate::error::Result;

/// Thresholds for verdicts.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectivenessOptions {
    /// Results needed before a recommendation other than `monitor`.
    pub min_results: i64,
    /// Results needed before a trend is computed.
    pub min_results_for_trend: i64,
}

impl Default for EffectivenessOptions {
    fn default() -> Self {
        EffectivenessOptions {
            min_results: 10,
            min_results_for_trend: 10,
        }
    }
}

/// One strategy's effectiveness in a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StrategyEffectiveness {
    pub strategy: String,
    pub results: i64,
    pub success_count: i64,
    pub failure_count: i64,
    pub success_rate: f64,
    pub avg_healing_time_ms: f64,
    /// The success rate of the most recent results the trend looked at, and of the rest.
    pub recent_success_rate: Option<f64>,
    pub earlier_success_rate: Option<f64>,
    pub trend: String,
    pub recommendation: String,
    /// Whether `results` reached the minimum for a verdict.
    pub enough_data: bool,
    /// The seed's status line: excellent (>= 0.9), good (>= 0.7), needs_improvement (>= 0.5),
    /// poor.
    pub status: String,
}

/// One (strategy, failure type) pair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairEffectiveness {
    pub strategy: String,
    pub failure_type: String,
    pub results: i64,
    pub success_count: i64,
    pub failure_count: i64,
    pub success_rate: f64,
    pub avg_healing_time_ms: f64,
    pub trend: String,
    pub recommendation: String,
    pub enough_data: bool,
}

/// Effectiveness in a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Effectiveness {
    pub window: WindowInfo,
    pub strategies: Vec<StrategyEffectiveness>,
    pub pairs: Vec<PairEffectiveness>,
    /// Per failure type, the strategy with the best success rate among those with enough
    /// results (ties: the faster one).
    pub best_for: BTreeMap<String, String>,
}

/// A strategy's newest results in a window (?1 strategy, ?2 and ?3 the window, ?4 a failure
/// type or NULL, ?5 how many), newest first: success, time and position. The log's arm walks
/// the strategy index newest first; the merge stops after ?5 rows.
const RECENT_RESULTS: &str = concat!(
    "SELECT e.success, e.occurred_at, e.position FROM events e INDEXED BY events_by_strategy \
     WHERE e.strategy = ?1 AND e.occurred_at >= ?2 AND e.occurred_at < ?3 AND ",
    counted_result!(),
    " AND (?4 IS NULL OR ",
    healing_failure_type!(),
    " = ?4) \
     UNION ALL \
     SELECT success, occurred_at, position FROM archived_facts \
     WHERE strategy = ?1 AND event_type = 'healing_completed' \
       AND occurred_at >= ?2 AND occurred_at < ?3 AND (?4 IS NULL OR failure_type = ?4) \
     ORDER BY 2 DESC, 3 DESC LIMIT ?5"
);

#[derive(Default, Clone, Copy)]
struct Sums {
    n: i64,
    ok: i64,
    dur: i64,
}

/// Per failure type, the strategy with the best success rate (ties: the faster one) among those
/// with at least `min_results` results on it.
fn best_of(
    per_pair: &BTreeMap<(String, String), Sums>,
    min_results: i64,
) -> BTreeMap<String, String> {
    let mut best: BTreeMap<String, (f64, f64, String)> = BTreeMap::new();
    for ((strategy, ftype), s) in per_pair {
        if s.n < min_results || ftype.is_empty() {
            continue;
        }
        let rate = ratio(s.ok as f64, s.n as f64);
        let time = ratio(s.dur as f64, s.n as f64);
        let better = match best.get(ftype) {
            None => true,
            Some((r, t, _)) => rate > *r || (rate == *r && time < *t),
        };
        if better {
            best.insert(ftype.clone(), (rate, time, strategy.clone()));
        }
    }
    best.into_iter().map(|(k, v)| (k, v.2)).collect()
}

impl Analytics {
    /// The report's `best_for` alone (per failure type, the best strategy), without the
    /// trends, which read each strategy's newest results: what predictions need.
    pub async fn best_strategies(
        &self,
        window: &Window,
        options: &EffectivenessOptions,
    ) -> Result<BTreeMap<String, String>> {
        let mut per_pair: BTreeMap<(String, String), Sums> = BTreeMap::new();
        for (s, t, n, ok, dur) in self.results_by_strategy_type(window).await? {
            let p = per_pair.entry((s, t)).or_default();
            p.n += n;
            p.ok += ok;
            p.dur += dur;
        }
        Ok(best_of(&per_pair, options.min_results))
    }

    /// Strategy effectiveness over the window.
    pub async fn effectiveness(
        &self,
        window: &Window,
        options: &EffectivenessOptions,
    ) -> Result<Effectiveness> {
        let rows = self.results_by_strategy_type(window).await?;
        let mut per_strategy: BTreeMap<String, Sums> = BTreeMap::new();
        let mut per_pair: BTreeMap<(String, String), Sums> = BTreeMap::new();
        for (s, t, n, ok, dur) in rows {
            let e = per_strategy.entry(s.clone()).or_default();
            e.n += n;
            e.ok += ok;
            e.dur += dur;
            let p = per_pair.entry((s, t)).or_default();
            p.n += n;
            p.ok += ok;
            p.dur += dur;
        }

        let mut strategies = Vec::new();
        for (name, s) in &per_strategy {
            let (trend, recent, earlier) = self.trend(window, name, None, s, options).await?;
            let rate = ratio(s.ok as f64, s.n as f64);
            let enough = s.n >= options.min_results;
            strategies.push(StrategyEffectiveness {
                strategy: name.clone(),
                results: s.n,
                success_count: s.ok,
                failure_count: s.n - s.ok,
                success_rate: rate,
                avg_healing_time_ms: ratio(s.dur as f64, s.n as f64),
                recent_success_rate: recent,
                earlier_success_rate: earlier,
                recommendation: recommend(rate, &trend, enough).to_owned(),
                trend,
                enough_data: enough,
                status: status(rate).to_owned(),
            });
        }

        let mut pairs = Vec::new();
        for ((name, ftype), s) in &per_pair {
            let (trend, _, _) = self.trend(window, name, Some(ftype), s, options).await?;
            let rate = ratio(s.ok as f64, s.n as f64);
            let enough = s.n >= options.min_results;
            pairs.push(PairEffectiveness {
                strategy: name.clone(),
                failure_type: ftype.clone(),
                results: s.n,
                success_count: s.ok,
                failure_count: s.n - s.ok,
                success_rate: rate,
                avg_healing_time_ms: ratio(s.dur as f64, s.n as f64),
                recommendation: recommend(rate, &trend, enough).to_owned(),
                trend,
                enough_data: enough,
            });
        }

        let best_for = best_of(&per_pair, options.min_results);

        Ok(Effectiveness {
            window: window.describe(),
            strategies,
            pairs,
            best_for,
        })
    }

    /// The trend of one strategy (optionally on one failure type): the most recent
    /// `min(n / 3, 20)` results in time order against the rest.
    async fn trend(
        &self,
        window: &Window,
        strategy: &str,
        failure_type: Option<&str>,
        sums: &Sums,
        options: &EffectivenessOptions,
    ) -> Result<(String, Option<f64>, Option<f64>)> {
        if sums.n < options.min_results_for_trend.max(2) {
            return Ok(("insufficient_data".into(), None, None));
        }
        let k = (sums.n / 3).clamp(1, 20);
        // The newest k results (the hourly rollup has no order), from the log and from the
        // facts kept of archived events.
        let recent: Vec<(i64, i64, i64)> = sqlx::query_as(RECENT_RESULTS)
            .bind(strategy)
            .bind(window.since_us())
            .bind(window.until_us())
            .bind(failure_type)
            .bind(k)
            .fetch_all(self.pool())
            .await?;
        let k = recent.len() as i64;
        if k == 0 || k >= sums.n {
            return Ok(("insufficient_data".into(), None, None));
        }
        let recent_ok: i64 = recent.iter().map(|r| r.0).sum();
        let recent_rate = recent_ok as f64 / k as f64;
        let earlier_rate = (sums.ok - recent_ok) as f64 / (sums.n - k) as f64;
        let diff = recent_rate - earlier_rate;
        let trend = if diff > 0.05 {
            "improving"
        } else if diff < -0.05 {
            "degrading"
        } else {
            "stable"
        };
        Ok((trend.into(), Some(recent_rate), Some(earlier_rate)))
    }
}

/// The seed's verdict, with a minimum number of results before any.
pub(crate) fn recommend(rate: f64, trend: &str, enough: bool) -> &'static str {
    let degrading = trend == "degrading";
    if !enough {
        "monitor"
    } else if rate >= 0.9 && !degrading {
        "keep"
    } else if rate >= 0.7 && degrading {
        "tune"
    } else if rate < 0.5 {
        "replace"
    } else if degrading {
        "investigate"
    } else {
        "monitor"
    }
}

fn status(rate: f64) -> &'static str {
    if rate >= 0.9 {
        "excellent"
    } else if rate >= 0.7 {
        "good"
    } else if rate >= 0.5 {
        "needs_improvement"
    } else {
        "poor"
    }
}

#[cfg(test)]
mod tests {
    use super::recommend;

    #[test]
    fn every_verdict_can_be_reached() {
        assert_eq!(recommend(0.95, "stable", true), "keep");
        assert_eq!(recommend(0.95, "degrading", true), "tune");
        assert_eq!(recommend(0.8, "degrading", true), "tune");
        assert_eq!(recommend(0.4, "stable", true), "replace");
        assert_eq!(recommend(0.6, "degrading", true), "investigate");
        assert_eq!(recommend(0.6, "stable", true), "monitor");
        assert_eq!(recommend(1.0, "stable", false), "monitor");
    }
}
