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

/// A failure was *remediated*: the healing actions of a strategy succeeded (a restart went
/// through, a retry was scheduled, a circuit opened). That says what healstore did, not that
/// the agent or task works again: see [`FailureRecovered`]. The time to remediate is measured
/// from detection to this. (The type's name predates the distinction and is kept.)
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

/// What shows that a failed agent or task works again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryHow {
    /// A success signal (`agent_succeeded`) for the failure's task, or for its agent when the
    /// failure names no task, after the failure.
    Signal,
    /// A healthy status from the coordinator right after a remediation.
    Status,
    /// A caller confirmed it (`record recovered`, [`crate::heal::Healer::record_recovered`]).
    Confirmed,
}

impl RecoveryHow {
    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryHow::Signal => "signal",
            RecoveryHow::Status => "status",
            RecoveryHow::Confirmed => "confirmed",
        }
    }
}

/// A failure *recovered*: the failed agent or task works again. Recorded once per failure, in
/// its stream; MTTR (the time to recover) is measured from detection to this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureRecovered {
    pub failure_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    pub how: RecoveryHow,
    /// The event that shows it (the success signal), if there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence_event_id: Option<String>,
    /// For `status`: the state the coordinator reported (`active`, `idle`, `busy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
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

/// How a prediction was put in or kept out of the holdout: a seeded hash of the prediction
/// id, recorded with the proposal so that the choice can be checked and repeated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldoutChoice {
    pub seed: u64,
    /// The share of eligible predictions kept back (0..=1).
    pub share: f64,
    /// The prediction's bucket, 0..10000: `SHA-256("<seed>:<prediction_id>")`'s first eight
    /// bytes, big-endian, modulo 10000.
    pub bucket: u32,
    /// `bucket < share x 10000`: nothing is done about this prediction.
    pub held_back: bool,
}

/// A prediction above the policy's probability turned into a proposed preventive action, or
/// (when the holdout keeps it back) into a recorded non-action. Stream
/// `prevention-<prediction_id>`, version 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreventionProposed {
    pub prevention_id: String,
    pub prediction_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The failure predicted.
    pub failure_type: String,
    /// The prediction's source (`sequence`, `frequency`, ...) and probability.
    pub source: String,
    pub probability: f64,
    /// When the prediction expects the failure by (RFC 3339).
    pub expected_by: String,
    /// The strategy offering the prevention, and the state key it decided on.
    pub strategy: String,
    pub key: String,
    /// The proposed actions, in order (what `Strategy::prevent` returned).
    #[serde(default)]
    pub actions: Vec<Value>,
    pub reason: String,
    /// The numbers behind it: the prediction's basis, the strategy's details, the policy's
    /// verdict.
    #[serde(default)]
    pub details: Map<String, Value>,
    pub holdout: HoldoutChoice,
}

/// A proposed prevention was approved, by a person or by the configured policy, and what was
/// decided about its actions (`act`, `delegated`, `shadow`, `declined` when the strategy no
/// longer offers it on the state as it is now).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreventionApproved {
    pub prevention_id: String,
    /// Who approved: a person's name, or `policy`.
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub decision: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    pub strategy: String,
    /// The actions decided on at approval, in order.
    #[serde(default)]
    pub actions: Vec<Value>,
    #[serde(default)]
    pub details: Map<String, Value>,
}

/// A proposed prevention was rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreventionRejected {
    pub prevention_id: String,
    pub by: String,
    pub reason: String,
}

