//! Detection: raw events from monitors become failures.
//!
//! | raw event type | condition | failure type | severity |
//! |---|---|---|---|
//! | `heartbeat_failed` | agent_id | `agent_down` | high |
//! | `agent_failed` | agent_id, health_state `failed` (any case) | `agent_down` | high |
//! | `task_timeout` | task_id | `task_timeout` | medium |
//! | `task_failed` | task_id | `task_failed` | medium |
//! | `execution_error` | task_id or agent_id | `execution_error` | medium |
//! | `resource_exhaustion` | - | `resource_exhaustion` | the event's, default high |
//! | `quota_exceeded` | - | `quota_exceeded` | the event's, default high |
//! | `token_exhaustion`, `memory_exhaustion`, `memory_pressure`, `high_latency` | - | the same | the event's, default high |
//! | `quorum_loss`, `consensus_failed`, `insufficient_agents` | - | the same | critical |
//!
//! Every other field of the raw event is kept as the failure's metadata (strategy inputs such
//! as `resource_type`, `current_usage`, `limit`, `required_quorum`), and the raw event itself
//! as `source_event`. A `timestamp` (RFC 3339) dates the failure; without one it is `now`. Ids
//! are UUIDv7 unless the event carries a `failure_id`, so two failures never share one.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::model::{Failure, Severity, failure_types as ft};
use crate::error::{Error, Result};

/// Fields that describe the event itself rather than the failure's metadata.
const RESERVED: &[&str] = &[
    "type",
    "agent_id",
    "task_id",
    "severity",
    "timestamp",
    "failure_id",
];

