//! The strategy contract: a pure fold of state over the strategy's own events, and pure
//! decisions from that state, a failure (or a signal) and `now`.
//!
//! A strategy never touches the database, never reads a clock and never calls the
//! coordinator. It returns *events* (facts about its own state, which the healer appends to
//! the strategy's stream and folds back in with [`Strategy::apply`]) and *actions* (which the
//! healer carries out through the coordinator). Replaying the events rebuilds the state and
//! repeats no action.
//!
//! # A custom strategy
//!
//! ```
//! use chrono::{DateTime, Utc};
//! use healstore::heal::{Action, Decision, Failure, Strategy};
//! use serde::{Deserialize, Serialize};
//!
//! /// Restarts an agent, but at most `max` times in its life.
//! struct LimitedRestart { max: u32 }
//!
//! #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
//! struct Restarts { count: u32 }
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! #[serde(tag = "type", rename_all = "snake_case")]
//! enum RestartEvent { LimitedRestartCounted { at: DateTime<Utc> } }
//!
//! impl Strategy for LimitedRestart {
//!     type State = Restarts;
//!     type Event = RestartEvent;
//!     fn name(&self) -> &str { "LimitedRestart" }
//!     fn can_heal(&self, f: &Failure) -> bool { f.agent_id.is_some() }
//!     fn decide(&self, s: &Restarts, f: &Failure, now: DateTime<Utc>) -> Decision<RestartEvent> {
//!         let agent = f.agent_id.clone().unwrap_or_default();
//!         if s.count >= self.max {
//!             return Decision::fail(format!("{agent} was restarted {} times already", s.count))
//!                 .detail("restarts", s.count).detail("max", self.max);
//!         }
//!         Decision::act(format!("restart {agent} ({} of {})", s.count + 1, self.max))
//!             .event(RestartEvent::LimitedRestartCounted { at: now })
//!             .action(Action::RestartAgent { agent_id: agent })
//!     }
//!     fn apply(&self, s: &mut Restarts, e: &RestartEvent) {
//!         match e { RestartEvent::LimitedRestartCounted { .. } => s.count += 1 }
//!     }
//! }
//! ```

use std::any::Any;
use std::fmt::Debug;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::model::{Action, Failure};

/// What a strategy decided about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Carry out the actions; the healing succeeded if and only if all of them succeeded.
    Act,
    /// Not this strategy's case: the next strategy of a chain is tried.
    Decline,
    /// This strategy would heal but cannot (a limit is reached, the agent is unknown...): a
    /// failed healing attempt; the next strategy of a chain is tried.
    Fail,
    /// Acting would be wrong now (an open circuit isolates the agent, a backoff is running):
    /// no attempt is made and a chain stops.
    Hold,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Act => "act",
            Verdict::Decline => "declined",
            Verdict::Fail => "failed",
            Verdict::Hold => "held",
        }
    }
}

/// A decision: the verdict, why, the numbers behind it, the state changes and the actions.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision<E> {
    pub verdict: Verdict,
    pub reason: String,
    /// The numbers the decision was taken on (state before, thresholds, counts), for the audit.
    pub details: Map<String, Value>,
    /// Facts about the strategy's state, appended to its stream whatever the actions do.
    pub events: Vec<E>,
    /// What to do, in order.
    pub actions: Vec<Action>,
}