/// The actions of an approved prevention were carried out (by the coordinator, or by the
/// caller who reported back): the outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreventionExecuted {
    pub prevention_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    pub success: bool,
    pub duration_ms: i64,
    #[serde(default)]
    pub actions_taken: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `coordinator` or `caller`.
    pub reported_by: String,
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

        /// For a known type and version, the payload must decode, name no field the type does
        /// not have, and hold numbers in their ranges (see [`check_ranges`]); anything else is
        /// data.
        pub(crate) fn check_known_payload(event_type: &str, schema_version: u32, payload: &Value) -> Result<()> {
            let unfit = |e: &dyn std::fmt::Display| {
                Error::InvalidEvent(format!(
                    "payload does not fit {event_type} v{schema_version}: {e}"
                ))
            };
            let (decoded, fields) = match (event_type, schema_version) {
                $(($name, $version) => (
                    $ty::deserialize(payload).map(HealEvent::$variant).map_err(|e| unfit(&e))?,
                    field_names::<$ty>(),
                ),)*
                _ => return Ok(()),
            };
            // A circuit transition is also a strategy's own event: the strategy adds its own
            // fields (its name, key, time), so that type's payload stays open.
            let open = event_type == "circuit_transitioned";
            if let Some(key) = payload
                .as_object()
                .filter(|_| !open)
                .and_then(|o| o.keys().find(|k| !fields.contains(&k.as_str())))
            {
                return Err(unfit(&format!(
                    "unknown field `{key}`, expected one of {}",
                    fields.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ")
                )));
            }
            check_ranges(&decoded).map_err(|e| unfit(&e))
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
    FailureRecovered(FailureRecovered) = "failure_recovered" v 1,
    AgentSucceeded(AgentSucceeded) = "agent_succeeded" v 1,
    CircuitTransitioned(CircuitTransitioned) = "circuit_transitioned" v 1,
    ConfigurationChanged(ConfigurationChanged) = "configuration_changed" v 1,
    ResourceUsageReported(ResourceUsageReported) = "resource_usage_reported" v 1,
    LimitCounted(LimitCounted) = "limit_counted" v 1,
    PatternLearned(Pattern) = "pattern_learned" v 1,
    PredictionMade(Prediction) = "prediction_made" v 1,
    PreventionProposed(PreventionProposed) = "prevention_proposed" v 1,
    PreventionApproved(PreventionApproved) = "prevention_approved" v 1,
    PreventionRejected(PreventionRejected) = "prevention_rejected" v 1,
    PreventionExecuted(PreventionExecuted) = "prevention_executed" v 1,
}

/// The longest duration an event may state, in milliseconds: 365 days. Durations are summed
/// by the hourly read models and the analytics; with this bound, no realistic number of rows
/// can overflow a sum (2^63 ms is over 290 million such durations).
pub const MAX_DURATION_MS: i64 = 365 * 24 * 3_600_000;

fn check_duration(what: &str, ms: i64) -> std::result::Result<(), String> {
    if !(0..=MAX_DURATION_MS).contains(&ms) {
        return Err(format!(
            "{what} is {ms}; it must be between 0 and {MAX_DURATION_MS} (365 days)"
        ));
    }
    Ok(())
}

fn check_key(what: &str, id: &str) -> std::result::Result<(), String> {
    crate::event::check_id(what, id).map_err(|e| match e {
        Error::InvalidEvent(m) => m,
        other => other.to_string(),
    })
}

