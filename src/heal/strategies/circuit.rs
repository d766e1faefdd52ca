//! Circuit breaker: takes an agent that keeps failing out of rotation, lets a few trial calls
//! through after a wait, and puts it back once the trials succeed. Its whole memory (state,
//! deadline, escalation) is a fold over its own events, so it survives restarts and is shared
//! by every process that uses the same database.
//!
//! # States
//!
//! One circuit per key: the agent, or for agent-less failures `resource:<resource_type>` (from
//! the failure's metadata) or else `failure_type:<failure_type>`.
//!
//! - **closed**: calls flow. Failures are counted; the circuit trips when
//!   [`failure_threshold`](CircuitBreakerConfig::failure_threshold) failures come *in a row*
//!   (a success resets the run, as in resilience4j and Envoy's `consecutive_5xx`; upstream
//!   never counted successes, so its threshold became a lifetime count), or, when
//!   [`failure_rate_threshold`](CircuitBreakerConfig::failure_rate_threshold) is set, when the
//!   failure rate over the sliding [`window`](CircuitBreakerConfig::window) reaches it, judged
//!   only once [`minimum_calls`](CircuitBreakerConfig::minimum_calls) outcomes are in the window
//!   (two failures out of two calls say little). Below the thresholds the decision *declines*,
//!   so that a composite chain goes on to its next member (a restart, say).
//! - **open**: the agent is unregistered and calls are rejected until a deadline, stored in the
//!   event that opened the circuit. Failures reported while open are counted but never move the
//!   deadline (a classic pitfall: a flood of failures from an isolated agent would keep it
//!   isolated forever). Decisions *hold*: a chain stops, nothing restarts an isolated agent.
//! - **half_open**: once the deadline has passed the circuit *is* half-open, whether or not
//!   anything was recorded then: the deadline may have passed while no process ran. It admits
//!   [`half_open_max_calls`](CircuitBreakerConfig::half_open_max_calls) trial calls in total
//!   (each admission is an event appended at an expected stream version, so the limit holds
//!   across processes rather than per process); [`success_threshold`] successes close it, and a
//!   single failure opens it again, for longer.
//! - **forced_open**: an operator isolated the agent (`open` command); only `close` or `reset`
//!   ends it.
//!
//! # Escalation, and its decay
//!
//! Each failure in half-open raises `reopen_count` by one, and the open duration is
//! `open_ms × backoff_multiplier^reopen_count`, capped at `max_open_ms` (60 s, 120 s, 240 s...
//! with the defaults): an agent that fails its trial again is given longer to recover, as with
//! resilience4j's interval functions and Envoy's ejection time. Closing does not forget the
//! escalation (a flapping agent that trips again soon resumes where it was); instead, as in
//! Envoy, it decays: one level per [`decay_ms`](CircuitBreakerConfig::decay_ms) spent closed
//! without a failure. The decay is computed from the recorded times whenever it matters, and
//! written down (`circuit_reopen_count_decayed`) only when a failure would otherwise restart the
//! healthy period and lose the decay already earned.
//!
//! # Time
//!
//! Nothing here reads a clock. Every event carries the `at` it was decided at, and every
//! decision is taken at the `now` it is given, so replaying the log, or restoring a snapshot
//! days later, gives the same state and the same view of it at any instant.
//!
//! # Events
//!
//! `circuit_failure_counted`, `circuit_success_counted`, `circuit_trial_started`,
//! `circuit_reopen_count_decayed` and `circuit_transitioned`; the last one is also a
//! [`crate::events::CircuitTransitioned`] fact (`circuit`, `agent_id`, `from`, `to`, `reason`,
//! `details` with the numbers at that moment), so that the log says why every trip happened.
//! Permits in closed and open states write nothing: asking is frequent and changes no state.
//!
//! # Configuration
//!
//! ```
//! use healstore::heal::strategies::circuit::{CircuitBreakerConfig, Window};
//! let config: CircuitBreakerConfig = toml::from_str(r#"
//!     failure_threshold = 3
//!     open_ms = 30000
//!     failure_rate_threshold = 0.5
//!     window = { kind = "time", window_ms = 120000 }
//! "#).unwrap();
//! assert_eq!(config.window, Window::Time { window_ms: 120_000 });
//! assert_eq!(config.success_threshold, 2); // unset fields keep their defaults
//! config.validate().unwrap();
//! ```
//!
//! [`success_threshold`]: CircuitBreakerConfig::success_threshold

use std::collections::VecDeque;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::check::Section;
use crate::error::Result;
use crate::heal::model::{Action, Failure, failure_types};
use crate::heal::strategy::{Decision, Reaction, Signal, Strategy};
use crate::time::{format_time, serde_rfc3339};

/// Most outcomes a time-based window keeps, whatever its length: a bound on memory and on
/// snapshot size for agents that report thousands of calls a minute.
pub const MAX_TIME_WINDOW_ENTRIES: usize = 10_000;

/// Longest open duration ever computed (100 years), whatever the configuration: keeps deadline
/// arithmetic far from overflow.
const OPEN_MS_LIMIT: u64 = super::check::MAX_DURATION_MS;

/// Key prefix of circuits for agent-less failures with a `resource_type`.
pub const RESOURCE_KEY_PREFIX: &str = "resource:";
/// Key prefix of circuits for agent-less failures without one.
pub const FAILURE_TYPE_KEY_PREFIX: &str = "failure_type:";

/// How the failure rate is measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Window {
    /// The last `size` outcomes (`window = { kind = "count", size = 20 }`).
    Count { size: u32 },
    /// The outcomes of the last `window_ms` milliseconds (`window = { kind = "time",
    /// window_ms = 60000 }`), at most [`MAX_TIME_WINDOW_ENTRIES`] of them.
    Time { window_ms: u64 },
}

impl Default for Window {
    fn default() -> Self {
        Window::Count { size: 20 }
    }
}

