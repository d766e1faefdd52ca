//! Preventions: predictions that act before the failure.
//!
//! A prediction at or above the policy's probability becomes a *proposed* prevention: the
//! first strategy (the prediction's recommended one, then its failure type's route) whose
//! [`Strategy::prevent`](crate::heal::Strategy::prevent) offers an action on its current
//! state. Everything is an event in the stream `prevention-<prediction_id>`:
//!
//! - `prevention_proposed` (version 1): the prediction, the strategy, the actions, the reason,
//!   the numbers, and the holdout's choice (a seeded hash of the prediction id: a held-back
//!   prediction is recorded and never acted on);
//! - `prevention_approved` or `prevention_rejected` (version 2), by a person (`prevent approve
//!   | reject`) or by the configured policy, appended at version 1: of two approvals (two
//!   processes) one is stored, the other is refused as a conflict, so a prevention acts once;
//! - `action_executed` for each action the coordinator carried out, and `prevention_executed`
//!   with the outcome (the coordinator's, or the caller's report for delegated actions).
//!
//! A prevention's state is a fold of its stream ([`PreventionView::fold`]). The `preventions`
//! read model (migrations/V14) keeps, by trigger, what that fold needs of each stream (the
//! latest proposal, decision and outcome), so that lists and reports read the preventions of
//! their window, and keep those whose events were archived; one prevention ([`get`]) is read
//! from its stream, at the version an approval is appended at.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::events::{HealEvent, HoldoutChoice};
use crate::store::Store;
use crate::time::{format_time, from_micros};

/// Prefix of every prevention stream.
pub const PREVENTION_STREAM_PREFIX: &str = "prevention-";

/// The stream of the prevention of a prediction.
pub fn prevention_stream(prediction_id: &str) -> String {
    format!("{PREVENTION_STREAM_PREFIX}{prediction_id}")
}

/// The prevention id of a prediction (`pred-X` gives `prev-X`).
pub fn prevention_id(prediction_id: &str) -> String {
    match prediction_id.strip_prefix("pred-") {
        Some(rest) => format!("prev-{rest}"),
        None => format!("prev-{prediction_id}"),
    }
}

/// The prediction id of a prevention id.
pub fn prediction_of(prevention_id: &str) -> String {
    match prevention_id.strip_prefix("prev-") {
        Some(rest) => format!("pred-{rest}"),
        None => prevention_id.to_owned(),
    }
}

/// The `[prevention]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PreventionPolicy {
    /// Predictions at or above this probability are proposed (0..=1).
    pub min_probability: f64,
    /// The share of eligible predictions (above the probability, with an offered action)
    /// kept back and never acted on: the comparison that measures preventions (0..=0.5).
    pub holdout_share: f64,
    /// The seed of the holdout's hash.
    pub holdout_seed: u64,
    /// Automatic approval; absent: a person approves every prevention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<AutoApproval>,
}

impl Default for PreventionPolicy {
    fn default() -> Self {
        PreventionPolicy {
            min_probability: 0.6,
            holdout_share: 0.1,
            holdout_seed: 0,
            auto: None,
        }
    }
}

/// `[prevention.auto]`: which proposals the policy approves by itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutoApproval {
    /// Only predictions at or above this probability.
    pub min_probability: f64,
    /// Only proposals whose every action is one of these (`restart_agent`, `set_concurrency`,
    /// ...). Empty: none.
    pub actions: Vec<String>,
    /// At most this many automatic approvals per agent in any hour.
    pub max_per_agent_per_hour: u32,
}

impl Default for AutoApproval {
    fn default() -> Self {
        AutoApproval {
            min_probability: 0.8,
            actions: Vec::new(),
            max_per_agent_per_hour: 1,
        }
    }
}