/// The ranges of a known payload's numbers (those the read models and analytics add up or
/// compute with) and the limits of its keys (the same as every id's: see
/// [`crate::event::check_id`]).
fn check_ranges(e: &HealEvent) -> std::result::Result<(), String> {
    let opt = |what: &str, id: &Option<String>| match id {
        Some(id) => check_key(what, id),
        None => Ok(()),
    };
    match e {
        HealEvent::FailureDetected(f) => {
            check_key("failure_id", &f.failure_id)?;
            check_key("failure_type", &f.failure_type)?;
            opt("agent_id", &f.agent_id)?;
            opt("task_id", &f.task_id)?;
        }
        HealEvent::HealingAttempted(h) => {
            check_key("failure_id", &h.failure_id)?;
            check_key("strategy", &h.strategy)?;
            opt("agent_id", &h.agent_id)?;
            opt("failure_type", &h.failure_type)?;
        }
        HealEvent::ActionExecuted(a) => {
            opt("failure_id", &a.failure_id)?;
            check_key("strategy", &a.strategy)?;
            opt("agent_id", &a.agent_id)?;
            check_duration("duration_ms", a.duration_ms)?;
        }
        HealEvent::HealingCompleted(h) => {
            check_key("failure_id", &h.failure_id)?;
            check_key("strategy", &h.strategy)?;
            opt("agent_id", &h.agent_id)?;
            opt("failure_type", &h.failure_type)?;
            check_duration("duration_ms", h.duration_ms)?;
        }
        HealEvent::FailureResolved(r) => {
            check_key("failure_id", &r.failure_id)?;
            check_key("failure_type", &r.failure_type)?;
            opt("agent_id", &r.agent_id)?;
            opt("strategy", &r.strategy)?;
        }
        HealEvent::FailureRecovered(r) => {
            check_key("failure_id", &r.failure_id)?;
            opt("agent_id", &r.agent_id)?;
            opt("task_id", &r.task_id)?;
            opt("evidence_event_id", &r.evidence_event_id)?;
            opt("status", &r.status)?;
        }
        HealEvent::AgentSucceeded(a) => {
            check_key("agent_id", &a.agent_id)?;
            opt("task_id", &a.task_id)?;
        }
        HealEvent::CircuitTransitioned(c) => {
            check_key("circuit", &c.circuit)?;
            opt("agent_id", &c.agent_id)?;
        }
        HealEvent::ResourceUsageReported(r) => {
            check_key("resource_type", &r.resource_type)?;
            if !(r.current_usage >= 0.0 && r.limit > 0.0) {
                return Err(format!(
                    "usage {} of limit {} is not a valid measurement (usage at least 0, limit \
                     above 0)",
                    r.current_usage, r.limit
                ));
            }
        }
        HealEvent::ConfigurationChanged(_) => {}
        HealEvent::LimitCounted(l) => {
            check_key("failure_id", &l.failure_id)?;
            opt("agent_id", &l.agent_id)?;
        }
        HealEvent::PatternLearned(p) => {
            check_key("pattern_id", &p.pattern_id)?;
            opt("agent_id", &p.agent_id)?;
            if p.support < 0 {
                return Err(format!("support is {}; it must be at least 0", p.support));
            }
        }
        HealEvent::PredictionMade(p) => {
            check_key("prediction_id", &p.prediction_id)?;
            check_key("failure_type", &p.failure_type)?;
            opt("agent_id", &p.agent_id)?;
            check_duration("expected_in_ms", p.expected_in_ms)?;
            check_duration("window_ms", p.window_ms)?;
        }
        HealEvent::PreventionProposed(p) => {
            check_key("prevention_id", &p.prevention_id)?;
            check_key("prediction_id", &p.prediction_id)?;
            check_key("failure_type", &p.failure_type)?;
            check_key("strategy", &p.strategy)?;
            opt("agent_id", &p.agent_id)?;
        }
        HealEvent::PreventionApproved(p) => {
            check_key("prevention_id", &p.prevention_id)?;
            check_key("strategy", &p.strategy)?;
            opt("agent_id", &p.agent_id)?;
        }
        HealEvent::PreventionRejected(p) => {
            check_key("prevention_id", &p.prevention_id)?;
        }
        HealEvent::PreventionExecuted(p) => {
            check_key("prevention_id", &p.prevention_id)?;
            opt("agent_id", &p.agent_id)?;
            check_duration("duration_ms", p.duration_ms)?;
        }
    }
    Ok(())
}

/// The field names a payload struct accepts, as its derived `Deserialize` announces them.
fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Capture<'a>(&'a mut &'static [&'static str]);
    #[derive(Debug)]
    struct Captured;
    impl std::fmt::Display for Captured {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("field names captured")
        }
    }
    impl std::error::Error for Captured {}
    impl serde::de::Error for Captured {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Captured
        }
    }
    impl<'de> serde::Deserializer<'de> for Capture<'_> {
        type Error = Captured;
        fn deserialize_any<V: serde::de::Visitor<'de>>(
            self,
            _: V,
        ) -> std::result::Result<V::Value, Captured> {
            Err(Captured)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> std::result::Result<V::Value, Captured> {
            *self.0 = fields;
            Err(Captured)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Capture(&mut fields));
    fields
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
