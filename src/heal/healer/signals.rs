//! Signals: success, usage, operator commands, permits and ticks.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::act::*;
use super::*;
use crate::event::ExpectedVersion;
use crate::events::{ActionExecuted, HealEvent};
use crate::heal::engine::facts::*;
use crate::heal::strategy::Signal;

impl Healer {
    /// Reports a resource's usage, so that degradation can step back as pressure falls.
    pub async fn record_usage(
        &self,
        resource_type: &str,
        current_usage: f64,
        limit: f64,
        at: DateTime<Utc>,
    ) -> Result<SignalReport> {
        let at = micros(at);
        crate::event::check_id("resource_type", resource_type)?;
        if !(current_usage.is_finite() && limit.is_finite() && limit > 0.0 && current_usage >= 0.0)
        {
            return Err(Error::InvalidInput(format!(
                "usage {current_usage} of limit {limit} is not a valid measurement"
            )));
        }
        // The measurement itself is a fact: resource-trend predictions read it.
        let fact = fact(
            HealEvent::ResourceUsageReported(crate::events::ResourceUsageReported {
                resource_type: resource_type.to_owned(),
                current_usage,
                limit,
            }),
            at,
        );
        let appended = self
            .store
            .append(
                &format!("usage-{resource_type}"),
                ExpectedVersion::Any,
                vec![fact],
            )
            .await?;
        self.note_own(&appended);
        let signal = Signal::ResourceUsage {
            resource_type: resource_type.to_owned(),
            current_usage,
            limit,
        };
        self.signal(&signal, at, None).await
    }

    /// An operator command to one strategy (or to every strategy when `strategy` is `None`).
    pub async fn command(
        &self,
        strategy: Option<&str>,
        key: &str,
        command: &str,
        reason: &str,
    ) -> Result<SignalReport> {
        crate::event::check_id("key", key)?;
        if reason.trim().is_empty() {
            return Err(Error::InvalidInput("a command needs a reason".into()));
        }
        let signal = Signal::Command {
            key: key.to_owned(),
            command: command.to_owned(),
            reason: reason.to_owned(),
        };
        self.signal(&signal, self.now(), strategy).await
    }

    /// Asks whether a call may be sent to an agent (half-open circuits admit a limited number
    /// of trial calls, counted across every process sharing the database).
    pub async fn permit(&self, agent_id: &str) -> Result<SignalReport> {
        crate::event::check_id("agent_id", agent_id)?;
        let signal = Signal::Permit {
            agent_id: agent_id.to_owned(),
        };
        let mut report = self.signal(&signal, self.now(), None).await?;
        if report.permitted.is_none() {
            report.permitted = Some(true);
        }
        Ok(report)
    }

    /// Lets time-dependent states move on (open circuits whose wait has passed become
    /// half-open and re-register their agent for the trial).
    pub async fn tick(&self) -> Result<SignalReport> {
        self.signal(&Signal::Tick, self.now(), None).await
    }

    pub(super) async fn signal(
        &self,
        signal: &Signal,
        now: DateTime<Utc>,
        only: Option<&str>,
    ) -> Result<SignalReport> {
        if matches!(signal, Signal::Tick) {
            // A tick concerns every state not at rest: the map must hold them all.
            self.ensure_complete().await?;
        }
        // One catch-up for the whole signal (a tick of a thousand circuits reads the log
        // once); a conflict re-reads only the stream it was on.
        self.catch_up().await?;
        let mut report = SignalReport {
            reactions: Vec::new(),
            permitted: None,
            recovered: Vec::new(),
        };
        for strategy in self.engine.signalled(only) {
            let name = &strategy.name().to_owned();
            // Only a tick needs the known keys (a permit or a success names its key).
            let known: Vec<String> = if matches!(signal, Signal::Tick) {
                let map = self.lock_map();
                let mut k: Vec<String> = map
                    .values()
                    .filter(|e| &e.strategy == name)
                    .map(|e| e.key.clone())
                    .collect();
                k.sort();
                k
            } else {
                Vec::new()
            };
            for key in strategy.signal_keys(signal, &known) {
                let sstream = strategy_stream(name, &key);
                let lock = self.key_lock(&sstream);
                let _guard = lock.lock().await;
                // A signal's answer (a permit) is not an append that could depend on the
                // decisions still being stored: it waits for them.
                self.wait_settled(&sstream).await;
                let mut tries = 0;
                // After a conflict: the state as the log has it. (A state at rest leaves
                // memory once loaded, and a complete map takes a missing state for a default
                // one at version 0, which would conflict again.)
                let mut reloaded: Option<(u64, AnyState)> = None;
                let reaction = loop {
                    tries += 1;
                    let (version, state) = match reloaded.take() {
                        Some(found) => found,
                        None => self.current_for_signal(&strategy, &sstream, &key).await?,
                    };
                    let Some(reacted) =
                        self.engine
                            .react(strategy.as_ref(), &state, &key, signal, now)
                    else {
                        break None;
                    };
                    let r = reacted.reaction;
                    if !reacted.record {
                        break Some(r);
                    }
                    let events = strategy_events(&strategy, &key, &r.events, now)?;
                    match self
                        .store
                        .append(&sstream, ExpectedVersion::Exact(version), events)
                        .await
                    {
                        Ok(appended) => {
                            self.note_own(&appended);
                            let applied: Vec<(u64, Value)> = appended
                                .iter()
                                .zip(&r.events)
                                .map(|(a, (_, v))| (a.stream_version, v.clone()))
                                .collect();
                            self.apply_local(
                                &strategy,
                                &sstream,
                                &key,
                                (version, &state),
                                &applied,
                            );
                            break Some(r);
                        }
                        Err(Error::WrongExpectedVersion { .. }) if tries < MAX_CONFLICT_RETRIES => {
                            self.refresh(&strategy, &sstream, &key).await?;
                            reloaded = Some(self.current(&strategy, &sstream, &key).await?);
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                };
                let Some(r) = reaction else { continue };
                if let Some(p) = r.permitted {
                    report.permitted = Some(report.permitted.unwrap_or(true) && p);
                }
                let mut results = Vec::new();
                if self.engine.acts_on_reactions()
                    && let Some(c) = &self.coordinator
                {
                    {
                        let mut facts = Vec::new();
                        for action in &r.actions {
                            let t = Instant::now();
                            let res = execute(c.as_ref(), action).await;
                            facts.push(fact(
                                HealEvent::ActionExecuted(ActionExecuted {
                                    failure_id: None,
                                    strategy: name.clone(),
                                    agent_id: action.agent().map(str::to_owned),
                                    action: action.name().to_owned(),
                                    target: action.target(),
                                    success: res.is_ok(),
                                    error: res.as_ref().err().cloned(),
                                    duration_ms: t.elapsed().as_millis() as i64,
                                }),
                                self.now(),
                            ));
                            results.push(res);
                        }
                        if !facts.is_empty() {
                            // Not in the state stream: these are results, not state.
                            let appended = self
                                .store
                                .append(
                                    &format!("actions-{name}-{key}"),
                                    ExpectedVersion::Any,
                                    facts,
                                )
                                .await?;
                            self.note_own(&appended);
                        }
                    }
                }
                report.reactions.push(ReactionReport {
                    strategy: name.clone(),
                    key: r.key.clone(),
                    reason: r.reason.clone(),
                    events: r.events.iter().map(|(t, _)| t.clone()).collect(),
                    actions: r.actions.clone(),
                    results,
                });
            }
        }
        Ok(report)
    }
}
