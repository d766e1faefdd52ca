//! Predictions: the failures likely to come next, from the latest failures and the learned
//! patterns, and how earlier predictions turned out.
//!
//! Sources, each giving a probability (the pattern's confidence), an expected time and a
//! window by whose end the failure should have happened:
//!
//! - **sequence** patterns: an agent's (or the fleet's) latest one or two failures match a
//!   pattern's prefix, still within the sequence gap;
//! - **frequency** patterns: the next occurrence of a regular failure is due;
//! - **correlation** patterns: a failure that is usually followed by another just happened;
//! - **success rate**: an agent whose success rate over the learning window is under 0.7
//!   (with at least 10 observations: `agent_succeeded` events and failures) is likely to fail
//!   again within the hour;
//! - **resource trend**: a resource whose reported usage (`resource_usage_reported`) is above
//!   80 % of its limit (85 % for memory) and rising over the last hour's reports is likely to
//!   be exhausted when the trend line reaches the limit (probability: the current share).
//!
//! Each prediction carries the recommended strategy: the one with the best success rate on
//! that failure type in the learning window, else the configured route's first. Predictions
//! are recorded as `prediction_made` events (ids are derived from their source, so asking
//! again does not repeat them). A prediction is **confirmed** when a failure of its type (on
//! its agent, when it names one) is detected after it was made and before its window ends,
//! **missed** when its window ended without one, and **pending** until then. Accuracy is
//! confirmed / (confirmed + missed); the false-positive rate is missed / (confirmed + missed).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::patterns::{LearnOptions, Pattern};
use super::{Analytics, EffectivenessOptions, Window, WindowInfo};
use crate::error::Result;
use crate::events::HealEvent;
use crate::time::{format_time, from_micros, to_micros};
use crate::{ExpectedVersion, StreamAppend};

/// How to predict.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictOptions {
    pub learn: LearnOptions,
    /// The window patterns are learned over, ending now.
    pub learn_window: chrono::Duration,
    /// Only this agent's predictions.
    pub agent: Option<String>,
    /// Failure type to configured strategy names (the fallback recommendation). Default: the
    /// built-in routes.
    pub routes: BTreeMap<String, Vec<String>>,
    /// Record the predictions (and the learned patterns) as events.
    pub record: bool,
    pub min_observations: i64,
    pub success_rate_threshold: f64,
}

impl Default for PredictOptions {
    fn default() -> Self {
        PredictOptions {
            learn: LearnOptions::default(),
            learn_window: chrono::Duration::days(7),
            agent: None,
            routes: crate::config::Config::default().route_names(),
            record: true,
            min_observations: 10,
            success_rate_threshold: 0.7,
        }
    }
}

/// One prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub prediction_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    pub failure_type: String,
    pub probability: f64,
    /// `sequence`, `frequency`, `correlation`, `success_rate` or `resource_trend`.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern_id: Option<String>,
    pub basis: String,
    pub expected_at: String,
    pub expected_by: String,
    /// From the moment the prediction was made.
    pub expected_in_ms: i64,
    pub window_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommended_strategy: Option<String>,
    pub recommended_action: String,
}

impl Prediction {
    /// The predicted failure as a [`Failure`](crate::heal::Failure) (id: the prediction's,
    /// detected at its expected time, `metadata.predicted = true`): what strategies compute
    /// their state key from when asked for a prevention.
    pub fn as_failure(&self) -> crate::heal::Failure {
        let at = crate::time::parse_time(&self.expected_at).unwrap_or_default();
        let mut f = crate::heal::Failure::new(
            self.failure_type.clone(),
            crate::events::Severity::Medium,
            at,
        )
        .with_id(self.prediction_id.clone())
        .with_meta("predicted", true)
        .with_meta("probability", self.probability);
        f.agent_id = self.agent_id.clone();
        f
    }
}

/// How a recorded prediction turned out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PredictionOutcome {
    pub prediction_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    pub failure_type: String,
    pub probability: f64,
    pub made_at: String,
    pub expected_by: String,
    /// `confirmed`, `missed` or `pending`.
    pub status: String,
}

