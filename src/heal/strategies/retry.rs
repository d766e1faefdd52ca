//! TaskRetry: runs a failed task again, after an exponential backoff with deterministic
//! jitter, at most `max_attempts` times.
//!
//! Attempts are counted per task. The count starts over when the task succeeds (a
//! [`Signal::AgentSucceeded`] naming the task) and when `reset_after_ms` (1 h) passes without a
//! failure of the task; the upstream design counted forever, so a task that failed three times
//! in a week could never be retried again.
//!
//! Attempt `n` (1, 2, 3...) waits `base_ms × multiplier^(n-1)` (1 s, 2 s, 4 s), capped at
//! `max_ms`, then spread by ±`jitter` (20 %) so that tasks failed together do not all come back
//! in the same instant. The jitter is a hash (FNV-1a) of the failure id and the attempt number:
//! random enough to spread a burst, and the same on every replay, as a decision must be.
//!
//! The coordinator schedules the retry ([`Action::RetryTask`]); the healer fails it when no
//! healthy agent exists. A retry that could not be scheduled still used its attempt (so a task
//! that can never be placed stops being retried) and is recorded as `retry_failed`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::check::Section;
use super::restart::{elapsed_ms, ms_i64};
use crate::error::Result;
use crate::heal::model::{Action, Failure, failure_types};
use crate::heal::strategy::{Decision, Reaction, Signal, Strategy};

/// Settings of [`TaskRetry`]. Durations are in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskRetryConfig {
    /// The failure types this strategy heals.
    pub failure_types: Vec<String>,
    /// Retries per task before giving up (until the count resets).
    pub max_attempts: u32,
    /// The wait before the first retry.
    pub base_ms: u64,
    /// How much the wait grows with each further retry.
    pub multiplier: f64,
    /// The longest wait, jitter included.
    pub max_ms: u64,
    /// Spread of the wait, as a fraction from 0 to 1 (0.2: ±20 %).
    pub jitter: f64,
    /// A task's attempts are forgotten after this long without a failure of it.
    pub reset_after_ms: u64,
    /// Ask for the retry on the agent that failed the task. Off by default: the coordinator
    /// picks a healthy agent, and a task is rarely helped by going back to the agent it
    /// failed on.
    pub retry_on_same_agent: bool,
}

impl Default for TaskRetryConfig {
    fn default() -> Self {
        TaskRetryConfig {
            failure_types: failure_types::TASK
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            max_attempts: 3,
            base_ms: 1_000,
            multiplier: 2.0,
            max_ms: 30_000,
            jitter: 0.2,
            reset_after_ms: 3_600_000,
            retry_on_same_agent: false,
        }
    }
}

impl TaskRetryConfig {
    /// Checks every setting (see [`crate::config`]): one line naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        let s = Section("task_retry");
        s.at_least("max_attempts", u64::from(self.max_attempts), 1)?;
        s.duration("base_ms", self.base_ms, 0)?;
        s.duration("max_ms", self.max_ms, 0)?;
        s.not_above(("base_ms", self.base_ms), ("max_ms", self.max_ms))?;
        s.number_at_least("multiplier", self.multiplier, 1.0)?;
        s.number_within("jitter", self.jitter, 0.0, 1.0)?;
        s.duration("reset_after_ms", self.reset_after_ms, 1)
    }
}

/// The retries of one task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RetryState {
    /// Retries since the count last started over.
    pub attempts: u32,
    /// Retries decided, ever.
    pub retries: u64,
    /// Retries the coordinator could not schedule, ever.
    pub failed_retries: u64,
    /// Times the count started over, ever.
    pub resets: u64,
    /// The last failure of the task this strategy saw.
    pub last_failure_at: Option<DateTime<Utc>>,
    pub last_retry_at: Option<DateTime<Utc>>,
    pub last_delay_ms: Option<u64>,
}

