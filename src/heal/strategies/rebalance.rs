//! ResourceRebalance: under resource pressure, pauses low-priority work so that critical work
//! keeps its capacity, and resumes it once the pressure is gone.
//!
//! Pausing goes in stages, per resource (the failure's `metadata.resource_type`, else its
//! failure type): the first failure pauses the first stage's priorities (LOW and BACKGROUND);
//! a further failure within `escalate_within_ms` of the last pause means the pressure persists,
//! and the next stage is paused too (MEDIUM). With every stage paused and the pressure still
//! there, the strategy fails (nothing is left to pause; a chain moves on, to degradation for
//! example). A failure after the window re-asserts the current stage's pause (tasks queued
//! since then are paused too). Critical work is never paused, whatever the configuration says.
//!
//! A usage report ([`Signal::ResourceUsage`]) below `recover_below` resumes everything paused.
//! A pause that the coordinator could not carry out is recorded (`rebalance_failed`) and the
//! stage kept, so that recovery still resumes whatever part of it was paused.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::check::Section;
use super::restart::{elapsed_ms, ms_i64};
use crate::error::Result;
use crate::heal::model::{Action, Failure, Priority, failure_types};
use crate::heal::strategy::{Decision, Reaction, Signal, Strategy};

/// Settings of [`ResourceRebalance`]. Durations are in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResourceRebalanceConfig {
    /// The failure types this strategy heals.
    pub failure_types: Vec<String>,
    /// The priorities each stage pauses, in addition to the stages before it.
    pub stages: Vec<Vec<Priority>>,
    /// A failure this soon after the last pause escalates to the next stage.
    pub escalate_within_ms: u64,
    /// Usage (current / limit) below which paused work resumes.
    pub recover_below: f64,
}

impl Default for ResourceRebalanceConfig {
    fn default() -> Self {
        ResourceRebalanceConfig {
            failure_types: REBALANCED_TYPES.iter().map(|s| (*s).to_owned()).collect(),
            stages: vec![
                vec![Priority::Low, Priority::Background],
                vec![Priority::Medium],
            ],
            // A pause that has not relieved the pressure within 5 minutes is not enough.
            escalate_within_ms: 300_000,
            recover_below: 0.7,
        }
    }
}

impl ResourceRebalanceConfig {
    /// Checks every setting (see [`crate::config`]): one line naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        let s = Section("resource_rebalance");
        s.duration("escalate_within_ms", self.escalate_within_ms, 0)?;
        s.number_above_up_to("recover_below", self.recover_below, 0.0, 1.0)
    }
}

const REBALANCED_TYPES: &[&str] = &[
    failure_types::RESOURCE_EXHAUSTION,
    failure_types::TOKEN_EXHAUSTION,
    failure_types::QUOTA_EXCEEDED,
    failure_types::MEMORY_EXHAUSTION,
];

/// The rebalancing of one resource.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RebalanceState {
    /// Stages paused (0: nothing is paused).
    pub stage: usize,
    /// The priorities paused.
    pub paused: Vec<Priority>,
    /// The last pause.
    pub rebalanced_at: Option<DateTime<Utc>>,
    /// Pauses decided, ever.
    pub rebalances: u64,
    /// Pauses the coordinator could not carry out, ever.
    pub failed_rebalances: u64,
    /// Resumptions, ever.
    pub recoveries: u64,
    pub recovered_at: Option<DateTime<Utc>>,
}

/// Facts about a resource's rebalancing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RebalanceEvent {
    /// Work of these priorities (every stage up to `stage`) was paused.
    RebalancePaused {
        at: DateTime<Utc>,
        stage: usize,
        priorities: Vec<Priority>,
    },
    /// The pressure fell: paused work was resumed.
    RebalanceResumed {
        at: DateTime<Utc>,
        usage: f64,
        priorities: Vec<Priority>,
    },
    /// The coordinator could not carry out a pause.
    RebalanceFailed { at: DateTime<Utc> },
}

/// Pauses low-priority work under pressure. See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct ResourceRebalance {
    config: ResourceRebalanceConfig,
}

/// The state key of a resource failure: its `metadata.resource_type`, else its failure type
/// (usage reports name the same resource type).
pub(crate) fn resource_key(failure: &Failure) -> String {
    failure
        .meta_str("resource_type")
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| failure.failure_type.clone())
}

/// `current / limit`, when both make a measurement.
pub(crate) fn usage_ratio(current: f64, limit: f64) -> Option<f64> {
    let ok = current.is_finite() && limit.is_finite() && current >= 0.0 && limit > 0.0;
    ok.then(|| current / limit)
}

impl ResourceRebalance {
    pub fn new(config: ResourceRebalanceConfig) -> Self {
        ResourceRebalance { config }
    }

    pub fn config(&self) -> &ResourceRebalanceConfig {
        &self.config
    }

