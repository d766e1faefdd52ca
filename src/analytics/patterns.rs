//! Pattern learning in SQL, over the per-failure read model of a window.
//!
//! Four kinds, each with a support (how many times it was seen) and a confidence in [0, 1];
//! a pattern is kept when `support >= min_occurrences` and its confidence reaches
//! `min_confidence` (defaults 5 and 0.7, as upstream). For sequences and correlations the
//! test is on the confidence's lower bound (Wilson score, one-sided 95 %), not the raw ratio:
//! across the hundreds of type combinations a week of failures holds, a raw 6 of 7 turns up
//! by chance in random data, while 12 of 12 does not. So a perfect pattern needs about seven
//! occurrences to be reported.
//!
//! - **sequence**: an n-gram (2 or 3) of consecutive failure types, each step within
//!   `sequence_gap`; per agent (the agent's own history) and fleet-wide (all failures in time
//!   order). Confidence is `P(next | prefix)`: the n-gram's count over the count of its
//!   prefix (for 2-grams: all occurrences of the first type in that scope).
//! - **frequency**: a failure type recurring at a regular interval, per agent and fleet-wide.
//!   Confidence is `1 - cv'`, where `cv'` is the coefficient of variation of the intervals
//!   raised by three standard errors (`cv x (1 + 3 / sqrt(2k))` for k intervals): a Poisson
//!   process has cv near 1, a timer near 0, and a few random intervals that happen to look
//!   even do not pass. A regular interval also needs at least ten occurrences.
//! - **correlation**: type B follows type A within `correlation_window`, fleet-wide, more often
//!   than chance. Support is the number of A occurrences followed by a B, confidence that count
//!   over all A occurrences, and lift the confidence over the chance that a random window of
//!   that length holds a B (`1 - exp(-rate_B x window)`); lift must reach `min_lift` (1.5).
//!   (Upstream capped strength at 1.0 and then required 1.5, so it never found one.)
//! - **temporal**: a failure type's count in one hour of the day (UTC) at least `spike_factor`
//!   times its mean hourly count, or on one day of the week at least that times its daily
//!   mean. Confidence is the share of the window's whole days (weeks) on which that hour
//!   (weekday) held at least `spike_factor` times that day's (week's) mean: a daily spike scores
//!   1.0, a one-off burst 1/days. A spike must recur to be a pattern, so hour-of-day patterns
//!   need a window of at least two days (and are judged by the lower bound, as sequences: in
//!   a one-week window the spike must show on all seven days) and day-of-week patterns one of
//!   at least two weeks.
//!
//! Pattern ids are derived from content (kind, scope, agent, types, hour or weekday), so they
//! are the same in every run and every process. Failures are ordered by detection time; ties
//! (the same microsecond) in index order, which costs no sort where an index gives the order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{Analytics, Window};
use crate::error::Result;
use crate::events::HealEvent;
use crate::time::to_micros;
use crate::{ExpectedVersion, StreamAppend};

/// Occurrences a regular interval needs, whatever `min_occurrences` says: with fewer, random
/// failures look regular too often (with five, about one agent and type in a thousand).
pub const MIN_FREQUENCY_OCCURRENCES: i64 = 10;

/// Learning thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct LearnOptions {
    pub min_occurrences: i64,
    pub min_confidence: f64,
    /// Longest gap between two steps of a sequence.
    pub sequence_gap: chrono::Duration,
    pub correlation_window: chrono::Duration,
    pub min_lift: f64,
    pub spike_factor: f64,
}

impl Default for LearnOptions {
    fn default() -> Self {
        LearnOptions {
            min_occurrences: 5,
            min_confidence: 0.7,
            sequence_gap: chrono::Duration::hours(1),
            correlation_window: chrono::Duration::seconds(10),
            min_lift: 1.5,
            spike_factor: 2.0,
        }
    }
}