/// Why a task's attempts started over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetCause {
    /// The task succeeded.
    Succeeded,
    /// No failure of the task for `reset_after_ms`.
    Expired,
}

/// Facts about a task's retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RetryEvent {
    /// Retry number `attempt` was decided, to run after `delay_ms`.
    RetryScheduled {
        at: DateTime<Utc>,
        attempt: u32,
        delay_ms: u64,
    },
    /// The task failed again with its attempts used up.
    RetryLimitReached { at: DateTime<Utc>, attempts: u32 },
    /// The coordinator could not schedule the retry.
    RetryFailed { at: DateTime<Utc> },
    /// The task's attempts started over.
    RetryAttemptsReset {
        at: DateTime<Utc>,
        previous_attempts: u32,
        cause: ResetCause,
    },
}

/// Retries failed tasks with backoff and a per-task limit. See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct TaskRetry {
    config: TaskRetryConfig,
}

impl TaskRetry {
    pub fn new(config: TaskRetryConfig) -> Self {
        TaskRetry { config }
    }

    pub fn config(&self) -> &TaskRetryConfig {
        &self.config
    }

    /// The wait before retry number `attempt` (from 1) of a failure.
    pub fn delay_ms(&self, failure_id: &str, attempt: u32) -> u64 {
        let c = &self.config;
        let raw = super::restart::backoff_ms(
            c.base_ms,
            c.multiplier,
            c.max_ms,
            attempt.saturating_sub(1),
        );
        let jitter = if c.jitter.is_finite() {
            c.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let factor = 1.0 + jitter * unit_jitter(failure_id, attempt);
        (raw as f64 * factor).round().clamp(0.0, c.max_ms as f64) as u64
    }

    fn expiry_due(&self, state: &RetryState, now: DateTime<Utc>) -> Option<RetryEvent> {
        let last = state.last_failure_at.filter(|_| state.attempts > 0)?;
        (elapsed_ms(last, now) >= ms_i64(self.config.reset_after_ms)).then_some(
            RetryEvent::RetryAttemptsReset {
                at: now,
                previous_attempts: state.attempts,
                cause: ResetCause::Expired,
            },
        )
    }
}

/// A number in `[-1, 1)` derived from the failure id and the attempt: FNV-1a over their bytes
/// (std's hashers are seeded per process, so they would make decisions unrepeatable).
fn unit_jitter(failure_id: &str, attempt: u32) -> f64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let h = failure_id
        .bytes()
        .chain(attempt.to_le_bytes())
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    // The top 53 bits make an exact f64 in [0, 1).
    let unit = (h >> 11) as f64 / (1u64 << 53) as f64;
    unit * 2.0 - 1.0
}

impl Strategy for TaskRetry {
    type State = RetryState;
    type Event = RetryEvent;

    fn name(&self) -> &str {
        "TaskRetry"
    }

    fn validate(&self) -> crate::error::Result<()> {
        self.config.validate()
    }

    fn can_heal(&self, failure: &Failure) -> bool {
        self.config.failure_types.contains(&failure.failure_type)
    }

    /// The task: attempts are counted per task, whichever agent ran it.
    fn key(&self, failure: &Failure) -> String {
        // Failures without a task are declined and leave no state; they share a lock name.
        failure.task_id.clone().unwrap_or_else(|| "no-task".into())
    }

