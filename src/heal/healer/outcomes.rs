//! Outcomes: the healer's own after acting, and the caller's for delegated actions.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Map, json};

use super::*;
use crate::event::{ExpectedVersion, NewEvent};
use crate::events::HealEvent;
use crate::heal::engine::facts::*;
use crate::heal::model::{Failure, failure_stream};
use crate::store::{EventFilter, StreamAppend};

/// What [`Healer::record_outcome`] recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutcomeReport {
    pub failure_id: String,
    pub strategy: String,
    pub success: bool,
    pub duration_ms: i64,
    /// Detection to remediation, when the actions succeeded (the failure's recovery is
    /// another fact: see [`Healer::record_recovered`]).
    pub time_to_remediate_ms: Option<i64>,
    /// The outcome was already recorded (by a retry, or another caller at the same time):
    /// nothing was written, and this is the recorded one.
    pub duplicate: bool,
}

/// A failure's delegated decision, as its stream tells it.
pub(super) struct Awaited {
    pub(super) failure: Failure,
    /// The deciding strategy's name, and the strategy.
    pub(super) name: String,
    pub(super) decided_at: DateTime<Utc>,
    pub(super) strategy: Arc<dyn ErasedStrategy>,
    /// The failure stream's version: an outcome is appended at it.
    pub(super) version: u64,
    /// The outcome, if one is recorded after the decision.
    pub(super) recorded: Option<Recorded>,
}

/// An outcome already recorded.
pub(super) struct Recorded {
    pub(super) success: bool,
    pub(super) duration_ms: i64,
    pub(super) at: DateTime<Utc>,
}

impl Awaited {
    /// The answer to an outcome reported again: the recorded one, if the result is the same.
    fn answer_recorded(&self, success: bool, r: &Recorded) -> Result<OutcomeReport> {
        let said = |ok: bool| if ok { "healed" } else { "not healed" };
        if r.success != success {
            return Err(Error::Conflict(format!(
                "the outcome of failure {} is already recorded as {}; this report \
                 says {}",
                self.failure.failure_id,
                said(r.success),
                said(success)
            )));
        }
        Ok(OutcomeReport {
            failure_id: self.failure.failure_id.clone(),
            strategy: self.name.clone(),
            success: r.success,
            duration_ms: r.duration_ms,
            time_to_remediate_ms: r
                .success
                .then(|| (r.at - self.failure.detected_at).num_milliseconds()),
            duplicate: true,
        })
    }
}