/// A learned pattern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pattern {
    pub pattern_id: String,
    /// `sequence`, `frequency`, `correlation` or `temporal`.
    pub kind: String,
    /// `agent` (seen in one agent's own history) or `fleet`.
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The failure types, in order (for a sequence, the last one is the one predicted).
    pub failure_types: Vec<String>,
    pub support: i64,
    pub confidence: f64,
    /// Sequences and correlations: the confidence's lower bound (Wilson, one-sided 95 %),
    /// which must reach the minimum confidence for the pattern to be kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence_lower: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lift: Option<f64>,
    /// Sequence and correlation: the mean time from the previous step to the last one.
    /// Frequency: the mean interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_gap_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap_stddev_ms: Option<f64>,
    /// Temporal: the hour of day (UTC) or the day of week (0 = Sunday).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hour: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekday: Option<i64>,
    pub description: String,
}

/// What `learn` returns: the patterns, and how many of them were recorded as new events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LearnReport {
    pub window: super::WindowInfo,
    pub patterns: Vec<Pattern>,
    pub recorded: usize,
}

/// The pattern's stable id: a hash of what the pattern is, not of its numbers.
pub fn pattern_id(
    kind: &str,
    scope: &str,
    agent: Option<&str>,
    types: &[String],
    slot: Option<i64>,
) -> String {
    let mut h = Sha256::new();
    let key = json!([kind, scope, agent, types, slot]).to_string();
    h.update(key.as_bytes());
    let d = h.finalize();
    let hex: String = d.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("pat-{hex}")
}

const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

#[allow(clippy::too_many_arguments)]
fn make(
    kind: &str,
    scope: &str,
    agent: Option<String>,
    types: Vec<String>,
    support: i64,
    confidence: f64,
    lift: Option<f64>,
    gap: Option<(f64, f64)>,
    hour: Option<i64>,
    weekday: Option<i64>,
) -> Pattern {
    let slot = hour.or(weekday.map(|w| 100 + w));
    let id = pattern_id(kind, scope, agent.as_deref(), &types, slot);
    let who = match (&agent, scope) {
        (Some(a), _) => format!("on agent {a}"),
        (None, "agent") => "on the same agent".into(),
        _ => "fleet-wide".into(),
    };
    let description = match kind {
        "sequence" => format!(
            "{} is followed by {} {who} ({:.0}% of the time, {support} times)",
            types[..types.len() - 1].join(" then "),
            types[types.len() - 1],
            confidence * 100.0
        ),
        "frequency" => format!(
            "{} recurs about every {:.1} s {who} ({support} times)",
            types[0],
            gap.map_or(0.0, |g| g.0 / 1000.0)
        ),
        "correlation" => format!(
            "{} follows {} within the correlation window ({:.0}% of the time, lift {:.1})",
            types[1],
            types[0],
            confidence * 100.0,
            lift.unwrap_or(0.0)
        ),
        _ => match (hour, weekday) {
            (Some(h), _) => format!("{} spikes at {h:02}:00 UTC ({support} times)", types[0]),
            (_, Some(w)) => format!(
                "{} spikes on {}s ({support} times)",
                types[0],
                WEEKDAYS[w.clamp(0, 6) as usize]
            ),
            _ => types[0].clone(),
        },
    };
    Pattern {
        pattern_id: id,
        kind: kind.into(),
        scope: scope.into(),
        agent_id: agent,
        failure_types: types,
        support,
        confidence: confidence.clamp(0.0, 1.0),
        confidence_lower: None,
        lift,
        mean_gap_ms: gap.map(|g| g.0),
        gap_stddev_ms: gap.map(|g| g.1),
        hour,
        weekday,
        description,
    }
}

impl Analytics {
    /// Learns patterns from the failures detected in the window (nothing is recorded).
    pub async fn learn_patterns(&self, window: &Window, o: &LearnOptions) -> Result<Vec<Pattern>> {
        // The kinds are independent queries: they run at once, each on its own reader
        // connection (SQLite runs one query on one core).
        let (a, b, c, d, e, f) = tokio::try_join!(
            self.sequences(window, o, "agent", None),
            self.sequences(window, o, "fleet", None),
            self.frequencies(window, o, "agent", None),
            self.frequencies(window, o, "fleet", None),
            self.correlations(window, o),
            self.temporal(window, o),
        )?;
        let mut out: Vec<Pattern> = [a, b, c, d, e, f].into_iter().flatten().collect();
        sort_patterns(&mut out);
        Ok(out)
    }

