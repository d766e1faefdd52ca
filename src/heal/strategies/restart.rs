//! AgentRestart: restarts a failed agent, with a Kubernetes-style restart backoff kept per
//! agent.
//!
//! The first failure of an agent restarts it at once; each restart then opens a backoff window
//! (`base_ms` 10 s, times `multiplier` 2 per restart in a row, capped at `max_ms` 5 min) during
//! which further failures of that agent are *held*: restarting it again so soon would only
//! feed a crash loop. After `reset_after_ms` (10 min) without a failure of the agent since its
//! last restart, the backoff starts over from `base_ms`.
//!
//! **Per-cause backoff.** The state (the backoff level, the window) is kept per agent, whatever
//! the cause: an agent is one process, and two causes must not restart it twice in a row. What
//! varies per cause is how fast the backoff grows: `per_failure_type` overrides `base_ms`,
//! `multiplier` and `max_ms` for a failure type. A failure's cause is looked up as the raw
//! event type it was detected from (`metadata.source_type`, e.g. `heartbeat_failed`, which
//! detection turns into `agent_down`) and then as its failure type.
//!
//! The strategy never claims success: the healer carries out [`Action::RestartAgent`] (save
//! the agent's metadata, unregister, register again), which fails for an agent the coordinator
//! does not know; a failed restart is recorded (`restart_failed`) and keeps the backoff level.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::check::Section;
use crate::error::Result;
use crate::heal::model::{Action, Failure, failure_types};
use crate::heal::strategy::{Decision, Reaction, Signal, Strategy};

/// Settings of [`AgentRestart`]. Durations are in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentRestartConfig {
    /// The failure types this strategy heals.
    pub failure_types: Vec<String>,
    /// The backoff after the first restart in a row (Kubernetes: 10 s).
    pub base_ms: u64,
    /// How much the backoff grows with each further restart in a row.
    pub multiplier: f64,
    /// The longest backoff (Kubernetes: 5 min).
    pub max_ms: u64,
    /// How long an agent must go without a failure since its last restart for the backoff to
    /// start over (Kubernetes: 10 min).
    pub reset_after_ms: u64,
    /// Backoff settings per cause (a failure type, or the raw event type a failure was
    /// detected from); the fields given replace the ones above.
    pub per_failure_type: BTreeMap<String, BackoffOverride>,
}

impl Default for AgentRestartConfig {
    fn default() -> Self {
        AgentRestartConfig {
            failure_types: failure_types::AGENT
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            base_ms: 10_000,
            multiplier: 2.0,
            max_ms: 300_000,
            reset_after_ms: 600_000,
            per_failure_type: BTreeMap::new(),
        }
    }
}

impl AgentRestartConfig {
    /// Checks every setting, the per-cause ones included (see [`crate::config`]): one line
    /// naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        let s = Section("agent_restart");
        s.duration("base_ms", self.base_ms, 0)?;
        s.duration("max_ms", self.max_ms, 0)?;
        s.not_above(("base_ms", self.base_ms), ("max_ms", self.max_ms))?;
        s.number_at_least("multiplier", self.multiplier, 1.0)?;
        s.duration("reset_after_ms", self.reset_after_ms, 1)?;
        for (cause, o) in &self.per_failure_type {
            let name = format!("agent_restart.per_failure_type.{cause}");
            let s = Section(&name);
            if let Some(v) = o.base_ms {
                s.duration("base_ms", v, 0)?;
            }
            if let Some(v) = o.max_ms {
                s.duration("max_ms", v, 0)?;
            }
            if let Some(v) = o.multiplier {
                s.number_at_least("multiplier", v, 1.0)?;
            }
            // What applies to the cause: its own settings, else the general ones.
            let base = o.base_ms.unwrap_or(self.base_ms);
            let max = o.max_ms.unwrap_or(self.max_ms);
            if base > max {
                let (key, value) = match o.base_ms {
                    Some(_) => ("base_ms", base),
                    None => ("max_ms", max),
                };
                return Err(s.refuse(
                    key,
                    value,
                    format!("the cause's base_ms ({base}) would be above its max_ms ({max})"),
                ));
            }
        }
        Ok(())
    }
}

/// Backoff settings for one cause; a missing field keeps the general setting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffOverride {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<u64>,
}

/// The restart history of one agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RestartState {
    /// Restarts in a row (since the last reset): the backoff exponent of the next restart.
    pub level: u32,
    /// Restarts decided, ever.
    pub restarts: u64,
    /// Restarts that the coordinator could not carry out, ever.
    pub failed_restarts: u64,
    /// Backoff resets after sustained health, ever.
    pub resets: u64,
    pub last_restart_at: Option<DateTime<Utc>>,
    /// No restart before this instant.
    pub next_allowed_at: Option<DateTime<Utc>>,
    /// The last failure of the agent this strategy saw (restarted, held, or a failed restart).
    pub last_failure_at: Option<DateTime<Utc>>,
}