impl<E> Decision<E> {
    fn new(verdict: Verdict, reason: impl Into<String>) -> Self {
        Decision {
            verdict,
            reason: reason.into(),
            details: Map::new(),
            events: Vec::new(),
            actions: Vec::new(),
        }
    }
    pub fn act(reason: impl Into<String>) -> Self {
        Self::new(Verdict::Act, reason)
    }
    pub fn decline(reason: impl Into<String>) -> Self {
        Self::new(Verdict::Decline, reason)
    }
    pub fn fail(reason: impl Into<String>) -> Self {
        Self::new(Verdict::Fail, reason)
    }
    pub fn hold(reason: impl Into<String>) -> Self {
        Self::new(Verdict::Hold, reason)
    }
    pub fn detail(mut self, key: &str, value: impl Serialize) -> Self {
        self.details.insert(
            key.to_owned(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
        self
    }
    pub fn event(mut self, e: E) -> Self {
        self.events.push(e);
        self
    }
    pub fn action(mut self, a: Action) -> Self {
        self.actions.push(a);
        self
    }
}

/// Something other than a failure that a strategy may react to.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// The agent completed work successfully (a task, when known).
    AgentSucceeded {
        agent_id: String,
        task_id: Option<String>,
    },
    /// A resource's usage was reported (pressure rising or falling).
    ResourceUsage {
        resource_type: String,
        current_usage: f64,
        limit: f64,
    },
    /// An operator command: `open`, `close` or `reset` (circuit breakers), with a reason.
    Command {
        key: String,
        command: String,
        reason: String,
    },
    /// Time passed: deadlines may have expired (an open circuit's wait, a backoff).
    Tick,
    /// A caller asks permission to send work to an agent (circuit breakers admit or reject).
    Permit { agent_id: String },
}

/// A strategy's reaction to a signal, for one key.
#[derive(Debug, Clone, PartialEq)]
pub struct Reaction<E> {
    pub key: String,
    pub reason: String,
    pub events: Vec<E>,
    pub actions: Vec<Action>,
    /// For [`Signal::Permit`]: whether the call is admitted.
    pub permitted: Option<bool>,
}

impl<E> Reaction<E> {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Reaction {
            key: key.into(),
            reason: reason.into(),
            events: Vec::new(),
            actions: Vec::new(),
            permitted: None,
        }
    }
    pub fn event(mut self, e: E) -> Self {
        self.events.push(e);
        self
    }
    pub fn action(mut self, a: Action) -> Self {
        self.actions.push(a);
        self
    }
    pub fn permit(mut self, yes: bool) -> Self {
        self.permitted = Some(yes);
        self
    }
}

