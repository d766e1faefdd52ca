//! Preventions: predictions proposed as preventive actions, approved (by a person or by the
//! policy) or rejected, carried out through the coordinator or handed to the caller, and
//! their outcomes. See [`crate::heal::prevention`] for the events and the fold.

use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::json;

use super::act::execute;
use super::limits::LimitGuards;
use super::*;
use crate::analytics::Prediction;
use crate::event::ExpectedVersion;
use crate::events::{
    ActionExecuted, HealEvent, LimitCounted, PreventionApproved, PreventionExecuted,
    PreventionProposed, PreventionRejected,
};
use crate::heal::engine::facts::{fact, strategy_events};
use crate::heal::model::Action;
use crate::heal::prevention::{self, PreventionView, prevention_id, prevention_stream};
use crate::heal::strategy::Verdict;
use crate::store::StreamAppend;

/// What became of one prediction.
#[derive(Debug, Clone, Serialize)]
pub struct ProposalReport {
    pub prediction_id: String,
    pub prevention_id: String,
    /// `proposed` (awaiting approval), `auto_approved`, `held_back` (recorded, kept back by
    /// the holdout), `already_proposed`, `below_threshold` or `not_offered` (nothing is
    /// written for the last two).
    pub status: String,
    pub reason: String,
    /// Why the policy did not approve it by itself, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prevention: Option<PreventionView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalReport>,
}

/// One action of an approved prevention carried out by the coordinator.
#[derive(Debug, Clone, Serialize)]
pub struct PreventionActionResult {
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub success: bool,
    pub detail: String,
}

/// An approval and what it did.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalReport {
    pub prevention_id: String,
    pub by: String,
    /// `act` (carried out through the coordinator), `delegated` (the caller carries the
    /// actions out and reports back: `prevent outcome`), `shadow` (recorded, not acted on) or
    /// `declined` (the strategy no longer offers an action on the state as it is now).
    pub decision: String,
    pub reason: String,
    pub actions: Vec<Action>,
    pub results: Vec<PreventionActionResult>,
    pub prevention: PreventionView,
}

/// The stream counting the policy's automatic approvals on an agent.
fn auto_limit_stream(agent: &str) -> String {
    format!("limits-prevention-agent-{agent}")
}

fn refuse_not_pending(v: &PreventionView) -> Error {
    let id = &v.prevention_id;
    match v.status.as_str() {
        "held_back" => Error::Conflict(format!(
            "prevention {id} is held back by the holdout: nothing is done about it (it is what \
             preventions are measured against)"
        )),
        "rejected" => Error::Conflict(format!(
            "prevention {id} was rejected by {} at {}: {}",
            v.decided_by.as_deref().unwrap_or("?"),
            v.decided_at.as_deref().unwrap_or("?"),
            v.decision_reason.as_deref().unwrap_or("")
        )),
        status => Error::Conflict(format!(
            "prevention {id} was already approved by {} at {} ({status})",
            v.decided_by.as_deref().unwrap_or("?"),
            v.decided_at.as_deref().unwrap_or("?"),
        )),
    }
}