impl PreventionPolicy {
    /// One line naming the first bad setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, v: f64, why: &str| {
            Err(Error::InvalidInput(format!(
                "invalid configuration: prevention.{key} = {v}: {why}"
            )))
        };
        if !(0.0..=1.0).contains(&self.min_probability) {
            return bad(
                "min_probability",
                self.min_probability,
                "must be between 0 and 1",
            );
        }
        if !(0.0..=0.5).contains(&self.holdout_share) {
            return bad(
                "holdout_share",
                self.holdout_share,
                "must be between 0 and 0.5",
            );
        }
        if let Some(a) = &self.auto {
            if !(0.0..=1.0).contains(&a.min_probability) {
                return bad(
                    "auto.min_probability",
                    a.min_probability,
                    "must be between 0 and 1",
                );
            }
            for name in &a.actions {
                if !KNOWN_ACTIONS.contains(&name.as_str()) {
                    return Err(Error::InvalidInput(format!(
                        "invalid configuration: prevention.auto.actions: unknown action `{name}`, \
                         expected one of {}",
                        KNOWN_ACTIONS.join(", ")
                    )));
                }
            }
        }
        Ok(())
    }

    /// Whether this is the default policy (the configuration leaves it out of its record).
    pub fn is_default(&self) -> bool {
        *self == PreventionPolicy::default()
    }

    /// The holdout's choice for a prediction.
    pub fn holdout(&self, prediction_id: &str) -> HoldoutChoice {
        holdout(self.holdout_seed, self.holdout_share, prediction_id)
    }

    /// The policy's verdict on approving a proposal by itself: `Err(why not)` or `Ok(())`.
    /// `approved_last_hour` counts its automatic approvals on the agent in the hour before.
    pub fn auto_verdict(
        &self,
        probability: f64,
        actions: &[String],
        approved_last_hour: u64,
    ) -> std::result::Result<(), String> {
        let Some(a) = &self.auto else {
            return Err("no automatic approval is configured: a person approves".into());
        };
        if probability < a.min_probability {
            return Err(format!(
                "probability {probability:.2} is below the automatic approval's {:.2}",
                a.min_probability
            ));
        }
        if let Some(x) = actions.iter().find(|x| !a.actions.contains(x)) {
            return Err(format!(
                "action {x} is not among the automatically approved ones ({})",
                if a.actions.is_empty() {
                    "none".to_owned()
                } else {
                    a.actions.join(", ")
                }
            ));
        }
        if approved_last_hour >= u64::from(a.max_per_agent_per_hour) {
            return Err(format!(
                "{approved_last_hour} automatic preventions on this agent in the last hour \
                 (limit {})",
                a.max_per_agent_per_hour
            ));
        }
        Ok(())
    }
}

/// The actions a coordinator knows, by name.
pub const KNOWN_ACTIONS: &[&str] = &[
    "restart_agent",
    "unregister_agent",
    "register_agent",
    "retry_task",
    "pause_tasks",
    "resume_tasks",
    "set_concurrency",
    "set_caching",
    "set_prompt_simplification",
    "spawn_agents",
    "ensure_agents",
];