/// Turns a raw event into a failure. `Ok(None)`: the event is not a failure (an unknown type,
/// or an `agent_failed` whose health state is not failed). `Err`: the event is malformed, or
/// names an agent, task or failure id no event could hold.
pub fn detect(raw: &Value, now: DateTime<Utc>) -> Result<Option<Failure>> {
    let obj = raw
        .as_object()
        .ok_or_else(|| Error::InvalidInput("a raw event must be a JSON object".into()))?;
    let kind = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::InvalidInput("a raw event needs a string field \"type\"".into()))?;
    let text = |k: &str| -> Result<Option<String>> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(Error::InvalidInput(format!(
                "field {k:?} of a {kind} event must be a non-empty string"
            ))),
        }
    };
    let agent = text("agent_id")?;
    let task = text("task_id")?;
    let need = |what: &str, v: &Option<String>| -> Result<()> {
        if v.is_none() {
            return Err(Error::InvalidInput(format!("a {kind} event needs {what}")));
        }
        Ok(())
    };
    let event_severity = match text("severity")? {
        None => None,
        Some(s) => Some(
            serde_json::from_value::<Severity>(Value::String(s.clone())).map_err(|_| {
                Error::InvalidInput(format!(
                    "severity {s:?} is not one of critical, high, medium, low"
                ))
            })?,
        ),
    };

    let (failure_type, default_severity) = match kind {
        "heartbeat_failed" => {
            need("an agent_id", &agent)?;
            (ft::AGENT_DOWN, Severity::High)
        }
        "agent_failed" => {
            need("an agent_id", &agent)?;
            let state = obj
                .get("health_state")
                .and_then(Value::as_str)
                .unwrap_or("failed");
            if !state.eq_ignore_ascii_case("failed") {
                return Ok(None);
            }
            (ft::AGENT_DOWN, Severity::High)
        }
        "task_timeout" => {
            need("a task_id", &task)?;
            (ft::TASK_TIMEOUT, Severity::Medium)
        }
        "task_failed" => {
            need("a task_id", &task)?;
            (ft::TASK_FAILED, Severity::Medium)
        }
        "execution_error" => {
            if task.is_none() && agent.is_none() {
                return Err(Error::InvalidInput(format!(
                    "a {kind} event needs a task_id or an agent_id"
                )));
            }
            (ft::EXECUTION_ERROR, Severity::Medium)
        }
        "resource_exhaustion" => (ft::RESOURCE_EXHAUSTION, Severity::High),
        "quota_exceeded" => (ft::QUOTA_EXCEEDED, Severity::High),
        "token_exhaustion" => (ft::TOKEN_EXHAUSTION, Severity::High),
        "memory_exhaustion" => (ft::MEMORY_EXHAUSTION, Severity::High),
        "memory_pressure" => (ft::MEMORY_PRESSURE, Severity::High),
        "high_latency" => (ft::HIGH_LATENCY, Severity::High),
        "quorum_loss" => (ft::QUORUM_LOSS, Severity::Critical),
        "consensus_failed" => (ft::CONSENSUS_FAILED, Severity::Critical),
        "insufficient_agents" => (ft::INSUFFICIENT_AGENTS, Severity::Critical),
        _ => return Ok(None),
    };
    let severity = match failure_type {
        ft::QUORUM_LOSS | ft::CONSENSUS_FAILED | ft::INSUFFICIENT_AGENTS => Severity::Critical,
        _ if ft::RESOURCE.contains(&failure_type) => event_severity.unwrap_or(default_severity),
        _ => default_severity,
    };
    let detected_at = match text("timestamp")? {
        Some(t) => crate::time::parse_time(&t)?,
        None => now,
    };
    let mut metadata: Map<String, Value> = obj
        .iter()
        .filter(|(k, _)| !RESERVED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata.insert("source_type".into(), Value::String(kind.to_owned()));
    let mut failure = Failure::new(failure_type, severity, detected_at);
    if let Some(id) = text("failure_id")? {
        crate::event::check_id("failure_id", &id)?;
        failure.failure_id = id;
    }
    failure.agent_id = agent;
    failure.task_id = task;
    failure.metadata = metadata;
    failure.source_event = Some(raw.clone());
    // An agent or task id no event could hold is refused here, before anything is written.
    failure.check_ids()?;
    Ok(Some(failure))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        crate::time::parse_time("2026-11-01T12:00:00Z").unwrap()
    }

    #[test]
    fn agent_failed_is_detected_whatever_the_case_of_its_health_state() {
        // Upstream only matched "FAILED", while its own monitor emits "failed".
        for state in ["failed", "FAILED", "Failed"] {
            let f = detect(
                &json!({"type": "agent_failed", "agent_id": "a", "health_state": state}),
                now(),
            )
            .unwrap()
            .unwrap();
            assert_eq!(f.failure_type, "agent_down");
            assert_eq!(f.severity, Severity::High);
        }
        let healthy = json!({"type": "agent_failed", "agent_id": "a", "health_state": "degraded"});
        assert_eq!(detect(&healthy, now()).unwrap(), None);
    }

    #[test]
    fn task_failed_and_execution_error_are_detected() {
        // Upstream never detected these, although strategies existed for them.
        let f = detect(&json!({"type": "task_failed", "task_id": "t1"}), now())
            .unwrap()
            .unwrap();
        assert_eq!(
            (f.failure_type.as_str(), f.task_id.as_deref()),
            ("task_failed", Some("t1"))
        );
        let f = detect(&json!({"type": "execution_error", "agent_id": "a"}), now())
            .unwrap()
            .unwrap();
        assert_eq!(f.failure_type, "execution_error");
    }

    #[test]
    fn quota_and_consensus_failures_keep_their_identity() {
        let f = detect(
            &json!({"type": "quota_exceeded", "current_usage": 95, "limit": 100, "severity": "low"}),
            now(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(f.failure_type, "quota_exceeded");
        assert_eq!(f.severity, Severity::Low);
        assert_eq!(f.meta_f64("current_usage"), Some(95.0));
        let f = detect(&json!({"type": "consensus_failed"}), now())
            .unwrap()
            .unwrap();
        assert_eq!(
            (f.failure_type.as_str(), f.severity),
            ("consensus_failed", Severity::Critical)
        );
    }

    #[test]
    fn failures_detected_in_the_same_instant_get_different_ids() {
        // Upstream ids were `type_entity_millis` and collided within a millisecond.
        let e = json!({"type": "heartbeat_failed", "agent_id": "a"});
        let ids: std::collections::HashSet<String> = (0..1000)
            .map(|_| detect(&e, now()).unwrap().unwrap().failure_id)
            .collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn malformed_and_unknown_events() {
        assert!(detect(&json!({"type": "heartbeat_failed"}), now()).is_err());
        assert!(detect(&json!({"agent_id": "a"}), now()).is_err());
        assert!(detect(&json!([1]), now()).is_err());
        assert!(detect(&json!({"type": "task_timeout", "task_id": 7}), now()).is_err());
        assert!(
            detect(
                &json!({"type": "resource_exhaustion", "severity": "apocalyptic"}),
                now()
            )
            .is_err()
        );
        assert_eq!(
            detect(&json!({"type": "agent_succeeded", "agent_id": "a"}), now()).unwrap(),
            None
        );
    }

    #[test]
    fn the_event_timestamp_dates_the_failure() {
        let f = detect(
            &json!({"type": "quorum_loss", "timestamp": "2026-10-01T00:00:00Z", "required_quorum": 3}),
            now(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            crate::time::format_time(f.detected_at),
            "2026-10-01T00:00:00.000000Z"
        );
        assert_eq!(f.meta_f64("required_quorum"), Some(3.0));
    }
}
