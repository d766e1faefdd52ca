//! The typed events of healstore's domain: facts in the past tense, each with a schema
//! version from the first day.
//!
//! The store itself accepts any event type; the types here are the ones healstore writes and
//! understands. An event of a type or schema version this binary does not know reads back as
//! plain data ([`crate::RecordedEvent`]), never as an error.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use crate::analytics::{Pattern, Prediction};
use crate::error::{Error, Result};
use crate::event::NewEvent;
use crate::time::serde_rfc3339;

/// How bad a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    High,
    Medium,
    Low,
}

/// A failure was detected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureDetected {
    pub failure_id: String,
    pub failure_type: String,
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// The raw event the failure was detected from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_event: Option<Value>,
    /// Inputs for strategies: resource_type, current_usage, limit, required_quorum...
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// A strategy was considered for a failure, with the decision and the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealingAttempted {
    pub failure_id: String,
    pub strategy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_type: Option<String>,
    /// What was decided: `act` (carried out through the coordinator), `delegated` (actions
    /// handed to the caller), `declined`, `failed`, `held`, `no_strategy`, `suggest_only`,
    /// `shadow` or `withheld` (over a healer limit).
    pub decision: String,
    pub reason: String,
    /// The planned actions, in order.
    #[serde(default)]
    pub actions: Vec<Value>,
    /// The numbers the decision was taken on: state before, thresholds, counts.
    #[serde(default)]
    pub details: Map<String, Value>,
}

/// One action was carried out (or failed) through the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionExecuted {
    /// The failure the action heals; `None` for actions on a signal (a circuit's trial).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_id: Option<String>,
    pub strategy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// A healing attempt by one strategy ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealingCompleted {
    pub failure_id: String,
    pub strategy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_type: Option<String>,
    pub success: bool,
    pub duration_ms: i64,
    #[serde(default)]
    pub actions_taken: Vec<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// A failure was resolved: the system recovered. MTTR is measured from detection to this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureResolved {
    pub failure_id: String,
    pub failure_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    #[serde(with = "serde_rfc3339")]
    pub detected_at: DateTime<Utc>,
}

/// An agent completed work successfully (a success signal for circuit breakers and backoffs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSucceeded {
    pub agent_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
}

/// A circuit breaker changed state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CircuitTransitioned {
    /// The agent (or resource) the circuit guards.
    pub circuit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    pub from: String,
    pub to: String,
    pub reason: String,
    #[serde(default)]
    pub details: Map<String, Value>,
}

/// A resource's usage was reported (the input of resource-trend predictions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceUsageReported {
    pub resource_type: String,
    pub current_usage: f64,
    pub limit: f64,
}

/// An acting decision counted against one of the healer's limits. Appended with the decision,
/// at the version of the limit's stream (`limits-fleet`, `limits-agent-<agent>`) that the check
/// read: two processes checking at once cannot both pass on the same count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitCounted {
    /// `fleet_disabled` (agents isolated at once) or `agent_actions` (actions on one agent in
    /// the last hour).
    pub limit: String,
    pub failure_id: String,
    /// The strategy whose decision was counted.
    pub decided_by: String,
    /// The agent whose actions are counted (`agent_actions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The count with this decision, and the most the limit allows.
    pub count: u64,
    pub allowed: u64,
    /// `fleet_disabled`: every agent disabled with this decision, by the strategy stream (and
    /// its version) whose state disables it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disabled: Vec<DisabledAgent>,
}

/// An agent disabled by a strategy state, as of that state stream's version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisabledAgent {
    pub agent: String,
    pub stream: String,
    pub version: u64,
}

/// The effective configuration changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigurationChanged {
    pub config_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_hash: Option<String>,
    pub config: Value,
}