/// Facts about an agent's restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RestartEvent {
    /// A restart was decided; no other restart before `next_allowed_at`.
    RestartScheduled {
        at: DateTime<Utc>,
        /// The failure's cause (its type; named so because the store indexes `failure_type`
        /// fields as failures).
        cause: String,
        /// Restarts in a row, this one included.
        level: u32,
        backoff_ms: u64,
        next_allowed_at: DateTime<Utc>,
    },
    /// A failure arrived during the backoff: no restart.
    RestartHeld {
        at: DateTime<Utc>,
        cause: String,
        until: DateTime<Utc>,
    },
    /// The coordinator could not carry out the restart.
    RestartFailed { at: DateTime<Utc> },
    /// The agent stayed healthy long enough: the backoff starts over.
    RestartBackoffReset {
        at: DateTime<Utc>,
        previous_level: u32,
        healthy_since: DateTime<Utc>,
    },
}

/// Restarts failed agents with a growing, resetting backoff. See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct AgentRestart {
    config: AgentRestartConfig,
}

impl AgentRestart {
    pub fn new(config: AgentRestartConfig) -> Self {
        AgentRestart { config }
    }

    pub fn config(&self) -> &AgentRestartConfig {
        &self.config
    }

    /// The backoff settings for a failure's cause: `(base_ms, multiplier, max_ms)`.
    fn backoff_for(&self, failure: &Failure) -> (u64, f64, u64) {
        let c = &self.config;
        let o = failure
            .meta_str("source_type")
            .and_then(|t| c.per_failure_type.get(t))
            .or_else(|| c.per_failure_type.get(&failure.failure_type));
        match o {
            Some(o) => (
                o.base_ms.unwrap_or(c.base_ms),
                o.multiplier.unwrap_or(c.multiplier),
                o.max_ms.unwrap_or(c.max_ms),
            ),
            None => (c.base_ms, c.multiplier, c.max_ms),
        }
    }

    /// The reset that applies at `now`, if any: the agent was restarted and has had no failure
    /// for `reset_after_ms`.
    fn reset_due(&self, state: &RestartState, now: DateTime<Utc>) -> Option<RestartEvent> {
        if state.level == 0 {
            return None;
        }
        let healthy_since = state.last_failure_at.max(state.last_restart_at)?;
        if elapsed_ms(healthy_since, now) < ms_i64(self.config.reset_after_ms) {
            return None;
        }
        Some(RestartEvent::RestartBackoffReset {
            at: now,
            previous_level: state.level,
            healthy_since,
        })
    }
}

/// The backoff before restart number `level + 1` in a row may follow restart number `level`.
pub(crate) fn backoff_ms(base_ms: u64, multiplier: f64, max_ms: u64, level: u32) -> u64 {
    // Past 2^64 nothing changes; the bound keeps `powi` meaningful.
    let d = base_ms as f64 * multiplier.powi(level.min(1024) as i32);
    if d.is_finite() && d >= 0.0 {
        // `as` saturates, and the cap is applied in f64 first.
        d.min(max_ms as f64) as u64
    } else {
        max_ms
    }
}

// Time arithmetic shared by the built-in strategies: configured durations are `u64`
// milliseconds from a file, so every conversion saturates instead of panicking.

/// Milliseconds from `from` to `to` (negative when `to` is earlier).
pub(crate) fn elapsed_ms(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_milliseconds()
}

