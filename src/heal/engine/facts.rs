//! The facts the engine's decisions append, built here and nowhere else: a failure's
//! detection, each attempt, an attempt's outcome, a recovery, strategy state events.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::event::NewEvent;
use crate::events::{
    FailureDetected, FailureRecovered, FailureResolved, HealEvent, HealingAttempted,
    HealingCompleted, RecoveryHow,
};
use crate::heal::model::{Action, Failure};
use crate::heal::strategy::ErasedStrategy;

/// Strategy events as stored: the event's JSON object, plus its strategy and key, dated
/// `now` unless the strategy says the fact happened earlier ([`Strategy::occurred_at`]).
pub(crate) fn strategy_events(
    strategy: &Arc<dyn ErasedStrategy>,
    key: &str,
    events: &[(String, Value)],
    now: DateTime<Utc>,
) -> Result<Vec<NewEvent>> {
    let name = strategy.name();
    events
        .iter()
        .map(|(t, v)| {
            let mut obj = match v {
                Value::Object(o) => o.clone(),
                _ => {
                    return Err(Error::InvalidEvent(format!(
                        "strategy {name}: events must serialise to JSON objects"
                    )));
                }
            };
            let at = strategy
                .occurred_at(v)
                .map_or(now, |at| micros(at).min(now));
            obj.insert("strategy".into(), json!(name));
            obj.insert("key".into(), json!(key));
            Ok(NewEvent::new(t.clone(), at, Value::Object(obj)))
        })
        .collect()
}

pub(crate) fn fact(e: HealEvent, at: DateTime<Utc>) -> NewEvent {
    e.to_new_event(at)
}

pub(crate) fn detected_event(failure: &Failure) -> NewEvent {
    fact(
        HealEvent::FailureDetected(FailureDetected {
            failure_id: failure.failure_id.clone(),
            failure_type: failure.failure_type.clone(),
            severity: failure.severity,
            agent_id: failure.agent_id.clone(),
            task_id: failure.task_id.clone(),
            source_event: failure.source_event.clone(),
            metadata: failure.metadata.clone(),
        }),
        failure.detected_at,
    )
    .with_id(format!("{}-detected", failure.failure_id))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn attempted_event(
    failure: &Failure,
    strategy: &str,
    decision: &str,
    reason: &str,
    actions: &[Action],
    details: Map<String, Value>,
    now: DateTime<Utc>,
) -> NewEvent {
    fact(
        HealEvent::HealingAttempted(HealingAttempted {
            failure_id: failure.failure_id.clone(),
            strategy: strategy.to_owned(),
            agent_id: failure.agent_id.clone(),
            failure_type: Some(failure.failure_type.clone()),
            decision: decision.to_owned(),
            reason: reason.to_owned(),
            actions: actions
                .iter()
                .map(|a| serde_json::to_value(a).unwrap_or(Value::Null))
                .collect(),
            details,
        }),
        now,
    )
}
/// The id of a failure's recovery fact: one per failure, whoever records it.
pub(crate) fn recovery_event_id(failure_id: &str) -> String {
    format!("{failure_id}-recovered")
}

/// A failure's recovery fact (its id makes it once per failure).
pub(crate) fn recovery_event(
    failure_id: &str,
    agent_id: Option<String>,
    task_id: Option<String>,
    how: RecoveryHow,
    evidence_event_id: Option<String>,
    status: Option<String>,
    at: DateTime<Utc>,
) -> NewEvent {
    fact(
        HealEvent::FailureRecovered(FailureRecovered {
            failure_id: failure_id.to_owned(),
            agent_id,
            task_id,
            how,
            evidence_event_id,
            status,
        }),
        at,
    )
    .with_id(recovery_event_id(failure_id))
}

/// An instant truncated to the microsecond (never fails: out-of-range instants are kept).
pub(crate) fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    crate::time::truncate(t).unwrap_or(t)
}

/// The facts that end an attempt: its completion, and the failure's resolution if it healed.
pub(crate) fn outcome_facts(
    failure: &Failure,
    strategy: &str,
    success: bool,
    duration_ms: i64,
    actions_taken: Vec<String>,
    metadata: Map<String, Value>,
    at: DateTime<Utc>,
) -> Vec<NewEvent> {
    let mut facts = vec![fact(
        HealEvent::HealingCompleted(HealingCompleted {
            failure_id: failure.failure_id.clone(),
            strategy: strategy.to_owned(),
            agent_id: failure.agent_id.clone(),
            failure_type: Some(failure.failure_type.clone()),
            success,
            duration_ms,
            actions_taken,
            metadata,
        }),
        at,
    )];
    if success {
        facts.push(fact(
            HealEvent::FailureResolved(FailureResolved {
                failure_id: failure.failure_id.clone(),
                failure_type: failure.failure_type.clone(),
                agent_id: failure.agent_id.clone(),
                strategy: Some(strategy.to_owned()),
                detected_at: failure.detected_at,
            }),
            at,
        ));
    }
    facts
}
