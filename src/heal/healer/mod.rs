//! The healer: the one place that loads, folds, decides, acts and appends.
//!
//! For a failure it: records the failure; picks the route registered for its type (one
//! strategy, or a composite chain); for each strategy, brings that strategy's state up to date
//! (catch-up from the log, so other processes' decisions count), asks for a decision, checks
//! the healer's own limits, and appends the decision together with the strategy's state events
//! in one atomic append that states the expected stream version (a conflict means another
//! process decided first: catch up and decide again); then carries out the actions through the
//! coordinator, records each result and the outcome, and feeds the outcome back to the
//! strategy.
//!
//! An outcome that succeeded *remediates* the failure (`failure_resolved`). Its *recovery*
//! (`failure_recovered`: the agent or task works again) is another fact, recorded once per
//! failure: with a success signal for the failure's task or agent
//! ([`Healer::record_success`]), with a healthy status the coordinator reports right after a
//! remediation, or when the caller confirms it ([`Healer::record_recovered`]).
//!
//! Work on different keys (agents, tasks, resources) runs concurrently; only decisions on the
//! same strategy state are serialised, by a lock per state stream.
//!
//! The decisions themselves are the [`Engine`]'s (pure: routes, strategies, mode, limits);
//! the healer keeps what is not pure: the store, the clock, the coordinator, the states in
//! memory and their locks. Its parts:
//!
//! - `states`: states in memory: restore, catch-up, loads, folds, queued appends.
//! - `heal`: a failure's phases (decide, append) and the answer to a retried heal.
//! - `act`: carrying out an acting decision through the coordinator.
//! - `outcomes`: outcomes, the healer's own and the caller's.
//! - `limits`: the counts behind the healer's limits, read from the log.
//! - `signals`: success, usage, commands, permits and ticks.
//! - `recovery`: recoveries (signals, confirmations).
//! - `snapshots`: views, snapshots, checkpoints, archives.

mod act;
mod heal;
mod limits;
mod outcomes;
mod prevent;
mod recovery;
mod signals;
mod snapshots;
mod states;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use super::coordinator::Coordinator;
use super::engine::facts::micros;
use super::engine::routes::Route;
use super::strategy::{AnyState, Erased, ErasedStrategy, Strategy};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::store::Store;

pub use super::engine::{
    Attempt, Composite, Engine, FLEET_LIMIT_STREAM, HealReport, HealerOptions, Limits, Mode, Next,
    ReactionReport, STRATEGY_STREAM_PREFIX, SignalReport, agent_limit_stream, strategy_stream,
};
pub use outcomes::OutcomeReport;
pub use prevent::{ApprovalReport, ProposalReport};
pub use recovery::RecoveryReport;
use states::{KeyLocks, States};

#[derive(Default)]
pub struct HealerBuilder {
    routes: HashMap<String, Route>,
    options: HealerOptions,
    coordinator: Option<Arc<dyn Coordinator>>,
    prevention: crate::heal::prevention::PreventionPolicy,
}

impl HealerBuilder {
    pub fn new() -> Self {
        HealerBuilder::default()
    }

    /// Routes failure types to one strategy (the last registration for a type wins). The same
    /// strategy name shares one state whatever the type.
    pub fn register<S: Strategy>(mut self, failure_types: &[&str], strategy: S) -> Self {
        let s: Arc<dyn ErasedStrategy> = Arc::new(Erased(strategy));
        for t in failure_types {
            self.routes.insert(
                (*t).to_owned(),
                Route {
                    members: vec![s.clone()],
                    composite: false,
                },
            );
        }
        self
    }

    /// Routes failure types to a composite chain.
    pub fn register_chain(mut self, failure_types: &[&str], chain: Composite) -> Self {
        let members: Vec<_> = chain.members.into_iter().map(|(_, s)| s).collect();
        for t in failure_types {
            self.routes.insert(
                (*t).to_owned(),
                Route {
                    members: members.clone(),
                    composite: true,
                },
            );
        }
        self
    }