/// Settings of a [`CircuitBreaker`], as read from a TOML file. Every field has a default (the
/// seed design's numbers where it has one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// The failure types this breaker counts. Default: agent_failed, task_timeout,
    /// execution_error, agent_down, heartbeat_failed.
    pub failure_types: Vec<String>,
    /// Failures in a row (no success between them) that open a closed circuit. Default 5.
    pub failure_threshold: u32,
    /// Successes in half-open that close the circuit. Default 2.
    pub success_threshold: u32,
    /// How long a circuit stays open the first time, in milliseconds. Default 60 000.
    pub open_ms: u64,
    /// Growth of the open duration per re-open: `open_ms × backoff_multiplier^reopen_count`.
    /// Default 2.0; 1.0 keeps it constant.
    pub backoff_multiplier: f64,
    /// Cap on the open duration, in milliseconds. Default 600 000 (10 minutes).
    pub max_open_ms: u64,
    /// The re-open count falls by one per this many milliseconds spent closed without a
    /// failure. Default 600 000 (10 minutes).
    pub decay_ms: u64,
    /// Trial calls admitted in half-open, in total across processes. Default 3.
    pub half_open_max_calls: u32,
    /// Also open when the failure rate over the window reaches this share (0 < r ≤ 1), e.g.
    /// 0.5. Default: none (consecutive failures only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_rate_threshold: Option<f64>,
    /// The sliding window the failure rate is measured over. Default: the last 20 outcomes.
    pub window: Window,
    /// No rate verdict before the window holds this many outcomes. Default 10.
    pub minimum_calls: u32,
    /// A circuit that stays half-open this long without reaching a verdict (trial calls that
    /// never report back) re-opens at the next tick, like resilience4j's
    /// `maxWaitDurationInHalfOpenState`. Default: none (it waits for a success, a failure or a
    /// command).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub half_open_max_wait_ms: Option<u64>,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            failure_types: [
                failure_types::AGENT_FAILED,
                failure_types::TASK_TIMEOUT,
                failure_types::EXECUTION_ERROR,
                failure_types::AGENT_DOWN,
                failure_types::HEARTBEAT_FAILED,
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
            failure_threshold: 5,
            success_threshold: 2,
            open_ms: 60_000,
            backoff_multiplier: 2.0,
            max_open_ms: 600_000,
            decay_ms: 600_000,
            half_open_max_calls: 3,
            failure_rate_threshold: None,
            window: Window::default(),
            minimum_calls: 10,
            half_open_max_wait_ms: None,
        }
    }
}

impl CircuitBreakerConfig {
    /// Checks that the settings make a breaker that can trip and recover. A
    /// [`CircuitBreaker`] built from settings that fail this still behaves sanely (thresholds
    /// of at least one, a multiplier of at least one...), but a configuration file should be
    /// refused with this message instead.
    pub fn validate(&self) -> Result<()> {
        let s = Section("circuit_breaker");
        if self.failure_types.is_empty() {
            return Err(s.refuse(
                "failure_types",
                "[]",
                "the breaker would never see a failure",
            ));
        }
        for (name, v) in [
            ("failure_threshold", self.failure_threshold),
            ("success_threshold", self.success_threshold),
            ("half_open_max_calls", self.half_open_max_calls),
            ("minimum_calls", self.minimum_calls),
        ] {
            s.at_least(name, u64::from(v), 1)?;
        }
        if self.success_threshold > self.half_open_max_calls {
            return Err(s.refuse(
                "success_threshold",
                self.success_threshold,
                format!(
                    "above circuit_breaker.half_open_max_calls ({}): trial calls alone could \
                     never close the circuit",
                    self.half_open_max_calls
                ),
            ));
        }
        s.duration("open_ms", self.open_ms, 1)?;
        s.duration("max_open_ms", self.max_open_ms, 1)?;
        s.duration("decay_ms", self.decay_ms, 1)?;
        s.not_above(("open_ms", self.open_ms), ("max_open_ms", self.max_open_ms))?;
        s.number_at_least("backoff_multiplier", self.backoff_multiplier, 1.0)?;
        if let Some(r) = self.failure_rate_threshold {
            s.number_above_up_to("failure_rate_threshold", r, 0.0, 1.0)?;
        }
        match self.window {
            Window::Count { size } => {
                s.at_least("window.size", u64::from(size), 1)?;
                if self.failure_rate_threshold.is_some() && self.minimum_calls > size {
                    return Err(s.refuse(
                        "minimum_calls",
                        self.minimum_calls,
                        format!(
                            "above the window size ({size}): the failure rate would never be \
                             judged"
                        ),
                    ));
                }
            }
            Window::Time { window_ms } => s.duration("window.window_ms", window_ms, 1)?,
        }
        if let Some(wait) = self.half_open_max_wait_ms {
            s.duration("half_open_max_wait_ms", wait, 1)?;
        }
        Ok(())
    }
}

/// Where a circuit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitStatus {
    #[default]
    Closed,
    Open,
    HalfOpen,
    ForcedOpen,
}

impl CircuitStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitStatus::Closed => "closed",
            CircuitStatus::Open => "open",
            CircuitStatus::HalfOpen => "half_open",
            CircuitStatus::ForcedOpen => "forced_open",
        }
    }
}

impl std::fmt::Display for CircuitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One call's outcome in the sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    #[serde(with = "serde_rfc3339")]
    pub at: DateTime<Utc>,
    pub ok: bool,
}