    /// The stages as enforced: without critical work, without empty stages.
    fn stages(&self) -> Vec<Vec<Priority>> {
        self.config
            .stages
            .iter()
            .map(|s| {
                s.iter()
                    .copied()
                    .filter(|p| *p != Priority::Critical)
                    .collect::<Vec<_>>()
            })
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// Every priority of the first `n` stages, highest first, once each.
fn paused_by(stages: &[Vec<Priority>], n: usize) -> Vec<Priority> {
    let mut v: Vec<Priority> = stages.iter().take(n).flatten().copied().collect();
    v.sort();
    v.dedup();
    v
}

impl Strategy for ResourceRebalance {
    type State = RebalanceState;
    type Event = RebalanceEvent;

    fn name(&self) -> &str {
        "ResourceRebalance"
    }

    fn validate(&self) -> crate::error::Result<()> {
        self.config.validate()
    }

    fn can_heal(&self, failure: &Failure) -> bool {
        self.config.failure_types.contains(&failure.failure_type)
    }

    fn key(&self, failure: &Failure) -> String {
        resource_key(failure)
    }

    fn decide(
        &self,
        state: &RebalanceState,
        _failure: &Failure,
        now: DateTime<Utc>,
    ) -> Decision<RebalanceEvent> {
        let stages = self.stages();
        if stages.is_empty() {
            return Decision::decline("no priorities are configured to pause");
        }
        let current = state.stage.min(stages.len());
        let since = state.rebalanced_at.map(|t| elapsed_ms(t, now));
        let persists =
            current > 0 && since.is_some_and(|ms| ms <= ms_i64(self.config.escalate_within_ms));
        let (target, why) = if current == 0 {
            (1, "resource pressure".to_owned())
        } else if persists && current >= stages.len() {
            return Decision::fail(format!(
                "pressure persists with {:?} work already paused: nothing left to pause",
                state.paused
            ))
            .detail("stage", current)
            .detail("paused", &state.paused)
            .detail("since_last_pause_ms", since);
        } else if persists {
            (
                current + 1,
                format!(
                    "pressure persists {} ms after the last pause",
                    since.unwrap_or_default()
                ),
            )
        } else {
            (current, "pressure is back".to_owned())
        };
        let priorities = paused_by(&stages, target);
        Decision::act(format!(
            "{why}: pause {priorities:?} work to keep capacity for critical work"
        ))
        .detail("stage_before", current)
        .detail("stage", target)
        .detail("stages", stages.len())
        .detail("since_last_pause_ms", since)
        .event(RebalanceEvent::RebalancePaused {
            at: now,
            stage: target,
            priorities: priorities.clone(),
        })
        .action(Action::PauseTasks { priorities })
    }

    fn on_result(
        &self,
        _state: &RebalanceState,
        _failure: &Failure,
        success: bool,
        now: DateTime<Utc>,
    ) -> Vec<RebalanceEvent> {
        if success {
            Vec::new()
        } else {
            vec![RebalanceEvent::RebalanceFailed { at: now }]
        }
    }

    /// Only usage reports concern rebalancing.
    fn signal_keys(&self, signal: &Signal, _known: &[String]) -> Vec<String> {
        match signal {
            Signal::ResourceUsage { resource_type, .. } => vec![resource_type.clone()],
            _ => Vec::new(),
        }
    }

    fn on_signal(
        &self,
        state: &RebalanceState,
        key: &str,
        signal: &Signal,
        now: DateTime<Utc>,
    ) -> Option<Reaction<RebalanceEvent>> {
        let Signal::ResourceUsage {
            current_usage,
            limit,
            ..
        } = signal
        else {
            return None;
        };
        let usage = usage_ratio(*current_usage, *limit)?;
        // Written so that a NaN `recover_below` resumes nothing.
        let recovered = usage < self.config.recover_below;
        if state.paused.is_empty() || !recovered {
            return None;
        }
        let priorities = state.paused.clone();
        Some(
            Reaction::new(
                key,
                format!(
                    "{key} usage {usage:.2} is below {:.2}: resume {priorities:?} work",
                    self.config.recover_below
                ),
            )
            .event(RebalanceEvent::RebalanceResumed {
                at: now,
                usage,
                priorities: priorities.clone(),
            })
            .action(Action::ResumeTasks { priorities }),
        )
    }

    fn apply(&self, state: &mut RebalanceState, event: &RebalanceEvent) {
        match event {
            RebalanceEvent::RebalancePaused {
                at,
                stage,
                priorities,
            } => {
                state.stage = *stage;
                state.paused = priorities.clone();
                state.rebalanced_at = Some(*at);
                state.rebalances += 1;
            }
            RebalanceEvent::RebalanceResumed { at, .. } => {
                state.stage = 0;
                state.paused.clear();
                state.recoveries += 1;
                state.recovered_at = Some(*at);
            }
            RebalanceEvent::RebalanceFailed { .. } => state.failed_rebalances += 1,
        }
    }
}
