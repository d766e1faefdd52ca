//! What the engine reports: the attempts on a failure, the heal as a whole, signals'
//! reactions.

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::heal::model::{Action, Failure, HealingResult};

/// What happened to one strategy considered for a failure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    pub strategy: String,
    /// `act`, `delegated`, `declined`, `failed`, `held`, `suggest_only`, `shadow`, `withheld`.
    pub decision: String,
    pub reason: String,
    pub details: Map<String, Value>,
    pub actions: Vec<Action>,
    /// Per action: `Ok(what was done)` or `Err(why it failed)`; empty when nothing ran.
    pub results: Vec<std::result::Result<String, String>>,
    /// Whether the attempt healed the failure (`None` while the outcome is not known yet).
    pub success: Option<bool>,
}

impl Attempt {
    pub(crate) fn new(
        strategy: &str,
        decision: &str,
        reason: String,
        details: Map<String, Value>,
        actions: Vec<Action>,
    ) -> Self {
        Attempt {
            strategy: strategy.to_owned(),
            decision: decision.to_owned(),
            reason,
            details,
            actions,
            results: Vec::new(),
            success: None,
        }
    }
}

/// Everything the healer did about one failure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealReport {
    pub failure: Failure,
    /// The route's name (`none` when no strategy is registered for the type).
    pub route: String,
    pub attempts: Vec<Attempt>,
    pub result: HealingResult,
    /// Actions handed to the caller (no coordinator): carry them out, then report the outcome.
    pub delegated: Vec<Action>,
    /// The failure id was already recorded: nothing was done again.
    pub duplicate: bool,
    /// Microseconds from the call until the failure and the first decision were committed.
    pub decided_us: u64,
}

impl HealReport {
    /// The answer as `--format json` prints it (`record failure`, `record event`, each record
    /// of `heal`) and as the HTTP API returns it: one definition for both.
    pub fn to_json(&self) -> serde_json::Map<String, Value> {
        let v = serde_json::json!({
            "failure_id": self.failure.failure_id,
            "failure_type": self.failure.failure_type,
            "agent_id": self.failure.agent_id,
            "duplicate": self.duplicate,
            "route": self.route,
            "attempts": self.attempts,
            "delegated_actions": self.delegated,
            "result": self.result,
        });
        match v {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        }
    }
}

/// What a signal (success, command, tick, permit) changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SignalReport {
    pub reactions: Vec<ReactionReport>,
    /// For a permit request: whether the call is admitted.
    pub permitted: Option<bool>,
    /// For a success signal: the failures it recovered (ids, oldest detection first).
    pub recovered: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReactionReport {
    pub strategy: String,
    pub key: String,
    pub reason: String,
    pub events: Vec<String>,
    pub actions: Vec<Action>,
    pub results: Vec<std::result::Result<String, String>>,
}

/// The result of a heal, as the seed describes it, from its attempts.
pub(crate) fn summarize(report: &mut HealReport, composite: bool) {
    let acted = report
        .attempts
        .iter()
        .rev()
        .find(|a| matches!(a.decision.as_str(), "act" | "delegated" | "shadow"));
    if let Some(a) = acted {
        report.result.success = a.success == Some(true);
        report.result.strategy_used = if composite {
            format!("Composite[{}]", a.strategy)
        } else {
            a.strategy.clone()
        };
        report.result.actions_taken = report
            .attempts
            .iter()
            .flat_map(|a| {
                a.actions
                    .iter()
                    .zip(a.results.iter())
                    .map(|(act, r)| match r {
                        Ok(done) => done.clone(),
                        Err(e) => format!("{} failed: {e}", act.describe()),
                    })
            })
            .collect();
    } else if let Some(last) = report.attempts.last() {
        report.result.strategy_used = last.decision.clone();
    }
    report
        .result
        .metadata
        .insert("route".into(), json!(report.route));
    report
        .result
        .metadata
        .insert("attempts".into(), json!(report.attempts.len()));
}
