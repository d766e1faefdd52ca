//! One strategy's decision on a failure, as the healer records it: the strategy's verdict
//! with the numbers behind it, labelled by the mode and the healer's limits.
//!
//! A decision is taken in two halves around the one thing the engine cannot know, the
//! healer's limit counts: [`Engine::propose`] asks the strategy, and when the proposal
//! acts in `auto` mode ([`Proposal::needs_limits`]) the caller checks the limits
//! ([`super::limits`]); [`Engine::conclude`] then labels it. The caller appends
//! [`Step::facts`] to the failure's stream and, when [`Step::record_state`], the decision's
//! state events to the strategy's stream at the version it was decided on.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::Engine;
use super::facts;
use super::report::Attempt;
use super::settings::Mode;
use crate::event::NewEvent;
use crate::events::{HealEvent, HealingCompleted};
use crate::heal::model::Failure;
use crate::heal::strategy::{AnyState, ErasedDecision, ErasedStrategy, Verdict};

/// What a chain does after a member's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Declined or failed: the next member is tried.
    Continue,
    /// Acts through the healer's coordinator.
    Act,
    /// Anything else (held, delegated, withheld, suggested, shadowed): the phase ends.
    Stop,
}

/// A strategy's decision before the healer's limits are checked.
pub(crate) struct Proposal {
    pub strategy: String,
    pub decision: ErasedDecision,
    /// It acts in `auto` mode: the healer's limits decide whether it may.
    pub needs_limits: bool,
}

/// A member's decision, labelled.
pub(crate) struct Step {
    pub attempt: Attempt,
    pub decision: ErasedDecision,
    /// Its state events are appended (and folded).
    pub record_state: bool,
    pub next: Next,
}

impl Engine {
    /// Asks `member` about `failure` on `state` (at `version`), with the state before and its
    /// version in the decision's details.
    pub(crate) fn propose(
        &self,
        member: &dyn ErasedStrategy,
        state: &AnyState,
        version: u64,
        failure: &Failure,
        now: DateTime<Utc>,
    ) -> Proposal {
        let mut d = member.decide(state, failure, now);
        d.details.insert("state_version".into(), json!(version));
        if self.describes_states {
            d.details
                .insert("state_before".into(), member.describe(state, now));
        }
        let needs_limits = d.verdict == Verdict::Act && self.options.mode == Mode::Auto;
        Proposal {
            strategy: member.name().to_owned(),
            decision: d,
            needs_limits,
        }
    }

    /// Labels a proposal: by the mode, and by `limits` (the answer of the healer's limits
    /// when [`Proposal::needs_limits`]: `Err(why)` when over one; ignored otherwise).
    pub(crate) fn conclude(&self, p: Proposal, limits: Result<(), String>) -> Step {
        let Proposal {
            strategy,
            decision: mut d,
            needs_limits,
        } = p;
        let mut label = d.verdict.as_str().to_owned();
        let mut reason = d.reason.clone();
        // Suggest-only never changes strategy state, whatever the verdict: its state stays
        // what it would be with healing switched off.
        let mut record_state = self.options.mode != Mode::SuggestOnly;
        if d.verdict == Verdict::Act {
            match self.options.mode {
                Mode::SuggestOnly => label = "suggest_only".into(),
                Mode::Shadow => label = "shadow".into(),
                Mode::Auto => match limits {
                    Err(why) if needs_limits => {
                        label = "withheld".into();
                        reason = format!("{reason}; withheld: {why}");
                        record_state = false;
                    }
                    _ => {
                        if !self.acts {
                            label = "delegated".into();
                        }
                    }
                },
            }
        }
        if !record_state && !d.events.is_empty() {
            d.details.insert(
                "events_not_recorded".into(),
                json!(d.events.iter().map(|(t, _)| t).collect::<Vec<_>>()),
            );
        }
        let mut attempt = Attempt::new(
            &strategy,
            &label,
            reason,
            d.details.clone(),
            d.actions.clone(),
        );
        if label == "failed" {
            attempt.success = Some(false);
        }
        let next = match label.as_str() {
            "declined" | "failed" => Next::Continue,
            "act" => Next::Act,
            _ => Next::Stop,
        };
        Step {
            attempt,
            decision: d,
            record_state,
            next,
        }
    }

    /// The attempt of a member that does not heal the failure's type.
    pub(crate) fn cannot_heal(&self, member: &dyn ErasedStrategy, failure: &Failure) -> Attempt {
        let reason = format!(
            "{} does not heal {} failures",
            member.name(),
            failure.failure_type
        );
        Attempt::new(member.name(), "declined", reason, Map::new(), Vec::new())
    }

    /// The attempt recorded for a failure type with no route.
    pub(crate) fn no_strategy(&self, failure: &Failure) -> Attempt {
        let reason = format!("no strategy is registered for {}", failure.failure_type);
        Attempt::new("none", "no_strategy", reason, Map::new(), Vec::new())
    }
}

/// The facts an attempt appends to its failure's stream: the attempt, and for a failed one
/// its completion (a failed attempt counts in the statistics).
pub(crate) fn attempt_facts(failure: &Failure, a: &Attempt, now: DateTime<Utc>) -> Vec<NewEvent> {
    let mut out = vec![facts::attempted_event(
        failure,
        &a.strategy,
        &a.decision,
        &a.reason,
        &a.actions,
        a.details.clone(),
        now,
    )];
    if a.decision == "failed" {
        out.push(facts::fact(
            HealEvent::HealingCompleted(HealingCompleted {
                failure_id: failure.failure_id.clone(),
                strategy: a.strategy.clone(),
                agent_id: failure.agent_id.clone(),
                failure_type: Some(failure.failure_type.clone()),
                success: false,
                duration_ms: 0,
                actions_taken: Vec::new(),
                metadata: Map::from_iter([("reason".to_owned(), json!(a.reason))]),
            }),
            now,
        ));
    }
    out
}

/// The state events of a decision as `(type, payload)`, for folding.
pub(crate) fn payloads(events: &[(String, Value)]) -> Vec<Value> {
    events.iter().map(|(_, v)| v.clone()).collect()
}
