//! The measured effect of preventions: predictions assigned to act against predictions the
//! holdout kept back.
//!
//! A predicted failure that happened after a prevention was not prevented; one that did not
//! happen may have been averted, or may never have come. Only a comparison tells: the policy
//! keeps back a share of eligible predictions (a seeded hash of the prediction id) and acts on
//! none of them. For each prediction source and prevention action, the report gives the rate
//! at which the predicted failure happened (a failure of its type, on its agent, after the
//! proposal and by the prediction's deadline) among the predictions the holdout assigned to
//! act, whatever became of them (approved and carried out, rejected, left pending, shadow),
//! and among those held back; the difference (held back minus assigned: the failures avoided
//! per eligible prediction) with a 95 % confidence interval (Newcombe's hybrid score
//! interval, from Wilson intervals of each rate); and the cost (actions carried out, agents
//! restarted or taken out of rotation). This is the intention-to-treat comparison: only the
//! holdout's choice is random, so only the two groups it makes are comparable. When people
//! approve by hand, the predictions they approve are not a random share (they may approve the
//! ones they expect to pass anyway), so the comparison of the executed ones alone with the
//! holdout is given beside it as a secondary figure, never as the verdict. Predictions whose
//! deadline has not passed without a failure are pending and not counted. A kind whose
//! interval's lower end is not above zero shows no benefit and is flagged.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{Analytics, Window, WindowInfo};
use crate::error::Result;
use crate::heal::prevention::{self, PreventionView};
use crate::time::parse_time;

/// Below this many settled predictions in either group, a kind's verdict is
/// `insufficient_data` (it is flagged all the same: no benefit is shown).
pub const MIN_GROUP: i64 = 10;

/// One prediction source and prevention action.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreventionEffect {
    pub source: String,
    /// The prevention's actions, joined with `+`.
    pub action: String,
    /// Predictions the holdout assigned to act on (not held back), settled, whatever became
    /// of them, and how many of them the predicted failure followed: the primary comparison.
    pub assigned: i64,
    pub assigned_failed: i64,
    pub assigned_rate: f64,
    /// Predictions the holdout kept back, settled, and how many the failure followed.
    pub held_back: i64,
    pub held_back_failed: i64,
    pub held_back_rate: f64,
    /// `held_back_rate - assigned_rate`: failures avoided per prediction assigned to act
    /// (intention to treat).
    pub reduction: f64,
    /// Its 95 % confidence interval.
    pub ci_low: f64,
    pub ci_high: f64,
    /// Secondary: the assigned predictions whose prevention was carried out (`executed`),
    /// settled, and how many the failure followed. Biased when people choose what to approve.
    pub prevented: i64,
    pub prevented_failed: i64,
    pub prevented_rate: f64,
    /// Secondary: `held_back_rate - prevented_rate`, with its 95 % interval.
    pub executed_reduction: f64,
    pub executed_ci_low: f64,
    pub executed_ci_high: f64,
    /// Predictions of either group whose deadline has not passed (not counted above).
    pub pending: i64,
    /// Actions carried out by these preventions, and agents restarted or taken out of
    /// rotation by them.
    pub actions_taken: i64,
    pub agents_disrupted: i64,
    /// From the primary comparison: `benefit` (the interval is above zero),
    /// `no_benefit_shown`, or `insufficient_data` (fewer than 10 settled predictions in a
    /// group).
    pub verdict: String,
    /// True unless the verdict is `benefit`.
    pub flagged: bool,
}

/// Preventions over a window (by the time they were proposed) and their measured effect.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreventionReport {
    pub window: WindowInfo,
    /// Counts by status.
    pub proposed: i64,
    pub pending: i64,
    pub approved: i64,
    pub rejected: i64,
    pub held_back: i64,
    pub executed: i64,
    pub failed: i64,
    pub shadow: i64,
    pub declined: i64,
    pub effects: Vec<PreventionEffect>,
}

