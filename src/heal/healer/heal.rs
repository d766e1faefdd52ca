//! Healing a failure: its phases (decide with the engine, append), and the answer to a
//! retried heal.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde_json::Map;

use super::limits::*;
use super::states::*;
use super::*;
use crate::event::{ExpectedVersion, NewEvent};
use crate::events::HealEvent;
use crate::heal::engine::decide::{attempt_facts, payloads};
use crate::heal::engine::facts::*;
use crate::heal::engine::report::summarize;
use crate::heal::model::{Failure, HealingResult};
use crate::store::{EventFilter, StreamAppend};

/// The decisions of one phase of a heal, appended together.
pub(super) struct Phase {
    pub(super) attempts: Vec<Attempt>,
    /// The strategy whose decision acts, with that decision.
    pub(super) acting: Option<(
        Arc<dyn ErasedStrategy>,
        crate::heal::strategy::ErasedDecision,
    )>,
    /// How many members of the route the phase went through.
    pub(super) consumed: usize,
    /// Locks on the states the phase decided on, held until its actions are recorded.
    pub(super) guards: Vec<tokio::sync::OwnedMutexGuard<()>>,
}

impl Healer {
    /// Heals a failure: records it and every decision, acts (or delegates), records the
    /// outcome. Healing a failure id that is already recorded does nothing again.
    ///
    /// The failure and the decisions up to the first one that acts (or holds) are appended in
    /// one atomic append, together with the strategies' state events: one commit between a
    /// failure and its decision.
    pub async fn heal(&self, failure: Failure) -> Result<HealReport> {
        use tracing::Instrument;
        let span = tracing::info_span!("heal", failure_id = %failure.failure_id, failure_type = %failure.failure_type);
        self.heal_inner(failure).instrument(span).await
    }

    pub(super) async fn heal_inner(&self, mut failure: Failure) -> Result<HealReport> {
        failure.detected_at = micros(failure.detected_at);
        failure.check_ids()?;
        let now = self.now();
        let started = Instant::now();
        let fstream = failure.stream_id();
        let mut report = HealReport {
            failure: failure.clone(),
            route: "none".into(),
            attempts: Vec::new(),
            result: HealingResult {
                success: false,
                failure_id: failure.failure_id.clone(),
                strategy_used: "none".into(),
                actions_taken: Vec::new(),
                duration_ms: 0,
                timestamp: now,
                metadata: Map::new(),
            },
            delegated: Vec::new(),
            duplicate: false,
            decided_us: 0,
        };
        if let Some(name) = self.engine.route_name(&failure.failure_type) {
            report.route = name;
        }
        let members = self.engine.members(&failure.failure_type);

        let mut rest: &[Arc<dyn ErasedStrategy>] = &members;
        let mut first = true;
        loop {
            let phase = self.decide_phase(&failure, rest, first, now).await?;
            let Some(phase) = phase else {
                // A retry: answered with what the first heal recorded.
                return self.recorded_report(&failure, report).await;
            };
            if first {
                report.decided_us = started.elapsed().as_micros() as u64;
            }
            first = false;
            rest = &rest[phase.consumed..];
            let last_label = phase.attempts.last().map(|a| a.decision.clone());
            report.attempts.extend(phase.attempts);
            match last_label.as_deref() {
                Some("act") => {
                    let (strategy, decision) = phase.acting.expect("an acting decision");
                    let attempt = report.attempts.last_mut().expect("an attempt");
                    // The decision is committed: other heals of the same states may decide
                    // while this one acts (as they do while a delegated action is carried
                    // out); the outcome's reaction is appended at the version it reads then.
                    drop(phase.guards);
                    let ok = self
                        .act(
                            &strategy, &failure, &fstream, &decision, attempt, now, started,
                        )
                        .await?;
                    if ok || rest.is_empty() {
                        break;
                    }
                    // A composite chain goes on to its next member.
                }
                Some("delegated") => {
                    let a = report.attempts.last().expect("an attempt");
                    report.delegated.extend(a.actions.iter().cloned());
                    break;
                }
                _ => break,
            }
        }

        let composite = self.engine.is_composite(&failure.failure_type);
        summarize(&mut report, composite);
        report.result.duration_ms = started.elapsed().as_millis() as i64;
        report.result.timestamp = self.now();
        Ok(report)
    }

