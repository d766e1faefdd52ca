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

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::coordinator::Coordinator;
use super::model::{Action, Failure, HealingResult, failure_stream};
use super::strategies::check::Section;
use super::strategy::{AnyState, Erased, ErasedStrategy, Signal, Strategy, Verdict};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::event::{Appended, ExpectedVersion, NewEvent, RecordedEvent};
use crate::events::{
    ActionExecuted, DisabledAgent, FailureDetected, FailureRecovered, FailureResolved, HealEvent,
    HealingAttempted, HealingCompleted, LimitCounted, RecoveryHow,
};
use crate::store::{Checkpoint, EventFilter, Snapshot, Store, StreamAppend};

/// How the healer acts on its decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Decide, record and act (through the coordinator when there is one; without one, the
    /// actions are handed back to the caller as `delegated`, and the caller reports the
    /// outcome with [`Healer::record_outcome`]).
    #[default]
    Auto,
    /// Auto-heal off: decisions are recorded as suggestions; nothing is acted on and no
    /// strategy state changes.
    SuggestOnly,
    /// Decide and record as if acting, state included, but do not act.
    Shadow,
}

/// Limits on the healer itself. Beyond them a decision is recorded as `withheld`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// At most this many acting decisions per agent in any hour.
    pub max_actions_per_agent_per_hour: Option<u32>,
    /// At most this share (0..=1) of the fleet disabled (isolated by open circuits) at once.
    pub max_disabled_fraction: Option<f64>,
    /// The fleet's size, for the share above. Without it the coordinator's topology is asked,
    /// and without a coordinator the agents the healer has state for are counted.
    pub fleet_size: Option<u32>,
}

impl Limits {
    /// Checks the limits (see [`crate::config`]): one line naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        let s = Section("limits");
        if let Some(v) = self.max_actions_per_agent_per_hour {
            s.at_least("max_actions_per_agent_per_hour", u64::from(v), 1)?;
        }
        if let Some(v) = self.max_disabled_fraction {
            s.number_within("max_disabled_fraction", v, 0.0, 1.0)?;
        }
        if let Some(v) = self.fleet_size {
            s.at_least("fleet_size", u64::from(v), 1)?;
        }
        Ok(())
    }
}

/// Settings of a [`Healer`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HealerOptions {
    pub mode: Mode,
    pub limits: Limits,
}

/// A priority chain of strategies: tried in priority order (lowest number first) until one
/// succeeds; every attempt is recorded. The strategy used is reported as `Composite[Inner]`.
#[derive(Clone, Default)]
pub struct Composite {
    members: Vec<(i32, Arc<dyn ErasedStrategy>)>,
}

impl Composite {
    pub fn new() -> Self {
        Composite::default()
    }

    /// Adds a member with a priority (lower runs first).
    pub fn with<S: Strategy>(mut self, priority: i32, strategy: S) -> Self {
        self.members.push((priority, Arc::new(Erased(strategy))));
        self.members.sort_by_key(|(p, _)| *p);
        self
    }
}

/// What a failure type is routed to.
#[derive(Clone)]
struct Route {
    members: Vec<Arc<dyn ErasedStrategy>>,
    composite: bool,
}

impl Route {
    fn name(&self) -> String {
        if self.composite {
            let names: Vec<&str> = self.members.iter().map(|m| m.name()).collect();
            format!("Composite({})", names.join(","))
        } else {
            self.members
                .first()
                .map(|m| m.name().to_owned())
                .unwrap_or_default()
        }
    }
}

/// Collects routes and settings for a [`Healer`].
#[derive(Default)]
pub struct HealerBuilder {
    routes: HashMap<String, Route>,
    options: HealerOptions,
    coordinator: Option<Arc<dyn Coordinator>>,
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

    /// Restores every strategy's state from snapshots and the log, and returns the healer.
    pub async fn open(self, store: Store) -> Result<Healer> {
        self.validate()?;
        let strategies = self.strategies();
        let healer = Healer {
            clock: store.options().clock.clone(),
            store,
            routes: self.routes,
            strategies,
            options: self.options,
            coordinator: self.coordinator,
            states: States::default(),
            locks: Mutex::new(KeyLocks::default()),
        };
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
        let strategies = self.strategies();
        let head = store.head_position().await?;
        let healer = Healer {
            clock: store.options().clock.clone(),
            store,
            routes: self.routes,
            strategies,
            options: self.options,
            coordinator: self.coordinator,
            states: States::default(),
            locks: Mutex::new(KeyLocks::default()),
        };
        *healer.states.cursor.lock().await = head;
        Ok(healer)
    }

    /// Checks the settings before anything is read or written: the limits, every
    /// strategy's own settings, and that no route lists a strategy twice (it would decide
    /// twice on one state, at one version).
    pub fn validate(&self) -> Result<()> {
        self.options.limits.validate()?;
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

/// One strategy state in memory.
struct Entry {
    strategy: String,
    key: String,
    version: u64,
    state: AnyState,
    /// Changed since the last committed checkpoint.
    dirty: bool,
    /// A snapshot of this stream may be stored (it was loaded from one, or written one).
    stored: bool,
    /// Appends (tickets) whose events this state holds already, before their commit: an
    /// append decided on this state depends on them, no snapshot is taken of it and it does
    /// not leave memory until they are answered.
    pending: Vec<u64>,
    /// It may hold events of an append (this ticket) that was not stored: loaded again before
    /// any use, and whatever was decided on it depends on that append.
    stale: Option<u64>,
}

#[derive(Default)]
struct States {
    map: Mutex<HashMap<String, Entry>>,
    /// The log position the states are caught up to with other processes' appends. Held
    /// only while catching up (decisions do not wait for it: their appends state the stream
    /// version they were taken on).
    cursor: tokio::sync::Mutex<i64>,
    /// Positions above the cursor that this healer appended itself (their strategy events are
    /// folded as they are appended).
    own: Mutex<std::collections::BTreeSet<i64>>,
    /// The map holds every state not at rest (a full restore ran): a stream missing from it
    /// is at rest. Otherwise a missing stream is loaded from its snapshot and events.
    complete: std::sync::atomic::AtomicBool,
    /// Strategies whose streams a restore folded again from the log (snapshots had gone
    /// missing): the next checkpoint counts their snapshots anew.
    recount: Mutex<Vec<String>>,
    /// Told whenever appends decided on states in memory are answered.
    settled: tokio::sync::Notify,
    /// The store's change mark read before the last completed catch-up: while the mark is
    /// the same, nothing new is in the log and a catch-up has nothing to read.
    caught_up_at: Mutex<Option<crate::store::ChangeMark>>,
}

/// The per-stream locks: an entry lives while someone holds or awaits it.
#[derive(Default)]
struct KeyLocks {
    map: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// The map's size after the last pruning: it is pruned again when it doubles.
    pruned_at: usize,
}

/// Drops the states holding events of an append whose answer will not be awaited.
struct Unsettled<'a> {
    healer: &'a Healer,
    ticket: u64,
    streams: Vec<String>,
}

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        if self.streams.is_empty() {
            return;
        }
        {
            let mut map = self.healer.lock_map();
            for s in &self.streams {
                if let Some(e) = map.get_mut(s)
                    && e.pending.contains(&self.ticket)
                {
                    e.pending.retain(|t| *t != self.ticket);
                    e.stale = Some(self.ticket);
                }
            }
        }
        self.healer.states.settled.notify_waiters();
    }
}

/// How many of this healer's own positions are remembered before a catch-up folds them away.
const OWN_POSITIONS_MAX: usize = 4096;

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

/// Locks on limit streams a heal took while deciding, kept until its actions are recorded.
#[derive(Default)]
struct LimitGuards {
    held: Vec<(String, tokio::sync::OwnedMutexGuard<()>)>,
    /// Appends whose events the states counted hold: the limit's fact depends on them.
    after: Vec<u64>,
}

impl LimitGuards {
    async fn lock(&mut self, healer: &Healer, stream: &str) {
        if self.held.iter().any(|(s, _)| s == stream) {
            return;
        }
        let guard = healer.key_lock(stream).lock_owned().await;
        self.held.push((stream.to_owned(), guard));
    }
}

/// What happened to one strategy considered for a failure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    pub strategy: String,
    /// `act`, `delegated`, `declined`, `failed`, `held`, `suggest_only`, `shadow`, `withheld`.
    pub decision: String,
    pub reason: String,
    pub details: Map<String, Value>,
    pub actions: Vec<Action>,
    /// Per action: `Ok(what was done)` or `Err(why it failed)`; empty when nothing ran.
    pub results: Vec<std::result::Result<String, String>>,
    /// Whether the attempt healed the failure (`None` while the outcome is not known yet).
    pub success: Option<bool>,
}

/// State events a phase appends: the strategy, its stream, its key, the state (and its
/// version) the decision was taken on, the events.
type Applied = (
    Arc<dyn ErasedStrategy>,
    String,
    String,
    (u64, AnyState),
    Vec<Value>,
);

/// The decisions of one phase of a heal, appended together.
struct Phase {
    attempts: Vec<Attempt>,
    /// The strategy whose decision acts, with that decision.
    acting: Option<(Arc<dyn ErasedStrategy>, super::strategy::ErasedDecision)>,
    /// How many members of the route the phase went through.
    consumed: usize,
    /// Locks on the states the phase decided on, held until its actions are recorded.
    guards: Vec<tokio::sync::OwnedMutexGuard<()>>,
}

impl Attempt {
    fn new(
        strategy: &str,
        decision: &str,
        reason: String,
        details: Map<String, Value>,
        actions: Vec<Action>,
    ) -> Self {
        Attempt {
            strategy: strategy.to_owned(),
            decision: decision.to_owned(),
            reason,
            details,
            actions,
            results: Vec::new(),
            success: None,
        }
    }
}

/// Everything the healer did about one failure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealReport {
    pub failure: Failure,
    /// The route's name (`none` when no strategy is registered for the type).
    pub route: String,
    pub attempts: Vec<Attempt>,
    pub result: HealingResult,
    /// Actions handed to the caller (no coordinator): carry them out, then report the outcome.
    pub delegated: Vec<Action>,
    /// The failure id was already recorded: nothing was done again.
    pub duplicate: bool,
    /// Microseconds from the call until the failure and the first decision were committed.
    pub decided_us: u64,
}

impl HealReport {
    /// The answer as `--format json` prints it (`record failure`, `record event`, each record
    /// of `heal`) and as the HTTP API returns it: one definition for both.
    pub fn to_json(&self) -> serde_json::Map<String, Value> {
        let v = serde_json::json!({
            "failure_id": self.failure.failure_id,
            "failure_type": self.failure.failure_type,
            "agent_id": self.failure.agent_id,
            "duplicate": self.duplicate,
            "route": self.route,
            "attempts": self.attempts,
            "delegated_actions": self.delegated,
            "result": self.result,
        });
        match v {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        }
    }
}

/// What a signal (success, command, tick, permit) changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SignalReport {
    pub reactions: Vec<ReactionReport>,
    /// For a permit request: whether the call is admitted.
    pub permitted: Option<bool>,
    /// For a success signal: the failures it recovered (ids, oldest detection first).
    pub recovered: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReactionReport {
    pub strategy: String,
    pub key: String,
    pub reason: String,
    pub events: Vec<String>,
    pub actions: Vec<Action>,
    pub results: Vec<std::result::Result<String, String>>,
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
    routes: HashMap<String, Route>,
    strategies: HashMap<String, Arc<dyn ErasedStrategy>>,
    options: HealerOptions,
    coordinator: Option<Arc<dyn Coordinator>>,
    states: States,
    locks: Mutex<KeyLocks>,
}

