//! The decision engine: the pure part of healing, shared by the live [`Healer`] and by
//! backtests, so that a replay of recorded history cannot drift from what the healer does.
//!
//! It holds the routes (failure type to strategies), the strategies, the mode and the
//! healer's limits, and nothing else: no store, no clock, no coordinator. Its inputs are a
//! failure (or a signal, or an outcome), the state it is decided on with that state's
//! version, and `now`; its outputs are decisions (the attempts the healer reports), the state
//! events and facts to append, and the actions to carry out. Where a decision needs a count
//! that only the log knows (the healer's limits), the caller reads it and hands the engine
//! the answer ([`limits`]).
//!
//! - [`settings`]: [`Mode`], [`Limits`], [`HealerOptions`].
//! - [`routes`]: [`Composite`] chains and the routes of failure types.
//! - [`decide`]: one strategy's decision on a failure, labelled by mode and limits.
//! - [`signal`]: reactions to signals, and what of them is recorded.
//! - [`limits`]: the healer's limits as arithmetic on counts read elsewhere.
//! - [`facts`]: the events a decision appends (detection, attempts, outcomes, recoveries).
//! - [`report`]: [`Attempt`], [`HealReport`], [`SignalReport`].
//!
//! [`Healer`]: crate::heal::Healer

pub mod decide;
pub(crate) mod facts;
pub mod limits;
pub mod report;
pub mod routes;
pub mod settings;
pub mod signal;

use std::collections::HashMap;
use std::sync::Arc;

pub use decide::Next;
pub use report::{Attempt, HealReport, ReactionReport, SignalReport};
pub use routes::Composite;
pub use settings::{HealerOptions, Limits, Mode};

use crate::heal::strategy::ErasedStrategy;
use routes::Route;

/// Prefix of every strategy state stream.
pub const STRATEGY_STREAM_PREFIX: &str = "strategy-";

/// The stream of one strategy state.
pub fn strategy_stream(strategy: &str, key: &str) -> String {
    format!("{STRATEGY_STREAM_PREFIX}{strategy}-{key}")
}

/// The stream of the facts counted against the fleet-wide limit (agents disabled at once).
pub const FLEET_LIMIT_STREAM: &str = "limits-fleet";

/// The stream of the facts counted against one agent's hourly action limit.
pub fn agent_limit_stream(agent: &str) -> String {
    format!("limits-agent-{agent}")
}

/// The routes, the strategies, the mode and the limits: everything a decision depends on
/// besides the state, the input and `now`. Built by [`crate::heal::HealerBuilder::engine`]
/// (or [`crate::config::Config::builder`]).
#[derive(Clone)]
pub struct Engine {
    pub(crate) routes: HashMap<String, Route>,
    pub(crate) strategies: HashMap<String, Arc<dyn ErasedStrategy>>,
    pub(crate) options: HealerOptions,
    /// Whether acting decisions are carried out by the healer (it has a coordinator):
    /// otherwise they are handed to the caller, `delegated`.
    pub(crate) acts: bool,
    /// How predictions become preventions (see [`crate::heal::prevention`]).
    pub(crate) prevention: crate::heal::prevention::PreventionPolicy,
    /// Whether a decision's details hold the state it was decided on (`state_before`): for
    /// the audit; a backtest, which compares verdicts and reasons, leaves it out.
    pub(crate) describes_states: bool,
}

impl Engine {
    pub(crate) fn new(
        routes: HashMap<String, Route>,
        options: HealerOptions,
        acts: bool,
    ) -> Engine {
        let mut strategies: HashMap<String, Arc<dyn ErasedStrategy>> = HashMap::new();
        for route in routes.values() {
            for m in &route.members {
                strategies
                    .entry(m.name().to_owned())
                    .or_insert_with(|| m.clone());
            }
        }
        Engine {
            routes,
            strategies,
            options,
            acts,
            prevention: Default::default(),
            describes_states: true,
        }
    }

    /// The prevention policy.
    pub fn prevention(&self) -> &crate::heal::prevention::PreventionPolicy {
        &self.prevention
    }

    /// The strategies asked for a prevention of a predicted failure, in order: the
    /// prediction's recommended strategy (when this engine has it), then the failure type's
    /// route.
    pub(crate) fn preventers(
        &self,
        recommended: Option<&str>,
        failure_type: &str,
    ) -> Vec<Arc<dyn ErasedStrategy>> {
        let mut out: Vec<Arc<dyn ErasedStrategy>> = Vec::new();
        if let Some(s) = recommended.and_then(|r| self.strategies.get(r)) {
            out.push(s.clone());
        }
        for m in self.members(failure_type) {
            if !out.iter().any(|o| o.name() == m.name()) {
                out.push(m);
            }
        }
        out
    }

    pub fn options(&self) -> &HealerOptions {
        &self.options
    }

    /// Whether acting decisions are carried out (`act`) rather than handed to the caller
    /// (`delegated`).
    pub fn acts(&self) -> bool {
        self.acts
    }

    /// The same engine, without the state in each decision's details (`state_before`): the
    /// verdicts, reasons, events and actions are the same.
    pub(crate) fn without_state_descriptions(mut self) -> Engine {
        self.describes_states = false;
        self
    }

    /// The same engine, acting or delegating.
    pub fn with_acting(mut self, acts: bool) -> Engine {
        self.acts = acts;
        self
    }

    /// The route's name for a failure type, if one is registered.
    pub fn route_name(&self, failure_type: &str) -> Option<String> {
        self.routes.get(failure_type).map(Route::name)
    }

    /// Whether the route of a failure type is a composite chain.
    pub fn is_composite(&self, failure_type: &str) -> bool {
        self.routes.get(failure_type).is_some_and(|r| r.composite)
    }

    /// The members of a failure type's route, in order (none when it has no route).
    pub(crate) fn members(&self, failure_type: &str) -> Vec<Arc<dyn ErasedStrategy>> {
        self.routes
            .get(failure_type)
            .map(|r| r.members.clone())
            .unwrap_or_default()
    }

    /// A strategy by name.
    pub(crate) fn strategy(&self, name: &str) -> Option<&Arc<dyn ErasedStrategy>> {
        self.strategies.get(name)
    }

    /// The strategies' names, sorted.
    pub fn strategy_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.strategies.keys().cloned().collect();
        v.sort();
        v
    }
}