impl Healer {
    /// Turns predictions into proposed preventions: each one at or above the policy's
    /// probability that a strategy offers an action for is recorded (`prevention_proposed`),
    /// kept back when the holdout chooses it, and approved at once when the policy allows
    /// (counted against the healer's limits). A prediction already proposed is answered with
    /// its prevention; nothing is written for predictions below the probability or that no
    /// strategy offers an action for.
    pub async fn propose_preventions(
        &self,
        predictions: &[Prediction],
        now: DateTime<Utc>,
    ) -> Result<Vec<ProposalReport>> {
        let now = micros(now);
        let policy = self.engine.prevention.clone();
        let mut out = Vec::new();
        for p in predictions {
            crate::event::check_id("prediction_id", &p.prediction_id)?;
            let pid = prevention_id(&p.prediction_id);
            let stream = prevention_stream(&p.prediction_id);
            let report = |status: &str, reason: String| ProposalReport {
                prediction_id: p.prediction_id.clone(),
                prevention_id: pid.clone(),
                status: status.into(),
                reason,
                policy: None,
                prevention: None,
                approval: None,
            };
            if p.probability.is_nan() || p.probability < policy.min_probability {
                out.push(report(
                    "below_threshold",
                    format!(
                        "probability {:.2} is below prevention.min_probability {:.2}",
                        p.probability, policy.min_probability
                    ),
                ));
                continue;
            }
            if self.store.stream_version(&stream).await? > 0 {
                let mut r = report("already_proposed", "proposed earlier".into());
                r.prevention = Some(prevention::get(&self.store, &pid).await?);
                out.push(r);
                continue;
            }
            let mut offer = None;
            let mut why = Vec::new();
            for s in self
                .engine
                .preventers(p.recommended_strategy.as_deref(), &p.failure_type)
            {
                let key = s.key(&p.as_failure());
                let sstream = strategy_stream(s.name(), &key);
                let (_, state) = self.current(&s, &sstream, &key).await?;
                let d = s.prevent(&state, p, now);
                if d.verdict == Verdict::Act && !d.actions.is_empty() {
                    offer = Some((s, key, d));
                    break;
                }
                why.push(format!("{}: {}", s.name(), d.reason));
            }
            let Some((s, key, d)) = offer else {
                let reason = if why.is_empty() {
                    format!("no strategy is routed for {}", p.failure_type)
                } else {
                    why.join("; ")
                };
                out.push(report("not_offered", reason));
                continue;
            };
            let holdout = policy.holdout(&p.prediction_id);
            let names: Vec<String> = d.actions.iter().map(|a| a.name().to_owned()).collect();
            let auto = if holdout.held_back {
                Err("held back by the holdout".to_owned())
            } else if self.engine.options.mode == Mode::SuggestOnly {
                Err("suggest-only mode: a person approves".to_owned())
            } else {
                let count = match &p.agent_id {
                    Some(agent) => self.auto_count(agent, now).await?.0,
                    None => 0,
                };
                policy.auto_verdict(p.probability, &names, count)
            };
            let mut details = d.details.clone();
            details.insert(
                "prediction".into(),
                serde_json::to_value(p).unwrap_or_default(),
            );
            details.insert(
                "policy".into(),
                json!({ "auto_approve": auto.is_ok(), "why_not": auto.as_ref().err() }),
            );
            let proposed = PreventionProposed {
                prevention_id: pid.clone(),
                prediction_id: p.prediction_id.clone(),
                agent_id: p.agent_id.clone(),
                failure_type: p.failure_type.clone(),
                source: p.source.clone(),
                probability: p.probability,
                expected_by: p.expected_by.clone(),
                strategy: s.name().to_owned(),
                key,
                actions: d
                    .actions
                    .iter()
                    .map(|a| serde_json::to_value(a).unwrap_or_default())
                    .collect(),
                reason: d.reason.clone(),
                details,
                holdout: holdout.clone(),
            };
            let mut e = fact(HealEvent::PreventionProposed(proposed), now);
            e.event_id = format!("{pid}-proposed");
            match self
                .store
                .append(&stream, ExpectedVersion::NoStream, vec![e])
                .await
            {
                Ok(a) => self.note_own(&a),
                Err(Error::WrongExpectedVersion { .. }) | Err(Error::EventIdReused { .. }) => {
                    let mut r = report("already_proposed", "proposed by another process".into());
                    r.prevention = Some(prevention::get(&self.store, &pid).await?);
                    out.push(r);
                    continue;
                }
                Err(e) => return Err(e),
            }
            let mut r = if holdout.held_back {
                report(
                    "held_back",
                    format!(
                        "kept back by the holdout (bucket {} < {:.0}): nothing is done, for \
                         comparison",
                        holdout.bucket,
                        holdout.share * 10_000.0
                    ),
                )
            } else {
                report("proposed", d.reason.clone())
            };
            match auto {
                Ok(()) => match self.approve_inner(&pid, "policy", None, now, true).await? {
                    Ok(a) => {
                        r.status = "auto_approved".into();
                        r.prevention = Some(a.prevention.clone());
                        r.approval = Some(a);
                    }
                    Err(why) => r.policy = Some(why),
                },
                Err(why) if !holdout.held_back => r.policy = Some(why),
                Err(_) => {}
            }
            if r.prevention.is_none() {
                r.prevention = Some(prevention::get(&self.store, &pid).await?);
            }
            out.push(r);
        }
        Ok(out)
    }