/// A configured duration as a signed number of milliseconds.
pub(crate) fn ms_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// `at + ms`, saturating at the latest representable instant rather than panicking on a huge
/// configured duration.
pub(crate) fn after_ms(at: DateTime<Utc>, ms: u64) -> DateTime<Utc> {
    chrono::TimeDelta::try_milliseconds(ms_i64(ms))
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl Strategy for AgentRestart {
    type State = RestartState;
    type Event = RestartEvent;

    fn name(&self) -> &str {
        "AgentRestart"
    }

    fn validate(&self) -> crate::error::Result<()> {
        self.config.validate()
    }

    fn can_heal(&self, failure: &Failure) -> bool {
        self.config.failure_types.contains(&failure.failure_type)
    }

    /// Before a predicted failure of an agent it heals: restart the agent, unless a backoff
    /// from earlier restarts is running. A preventive restart records no state (it does not
    /// count towards the restart backoff).
    fn prevent(
        &self,
        state: &RestartState,
        prediction: &crate::analytics::Prediction,
        now: DateTime<Utc>,
    ) -> Decision<RestartEvent> {
        if !self.can_heal(&prediction.as_failure()) {
            return Decision::decline(format!(
                "AgentRestart does not heal {}",
                prediction.failure_type
            ));
        }
        let Some(agent) = prediction.agent_id.clone() else {
            return Decision::decline("the prediction names no agent: nothing to restart");
        };
        if let Some(until) = state.next_allowed_at.filter(|until| now < *until) {
            return Decision::decline(format!(
                "restart backoff until {}",
                until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ))
            .detail("next_allowed_at", until);
        }
        Decision::act(format!(
            "restart {agent} before the predicted {} (probability {:.2})",
            prediction.failure_type, prediction.probability
        ))
        .detail("probability", prediction.probability)
        .detail("restart_level", state.level)
        .action(Action::RestartAgent { agent_id: agent })
    }

    fn decide(
        &self,
        state: &RestartState,
        failure: &Failure,
        now: DateTime<Utc>,
    ) -> Decision<RestartEvent> {
        let Some(agent) = failure.agent_id.clone() else {
            return Decision::decline("the failure names no agent: nothing to restart");
        };
        // A reset that is due is recorded first, and the rest is decided on the state after it.
        let mut s = state.clone();
        let reset = self.reset_due(&s, now);
        if let Some(e) = &reset {
            self.apply(&mut s, e);
        }
        let with_reset = |d: Decision<RestartEvent>| match reset.clone() {
            Some(e) => d.event(e).detail("backoff_reset", true),
            None => d,
        };

        if let Some(until) = s.next_allowed_at.filter(|until| now < *until) {
            let d = Decision::hold(format!(
                "restart backoff until {}",
                until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ))
            .detail("level", s.level)
            .detail("last_restart_at", s.last_restart_at)
            .detail("next_allowed_at", until)
            .detail("now", now)
            .detail("remaining_ms", elapsed_ms(now, until));
            return with_reset(d).event(RestartEvent::RestartHeld {
                at: now,
                cause: failure.failure_type.clone(),
                until,
            });
        }

        let (base, multiplier, max) = self.backoff_for(failure);
        let backoff = backoff_ms(base, multiplier, max, s.level);
        let next = after_ms(now, backoff);
        let d = Decision::act(format!(
            "restart {agent} (restart {} in a row; the next one no earlier than {} ms later)",
            s.level + 1,
            backoff
        ))
        .detail("level", s.level)
        .detail("backoff_ms", backoff)
        .detail("base_ms", base)
        .detail("multiplier", multiplier)
        .detail("max_ms", max)
        .detail("next_allowed_at", next);
        with_reset(d)
            .event(RestartEvent::RestartScheduled {
                at: now,
                cause: failure.failure_type.clone(),
                level: s.level + 1,
                backoff_ms: backoff,
                next_allowed_at: next,
            })
            .action(Action::RestartAgent { agent_id: agent })
    }

    fn on_result(
        &self,
        _state: &RestartState,
        _failure: &Failure,
        success: bool,
        now: DateTime<Utc>,
    ) -> Vec<RestartEvent> {
        if success {
            Vec::new()
        } else {
            vec![RestartEvent::RestartFailed { at: now }]
        }
    }

    /// Only ticks concern restarts: a reset that became due is recorded.
    fn signal_keys(&self, signal: &Signal, known: &[String]) -> Vec<String> {
        match signal {
            Signal::Tick => known.to_vec(),
            _ => Vec::new(),
        }
    }

    fn on_signal(
        &self,
        state: &RestartState,
        key: &str,
        signal: &Signal,
        now: DateTime<Utc>,
    ) -> Option<Reaction<RestartEvent>> {
        if !matches!(signal, Signal::Tick) {
            return None;
        }
        let e = self.reset_due(state, now)?;
        Some(
            Reaction::new(
                key,
                format!(
                    "{key} healthy for {} ms: restart backoff reset",
                    self.config.reset_after_ms
                ),
            )
            .event(e),
        )
    }

    fn apply(&self, state: &mut RestartState, event: &RestartEvent) {
        match event {
            RestartEvent::RestartScheduled {
                at,
                level,
                next_allowed_at,
                ..
            } => {
                state.level = *level;
                state.restarts += 1;
                state.last_restart_at = Some(*at);
                state.next_allowed_at = Some(*next_allowed_at);
                state.last_failure_at = Some(*at);
            }
            RestartEvent::RestartHeld { at, .. } => state.last_failure_at = Some(*at),
            RestartEvent::RestartFailed { at } => {
                state.failed_restarts += 1;
                state.last_failure_at = Some(*at);
            }
            RestartEvent::RestartBackoffReset { .. } => {
                state.level = 0;
                state.next_allowed_at = None;
                state.resets += 1;
            }
        }
    }

    /// The backoff's reset after `reset_after_ms` of health.
    fn wakes_at(&self, state: &RestartState) -> Option<DateTime<Utc>> {
        if state.level == 0 {
            return None;
        }
        let healthy_since = state.last_failure_at.max(state.last_restart_at)?;
        Some(after_ms(healthy_since, self.config.reset_after_ms))
    }

    fn describe(&self, state: &RestartState, now: DateTime<Utc>) -> Value {
        let in_backoff = state.next_allowed_at.is_some_and(|t| now < t);
        json!({
            "level": state.level,
            "restarts": state.restarts,
            "failed_restarts": state.failed_restarts,
            "resets": state.resets,
            "last_restart_at": state.last_restart_at,
            "last_failure_at": state.last_failure_at,
            "next_allowed_at": state.next_allowed_at,
            "in_backoff": in_backoff,
            "backoff_remaining_ms": state
                .next_allowed_at
                .filter(|_| in_backoff)
                .map(|t| elapsed_ms(now, t)),
            "reset_due": self.reset_due(state, now).is_some(),
        })
    }
}