/// How often a decision is retried after losing a race to another process.
const MAX_CONFLICT_RETRIES: usize = 16;

/// How often one decision is taken again because a decision it was built on was not stored.
const MAX_DEPENDENCY_RETRIES: usize = 1024;

impl Healer {
    pub fn builder() -> HealerBuilder {
        HealerBuilder::new()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn options(&self) -> &HealerOptions {
        &self.options
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
        self.routes.get(failure_type).map(Route::name)
    }

    // ----- restore and catch-up -------------------------------------------------------------

    /// Restores every state not at rest: the snapshots, then the strategy events after the
    /// lowest checkpoint position (a position scan). A damaged snapshot, one older than its
    /// checkpoint says (another process wrote it), or a stream whose events do not follow on
    /// from what is known of it, is loaded on its own ([`Healer::load_stream`]). A strategy
    /// with fewer snapshots than its last checkpoint left (one went missing behind the
    /// store's back) has its streams folded again from the log: a missing snapshot costs
    /// time, never a state.
    async fn restore(&self) -> Result<()> {
        let mut start = i64::MAX;
        let mut damaged = Vec::new();
        let mut stale = Vec::new();
        for (name, strategy) in &self.strategies {
            let (position, left) = self.store.checkpoint_of(name).await?;
            let snaps = self
                .store
                .load_snapshots_for_restore(name, position)
                .await?;
            let mut from = position;
            if left.is_some_and(|n| (snaps.len() as u64) < n) {
                // Streams whose earliest events are archived cannot be folded again.
                if let Some(u) = self.store.uncovered_archived_stream().await? {
                    return Err(self.state_lost(u.describe()));
                }
                tracing::warn!(
                    strategy = %name,
                    "snapshots are missing; the strategy's streams are folded again from the log"
                );
                from = 0;
                self.states
                    .recount
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(name.clone());
            }
            start = start.min(from);
            for (snap, older) in snaps {
                let state = serde_json::from_str::<Value>(&snap.state)
                    .ok()
                    .and_then(|v| strategy.restore(&v));
                match state {
                    Some(state) => {
                        let entry = Entry {
                            strategy: name.clone(),
                            key: snap.key.clone(),
                            version: snap.stream_version,
                            state,
                            dirty: false,
                            stored: true,
                            pending: Vec::new(),
                            stale: None,
                        };
                        let mut map = self.lock_map();
                        match map.get_mut(&snap.stream_id) {
                            Some(e) if e.version >= entry.version => e.stored = true,
                            _ => {
                                map.insert(snap.stream_id.clone(), entry);
                            }
                        }
                        if older {
                            stale.push((strategy.clone(), snap.stream_id, snap.key));
                        }
                    }
                    None => {
                        tracing::warn!(stream = %snap.stream_id, "damaged snapshot; rebuilding from events");
                        damaged.push((strategy.clone(), snap.stream_id, snap.key));
                    }
                }
            }
        }
        if start == i64::MAX {
            start = 0;
        }
        for (strategy, stream, key) in damaged {
            self.load_stream(&strategy, &stream, &key).await?;
        }
        for (strategy, stream, key) in stale {
            self.refresh(&strategy, &stream, &key).await?;
        }
        // The log after `start` is read whatever the change mark says.
        *self.caught_up_at() = None;
        *self.states.cursor.lock().await = start;
        self.states
            .complete
            .store(true, std::sync::atomic::Ordering::Release);
        self.catch_up().await
    }

    /// The error for a state that cannot be rebuilt.
    fn state_lost(&self, reason: String) -> Error {
        Error::StateLost {
            path: self.store.path().to_path_buf(),
            reason: format!(
                "{reason}; nothing is decided on a state that is not known (put the snapshot \
                 back, or import the archives and the log into a new database)"
            ),
        }
    }

    fn is_complete(&self) -> bool {
        self.states
            .complete
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Makes the map hold every state not at rest (a lazily opened healer's listings).
    async fn ensure_complete(&self) -> Result<()> {
        if self.is_complete() {
            return Ok(());
        }
        // What is already loaded is exact at its version; the restore only adds to it.
        self.restore().await
    }

    /// The one way a stream's state is loaded: its snapshot (unless it does not decode), then
    /// the stream's events after the snapshot's version. Replaces the stream's entry unless
    /// that one is newer. A stream whose earliest events are archived needs a snapshot
    /// covering them: without one its state is not known, and it is an error
    /// ([`Error::StateLost`]) rather than a default. Returns the state's version and a copy
    /// of it; a state at rest of which no snapshot is stored is not kept in memory.
    async fn load_stream(
        &self,
        strategy: &Arc<dyn ErasedStrategy>,
        stream: &str,
        key: &str,
    ) -> Result<(u64, AnyState)> {
        let name = strategy.name();
        let mut entry = Entry {
            strategy: name.to_owned(),
            key: key.to_owned(),
            version: 0,
            state: strategy.new_state(),
            dirty: false,
            stored: false,
            pending: Vec::new(),
            stale: None,
        };
        let (snapshot, archived) = self.store.load_stream_base(stream).await?;
        let mut snapshot_is = "missing".to_owned();
        if let Some(snap) = snapshot {
            entry.stored = true;
            match serde_json::from_str::<Value>(&snap.state)
                .ok()
                .and_then(|v| strategy.restore(&v))
            {
                Some(state) => {
                    entry.state = state;
                    entry.version = snap.stream_version;
                    snapshot_is = format!("of version {} only", snap.stream_version);
                }
                None => {
                    tracing::warn!(stream = %stream, "damaged snapshot; rebuilding from events");
                    entry.dirty = true;
                    snapshot_is = "damaged".to_owned();
                }
            }
        }
        if entry.version < archived {
            return Err(self.state_lost(format!(
                "the state of {stream} cannot be rebuilt: its events up to version {archived} \
                 are archived and its snapshot is {snapshot_is}"
            )));
        }
        let mut events = self.store.read_stream_after(stream, entry.version);
        while let Some(e) = events.next().await {
            let e = e?;
            if e.stream_version != entry.version + 1 {
                return Err(self.state_lost(format!(
                    "the state of {stream} cannot be rebuilt: its events start at version {} \
                     after version {}",
                    e.stream_version, entry.version
                )));
            }
            if e.payload.get("strategy").and_then(Value::as_str) == Some(name)
                && let Err(err) = strategy.apply_json(&mut entry.state, &e.payload)
            {
                tracing::warn!(position = e.position, error = %err, "strategy event does not decode; skipped");
            }
            entry.version = e.stream_version;
            entry.dirty = true;
        }
        drop(events);
        let now = self.now();
        let mut map = self.lock_map();
        if let Some(current) = map.get(stream)
            && current.version >= entry.version
            && current.stale.is_none()
        {
            return Ok((current.version, strategy.clone_state(&current.state)));
        }
        let found = (entry.version, strategy.clone_state(&entry.state));
        if entry.stored || !strategy.at_rest(&entry.state, now) {
            map.insert(stream.to_owned(), entry);
        } else {
            // At rest, and no snapshot to delete: it needs no memory.
            map.remove(stream);
        }
        Ok(found)
    }

    /// Brings the states in memory up to the log's head with other processes' appends (this
    /// healer's own were folded as they were appended, and are not read again).
    ///
    /// Nothing committed since the last catch-up, by anyone, costs no query: the store's
    /// change mark (read before that catch-up asked for the head) is the same.
    async fn catch_up(&self) -> Result<()> {
        let mark = self.store.change_mark();
        if mark.is_some() && *self.caught_up_at() == mark {
            return Ok(());
        }
        let mut cursor = self.states.cursor.lock().await;
        let (head, anchor) = self.store.head_and_anchor().await?;
        if head <= *cursor {
            *self.caught_up_at() = mark;
            return Ok(());
        }
        if anchor > *cursor {
            // Another process archived events this healer had not read.
            self.resync_after_cut().await?;
        }
        // The stretches since the cursor that other processes appended (positions are dense:
        // the writer numbers them under the write lock).
        let mut foreign: Vec<(i64, i64)> = Vec::new();
        {
            let own = self.states.own.lock().unwrap_or_else(|e| e.into_inner());
            let mut from = *cursor + 1;
            for &p in own.range(*cursor + 1..=head) {
                if p > from {
                    foreign.push((from, p - 1));
                }
                from = p + 1;
            }
            if from <= head {
                foreign.push((from, head));
            }
        }
        let complete = self.is_complete();
        let mut gaps = Vec::new();
        for (from, to) in foreign {
            let filter = EventFilter {
                stream_prefix: Some(STRATEGY_STREAM_PREFIX.to_owned()),
                after_position: from - 1,
                up_to_position: Some(to),
                position_order: true,
                ..Default::default()
            };
            let mut events = self.store.read(filter);
            while let Some(e) = events.next().await {
                self.fold(&e?, complete, &mut gaps);
            }
        }
        gaps.sort();
        gaps.dedup();
        for (name, stream, key) in gaps {
            if let Some(strategy) = self.strategies.get(&name).cloned() {
                self.load_stream(&strategy, &stream, &key).await?;
            }
        }
        *cursor = head;
        self.states
            .own
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| *p > head);
        *self.caught_up_at() = mark;
        Ok(())
    }

    /// The store's change mark read before the last catch-up that completed.
    fn caught_up_at(&self) -> std::sync::MutexGuard<'_, Option<crate::store::ChangeMark>> {
        self.states
            .caught_up_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// After another process archived events this healer had not read, the states they
    /// changed are read again from what the archive keeps, the snapshots: every state in
    /// memory whose stream moved on and, when the map holds every state not at rest, every
    /// snapshot in use that is newer than memory. The cost follows the states in use.
    async fn resync_after_cut(&self) -> Result<()> {
        let known: Vec<(String, String, String, u64)> = self
            .lock_map()
            .iter()
            .map(|(stream, e)| (stream.clone(), e.strategy.clone(), e.key.clone(), e.version))
            .collect();
        for chunk in known.chunks(1024) {
            let streams: Vec<String> = chunk.iter().map(|k| k.0.clone()).collect();
            let versions = self.store.stream_versions(&streams).await?;
            for (stream, name, key, version) in chunk {
                if versions.get(stream).is_some_and(|v| v > version)
                    && let Some(strategy) = self.strategies.get(name).cloned()
                {
                    self.load_stream(&strategy, stream, key).await?;
                }
            }
        }
        if self.is_complete() {
            for (name, strategy) in &self.strategies {
                for snap in self.store.load_snapshots(name).await? {
                    let behind = self
                        .lock_map()
                        .get(&snap.stream_id)
                        .is_none_or(|e| e.version < snap.stream_version);
                    if behind {
                        self.load_stream(strategy, &snap.stream_id, &snap.key)
                            .await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies one stored strategy event, once (by stream version). A stream not in memory is
    /// started only when the map is complete (otherwise it is loaded when needed); an event
    /// that does not follow on from the state in memory marks a gap, loaded on its own.
    fn fold(&self, e: &RecordedEvent, complete: bool, gaps: &mut Vec<(String, String, String)>) {
        let Some(name) = e.payload.get("strategy").and_then(Value::as_str) else {
            return;
        };
        let Some(strategy) = self.strategies.get(name) else {
            return; // a strategy this healer does not run
        };
        let key = e
            .payload
            .get("key")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut map = self.lock_map();
        if map.get(&e.stream_id).is_some_and(|x| x.stale.is_some()) {
            return; // loaded again before its next use
        }
        let known = map.get(&e.stream_id).map(|x| x.version);
        let version = match known {
            Some(v) => v,
            None if complete => 0,
            None => return,
        };
        if e.stream_version <= version {
            return;
        }
        if e.stream_version > version + 1 {
            gaps.push((name.to_owned(), e.stream_id.clone(), key.to_owned()));
            return;
        }
        let entry = map.entry(e.stream_id.clone()).or_insert_with(|| Entry {
            strategy: name.to_owned(),
            key: key.to_owned(),
            version: 0,
            state: strategy.new_state(),
            dirty: false,
            stored: false,
            pending: Vec::new(),
            stale: None,
        });
        if let Err(err) = strategy.apply_json(&mut entry.state, &e.payload) {
            tracing::warn!(position = e.position, error = %err, "strategy event does not decode; skipped");
        }
        entry.version = e.stream_version;
        entry.dirty = true;
        let now = self.now();
        Self::rest(strategy, &mut map, &e.stream_id, now);
    }

    /// A state at rest of which no snapshot is stored leaves memory: it needs none (one that
    /// has a snapshot leaves at the next checkpoint, which deletes the snapshot).
    fn rest(
        strategy: &Arc<dyn ErasedStrategy>,
        map: &mut HashMap<String, Entry>,
        stream: &str,
        now: DateTime<Utc>,
    ) {
        if let Some(e) = map.get(stream)
            && !e.stored
            && e.pending.is_empty()
            && e.stale.is_none()
            && strategy.at_rest(&e.state, now)
        {
            map.remove(stream);
        }
    }

    /// Remembers the positions of events this healer wrote (not those of duplicates, which
    /// may be anyone's), so that catch-up does not read them again. Bounded: past
    /// [`OWN_POSITIONS_MAX`] the oldest are forgotten (a catch-up then reads them, and folds
    /// nothing twice: folds go by stream version).
    fn note_own(&self, appended: &[crate::event::Appended]) {
        let mut own = self.states.own.lock().unwrap_or_else(|e| e.into_inner());
        own.extend(appended.iter().filter(|a| !a.duplicate).map(|a| a.position));
        while own.len() > OWN_POSITIONS_MAX {
            own.pop_first();
        }
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

    fn lock_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.states.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The version and a copy of one state, loaded from its snapshot and stream when it is not
    /// in memory (a decision never takes a missing state for a fresh one).
    async fn current(
        &self,
        strategy: &Arc<dyn ErasedStrategy>,
        stream: &str,
        key: &str,
    ) -> Result<(u64, AnyState)> {
        if let Some(found) = self.cached(strategy, stream) {
            return Ok(found);
        }
        self.load_stream(strategy, stream, key).await
    }

    fn cached(&self, strategy: &Arc<dyn ErasedStrategy>, stream: &str) -> Option<(u64, AnyState)> {
        let map = self.lock_map();
        map.get(stream)
            .filter(|e| e.stale.is_none())
            .map(|e| (e.version, strategy.clone_state(&e.state)))
    }

    /// A signal's view of one state: in a complete map a missing stream is at rest, and a
    /// state at rest reacts as the default one (an append it leads to states version 0, and
    /// a conflict loads the stream); otherwise it is loaded.
    async fn current_for_signal(
        &self,
        strategy: &Arc<dyn ErasedStrategy>,
        stream: &str,
        key: &str,
    ) -> Result<(u64, AnyState)> {
        if let Some(found) = self.cached(strategy, stream) {
            return Ok(found);
        }
        if self.is_complete() && !self.lock_map().contains_key(stream) {
            return Ok((0, strategy.new_state()));
        }
        self.current(strategy, stream, key).await
    }

    /// After a conflict on `stream`: reads that stream's events after the version in memory
    /// (or loads it), whatever the other streams.
    async fn refresh(
        &self,
        strategy: &Arc<dyn ErasedStrategy>,
        stream: &str,
        key: &str,
    ) -> Result<()> {
        let known = self.lock_map().get(stream).map(|e| e.version);
        let Some(from) = known else {
            self.load_stream(strategy, stream, key).await?;
            return Ok(());
        };
        let mut events = self.store.read_stream_after(stream, from);
        let mut read = Vec::new();
        while let Some(e) = events.next().await {
            read.push(e?);
        }
        drop(events);
        let gap = self.fold_read(strategy, stream, &read);
        if gap {
            self.load_stream(strategy, stream, key).await?;
        }
        Ok(())
    }

    /// Folds a stream's events read after the version in memory; true when they do not
    /// follow on from it (or the state left memory meanwhile): the stream must be loaded.
    fn fold_read(
        &self,
        strategy: &Arc<dyn ErasedStrategy>,
        stream: &str,
        read: &[RecordedEvent],
    ) -> bool {
        let mut map = self.lock_map();
        let Some(entry) = map.get_mut(stream) else {
            return true;
        };
        {
            for e in read {
                if e.stream_version <= entry.version {
                    continue;
                }
                if e.stream_version != entry.version + 1 {
                    return true;
                }
                if e.payload.get("strategy").and_then(Value::as_str) == Some(strategy.name()) {
                    let _ = strategy.apply_json(&mut entry.state, &e.payload);
                }
                entry.version = e.stream_version;
                entry.dirty = true;
            }
        }
        false
    }

    /// Folds events this healer just appended (they are applied once, by version) onto the
    /// state in memory, or, when that state left memory meanwhile (it was at rest, and a
    /// checkpoint or a fold let it go between the decision and its append) or is behind, onto
    /// `base`: the state the decision was taken on, at the version the append stated, which
    /// its success proves current.
    fn apply_local(
        &self,
        strategy: &Arc<dyn ErasedStrategy>,
        stream: &str,
        key: &str,
        base: (u64, &AnyState),
        events: &[(u64, Value)],
    ) {
        let mut map = self.lock_map();
        if map
            .get(stream)
            .is_none_or(|e| e.version < base.0 || e.stale.is_some())
        {
            let stored = map.get(stream).is_some_and(|e| e.stored);
            map.insert(
                stream.to_owned(),
                Entry {
                    strategy: strategy.name().to_owned(),
                    key: key.to_owned(),
                    version: base.0,
                    state: strategy.clone_state(base.1),
                    dirty: true,
                    stored,
                    pending: Vec::new(),
                    stale: None,
                },
            );
        }
        let Some(entry) = map.get_mut(stream) else {
            return;
        };
        for (version, payload) in events {
            if *version == entry.version + 1 {
                let _ = strategy.apply_json(&mut entry.state, payload);
                entry.version = *version;
                entry.dirty = true;
            }
        }
        let now = self.now();
        Self::rest(strategy, &mut map, stream, now);
    }

    /// Loads again every state that holds events of an append that was not stored.
    async fn reload_stale(&self) -> Result<()> {
        let stale: Vec<(String, String, String)> = self
            .lock_map()
            .iter()
            .filter(|(_, e)| e.stale.is_some())
            .map(|(s, e)| (s.clone(), e.strategy.clone(), e.key.clone()))
            .collect();
        for (stream, name, key) in stale {
            if let Some(strategy) = self.strategies.get(&name).cloned() {
                // (no lock: the caller may hold this stream's; a load never replaces a state
                // that is not stale with an older one)
                self.wait_settled(&stream).await;
                self.load_stream(&strategy, &stream, &key).await?;
            }
        }
        Ok(())
    }

    /// The appends not yet answered whose events the state of `stream` holds.
    fn pending_of(&self, stream: &str) -> Vec<u64> {
        self.lock_map()
            .get(stream)
            .map(|e| e.pending.clone())
            .unwrap_or_default()
    }

    /// Waits until the state of `stream` holds no event whose append is unanswered (an
    /// answer that is not itself an append, such as a permit, never reads a decision that
    /// may not be stored).
    async fn wait_settled(&self, stream: &str) {
        loop {
            let settled = self.states.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if self
                .lock_map()
                .get(stream)
                .is_none_or(|e| e.pending.is_empty())
            {
                return;
            }
            settled.await;
        }
    }

    /// Submits an append decided on the states in memory while their locks are held, applies
    /// its state events to those states at once (later decisions build on them; their appends
    /// depend on this one and are stored only if it is), releases the locks and waits for the
    /// answer. `applied` are the state events of the first parts of `parts`, each with the
    /// state and version it was decided on (which it is applied to when the state left memory
    /// meanwhile). On a refusal the states that hold its events are stale: loaded again from
    /// the log before their next use.
    async fn submit_decided(
        &self,
        parts: Vec<StreamAppend>,
        applied: &[Applied],
        after: Vec<u64>,
        guards: Vec<tokio::sync::OwnedMutexGuard<()>>,
    ) -> Result<Vec<Appended>> {
        let pending = self.store.submit_atomic_after(parts, after).await?;
        let ticket = pending.ticket();
        {
            let mut map = self.lock_map();
            for (strategy, stream, key, (version, base), values) in applied {
                if map
                    .get(stream)
                    .is_none_or(|e| e.version < *version || e.stale.is_some())
                {
                    let stored = map.get(stream).is_some_and(|e| e.stored);
                    map.insert(
                        stream.clone(),
                        Entry {
                            strategy: strategy.name().to_owned(),
                            key: key.clone(),
                            version: *version,
                            state: strategy.clone_state(base),
                            dirty: true,
                            stored,
                            pending: Vec::new(),
                            stale: None,
                        },
                    );
                }
                let Some(entry) = map.get_mut(stream) else {
                    continue;
                };
                if entry.version == *version {
                    for payload in values {
                        let _ = strategy.apply_json(&mut entry.state, payload);
                    }
                    entry.version = version + values.len() as u64;
                    entry.dirty = true;
                    entry.pending.push(ticket);
                } else {
                    // The state moved (or left memory) since it was read: the append will
                    // meet another version; the stream is loaded again when needed.
                    entry.stale = Some(ticket);
                }
            }
        }
        drop(guards);
        // Should this future be dropped before the answer (a caller gave up), the states that
        // hold the events leave memory rather than keep events that may not be stored.
        let mut unsettled = Unsettled {
            healer: self,
            ticket,
            streams: applied.iter().map(|(_, s, _, _, _)| s.clone()).collect(),
        };
        let answer = pending.await;
        unsettled.streams.clear();
        {
            let now = self.now();
            let mut map = self.lock_map();
            let mut i = 0;
            for (strategy, stream, _, (version, _), values) in applied {
                let stored = answer.as_ref().is_ok_and(|a| {
                    a[i..i + values.len()]
                        .iter()
                        .enumerate()
                        .all(|(j, a)| a.stream_version == version + 1 + j as u64)
                });
                i += values.len();
                let Some(entry) = map.get_mut(stream) else {
                    continue;
                };
                let held = entry.pending.contains(&ticket);
                entry.pending.retain(|t| *t != ticket);
                if held && !stored {
                    entry.stale = Some(ticket);
                } else if entry.pending.is_empty() {
                    Self::rest(strategy, &mut map, stream, now);
                }
            }
        }
        self.states.settled.notify_waiters();
        let appended = answer?;
        self.note_own(&appended);
        Ok(appended)
    }

    fn key_lock(&self, stream: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if locks.map.len() > 2 * locks.pruned_at.max(64) {
            // A lock nobody holds or awaits (only the map refers to it) can go: the next
            // user makes a new one.
            locks.map.retain(|_, l| Arc::strong_count(l) > 1);
            locks.pruned_at = locks.map.len();
        }
        locks.map.entry(stream.to_owned()).or_default().clone()
    }

    /// Strategy events as stored: the event's JSON object, plus its strategy and key, dated
    /// `now` unless the strategy says the fact happened earlier ([`Strategy::occurred_at`]).
    fn strategy_events(
        strategy: &Arc<dyn ErasedStrategy>,
        key: &str,
        events: &[(String, Value)],
        now: DateTime<Utc>,
    ) -> Result<Vec<NewEvent>> {
        let name = strategy.name();
        events
            .iter()
            .map(|(t, v)| {
                let mut obj = match v {
                    Value::Object(o) => o.clone(),
                    _ => {
                        return Err(Error::InvalidEvent(format!(
                            "strategy {name}: events must serialise to JSON objects"
                        )));
                    }
                };
                let at = strategy
                    .occurred_at(v)
                    .map_or(now, |at| micros(at).min(now));
                obj.insert("strategy".into(), json!(name));
                obj.insert("key".into(), json!(key));
                Ok(NewEvent::new(t.clone(), at, Value::Object(obj)))
            })
            .collect()
    }

    fn fact(e: HealEvent, at: DateTime<Utc>) -> NewEvent {
        e.to_new_event(at)
    }

    // ----- healing --------------------------------------------------------------------------

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

    async fn heal_inner(&self, mut failure: Failure) -> Result<HealReport> {
        failure.detected_at = micros(failure.detected_at);
        crate::event::check_id("failure_id", &failure.failure_id)?;
        crate::event::check_id("failure_type", &failure.failure_type)?;
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
        let route = self.routes.get(&failure.failure_type).cloned();
        if let Some(r) = &route {
            report.route = r.name();
        }
        let members: Vec<Arc<dyn ErasedStrategy>> = route
            .as_ref()
            .map(|r| r.members.clone())
            .unwrap_or_default();

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

        let composite = route.as_ref().is_some_and(|r| r.composite);
        summarize(&mut report, composite);
        report.result.duration_ms = started.elapsed().as_millis() as i64;
        report.result.timestamp = self.now();
        Ok(report)
    }

    /// The answer to a retried heal: the decisions, actions, results and outcome recorded in
    /// the failure's stream by the heal that recorded it first. A retry must repeat the
    /// failure's type, agent and task (its times and the rest may differ): other facts under
    /// a recorded id are refused as a conflict.
    async fn recorded_report(&self, asked: &Failure, mut report: HealReport) -> Result<HealReport> {
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
        let composite = self
            .routes
            .get(&report.failure.failure_type)
            .is_some_and(|r| r.composite);
        summarize(&mut report, composite);
        report.result.duration_ms = duration_ms;
        report.result.timestamp = decided_at.unwrap_or(report.failure.detected_at);
        Ok(report)
    }

    /// Decides with `members` in order until one acts or holds (declines and failures go on),
    /// and appends every decision of the phase, the strategies' state events and, for the
    /// first phase, the failure itself, in one atomic append. `None`: the failure was already
    /// recorded (a retried heal), nothing was written.
    async fn decide_phase(
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
                fevents.push(self.detected_event(failure));
            }
            let mut attempts = Vec::new();
            let mut acting = None;
            let mut consumed = 0;
            let mut limit_parts: Vec<StreamAppend> = Vec::new();
            for member in members {
                consumed += 1;
                let name = member.name().to_owned();
                if !member.can_heal(failure) {
                    let reason = format!("{name} does not heal {} failures", failure.failure_type);
                    fevents.push(self.attempted_event(
                        failure,
                        &name,
                        "declined",
                        &reason,
                        &[],
                        Map::new(),
                        now,
                    ));
                    attempts.push(Attempt::new(
                        &name,
                        "declined",
                        reason,
                        Map::new(),
                        Vec::new(),
                    ));
                    continue;
                }
                let key = member.key(failure);
                let sstream = strategy_stream(&name, &key);
                let (version, state) = self.current(member, &sstream, &key).await?;
                after.extend(self.pending_of(&sstream));
                let mut d = member.decide(&state, failure, now);
                d.details.insert("state_version".into(), json!(version));
                d.details
                    .insert("state_before".into(), member.describe(&state, now));
                let mut label = d.verdict.as_str().to_owned();
                let mut reason = d.reason.clone();
                // Suggest-only never changes strategy state, whatever the verdict: its state
                // stays what it would be with healing switched off.
                let mut record_state = self.options.mode != Mode::SuggestOnly;
                if d.verdict == Verdict::Act {
                    match self.options.mode {
                        Mode::SuggestOnly => label = "suggest_only".into(),
                        Mode::Shadow => label = "shadow".into(),
                        Mode::Auto => {
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
                                Err(why) => {
                                    label = "withheld".into();
                                    reason = format!("{reason}; withheld: {why}");
                                    record_state = false;
                                }
                                Ok(facts) => {
                                    limit_parts = facts;
                                    if self.coordinator.is_none() {
                                        label = "delegated".into();
                                    }
                                }
                            }
                        }
                    }
                }
                if record_state && !d.events.is_empty() {
                    parts.push(StreamAppend {
                        stream_id: sstream.clone(),
                        expected: ExpectedVersion::Exact(version),
                        events: Self::strategy_events(member, &key, &d.events, now)?,
                    });
                    applied.push((
                        member.clone(),
                        sstream.clone(),
                        key.clone(),
                        (version, state),
                        d.events.iter().map(|(_, v)| v.clone()).collect(),
                    ));
                } else if !d.events.is_empty() {
                    d.details.insert(
                        "events_not_recorded".into(),
                        json!(d.events.iter().map(|(t, _)| t).collect::<Vec<_>>()),
                    );
                }
                fevents.push(self.attempted_event(
                    failure,
                    &name,
                    &label,
                    &reason,
                    &d.actions,
                    d.details.clone(),
                    now,
                ));
                let mut attempt = Attempt::new(
                    &name,
                    &label,
                    reason.clone(),
                    d.details.clone(),
                    d.actions.clone(),
                );
                if label == "failed" {
                    // A failed attempt counts in the statistics.
                    fevents.push(Self::fact(
                        HealEvent::HealingCompleted(HealingCompleted {
                            failure_id: failure.failure_id.clone(),
                            strategy: name.clone(),
                            agent_id: failure.agent_id.clone(),
                            failure_type: Some(failure.failure_type.clone()),
                            success: false,
                            duration_ms: 0,
                            actions_taken: Vec::new(),
                            metadata: Map::from_iter([("reason".to_owned(), json!(reason))]),
                        }),
                        now,
                    ));
                    attempt.success = Some(false);
                }
                attempts.push(attempt);
                match label.as_str() {
                    "declined" | "failed" => continue,
                    "act" => {
                        acting = Some((member.clone(), d));
                        break;
                    }
                    _ => break,
                }
            }
            if members.is_empty() {
                let reason = format!("no strategy is registered for {}", failure.failure_type);
                fevents.push(self.attempted_event(
                    failure,
                    "none",
                    "no_strategy",
                    &reason,
                    &[],
                    Map::new(),
                    now,
                ));
                attempts.push(Attempt::new(
                    "none",
                    "no_strategy",
                    reason,
                    Map::new(),
                    Vec::new(),
                ));
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

    fn detected_event(&self, failure: &Failure) -> NewEvent {
        Self::fact(
            HealEvent::FailureDetected(FailureDetected {
                failure_id: failure.failure_id.clone(),
                failure_type: failure.failure_type.clone(),
                severity: failure.severity,
                agent_id: failure.agent_id.clone(),
                task_id: failure.task_id.clone(),
                source_event: failure.source_event.clone(),
                metadata: failure.metadata.clone(),
            }),
            failure.detected_at,
        )
        .with_id(format!("{}-detected", failure.failure_id))
    }

    #[allow(clippy::too_many_arguments)]
    fn attempted_event(
        &self,
        failure: &Failure,
        strategy: &str,
        decision: &str,
        reason: &str,
        actions: &[Action],
        details: Map<String, Value>,
        now: DateTime<Utc>,
    ) -> NewEvent {
        Self::fact(
            HealEvent::HealingAttempted(HealingAttempted {
                failure_id: failure.failure_id.clone(),
                strategy: strategy.to_owned(),
                agent_id: failure.agent_id.clone(),
                failure_type: Some(failure.failure_type.clone()),
                decision: decision.to_owned(),
                reason: reason.to_owned(),
                actions: actions
                    .iter()
                    .map(|a| serde_json::to_value(a).unwrap_or(Value::Null))
                    .collect(),
                details,
            }),
            now,
        )
    }

    /// Carries out an acting decision through the coordinator, recording every action's result
    /// and the outcome (with the strategy's reaction to it). Returns whether it healed.
    #[allow(clippy::too_many_arguments)]
    async fn act(
        &self,
        strategy: &Arc<dyn ErasedStrategy>,
        failure: &Failure,
        fstream: &str,
        decision: &super::strategy::ErasedDecision,
        attempt: &mut Attempt,
        _now: DateTime<Utc>,
        started: Instant,
    ) -> Result<bool> {
        let Some(coordinator) = self.coordinator.clone() else {
            return Ok(false);
        };
        let name = strategy.name().to_owned();
        let key = strategy.key(failure);
        let sstream = strategy_stream(&name, &key);
        let mut events = Vec::new();
        let mut all_ok = true;
        for action in &decision.actions {
            let t = Instant::now();
            let r = execute(coordinator.as_ref(), action).await;
            let ms = t.elapsed().as_millis() as i64;
            all_ok &= r.is_ok();
            events.push(Self::fact(
                HealEvent::ActionExecuted(ActionExecuted {
                    failure_id: Some(failure.failure_id.clone()),
                    strategy: name.clone(),
                    agent_id: action
                        .agent()
                        .map(str::to_owned)
                        .or(failure.agent_id.clone()),
                    action: action.name().to_owned(),
                    target: action.target(),
                    success: r.is_ok(),
                    error: r.as_ref().err().cloned(),
                    duration_ms: ms,
                }),
                self.now(),
            ));
            attempt.results.push(r.clone());
            if r.is_err() {
                break; // later actions depend on earlier ones
            }
        }
        attempt.success = Some(all_ok);
        let end = self.now();
        let taken: Vec<String> = attempt
            .results
            .iter()
            .map(|r| match r {
                Ok(s) => s.clone(),
                Err(e) => format!("failed: {e}"),
            })
            .collect();
        events.extend(outcome_facts(
            failure,
            &name,
            all_ok,
            started.elapsed().as_millis() as i64,
            taken,
            Map::new(),
            end,
        ));
        let recovery = if all_ok {
            self.status_recovery(coordinator.as_ref(), failure, &decision.actions)
                .await
        } else {
            None
        };
        // A caller's outcome is refused for a decision that acted (not delegated): nothing
        // else appends to the failure's stream now. The strategy's lock is taken again for
        // the reaction, which other heals may have moved on meanwhile.
        self.record_outcome_events(
            strategy,
            failure,
            &sstream,
            &key,
            all_ok,
            fstream,
            ExpectedVersion::Any,
            events,
            recovery,
            end,
            true,
        )
        .await?;
        Ok(all_ok)
    }

    /// After a remediation, the coordinator's word on the failed agent: a healthy status
    /// (`active`, `idle`, `busy`) is evidence that it works again, a recovery `how` =
    /// `status`. Asked only for a failure of an agent as a whole (a task's failure recovers
    /// when the task succeeds) that the decision did not take out of rotation (an opened
    /// circuit remediates, it does not make the agent work). An error or an unknown agent is
    /// no evidence.
    async fn status_recovery(
        &self,
        coordinator: &dyn Coordinator,
        failure: &Failure,
        actions: &[Action],
    ) -> Option<NewEvent> {
        let agent = failure.agent_id.as_deref()?;
        if failure.task_id.is_some()
            || actions
                .iter()
                .any(|a| matches!(a, Action::UnregisterAgent { agent_id } if agent_id == agent))
        {
            return None;
        }
        let status = match coordinator.agent_status(agent).await {
            Ok(Some(status)) if HEALTHY_STATES.contains(&status.state.as_str()) => status,
            _ => return None,
        };
        Some(recovery_event(
            &failure.failure_id,
            Some(agent.to_owned()),
            None,
            RecoveryHow::Status,
            None,
            Some(status.state),
            self.now(),
        ))
    }

    /// Appends outcome facts to the failure stream with the strategy's reaction to the
    /// outcome, atomically (retrying the reaction on conflicts), and the failure's `recovery`
    /// after them, unless one is recorded already (then it is left out). With `lock`, the
    /// strategy's lock is taken for the reaction and released once it is queued; otherwise
    /// the caller holds it.
    #[allow(clippy::too_many_arguments)]
    async fn record_outcome_events(
        &self,
        strategy: &Arc<dyn ErasedStrategy>,
        failure: &Failure,
        sstream: &str,
        key: &str,
        success: bool,
        fstream: &str,
        fexpected: ExpectedVersion,
        facts: Vec<NewEvent>,
        mut recovery: Option<NewEvent>,
        now: DateTime<Utc>,
        lock: bool,
    ) -> Result<()> {
        for tries in 1.. {
            let mut guards = Vec::new();
            if lock {
                guards.push(self.key_lock(sstream).lock_owned().await);
            }
            let (version, state) = self.current(strategy, sstream, key).await?;
            let after = self.pending_of(sstream);
            let reaction = strategy.on_result(&state, failure, success, now);
            let state_events = Self::strategy_events(strategy, key, &reaction, now)?;
            let n_state = state_events.len();
            let mut parts = Vec::new();
            if n_state > 0 {
                parts.push(StreamAppend {
                    stream_id: sstream.to_owned(),
                    expected: ExpectedVersion::Exact(version),
                    events: state_events,
                });
            }
            let mut fevents = facts.clone();
            fevents.extend(recovery.clone());
            parts.push(StreamAppend {
                stream_id: fstream.to_owned(),
                expected: fexpected,
                events: fevents,
            });
            let decided = if n_state > 0 {
                vec![(
                    strategy.clone(),
                    sstream.to_owned(),
                    key.to_owned(),
                    (version, state),
                    reaction.iter().map(|(_, v)| v.clone()).collect(),
                )]
            } else {
                Vec::new()
            };
            match self.submit_decided(parts, &decided, after, guards).await {
                Ok(_) => return Ok(()),
                // A conflict on the strategy's state (or on a decision it was built on): react
                // again. One on the failure's stream goes to the caller (another outcome was
                // recorded meanwhile).
                Err(Error::DependencyFailed { .. }) if tries < MAX_DEPENDENCY_RETRIES => {
                    self.wait_settled(sstream).await;
                    self.refresh(strategy, sstream, key).await?;
                    continue;
                }
                // The failure recovered meanwhile (a signal): its recovery is recorded.
                Err(Error::EventIdReused { event_id, .. })
                    if recovery.as_ref().is_some_and(|r| r.event_id == event_id) =>
                {
                    recovery = None;
                    continue;
                }
                Err(Error::WrongExpectedVersion { stream, .. })
                    if stream != fstream && tries < MAX_CONFLICT_RETRIES =>
                {
                    self.wait_settled(sstream).await;
                    self.refresh(strategy, sstream, key).await?;
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reports the outcome of actions that were delegated to the caller.
    ///
    /// One result per attempt: when the outcome is already recorded (a retry, or another
    /// caller at the same time, in this process or another), nothing is written and the
    /// recorded outcome is returned as a duplicate; a different result is refused as a
    /// conflict.
    pub async fn record_outcome(
        &self,
        failure_id: &str,
        success: bool,
        duration_ms: Option<i64>,
        at: DateTime<Utc>,
    ) -> Result<OutcomeReport> {
        let at = micros(at);
        let fstream = failure_stream(failure_id);
        let first = self.awaiting_outcome(failure_id).await?;
        let key = first.strategy.key(&first.failure);
        let sstream = strategy_stream(&first.name, &key);
        let lock = self.key_lock(&sstream);
        let _guard = lock.lock().await;
        for tries in 1.. {
            // Read again under the lock: another caller may have recorded it meanwhile.
            let awaited = self.awaiting_outcome(failure_id).await?;
            if let Some(recorded) = &awaited.recorded {
                return awaited.answer_recorded(success, recorded);
            }
            let Awaited {
                failure,
                name,
                decided_at,
                strategy,
                version,
                ..
            } = awaited;
            let duration = duration_ms.unwrap_or_else(|| {
                (at - decided_at)
                    .num_milliseconds()
                    .clamp(0, crate::events::MAX_DURATION_MS)
            });
            let facts = outcome_facts(
                &failure,
                &name,
                success,
                duration,
                Vec::new(),
                Map::from_iter([("reported_by".to_owned(), json!("caller"))]),
                at,
            );
            let key = strategy.key(&failure);
            let sstream = strategy_stream(&name, &key);
            match self
                .record_outcome_events(
                    &strategy,
                    &failure,
                    &sstream,
                    &key,
                    success,
                    &fstream,
                    ExpectedVersion::Exact(version),
                    facts,
                    None,
                    at,
                    false,
                )
                .await
            {
                Ok(()) => {
                    return Ok(OutcomeReport {
                        failure_id: failure.failure_id,
                        strategy: name,
                        success,
                        duration_ms: duration,
                        time_to_remediate_ms: success
                            .then(|| (at - failure.detected_at).num_milliseconds()),
                        duplicate: false,
                    });
                }
                // The failure's stream moved (another process recorded an outcome): read again.
                Err(Error::WrongExpectedVersion { .. }) if tries < MAX_CONFLICT_RETRIES => {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns")
    }

    /// Checks, without writing anything, that `failure_id` has a delegated decision awaiting
    /// its outcome, or that the same result is recorded for it already (a retry, answered as
    /// a duplicate); another result recorded for it is a conflict.
    pub async fn check_outcome(&self, failure_id: &str, success: bool) -> Result<()> {
        let awaited = self.awaiting_outcome(failure_id).await?;
        if let Some(recorded) = &awaited.recorded {
            awaited.answer_recorded(success, recorded)?;
        }
        Ok(())
    }

    /// The failure's delegated decision and its outcome, if recorded, read from its stream.
    async fn awaiting_outcome(&self, failure_id: &str) -> Result<Awaited> {
        crate::event::check_id("failure_id", failure_id)?;
        let fstream = failure_stream(failure_id);
        let mut events = self.store.read(EventFilter::stream(&fstream));
        let mut failure = None;
        let mut delegated: Option<(String, DateTime<Utc>)> = None;
        let mut recorded = None;
        let mut version = 0;
        while let Some(e) = events.next().await {
            let e = e?;
            version = e.stream_version;
            match e.decode() {
                Some(HealEvent::FailureDetected(d)) => {
                    failure = Some(Failure {
                        failure_id: d.failure_id,
                        failure_type: d.failure_type,
                        agent_id: d.agent_id,
                        task_id: d.task_id,
                        severity: d.severity,
                        detected_at: e.occurred_at,
                        source_event: d.source_event,
                        metadata: d.metadata,
                    })
                }
                Some(HealEvent::HealingAttempted(a)) if a.decision == "delegated" => {
                    delegated = Some((a.strategy, e.occurred_at));
                    recorded = None;
                }
                Some(HealEvent::HealingCompleted(c)) => {
                    recorded = Some(Recorded {
                        success: c.success,
                        duration_ms: c.duration_ms,
                        at: e.occurred_at,
                    });
                }
                _ => {}
            }
        }
        drop(events);
        let failure = failure.ok_or_else(|| {
            Error::NotFound(format!("no failure with id {failure_id:?} is recorded"))
        })?;
        let (name, decided_at) = delegated.ok_or_else(|| {
            Error::Conflict(format!(
                "failure {failure_id} has no delegated decision awaiting an outcome"
            ))
        })?;
        let strategy = self.strategies.get(&name).cloned().ok_or_else(|| {
            Error::InvalidInput(format!(
                "strategy {name} decided failure {failure_id} but is not configured now"
            ))
        })?;
        Ok(Awaited {
            failure,
            name,
            decided_at,
            strategy,
            version,
            recorded,
        })
    }

    /// Checks the healer's own limits for a decision of `strategy` that would act, its state
    /// stream at `version_after` once appended. `Ok(Err(why))`: over a limit. `Ok(Ok(parts))`:
    /// within them; `parts` are the limit facts to append with the decision, each at the
    /// version of its limit stream that the check read, so that another process's decision
    /// counted meanwhile makes the append conflict (and the decision is taken again).
    ///
    /// The limit streams are locked in this process too (the fleet's last: a heal holding it
    /// takes no other lock), so that concurrent heals here queue instead of conflicting.
    #[allow(clippy::too_many_arguments)]
    async fn check_limits(
        &self,
        failure: &Failure,
        strategy: &str,
        sstream: &str,
        version_after: u64,
        actions: &[Action],
        now: DateTime<Utc>,
        guards: &mut LimitGuards,
    ) -> Result<std::result::Result<Vec<StreamAppend>, String>> {
        let mut parts = Vec::new();
        if actions.is_empty() {
            return Ok(Ok(parts));
        }
        let limits = self.options.limits;
        if let (Some(max), Some(agent)) = (limits.max_actions_per_agent_per_hour, &failure.agent_id)
        {
            let stream = agent_limit_stream(agent);
            guards.lock(self, &stream).await;
            let since = now - Duration::hours(1);
            // One statement, so the count and the version are read from one snapshot.
            let (count, version): (i64, i64) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM events WHERE agent_id = ?1 AND occurred_at > ?2 \
                         AND occurred_at <= ?3 AND event_type = 'limit_counted' \
                         AND stream_id = ?4), \
                        COALESCE((SELECT MAX(stream_version) FROM events WHERE stream_id = ?4), \
                                 (SELECT version FROM archived_streams WHERE stream_id = ?4), 0)",
            )
            .bind(agent)
            .bind(crate::time::to_micros(since))
            .bind(crate::time::to_micros(now))
            .bind(&stream)
            .fetch_one(self.store.read_pool())
            .await
            .map_err(Error::from)?;
            if count >= i64::from(max) {
                return Ok(Err(format!(
                    "{count} automated actions on {agent} in the last hour (limit {max})"
                )));
            }
            let fact = LimitCounted {
                limit: "agent_actions".into(),
                failure_id: failure.failure_id.clone(),
                decided_by: strategy.to_owned(),
                agent_id: Some(agent.clone()),
                count: count as u64 + 1,
                allowed: u64::from(max),
                disabled: Vec::new(),
            };
            parts.push(StreamAppend {
                stream_id: stream,
                expected: ExpectedVersion::Exact(version as u64),
                events: vec![Self::fact(HealEvent::LimitCounted(fact), now)],
            });
        }
        if let Some(max_share) = limits.max_disabled_fraction {
            let disabling: Vec<&str> = actions
                .iter()
                .filter_map(|a| match a {
                    Action::UnregisterAgent { agent_id } => Some(agent_id.as_str()),
                    _ => None,
                })
                .collect();
            if !disabling.is_empty() {
                // Every state not at rest counts: the map must hold them all.
                self.ensure_complete().await?;
                self.reload_stale().await?;
                guards.lock(self, FLEET_LIMIT_STREAM).await;
                let (version, listed) = self.fleet_limit_facts().await?;
                let read = self.refresh_listed(&listed).await?;
                let (mut disabled, known) = self.disabled_agents(now, &listed, &read);
                guards.after.extend(
                    self.lock_map()
                        .values()
                        .flat_map(|e| e.pending.iter().copied().chain(e.stale)),
                );
                let total = match (limits.fleet_size, &self.coordinator) {
                    (Some(n), _) => n as usize,
                    (None, Some(c)) => match c.topology().await {
                        Ok(t) => t.agent_count as usize + disabled.len(),
                        Err(_) => known,
                    },
                    (None, None) => known,
                }
                .max(1);
                disabled.retain(|d| !disabling.contains(&d.agent.as_str()));
                for agent in &disabling {
                    disabled.push(DisabledAgent {
                        agent: (*agent).to_owned(),
                        stream: sstream.to_owned(),
                        version: version_after,
                    });
                }
                let after = disabled.len();
                let share = after as f64 / total as f64;
                if share > max_share {
                    return Ok(Err(format!(
                        "{after} of {total} agents would be disabled ({:.0} %, limit {:.0} %)",
                        share * 100.0,
                        max_share * 100.0
                    )));
                }
                disabled.sort_by(|a, b| a.agent.cmp(&b.agent));
                let fact = LimitCounted {
                    limit: "fleet_disabled".into(),
                    failure_id: failure.failure_id.clone(),
                    decided_by: strategy.to_owned(),
                    agent_id: None,
                    count: after as u64,
                    allowed: (max_share * total as f64 + 1e-9).floor() as u64,
                    disabled,
                };
                parts.push(StreamAppend {
                    stream_id: FLEET_LIMIT_STREAM.to_owned(),
                    expected: ExpectedVersion::Exact(version),
                    events: vec![Self::fact(HealEvent::LimitCounted(fact), now)],
                });
            }
        }
        Ok(Ok(parts))
    }

    /// The fleet limit stream's version and the agents its last fact counted as disabled.
    ///
    /// One statement, so that the version and the fact are read from one snapshot of the
    /// log: a version read after another process's fact was committed, with the fact (or its
    /// absence) read before, would let a decision append at the new version without counting
    /// the agent that fact disabled.
    async fn fleet_limit_facts(&self) -> Result<(u64, Vec<DisabledAgent>)> {
        let (version, event_type, schema_version, payload): (
            i64,
            Option<String>,
            Option<i64>,
            Option<String>,
        ) = sqlx::query_as(
            "SELECT v.version, e.event_type, e.schema_version, e.payload \
             FROM (SELECT COALESCE((SELECT MAX(stream_version) FROM events \
                                    WHERE stream_id = ?1), \
                                   (SELECT version FROM archived_streams \
                                    WHERE stream_id = ?1), 0) AS version) v \
             LEFT JOIN events e ON e.stream_id = ?1 AND e.stream_version = v.version",
        )
        .bind(FLEET_LIMIT_STREAM)
        .fetch_one(self.store.read_pool())
        .await
        .map_err(Error::from)?;
        let version = u64::try_from(version).unwrap_or(0);
        let (Some(event_type), Some(payload)) = (event_type, payload) else {
            // Never written, or archived: every agent it counted was disabled before the cut,
            // and this healer's states (restored from snapshots) know them.
            return Ok((version, Vec::new()));
        };
        let payload: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
        let schema_version = schema_version.unwrap_or(1).max(1) as u32;
        let listed = match HealEvent::decode(&event_type, schema_version, &payload) {
            Some(HealEvent::LimitCounted(c)) => c.disabled,
            _ => Vec::new(),
        };
        Ok((version, listed))
    }

    /// Brings the state of every agent the fleet limit's last fact counted up to at least the
    /// version it was counted at (a state at rest, or one another process changed, is read
    /// from its stream): an agent released since then no longer counts. Returns the streams
    /// it read from the log: they are current, in memory or (at rest) not.
    async fn refresh_listed(&self, listed: &[DisabledAgent]) -> Result<HashSet<String>> {
        let mut read = HashSet::new();
        for l in listed {
            let known = self.lock_map().get(&l.stream).map(|e| e.version);
            if known.is_some_and(|v| v >= l.version) {
                continue;
            }
            let found = self.strategies.values().find_map(|s| {
                let key = l
                    .stream
                    .strip_prefix(STRATEGY_STREAM_PREFIX)?
                    .strip_prefix(s.name())?
                    .strip_prefix('-')?;
                (s.agent_of_key(key) == Some(l.agent.as_str())).then(|| (s.clone(), key))
            });
            if let Some((strategy, key)) = found {
                self.refresh(&strategy, &l.stream, key).await?;
                read.insert(l.stream.clone());
            }
        }
        Ok(read)
    }

    /// Agents disabled now: those some strategy's state disables, and those the fleet limit's
    /// last fact counted whose state this healer has not folded up to that fact's version (it
    /// may be behind: they count until it knows better). Also how many agents have state.
    fn disabled_agents(
        &self,
        now: DateTime<Utc>,
        listed: &[DisabledAgent],
        read: &HashSet<String>,
    ) -> (Vec<DisabledAgent>, usize) {
        let map = self.lock_map();
        let mut disabled: HashMap<String, DisabledAgent> = HashMap::new();
        let mut known = HashSet::new();
        for (stream, e) in map.iter() {
            if let Some(s) = self.strategies.get(&e.strategy) {
                // Only keys that stand for agents count (not `fleet`, resources, tasks...).
                let Some(agent) = s.agent_of_key(&e.key) else {
                    continue;
                };
                known.insert(agent.to_owned());
                if s.disables_agent(&e.state, now) {
                    disabled.insert(
                        agent.to_owned(),
                        DisabledAgent {
                            agent: agent.to_owned(),
                            stream: stream.clone(),
                            version: e.version,
                        },
                    );
                }
            }
        }
        for l in listed {
            // A stream just read from the log is current (out of memory: at rest).
            let behind = !read.contains(&l.stream)
                && map.get(&l.stream).is_none_or(|e| e.version < l.version);
            if behind {
                known.insert(l.agent.clone());
                disabled.entry(l.agent.clone()).or_insert_with(|| l.clone());
            }
        }
        (disabled.into_values().collect(), known.len())
    }

    // ----- signals --------------------------------------------------------------------------

    /// Records that an agent completed work successfully, and lets strategies react (a
    /// half-open circuit counts it towards closing, for example).
    ///
    /// The signal is evidence that the agent (and the task, when named) works again: the
    /// failures it recovers are appended a `failure_recovered` fact each (`how` = `signal`,
    /// the signal's event as evidence) in the same commit as the signal. Those are the
    /// failures detected before `at` and not recovered yet of the task, when the signal names
    /// one, and, among the failures that name no task, those of the agent: a failure of a task
    /// waits for that task to succeed (on any agent). They are found through the `failures`
    /// read model's indexes of open failures, a page at a time.
    pub async fn record_success(
        &self,
        agent_id: &str,
        task_id: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<SignalReport> {
        let at = micros(at);
        crate::event::check_id("agent_id", agent_id)?;
        if let Some(t) = task_id {
            crate::event::check_id("task_id", t)?;
        }
        let fact = Self::fact(
            HealEvent::AgentSucceeded(crate::events::AgentSucceeded {
                agent_id: agent_id.to_owned(),
                task_id: task_id.map(str::to_owned),
            }),
            at,
        );
        let recovered = self.append_with_recoveries(fact, agent_id, task_id).await?;
        let mut report = self
            .signal(
                &Signal::AgentSucceeded {
                    agent_id: agent_id.to_owned(),
                    task_id: task_id.map(str::to_owned),
                },
                at,
                None,
            )
            .await?;
        report.recovered = recovered;
        Ok(report)
    }

    /// Appends a success signal with the recoveries it is evidence for (see
    /// [`Healer::record_success`]); returns the failures recovered.
    async fn append_with_recoveries(
        &self,
        signal: NewEvent,
        agent_id: &str,
        task_id: Option<&str>,
    ) -> Result<Vec<String>> {
        const PAGE: i64 = 256;
        let at = signal.occurred_at;
        let evidence = signal.event_id.clone();
        let mut pending = Some(StreamAppend {
            stream_id: format!("agent-{agent_id}"),
            expected: ExpectedVersion::Any,
            events: vec![signal],
        });
        let mut recovered = Vec::new();
        let mut conflicts = 0;
        loop {
            // Past too many races with other recorders, the signal is recorded alone (the
            // failures it would recover have been recovered by the others meanwhile).
            let open = if conflicts < MAX_CONFLICT_RETRIES {
                self.open_failures(agent_id, task_id, at, PAGE).await?
            } else {
                Vec::new()
            };
            if open.is_empty() && pending.is_none() {
                break;
            }
            let mut parts: Vec<StreamAppend> = pending.iter().cloned().collect();
            let first = parts.len();
            parts.extend(open.iter().map(|(failure_id, agent, task)| StreamAppend {
                stream_id: failure_stream(failure_id),
                expected: ExpectedVersion::Any,
                events: vec![recovery_event(
                    failure_id,
                    agent.clone(),
                    task.clone(),
                    RecoveryHow::Signal,
                    Some(evidence.clone()),
                    None,
                    at,
                )],
            }));
            match self.store.append_atomic(parts).await {
                Ok(appended) => {
                    self.note_own(&appended);
                    pending = None;
                    recovered.extend(
                        open.iter()
                            .zip(&appended[first..])
                            .filter(|(_, a)| !a.duplicate)
                            .map(|((id, _, _), _)| id.clone()),
                    );
                    if (open.len() as i64) < PAGE {
                        break;
                    }
                }
                // Another process recovered one of them meanwhile: look again.
                Err(Error::EventIdReused { .. }) => conflicts += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(recovered)
    }

    /// Up to `limit` failures detected before `at` and not recovered: of `task` when given,
    /// and of `agent` among those that name no task. Two index look-ups (the partial indexes
    /// of open failures), never a scan.
    async fn open_failures(
        &self,
        agent: &str,
        task: Option<&str>,
        at: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<(String, Option<String>, Option<String>)>> {
        sqlx::query_as(
            "SELECT failure_id, agent_id, task_id FROM ( \
               SELECT failure_id, agent_id, task_id, detected_at \
               FROM failures INDEXED BY failures_open_by_agent \
               WHERE agent_id = ?1 AND task_id IS NULL AND recovered_at IS NULL \
                 AND detected_at < ?3 \
               UNION ALL \
               SELECT failure_id, agent_id, task_id, detected_at \
               FROM failures INDEXED BY failures_open_by_task \
               WHERE task_id = ?2 AND recovered_at IS NULL AND detected_at < ?3) \
             ORDER BY detected_at, failure_id LIMIT ?4",
        )
        .bind(agent)
        .bind(task)
        .bind(crate::time::to_micros(at))
        .bind(limit)
        .fetch_all(self.store.read_pool())
        .await
        .map_err(Error::from)
    }

    /// Confirms that a failure recovered at `at` (the caller knows its agent or task works
    /// again): a `failure_recovered` fact with `how` = `confirmed`. Once per failure: when a
    /// recovery is recorded already (confirmed, or shown by a signal or a status), nothing is
    /// written and the recorded one is the answer (`duplicate`). An unknown failure id is not
    /// found; a recovery before the failure's detection is refused.
    pub async fn record_recovered(
        &self,
        failure_id: &str,
        at: DateTime<Utc>,
    ) -> Result<RecoveryReport> {
        let at = micros(at);
        let f = self.recovery_state(failure_id, at).await?;
        if let Some(recorded) = f.recorded {
            return Ok(recorded);
        }
        let event = recovery_event(
            failure_id,
            f.agent_id,
            f.task_id,
            RecoveryHow::Confirmed,
            None,
            None,
            at,
        );
        match self
            .store
            .append(
                &failure_stream(failure_id),
                ExpectedVersion::Any,
                vec![event],
            )
            .await
        {
            Ok(appended) if appended.iter().all(|a| !a.duplicate) => {
                self.note_own(&appended);
                Ok(RecoveryReport {
                    failure_id: failure_id.to_owned(),
                    how: RecoveryHow::Confirmed,
                    recovered_at: at,
                    time_to_recover_ms: (at - f.detected_at).num_milliseconds().max(0),
                    duplicate: false,
                })
            }
            // Recorded meanwhile (by another process, or this very fact by an earlier try).
            Ok(_) | Err(Error::EventIdReused { .. }) => self
                .recovery_state(failure_id, at)
                .await?
                .recorded
                .ok_or_else(|| {
                    Error::Conflict(format!(
                        "the recovery of failure {failure_id} is stored but not yet readable; \
                         retry"
                    ))
                }),
            Err(e) => Err(e),
        }
    }

    /// Checks, without writing anything, what [`Healer::record_recovered`] would refuse: an
    /// unknown failure, or (when no recovery is recorded yet) a recovery before its detection.
    pub async fn check_recovered(&self, failure_id: &str, at: DateTime<Utc>) -> Result<()> {
        self.recovery_state(failure_id, micros(at))
            .await
            .map(|_| ())
    }

    /// A failure as the `failures` read model has it, for a confirmation at `at`.
    async fn recovery_state(&self, failure_id: &str, at: DateTime<Utc>) -> Result<Recovery> {
        crate::event::check_id("failure_id", failure_id)?;
        type Row = (
            i64,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<String>,
            Option<i64>,
        );
        let row: Option<Row> = sqlx::query_as(
            "SELECT detected_at, agent_id, task_id, recovered_at, recovered_how, recover_us \
             FROM failures WHERE failure_id = ?1",
        )
        .bind(failure_id)
        .fetch_optional(self.store.read_pool())
        .await
        .map_err(Error::from)?;
        let Some((detected, agent_id, task_id, recovered_at, how, recover_us)) = row else {
            return Err(Error::NotFound(format!(
                "no failure with id {failure_id:?} is recorded"
            )));
        };
        let detected_at = crate::time::from_micros(detected)?;
        let recorded = match recovered_at {
            Some(r) => Some(RecoveryReport {
                failure_id: failure_id.to_owned(),
                how: match how.as_deref() {
                    Some("signal") => RecoveryHow::Signal,
                    Some("status") => RecoveryHow::Status,
                    _ => RecoveryHow::Confirmed,
                },
                recovered_at: crate::time::from_micros(r)?,
                time_to_recover_ms: recover_us.unwrap_or(0) / 1000,
                duplicate: true,
            }),
            None => None,
        };
        if recorded.is_none() && at < detected_at {
            return Err(Error::InvalidInput(format!(
                "failure {failure_id} cannot have recovered at {}, before its detection at {}",
                crate::time::format_time(at),
                crate::time::format_time(detected_at)
            )));
        }
        Ok(Recovery {
            detected_at,
            agent_id,
            task_id,
            recorded,
        })
    }

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
        let fact = Self::fact(
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

    async fn signal(
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
        let mut names: Vec<&String> = self.strategies.keys().collect();
        names.sort();
        for name in names {
            if only.is_some_and(|o| o != name) {
                continue;
            }
            let strategy = self.strategies[name].clone();
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
                    let Some(r) = strategy.on_signal(&state, &key, signal, now) else {
                        break None;
                    };
                    // Trial accounting is recorded in every mode: a permit's answer is only
                    // as good as the count it is based on.
                    let record = self.options.mode != Mode::SuggestOnly
                        || matches!(signal, Signal::Permit { .. });
                    if r.events.is_empty() || !record {
                        break Some(r);
                    }
                    let events = Self::strategy_events(&strategy, &key, &r.events, now)?;
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
                if self.options.mode == Mode::Auto
                    && let Some(c) = &self.coordinator
                {
                    {
                        let mut facts = Vec::new();
                        for action in &r.actions {
                            let t = Instant::now();
                            let res = execute(c.as_ref(), action).await;
                            facts.push(Self::fact(
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

    // ----- views, checkpoints, shutdown -----------------------------------------------------

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
                let s = self.strategies.get(&e.strategy)?;
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

    /// Checks every stored snapshot against a fold of its stream's events up to the
    /// snapshot's version. Returns `(stream, what differs)` for each snapshot that does not
    /// match (an empty list when all hold).
    pub async fn verify_snapshots(&self) -> Result<Vec<(String, String)>> {
        let mut bad = Vec::new();
        for (name, strategy) in &self.strategies {
            for snap in self.store.load_all_snapshots(name).await? {
                let mut state = strategy.new_state();
                let mut version = 0u64;
                let mut events = self.store.read(EventFilter::stream(snap.stream_id.clone()));
                while let Some(e) = events.next().await {
                    let e = e?;
                    if e.stream_version > snap.stream_version {
                        break;
                    }
                    if e.payload.get("strategy").and_then(Value::as_str) != Some(name.as_str()) {
                        continue;
                    }
                    let _ = strategy.apply_json(&mut state, &e.payload);
                    version = e.stream_version;
                }
                let stored = serde_json::from_str::<Value>(&snap.state).ok();
                let folded = strategy.snapshot(&state);
                if version != snap.stream_version {
                    bad.push((
                        snap.stream_id.clone(),
                        format!(
                            "the snapshot is at version {} but the stream's events end at {version}",
                            snap.stream_version
                        ),
                    ));
                } else if stored.as_ref() != Some(&folded) {
                    bad.push((
                        snap.stream_id.clone(),
                        format!("the snapshot at version {version} differs from its events' fold"),
                    ));
                }
            }
        }
        Ok(bad)
    }

    /// Raw snapshots of every state not at rest (for tests and verification: equal to a
    /// fresh fold).
    pub async fn snapshots(&self) -> Result<HashMap<String, (u64, Value)>> {
        self.ensure_complete().await?;
        self.catch_up().await?;
        self.reload_stale().await?;
        let now = self.now();
        let map = self.lock_map();
        Ok(map
            .iter()
            .filter_map(|(stream, e)| {
                let s = self.strategies.get(&e.strategy)?;
                if s.at_rest(&e.state, now) {
                    return None;
                }
                Some((stream.clone(), (e.version, s.snapshot(&e.state))))
            })
            .collect())
    }

    /// Writes snapshots of the states changed since the last checkpoint, and deletes those of
    /// states now at rest (which then leave memory). Returns how many snapshots it wrote.
    ///
    /// Nothing is marked saved before the write committed: after a failed checkpoint the next
    /// one writes everything again. A healer opened with [`HealerBuilder::open_lazy`] writes
    /// snapshots but moves no checkpoint position.
    pub async fn checkpoint(&self) -> Result<usize> {
        let cursor = self.states.cursor.lock().await;
        let now = self.now();
        let mut snapshots = Vec::new();
        let mut deleted = Vec::new();
        // (stream, version written, at rest)
        let mut written: Vec<(String, u64, bool)> = Vec::new();
        {
            let map = self.lock_map();
            for (stream, e) in map.iter() {
                let Some(s) = self.strategies.get(&e.strategy) else {
                    continue;
                };
                if !e.pending.is_empty() || e.stale.is_some() {
                    continue; // not all stored yet: saved by a later checkpoint
                }
                let rest = s.at_rest(&e.state, now);
                let snapshot = || Snapshot {
                    stream_id: stream.clone(),
                    strategy: e.strategy.clone(),
                    key: e.key.clone(),
                    stream_version: e.version,
                    state: s.snapshot(&e.state).to_string(),
                    at_rest: rest,
                };
                if rest && (e.stored || e.dirty) {
                    // Deleted; or kept at rest when the stream's first events are archived.
                    deleted.push(snapshot());
                    written.push((stream.clone(), e.version, true));
                } else if e.dirty {
                    snapshots.push(snapshot());
                    written.push((stream.clone(), e.version, false));
                }
            }
        }
        let n = snapshots.len();
        let recount = self
            .states
            .recount
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let positions = if self.is_complete() {
            self.strategies
                .keys()
                .map(|name| (name.clone(), *cursor))
                .collect()
        } else {
            Vec::new()
        };
        self.store
            .write_checkpoint(Checkpoint {
                positions,
                snapshots,
                deleted,
                recount: recount.clone(),
            })
            .await?;
        self.states
            .recount
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|s| !recount.contains(s));
        // Committed: only now are the states saved (unless they changed meanwhile).
        let mut map = self.lock_map();
        for (stream, version, rest) in written {
            let Some(e) = map.get_mut(&stream) else {
                continue;
            };
            if !rest {
                // A snapshot of the stream is stored now, even if the state moved on since.
                e.stored = true;
            }
            if e.version != version {
                continue;
            }
            e.dirty = false;
            if rest {
                map.remove(&stream);
            }
        }
        Ok(n)
    }

    /// Archives the events before `before` into `file` ([`Store::archive`]) after writing
    /// what the cut needs to keep every state: a checkpoint of every state not at rest, and a
    /// snapshot (at rest) of each state stream the cut goes through that has none. A state at
    /// rest needs no snapshot while its events are in the log; once they are archived, its
    /// snapshot is all that rebuilds it. `None` when there is nothing to archive.
    pub async fn archive(
        &self,
        before: DateTime<Utc>,
        file: &std::path::Path,
        now: DateTime<Utc>,
    ) -> Result<Option<crate::store::archive::ArchiveReport>> {
        // The file first: nothing is written for an archive that cannot be.
        crate::store::archive::check_target(file, self.store.path())?;
        self.ensure_complete().await?;
        self.checkpoint().await?;
        let Some(cut) = self.store.archive_cut(before).await? else {
            return Ok(None);
        };
        let mut after = String::new();
        loop {
            let page = self.store.uncovered_streams(cut, &after, 512).await?;
            let Some((_, last, _)) = page.last() else {
                break;
            };
            after = last.clone();
            let mut snapshots = Vec::with_capacity(page.len());
            for (name, stream, _) in &page {
                let strategy = self.strategies.get(name).cloned();
                let key = stream
                    .strip_prefix(STRATEGY_STREAM_PREFIX)
                    .and_then(|k| k.strip_prefix(name.as_str()))
                    .and_then(|k| k.strip_prefix('-'));
                let (Some(strategy), Some(key)) = (strategy, key) else {
                    return Err(Error::InvalidInput(format!(
                        "the state of {stream} belongs to strategy {name}, which this healer \
                         does not run: it has no snapshot, so its events cannot be archived"
                    )));
                };
                let (version, state) = self.load_stream(&strategy, stream, key).await?;
                let now = self.now();
                snapshots.push(Snapshot {
                    stream_id: stream.clone(),
                    strategy: name.clone(),
                    key: key.to_owned(),
                    stream_version: version,
                    state: strategy.snapshot(&state).to_string(),
                    at_rest: strategy.at_rest(&state, now),
                });
            }
            let written: Vec<(String, u64, bool)> = snapshots
                .iter()
                .map(|s| (s.stream_id.clone(), s.stream_version, s.at_rest))
                .collect();
            self.store
                .write_checkpoint(Checkpoint {
                    positions: Vec::new(),
                    snapshots,
                    deleted: Vec::new(),
                    recount: Vec::new(),
                })
                .await?;
            // Saved: states at rest leave memory again.
            let mut map = self.lock_map();
            for (stream, version, rest) in written {
                if let Some(e) = map.get_mut(&stream) {
                    e.stored = true;
                    if e.version == version {
                        e.dirty = false;
                        if rest {
                            map.remove(&stream);
                        }
                    }
                }
            }
        }
        self.store.archive_up_to(before, file, now, Some(cut)).await
    }

    /// Writes a checkpoint and closes the store.
    pub async fn close(self) -> Result<()> {
        self.checkpoint().await?;
        self.store.close().await
    }
}

/// What [`Healer::record_outcome`] recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutcomeReport {
    pub failure_id: String,
    pub strategy: String,
    pub success: bool,
    pub duration_ms: i64,
    /// Detection to remediation, when the actions succeeded (the failure's recovery is
    /// another fact: see [`Healer::record_recovered`]).
    pub time_to_remediate_ms: Option<i64>,
    /// The outcome was already recorded (by a retry, or another caller at the same time):
    /// nothing was written, and this is the recorded one.
    pub duplicate: bool,
}

/// The result of a heal, as the seed describes it, from its attempts.
fn summarize(report: &mut HealReport, composite: bool) {
    let acted = report
        .attempts
        .iter()
        .rev()
        .find(|a| matches!(a.decision.as_str(), "act" | "delegated" | "shadow"));
    if let Some(a) = acted {
        report.result.success = a.success == Some(true);
        report.result.strategy_used = if composite {
            format!("Composite[{}]", a.strategy)
        } else {
            a.strategy.clone()
        };
        report.result.actions_taken = report
            .attempts
            .iter()
            .flat_map(|a| {
                a.actions
                    .iter()
                    .zip(a.results.iter())
                    .map(|(act, r)| match r {
                        Ok(done) => done.clone(),
                        Err(e) => format!("{} failed: {e}", act.describe()),
                    })
            })
            .collect();
    } else if let Some(last) = report.attempts.last() {
        report.result.strategy_used = last.decision.clone();
    }
    report
        .result
        .metadata
        .insert("route".into(), json!(report.route));
    report
        .result
        .metadata
        .insert("attempts".into(), json!(report.attempts.len()));
}

/// A failure's delegated decision, as its stream tells it.
struct Awaited {
    failure: Failure,
    /// The deciding strategy's name, and the strategy.
    name: String,
    decided_at: DateTime<Utc>,
    strategy: Arc<dyn ErasedStrategy>,
    /// The failure stream's version: an outcome is appended at it.
    version: u64,
    /// The outcome, if one is recorded after the decision.
    recorded: Option<Recorded>,
}

/// An outcome already recorded.
struct Recorded {
    success: bool,
    duration_ms: i64,
    at: DateTime<Utc>,
}

impl Awaited {
    /// The answer to an outcome reported again: the recorded one, if the result is the same.
    fn answer_recorded(&self, success: bool, r: &Recorded) -> Result<OutcomeReport> {
        let said = |ok: bool| if ok { "healed" } else { "not healed" };
        if r.success != success {
            return Err(Error::Conflict(format!(
                "the outcome of failure {} is already recorded as {}; this report \
                 says {}",
                self.failure.failure_id,
                said(r.success),
                said(success)
            )));
        }
        Ok(OutcomeReport {
            failure_id: self.failure.failure_id.clone(),
            strategy: self.name.clone(),
            success: r.success,
            duration_ms: r.duration_ms,
            time_to_remediate_ms: r
                .success
                .then(|| (r.at - self.failure.detected_at).num_milliseconds()),
            duplicate: true,
        })
    }
}

/// What [`Healer::record_recovered`] recorded, or found recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecoveryReport {
    pub failure_id: String,
    /// How the recovery is known: `signal`, `status` or `confirmed`.
    pub how: RecoveryHow,
    #[serde(with = "crate::time::serde_rfc3339")]
    pub recovered_at: DateTime<Utc>,
    /// Detection to recovery.
    pub time_to_recover_ms: i64,
    /// The recovery was recorded already (by a signal, a status or an earlier confirmation):
    /// nothing was written, and this is the recorded one.
    pub duplicate: bool,
}

/// A failure as a confirmation of its recovery finds it.
struct Recovery {
    detected_at: DateTime<Utc>,
    agent_id: Option<String>,
    task_id: Option<String>,
    recorded: Option<RecoveryReport>,
}

/// The id of a failure's recovery fact: one per failure, whoever records it.
fn recovery_event_id(failure_id: &str) -> String {
    format!("{failure_id}-recovered")
}

/// A failure's recovery fact (its id makes it once per failure).
fn recovery_event(
    failure_id: &str,
    agent_id: Option<String>,
    task_id: Option<String>,
    how: RecoveryHow,
    evidence_event_id: Option<String>,
    status: Option<String>,
    at: DateTime<Utc>,
) -> NewEvent {
    Healer::fact(
        HealEvent::FailureRecovered(FailureRecovered {
            failure_id: failure_id.to_owned(),
            agent_id,
            task_id,
            how,
            evidence_event_id,
            status,
        }),
        at,
    )
    .with_id(recovery_event_id(failure_id))
}

/// The agent states a coordinator reports for an agent that works.
const HEALTHY_STATES: &[&str] = &["active", "idle", "busy"];

/// An instant truncated to the microsecond (never fails: out-of-range instants are kept).
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    crate::time::truncate(t).unwrap_or(t)
}

/// The facts that end an attempt: its completion, and the failure's resolution if it healed.
fn outcome_facts(
    failure: &Failure,
    strategy: &str,
    success: bool,
    duration_ms: i64,
    actions_taken: Vec<String>,
    metadata: Map<String, Value>,
    at: DateTime<Utc>,
) -> Vec<NewEvent> {
    let mut facts = vec![Healer::fact(
        HealEvent::HealingCompleted(HealingCompleted {
            failure_id: failure.failure_id.clone(),
            strategy: strategy.to_owned(),
            agent_id: failure.agent_id.clone(),
            failure_type: Some(failure.failure_type.clone()),
            success,
            duration_ms,
            actions_taken,
            metadata,
        }),
        at,
    )];
    if success {
        facts.push(Healer::fact(
            HealEvent::FailureResolved(FailureResolved {
                failure_id: failure.failure_id.clone(),
                failure_type: failure.failure_type.clone(),
                agent_id: failure.agent_id.clone(),
                strategy: Some(strategy.to_owned()),
                detected_at: failure.detected_at,
            }),
            at,
        ));
    }
    facts
}

/// Carries out one action; `Ok` says what was done, `Err` why it failed.
async fn execute(c: &dyn Coordinator, action: &Action) -> std::result::Result<String, String> {
    let e = |e: super::coordinator::CoordinatorError| e.to_string();
    match action {
        Action::RestartAgent { agent_id } => {
            let status = c.agent_status(agent_id).await.map_err(e)?;
            let Some(status) = status else {
                return Err(format!("agent {agent_id} is unknown to the coordinator"));
            };
            c.unregister_agent(agent_id).await.map_err(e)?;
            c.register_agent(agent_id, status.metadata)
                .await
                .map_err(|err| format!("re-registering {agent_id} failed: {err}"))?;
            Ok(format!("restarted agent {agent_id}"))
        }
        Action::UnregisterAgent { agent_id } => {
            c.unregister_agent(agent_id).await.map_err(e)?;
            Ok(format!("unregistered agent {agent_id}"))
        }
        Action::RegisterAgent { agent_id, metadata } => {
            c.register_agent(agent_id, metadata.clone())
                .await
                .map_err(e)?;
            Ok(format!("registered agent {agent_id}"))
        }
        Action::RetryTask {
            task_id,
            delay_ms,
            agent_id,
        } => {
            let topology = c.topology().await.map_err(e)?;
            if topology.healthy_count == 0 {
                return Err("no healthy agent to retry the task on".into());
            }
            c.retry_task(task_id, agent_id.as_deref(), *delay_ms)
                .await
                .map_err(e)?;
            Ok(format!(
                "scheduled task {task_id} to retry in {delay_ms} ms"
            ))
        }
        Action::PauseTasks { priorities } => {
            let n = c.pause_tasks(priorities).await.map_err(e)?;
            Ok(format!("paused {n} {priorities:?} tasks"))
        }
        Action::ResumeTasks { priorities } => {
            let n = c.resume_tasks(priorities).await.map_err(e)?;
            Ok(format!("resumed {n} {priorities:?} tasks"))
        }
        Action::SetConcurrency { max_per_agent } => {
            c.set_concurrency(*max_per_agent).await.map_err(e)?;
            Ok(format!("set concurrency to {max_per_agent} per agent"))
        }
        Action::SetCaching { enabled } => {
            c.set_caching(*enabled).await.map_err(e)?;
            Ok(format!(
                "response caching {}",
                if *enabled { "on" } else { "off" }
            ))
        }
        Action::SetPromptSimplification { enabled } => {
            c.set_prompt_simplification(*enabled).await.map_err(e)?;
            Ok(format!(
                "prompt simplification {}",
                if *enabled { "on" } else { "off" }
            ))
        }
        Action::EnsureAgents { min_healthy } => {
            let t = c.topology().await.map_err(e)?;
            if t.healthy_count >= *min_healthy {
                return Ok(format!(
                    "{} healthy agents already meet the quorum of {min_healthy}",
                    t.healthy_count
                ));
            }
            let missing = min_healthy - t.healthy_count;
            let ids = c.spawn_agents(missing).await.map_err(e)?;
            if (ids.len() as u32) < missing {
                return Err(format!("needed {missing} agents, got {}", ids.len()));
            }
            Ok(format!(
                "{} healthy of {min_healthy} required: spawned {}",
                t.healthy_count,
                ids.join(", ")
            ))
        }
        Action::SpawnAgents { count } => {
            let ids = c.spawn_agents(*count).await.map_err(e)?;
            if (ids.len() as u32) < *count {
                return Err(format!("asked for {count} agents, got {}", ids.len()));
            }
            Ok(format!("spawned {}", ids.join(", ")))
        }
    }
}