    /// Approves a pending prevention: the strategy is asked again on its state as it is now
    /// (its state events appended with the approval), and the actions are carried out through
    /// the coordinator (`act`), handed to the caller (`delegated`: report back with
    /// [`Healer::record_prevention_outcome`]), or only recorded (`shadow` mode). A prevention
    /// that is not pending (approved, rejected, held back) is refused as a conflict: of two
    /// approvals, from any processes, one acts.
    pub async fn approve_prevention(
        &self,
        prevention_id: &str,
        by: &str,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<ApprovalReport> {
        check_by(by)?;
        match self
            .approve_inner(prevention_id, by, reason, micros(now), false)
            .await?
        {
            Ok(r) => Ok(r),
            Err(why) => Err(Error::Conflict(why)),
        }
    }

    /// Rejects a pending prevention, with who and why.
    pub async fn reject_prevention(
        &self,
        prevention_id: &str,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<PreventionView> {
        check_by(by)?;
        if reason.trim().is_empty() {
            return Err(Error::InvalidInput(
                "a rejection needs a reason (--reason TEXT)".into(),
            ));
        }
        let now = micros(now);
        for _ in 0..MAX_CONFLICT_RETRIES {
            let view = prevention::get(&self.store, prevention_id).await?;
            if view.status != "pending" {
                return Err(refuse_not_pending(&view));
            }
            let e = fact(
                HealEvent::PreventionRejected(PreventionRejected {
                    prevention_id: view.prevention_id.clone(),
                    by: by.to_owned(),
                    reason: reason.to_owned(),
                }),
                now,
            );
            match self
                .store
                .append(
                    &prevention_stream(&view.prediction_id),
                    ExpectedVersion::Exact(view.version),
                    vec![e],
                )
                .await
            {
                Ok(a) => {
                    self.note_own(&a);
                    return prevention::get(&self.store, prevention_id).await;
                }
                Err(Error::WrongExpectedVersion { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict(format!(
            "prevention {prevention_id} kept changing while it was rejected"
        )))
    }

    /// The caller's report on a delegated prevention's actions, once: the same report again
    /// is answered as a duplicate (`true`), another result is refused as a conflict.
    pub async fn record_prevention_outcome(
        &self,
        prevention_id: &str,
        success: bool,
        duration_ms: i64,
        now: DateTime<Utc>,
    ) -> Result<(PreventionView, bool)> {
        crate::events::MAX_DURATION_MS
            .checked_sub(duration_ms)
            .filter(|_| duration_ms >= 0)
            .ok_or_else(|| {
                Error::InvalidInput(format!("duration {duration_ms} ms is out of range"))
            })?;
        let now = micros(now);
        for _ in 0..MAX_CONFLICT_RETRIES {
            let view = prevention::get(&self.store, prevention_id).await?;
            match view.status.as_str() {
                "executed" | "failed" => {
                    return if (view.status == "executed") == success {
                        Ok((view, true))
                    } else {
                        Err(Error::Conflict(format!(
                            "prevention {prevention_id} already has the outcome {}",
                            view.status
                        )))
                    };
                }
                "approved" if view.decision.as_deref() == Some("delegated") => {}
                status => {
                    return Err(Error::Conflict(format!(
                        "prevention {prevention_id} is {status}: no outcome is awaited"
                    )));
                }
            }
            let e = fact(
                HealEvent::PreventionExecuted(PreventionExecuted {
                    prevention_id: view.prevention_id.clone(),
                    agent_id: view.agent_id.clone(),
                    success,
                    duration_ms,
                    actions_taken: view.actions.clone(),
                    error: None,
                    reported_by: "caller".into(),
                }),
                now,
            );
            match self
                .store
                .append(
                    &prevention_stream(&view.prediction_id),
                    ExpectedVersion::Exact(view.version),
                    vec![e],
                )
                .await
            {
                Ok(a) => {
                    self.note_own(&a);
                    return Ok((prevention::get(&self.store, prevention_id).await?, false));
                }
                Err(Error::WrongExpectedVersion { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict(format!(
            "prevention {prevention_id} kept changing while its outcome was recorded"
        )))
    }

    /// The policy's automatic approvals on `agent` in the hour before `now`, and the version
    /// of the stream counting them.
    async fn auto_count(&self, agent: &str, now: DateTime<Utc>) -> Result<(u64, u64)> {
        let stream = auto_limit_stream(agent);
        let (count, version): (i64, i64) = self
            .store
            .db()
            .fetch_one(
                "SELECT (SELECT count(*) FROM events WHERE stream_id = ?1 AND occurred_at > ?2 \
                         AND occurred_at <= ?3), \
                        COALESCE((SELECT MAX(stream_version) FROM events WHERE stream_id = ?1), \
                                 (SELECT version FROM archived_streams WHERE stream_id = ?1), 0)",
                &[
                    (&stream).into(),
                    crate::time::to_micros(now - Duration::hours(1)).into(),
                    crate::time::to_micros(now).into(),
                ],
            )
            .await
            .map_err(Error::from)?;
        Ok((count.max(0) as u64, version.max(0) as u64))
    }

    /// An approval. `Ok(Err(why))`: an automatic approval the policy or the healer's limits
    /// refuse (nothing is written; the proposal stays pending for a person).
    async fn approve_inner(
        &self,
        prevention_id: &str,
        by: &str,
        reason: Option<&str>,
        now: DateTime<Utc>,
        automatic: bool,
    ) -> Result<std::result::Result<ApprovalReport, String>> {
        let mut tries = 0;
        let (view, strategy, decision, d) =
            loop {
                tries += 1;
                let view = prevention::get(&self.store, prevention_id).await?;
                if view.status != "pending" {
                    return Err(refuse_not_pending(&view));
                }
                let prediction = view.prediction().ok_or_else(|| {
                    Error::InvalidEvent(format!(
                        "prevention {prevention_id}: its proposal holds no prediction"
                    ))
                })?;
                let strategy = self.engine.strategy(&view.strategy).cloned().ok_or_else(|| {
                Error::InvalidInput(format!(
                    "prevention {prevention_id} was offered by {}, which the configuration no \
                     longer has",
                    view.strategy
                ))
            })?;
                let sstream = strategy_stream(strategy.name(), &view.key);
                let lock = self.key_lock(&sstream);
                let _guard = lock.lock().await;
                self.wait_settled(&sstream).await;
                let (version, state) = self.current(&strategy, &sstream, &view.key).await?;
                let d = strategy.prevent(&state, &prediction, now);
                let offered = d.verdict == Verdict::Act && !d.actions.is_empty();
                let mode = self.engine.options.mode;
                let decision = if !offered {
                    "declined"
                } else if mode == Mode::Shadow {
                    "shadow"
                } else if self.engine.acts {
                    "act"
                } else {
                    "delegated"
                };
                let mut parts = Vec::new();
                let mut guards = LimitGuards::default();
                if automatic && offered && mode == Mode::Auto {
                    let mut failure = prediction.as_failure();
                    failure.failure_id = view.prevention_id.clone();
                    match self
                        .check_limits(
                            &failure,
                            strategy.name(),
                            &sstream,
                            version + d.events.len() as u64,
                            &d.actions,
                            now,
                            &mut guards,
                        )
                        .await?
                    {
                        Ok(p) => parts.extend(p),
                        Err(why) => {
                            return Ok(Err(format!("withheld by the healer's limits: {why}")));
                        }
                    }
                    if let (Some(agent), Some(auto)) =
                        (&view.agent_id, &self.engine.prevention.auto)
                    {
                        let (count, v) = self.auto_count(agent, now).await?;
                        let names: Vec<String> =
                            d.actions.iter().map(|a| a.name().to_owned()).collect();
                        if let Err(why) =
                            self.engine
                                .prevention
                                .auto_verdict(view.probability, &names, count)
                        {
                            return Ok(Err(why));
                        }
                        parts.push(StreamAppend {
                            stream_id: auto_limit_stream(agent),
                            expected: ExpectedVersion::Exact(v),
                            events: vec![fact(
                                HealEvent::LimitCounted(LimitCounted {
                                    limit: "prevention_auto".into(),
                                    failure_id: view.prevention_id.clone(),
                                    decided_by: strategy.name().to_owned(),
                                    agent_id: Some(agent.clone()),
                                    count: count + 1,
                                    allowed: u64::from(auto.max_per_agent_per_hour),
                                    disabled: Vec::new(),
                                }),
                                now,
                            )],
                        });
                    }
                }
                let events = if offered {
                    strategy_events(&strategy, &view.key, &d.events, now)?
                } else {
                    Vec::new()
                };
                let has_events = !events.is_empty();
                if has_events {
                    parts.push(StreamAppend {
                        stream_id: sstream.clone(),
                        expected: ExpectedVersion::Exact(version),
                        events,
                    });
                }
                let mut details = d.details.clone();
                if !offered {
                    details.insert("declined".into(), json!(d.reason));
                }
                parts.push(StreamAppend {
                    stream_id: prevention_stream(&view.prediction_id),
                    expected: ExpectedVersion::Exact(view.version),
                    events: vec![fact(
                        HealEvent::PreventionApproved(PreventionApproved {
                            prevention_id: view.prevention_id.clone(),
                            by: by.to_owned(),
                            reason: reason.map(str::to_owned),
                            decision: decision.into(),
                            agent_id: view.agent_id.clone(),
                            strategy: strategy.name().to_owned(),
                            actions: d
                                .actions
                                .iter()
                                .map(|a| serde_json::to_value(a).unwrap_or_default())
                                .collect(),
                            details,
                        }),
                        now,
                    )],
                });
                match self.store.append_atomic(parts).await {
                    Ok(appended) => {
                        self.note_own(&appended);
                        if has_events {
                            let applied: Vec<(u64, serde_json::Value)> = appended
                                .iter()
                                .skip_while(|a| a.stream_version != version + 1)
                                .zip(&d.events)
                                .map(|(a, (_, v))| (a.stream_version, v.clone()))
                                .collect();
                            self.apply_local(
                                &strategy,
                                &sstream,
                                &view.key,
                                (version, &state),
                                &applied,
                            );
                        }
                        break (view, strategy, decision, d);
                    }
                    Err(Error::WrongExpectedVersion { .. }) if tries < MAX_CONFLICT_RETRIES => {
                        // Another process approved or rejected it (the next look refuses), or
                        // moved the strategy's state or a limit: decide again on the state now.
                        self.refresh(&strategy, &sstream, &view.key).await?;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            };

        let mut results = Vec::new();
        if decision == "act"
            && let Some(c) = &self.coordinator
        {
            let started = Instant::now();
            let mut facts = Vec::new();
            let mut error = None;
            for action in &d.actions {
                if error.is_some() {
                    break;
                }
                let t = Instant::now();
                let res = execute(c.as_ref(), action).await;
                facts.push(fact(
                    HealEvent::ActionExecuted(ActionExecuted {
                        failure_id: None,
                        strategy: strategy.name().to_owned(),
                        agent_id: action.agent().map(str::to_owned),
                        action: action.name().to_owned(),
                        target: action.target(),
                        success: res.is_ok(),
                        error: res.as_ref().err().cloned(),
                        duration_ms: t.elapsed().as_millis() as i64,
                    }),
                    self.now(),
                ));
                if let Err(e) = &res {
                    error = Some(e.clone());
                }
                results.push(PreventionActionResult {
                    action: action.name().to_owned(),
                    target: action.target(),
                    success: res.is_ok(),
                    detail: res.unwrap_or_else(|e| e),
                });
            }
            facts.push(fact(
                HealEvent::PreventionExecuted(PreventionExecuted {
                    prevention_id: view.prevention_id.clone(),
                    agent_id: view.agent_id.clone(),
                    success: error.is_none(),
                    duration_ms: started.elapsed().as_millis() as i64,
                    actions_taken: results.iter().map(|r| r.action.clone()).collect(),
                    error,
                    reported_by: "coordinator".into(),
                }),
                self.now(),
            ));
            let appended = self
                .store
                .append(
                    &prevention_stream(&view.prediction_id),
                    ExpectedVersion::Any,
                    facts,
                )
                .await?;
            self.note_own(&appended);
        }
        Ok(Ok(ApprovalReport {
            prevention_id: view.prevention_id.clone(),
            by: by.to_owned(),
            decision: decision.into(),
            reason: d.reason.clone(),
            actions: d.actions.clone(),
            results,
            prevention: prevention::get(&self.store, &view.prevention_id).await?,
        }))
    }
}

fn check_by(by: &str) -> Result<()> {
    if by.trim().is_empty() {
        return Err(Error::InvalidInput(
            "who decides must be named (--by NAME)".into(),
        ));
    }
    crate::event::check_id("by", by)
}