/// Predictions now, and the track record over the learning window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PredictionReport {
    pub now: String,
    pub learned_over: WindowInfo,
    pub patterns_used: usize,
    pub predictions: Vec<Prediction>,
    pub recorded: usize,
    pub confirmed: i64,
    pub missed: i64,
    pub pending: i64,
    pub accuracy: f64,
    pub false_positive_rate: f64,
    pub outcomes: Vec<PredictionOutcome>,
}

struct Candidate {
    agent: Option<String>,
    failure_type: String,
    probability: f64,
    source: &'static str,
    pattern_id: Option<String>,
    basis: String,
    trigger: String,
    expected_at: i64,
    expected_by: i64,
}

impl Analytics {
    /// Predicts the next failures at `now`, records the new predictions (when asked) and
    /// reports how the predictions made in the learning window turned out.
    pub async fn predict(
        &self,
        now: DateTime<Utc>,
        o: &PredictOptions,
    ) -> Result<PredictionReport> {
        let window = Window::last(o.learn_window, now)?;
        // For one agent, only its own patterns can predict a failure on it: they are learned
        // from its history alone (its index), not from the fleet's.
        let patterns = match &o.agent {
            Some(a) => self.learn_agent_patterns(&window, &o.learn, a).await?,
            None => self.learn_patterns(&window, &o.learn).await?,
        };
        if o.record {
            self.record_patterns(&patterns, now).await?;
        }
        let now_us = to_micros(now);
        let mut candidates = Vec::new();
        self.predict_by_sequences(&patterns, now_us, o, &mut candidates)
            .await?;
        self.predict_by_frequencies(&patterns, now_us, o, &mut candidates)
            .await?;
        self.predict_by_correlations(&patterns, now_us, o, &mut candidates)
            .await?;
        self.predict_by_success_rates(&window, o, now_us, &mut candidates)
            .await?;
        if o.agent.is_none() {
            self.predict_by_resource_trends(now_us, &mut candidates)
                .await?;
        }
        if let Some(a) = &o.agent {
            candidates.retain(|c| c.agent.as_deref() == Some(a.as_str()));
        }

        // One prediction per (agent, failure type): the most probable.
        let mut best: BTreeMap<(Option<String>, String), Candidate> = BTreeMap::new();
        for c in candidates {
            let k = (c.agent.clone(), c.failure_type.clone());
            match best.get(&k) {
                Some(b) if b.probability >= c.probability => {}
                _ => {
                    best.insert(k, c);
                }
            }
        }

        let best_for = self
            .best_strategies(&window, &EffectivenessOptions::default())
            .await?;
        let mut predictions = Vec::new();
        for c in best.into_values() {
            let strategy = best_for.get(&c.failure_type).cloned().or_else(|| {
                o.routes
                    .get(&c.failure_type)
                    .and_then(|r| r.first().cloned())
            });
            let action = match (&strategy, &c.agent) {
                (Some(s), Some(a)) => format!("prepare {s} for {} on {a}", c.failure_type),
                (Some(s), None) => format!("prepare {s} for {}", c.failure_type),
                (None, _) => format!("no strategy heals {}: route one", c.failure_type),
            };
            let id = uuid::Uuid::new_v5(
                &uuid::Uuid::NAMESPACE_OID,
                format!(
                    "prediction:{}:{}:{}:{}:{}",
                    c.source,
                    c.pattern_id.as_deref().unwrap_or(""),
                    c.agent.as_deref().unwrap_or(""),
                    c.failure_type,
                    c.trigger
                )
                .as_bytes(),
            );
            predictions.push(Prediction {
                prediction_id: format!("pred-{}", id.simple()),
                agent_id: c.agent,
                failure_type: c.failure_type,
                probability: c.probability,
                source: c.source.into(),
                pattern_id: c.pattern_id,
                basis: c.basis,
                expected_at: format_time(from_micros(c.expected_at.max(now_us))?),
                expected_by: format_time(from_micros(c.expected_by)?),
                expected_in_ms: (c.expected_at - now_us).max(0) / 1000,
                window_ms: (c.expected_by - now_us).max(0) / 1000,
                recommended_strategy: strategy,
                recommended_action: action,
            });
        }
        predictions.sort_by(|a, b| {
            b.probability
                .total_cmp(&a.probability)
                .then(a.prediction_id.cmp(&b.prediction_id))
        });

        let mut recorded = 0;
        if o.record {
            let mut parts = Vec::new();
            for p in &predictions {
                let event_id = format!("{}-made", p.prediction_id);
                if self.store().event_exists(&event_id).await? {
                    continue;
                }
                let mut e = HealEvent::PredictionMade(p.clone()).to_new_event(now);
                e.event_id = event_id;
                parts.push(StreamAppend {
                    stream_id: format!("prediction-{}", p.prediction_id),
                    expected: ExpectedVersion::NoStream,
                    events: vec![e],
                });
            }
            recorded = parts.len();
            if !parts.is_empty() {
                self.store().append_atomic(parts).await?;
            }
        }

        let outcomes = self
            .prediction_outcomes(&window, now_us, o.agent.as_deref())
            .await?;
        let count = |s: &str| outcomes.iter().filter(|o| o.status == s).count() as i64;
        let (confirmed, missed, pending) = (count("confirmed"), count("missed"), count("pending"));
        let judged = (confirmed + missed) as f64;
        Ok(PredictionReport {
            now: format_time(now),
            learned_over: window.describe(),
            patterns_used: patterns.len(),
            predictions,
            recorded,
            confirmed,
            missed,
            pending,
            accuracy: super::ratio(confirmed as f64, judged),
            false_positive_rate: super::ratio(missed as f64, judged),
            outcomes,
        })
    }