/// The state of one circuit, as recorded. Its status at a given instant may differ (an open
/// circuit whose deadline has passed is half-open): see [`CircuitBreaker::status_at`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CircuitState {
    /// The circuit's key (the agent, `resource:...` or `failure_type:...`).
    pub circuit: String,
    /// The status last recorded.
    pub state: CircuitStatus,
    /// Failures since the last success (or since the circuit last closed).
    pub consecutive_failures: u32,
    /// Recent outcomes, oldest first, bounded by the configured window.
    pub window: VecDeque<Outcome>,
    /// When the circuit last opened (or was forced open).
    #[serde(with = "serde_rfc3339::option")]
    pub opened_at: Option<DateTime<Utc>>,
    /// The stored deadline of the current opening; `None` when not open.
    #[serde(with = "serde_rfc3339::option")]
    pub open_until: Option<DateTime<Utc>>,
    /// Escalation level: how many times in a row the circuit re-opened (as recorded; while
    /// closed it decays, see [`CircuitBreaker::reopen_count_at`]).
    pub reopen_count: u32,
    /// When the status last changed.
    #[serde(with = "serde_rfc3339::option")]
    pub changed_at: Option<DateTime<Utc>>,
    #[serde(with = "serde_rfc3339::option")]
    pub last_failure_at: Option<DateTime<Utc>>,
    /// Trial calls admitted since the circuit became half-open.
    pub half_open_trials: u32,
    /// Successes since the circuit became half-open.
    pub half_open_successes: u32,
    /// For a half-open period recorded after the deadline that began it: when it was
    /// recorded (and the agent put back for its trial calls). The wait for a verdict
    /// ([`half_open_max_wait_ms`](CircuitBreakerConfig::half_open_max_wait_ms)) counts from
    /// then, not from the deadline.
    #[serde(
        default,
        with = "serde_rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub half_open_noticed_at: Option<DateTime<Utc>>,
}

impl CircuitState {
    /// The circuit's status at `now`: an open circuit whose deadline has passed is half-open.
    pub fn status_at(&self, now: DateTime<Utc>) -> CircuitStatus {
        match self.state {
            // No deadline cannot come from this module's events; letting trials in is the
            // safe reading of a damaged state (an isolation with no end is not).
            CircuitStatus::Open if self.open_until.is_none_or(|until| until <= now) => {
                CircuitStatus::HalfOpen
            }
            other => other,
        }
    }
}

/// What happened to a circuit. Stored with the variant's name as event type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CircuitEvent {
    /// A failure was counted (in any status; it never moves an open circuit's deadline).
    CircuitFailureCounted {
        #[serde(with = "serde_rfc3339")]
        at: DateTime<Utc>,
        circuit: String,
        failure_id: String,
        failure_type: String,
    },
    /// A success was counted; `trial` when the circuit was half-open (it counts towards
    /// closing).
    CircuitSuccessCounted {
        #[serde(with = "serde_rfc3339")]
        at: DateTime<Utc>,
        circuit: String,
        #[serde(default)]
        trial: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task_id: Option<String>,
    },
    /// A trial call was admitted in half-open.
    CircuitTrialStarted {
        #[serde(with = "serde_rfc3339")]
        at: DateTime<Utc>,
        circuit: String,
    },
    /// Healthy time lowered the escalation level (recorded just before a failure restarts the
    /// healthy period).
    CircuitReopenCountDecayed {
        #[serde(with = "serde_rfc3339")]
        at: DateTime<Utc>,
        circuit: String,
        from: u32,
        to: u32,
    },
    /// The status changed, at `at`. Its JSON is also a [`crate::events::CircuitTransitioned`].
    /// An open circuit turns half-open at its deadline: that transition is dated at the
    /// deadline (the event's `occurred_at` too), whenever it is recorded.
    CircuitTransitioned {
        #[serde(with = "serde_rfc3339")]
        at: DateTime<Utc>,
        circuit: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_id: Option<String>,
        from: CircuitStatus,
        to: CircuitStatus,
        reason: String,
        /// The numbers at that moment.
        #[serde(default)]
        details: Map<String, Value>,
        /// The deadline, for a transition to `open`.
        #[serde(
            default,
            with = "serde_rfc3339::option",
            skip_serializing_if = "Option::is_none"
        )]
        open_until: Option<DateTime<Utc>>,
        /// The escalation level from now on.
        reopen_count: u32,
        /// When the transition was recorded, if later than `at` (a half-open period noticed
        /// after its deadline).
        #[serde(
            default,
            with = "serde_rfc3339::option",
            skip_serializing_if = "Option::is_none"
        )]
        noticed_at: Option<DateTime<Utc>>,
    },
}

/// The circuit breaker strategy. See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct CircuitBreaker {
    config: CircuitBreakerConfig,
}

/// The agent a circuit key names, if it names one.
pub fn agent_of(key: &str) -> Option<&str> {
    if key.starts_with(RESOURCE_KEY_PREFIX) || key.starts_with(FAILURE_TYPE_KEY_PREFIX) {
        None
    } else {
        Some(key)
    }
}

fn time_value(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| Value::String(format_time(t)))
}

fn rate(failures: u32, calls: u32) -> f64 {
    if calls == 0 {
        0.0
    } else {
        f64::from(failures) / f64::from(calls)
    }
}

impl CircuitBreaker {
    /// A breaker with these settings (see [`CircuitBreakerConfig::validate`], and
    /// [`CircuitBreaker::try_new`] to refuse bad ones).
    pub fn new(config: CircuitBreakerConfig) -> Self {
        CircuitBreaker { config }
    }

