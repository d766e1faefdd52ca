//! Recommendations, the health score and the dashboard.
//!
//! Recommendation rules (each can fire; the upstream design guessed failure types from ids,
//! so two of its rules never did, and its "performing well" was unreachable):
//!
//! | rule | fires when |
//! |---|---|
//! | `low_success_rate` | at least `min_results` healings and a success rate below 0.7 |
//! | `excellent_success_rate` | at least `min_results` healings and a rate above 0.95 |
//! | `replace_strategy`, `tune_strategy`, `investigate_strategy` | a strategy's verdict says so |
//! | `high_mttr` | MTTR (the mean time to recover) above 5,000 ms |
//! | `rising_mttr` | the second half's MTTR is over 1.5x the first half's, each half with at least 5 recoveries |
//! | `most_common_failure` | at least `min_results` failures: the most frequent type |
//! | `enable_degradation` | resource failures seen and GradualDegradation acted on none of them |
//! | `enable_circuit_breaker` | timeouts seen and CircuitBreaker considered none of them |
//! | `flapping_circuit` | a circuit opened at least `flap_threshold` times |
//! | `healer_limits_reached` | decisions withheld by the healer's limits |
//! | `unrecovered_failures` | over 10 % of the window's failures have not recovered by its end |
//! | `ineffective_prevention` | a prevention kind (prediction source and action) whose holdout comparison does not show a benefit: a warning with at least 10 settled predictions in each group, information below |
//! | `performing_well` | none of the warnings above fired |
//!
//! MTTR is the mean time to *recover* (detection to evidence that the agent or task works
//! again), as the seed design means it: its target (500 ms), the health score and the MTTR
//! rules use it. The time to remediate (the healing actions succeeded) is reported beside it,
//! without a target.
//!
//! Health score (the seed's formula): `50 x success_rate + 30 x max(0, 1 - mttr / 500) +
//! 20 x mean strategy success rate (0.5 with none)`, capped at 100, one decimal. Two cases the
//! formula leaves open are decided here: a window without failures scores 100 (nothing needed
//! healing), and a window in which no failure recovered gets no MTTR points (an MTTR of 0
//! there means "never", not "instantly").

use std::collections::BTreeMap;

use serde::Serialize;

use super::effectiveness::{Effectiveness, EffectivenessOptions};
use super::stats::{ALL_SPANS, FACT_SPANS};
use super::{
    Analytics, Arms, CircuitReport, MttrPoint, MttrTo, Pieces, Stats, Window, WindowInfo,
    fact_unit, ratio,
};
use crate::error::Result;
use crate::time::format_time;

/// Failure types whose remedy is graceful degradation.
pub const RESOURCE_FAILURES: &[&str] = &[
    "resource_exhaustion",
    "token_exhaustion",
    "quota_exceeded",
    "memory_exhaustion",
    "memory_pressure",
];

/// Failure types a circuit breaker protects against.
pub const TIMEOUT_FAILURES: &[&str] = &["task_timeout", "high_latency"];

/// One recommendation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    pub rule: String,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The configuration change that addresses it, as a fragment of the configuration file
    /// (see [`crate::analytics::propose`]), when one does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposal: Option<String>,
}

fn rec(rule: &str, severity: &str, message: String) -> Recommendation {
    Recommendation {
        rule: rule.into(),
        severity: severity.into(),
        message,
        subject: None,
        value: None,
        proposal: None,
    }
}

impl Recommendation {
    fn about(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    fn value(mut self, v: f64) -> Self {
        self.value = Some(v);
        self
    }
}

/// The health score with its three parts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthScore {
    pub score: f64,
    pub success_points: f64,
    pub mttr_points: f64,
    pub strategy_points: f64,
}

/// A figure against the seed's target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    pub metric: String,
    pub value: f64,
    /// `>` or `<`.
    pub comparison: String,
    pub target: f64,
    pub met: bool,
    /// False when the window holds nothing to measure the figure on (no healing results, no
    /// recovered failure): then `met` is false and the figure says nothing.
    pub measured: bool,
}