    /// Every prediction made in the window and its outcome at `now`.
    pub async fn prediction_outcomes(
        &self,
        window: &Window,
        now_us: i64,
        agent: Option<&str>,
    ) -> Result<Vec<PredictionOutcome>> {
        let rows: Vec<OutcomeRow> = sqlx::query_as(
            "SELECT p.prediction_id, p.agent_id, p.failure_type, p.probability, p.made_at, \
                    p.expected_by, EXISTS ( \
                      SELECT 1 FROM failures f \
                      WHERE f.failure_type = p.failure_type \
                        AND (p.agent_id IS NULL OR f.agent_id = p.agent_id) \
                        AND f.detected_at > p.made_at AND f.detected_at <= p.expected_by \
                        AND f.detected_at < ?3) \
             FROM predictions p \
             WHERE p.made_at >= ?1 AND p.made_at < ?2 AND (?4 IS NULL OR p.agent_id = ?4) \
             ORDER BY p.made_at, p.prediction_id",
        )
        .bind(window.since_us())
        .bind(window.until_us().max(now_us.saturating_add(1)))
        .bind(now_us)
        .bind(agent)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|(id, agent, t, p, made, by, hit)| {
                let status = if hit != 0 {
                    "confirmed"
                } else if by < now_us {
                    "missed"
                } else {
                    "pending"
                };
                Ok(PredictionOutcome {
                    prediction_id: id,
                    agent_id: agent,
                    failure_type: t,
                    probability: p,
                    made_at: format_time(from_micros(made)?),
                    expected_by: format_time(from_micros(by)?),
                    status: status.into(),
                })
            })
            .collect()
    }

    async fn predict_by_sequences(
        &self,
        patterns: &[Pattern],
        now: i64,
        o: &PredictOptions,
        out: &mut Vec<Candidate>,
    ) -> Result<()> {
        let gap = o.learn.sequence_gap.num_microseconds().unwrap_or(i64::MAX);
        let seqs: Vec<&Pattern> = patterns.iter().filter(|p| p.kind == "sequence").collect();
        if seqs.is_empty() {
            return Ok(());
        }
        // The latest two failures per agent (agents that failed within the gap) and fleet-wide.
        let rows: Vec<(Option<String>, String, String, i64, i64)> = sqlx::query_as(
            "SELECT agent, failure_id, failure_type, detected_at, rn FROM ( \
               SELECT agent_id AS agent, failure_id, failure_type, detected_at, \
                 ROW_NUMBER() OVER (PARTITION BY agent_id ORDER BY detected_at DESC, position DESC) AS rn \
               FROM failures WHERE agent_id IS NOT NULL AND detected_at >= ?1 AND detected_at < ?2 \
                 AND (?3 IS NULL OR agent_id = ?3)) WHERE rn <= 2 \
             UNION ALL \
             SELECT NULL, failure_id, failure_type, detected_at, rn FROM ( \
               SELECT failure_id, failure_type, detected_at, \
                 ROW_NUMBER() OVER (ORDER BY detected_at DESC, position DESC) AS rn \
               FROM failures WHERE detected_at >= ?1 AND detected_at < ?2 AND ?3 IS NULL) \
             WHERE rn <= 2",
        )
        .bind(now.saturating_sub(gap.saturating_mul(2)))
        .bind(now)
        .bind(o.agent.as_deref())
        .fetch_all(self.pool())
        .await?;
        // agent -> [(id, type, at)] newest first
        let mut latest: BTreeMap<Option<String>, Vec<(String, String, i64)>> = BTreeMap::new();
        for (agent, id, t, at, _) in rows {
            latest.entry(agent).or_default().push((id, t, at));
        }
        for (agent, recent) in latest {
            let Some((last_id, last_t, last_at)) = recent.first().cloned() else {
                continue;
            };
            if now - last_at > gap {
                continue;
            }
            let before = recent.get(1).filter(|(_, _, at)| last_at - at <= gap);
            for p in &seqs {
                let applies = match (&agent, &p.agent_id, p.scope.as_str()) {
                    (Some(a), Some(pa), "agent") => a == pa,
                    (None, None, "fleet") => true,
                    _ => false,
                };
                if !applies {
                    continue;
                }
                let n = p.failure_types.len();
                let prefix = &p.failure_types[..n - 1];
                let matches = match prefix {
                    [one] => *one == last_t,
                    [a, b] => *b == last_t && before.is_some_and(|(_, t, _)| t == a),
                    _ => false,
                };
                if !matches {
                    continue;
                }
                let expected = last_at + (p.mean_gap_ms.unwrap_or(0.0) * 1000.0) as i64;
                let by = last_at + gap;
                if by <= now {
                    continue;
                }
                out.push(Candidate {
                    agent: agent.clone(),
                    failure_type: p.failure_types[n - 1].clone(),
                    probability: p.confidence,
                    source: "sequence",
                    pattern_id: Some(p.pattern_id.clone()),
                    basis: p.description.clone(),
                    trigger: last_id.clone(),
                    expected_at: expected,
                    expected_by: by,
                });
            }
        }
        Ok(())
    }

    async fn predict_by_frequencies(
        &self,
        patterns: &[Pattern],
        now: i64,
        o: &PredictOptions,
        out: &mut Vec<Candidate>,
    ) -> Result<()> {
        for p in patterns.iter().filter(|p| p.kind == "frequency") {
            if let (Some(want), Some(a)) = (&o.agent, &p.agent_id)
                && want != a
            {
                continue;
            }
            let last: Option<(String, i64)> = sqlx::query_as(
                "SELECT failure_id, detected_at FROM failures \
                 WHERE failure_type = ?1 AND (?2 IS NULL OR agent_id = ?2) AND detected_at < ?3 \
                 ORDER BY detected_at DESC, position DESC LIMIT 1",
            )
            .bind(&p.failure_types[0])
            .bind(p.agent_id.as_deref())
            .bind(now)
            .fetch_optional(self.pool())
            .await?;
            let Some((id, at)) = last else { continue };
            let mean = p.mean_gap_ms.unwrap_or(0.0) * 1000.0;
            let sd = p.gap_stddev_ms.unwrap_or(0.0) * 1000.0;
            let tolerance = (2.0 * sd).max(0.1 * mean).max(1_000_000.0);
            let expected = at + mean as i64;
            let by = expected + tolerance as i64;
            if by <= now || mean <= 0.0 {
                continue;
            }
            out.push(Candidate {
                agent: p.agent_id.clone(),
                failure_type: p.failure_types[0].clone(),
                probability: p.confidence,
                source: "frequency",
                pattern_id: Some(p.pattern_id.clone()),
                basis: p.description.clone(),
                trigger: id,
                expected_at: expected,
                expected_by: by,
            });
        }
        Ok(())
    }

    async fn predict_by_correlations(
        &self,
        patterns: &[Pattern],
        now: i64,
        o: &PredictOptions,
        out: &mut Vec<Candidate>,
    ) -> Result<()> {
        let cw = o
            .learn
            .correlation_window
            .num_microseconds()
            .unwrap_or(i64::MAX);
        for p in patterns.iter().filter(|p| p.kind == "correlation") {
            let last: Option<(String, i64)> = sqlx::query_as(
                "SELECT failure_id, detected_at FROM failures \
                 WHERE failure_type = ?1 AND detected_at >= ?2 AND detected_at < ?3 \
                 ORDER BY detected_at DESC, position DESC LIMIT 1",
            )
            .bind(&p.failure_types[0])
            .bind(now.saturating_sub(cw))
            .bind(now)
            .fetch_optional(self.pool())
            .await?;
            let Some((id, at)) = last else { continue };
            out.push(Candidate {
                agent: None,
                failure_type: p.failure_types[1].clone(),
                probability: p.confidence,
                source: "correlation",
                pattern_id: Some(p.pattern_id.clone()),
                basis: p.description.clone(),
                trigger: id,
                expected_at: at + (p.mean_gap_ms.unwrap_or(0.0) * 1000.0) as i64,
                expected_by: at + cw,
            });
        }
        Ok(())
    }

    /// Resources whose usage share is high (0.85 for memory, 0.8 otherwise) and rising over
    /// the last hour's reports (at least three): exhaustion expected when the least-squares
    /// line reaches the limit.
    async fn predict_by_resource_trends(&self, now: i64, out: &mut Vec<Candidate>) -> Result<()> {
        // (from the log, and the facts kept of archived events)
        let rows: Vec<(String, i64, i64, f64)> = sqlx::query_as(concat!(
            "SELECT e.payload ->> '$.resource_type', e.position, e.occurred_at, ",
            usage_share!(),
            " FROM events e WHERE e.occurred_at >= ?1 AND e.occurred_at < ?2 AND ",
            counted_usage!(),
            " UNION ALL \
             SELECT resource, position, occurred_at, usage_share FROM archived_facts \
             WHERE event_type = 'resource_usage_reported' AND occurred_at >= ?1 \
               AND occurred_at < ?2 \
             ORDER BY 3, 2"
        ))
        .bind(now.saturating_sub(super::HOUR_US))
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        let mut by_resource: BTreeMap<String, Vec<(i64, i64, f64)>> = BTreeMap::new();
        for (r, position, at, share) in rows {
            by_resource
                .entry(r)
                .or_default()
                .push((position, at, share));
        }
        for (resource, points) in by_resource {
            let Some(&(last_position, last_at, last)) = points.last() else {
                continue;
            };
            let threshold = if resource.contains("memory") {
                0.85
            } else {
                0.8
            };
            if points.len() < 3 || last < threshold {
                continue;
            }
            // Least squares over (seconds, share).
            let n = points.len() as f64;
            let xs: Vec<f64> = points
                .iter()
                .map(|p| (p.1 - points[0].1) as f64 / 1e6)
                .collect();
            let mx = xs.iter().sum::<f64>() / n;
            let my = points.iter().map(|p| p.2).sum::<f64>() / n;
            let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
            let sxy: f64 = xs
                .iter()
                .zip(&points)
                .map(|(x, p)| (x - mx) * (p.2 - my))
                .sum();
            if sxx <= 0.0 || sxy <= 0.0 {
                continue; // flat or falling
            }
            let slope = sxy / sxx; // share per second
            let seconds = ((1.0 - last) / slope).clamp(0.0, 86_400.0);
            let expected = last_at + (seconds * 1e6) as i64;
            let by = expected + ((seconds * 1e6) as i64).max(5 * 60 * 1_000_000);
            if by <= now {
                continue;
            }
            out.push(Candidate {
                agent: None,
                failure_type: "resource_exhaustion".into(),
                probability: last.clamp(0.0, 0.99),
                source: "resource_trend",
                pattern_id: None,
                basis: format!(
                    "{resource} at {:.0}% of its limit and rising {:.2} points a minute",
                    last * 100.0,
                    slope * 6000.0
                ),
                trigger: format!("{resource}:{last_position}"),
                expected_at: expected,
                expected_by: by,
            });
        }
        Ok(())
    }

    async fn predict_by_success_rates(
        &self,
        window: &Window,
        o: &PredictOptions,
        now: i64,
        out: &mut Vec<Candidate>,
    ) -> Result<()> {
        // (success signals from the log, and the facts kept of archived events)
        // One agent: its rows through the agent indexes (an `?3 IS NULL OR` test would make
        // SQLite read every failure and success signal of the window).
        let (fa, ea, aa) = match o.agent {
            Some(_) => ("agent_id = ?3", "e.agent_id = ?3", "agent_id = ?3"),
            None => (
                "agent_id IS NOT NULL AND ?3 IS NULL",
                "?3 IS NULL",
                "?3 IS NULL",
            ),
        };
        let sql = format!(
            "WITH f AS (SELECT agent_id, COUNT(*) AS n FROM failures \
                        WHERE detected_at >= ?1 AND detected_at < ?2 AND {fa} GROUP BY agent_id), \
                  s AS (SELECT agent_id, COUNT(*) AS n FROM ( \
                          SELECT e.agent_id FROM events e \
                          WHERE e.occurred_at >= ?1 AND e.occurred_at < ?2 AND {ea} AND {success} \
                          UNION ALL \
                          SELECT agent_id FROM archived_facts \
                          WHERE event_type = 'agent_succeeded' AND occurred_at >= ?1 \
                            AND occurred_at < ?2 AND {aa}) \
                        GROUP BY agent_id), \
                  top AS (SELECT agent_id, failure_type, \
                            ROW_NUMBER() OVER (PARTITION BY agent_id ORDER BY COUNT(*) DESC, failure_type) AS rn \
                          FROM failures WHERE detected_at >= ?1 AND detected_at < ?2 AND {fa} \
                          GROUP BY agent_id, failure_type) \
             SELECT f.agent_id, f.n, COALESCE(s.n, 0), top.failure_type \
             FROM f LEFT JOIN s USING (agent_id) JOIN top ON top.agent_id = f.agent_id AND top.rn = 1",
            success = counted_success!()
        );
        let rows: Vec<(String, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(window.since_us())
            .bind(window.until_us())
            .bind(o.agent.as_deref())
            .fetch_all(self.pool())
            .await?;
        for (agent, failures, successes, top) in rows {
            let total = failures + successes;
            if total < o.min_observations {
                continue;
            }
            let rate = successes as f64 / total as f64;
            if rate >= o.success_rate_threshold {
                continue;
            }
            out.push(Candidate {
                agent: Some(agent.clone()),
                failure_type: top,
                probability: 1.0 - rate,
                source: "success_rate",
                pattern_id: None,
                basis: format!(
                    "agent {agent} succeeded {:.0}% of the time ({successes} successes, {failures} failures)",
                    rate * 100.0
                ),
                // One such prediction per agent and hour.
                trigger: format!("{}", now / super::HOUR_US),
                expected_at: now,
                expected_by: now + super::HOUR_US,
            });
        }
        Ok(())
    }
}

type OutcomeRow = (String, Option<String>, String, f64, i64, i64, i64);