    /// A breaker with these settings, if they pass [`CircuitBreakerConfig::validate`].
    pub fn try_new(config: CircuitBreakerConfig) -> Result<Self> {
        config.validate()?;
        Ok(CircuitBreaker { config })
    }

    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.config
    }

    fn failure_threshold(&self) -> u32 {
        self.config.failure_threshold.max(1)
    }

    fn success_threshold(&self) -> u32 {
        self.config.success_threshold.max(1)
    }

    fn half_open_max_calls(&self) -> u32 {
        self.config.half_open_max_calls.max(1)
    }

    /// The status at `now`: an open circuit whose deadline has passed is half-open, whether
    /// or not that was recorded.
    pub fn status_at(&self, s: &CircuitState, now: DateTime<Utc>) -> CircuitStatus {
        s.status_at(now)
    }

    /// The escalation level at `now`: while closed, the recorded level less one per
    /// `decay_ms` since the later of closing and the last failure.
    pub fn reopen_count_at(&self, s: &CircuitState, now: DateTime<Utc>) -> u32 {
        if s.state != CircuitStatus::Closed || s.reopen_count == 0 {
            return s.reopen_count;
        }
        let Some(healthy_since) = s.changed_at.max(s.last_failure_at) else {
            return s.reopen_count;
        };
        let healthy_ms = u64::try_from((now - healthy_since).num_milliseconds()).unwrap_or(0);
        let steps = healthy_ms / self.config.decay_ms.max(1);
        s.reopen_count
            .saturating_sub(u32::try_from(steps).unwrap_or(u32::MAX))
    }

    /// How long an opening at this escalation level lasts, in milliseconds.
    pub fn open_duration_ms(&self, reopen_count: u32) -> u64 {
        let c = &self.config;
        let multiplier = if c.backoff_multiplier.is_finite() {
            c.backoff_multiplier.max(1.0)
        } else {
            1.0
        };
        let exponent = i32::try_from(reopen_count.min(4096)).unwrap_or(4096);
        let grown = c.open_ms as f64 * multiplier.powi(exponent);
        let cap = c.max_open_ms.min(OPEN_MS_LIMIT) as f64;
        // `min` of an infinite product and the cap is the cap.
        grown.min(cap) as u64
    }

    fn deadline(&self, now: DateTime<Utc>, reopen_count: u32) -> (u64, DateTime<Utc>) {
        let ms = self.open_duration_ms(reopen_count);
        let until = TimeDelta::try_milliseconds(i64::try_from(ms).unwrap_or(i64::MAX))
            .and_then(|d| now.checked_add_signed(d))
            .unwrap_or(now);
        (ms, until)
    }

    /// Calls and failures in the window at `now`, counting `extra` as the newest outcome.
    fn window_counts(
        &self,
        s: &CircuitState,
        now: DateTime<Utc>,
        extra: Option<bool>,
    ) -> (u32, u32) {
        let mut calls = 0u32;
        let mut failures = 0u32;
        let mut count = |ok: bool| {
            calls += 1;
            failures += u32::from(!ok);
        };
        match self.config.window {
            Window::Count { size } => {
                let room = (size.max(1) as usize).saturating_sub(usize::from(extra.is_some()));
                let skip = s.window.len().saturating_sub(room);
                s.window.iter().skip(skip).for_each(|o| count(o.ok));
            }
            Window::Time { window_ms } => {
                let since =
                    TimeDelta::try_milliseconds(i64::try_from(window_ms).unwrap_or(i64::MAX))
                        .and_then(|d| now.checked_sub_signed(d));
                s.window
                    .iter()
                    .filter(|o| since.is_none_or(|since| o.at > since))
                    .for_each(|o| count(o.ok));
            }
        }
        if let Some(ok) = extra {
            count(ok);
        }
        (calls, failures)
    }

    fn push_outcome(&self, s: &mut CircuitState, outcome: Outcome) {
        s.window.push_back(outcome);
        let max = match self.config.window {
            Window::Count { size } => size.max(1) as usize,
            Window::Time { window_ms } => {
                let since =
                    TimeDelta::try_milliseconds(i64::try_from(window_ms).unwrap_or(i64::MAX))
                        .and_then(|d| outcome.at.checked_sub_signed(d));
                if let Some(since) = since {
                    while s.window.front().is_some_and(|o| o.at <= since) {
                        s.window.pop_front();
                    }
                }
                MAX_TIME_WINDOW_ENTRIES
            }
        };
        while s.window.len() > max {
            s.window.pop_front();
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn transition(
        &self,
        key: &str,
        at: DateTime<Utc>,
        from: CircuitStatus,
        to: CircuitStatus,
        reason: String,
        details: Map<String, Value>,
        open_until: Option<DateTime<Utc>>,
        reopen_count: u32,
    ) -> CircuitEvent {
        CircuitEvent::CircuitTransitioned {
            at,
            circuit: key.to_owned(),
            agent_id: agent_of(key).map(str::to_owned),
            from,
            to,
            reason,
            details,
            open_until,
            reopen_count,
            noticed_at: None,
        }
    }

    /// The `open → half_open` transition that the deadline already made effective, if it is
    /// not recorded yet: dated at the deadline, noticed at `now`.
    fn due_half_open(
        &self,
        s: &CircuitState,
        key: &str,
        now: DateTime<Utc>,
    ) -> Option<CircuitEvent> {
        if s.state != CircuitStatus::Open || self.status_at(s, now) != CircuitStatus::HalfOpen {
            return None;
        }
        let mut details = Map::new();
        details.insert("opened_at".into(), time_value(s.opened_at));
        details.insert("open_until".into(), time_value(s.open_until));
        details.insert("reopen_count".into(), json!(s.reopen_count));
        details.insert(
            "half_open_max_calls".into(),
            json!(self.half_open_max_calls()),
        );
        let reason = match s.open_until {
            Some(until) => format!(
                "the open period ended at {}: admitting up to {} trial calls",
                format_time(until),
                self.half_open_max_calls()
            ),
            None => "the open period has no recorded end: admitting trial calls".to_owned(),
        };
        let at = s.open_until.filter(|until| *until <= now).unwrap_or(now);
        let mut e = self.transition(
            key,
            at,
            CircuitStatus::Open,
            CircuitStatus::HalfOpen,
            reason,
            details,
            None,
            s.reopen_count,
        );
        if let CircuitEvent::CircuitTransitioned { noticed_at, .. } = &mut e
            && now > at
        {
            *noticed_at = Some(now);
        }
        Some(e)
    }

    /// A recorded half-open period that outlived `half_open_max_wait_ms` without a verdict:
    /// re-open, escalated like a failed trial.
    fn half_open_expired(
        &self,
        s: &CircuitState,
        key: &str,
        now: DateTime<Utc>,
    ) -> Option<Reaction<CircuitEvent>> {
        let wait = self.config.half_open_max_wait_ms?;
        let since = s.half_open_noticed_at.or(s.changed_at)?;
        if s.state != CircuitStatus::HalfOpen {
            return None;
        }
        let expires = TimeDelta::try_milliseconds(i64::try_from(wait).unwrap_or(i64::MAX))
            .and_then(|d| since.checked_add_signed(d))?;
        if now < expires {
            return None;
        }
        let level = s.reopen_count.saturating_add(1);
        let (ms, until) = self.deadline(now, level);
        let mut details = Map::new();
        details.insert("half_open_since".into(), time_value(Some(since)));
        details.insert("half_open_max_wait_ms".into(), json!(wait));
        details.insert("trials_started".into(), json!(s.half_open_trials));
        details.insert("trial_successes".into(), json!(s.half_open_successes));
        details.insert("reopen_count".into(), json!(level));
        details.insert("open_ms".into(), json!(ms));
        let reason = format!(
            "{key}: no verdict within {wait} ms of half-open ({} trials, {} successes): \
             circuit re-opened until {} ({ms} ms, re-open level {level})",
            s.half_open_trials,
            s.half_open_successes,
            format_time(until)
        );
        let mut r = Reaction::new(key, reason.clone()).event(self.transition(
            key,
            now,
            CircuitStatus::HalfOpen,
            CircuitStatus::Open,
            reason,
            details,
            Some(until),
            level,
        ));
        if let Some(agent) = agent_of(key) {
            r = r.action(Action::UnregisterAgent {
                agent_id: agent.to_owned(),
            });
        }
        Some(r)
    }

    /// The registration that puts an agent back for its half-open trial.
    fn trial_registration(agent: &str) -> Action {
        let mut metadata = Map::new();
        metadata.insert("circuit_state".into(), json!("half_open"));
        metadata.insert("test_mode".into(), json!(true));
        Action::RegisterAgent {
            agent_id: agent.to_owned(),
            metadata,
        }
    }

    fn counted(key: &str, failure: &Failure, now: DateTime<Utc>) -> CircuitEvent {
        CircuitEvent::CircuitFailureCounted {
            at: now,
            circuit: key.to_owned(),
            failure_id: failure.failure_id.clone(),
            failure_type: failure.failure_type.clone(),
        }
    }

    fn decide_closed(
        &self,
        s: &CircuitState,
        key: &str,
        failure: &Failure,
        now: DateTime<Utc>,
    ) -> Decision<CircuitEvent> {
        let c = &self.config;
        let consecutive = s.consecutive_failures.saturating_add(1);
        let (calls, failures) = self.window_counts(s, now, Some(false));
        let failure_rate = rate(failures, calls);
        let rate_judged = calls >= c.minimum_calls.max(1);
        let by_rate = c
            .failure_rate_threshold
            .is_some_and(|t| rate_judged && failure_rate >= t);
        let by_count = consecutive >= self.failure_threshold();
        let level = self.reopen_count_at(s, now);

        let mut details = Map::new();
        details.insert("consecutive_failures".into(), json!(consecutive));
        details.insert("failure_threshold".into(), json!(self.failure_threshold()));
        details.insert("window".into(), json!(c.window));
        details.insert("window_calls".into(), json!(calls));
        details.insert("window_failures".into(), json!(failures));
        details.insert("failure_rate".into(), json!(failure_rate));
        details.insert(
            "failure_rate_threshold".into(),
            json!(c.failure_rate_threshold),
        );
        details.insert("minimum_calls".into(), json!(c.minimum_calls));
        details.insert("reopen_count".into(), json!(level));

        if !(by_count || by_rate) {
            let mut reason = format!(
                "{key}: {consecutive} of {} failures in a row",
                self.failure_threshold()
            );
            if let Some(t) = c.failure_rate_threshold {
                if rate_judged {
                    reason.push_str(&format!(
                        ", failure rate {:.0} % of {calls} calls (threshold {:.0} %)",
                        failure_rate * 100.0,
                        t * 100.0
                    ));
                } else {
                    reason.push_str(&format!(
                        ", {calls} of {} calls needed to judge the failure rate",
                        c.minimum_calls
                    ));
                }
            }
            reason.push_str("; the circuit stays closed");
            let mut d = Decision::decline(reason);
            d.details = details;
            if level < s.reopen_count {
                // This failure restarts the healthy period: keep the decay earned so far.
                d = d.event(CircuitEvent::CircuitReopenCountDecayed {
                    at: now,
                    circuit: key.to_owned(),
                    from: s.reopen_count,
                    to: level,
                });
            }
            return d.event(Self::counted(key, failure, now));
        }

        let (ms, until) = self.deadline(now, level);
        details.insert(
            "trigger".into(),
            json!(if by_count {
                "consecutive_failures"
            } else {
                "failure_rate"
            }),
        );
        details.insert("open_ms".into(), json!(ms));
        details.insert("open_until".into(), json!(format_time(until)));
        let why = if by_count {
            format!(
                "{consecutive} failures in a row (threshold {})",
                self.failure_threshold()
            )
        } else {
            format!(
                "failure rate {:.0} % over {calls} calls (threshold {:.0} %)",
                failure_rate * 100.0,
                c.failure_rate_threshold.unwrap_or_default() * 100.0
            )
        };
        let reason = format!(
            "{key}: {why}: circuit opened until {} ({ms} ms, re-open level {level})",
            format_time(until)
        );
        let mut d = Decision::act(reason.clone())
            .event(Self::counted(key, failure, now))
            .event(self.transition(
                key,
                now,
                CircuitStatus::Closed,
                CircuitStatus::Open,
                reason,
                details.clone(),
                Some(until),
                level,
            ));
        d.details = details;
        if let Some(agent) = agent_of(key) {
            d = d.action(Action::UnregisterAgent {
                agent_id: agent.to_owned(),
            });
        }
        d
    }

    fn decide_half_open(
        &self,
        s: &CircuitState,
        key: &str,
        failure: &Failure,
        now: DateTime<Utc>,
    ) -> Decision<CircuitEvent> {
        let due = self.due_half_open(s, key, now);
        let (trials, successes) = if due.is_some() {
            (0, 0)
        } else {
            (s.half_open_trials, s.half_open_successes)
        };
        let level = s.reopen_count.saturating_add(1);
        let (ms, until) = self.deadline(now, level);
        let mut details = Map::new();
        details.insert("trials_started".into(), json!(trials));
        details.insert(
            "half_open_max_calls".into(),
            json!(self.half_open_max_calls()),
        );
        details.insert("trial_successes".into(), json!(successes));
        details.insert("success_threshold".into(), json!(self.success_threshold()));
        details.insert(
            "consecutive_failures".into(),
            json!(s.consecutive_failures.saturating_add(1)),
        );
        details.insert("previous_reopen_count".into(), json!(s.reopen_count));
        details.insert("reopen_count".into(), json!(level));
        details.insert("open_ms".into(), json!(ms));
        details.insert("open_until".into(), json!(format_time(until)));
        let reason = format!(
            "{key}: failed while half-open ({successes} of {} trial successes): circuit re-opened \
             until {} ({ms} ms, re-open level {level})",
            self.success_threshold(),
            format_time(until)
        );
        let mut d = Decision::act(reason.clone());
        if let Some(e) = due {
            d = d.event(e);
        }
        d = d
            .event(Self::counted(key, failure, now))
            .event(self.transition(
                key,
                now,
                CircuitStatus::HalfOpen,
                CircuitStatus::Open,
                reason,
                details.clone(),
                Some(until),
                level,
            ));
        d.details = details;
        if let Some(agent) = agent_of(key) {
            d = d.action(Action::UnregisterAgent {
                agent_id: agent.to_owned(),
            });
        }
        d
    }

    fn on_permit(&self, s: &CircuitState, key: &str, now: DateTime<Utc>) -> Reaction<CircuitEvent> {
        match self.status_at(s, now) {
            CircuitStatus::Closed => Reaction::new(key, "circuit closed").permit(true),
            CircuitStatus::Open => Reaction::new(
                key,
                format!(
                    "circuit open until {}",
                    s.open_until.map(format_time).unwrap_or_default()
                ),
            )
            .permit(false),
            CircuitStatus::ForcedOpen => {
                Reaction::new(key, "circuit forced open by an operator").permit(false)
            }
            CircuitStatus::HalfOpen => {
                let due = self.due_half_open(s, key, now);
                let trials = if due.is_some() { 0 } else { s.half_open_trials };
                let max = self.half_open_max_calls();
                if trials >= max {
                    return Reaction::new(
                        key,
                        format!("half-open: all {max} trial calls already admitted"),
                    )
                    .permit(false);
                }
                let mut r = Reaction::new(
                    key,
                    format!("half-open: trial call {} of {max} admitted", trials + 1),
                );
                if let Some(e) = due {
                    r = r.event(e);
                    if let Some(agent) = agent_of(key) {
                        r = r.action(Self::trial_registration(agent));
                    }
                }
                r.event(CircuitEvent::CircuitTrialStarted {
                    at: now,
                    circuit: key.to_owned(),
                })
                .permit(true)
            }
        }
    }

    fn on_success(
        &self,
        s: &CircuitState,
        key: &str,
        task_id: Option<&String>,
        now: DateTime<Utc>,
    ) -> Reaction<CircuitEvent> {
        let status = self.status_at(s, now);
        let success = |trial: bool| CircuitEvent::CircuitSuccessCounted {
            at: now,
            circuit: key.to_owned(),
            trial,
            task_id: task_id.cloned(),
        };
        match status {
            // Nothing to reset and no rate to measure: recording the success would change no
            // decision, so the log is spared an event per success of a healthy agent.
            CircuitStatus::Closed
                if s.consecutive_failures == 0 && self.config.failure_rate_threshold.is_none() =>
            {
                Reaction::new(
                    key,
                    "success: the circuit is closed with no failures to reset",
                )
            }
            CircuitStatus::Closed => Reaction::new(
                key,
                format!(
                    "success counted; the run of {} failures is reset",
                    s.consecutive_failures
                ),
            )
            .event(success(false)),
            CircuitStatus::Open | CircuitStatus::ForcedOpen => Reaction::new(
                key,
                format!("circuit {status}: success counted, no transition"),
            )
            .event(success(false)),
            CircuitStatus::HalfOpen => {
                let due = self.due_half_open(s, key, now);
                let (trials, before) = if due.is_some() {
                    (0, 0)
                } else {
                    (s.half_open_trials, s.half_open_successes)
                };
                let successes = before.saturating_add(1);
                let needed = self.success_threshold();
                let registered_here = due.is_some();
                let mut r = Reaction::new(key, String::new());
                if let Some(e) = due {
                    r = r.event(e);
                }
                r = r.event(success(true));
                if successes < needed {
                    r.reason = format!("half-open: trial success {successes} of {needed}");
                    if registered_here && let Some(agent) = agent_of(key) {
                        r = r.action(Self::trial_registration(agent));
                    }
                    return r;
                }
                let reason =
                    format!("{key}: {successes} of {needed} trial successes: circuit closed");
                let mut details = Map::new();
                details.insert("trial_successes".into(), json!(successes));
                details.insert("success_threshold".into(), json!(needed));
                details.insert("trials_started".into(), json!(trials));
                details.insert("reopen_count".into(), json!(s.reopen_count));
                details.insert("opened_at".into(), time_value(s.opened_at));
                r.reason = reason.clone();
                r = r.event(self.transition(
                    key,
                    now,
                    CircuitStatus::HalfOpen,
                    CircuitStatus::Closed,
                    reason,
                    details,
                    None,
                    s.reopen_count,
                ));
                if registered_here && let Some(agent) = agent_of(key) {
                    // Never re-registered for a trial: put it back as a regular agent.
                    r = r.action(Action::RegisterAgent {
                        agent_id: agent.to_owned(),
                        metadata: Map::from_iter([("circuit_state".to_owned(), json!("closed"))]),
                    });
                }
                r
            }
        }
    }

    fn on_command(
        &self,
        s: &CircuitState,
        key: &str,
        command: &str,
        why: &str,
        now: DateTime<Utc>,
    ) -> Reaction<CircuitEvent> {
        let status = self.status_at(s, now);
        let level = self.reopen_count_at(s, now);
        let mut details = Map::new();
        details.insert("command".into(), json!(command));
        details.insert("operator_reason".into(), json!(why));
        details.insert("consecutive_failures".into(), json!(s.consecutive_failures));
        details.insert("reopen_count".into(), json!(level));
        let (to, reopen_count, action) = match command {
            "open" => {
                if status == CircuitStatus::ForcedOpen {
                    return Reaction::new(key, "already forced open; nothing changed");
                }
                let action = agent_of(key).map(|a| Action::UnregisterAgent {
                    agent_id: a.to_owned(),
                });
                (CircuitStatus::ForcedOpen, level, action)
            }
            "close" | "reset" => {
                if command == "close" && status == CircuitStatus::Closed {
                    return Reaction::new(key, "already closed; nothing changed");
                }
                let level = if command == "reset" { 0 } else { level };
                let action = (status != CircuitStatus::Closed)
                    .then(|| agent_of(key))
                    .flatten()
                    .map(|a| Action::RegisterAgent {
                        agent_id: a.to_owned(),
                        metadata: Map::from_iter([("circuit_state".to_owned(), json!("closed"))]),
                    });
                (CircuitStatus::Closed, level, action)
            }
            other => {
                return Reaction::new(
                    key,
                    format!(
                        "unknown circuit breaker command {other:?} (expected open, close or reset)"
                    ),
                );
            }
        };
        let reason = format!("{command} by an operator: {why}");
        let mut r = Reaction::new(key, reason.clone());
        let mut from = status;
        if let Some(e) = self.due_half_open(s, key, now) {
            r = r.event(e);
            from = CircuitStatus::HalfOpen;
        }
        r = r.event(self.transition(key, now, from, to, reason, details, None, reopen_count));
        if let Some(a) = action {
            r = r.action(a);
        }
        r
    }
}

impl Strategy for CircuitBreaker {
    fn agent_of_key<'k>(&self, key: &'k str) -> Option<&'k str> {
        agent_of(key)
    }

    type State = CircuitState;
    type Event = CircuitEvent;

    fn name(&self) -> &str {
        "CircuitBreaker"
    }

    fn validate(&self) -> crate::error::Result<()> {
        self.config.validate()
    }

    fn can_heal(&self, failure: &Failure) -> bool {
        self.config.failure_types.contains(&failure.failure_type)
    }

    /// The agent; for agent-less failures `resource:<resource_type>` when the metadata names
    /// a resource, else `failure_type:<failure_type>`.
    fn key(&self, failure: &Failure) -> String {
        if let Some(agent) = &failure.agent_id {
            return agent.clone();
        }
        match failure.meta_str("resource_type") {
            Some(r) => format!("{RESOURCE_KEY_PREFIX}{r}"),
            None => format!("{FAILURE_TYPE_KEY_PREFIX}{}", failure.failure_type),
        }
    }

    fn decide(
        &self,
        state: &CircuitState,
        failure: &Failure,
        now: DateTime<Utc>,
    ) -> Decision<CircuitEvent> {
        let key = self.key(failure);
        match self.status_at(state, now) {
            CircuitStatus::Closed => self.decide_closed(state, &key, failure, now),
            CircuitStatus::HalfOpen => self.decide_half_open(state, &key, failure, now),
            status @ (CircuitStatus::Open | CircuitStatus::ForcedOpen) => {
                let reason = match (status, state.open_until) {
                    (CircuitStatus::Open, Some(until)) => format!(
                        "{key}: circuit open, isolated until {}; the failure is counted, the \
                         deadline does not move",
                        format_time(until)
                    ),
                    _ => format!(
                        "{key}: circuit forced open by an operator, isolated until closed; the \
                         failure is counted"
                    ),
                };
                Decision::hold(reason)
                    .detail("state", status)
                    .detail("opened_at", time_value(state.opened_at))
                    .detail("open_until", time_value(state.open_until))
                    .detail("reopen_count", state.reopen_count)
                    .detail(
                        "consecutive_failures",
                        state.consecutive_failures.saturating_add(1),
                    )
                    .event(Self::counted(&key, failure, now))
            }
        }
    }

    /// Every event carries the instant it happened: for a half-open period recorded after the
    /// deadline that began it, the deadline.
    fn occurred_at(&self, event: &CircuitEvent) -> Option<DateTime<Utc>> {
        Some(match event {
            CircuitEvent::CircuitFailureCounted { at, .. }
            | CircuitEvent::CircuitSuccessCounted { at, .. }
            | CircuitEvent::CircuitTrialStarted { at, .. }
            | CircuitEvent::CircuitReopenCountDecayed { at, .. }
            | CircuitEvent::CircuitTransitioned { at, .. } => *at,
        })
    }

    fn signal_keys(&self, signal: &Signal, known: &[String]) -> Vec<String> {
        match signal {
            Signal::AgentSucceeded { agent_id, .. } | Signal::Permit { agent_id } => {
                vec![agent_id.clone()]
            }
            Signal::Command { key, .. } => vec![key.clone()],
            Signal::Tick => known.to_vec(),
            // Usage reports say nothing about calls succeeding or failing.
            Signal::ResourceUsage { .. } => Vec::new(),
        }
    }

    fn on_signal(
        &self,
        state: &CircuitState,
        key: &str,
        signal: &Signal,
        now: DateTime<Utc>,
    ) -> Option<Reaction<CircuitEvent>> {
        match signal {
            Signal::Permit { .. } => Some(self.on_permit(state, key, now)),
            Signal::AgentSucceeded { task_id, .. } => {
                Some(self.on_success(state, key, task_id.as_ref(), now))
            }
            Signal::Command {
                command, reason, ..
            } => Some(self.on_command(state, key, command, reason, now)),
            Signal::Tick => {
                if let Some(r) = self.half_open_expired(state, key, now) {
                    return Some(r);
                }
                let due = self.due_half_open(state, key, now)?;
                let mut r = Reaction::new(
                    key,
                    format!(
                        "open period over: half-open, admitting up to {} trial calls",
                        self.half_open_max_calls()
                    ),
                )
                .event(due);
                if let Some(agent) = agent_of(key) {
                    r = r.action(Self::trial_registration(agent));
                }
                Some(r)
            }
            Signal::ResourceUsage { .. } => None,
        }
    }

    fn apply(&self, s: &mut CircuitState, event: &CircuitEvent) {
        match event {
            CircuitEvent::CircuitFailureCounted { at, circuit, .. } => {
                s.circuit.clone_from(circuit);
                s.consecutive_failures = s.consecutive_failures.saturating_add(1);
                s.last_failure_at = Some(*at);
                self.push_outcome(s, Outcome { at: *at, ok: false });
            }
            CircuitEvent::CircuitSuccessCounted {
                at, circuit, trial, ..
            } => {
                s.circuit.clone_from(circuit);
                s.consecutive_failures = 0;
                if *trial {
                    s.half_open_successes = s.half_open_successes.saturating_add(1);
                }
                self.push_outcome(s, Outcome { at: *at, ok: true });
            }
            CircuitEvent::CircuitTrialStarted { circuit, .. } => {
                s.circuit.clone_from(circuit);
                s.half_open_trials = s.half_open_trials.saturating_add(1);
            }
            CircuitEvent::CircuitReopenCountDecayed { circuit, to, .. } => {
                s.circuit.clone_from(circuit);
                s.reopen_count = *to;
            }
            CircuitEvent::CircuitTransitioned {
                at,
                circuit,
                to,
                open_until,
                reopen_count,
                noticed_at,
                ..
            } => {
                s.circuit.clone_from(circuit);
                s.state = *to;
                s.changed_at = Some(*at);
                s.half_open_noticed_at = if *to == CircuitStatus::HalfOpen {
                    *noticed_at
                } else {
                    None
                };
                s.open_until = *open_until;
                s.reopen_count = *reopen_count;
                // Trial counts belong to one half-open period.
                s.half_open_trials = 0;
                s.half_open_successes = 0;
                match to {
                    CircuitStatus::Open | CircuitStatus::ForcedOpen => s.opened_at = Some(*at),
                    // A closed circuit starts judging afresh (as resilience4j's new metrics).
                    CircuitStatus::Closed => {
                        s.consecutive_failures = 0;
                        s.window.clear();
                    }
                    CircuitStatus::HalfOpen => {}
                }
            }
        }
    }

    fn describe(&self, s: &CircuitState, now: DateTime<Utc>) -> Value {
        let status = self.status_at(s, now);
        let level = self.reopen_count_at(s, now);
        let (calls, failures) = self.window_counts(s, now, None);
        // Recorded counts belong to a recorded half-open period; an only-effective one has
        // admitted nothing yet.
        let (trials, successes) = if s.state == CircuitStatus::HalfOpen {
            (s.half_open_trials, s.half_open_successes)
        } else {
            (0, 0)
        };
        let next_open_level = if status == CircuitStatus::HalfOpen {
            level.saturating_add(1)
        } else {
            level
        };
        json!({
            "circuit": s.circuit,
            "agent_id": agent_of(&s.circuit),
            "state": status,
            "recorded_state": s.state,
            "consecutive_failures": s.consecutive_failures,
            "failure_threshold": self.failure_threshold(),
            "opened_at": time_value(s.opened_at),
            "next_transition_at": if status == CircuitStatus::Open {
                time_value(s.open_until)
            } else {
                Value::Null
            },
            "reopen_count": level,
            "next_open_ms": self.open_duration_ms(next_open_level),
            "changed_at": time_value(s.changed_at),
            "last_failure_at": time_value(s.last_failure_at),
            "window": {
                "kind": match self.config.window {
                    Window::Count { .. } => "count",
                    Window::Time { .. } => "time",
                },
                "calls": calls,
                "failures": failures,
                "failure_rate": rate(failures, calls),
            },
            "half_open": {
                "trials_started": trials,
                "max_calls": self.half_open_max_calls(),
                "successes": successes,
                "success_threshold": self.success_threshold(),
            },
        })
    }

    /// Closed, with no failure counted, no escalation left and no rate window to keep: it
    /// admits, decides and reacts as a new circuit does.
    fn at_rest(&self, s: &CircuitState, now: DateTime<Utc>) -> bool {
        s.state == CircuitStatus::Closed
            && s.consecutive_failures == 0
            && s.half_open_trials == 0
            && s.half_open_successes == 0
            && self.reopen_count_at(s, now) == 0
            && (s.window.is_empty() || self.config.failure_rate_threshold.is_none())
    }

    /// An open circuit's deadline (half-open from then on); a recorded half-open period's
    /// longest wait for a verdict, when `half_open_max_wait_ms` is set (re-opened then).
    fn wakes_at(&self, s: &CircuitState) -> Option<DateTime<Utc>> {
        match s.state {
            CircuitStatus::Open => s.open_until.or(s.opened_at),
            CircuitStatus::HalfOpen => {
                let wait = self.config.half_open_max_wait_ms?;
                let since = s.half_open_noticed_at.or(s.changed_at)?;
                TimeDelta::try_milliseconds(i64::try_from(wait).unwrap_or(i64::MAX))
                    .and_then(|d| since.checked_add_signed(d))
            }
            CircuitStatus::Closed | CircuitStatus::ForcedOpen => None,
        }
    }

    fn disables_agent(&self, s: &CircuitState, now: DateTime<Utc>) -> bool {
        agent_of(&s.circuit).is_some()
            && matches!(
                self.status_at(s, now),
                CircuitStatus::Open | CircuitStatus::ForcedOpen
            )
    }
}