    /// The answer to a retried heal: the decisions, actions, results and outcome recorded in
    /// the failure's stream by the heal that recorded it first. A retry must repeat the
    /// failure's type, agent and task (its times and the rest may differ): other facts under
    /// a recorded id are refused as a conflict.
    pub(super) async fn recorded_report(
        &self,
        asked: &Failure,
        mut report: HealReport,
    ) -> Result<HealReport> {
        report.duplicate = true;
        let mut recorded: Option<Failure> = None;
        let mut decided_at = None;
        let mut duration_ms = 0;
        let mut events = self.store.read(EventFilter::stream(asked.stream_id()));
        while let Some(e) = events.next().await {
            let e = e?;
            match e.decode() {
                Some(HealEvent::FailureDetected(d)) => {
                    recorded = Some(Failure {
                        failure_id: d.failure_id,
                        failure_type: d.failure_type,
                        agent_id: d.agent_id,
                        task_id: d.task_id,
                        severity: d.severity,
                        detected_at: e.occurred_at,
                        source_event: d.source_event,
                        metadata: d.metadata,
                    });
                }
                Some(HealEvent::HealingAttempted(a)) => {
                    decided_at.get_or_insert(e.occurred_at);
                    let actions = a
                        .actions
                        .into_iter()
                        .filter_map(|v| serde_json::from_value(v).ok())
                        .collect();
                    report.attempts.push(Attempt::new(
                        &a.strategy,
                        &a.decision,
                        a.reason,
                        a.details,
                        actions,
                    ));
                }
                Some(HealEvent::ActionExecuted(x)) if x.failure_id.is_some() => {
                    if let Some(a) = report
                        .attempts
                        .iter_mut()
                        .rev()
                        .find(|a| a.strategy == x.strategy)
                    {
                        a.results.push(if x.success {
                            Ok(String::new())
                        } else {
                            Err(x.error.unwrap_or_default())
                        });
                    }
                }
                Some(HealEvent::HealingCompleted(c)) => {
                    if let Some(a) = report
                        .attempts
                        .iter_mut()
                        .rev()
                        .find(|a| a.strategy == c.strategy)
                    {
                        a.success = Some(c.success);
                        // What each action did, as its heal described it.
                        for (r, taken) in a.results.iter_mut().zip(&c.actions_taken) {
                            if let Ok(done) = r {
                                done.clone_from(taken);
                            }
                        }
                    }
                    duration_ms = c.duration_ms;
                }
                _ => {}
            }
        }
        drop(events);
        let id = &asked.failure_id;
        let Some(recorded) = recorded else {
            // Its events were archived: the answer is in the archive.
            tracing::warn!(failure_id = %id, "a retried failure's events are archived");
            return Ok(report);
        };
        let show = |v: &Option<String>| v.as_deref().unwrap_or("none").to_owned();
        let differs = [
            (
                "type",
                recorded.failure_type.clone(),
                asked.failure_type.clone(),
            ),
            ("agent", show(&recorded.agent_id), show(&asked.agent_id)),
            ("task", show(&recorded.task_id), show(&asked.task_id)),
        ]
        .into_iter()
        .filter(|(_, was, is)| was != is)
        .map(|(what, was, is)| format!("{what} {is}, recorded {was}"))
        .collect::<Vec<_>>();
        if !differs.is_empty() {
            return Err(Error::Conflict(format!(
                "failure {id} is already recorded with other facts ({}); a retry \
                 must repeat its type, agent and task",
                differs.join(", ")
            )));
        }
        report.failure = recorded;
        // The actions handed to the caller, while their outcome is awaited.
        if let Some(a) = report.attempts.last()
            && a.decision == "delegated"
            && a.success.is_none()
        {
            report.delegated = a.actions.clone();
        }
        let composite = self.engine.is_composite(&report.failure.failure_type);
        summarize(&mut report, composite);
        report.result.duration_ms = duration_ms;
        report.result.timestamp = decided_at.unwrap_or(report.failure.detected_at);
        Ok(report)
    }