/// Wilson score interval at 95 %.
fn wilson(x: i64, n: i64) -> (f64, f64) {
    if n <= 0 {
        return (0.0, 1.0);
    }
    const Z: f64 = 1.959_963_984_540_054;
    let n = n as f64;
    let p = x as f64 / n;
    let z2 = Z * Z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Newcombe's hybrid score interval (method 10) for `x1/n1 - x2/n2`.
pub fn difference_interval(x1: i64, n1: i64, x2: i64, n2: i64) -> (f64, f64) {
    let p1 = if n1 > 0 { x1 as f64 / n1 as f64 } else { 0.0 };
    let p2 = if n2 > 0 { x2 as f64 / n2 as f64 } else { 0.0 };
    let (l1, u1) = wilson(x1, n1);
    let (l2, u2) = wilson(x2, n2);
    let d = p1 - p2;
    let low = d - ((p1 - l1).powi(2) + (u2 - p2).powi(2)).sqrt();
    let high = d + ((u1 - p1).powi(2) + (p2 - l2).powi(2)).sqrt();
    (low.max(-1.0), high.min(1.0))
}

impl Analytics {
    /// The preventions proposed in the window and their effect, judged at the window's end.
    pub async fn prevention_report(&self, window: &Window) -> Result<PreventionReport> {
        let all = prevention::list(
            self.store(),
            Some(window.since_us()),
            Some(window.until_us()),
        )
        .await?;
        let now = window.until_us();
        let count = |s: &str| all.iter().filter(|v| v.status == s).count() as i64;
        #[derive(Default)]
        struct Acc {
            assigned: i64,
            assigned_failed: i64,
            prevented: i64,
            prevented_failed: i64,
            held: i64,
            held_failed: i64,
            pending: i64,
            actions: i64,
            agents: BTreeSet<String>,
        }
        let mut groups: BTreeMap<(String, String), Acc> = BTreeMap::new();
        for v in &all {
            let acc = groups
                .entry((v.source.clone(), v.actions.join("+")))
                .or_default();
            let Some(outcome) = self.predicted_failure_happened(v, now).await? else {
                acc.pending += 1;
                continue;
            };
            if v.holdout.held_back {
                acc.held += 1;
                acc.held_failed += i64::from(outcome);
                continue;
            }
            acc.assigned += 1;
            acc.assigned_failed += i64::from(outcome);
            if v.status == "executed" {
                acc.prevented += 1;
                acc.prevented_failed += i64::from(outcome);
                acc.actions += v.actions.len() as i64;
                for (name, planned) in v.actions.iter().zip(&v.planned) {
                    if (name == "restart_agent" || name == "unregister_agent")
                        && let Some(a) = planned.get("agent_id").and_then(|a| a.as_str())
                    {
                        acc.agents.insert(a.to_owned());
                    }
                }
            }
        }
        let rate = |x: i64, n: i64| if n > 0 { x as f64 / n as f64 } else { 0.0 };
        let effects = groups
            .into_iter()
            .map(|((source, action), a)| {
                let (lo, hi) =
                    difference_interval(a.held_failed, a.held, a.assigned_failed, a.assigned);
                let (xlo, xhi) =
                    difference_interval(a.held_failed, a.held, a.prevented_failed, a.prevented);
                let verdict = if a.held < MIN_GROUP || a.assigned < MIN_GROUP {
                    "insufficient_data"
                } else if lo > 0.0 {
                    "benefit"
                } else {
                    "no_benefit_shown"
                };
                PreventionEffect {
                    source,
                    action,
                    assigned: a.assigned,
                    assigned_failed: a.assigned_failed,
                    assigned_rate: rate(a.assigned_failed, a.assigned),
                    held_back: a.held,
                    held_back_failed: a.held_failed,
                    held_back_rate: rate(a.held_failed, a.held),
                    reduction: rate(a.held_failed, a.held) - rate(a.assigned_failed, a.assigned),
                    ci_low: lo,
                    ci_high: hi,
                    prevented: a.prevented,
                    prevented_failed: a.prevented_failed,
                    prevented_rate: rate(a.prevented_failed, a.prevented),
                    executed_reduction: rate(a.held_failed, a.held)
                        - rate(a.prevented_failed, a.prevented),
                    executed_ci_low: xlo,
                    executed_ci_high: xhi,
                    pending: a.pending,
                    actions_taken: a.actions,
                    agents_disrupted: a.agents.len() as i64,
                    flagged: verdict != "benefit",
                    verdict: verdict.into(),
                }
            })
            .collect();
        Ok(PreventionReport {
            window: window.describe(),
            proposed: all.len() as i64,
            pending: count("pending"),
            approved: count("approved"),
            rejected: count("rejected"),
            held_back: count("held_back"),
            executed: count("executed"),
            failed: count("failed"),
            shadow: count("shadow"),
            declined: count("declined"),
            effects,
        })
    }

    /// Whether a failure of the predicted type (on the predicted agent) was detected after
    /// the proposal and by the prediction's deadline; `None` while the deadline is after
    /// `now` and none was.
    async fn predicted_failure_happened(
        &self,
        v: &PreventionView,
        now: i64,
    ) -> Result<Option<bool>> {
        let by = crate::time::to_micros(parse_time(&v.expected_by)?);
        let hit: i64 = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM failures f \
               WHERE f.failure_type = ?1 AND (?2 IS NULL OR f.agent_id = ?2) \
                 AND f.detected_at > ?3 AND f.detected_at <= ?4 AND f.detected_at < ?5)",
        )
        .bind(&v.failure_type)
        .bind(v.agent_id.as_deref())
        .bind(v.proposed_at_us)
        .bind(by)
        .bind(now)
        .fetch_one(self.pool())
        .await?;
        Ok(if hit != 0 {
            Some(true)
        } else if by < now {
            Some(false)
        } else {
            None
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newcombe_interval_matches_the_published_example() {
        // Newcombe (1998), table II, example (a): 56/70 - 48/80, method 10: 0.0524 to 0.3339.
        let (lo, hi) = difference_interval(56, 70, 48, 80);
        assert!((lo - 0.0524).abs() < 0.0005, "{lo}");
        assert!((hi - 0.3339).abs() < 0.0005, "{hi}");
    }
}