macro_rules! heal_events {
    ($($variant:ident($ty:ident) = $name:literal v $version:literal),* $(,)?) => {
        /// Every event type healstore writes.
        #[derive(Debug, Clone, PartialEq)]
        pub enum HealEvent {
            $($variant($ty),)*
        }

        impl HealEvent {
            /// The stored `event_type`.
            pub fn event_type(&self) -> &'static str {
                match self { $(HealEvent::$variant(_) => $name,)* }
            }

            /// The schema version this binary writes for the event's type.
            pub fn schema_version(&self) -> u32 {
                match self { $(HealEvent::$variant(_) => $version,)* }
            }

            /// The payload, as stored.
            pub fn payload(&self) -> Value {
                let v = match self { $(HealEvent::$variant(e) => serde_json::to_value(e),)* };
                // Plain structs of strings, numbers and maps always serialise.
                v.unwrap_or_else(|e| serde_json::json!({ "serialisation_error": e.to_string() }))
            }

            /// Decodes a stored event; `None` for a type or version this binary does not know.
            pub fn decode(event_type: &str, schema_version: u32, payload: &Value) -> Option<HealEvent> {
                match (event_type, schema_version) {
                    $(($name, $version) => $ty::deserialize(payload).ok().map(HealEvent::$variant),)*
                    _ => None,
                }
            }
        }

        /// For a known type and version, the payload must decode; anything else is data.
        pub(crate) fn check_known_payload(event_type: &str, schema_version: u32, payload: &Value) -> Result<()> {
            match (event_type, schema_version) {
                $(($name, $version) => $ty::deserialize(payload).map(|_| ()).map_err(|e| {
                    Error::InvalidEvent(format!("payload does not fit {} v{}: {e}", $name, $version))
                }),)*
                _ => Ok(()),
            }
        }

        /// The event types this binary knows, with their schema versions.
        pub const KNOWN_EVENT_TYPES: &[(&str, u32)] = &[$(($name, $version),)*];
    };
}

heal_events! {
    FailureDetected(FailureDetected) = "failure_detected" v 1,
    HealingAttempted(HealingAttempted) = "healing_attempted" v 1,
    ActionExecuted(ActionExecuted) = "action_executed" v 1,
    HealingCompleted(HealingCompleted) = "healing_completed" v 1,
    FailureResolved(FailureResolved) = "failure_resolved" v 1,
    AgentSucceeded(AgentSucceeded) = "agent_succeeded" v 1,
    CircuitTransitioned(CircuitTransitioned) = "circuit_transitioned" v 1,
    ConfigurationChanged(ConfigurationChanged) = "configuration_changed" v 1,
    ResourceUsageReported(ResourceUsageReported) = "resource_usage_reported" v 1,
    LimitCounted(LimitCounted) = "limit_counted" v 1,
    PatternLearned(Pattern) = "pattern_learned" v 1,
    PredictionMade(Prediction) = "prediction_made" v 1,
}

impl HealEvent {
    /// A [`NewEvent`] carrying this fact, with a fresh id.
    pub fn to_new_event(&self, occurred_at: DateTime<Utc>) -> NewEvent {
        let mut e = NewEvent::new(self.event_type(), occurred_at, self.payload());
        e.schema_version = self.schema_version();
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_events_round_trip_through_their_payload() {
        let e = HealEvent::FailureDetected(FailureDetected {
            failure_id: "f-1".into(),
            failure_type: "agent_down".into(),
            severity: Severity::High,
            agent_id: Some("a-1".into()),
            task_id: None,
            source_event: None,
            metadata: Map::new(),
        });
        let back = HealEvent::decode(e.event_type(), e.schema_version(), &e.payload());
        assert_eq!(back, Some(e));
    }

    #[test]
    fn unknown_types_and_versions_are_data_not_errors() {
        let p = serde_json::json!({"anything": 1});
        assert_eq!(HealEvent::decode("something_new", 1, &p), None);
        assert_eq!(HealEvent::decode("failure_detected", 99, &p), None);
        assert!(check_known_payload("something_new", 1, &p).is_ok());
        assert!(check_known_payload("failure_detected", 99, &p).is_ok());
        assert!(check_known_payload("failure_detected", 1, &p).is_err());
    }
}