    /// One agent's own patterns (its sequences and regular intervals, learned from its history
    /// alone): the same as `learn_patterns`' patterns with that `agent_id`, read through the
    /// agent index, so the cost grows with that agent's failures in the window, not the fleet's.
    /// Only these can predict a failure on that agent.
    pub async fn learn_agent_patterns(
        &self,
        window: &Window,
        o: &LearnOptions,
        agent: &str,
    ) -> Result<Vec<Pattern>> {
        let (a, b) = tokio::try_join!(
            self.sequences(window, o, "agent", Some(agent)),
            self.frequencies(window, o, "agent", Some(agent)),
        )?;
        let mut out: Vec<Pattern> = a.into_iter().chain(b).collect();
        sort_patterns(&mut out);
        Ok(out)
    }

    /// Learns patterns and records the new or changed ones as `pattern_learned` events (one
    /// atomic append); patterns the log already has with the same numbers are not recorded
    /// again, so relearning unchanged data writes nothing.
    pub async fn learn_and_record(
        &self,
        window: &Window,
        o: &LearnOptions,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<LearnReport> {
        let patterns = self.learn_patterns(window, o).await?;
        let recorded = self.record_patterns(&patterns, now).await?;
        Ok(LearnReport {
            window: window.describe(),
            patterns,
            recorded,
        })
    }

    /// Records the patterns that are new or changed as `pattern_learned` events (one atomic
    /// append); returns how many were recorded.
    pub async fn record_patterns(
        &self,
        patterns: &[Pattern],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<usize> {
        let mut parts = Vec::new();
        for p in patterns {
            let stored: Option<String> =
                sqlx::query_scalar("SELECT content FROM patterns WHERE pattern_id = ?")
                    .bind(&p.pattern_id)
                    .fetch_optional(self.pool())
                    .await?;
            let same = stored
                .and_then(|c| serde_json::from_str::<Pattern>(&c).ok())
                .is_some_and(|old| old == *p);
            if same {
                continue;
            }
            let mut e = HealEvent::PatternLearned(p.clone()).to_new_event(now);
            e.event_id = uuid::Uuid::new_v5(
                &uuid::Uuid::NAMESPACE_OID,
                format!("pattern_learned:{}:{}", p.pattern_id, to_micros(now)).as_bytes(),
            )
            .to_string();
            parts.push(StreamAppend {
                stream_id: format!("pattern-{}", p.pattern_id),
                expected: ExpectedVersion::Any,
                events: vec![e],
            });
        }
        let recorded = parts.len();
        if !parts.is_empty() {
            self.store().append_atomic(parts).await?;
        }
        Ok(recorded)
    }

    /// `agent`: only that agent's history (scope "agent").
    async fn sequences(
        &self,
        w: &Window,
        o: &LearnOptions,
        scope: &str,
        agent: Option<&str>,
    ) -> Result<Vec<Pattern>> {
        let mut out = Vec::new();
        let gap = o.sequence_gap.num_microseconds().unwrap_or(i64::MAX);
        let (partition, agent_col) = if scope == "agent" {
            ("PARTITION BY agent_id", "agent_id")
        } else {
            ("", "NULL")
        };
        {
            let filter = match (scope, agent) {
                ("agent", Some(_)) => "AND agent_id = ?6",
                // (?6, the agent, is NULL here: every query names its parameters)
                ("agent", None) => "AND agent_id IS NOT NULL AND ?6 IS NULL",
                _ => "AND ?6 IS NULL",
            };
            // s: each failure with the one or two before it (in its scope). g: one grouping
            // pass for all n-grams: the previous types are kept only when close enough, so
            // that 1-, 2- and 3-gram counts all derive from g's (at most types^3 per agent)
            // groups rather than from three sorts of every failure.
            let sql = format!(
                "WITH s AS ( \
                   SELECT {agent_col} AS agent, failure_type AS t, detected_at AS at, \
                     LAG(failure_type) OVER w AS p1, LAG(detected_at) OVER w AS p1_at, \
                     LAG(failure_type, 2) OVER w AS p2, LAG(detected_at, 2) OVER w AS p2_at \
                   FROM failures WHERE detected_at >= ?1 AND detected_at < ?2 {filter} \
                   WINDOW w AS ({partition} ORDER BY detected_at, failure_type)), \
                 g AS ( \
                   SELECT agent, \
                     CASE WHEN p1 IS NOT NULL AND at - p1_at <= ?3 AND p2 IS NOT NULL \
                          AND p1_at - p2_at <= ?3 THEN p2 END AS q2, \
                     CASE WHEN p1 IS NOT NULL AND at - p1_at <= ?3 THEN p1 END AS q1, \
                     t, COUNT(*) AS n, SUM(at - p1_at) AS gs, \
                     SUM(CAST(at - p1_at AS REAL) * (at - p1_at)) AS gs2 \
                   FROM s GROUP BY 1, 2, 3, 4), \
                 firsts AS (SELECT agent, t, SUM(n) AS n FROM g GROUP BY agent, t), \
                 bi AS (SELECT agent, q1 AS p1, t, SUM(n) AS n, SUM(gs) * 1.0 / SUM(n) AS g, \
                          SUM(gs2) / SUM(n) AS g2 \
                        FROM g WHERE q1 IS NOT NULL GROUP BY agent, q1, t), \
                 tri AS (SELECT agent, q2 AS p2, q1 AS p1, t, n, gs * 1.0 / n AS g, gs2 / n AS g2 \
                         FROM g WHERE q2 IS NOT NULL) \
                 SELECT bi.agent, NULL, bi.p1, bi.t, bi.n, f.n, bi.g, bi.g2 \
                 FROM bi JOIN firsts f ON f.agent IS bi.agent AND f.t = bi.p1 \
                 WHERE bi.n >= ?4 AND bi.n >= ?5 * f.n \
                 UNION ALL \
                 SELECT tri.agent, tri.p2, tri.p1, tri.t, tri.n, bi.n, tri.g, tri.g2 \
                 FROM tri JOIN bi ON bi.agent IS tri.agent AND bi.p1 = tri.p2 AND bi.t = tri.p1 \
                 WHERE tri.n >= ?4 AND tri.n >= ?5 * bi.n"
            );
            let rows: Vec<SequenceRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(w.since_us())
                .bind(w.until_us())
                .bind(gap)
                .bind(o.min_occurrences)
                .bind(o.min_confidence)
                .bind(agent)
                .fetch_all(self.pool())
                .await?;
            for (agent, p2, p1, t, n, base, g, g2) in rows {
                let lower = wilson_lower(n, base);
                if lower < o.min_confidence {
                    continue;
                }
                let mut types = Vec::new();
                types.extend(p2);
                types.push(p1);
                types.push(t);
                let mut p = make(
                    "sequence",
                    scope,
                    agent,
                    types,
                    n,
                    n as f64 / base.max(1) as f64,
                    None,
                    Some(gap_stats(g, g2)),
                    None,
                    None,
                );
                p.confidence_lower = Some(lower);
                out.push(p);
            }
        }
        Ok(out)
    }

    /// `agent`: only that agent's history (scope "agent").
    async fn frequencies(
        &self,
        w: &Window,
        o: &LearnOptions,
        scope: &str,
        agent: Option<&str>,
    ) -> Result<Vec<Pattern>> {
        let mut out = Vec::new();
        let (partition, agent_col, filter) = match (scope, agent) {
            ("agent", Some(_)) => (
                "PARTITION BY agent_id, failure_type",
                "agent_id",
                "AND agent_id = ?4",
            ),
            // (?4, the agent, is NULL here: every query names its parameters)
            ("agent", None) => (
                "PARTITION BY agent_id, failure_type",
                "agent_id",
                "AND agent_id IS NOT NULL AND ?4 IS NULL",
            ),
            _ => ("PARTITION BY failure_type", "NULL", "AND ?4 IS NULL"),
        };
        {
            let sql = format!(
                "WITH i AS ( \
                   SELECT {agent_col} AS agent, failure_type AS t, \
                     detected_at - LAG(detected_at) OVER ({partition} ORDER BY detected_at) AS d \
                   FROM failures WHERE detected_at >= ?1 AND detected_at < ?2 {filter}) \
                 SELECT agent, t, COUNT(d) + 1, AVG(d), AVG(CAST(d AS REAL) * d) FROM i WHERE d IS NOT NULL \
                 GROUP BY agent, t HAVING COUNT(d) + 1 >= ?3 AND AVG(d) > 0"
            );
            let rows: Vec<(Option<String>, String, i64, f64, f64)> =
                sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(w.since_us())
                    .bind(w.until_us())
                    .bind(o.min_occurrences)
                    .bind(agent)
                    .fetch_all(self.pool())
                    .await?;
            for (agent, t, n, mean, mean2) in rows {
                let (m, sd) = gap_stats(mean, mean2);
                // The coefficient of variation's upper bound (two standard errors): a handful
                // of random intervals that happen to look even must not make a pattern.
                let k = (n - 1) as f64;
                let conf = (1.0 - (sd / m) * (1.0 + 3.0 / (2.0 * k).sqrt())).max(0.0);
                if conf >= o.min_confidence && n >= MIN_FREQUENCY_OCCURRENCES {
                    out.push(make(
                        "frequency",
                        scope,
                        agent,
                        vec![t],
                        n,
                        conf,
                        None,
                        Some((m, sd)),
                        None,
                        None,
                    ));
                }
            }
        }
        Ok(out)
    }

    async fn correlations(&self, w: &Window, o: &LearnOptions) -> Result<Vec<Pattern>> {
        let mut out = Vec::new();
        let cw = o.correlation_window.num_microseconds().unwrap_or(i64::MAX);
        // For each A occurrence, the types that follow it within the window (once per type).
        let rows: Vec<(String, String, i64, f64)> = sqlx::query_as(
            "WITH pairs AS ( \
               SELECT a.position AS ap, a.failure_type AS at, b.failure_type AS bt, \
                      MIN(b.detected_at - a.detected_at) AS lag \
               FROM failures a INDEXED BY failures_by_detected \
               JOIN failures b INDEXED BY failures_by_detected \
                 ON b.detected_at > a.detected_at AND b.detected_at <= a.detected_at + ?3 \
                AND b.detected_at < ?2 \
               WHERE a.detected_at >= ?1 AND a.detected_at < ?2 \
               GROUP BY a.position, b.failure_type) \
             SELECT at, bt, COUNT(*), AVG(lag) FROM pairs GROUP BY at, bt HAVING COUNT(*) >= ?4",
        )
        .bind(w.since_us())
        .bind(w.until_us())
        .bind(cw)
        .bind(o.min_occurrences)
        .fetch_all(self.pool())
        .await?;
        if rows.is_empty() {
            return Ok(out);
        }
        let counts: BTreeMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
            "SELECT failure_type, COUNT(*) FROM failures \
             WHERE detected_at >= ?1 AND detected_at < ?2 GROUP BY failure_type",
        )
        .bind(w.since_us())
        .bind(w.until_us())
        .fetch_all(self.pool())
        .await?
        .into_iter()
        .collect();
        let length = w.length_us() as f64;
        for (a, b, n, lag) in rows {
            let (Some(&na), Some(&nb)) = (counts.get(&a), counts.get(&b)) else {
                continue;
            };
            let conf = n as f64 / na.max(1) as f64;
            let chance = 1.0 - (-(nb as f64) * cw as f64 / length).exp();
            let lift = if chance > 0.0 { conf / chance } else { 0.0 };
            let lower = wilson_lower(n, na);
            if lower >= o.min_confidence && lift >= o.min_lift {
                let mut p = make(
                    "correlation",
                    "fleet",
                    None,
                    vec![a, b],
                    n,
                    conf,
                    Some(lift),
                    Some((lag / 1000.0, 0.0)),
                    None,
                    None,
                );
                p.confidence_lower = Some(lower);
                out.push(p);
            }
        }
        Ok(out)
    }

    async fn temporal(&self, w: &Window, o: &LearnOptions) -> Result<Vec<Pattern>> {
        let mut out = Vec::new();
        const DAY: i64 = 86_400_000_000;
        const WEEK: i64 = 7 * DAY;
        // (slot expression, period expression, slots per period, period length, minimum
        // periods): hour of day within days, weekday within weeks (day 0 of the epoch was a
        // Thursday, so weekday = (day + 4) % 7 with 0 = Sunday, and weeks start on Thursdays).
        for (slot, period, slots, length, min_periods, is_hour) in [
            (
                "(detected_at / 3600000000) % 24",
                "detected_at / 86400000000",
                24.0,
                DAY,
                2,
                true,
            ),
            (
                "(detected_at / 86400000000 + 4) % 7",
                "detected_at / 604800000000",
                7.0,
                WEEK,
                2,
                false,
            ),
        ] {
            let periods = (w.length_us() as f64 / length as f64).floor();
            if periods < f64::from(min_periods) {
                continue;
            }
            // Per type, slot and period: the count; a period "spikes" in a slot when the slot
            // holds at least spike_factor times that period's mean per slot.
            let sql = format!(
                "WITH c AS ( \
                   SELECT failure_type AS t, {period} AS p, {slot} AS s, COUNT(*) AS n \
                   FROM failures WHERE detected_at >= ?1 AND detected_at < ?2 \
                   GROUP BY t, p, s), \
                 per AS (SELECT t, p, SUM(n) AS tot FROM c GROUP BY t, p), \
                 tot AS (SELECT t, SUM(n) AS total FROM c GROUP BY t) \
                 SELECT c.t, c.s, SUM(c.n), \
                   SUM(CASE WHEN c.n * {slots} >= ?3 * per.tot THEN 1 ELSE 0 END), tot.total \
                 FROM c JOIN per ON per.t = c.t AND per.p = c.p JOIN tot ON tot.t = c.t \
                 GROUP BY c.t, c.s HAVING SUM(c.n) >= ?4"
            );
            let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(w.since_us())
                .bind(w.until_us())
                .bind(o.spike_factor)
                .bind(o.min_occurrences)
                .fetch_all(self.pool())
                .await?;
            for (t, s, n, spiking, total) in rows {
                let mean = total as f64 / slots;
                let ratio = n as f64 / mean;
                let conf = (spiking as f64 / periods).min(1.0);
                // Days are plentiful: judge a daily spike by its lower bound, as sequences.
                // Weeks are few: a weekly spike needs the raw share.
                let lower = wilson_lower(spiking.min(periods as i64), periods as i64);
                let passes = if is_hour { lower } else { conf };
                if ratio >= o.spike_factor && passes >= o.min_confidence {
                    let (hour, weekday) = if is_hour {
                        (Some(s), None)
                    } else {
                        (None, Some(s))
                    };
                    let mut p = make(
                        "temporal",
                        "fleet",
                        None,
                        vec![t],
                        n,
                        conf,
                        Some(ratio),
                        None,
                        hour,
                        weekday,
                    );
                    if is_hour {
                        p.confidence_lower = Some(lower);
                    }
                    out.push(p);
                }
            }
        }
        Ok(out)
    }
}

/// The order patterns are reported in: by kind, the most confident first.
fn sort_patterns(out: &mut [Pattern]) {
    out.sort_by(|a, b| {
        a.kind
            .cmp(&b.kind)
            .then(b.confidence.total_cmp(&a.confidence))
            .then(b.support.cmp(&a.support))
            .then(a.pattern_id.cmp(&b.pattern_id))
    });
}

/// The lower bound of the Wilson score interval (one-sided 95 %) for `hits` of `trials`.
pub fn wilson_lower(hits: i64, trials: i64) -> f64 {
    if trials <= 0 {
        return 0.0;
    }
    const Z: f64 = 1.645;
    let n = trials as f64;
    let p = (hits as f64 / n).clamp(0.0, 1.0);
    let z2 = Z * Z;
    let centre = p + z2 / (2.0 * n);
    let margin = Z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - margin) / (1.0 + z2 / n)).max(0.0)
}

/// Mean and standard deviation (in ms) from the mean and mean square of microsecond gaps.
fn gap_stats(mean_us: f64, mean2_us: f64) -> (f64, f64) {
    let var = (mean2_us - mean_us * mean_us).max(0.0);
    (mean_us / 1000.0, var.sqrt() / 1000.0)
}

/// agent, first of a 3-gram, previous type, next type, count, prefix count, mean gap, mean
/// squared gap.
type SequenceRow = (
    Option<String>,
    Option<String>,
    String,
    String,
    i64,
    i64,
    f64,
    f64,
);