/// The holdout's choice: `bucket = SHA-256("<seed>:<prediction_id>")[..8]` (big-endian) mod
/// 10000, held back when `bucket < share x 10000`. Deterministic: the same seed and id give
/// the same choice in every process and every run.
pub fn holdout(seed: u64, share: f64, prediction_id: &str) -> HoldoutChoice {
    let digest = Sha256::digest(format!("{seed}:{prediction_id}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let bucket = (u64::from_be_bytes(first) % 10_000) as u32;
    HoldoutChoice {
        seed,
        share,
        bucket,
        held_back: f64::from(bucket) < share * 10_000.0,
    }
}

/// A prevention as its events leave it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreventionView {
    pub prevention_id: String,
    pub prediction_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    pub failure_type: String,
    pub source: String,
    pub probability: f64,
    pub expected_by: String,
    pub strategy: String,
    pub key: String,
    /// The actions proposed (names).
    pub actions: Vec<String>,
    /// The actions proposed, with their parameters.
    pub planned: Vec<Value>,
    pub reason: String,
    /// `held_back` (the holdout keeps it: nothing is done), `pending` (awaiting approval),
    /// `rejected`, `approved` (delegated: awaiting the caller's report), `shadow` (approved
    /// in shadow mode: recorded, not acted on), `declined` (approved, but the strategy no
    /// longer offered an action on the state at approval), `executed` (its actions succeeded)
    /// or `failed` (one of them failed).
    pub status: String,
    pub proposed_at: String,
    pub holdout: HoldoutChoice,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_reason: Option<String>,
    /// At approval: `act`, `delegated`, `shadow` or `declined`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The numbers behind the proposal.
    pub details: Map<String, Value>,
    /// The stream's version (what an approval is appended at).
    pub version: u64,
    #[serde(skip)]
    pub proposed_at_us: i64,
}

impl PreventionView {
    /// Folds a prevention stream's events (`(version, occurred_at, event)`, in order). `None`
    /// when it holds no proposal.
    pub fn fold<'a>(
        events: impl IntoIterator<Item = (u64, DateTime<Utc>, &'a HealEvent)>,
    ) -> Option<PreventionView> {
        let mut view: Option<PreventionView> = None;
        for (version, at, e) in events {
            match e {
                HealEvent::PreventionProposed(p) => {
                    view = Some(PreventionView {
                        prevention_id: p.prevention_id.clone(),
                        prediction_id: p.prediction_id.clone(),
                        agent_id: p.agent_id.clone(),
                        failure_type: p.failure_type.clone(),
                        source: p.source.clone(),
                        probability: p.probability,
                        expected_by: p.expected_by.clone(),
                        strategy: p.strategy.clone(),
                        key: p.key.clone(),
                        actions: p
                            .actions
                            .iter()
                            .map(|a| {
                                a.get("action")
                                    .and_then(Value::as_str)
                                    .unwrap_or("?")
                                    .to_owned()
                            })
                            .collect(),
                        planned: p.actions.clone(),
                        reason: p.reason.clone(),
                        status: if p.holdout.held_back {
                            "held_back"
                        } else {
                            "pending"
                        }
                        .into(),
                        proposed_at: format_time(at),
                        proposed_at_us: crate::time::to_micros(at),
                        holdout: p.holdout.clone(),
                        decided_by: None,
                        decided_at: None,
                        decision_reason: None,
                        decision: None,
                        executed_at: None,
                        error: None,
                        details: p.details.clone(),
                        version,
                    });
                }
                other => {
                    let Some(v) = view.as_mut() else { continue };
                    v.version = version;
                    match other {
                        HealEvent::PreventionApproved(a) => {
                            v.decided_by = Some(a.by.clone());
                            v.decided_at = Some(format_time(at));
                            v.decision_reason = a.reason.clone();
                            v.decision = Some(a.decision.clone());
                            v.status = match a.decision.as_str() {
                                "shadow" => "shadow",
                                "declined" => "declined",
                                _ => "approved",
                            }
                            .into();
                        }
                        HealEvent::PreventionRejected(r) => {
                            v.decided_by = Some(r.by.clone());
                            v.decided_at = Some(format_time(at));
                            v.decision_reason = Some(r.reason.clone());
                            v.status = "rejected".into();
                        }
                        HealEvent::PreventionExecuted(x) => {
                            v.executed_at = Some(format_time(at));
                            v.error = x.error.clone();
                            v.status = if x.success { "executed" } else { "failed" }.into();
                        }
                        _ => {}
                    }
                }
            }
        }
        view
    }

    /// The prediction the proposal was made from (kept in its details).
    pub fn prediction(&self) -> Option<crate::analytics::Prediction> {
        self.details
            .get("prediction")
            .and_then(|p| serde_json::from_value(p.clone()).ok())
    }
}

/// A row of the `preventions` read model: the latest proposal of a prevention stream, the
/// latest decision and outcome after it (version, time, event type, payload), and the
/// stream's version.
type PreventionRow = (
    i64,
    i64,
    String,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    i64,
);

/// Every prevention proposed in `[since, until)` (all when not given), oldest first, from the
/// `preventions` read model (kept by triggers with the events, and through archives): the
/// cost follows the preventions of the window, not the log's history.
pub async fn list(
    store: &Store,
    since_us: Option<i64>,
    until_us: Option<i64>,
) -> Result<Vec<PreventionView>> {
    if store.is_postgres() {
        // The read model is SQLite's (migrations/V14): on PostgreSQL, the streams themselves.
        return list_from_streams(store, since_us, until_us).await;
    }
    let rows: Vec<PreventionRow> = store
        .db()
        .fetch_all(
            "SELECT proposed_version, proposed_at, proposal, decided_version, decided_at, \
                    decided_type, decision, executed_version, executed_at, executed, version \
             FROM preventions WHERE proposed_at >= ?1 AND proposed_at < ?2 \
             ORDER BY proposed_at, prevention_id",
            &[
                since_us.unwrap_or(i64::MIN).into(),
                until_us.unwrap_or(i64::MAX).into(),
            ],
        )
        .await
        .map_err(Error::from)?;
    let decode = |t: &str, payload: &str| {
        let payload: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
        HealEvent::decode(t, 1, &payload)
    };
    let mut out = Vec::with_capacity(rows.len());
    for (pv, pat, proposal, dv, dat, dtype, decision, xv, xat, executed, version) in rows {
        let Some(proposed) = decode("prevention_proposed", &proposal) else {
            continue;
        };
        let mut evs = vec![(pv as u64, from_micros(pat)?, proposed)];
        if let (Some(v), Some(at), Some(t), Some(p)) = (dv, dat, dtype, decision)
            && let Some(e) = decode(&t, &p)
        {
            evs.push((v as u64, from_micros(at)?, e));
        }
        if let (Some(v), Some(at), Some(p)) = (xv, xat, executed)
            && let Some(e) = decode("prevention_executed", &p)
        {
            evs.push((v as u64, from_micros(at)?, e));
        }
        evs.sort_by_key(|(v, _, _)| *v);
        if let Some(mut view) = PreventionView::fold(evs.iter().map(|(v, at, e)| (*v, *at, e))) {
            view.version = version as u64;
            out.push(view);
        }
    }
    Ok(out)
}

/// [`list`] by folding every prevention stream (PostgreSQL, which has no read model yet).
async fn list_from_streams(
    store: &Store,
    since_us: Option<i64>,
    until_us: Option<i64>,
) -> Result<Vec<PreventionView>> {
    // The stream key's range: the prefix, up to the next character after its dash.
    let rows: Vec<(String, i64, i64, String, i64, String)> = store
        .db()
        .fetch_all(
            "SELECT stream_id, stream_version, occurred_at, event_type, schema_version, payload \
             FROM events WHERE stream_id >= 'prevention-' AND stream_id < 'prevention.' \
             ORDER BY stream_id, stream_version",
            &[],
        )
        .await
        .map_err(Error::from)?;
    let mut by_stream: BTreeMap<String, Vec<(u64, DateTime<Utc>, HealEvent)>> = BTreeMap::new();
    for (stream, version, at, t, sv, payload) in rows {
        let payload: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
        if let Some(e) = HealEvent::decode(&t, sv as u32, &payload) {
            by_stream
                .entry(stream)
                .or_default()
                .push((version as u64, from_micros(at)?, e));
        }
    }
    let mut out: Vec<PreventionView> = by_stream
        .values()
        .filter_map(|evs| PreventionView::fold(evs.iter().map(|(v, at, e)| (*v, *at, e))))
        .filter(|v| since_us.is_none_or(|s| v.proposed_at_us >= s))
        .filter(|v| until_us.is_none_or(|u| v.proposed_at_us < u))
        .collect();
    out.sort_by(|a, b| {
        a.proposed_at_us
            .cmp(&b.proposed_at_us)
            .then(a.prevention_id.cmp(&b.prevention_id))
    });
    Ok(out)
}

/// One prevention by id; not found is an error naming it.
pub async fn get(store: &Store, prevention_id: &str) -> Result<PreventionView> {
    crate::event::check_id("prevention id", prevention_id)?;
    let stream = prevention_stream(&prediction_of(prevention_id));
    let rows: Vec<(i64, i64, String, i64, String)> = store
        .db()
        .fetch_all(
            "SELECT stream_version, occurred_at, event_type, schema_version, payload \
             FROM events WHERE stream_id = ?1 ORDER BY stream_version",
            &[(&stream).into()],
        )
        .await
        .map_err(Error::from)?;
    let mut evs = Vec::new();
    for (version, at, t, sv, payload) in rows {
        let payload: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
        if let Some(e) = HealEvent::decode(&t, sv as u32, &payload) {
            evs.push((version as u64, from_micros(at)?, e));
        }
    }
    PreventionView::fold(evs.iter().map(|(v, at, e)| (*v, *at, e)))
        .ok_or_else(|| Error::NotFound(format!("no prevention with id {prevention_id}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holdout_is_deterministic_and_near_its_share() {
        let a = holdout(7, 0.1, "pred-1");
        assert_eq!(a, holdout(7, 0.1, "pred-1"));
        let held = (0..10_000)
            .filter(|i| holdout(7, 0.1, &format!("pred-{i}")).held_back)
            .count();
        assert!((850..1150).contains(&held), "{held}");
        assert!(!holdout(7, 0.0, "pred-1").held_back);
    }
}