/// Thresholds for the advice.
#[derive(Debug, Clone, PartialEq)]
pub struct AdviceOptions {
    pub effectiveness: EffectivenessOptions,
    /// Opens in the window from which a circuit counts as flapping.
    pub flap_threshold: i64,
}

impl Default for AdviceOptions {
    fn default() -> Self {
        AdviceOptions {
            effectiveness: EffectivenessOptions::default(),
            flap_threshold: 3,
        }
    }
}

/// Everything the dashboard shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dashboard {
    pub timestamp: String,
    pub window: WindowInfo,
    pub time_range_ms: i64,
    pub overall: Stats,
    pub strategies: Vec<super::StrategyEffectiveness>,
    pub pairs: Vec<super::PairEffectiveness>,
    pub best_for: BTreeMap<String, String>,
    pub by_failure_type: BTreeMap<String, i64>,
    /// Failures detected per hour of day (UTC), 24 entries.
    pub failures_by_hour: Vec<i64>,
    /// Failures per hour of the window, on average.
    pub failures_per_hour: f64,
    /// The agents with the most failures (at most ten).
    pub top_agents: Vec<(String, i64)>,
    pub mttr_series: Vec<MttrPoint>,
    pub mttr_bucket: String,
    pub circuits: CircuitReport,
    pub recommendations: Vec<Recommendation>,
    /// Preventions proposed in the window, by status, and their measured effect against the
    /// holdout.
    pub preventions: super::PreventionReport,
    pub health: HealthScore,
    pub health_score: f64,
    pub targets: Vec<Target>,
}

/// The seed's health score.
pub fn health_score(stats: &Stats, effectiveness: &Effectiveness) -> HealthScore {
    if stats.total_failures == 0 && stats.total_healings == 0 && stats.recovered == 0 {
        return HealthScore {
            score: 100.0,
            success_points: 50.0,
            mttr_points: 30.0,
            strategy_points: 20.0,
        };
    }
    let success_points = stats.success_rate * 50.0;
    let mttr_points = if stats.recovered == 0 {
        0.0
    } else {
        (1.0 - stats.mttr_recover_ms / 500.0).max(0.0) * 30.0
    };
    let rates: Vec<f64> = effectiveness
        .strategies
        .iter()
        .map(|s| s.success_rate)
        .collect();
    let mean = if rates.is_empty() {
        0.5
    } else {
        rates.iter().sum::<f64>() / rates.len() as f64
    };
    let strategy_points = mean * 20.0;
    HealthScore {
        score: (success_points + mttr_points + strategy_points).min(100.0),
        success_points,
        mttr_points,
        strategy_points,
    }
}

/// The seed's targets.
pub fn targets(stats: &Stats, effectiveness: &Effectiveness, health: &HealthScore) -> Vec<Target> {
    let mut out = vec![
        Target {
            metric: "success_rate".into(),
            value: stats.success_rate,
            comparison: ">".into(),
            target: 0.85,
            met: stats.success_rate > 0.85,
            measured: stats.total_healings > 0,
        },
        Target {
            metric: "mttr_recover_ms".into(),
            value: stats.mttr_recover_ms,
            comparison: "<".into(),
            target: 500.0,
            met: stats.recovered > 0 && stats.mttr_recover_ms < 500.0,
            measured: stats.recovered > 0,
        },
    ];
    for s in &effectiveness.strategies {
        out.push(Target {
            metric: format!("strategy:{}", s.strategy),
            value: s.success_rate,
            comparison: ">".into(),
            target: 0.7,
            met: s.success_rate > 0.7,
            measured: s.results > 0,
        });
    }
    out.push(Target {
        metric: "health_score".into(),
        value: health.score,
        comparison: ">".into(),
        target: 80.0,
        met: health.score > 80.0,
        measured: true,
    });
    out
}