/// A healing strategy. See the module documentation for the contract and an example.
pub trait Strategy: Send + Sync + 'static {
    /// The state kept per key (per agent, task, resource...). `Default` is the state before
    /// any event.
    type State: Default + Clone + Debug + PartialEq + Serialize + DeserializeOwned + Send + Sync;
    /// Facts about the state. Serialised as a JSON object; an internally tagged enum
    /// (`#[serde(tag = "type")]`) makes its tag the stored event type.
    type Event: Clone + Debug + PartialEq + Serialize + DeserializeOwned + Send + Sync;

    /// Unique within a healer; names the strategy in the log and in its state streams.
    fn name(&self) -> &str;

    /// Checks the strategy's settings: a healer refuses to open with a strategy whose
    /// settings fail, with this error (one line naming the setting). Default: nothing to
    /// check.
    fn validate(&self) -> crate::error::Result<()> {
        Ok(())
    }

    /// Whether this strategy handles the failure at all.
    fn can_heal(&self, failure: &Failure) -> bool;

    /// Which state a failure belongs to. Default: its agent, or `fleet` for agent-less ones.
    fn key(&self, failure: &Failure) -> String {
        failure
            .agent_id
            .clone()
            .unwrap_or_else(|| "fleet".to_owned())
    }

    /// Decides about a failure. Pure: the same state, failure and `now` give the same decision.
    fn decide(
        &self,
        state: &Self::State,
        failure: &Failure,
        now: DateTime<Utc>,
    ) -> Decision<Self::Event>;

    /// Facts to record once the decision's actions have run (`success` is true when all of
    /// them succeeded), e.g. a backoff that grows only when a restart really failed.
    fn on_result(
        &self,
        _state: &Self::State,
        _failure: &Failure,
        _success: bool,
        _now: DateTime<Utc>,
    ) -> Vec<Self::Event> {
        Vec::new()
    }

    /// The keys a signal concerns; the healer calls [`Strategy::on_signal`] once per key.
    /// `known` lists the keys that have state. Default: the agent of an agent signal, the key
    /// of a command, the resource type of a usage report, every known key for a tick.
    fn signal_keys(&self, signal: &Signal, known: &[String]) -> Vec<String> {
        match signal {
            Signal::AgentSucceeded { agent_id, .. } | Signal::Permit { agent_id } => {
                vec![agent_id.clone()]
            }
            Signal::Command { key, .. } => vec![key.clone()],
            Signal::ResourceUsage { resource_type, .. } => vec![resource_type.clone()],
            Signal::Tick => known.to_vec(),
        }
    }

    /// Reacts to a signal for one key. Pure. Default: nothing.
    fn on_signal(
        &self,
        _state: &Self::State,
        key: &str,
        _signal: &Signal,
        _now: DateTime<Utc>,
    ) -> Option<Reaction<Self::Event>> {
        let _ = key;
        None
    }

    /// What this strategy would do *before* a predicted failure happens: a preventive action
    /// (restart an agent predicted to go down, step degradation down before a predicted
    /// exhaustion). Pure, like [`Strategy::decide`]: the same state, prediction and `now` give
    /// the same answer. [`Verdict::Act`] offers the decision's actions (and its state events,
    /// appended when the prevention is approved); any other verdict offers nothing, with its
    /// reason. Called with the state of [`Strategy::key`] of the prediction's
    /// [`Prediction::as_failure`]. Default: nothing offered.
    ///
    /// [`Prediction::as_failure`]: crate::analytics::Prediction::as_failure
    fn prevent(
        &self,
        _state: &Self::State,
        prediction: &crate::analytics::Prediction,
        _now: DateTime<Utc>,
    ) -> Decision<Self::Event> {
        Decision::decline(format!(
            "{} offers no prevention for {}",
            self.name(),
            prediction.failure_type
        ))
    }

    /// Folds one event into the state. Pure and infallible: it holds no logic beyond
    /// recording the fact.
    fn apply(&self, state: &mut Self::State, event: &Self::Event);

    /// When the fact an event records happened, if not at the `now` of the decision or
    /// reaction that produced it: a transition that a deadline made effective before anything
    /// recorded it (an open circuit turns half-open at its deadline, whenever that is
    /// noticed). The healer stores it as the event's `occurred_at`; an instant after `now` is
    /// taken as `now`. Default: `None`.
    fn occurred_at(&self, _event: &Self::Event) -> Option<DateTime<Utc>> {
        None
    }

    /// The next instant at which time alone changes this state, if any: a tick at or after
    /// it reacts (an open circuit's deadline, a half-open period's longest wait, a backoff
    /// reset after sustained health). Backtests tick each state at that instant, so that
    /// timed transitions happen between inputs when they are due. Pure. Default: none (the
    /// strategy does not react to ticks).
    fn wakes_at(&self, _state: &Self::State) -> Option<DateTime<Utc>> {
        None
    }

    /// The stored event type of an event. Default: the `type` tag of its JSON form.
    fn event_type(&self, event: &Self::Event) -> String {
        serde_json::to_value(event)
            .ok()
            .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| "strategy_state_changed".to_owned())
    }

    /// A summary of the state for people and for `--format json` (default: the state itself,
    /// evaluated at `now` where a strategy has time-dependent views).
    fn describe(&self, state: &Self::State, _now: DateTime<Utc>) -> Value {
        serde_json::to_value(state).unwrap_or(Value::Null)
    }

    /// Whether this state takes its agent out of rotation (an open circuit): counted against
    /// the healer's limit on disabled agents.
    fn disables_agent(&self, _state: &Self::State, _now: DateTime<Utc>) -> bool {
        false
    }

    /// The agent a state key stands for, if it stands for one (the fleet size the healer
    /// counts, without a coordinator, is the number of such agents). Default: none.
    fn agent_of_key<'k>(&self, _key: &'k str) -> Option<&'k str> {
        None
    }

    /// Whether a state is at rest at `now`: it decides and reacts to signals as the default
    /// state does, now and later (a closed circuit with nothing counted, a task whose retries
    /// were forgotten). A state at rest leaves the healer's memory and needs no snapshot; it
    /// is folded again from its stream when a decision needs it. Default: equal to the
    /// default state.
    fn at_rest(&self, state: &Self::State, _now: DateTime<Utc>) -> bool {
        *state == Self::State::default()
    }
}