    fn decide(
        &self,
        state: &RetryState,
        failure: &Failure,
        now: DateTime<Utc>,
    ) -> Decision<RetryEvent> {
        let Some(task) = failure.task_id.clone() else {
            return Decision::decline("the failure names no task: nothing to retry");
        };
        let mut s = state.clone();
        let expired = self.expiry_due(&s, now);
        if let Some(e) = &expired {
            self.apply(&mut s, e);
        }
        let max = self.config.max_attempts;
        let d = if s.attempts >= max {
            Decision::fail(format!("retry limit reached: {} attempts", s.attempts)).event(
                RetryEvent::RetryLimitReached {
                    at: now,
                    attempts: s.attempts,
                },
            )
        } else {
            let attempt = s.attempts + 1;
            let delay_ms = self.delay_ms(&failure.failure_id, attempt);
            let agent_id = if self.config.retry_on_same_agent {
                failure.agent_id.clone()
            } else {
                None
            };
            Decision::act(format!(
                "retry task {task} in {delay_ms} ms (attempt {attempt} of {max})"
            ))
            .detail("delay_ms", delay_ms)
            .event(RetryEvent::RetryScheduled {
                at: now,
                attempt,
                delay_ms,
            })
            .action(Action::RetryTask {
                task_id: task,
                delay_ms,
                agent_id,
            })
        };
        let d = d.detail("attempts", s.attempts).detail("max_attempts", max);
        match expired {
            // The expiry is recorded before the decision's own event.
            Some(e) => {
                let mut d = d.detail("attempts_expired", state.attempts);
                d.events.insert(0, e);
                d
            }
            None => d,
        }
    }

    fn on_result(
        &self,
        _state: &RetryState,
        _failure: &Failure,
        success: bool,
        now: DateTime<Utc>,
    ) -> Vec<RetryEvent> {
        if success {
            Vec::new()
        } else {
            vec![RetryEvent::RetryFailed { at: now }]
        }
    }

    /// A success naming a task concerns that task; nothing else concerns retries.
    fn signal_keys(&self, signal: &Signal, _known: &[String]) -> Vec<String> {
        match signal {
            Signal::AgentSucceeded {
                task_id: Some(t), ..
            } => vec![t.clone()],
            _ => Vec::new(),
        }
    }

    fn on_signal(
        &self,
        state: &RetryState,
        key: &str,
        signal: &Signal,
        now: DateTime<Utc>,
    ) -> Option<Reaction<RetryEvent>> {
        if !matches!(signal, Signal::AgentSucceeded { .. }) || state.attempts == 0 {
            return None;
        }
        Some(
            Reaction::new(
                key,
                format!(
                    "task {key} succeeded: its {} retry attempt(s) are forgotten",
                    state.attempts
                ),
            )
            .event(RetryEvent::RetryAttemptsReset {
                at: now,
                previous_attempts: state.attempts,
                cause: ResetCause::Succeeded,
            }),
        )
    }

    fn apply(&self, state: &mut RetryState, event: &RetryEvent) {
        match event {
            RetryEvent::RetryScheduled {
                at,
                attempt,
                delay_ms,
            } => {
                state.attempts = *attempt;
                state.retries += 1;
                state.last_failure_at = Some(*at);
                state.last_retry_at = Some(*at);
                state.last_delay_ms = Some(*delay_ms);
            }
            RetryEvent::RetryLimitReached { at, .. } => state.last_failure_at = Some(*at),
            RetryEvent::RetryFailed { .. } => state.failed_retries += 1,
            RetryEvent::RetryAttemptsReset { .. } => {
                state.attempts = 0;
                state.resets += 1;
            }
        }
    }

    /// No retry counted (the task succeeded, or never failed): decided as a new task is.
    fn at_rest(&self, state: &RetryState, _now: DateTime<Utc>) -> bool {
        state.attempts == 0
    }

    fn describe(&self, state: &RetryState, now: DateTime<Utc>) -> Value {
        let expired = self.expiry_due(state, now).is_some();
        let attempts = if expired { 0 } else { state.attempts };
        json!({
            "attempts": attempts,
            "max_attempts": self.config.max_attempts,
            "remaining": self.config.max_attempts.saturating_sub(attempts),
            "expired": expired,
            "retries": state.retries,
            "failed_retries": state.failed_retries,
            "resets": state.resets,
            "last_failure_at": state.last_failure_at,
            "last_retry_at": state.last_retry_at,
            "last_delay_ms": state.last_delay_ms,
        })
    }
}