impl Analytics {
    /// Recommendations for the window.
    pub async fn recommendations(
        &self,
        window: &Window,
        options: &AdviceOptions,
    ) -> Result<Vec<Recommendation>> {
        let (stats, eff, circuits, coverage, halves, prevention) = tokio::try_join!(
            self.stats(window),
            self.effectiveness(window, &options.effectiveness),
            self.circuits(window, options.flap_threshold),
            self.coverage(window),
            self.mttr_halves(window),
            self.prevention_report(window),
        )?;
        let mut out = advise(options, &stats, &eff, &circuits, coverage, halves);
        prevention_advice(&mut out, &prevention);
        Ok(out)
    }
}

/// `ineffective_prevention`: a recommendation per prevention kind the holdout comparison
/// flags (a warning with enough settled predictions, information below), replacing
/// `performing_well` when it warns.
fn prevention_advice(out: &mut Vec<Recommendation>, prevention: &super::PreventionReport) {
    let mut warned = false;
    for e in prevention.effects.iter().filter(|e| e.flagged) {
        if e.assigned == 0 && e.held_back == 0 {
            continue;
        }
        let enough = e.verdict != "insufficient_data";
        warned |= enough;
        out.push(
            rec(
                "ineffective_prevention",
                if enough { "warning" } else { "info" },
                format!(
                    "Preventing {} predictions with {} shows no benefit: the predicted failure \
                     followed {} of {} assigned to act and {} of {} held back (difference {:.2}, \
                     95% interval {:.2} to {:.2}; {} of {} carried out){}",
                    e.source,
                    e.action,
                    e.assigned_failed,
                    e.assigned,
                    e.held_back_failed,
                    e.held_back,
                    e.reduction,
                    e.ci_low,
                    e.ci_high,
                    e.prevented_failed,
                    e.prevented,
                    if enough {
                        ": stop approving it, or choose another action"
                    } else {
                        ": too few settled predictions to tell yet"
                    }
                ),
            )
            .about(format!("{}/{}", e.source, e.action))
            .value(e.reduction),
        );
    }
    if warned {
        out.retain(|r| r.rule != "performing_well");
    }
}