/// State of any strategy, behind the type-erased interface the healer uses.
pub(crate) type AnyState = Box<dyn Any + Send + Sync>;

/// A decision with its events already serialised.
pub(crate) struct ErasedDecision {
    pub verdict: Verdict,
    pub reason: String,
    pub details: Map<String, Value>,
    pub events: Vec<(String, Value)>,
    pub actions: Vec<Action>,
}

pub(crate) struct ErasedReaction {
    pub key: String,
    pub reason: String,
    pub events: Vec<(String, Value)>,
    pub actions: Vec<Action>,
    pub permitted: Option<bool>,
}

/// The object-safe face of [`Strategy`], with state and events as `Any`/JSON.
pub(crate) trait ErasedStrategy: Send + Sync {
    fn name(&self) -> &str;
    fn validate(&self) -> crate::error::Result<()>;
    fn can_heal(&self, failure: &Failure) -> bool;
    fn key(&self, failure: &Failure) -> String;
    fn new_state(&self) -> AnyState;
    fn clone_state(&self, state: &AnyState) -> AnyState;
    fn decide(&self, state: &AnyState, failure: &Failure, now: DateTime<Utc>) -> ErasedDecision;
    fn prevent(
        &self,
        state: &AnyState,
        prediction: &crate::analytics::Prediction,
        now: DateTime<Utc>,
    ) -> ErasedDecision;
    fn on_result(
        &self,
        state: &AnyState,
        failure: &Failure,
        success: bool,
        now: DateTime<Utc>,
    ) -> Vec<(String, Value)>;
    fn signal_keys(&self, signal: &Signal, known: &[String]) -> Vec<String>;
    fn on_signal(
        &self,
        state: &AnyState,
        key: &str,
        signal: &Signal,
        now: DateTime<Utc>,
    ) -> Option<ErasedReaction>;
    /// [`Strategy::occurred_at`] of an event in its stored form.
    fn occurred_at(&self, payload: &Value) -> Option<DateTime<Utc>>;
    /// Folds a stored event; an event that does not decode is skipped (and reported).
    fn apply_json(&self, state: &mut AnyState, payload: &Value) -> Result<(), String>;
    fn snapshot(&self, state: &AnyState) -> Value;
    fn restore(&self, snapshot: &Value) -> Option<AnyState>;
    fn describe(&self, state: &AnyState, now: DateTime<Utc>) -> Value;
    fn disables_agent(&self, state: &AnyState, now: DateTime<Utc>) -> bool;
    fn agent_of_key<'k>(&self, key: &'k str) -> Option<&'k str>;
    fn at_rest(&self, state: &AnyState, now: DateTime<Utc>) -> bool;
    fn wakes_at(&self, state: &AnyState) -> Option<DateTime<Utc>>;
}

pub(crate) struct Erased<S: Strategy>(pub S);

impl<S: Strategy> Erased<S> {
    fn typed<'a>(&self, state: &'a AnyState) -> std::borrow::Cow<'a, S::State> {
        match state.downcast_ref::<S::State>() {
            Some(s) => std::borrow::Cow::Borrowed(s),
            // Unreachable by construction (states are created by the same strategy); a fresh
            // state is the safe answer rather than a panic.
            None => std::borrow::Cow::Owned(S::State::default()),
        }
    }

    fn events(&self, events: Vec<S::Event>) -> Vec<(String, Value)> {
        events
            .into_iter()
            .map(|e| {
                let t = self.0.event_type(&e);
                let v = serde_json::to_value(&e).unwrap_or(Value::Null);
                (t, v)
            })
            .collect()
    }
}