impl Healer {
    /// Appends outcome facts to the failure stream with the strategy's reaction to the
    /// outcome, atomically (retrying the reaction on conflicts), and the failure's `recovery`
    /// after them, unless one is recorded already (then it is left out). With `lock`, the
    /// strategy's lock is taken for the reaction and released once it is queued; otherwise
    /// the caller holds it.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn record_outcome_events(
        &self,
        strategy: &Arc<dyn ErasedStrategy>,
        failure: &Failure,
        sstream: &str,
        key: &str,
        success: bool,
        fstream: &str,
        fexpected: ExpectedVersion,
        facts: Vec<NewEvent>,
        mut recovery: Option<NewEvent>,
        now: DateTime<Utc>,
        lock: bool,
    ) -> Result<()> {
        for tries in 1.. {
            let mut guards = Vec::new();
            if lock {
                guards.push(self.key_lock(sstream).lock_owned().await);
            }
            let (version, state) = self.current(strategy, sstream, key).await?;
            let after = self.pending_of(sstream);
            let reaction = strategy.on_result(&state, failure, success, now);
            let state_events = strategy_events(strategy, key, &reaction, now)?;
            let n_state = state_events.len();
            let mut parts = Vec::new();
            if n_state > 0 {
                parts.push(StreamAppend {
                    stream_id: sstream.to_owned(),
                    expected: ExpectedVersion::Exact(version),
                    events: state_events,
                });
            }
            let mut fevents = facts.clone();
            fevents.extend(recovery.clone());
            parts.push(StreamAppend {
                stream_id: fstream.to_owned(),
                expected: fexpected,
                events: fevents,
            });
            let decided = if n_state > 0 {
                vec![(
                    strategy.clone(),
                    sstream.to_owned(),
                    key.to_owned(),
                    (version, state),
                    reaction.iter().map(|(_, v)| v.clone()).collect(),
                )]
            } else {
                Vec::new()
            };
            match self.submit_decided(parts, &decided, after, guards).await {
                Ok(_) => return Ok(()),
                // A conflict on the strategy's state (or on a decision it was built on): react
                // again. One on the failure's stream goes to the caller (another outcome was
                // recorded meanwhile).
                Err(Error::DependencyFailed { .. }) if tries < MAX_DEPENDENCY_RETRIES => {
                    self.wait_settled(sstream).await;
                    self.refresh(strategy, sstream, key).await?;
                    continue;
                }
                // The failure recovered meanwhile (a signal): its recovery is recorded.
                Err(Error::EventIdReused { event_id, .. })
                    if recovery.as_ref().is_some_and(|r| r.event_id == event_id) =>
                {
                    recovery = None;
                    continue;
                }
                Err(Error::WrongExpectedVersion { stream, .. })
                    if stream != fstream && tries < MAX_CONFLICT_RETRIES =>
                {
                    self.wait_settled(sstream).await;
                    self.refresh(strategy, sstream, key).await?;
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reports the outcome of actions that were delegated to the caller.
    ///
    /// One result per attempt: when the outcome is already recorded (a retry, or another
    /// caller at the same time, in this process or another), nothing is written and the
    /// recorded outcome is returned as a duplicate; a different result is refused as a
    /// conflict.
    pub async fn record_outcome(
        &self,
        failure_id: &str,
        success: bool,
        duration_ms: Option<i64>,
        at: DateTime<Utc>,
    ) -> Result<OutcomeReport> {
        let at = micros(at);
        let fstream = failure_stream(failure_id);
        let first = self.awaiting_outcome(failure_id).await?;
        let key = first.strategy.key(&first.failure);
        let sstream = strategy_stream(&first.name, &key);
        let lock = self.key_lock(&sstream);
        let _guard = lock.lock().await;
        for tries in 1.. {
            // Read again under the lock: another caller may have recorded it meanwhile.
            let awaited = self.awaiting_outcome(failure_id).await?;
            if let Some(recorded) = &awaited.recorded {
                return awaited.answer_recorded(success, recorded);
            }
            let Awaited {
                failure,
                name,
                decided_at,
                strategy,
                version,
                ..
            } = awaited;
            let duration = duration_ms.unwrap_or_else(|| {
                (at - decided_at)
                    .num_milliseconds()
                    .clamp(0, crate::events::MAX_DURATION_MS)
            });
            let facts = outcome_facts(
                &failure,
                &name,
                success,
                duration,
                Vec::new(),
                Map::from_iter([("reported_by".to_owned(), json!("caller"))]),
                at,
            );
            let key = strategy.key(&failure);
            let sstream = strategy_stream(&name, &key);
            match self
                .record_outcome_events(
                    &strategy,
                    &failure,
                    &sstream,
                    &key,
                    success,
                    &fstream,
                    ExpectedVersion::Exact(version),
                    facts,
                    None,
                    at,
                    false,
                )
                .await
            {
                Ok(()) => {
                    return Ok(OutcomeReport {
                        failure_id: failure.failure_id,
                        strategy: name,
                        success,
                        duration_ms: duration,
                        time_to_remediate_ms: success
                            .then(|| (at - failure.detected_at).num_milliseconds()),
                        duplicate: false,
                    });
                }
                // The failure's stream moved (another process recorded an outcome): read again.
                Err(Error::WrongExpectedVersion { .. }) if tries < MAX_CONFLICT_RETRIES => {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns")
    }

    /// Checks, without writing anything, that `failure_id` has a delegated decision awaiting
    /// its outcome, or that the same result is recorded for it already (a retry, answered as
    /// a duplicate); another result recorded for it is a conflict.
    pub async fn check_outcome(&self, failure_id: &str, success: bool) -> Result<()> {
        let awaited = self.awaiting_outcome(failure_id).await?;
        if let Some(recorded) = &awaited.recorded {
            awaited.answer_recorded(success, recorded)?;
        }
        Ok(())
    }

    /// The failure's delegated decision and its outcome, if recorded, read from its stream.
    pub(super) async fn awaiting_outcome(&self, failure_id: &str) -> Result<Awaited> {
        crate::event::check_id("failure_id", failure_id)?;
        let fstream = failure_stream(failure_id);
        let mut events = self.store.read(EventFilter::stream(&fstream));
        let mut failure = None;
        let mut delegated: Option<(String, DateTime<Utc>)> = None;
        let mut recorded = None;
        let mut version = 0;
        while let Some(e) = events.next().await {
            let e = e?;
            version = e.stream_version;
            match e.decode() {
                Some(HealEvent::FailureDetected(d)) => {
                    failure = Some(Failure {
                        failure_id: d.failure_id,
                        failure_type: d.failure_type,
                        agent_id: d.agent_id,
                        task_id: d.task_id,
                        severity: d.severity,
                        detected_at: e.occurred_at,
                        source_event: d.source_event,
                        metadata: d.metadata,
                    })
                }
                Some(HealEvent::HealingAttempted(a)) if a.decision == "delegated" => {
                    delegated = Some((a.strategy, e.occurred_at));
                    recorded = None;
                }
                Some(HealEvent::HealingCompleted(c)) => {
                    recorded = Some(Recorded {
                        success: c.success,
                        duration_ms: c.duration_ms,
                        at: e.occurred_at,
                    });
                }
                _ => {}
            }
        }
        drop(events);
        let failure = failure.ok_or_else(|| {
            Error::NotFound(format!("no failure with id {failure_id:?} is recorded"))
        })?;
        let (name, decided_at) = delegated.ok_or_else(|| {
            Error::Conflict(format!(
                "failure {failure_id} has no delegated decision awaiting an outcome"
            ))
        })?;
        let strategy = self.engine.strategy(&name).cloned().ok_or_else(|| {
            Error::InvalidInput(format!(
                "strategy {name} decided failure {failure_id} but is not configured now"
            ))
        })?;
        Ok(Awaited {
            failure,
            name,
            decided_at,
            strategy,
            version,
            recorded,
        })
    }
}