fn advise(
    options: &AdviceOptions,
    stats: &Stats,
    eff: &Effectiveness,
    circuits: &CircuitReport,
    coverage: (bool, bool, i64),
    halves: Option<(f64, f64)>,
) -> Vec<Recommendation> {
    let min = options.effectiveness.min_results;
    let mut out = Vec::new();
    let pct = |x: f64| format!("{:.1}%", x * 100.0);

    if stats.total_healings >= min && stats.success_rate < 0.7 {
        out.push(
                rec(
                    "low_success_rate",
                    "critical",
                    format!(
                        "Healing succeeds only {} of the time ({} healings): review the strategy configuration",
                        pct(stats.success_rate),
                        stats.total_healings
                    ),
                )
                .value(stats.success_rate),
            );
    } else if stats.total_healings >= min && stats.success_rate > 0.95 {
        out.push(
            rec(
                "excellent_success_rate",
                "info",
                format!(
                    "Excellent healing success rate: {} over {} healings",
                    pct(stats.success_rate),
                    stats.total_healings
                ),
            )
            .value(stats.success_rate),
        );
    }

    for s in &eff.strategies {
        let (rule, sev, text) = match s.recommendation.as_str() {
            "replace" => (
                "replace_strategy",
                "warning",
                format!(
                    "{} succeeds only {} of the time: consider replacing it",
                    s.strategy,
                    pct(s.success_rate)
                ),
            ),
            "tune" => (
                "tune_strategy",
                "warning",
                format!(
                    "{} is degrading ({} recently against {} before): tune its parameters",
                    s.strategy,
                    pct(s.recent_success_rate.unwrap_or(0.0)),
                    pct(s.earlier_success_rate.unwrap_or(0.0))
                ),
            ),
            "investigate" => (
                "investigate_strategy",
                "warning",
                format!(
                    "{} is degrading at a {} success rate: investigate",
                    s.strategy,
                    pct(s.success_rate)
                ),
            ),
            _ => continue,
        };
        out.push(
            rec(rule, sev, text)
                .about(&s.strategy)
                .value(s.success_rate),
        );
    }

    if stats.mttr_recover_ms > 5000.0 {
        out.push(
                rec(
                    "high_mttr",
                    "warning",
                    format!(
                        "Mean time to recover is {:.0} ms (over 5,000 ms; {:.0} ms to remediate): look at the slowest strategies, and at what keeps failures from recovering once remediated",
                        stats.mttr_recover_ms, stats.mttr_remediate_ms
                    ),
                )
                .value(stats.mttr_recover_ms),
            );
    }

    if let Some((first, second)) = halves {
        out.push(
                rec(
                    "rising_mttr",
                    "warning",
                    format!(
                        "MTTR is rising: {:.0} ms in the window's second half against {:.0} ms in its first",
                        second, first
                    ),
                )
                .value(second),
            );
    }

    if stats.total_failures >= min
        && let Some((t, n)) = stats.by_failure_type.iter().max_by_key(|(_, n)| **n)
    {
        let share = *n as f64 / stats.total_failures as f64;
        out.push(
            rec(
                "most_common_failure",
                "info",
                format!(
                    "{t} is the most common failure ({n} of {}, {}): look for its root cause",
                    stats.total_failures,
                    pct(share)
                ),
            )
            .about(t)
            .value(*n as f64),
        );
    }

    let (acted_on_resources, considered_timeouts, withheld) = coverage;
    let resource_failures: i64 = RESOURCE_FAILURES
        .iter()
        .filter_map(|t| stats.by_failure_type.get(*t))
        .sum();
    if resource_failures > 0 && !acted_on_resources {
        out.push(
                rec(
                    "enable_degradation",
                    "warning",
                    format!(
                        "{resource_failures} resource exhaustion failures and no graceful degradation: enable GradualDegradation for them"
                    ),
                )
                .value(resource_failures as f64),
            );
    }
    let timeouts: i64 = TIMEOUT_FAILURES
        .iter()
        .filter_map(|t| stats.by_failure_type.get(*t))
        .sum();
    if timeouts > 0 && !considered_timeouts {
        out.push(
                rec(
                    "enable_circuit_breaker",
                    "warning",
                    format!(
                        "{timeouts} timeouts and no circuit breaker watching them: route them through CircuitBreaker"
                    ),
                )
                .value(timeouts as f64),
            );
    }

    for c in circuits.circuits.iter().filter(|c| c.flapping) {
        out.push(
                rec(
                    "flapping_circuit",
                    "warning",
                    format!(
                        "Circuit {} opened {} times ({} from half-open): the agent keeps failing after recovery; investigate it or lengthen the open timeout",
                        c.circuit, c.opens, c.reopens
                    ),
                )
                .about(&c.circuit)
                .value(c.opens as f64),
            );
    }

    if withheld > 0 {
        out.push(
                rec(
                    "healer_limits_reached",
                    "warning",
                    format!(
                        "{withheld} healing decisions were withheld by the healer's limits: a failure storm, or limits set too low"
                    ),
                )
                .value(withheld as f64),
            );
    }

    if stats.total_failures > 0 {
        let share = stats.unrecovered as f64 / stats.total_failures as f64;
        if share > 0.1 {
            out.push(
                rec(
                    "unrecovered_failures",
                    "warning",
                    format!(
                        "{} of {} failures ({}) had not recovered by the window's end (no success signal, healthy status or confirmation)",
                        stats.unrecovered,
                        stats.total_failures,
                        pct(share)
                    ),
                )
                .value(stats.unrecovered as f64),
            );
        }
    }

    if !out.iter().any(|r| r.severity != "info") {
        out.push(rec(
            "performing_well",
            "info",
            "Healing is performing well: no warnings in this window".into(),
        ));
    }
    out
}