impl<S: Strategy> ErasedStrategy for Erased<S> {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn validate(&self) -> crate::error::Result<()> {
        self.0.validate()
    }
    fn can_heal(&self, failure: &Failure) -> bool {
        self.0.can_heal(failure)
    }
    fn key(&self, failure: &Failure) -> String {
        self.0.key(failure)
    }
    fn new_state(&self) -> AnyState {
        Box::new(S::State::default())
    }
    fn clone_state(&self, state: &AnyState) -> AnyState {
        Box::new(self.typed(state).into_owned())
    }
    fn decide(&self, state: &AnyState, failure: &Failure, now: DateTime<Utc>) -> ErasedDecision {
        let d = self.0.decide(&self.typed(state), failure, now);
        ErasedDecision {
            verdict: d.verdict,
            reason: d.reason,
            details: d.details,
            events: self.events(d.events),
            actions: d.actions,
        }
    }
    fn prevent(
        &self,
        state: &AnyState,
        prediction: &crate::analytics::Prediction,
        now: DateTime<Utc>,
    ) -> ErasedDecision {
        let d = self.0.prevent(&self.typed(state), prediction, now);
        ErasedDecision {
            verdict: d.verdict,
            reason: d.reason,
            details: d.details,
            events: self.events(d.events),
            actions: d.actions,
        }
    }
    fn on_result(
        &self,
        state: &AnyState,
        failure: &Failure,
        success: bool,
        now: DateTime<Utc>,
    ) -> Vec<(String, Value)> {
        self.events(self.0.on_result(&self.typed(state), failure, success, now))
    }
    fn signal_keys(&self, signal: &Signal, known: &[String]) -> Vec<String> {
        self.0.signal_keys(signal, known)
    }
    fn on_signal(
        &self,
        state: &AnyState,
        key: &str,
        signal: &Signal,
        now: DateTime<Utc>,
    ) -> Option<ErasedReaction> {
        let r = self.0.on_signal(&self.typed(state), key, signal, now)?;
        Some(ErasedReaction {
            key: r.key,
            reason: r.reason,
            events: self.events(r.events),
            actions: r.actions,
            permitted: r.permitted,
        })
    }
    fn occurred_at(&self, payload: &Value) -> Option<DateTime<Utc>> {
        let event = S::Event::deserialize(payload).ok()?;
        self.0.occurred_at(&event)
    }
    fn apply_json(&self, state: &mut AnyState, payload: &Value) -> Result<(), String> {
        let event: S::Event = S::Event::deserialize(payload).map_err(|e| e.to_string())?;
        match state.downcast_mut::<S::State>() {
            Some(s) => self.0.apply(s, &event),
            None => return Err("state of another strategy".into()),
        }
        Ok(())
    }
    fn snapshot(&self, state: &AnyState) -> Value {
        serde_json::to_value(self.typed(state).as_ref()).unwrap_or(Value::Null)
    }
    fn restore(&self, snapshot: &Value) -> Option<AnyState> {
        let s: S::State = S::State::deserialize(snapshot).ok()?;
        Some(Box::new(s))
    }
    fn describe(&self, state: &AnyState, now: DateTime<Utc>) -> Value {
        self.0.describe(&self.typed(state), now)
    }
    fn disables_agent(&self, state: &AnyState, now: DateTime<Utc>) -> bool {
        self.0.disables_agent(&self.typed(state), now)
    }
    fn agent_of_key<'k>(&self, key: &'k str) -> Option<&'k str> {
        self.0.agent_of_key(key)
    }
    fn at_rest(&self, state: &AnyState, now: DateTime<Utc>) -> bool {
        self.0.at_rest(&self.typed(state), now)
    }
    fn wakes_at(&self, state: &AnyState) -> Option<DateTime<Utc>> {
        self.0.wakes_at(&self.typed(state))
    }
}

use serde::Deserialize as _;