    pub fn options(mut self, options: HealerOptions) -> Self {
        self.options = options;
        self
    }

    /// How predictions become preventions (default: proposals above 0.6, a 10 % holdout, a
    /// person approves).
    pub fn prevention(mut self, policy: crate::heal::prevention::PreventionPolicy) -> Self {
        self.prevention = policy;
        self
    }

    pub fn coordinator(mut self, coordinator: Arc<dyn Coordinator>) -> Self {
        self.coordinator = Some(coordinator);
        self
    }

    /// The failure types with a route, sorted.
    pub fn routed_types(&self) -> Vec<String> {
        let mut v: Vec<String> = self.routes.keys().cloned().collect();
        v.sort();
        v
    }

    /// The decision engine these routes and settings make (checked as [`Self::validate`]
    /// checks them): what a backtest replays history through. It acts, as a healer with a
    /// coordinator does, unless told otherwise ([`Engine::with_acting`]).
    pub fn engine(&self) -> Result<Engine> {
        self.validate()?;
        let mut engine = Engine::new(
            self.routes.clone(),
            self.options,
            self.coordinator.is_some(),
        );
        engine.prevention = self.prevention.clone();
        Ok(engine)
    }

    fn into_healer(self, store: Store) -> Healer {
        let acts = self.coordinator.is_some();
        Healer {
            clock: store.options().clock.clone(),
            store,
            engine: {
                let mut e = Engine::new(self.routes, self.options, acts);
                e.prevention = self.prevention;
                e
            },
            coordinator: self.coordinator,
            states: States::default(),
            locks: Mutex::new(KeyLocks::default()),
        }
    }

    /// Restores every strategy's state from snapshots and the log, and returns the healer.
    pub async fn open(self, store: Store) -> Result<Healer> {
        self.validate()?;
        let healer = self.into_healer(store);
        healer.restore().await?;
        Ok(healer)
    }

    /// Opens the healer without restoring anything: each strategy state is loaded when first
    /// needed (its snapshot and its stream's later events), and the listings (`tick`,
    /// [`Healer::states`]) restore what they list. For short-lived processes that touch a few
    /// states. Its checkpoints write the snapshots of the states it changed but move no
    /// checkpoint position (it does not know every state).
    pub async fn open_lazy(self, store: Store) -> Result<Healer> {
        self.validate()?;
        let head = store.head_position().await?;
        let healer = self.into_healer(store);
        *healer.states.cursor.lock().await = head;
        Ok(healer)
    }

    /// Checks the settings before anything is read or written: the limits, every
    /// strategy's own settings, and that no route lists a strategy twice (it would decide
    /// twice on one state, at one version).
    pub fn validate(&self) -> Result<()> {
        self.options.limits.validate()?;
        self.prevention.validate()?;
        let mut types: Vec<&String> = self.routes.keys().collect();
        types.sort();
        for t in types {
            let members = &self.routes[t].members;
            for (i, m) in members.iter().enumerate() {
                if members[..i].iter().any(|o| o.name() == m.name()) {
                    return Err(Error::InvalidInput(format!(
                        "invalid configuration: the route of {t} lists {} twice: a strategy \
                         decides once per failure",
                        m.name()
                    )));
                }
            }
        }
        let mut names: Vec<_> = self.strategies().into_iter().collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, s) in names {
            s.validate()?;
        }
        Ok(())
    }

    fn strategies(&self) -> HashMap<String, Arc<dyn ErasedStrategy>> {
        let mut strategies: HashMap<String, Arc<dyn ErasedStrategy>> = HashMap::new();
        for route in self.routes.values() {
            for m in &route.members {
                strategies
                    .entry(m.name().to_owned())
                    .or_insert_with(|| m.clone());
            }
        }
        strategies
    }
}

/// One strategy state, for listings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateView {
    pub strategy: String,
    pub key: String,
    pub version: u64,
    pub state: Value,
}