impl Analytics {
    /// Whether GradualDegradation acted on a resource failure, whether CircuitBreaker
    /// considered a timeout, and how many decisions the healer's limits withheld.
    async fn coverage(&self, window: &Window) -> Result<(bool, bool, i64)> {
        let p = Pieces::cut(window.since_us(), window.until_us(), FACT_SPANS);
        let resources = sql_list(RESOURCE_FAILURES);
        let timeouts = sql_list(TIMEOUT_FAILURES);
        let mut arms = Arms::default();
        for &(span, a, b) in &p.levels {
            let (unit, col) = fact_unit(span);
            arms.push(
                format!(
                    "SELECT strategy, failure_type, decision, attempts AS n FROM attempt_{unit} \
                     WHERE {col} >= ? AND {col} < ?"
                ),
                &[a, b],
            );
        }
        // The partial seconds' decisions: from the log, and the facts kept of archived events.
        for &(a, b) in &p.rows {
            arms.push(
                format!(
                    "SELECT e.strategy AS strategy, {} AS failure_type, \
                       COALESCE(e.payload ->> '$.decision', '') AS decision, 1 AS n \
                     FROM events e WHERE e.occurred_at >= ? AND e.occurred_at < ? AND {}",
                    healing_failure_type!(),
                    counted_decision!()
                ),
                &[a, b],
            );
            arms.push(
                "SELECT strategy, failure_type, decision, 1 AS n FROM archived_facts \
                 WHERE event_type = 'healing_attempted' AND occurred_at >= ? AND occurred_at < ?",
                &[a, b],
            );
        }
        let sql = format!(
            "SELECT \
               COALESCE(SUM(CASE WHEN strategy = 'GradualDegradation' AND failure_type IN ({resources}) \
                    AND decision IN ('act', 'delegated', 'shadow', 'suggest_only', 'failed') THEN n END), 0), \
               COALESCE(SUM(CASE WHEN strategy = 'CircuitBreaker' AND failure_type IN ({timeouts}) \
                    AND decision <> 'declined' THEN n END), 0), \
               COALESCE(SUM(CASE WHEN decision = 'withheld' THEN n END), 0) \
             FROM ({{}})"
        );
        let (deg, cb, withheld): (i64, i64, i64) =
            arms.query_as(&sql, "").fetch_one(self.pool()).await?;
        Ok((deg > 0, cb > 0, withheld))
    }

    /// MTTR (to recovery) in the window's two halves, when it rose by over half with enough
    /// recoveries on both sides (from the rollups, as the stats read them).
    async fn mttr_halves(&self, window: &Window) -> Result<Option<(f64, f64)>> {
        let (s, u) = (window.since, window.until);
        let mid = s + (u - s) / 2;
        let halves = |a, b| async move {
            if a >= b {
                return Ok((0, 0.0));
            }
            self.done_sums(&Window::new(a, b)?, MttrTo::Recover).await
        };
        let ((n1, t1), (n2, t2)) = tokio::try_join!(halves(s, mid), halves(mid, u))?;
        let (m1, m2) = (ratio(t1, n1 as f64), ratio(t2, n2 as f64));
        Ok(if n1 >= 5 && n2 >= 5 && m2 > 1.5 * m1 && m2 > 0.0 {
            Some((m1 / 1000.0, m2 / 1000.0))
        } else {
            None
        })
    }