    /// Decides with `members` in order until one acts or holds (declines and failures go on),
    /// and appends every decision of the phase, the strategies' state events and, for the
    /// first phase, the failure itself, in one atomic append. `None`: the failure was already
    /// recorded (a retried heal), nothing was written.
    pub(super) async fn decide_phase(
        &self,
        failure: &Failure,
        members: &[Arc<dyn ErasedStrategy>],
        first: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<Phase>> {
        let fstream = failure.stream_id();
        // No look-up for duplicates here: the first phase's append expects the failure's
        // stream not to exist, and a refused append is then checked (one query less per heal).
        // Lock every state the phase may touch, in a global order (no deadlock between
        // routes that list the same strategies in another order).
        let mut streams: Vec<String> = members
            .iter()
            .filter(|m| m.can_heal(failure))
            .map(|m| strategy_stream(m.name(), &m.key(failure)))
            .collect();
        streams.sort();
        streams.dedup();

        // No catch-up with the log before deciding: each decision states the version of the
        // state it was taken on, and a conflict re-reads the streams it was on.
        let mut dependencies_failed = 0;
        for tries in 1.. {
            let mut guards = Vec::with_capacity(streams.len());
            for s in &streams {
                guards.push(self.key_lock(s).lock_owned().await);
            }
            // Held until the append is answered: limits are counted from what is stored.
            let mut limit_guards = LimitGuards::default();
            let mut after: Vec<u64> = Vec::new();
            let mut parts: Vec<StreamAppend> = Vec::new();
            let mut applied: Vec<Applied> = Vec::new();
            let mut fevents: Vec<NewEvent> = Vec::new();
            if first {
                fevents.push(detected_event(failure));
            }
            let mut attempts = Vec::new();
            let mut acting = None;
            let mut consumed = 0;
            let mut limit_parts: Vec<StreamAppend> = Vec::new();
            for member in members {
                consumed += 1;
                if !member.can_heal(failure) {
                    let attempt = self.engine.cannot_heal(member.as_ref(), failure);
                    fevents.extend(attempt_facts(failure, &attempt, now));
                    attempts.push(attempt);
                    continue;
                }
                let name = member.name().to_owned();
                let key = member.key(failure);
                let sstream = strategy_stream(&name, &key);
                let (version, state) = self.current(member, &sstream, &key).await?;
                after.extend(self.pending_of(&sstream));
                let proposal = self
                    .engine
                    .propose(member.as_ref(), &state, version, failure, now);
                let mut limits = Ok(());
                if proposal.needs_limits {
                    let d = &proposal.decision;
                    let version_after = version + d.events.len() as u64;
                    let r = self
                        .check_limits(
                            failure,
                            &name,
                            &sstream,
                            version_after,
                            &d.actions,
                            now,
                            &mut limit_guards,
                        )
                        .await?;
                    match r {
                        Err(why) => limits = Err(why),
                        Ok(facts) => limit_parts = facts,
                    }
                }
                let step = self.engine.conclude(proposal, limits);
                let d = step.decision;
                if step.record_state && !d.events.is_empty() {
                    parts.push(StreamAppend {
                        stream_id: sstream.clone(),
                        expected: ExpectedVersion::Exact(version),
                        events: strategy_events(member, &key, &d.events, now)?,
                    });
                    applied.push((
                        member.clone(),
                        sstream.clone(),
                        key.clone(),
                        (version, state),
                        payloads(&d.events),
                    ));
                }
                fevents.extend(attempt_facts(failure, &step.attempt, now));
                attempts.push(step.attempt);
                match step.next {
                    Next::Continue => continue,
                    Next::Act => {
                        acting = Some((member.clone(), d));
                        break;
                    }
                    Next::Stop => break,
                }
            }
            if members.is_empty() {
                let attempt = self.engine.no_strategy(failure);
                fevents.extend(attempt_facts(failure, &attempt, now));
                attempts.push(attempt);
            }
            let n_state_parts = parts.len();
            // The limit facts come after the state events: `applied` indexes the answer.
            parts.extend(limit_parts);
            parts.push(StreamAppend {
                stream_id: fstream.clone(),
                // The first phase creates the failure's stream: if it exists, the failure was
                // recorded meanwhile by another heal of the same id.
                expected: if first {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::StreamExists
                },
                events: fevents,
            });
            after.append(&mut limit_guards.after);
            after.sort_unstable();
            after.dedup();
            let r = self
                .submit_decided(parts, &applied[..n_state_parts], after, guards)
                .await;
            match r {
                Ok(_) => {
                    return Ok(Some(Phase {
                        attempts,
                        acting,
                        consumed,
                        guards: limit_guards.held.into_iter().map(|(_, g)| g).collect(),
                    }));
                }
                Err(
                    Error::WrongExpectedVersion { .. }
                    | Error::InvalidEvent(_)
                    | Error::EventIdReused { .. },
                ) if first && self.store.stream_version(&fstream).await? > 0 => {
                    return Ok(None);
                }
                // A refused decision this one was built on is not this one's conflict: it is
                // decided again, as often as the others take (one of them is stored each time).
                Err(e @ (Error::WrongExpectedVersion { .. } | Error::DependencyFailed { .. }))
                    if tries - dependencies_failed < MAX_CONFLICT_RETRIES
                        && dependencies_failed < MAX_DEPENDENCY_RETRIES =>
                {
                    if matches!(e, Error::DependencyFailed { .. }) {
                        dependencies_failed += 1;
                    }
                    drop(limit_guards);
                    tracing::debug!("lost a race on a strategy state; deciding again");
                    for stream in &streams {
                        self.wait_settled(stream).await;
                    }
                    for (strategy, stream, key, _, _) in &applied {
                        self.refresh(strategy, stream, key).await?;
                    }
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns")
    }
}