/// The healer. See the module documentation.
pub struct Healer {
    store: Store,
    clock: Arc<dyn Clock>,
    /// The routes, strategies, mode and limits: every decision is the engine's.
    engine: Engine,
    coordinator: Option<Arc<dyn Coordinator>>,
    states: States,
    locks: Mutex<KeyLocks>,
}

/// How often a decision is retried after losing a race to another process.
pub(super) const MAX_CONFLICT_RETRIES: usize = 16;

/// How often one decision is taken again because a decision it was built on was not stored.
pub(super) const MAX_DEPENDENCY_RETRIES: usize = 1024;

impl Healer {
    pub fn builder() -> HealerBuilder {
        HealerBuilder::new()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn options(&self) -> &HealerOptions {
        &self.engine.options
    }

    /// The decision engine the healer decides with.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The instant the healer treats as now.
    ///
    /// Truncated to the microsecond, the precision events keep: a state folded in memory must
    /// equal the same state folded from the log.
    pub fn now(&self) -> DateTime<Utc> {
        micros(self.clock.now())
    }

    /// The route's name for a failure type, if one is registered.
    pub fn route_name(&self, failure_type: &str) -> Option<String> {
        self.engine.route_name(failure_type)
    }

    /// The number of strategy states in memory and of per-stream locks (for tests and
    /// benchmarks: both stay bounded by the states not at rest and the heals in flight).
    pub fn memory_counts(&self) -> (usize, usize) {
        let states = self.lock_map().len();
        let locks = self
            .locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .len();
        (states, locks)
    }

    /// Every circuit breaker's state (only `agent`'s, when given), each with its `agent_id`:
    /// the rows of `healstore circuits`, and of the HTTP API's `GET /v1/circuits`.
    pub async fn circuits(&self, agent: Option<&str>) -> Result<Vec<Value>> {
        Ok(self
            .states(Some("CircuitBreaker"))
            .await?
            .into_iter()
            .filter(|s| agent.is_none_or(|a| a == s.key))
            .map(|s| {
                let mut v = s.state;
                if let Some(o) = v.as_object_mut() {
                    o.entry("agent_id").or_insert(json!(s.key));
                }
                v
            })
            .collect())
    }

    /// Every state of `strategy` in memory, caught up with the log as [`Healer::states`] is,
    /// given to `visit` as it is held (neither copied nor described): a cheap view for
    /// metrics. The states' lock is held meanwhile: keep `visit` short.
    pub(crate) async fn visit_states(
        &self,
        strategy: &str,
        mut visit: impl FnMut(&str, &AnyState),
    ) -> Result<()> {
        self.ensure_complete().await?;
        self.catch_up().await?;
        self.reload_stale().await?;
        let map = self.lock_map();
        for e in map.values().filter(|e| e.strategy == strategy) {
            visit(&e.key, &e.state);
        }
        Ok(())
    }

    /// Every state of a strategy (all strategies when `None`) not at rest, caught up with the
    /// log.
    pub async fn states(&self, strategy: Option<&str>) -> Result<Vec<StateView>> {
        self.ensure_complete().await?;
        self.catch_up().await?;
        self.reload_stale().await?;
        let now = self.now();
        let map = self.lock_map();
        let mut out: Vec<StateView> = map
            .values()
            .filter(|e| strategy.is_none_or(|s| s == e.strategy))
            .filter_map(|e| {
                let s = self.engine.strategy(&e.strategy)?;
                if s.at_rest(&e.state, now) {
                    return None;
                }
                Some(StateView {
                    strategy: e.strategy.clone(),
                    key: e.key.clone(),
                    version: e.version,
                    state: s.describe(&e.state, now),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.strategy, &a.key).cmp(&(&b.strategy, &b.key)));
        Ok(out)
    }

    /// Writes a checkpoint and closes the store.
    pub async fn close(self) -> Result<()> {
        self.checkpoint().await?;
        self.store.close().await
    }
}
