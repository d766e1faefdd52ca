//! QuorumRecovery: brings the fleet back to the number of healthy agents a quorum needs.
//!
//! The required quorum is the failure's `metadata.required_quorum`, else `required_quorum` (3).
//! When the failure says how many agents are live (`healthy_agents`, else `active_agents`, else
//! `agent_count`: the first one present, healthy agents being what a quorum counts), the
//! missing ones are spawned ([`Action::SpawnAgents`]), and a failure that finds the quorum met
//! is declined. Without a live count, [`Action::EnsureAgents`] has the coordinator compare its
//! own topology with the quorum when the action runs, and spawn the difference.
//!
//! One state for the whole fleet (key `fleet`). A recovery counts once the coordinator
//! carried it out (`quorum_recovered`); the strategy never claims it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::check::Section;
use crate::heal::model::{Action, Failure, failure_types};
use crate::heal::strategy::{Decision, Signal, Strategy};

/// Settings of [`QuorumRecovery`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuorumRecoveryConfig {
    /// The failure types this strategy heals.
    pub failure_types: Vec<String>,
    /// Healthy agents a quorum needs, unless the failure says otherwise.
    pub required_quorum: u32,
}

impl Default for QuorumRecoveryConfig {
    fn default() -> Self {
        QuorumRecoveryConfig {
            failure_types: failure_types::QUORUM
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            required_quorum: 3,
        }
    }
}

impl QuorumRecoveryConfig {
    /// Checks every setting (see [`crate::config`]): one line naming the first bad one.
    pub fn validate(&self) -> crate::error::Result<()> {
        Section("quorum_recovery").at_least("required_quorum", u64::from(self.required_quorum), 1)
    }
}

/// The fleet's quorum recoveries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QuorumState {
    /// Recoveries decided, ever.
    pub requests: u64,
    /// Recoveries the coordinator carried out, ever.
    pub recoveries: u64,
    /// Recoveries the coordinator could not carry out, ever.
    pub failed_recoveries: u64,
    pub last_requested_at: Option<DateTime<Utc>>,
    pub last_recovered_at: Option<DateTime<Utc>>,
    pub last_required: Option<u32>,
    /// The live count the last recovery was decided on, when the failure carried one.
    pub last_live: Option<u32>,
}

/// Facts about the fleet's quorum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum QuorumEvent {
    /// A recovery was decided: spawn `spawn` agents, or (without a live count) as many as the
    /// coordinator's topology lacks.
    QuorumRecoveryRequested {
        at: DateTime<Utc>,
        required: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        live: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        spawn: Option<u32>,
    },
    /// The coordinator carried the recovery out.
    QuorumRecovered { at: DateTime<Utc> },
    /// The coordinator could not carry the recovery out.
    QuorumRecoveryFailed { at: DateTime<Utc> },
}

/// Spawns agents until the quorum is met. See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct QuorumRecovery {
    config: QuorumRecoveryConfig,
}

impl QuorumRecovery {
    pub fn new(config: QuorumRecoveryConfig) -> Self {
        QuorumRecovery { config }
    }

    pub fn config(&self) -> &QuorumRecoveryConfig {
        &self.config
    }
}

/// A count from the failure's metadata: `Ok(None)` when absent, `Err` when it is not a
/// non-negative whole number.
fn meta_count(failure: &Failure, key: &str) -> Result<Option<u32>, String> {
    match failure.metadata.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                    .map(|f| f as u64)
            })
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| format!("metadata.{key} ({v}) is not a count of agents")),
    }
}

impl Strategy for QuorumRecovery {
    type State = QuorumState;
    type Event = QuorumEvent;

    fn name(&self) -> &str {
        "QuorumRecovery"
    }

    fn validate(&self) -> crate::error::Result<()> {
        self.config.validate()
    }

    fn can_heal(&self, failure: &Failure) -> bool {
        self.config.failure_types.contains(&failure.failure_type)
    }

    /// A quorum is the fleet's: one state whatever agent reported the failure.
    fn key(&self, _failure: &Failure) -> String {
        "fleet".to_owned()
    }

    fn decide(
        &self,
        _state: &QuorumState,
        failure: &Failure,
        now: DateTime<Utc>,
    ) -> Decision<QuorumEvent> {
        let required = match meta_count(failure, "required_quorum") {
            Ok(Some(r)) => r,
            Ok(None) => self.config.required_quorum,
            Err(why) => return Decision::decline(why),
        };
        if required == 0 {
            return Decision::decline("a quorum of 0 agents is always met");
        }
        let mut live = None;
        for key in ["healthy_agents", "active_agents", "agent_count"] {
            match meta_count(failure, key) {
                Ok(Some(n)) => {
                    live = Some((key, n));
                    break;
                }
                Ok(None) => {}
                Err(why) => return Decision::decline(why),
            }
        }
        let Some((source, live)) = live else {
            return Decision::act(format!(
                "the failure carries no live count: ensure at least {required} healthy agents"
            ))
            .detail("required", required)
            .event(QuorumEvent::QuorumRecoveryRequested {
                at: now,
                required,
                live: None,
                spawn: None,
            })
            .action(Action::EnsureAgents {
                min_healthy: required,
            });
        };
        if live >= required {
            return Decision::decline(format!(
                "quorum already met: {live} live agents of {required} required"
            ))
            .detail("required", required)
            .detail("live", live)
            .detail("live_from", source);
        }
        let missing = required - live;
        Decision::act(format!(
            "{live} live agents of {required} required: spawn {missing}"
        ))
        .detail("required", required)
        .detail("live", live)
        .detail("live_from", source)
        .detail("missing", missing)
        .event(QuorumEvent::QuorumRecoveryRequested {
            at: now,
            required,
            live: Some(live),
            spawn: Some(missing),
        })
        .action(Action::SpawnAgents { count: missing })
    }

    fn on_result(
        &self,
        _state: &QuorumState,
        _failure: &Failure,
        success: bool,
        now: DateTime<Utc>,
    ) -> Vec<QuorumEvent> {
        vec![if success {
            QuorumEvent::QuorumRecovered { at: now }
        } else {
            QuorumEvent::QuorumRecoveryFailed { at: now }
        }]
    }

    /// No signal concerns the quorum.
    fn signal_keys(&self, _signal: &Signal, _known: &[String]) -> Vec<String> {
        Vec::new()
    }

    fn apply(&self, state: &mut QuorumState, event: &QuorumEvent) {
        match event {
            QuorumEvent::QuorumRecoveryRequested {
                at, required, live, ..
            } => {
                state.requests += 1;
                state.last_requested_at = Some(*at);
                state.last_required = Some(*required);
                state.last_live = *live;
            }
            QuorumEvent::QuorumRecovered { at } => {
                state.recoveries += 1;
                state.last_recovered_at = Some(*at);
            }
            QuorumEvent::QuorumRecoveryFailed { .. } => state.failed_recoveries += 1,
        }
    }
}