    /// Failures detected per hour of day (UTC), from the rollups.
    async fn by_hour_of_day(&self, window: &Window) -> Result<Vec<(i64, i64)>> {
        let p = Pieces::cut(window.since_us(), window.until_us(), FACT_SPANS);
        let mut arms = Arms::default();
        for &(span, a, b) in &p.levels {
            let (unit, col) = fact_unit(span);
            arms.push(
                format!(
                    "SELECT ({col} / 3600000000) % 24 AS h, detected AS n FROM failure_{unit} \
                     WHERE {col} >= ? AND {col} < ?"
                ),
                &[a, b],
            );
        }
        for &(a, b) in &p.rows {
            arms.push(
                "SELECT (detected_at / 3600000000) % 24 AS h, 1 AS n FROM failures \
                 WHERE detected_at >= ? AND detected_at < ?",
                &[a, b],
            );
        }
        Ok(arms
            .query_as("SELECT h, SUM(n) FROM ({}) GROUP BY h", "")
            .fetch_all(self.pool())
            .await?)
    }

    /// The agents with the most failures detected in the window (at most ten), from the
    /// per-agent rollup by the day, hour, minute and second.
    async fn top_agents(&self, window: &Window) -> Result<Vec<(String, i64)>> {
        let p = Pieces::cut(window.since_us(), window.until_us(), ALL_SPANS);
        let mut arms = Arms::default();
        for &(span, a, b) in &p.levels {
            arms.push(
                "SELECT agent_id, detected AS n FROM agent_rollup \
                 WHERE span = ? AND start >= ? AND start < ?",
                &[span, a, b],
            );
        }
        for &(a, b) in &p.rows {
            arms.push(
                "SELECT agent_id, 1 AS n FROM failures \
                 WHERE detected_at >= ? AND detected_at < ? AND agent_id IS NOT NULL",
                &[a, b],
            );
        }
        Ok(arms
            .query_as(
                "SELECT agent_id, SUM(n) AS t FROM ({}) GROUP BY agent_id \
                 ORDER BY t DESC, agent_id LIMIT 10",
                "",
            )
            .fetch_all(self.pool())
            .await?)
    }

    /// The dashboard: the seed's fields, the figures against its targets, and the series the
    /// HTML page charts.
    pub async fn dashboard(
        &self,
        window: &Window,
        options: &AdviceOptions,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Dashboard> {
        let (bucket, label) = if window.length_us() <= 2 * 86_400_000_000 {
            if window.length_us() <= 3 * super::HOUR_US {
                (chrono::Duration::minutes(5), "5m")
            } else {
                (chrono::Duration::hours(1), "1h")
            }
        } else {
            (chrono::Duration::days(1), "1d")
        };
        // Every part at once, on the reader pool's connections.
        let (stats, eff, circuits, coverage, halves, by_hour, top_agents, mttr_series, preventions) =
            tokio::try_join!(
                self.stats(window),
                self.effectiveness(window, &options.effectiveness),
                self.circuits(window, options.flap_threshold),
                self.coverage(window),
                self.mttr_halves(window),
                self.by_hour_of_day(window),
                self.top_agents(window),
                self.mttr_means(window, bucket),
                self.prevention_report(window),
            )?;
        let mut recommendations = advise(options, &stats, &eff, &circuits, coverage, halves);
        prevention_advice(&mut recommendations, &preventions);
        let health = health_score(&stats, &eff);
        let targets = targets(&stats, &eff, &health);
        let mut failures_by_hour = vec![0i64; 24];
        for (h, n) in by_hour {
            if let Some(slot) = usize::try_from(h)
                .ok()
                .and_then(|h| failures_by_hour.get_mut(h))
            {
                *slot = n;
            }
        }
        let hours = window.length_us() as f64 / super::HOUR_US as f64;
        Ok(Dashboard {
            timestamp: format_time(now),
            window: window.describe(),
            time_range_ms: window.length_us() / 1000,
            by_failure_type: stats.by_failure_type.clone(),
            failures_per_hour: stats.total_failures as f64 / hours.max(1e-9),
            overall: stats,
            strategies: eff.strategies,
            pairs: eff.pairs,
            best_for: eff.best_for,
            failures_by_hour,
            top_agents,
            mttr_series,
            mttr_bucket: label.into(),
            circuits,
            recommendations,
            preventions,
            health_score: health.score,
            health,
            targets,
        })
    }
}

fn sql_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("'{}'", s.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ")
}
