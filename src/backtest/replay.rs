//! One candidate's replay: an [`Engine`] with its strategy states in memory, fed the
//! recorded inputs in order.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use super::model::{OutcomeModel, plan};
use super::report::{Changed, DecisionView, Origin, Tally};
use crate::events::{DisabledAgent, RecoveryHow};
use crate::heal::engine::decide::Next;
use crate::heal::engine::{Engine, limits, strategy_stream};
use crate::heal::strategy::{AnyState, ErasedStrategy, Signal};
use crate::heal::{Action, Attempt, Failure};

/// A failure's recorded recovery: when, and how it is known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RecordedRecovery {
    pub at: DateTime<Utc>,
    pub how: RecoveryHow,
}

/// A recorded phase of a failure: its attempts, and the failure's recorded recovery (given
/// with its first phase).
#[derive(Debug, Clone, Default)]
pub(crate) struct RecordedPhase {
    pub at: Option<DateTime<Utc>>,
    pub attempts: Vec<Attempt>,
    pub recovery: Option<RecordedRecovery>,
}

impl RecordedPhase {
    fn acting(&self) -> Option<&Attempt> {
        self.attempts
            .iter()
            .find(|a| matches!(a.decision.as_str(), "act" | "delegated"))
    }
}

/// A candidate's acting decision awaiting its outcome.
struct Awaiting {
    failure: Arc<Failure>,
    strategy: String,
    /// Members of the route after the acting one (a chain goes on after a failure).
    rest: Vec<String>,
    /// The outcome is history's (the same actions as recorded).
    observed: bool,
    /// When it was decided: a chain's next phase is decided at the same instant (the healer
    /// decides every phase of a heal at the heal's `now`).
    decided_at: DateTime<Utc>,
    /// The action plan, and whether a healthy status right after a success could recover
    /// the failure (an agent's failure naming no task, the agent kept in rotation).
    plan: String,
    status_eligible: bool,
    recovery: Option<RecordedRecovery>,
    /// Nothing more is recorded about the failure in the window (see [`Replay::release`]).
    released: bool,
}

/// How the candidate's treatment of a failure ended, for its recovery.
enum Treated {
    /// As history's (the recorded outcome): the recorded recovery.
    Observed,
    /// A modelled success at this instant.
    Modelled {
        at: DateTime<Utc>,
        plan: String,
        status_eligible: bool,
    },
    /// Anything else: no action, a modelled failure, an unknown outcome.
    Other,
}

/// A modelled outcome: when, the failure, success, duration.
type Due = Reverse<(DateTime<Utc>, String, bool, i64)>;

/// The candidate's phases of a failure not yet compared with recorded ones.
type Phases = (Arc<Failure>, DateTime<Utc>, VecDeque<Vec<Attempt>>);

/// One candidate's replay.
pub(crate) struct Replay {
    pub engine: Engine,
    /// Strategy states: stream -> (strategy, key, version, state).
    states: HashMap<String, (String, String, u64, AnyState)>,
    /// Acting decisions per agent (their times), for the hourly limit.
    counted: HashMap<String, VecDeque<DateTime<Utc>>>,
    awaiting: HashMap<String, Awaiting>,
    /// Modelled outcomes: (when, failure id, success, duration).
    due: BinaryHeap<Due>,
    /// Candidate phases not yet compared with a recorded one, per failure.
    phases: HashMap<String, Phases>,
    pub tally: Tally,
    pub model: OutcomeModel,
    pub decisions: u64,
    pub matching: u64,
    pub changed: Vec<Changed>,
    pub first_mismatch: Option<Changed>,
    /// Failures whose change is already listed: index in `changed`.
    listed: HashMap<String, usize>,
    /// Changes found when failures were released (candidate phases history never met),
    /// listed after `changed` at the end, as they were when every failure was kept to the
    /// window's end; with their first mismatch and their index.
    late: Vec<Changed>,
    late_first_mismatch: Option<Changed>,
    late_listed: HashMap<String, usize>,
    /// At most this many failures listed in `changed`.
    max_changed: usize,
    /// Failures whose decision changed, all of them; `changed_seen` holds the failures not
    /// released yet (by a hash of their id: 8 bytes each), so that each counts once.
    pub changed_failures: u64,
    changed_seen: HashSet<u64>,
    hasher: std::collections::hash_map::RandomState,
    /// Timed transitions: (instant, stream), each state armed once at its next instant.
    timers: BinaryHeap<Reverse<(DateTime<Utc>, String)>>,
    armed: HashMap<String, DateTime<Utc>>,
    /// The replay's time: the latest instant it moved to.
    clock: DateTime<Utc>,
    /// The window's end: recoveries from then on are not counted.
    until: DateTime<Utc>,
}

impl Replay {
    pub fn new(
        engine: Engine,
        model: OutcomeModel,
        max_changed: usize,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Replay {
        Replay {
            engine,
            states: HashMap::new(),
            counted: HashMap::new(),
            awaiting: HashMap::new(),
            due: BinaryHeap::new(),
            phases: HashMap::new(),
            tally: Tally::default(),
            model,
            decisions: 0,
            matching: 0,
            changed: Vec::new(),
            first_mismatch: None,
            listed: HashMap::new(),
            late: Vec::new(),
            late_first_mismatch: None,
            late_listed: HashMap::new(),
            max_changed,
            changed_failures: 0,
            changed_seen: HashSet::new(),
            hasher: Default::default(),
            timers: BinaryHeap::new(),
            armed: HashMap::new(),
            clock: since,
            until,
        }
    }

    /// Folds a recorded strategy event into the states (the warm-up before the window).
    pub fn warm(&mut self, stream: &str, version: u64, event_type: &str, payload: &Value) {
        let Some(name) = payload.get("strategy").and_then(Value::as_str) else {
            return;
        };
        let Some(strategy) = self.engine.strategy(name).cloned() else {
            return; // a strategy the candidate does not run starts nowhere
        };
        let key = payload
            .get("key")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let entry = self.states.entry(stream.to_owned()).or_insert_with(|| {
            (
                name.to_owned(),
                key.to_owned(),
                version.saturating_sub(1),
                strategy.new_state(),
            )
        });
        if entry.2 + 1 != version {
            return;
        }
        let _ = strategy.apply_json(&mut entry.3, payload);
        entry.2 = version;
        self.tally.strategy_event(stream, event_type, payload);
    }

    /// The window starts: the warm-up's figures are dropped (circuits open at the start
    /// isolate from it) and every state's next timed transition is armed.
    pub fn begin(&mut self, since: DateTime<Utc>) {
        self.tally.begin(since);
        self.clock = since;
        let streams: Vec<String> = self.states.keys().cloned().collect();
        for s in streams {
            self.arm(&s);
        }
    }

    /// Arms `stream`'s next timed transition, if it has one not armed yet.
    fn arm(&mut self, stream: &str) {
        let Some((name, _, _, state)) = self.states.get(stream) else {
            return;
        };
        let Some(at) = self.engine.strategy(name).and_then(|s| s.wakes_at(state)) else {
            return;
        };
        if self.armed.get(stream) == Some(&at) {
            return;
        }
        self.armed.insert(stream.to_owned(), at);
        self.timers.push(Reverse((at, stream.to_owned())));
    }

    /// A timed transition due at `at`: the state's strategy is ticked at that instant (or at
    /// the replay's time, if the instant was already behind it at the window's start).
    fn fire(&mut self, at: DateTime<Utc>, stream: String) {
        if self.armed.get(&stream) == Some(&at) {
            self.armed.remove(&stream);
        } else {
            return; // re-armed elsewhere since
        }
        let Some((name, key, _, state)) = self.states.get(&stream) else {
            return;
        };
        let Some(strategy) = self.engine.strategy(name).cloned() else {
            return;
        };
        if strategy.wakes_at(state) != Some(at) {
            self.arm(&stream);
            return;
        }
        let now = at.max(self.clock);
        self.clock = now;
        let key = key.clone();
        let reacted = {
            let state = &self.states[&stream].3;
            self.engine
                .react(strategy.as_ref(), state, &key, &Signal::Tick, now)
        };
        if let Some(r) = reacted
            && r.record
        {
            self.record(strategy.as_ref(), &stream, &r.reaction.events);
        }
    }

    /// Counts an acting decision recorded before the window against its agent's hourly limit.
    pub fn warm_limit(&mut self, agent: &str, at: DateTime<Utc>) {
        self.counted
            .entry(agent.to_owned())
            .or_default()
            .push_back(at);
    }

    fn state_of(&mut self, strategy: &dyn ErasedStrategy, key: &str) -> (String, u64) {
        let stream = strategy_stream(strategy.name(), key);
        let e = self.states.entry(stream.clone()).or_insert_with(|| {
            (
                strategy.name().to_owned(),
                key.to_owned(),
                0,
                strategy.new_state(),
            )
        });
        (stream, e.2)
    }

    /// Appends state events (folds them), and counts them in the figures.
    fn record(&mut self, strategy: &dyn ErasedStrategy, stream: &str, events: &[(String, Value)]) {
        let Some(e) = self.states.get_mut(stream) else {
            return;
        };
        for (t, v) in events {
            let _ = strategy.apply_json(&mut e.3, v);
            e.2 += 1;
            self.tally.strategy_event(stream, t, v);
        }
        if !events.is_empty() {
            self.arm(stream);
        }
    }

    /// Time passes up to `now`: modelled outcomes and timed transitions due by then, in time
    /// order (an outcome before a transition at the same instant).
    pub fn advance(&mut self, now: DateTime<Utc>) {
        loop {
            let outcome = self.due.peek().map(|Reverse((at, ..))| *at);
            let timer = self.timers.peek().map(|Reverse((at, _))| *at);
            match (outcome, timer) {
                (Some(o), t) if o <= now && t.is_none_or(|t| o <= t) => {
                    let Some(Reverse((at, id, success, _))) = self.due.pop() else {
                        break;
                    };
                    self.clock = self.clock.max(at);
                    // (An outcome that turned out to be history's is not drawn.)
                    if self.awaiting.get(&id).is_some_and(|a| !a.observed) {
                        self.outcome(&id, success, at, Origin::Modelled);
                    }
                }
                (_, Some(t)) if t <= now => {
                    let Some(Reverse((at, stream))) = self.timers.pop() else {
                        break;
                    };
                    self.fire(at, stream);
                }
                _ => break,
            }
        }
        self.clock = self.clock.max(now);
    }

    /// A recorded phase of `failure` at `now`: the candidate decides (unless this failure's
    /// later phases follow from its own outcomes), and the two are compared.
    pub fn failure_phase(
        &mut self,
        failure: &Arc<Failure>,
        first: bool,
        recorded: &RecordedPhase,
        now: DateTime<Utc>,
    ) {
        self.advance(now);
        if first {
            // The route's members, each as the engine names it.
            let members: Vec<_> = self
                .engine
                .members(&failure.failure_type)
                .iter()
                .filter_map(|m| self.engine.strategy(m.name()).cloned())
                .collect();
            self.phase(failure, members, recorded, now, recorded.recovery, false);
        }
        // A later phase the candidate decided before history's was read: when both act
        // alike, the outcome is history's.
        if let (Some(a), Some(r)) = (
            self.awaiting.get_mut(&failure.failure_id),
            recorded.acting(),
        ) && !a.observed
            && a.strategy == r.strategy
            && self
                .phases
                .get(&failure.failure_id)
                .is_some_and(|(_, _, q)| {
                    q.front()
                        .and_then(|p| p.iter().find(|x| x.strategy == r.strategy))
                        .is_some_and(|x| x.actions == r.actions)
                })
        {
            a.observed = true;
        }
        let candidate = match self.phases.get_mut(&failure.failure_id) {
            Some((_, _, q)) => {
                let c = q.pop_front();
                if q.is_empty() {
                    self.phases.remove(&failure.failure_id);
                }
                c
            }
            None => None,
        };
        self.compare(failure, now, &recorded.attempts, candidate, false);
    }

    /// Compares a recorded phase with the candidate's; `late`: a candidate phase history
    /// never met, found when its failure was released.
    fn compare(
        &mut self,
        failure: &Failure,
        at: DateTime<Utc>,
        recorded: &[Attempt],
        candidate: Option<Vec<Attempt>>,
        late: bool,
    ) {
        let candidate = candidate.unwrap_or_default();
        self.decisions += 1;
        // As the decisions' views compare (strategy, decision, reason), without building them.
        let same = recorded.len() == candidate.len()
            && recorded.iter().zip(&candidate).all(|(a, b)| {
                a.strategy == b.strategy && a.decision == b.decision && a.reason == b.reason
            });
        if same {
            self.matching += 1;
            return;
        }
        let view = |v: &[Attempt]| v.iter().map(DecisionView::from).collect::<Vec<_>>();
        let (r, c) = (view(recorded), view(&candidate));
        let mismatch = || Changed {
            failure_id: failure.failure_id.clone(),
            failure_type: failure.failure_type.clone(),
            agent_id: failure.agent_id.clone(),
            at,
            recorded: r.clone(),
            candidate: c.clone(),
        };
        let first = if late {
            &mut self.late_first_mismatch
        } else {
            &mut self.first_mismatch
        };
        if first.is_none() {
            *first = Some(mismatch());
        }
        // A decision changed when a strategy or a verdict differs (not only a reason's
        // numbers, such as a threshold it names).
        let labels = |v: &[DecisionView]| {
            v.iter()
                .map(|d| (d.strategy.clone(), d.decision.clone()))
                .collect::<Vec<_>>()
        };
        if labels(&r) == labels(&c) {
            return;
        }
        if self
            .changed_seen
            .insert(self.hasher.hash_one(&failure.failure_id))
        {
            self.changed_failures += 1;
        }
        if let Some(&i) = self.listed.get(&failure.failure_id) {
            self.changed[i].recorded.extend(r);
            self.changed[i].candidate.extend(c);
            return;
        }
        let (changed, listed) = if late {
            (&mut self.late, &mut self.late_listed)
        } else {
            (&mut self.changed, &mut self.listed)
        };
        match listed.get(&failure.failure_id) {
            Some(&i) => {
                changed[i].recorded.extend(r);
                changed[i].candidate.extend(c);
            }
            None if changed.len() >= self.max_changed => {}
            None => {
                listed.insert(failure.failure_id.clone(), changed.len());
                changed.push(Changed {
                    failure_id: failure.failure_id.clone(),
                    failure_type: failure.failure_type.clone(),
                    agent_id: failure.agent_id.clone(),
                    at,
                    recorded: r,
                    candidate: c,
                });
            }
        }
    }

    /// One phase of the candidate: `members` (names) in order until one acts or holds.
    fn phase(
        &mut self,
        failure: &Arc<Failure>,
        strategies: Vec<Arc<dyn ErasedStrategy>>,
        recorded: &RecordedPhase,
        now: DateTime<Utc>,
        recovery: Option<RecordedRecovery>,
        released: bool,
    ) {
        let mut attempts = Vec::new();
        if strategies.is_empty() {
            attempts.push(self.engine.no_strategy(failure));
        }
        // The member that acted, and its attempt's index.
        let mut acted: Option<(usize, usize)> = None;
        for (i, member) in strategies.iter().enumerate() {
            if !member.can_heal(failure) {
                attempts.push(self.engine.cannot_heal(member.as_ref(), failure));
                continue;
            }
            let key = member.key(failure);
            let (stream, version) = self.state_of(member.as_ref(), &key);
            let proposal = {
                let state = &self.states[&stream].3;
                self.engine
                    .propose(member.as_ref(), state, version, failure, now)
            };
            let mut limit = Ok(());
            if proposal.needs_limits && !proposal.decision.actions.is_empty() {
                let d = &proposal.decision;
                limit = self.check_limits(
                    failure,
                    member.name(),
                    &stream,
                    version + d.events.len() as u64,
                    &d.actions,
                    now,
                );
            }
            let mut step = self.engine.conclude(proposal, limit);
            if step.record_state && !step.decision.events.is_empty() {
                let events = std::mem::take(&mut step.decision.events);
                self.record(member.as_ref(), &stream, &events);
            }
            let acts = matches!(step.attempt.decision.as_str(), "act" | "delegated");
            // Only strategies, verdicts, reasons and actions are compared and counted.
            step.attempt.details = Default::default();
            attempts.push(step.attempt);
            match step.next {
                Next::Continue => continue,
                _ => {
                    if acts {
                        acted = Some((i, attempts.len() - 1));
                    }
                    break;
                }
            }
        }
        for a in &attempts {
            self.tally.attempt(a);
        }
        let acted = acted.map(|(i, j)| {
            let attempt = &attempts[j];
            let same = recorded
                .acting()
                .is_some_and(|r| r.strategy == attempt.strategy && r.actions == attempt.actions);
            let status_eligible = failure.task_id.is_none()
                && failure.agent_id.as_ref().is_some_and(|agent| {
                    !attempt.actions.iter().any(
                        |a| matches!(a, Action::UnregisterAgent { agent_id } if agent_id == agent),
                    )
                });
            (
                i,
                attempt.strategy.clone(),
                same,
                plan(&attempt.actions),
                status_eligible,
            )
        });
        self.phases
            .entry(failure.failure_id.clone())
            .or_insert_with(|| (Arc::clone(failure), now, VecDeque::new()))
            .2
            .push_back(attempts);
        let Some((i, strategy, same, acting_plan, status_eligible)) = acted else {
            // Nothing more comes of it in the candidate's hands.
            self.settle(failure, recovery, Treated::Other);
            return;
        };
        let rest: Vec<String> = strategies[i + 1..]
            .iter()
            .map(|m| m.name().to_owned())
            .collect();
        self.awaiting.insert(
            failure.failure_id.clone(),
            Awaiting {
                failure: Arc::clone(failure),
                strategy: strategy.clone(),
                rest,
                observed: same,
                decided_at: now,
                plan: acting_plan.clone(),
                status_eligible,
                recovery,
                released,
            },
        );
        if !same {
            match self.model.draw(&failure.failure_type, &acting_plan) {
                Some((success, ms)) => {
                    let at = now + Duration::milliseconds(ms);
                    self.due
                        .push(Reverse((at, failure.failure_id.clone(), success, ms)));
                }
                None => {
                    self.awaiting.remove(&failure.failure_id);
                    self.tally.outcome(&strategy, Origin::Unknown, false, 0);
                    self.settle(failure, recovery, Treated::Other);
                }
            }
        }
    }

    /// The healer's limits on the candidate's own history.
    fn check_limits(
        &mut self,
        failure: &Failure,
        strategy: &str,
        stream: &str,
        version_after: u64,
        actions: &[Action],
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        let l = self.engine.options().limits;
        let mut count_agent = None;
        if let (Some(max), Some(agent)) = (l.max_actions_per_agent_per_hour, &failure.agent_id) {
            let q = self.counted.entry(agent.clone()).or_default();
            let since = now - Duration::hours(1);
            while q.front().is_some_and(|t| *t <= since) {
                q.pop_front();
            }
            let n = q.iter().filter(|t| **t <= now).count() as u64;
            limits::agent_actions(failure, strategy, agent, n, max)?;
            count_agent = Some(agent.clone());
        }
        if let Some(max_share) = l.max_disabled_fraction {
            let disabling = limits::disabling_agents(actions);
            if !disabling.is_empty() {
                let mut disabled = BTreeMap::new();
                let mut known = std::collections::HashSet::new();
                for (s, (name, key, version, state)) in &self.states {
                    let Some(st) = self.engine.strategy(name) else {
                        continue;
                    };
                    let Some(agent) = st.agent_of_key(key) else {
                        continue;
                    };
                    known.insert(agent.to_owned());
                    if st.disables_agent(state, now) {
                        disabled.insert(
                            agent.to_owned(),
                            DisabledAgent {
                                agent: agent.to_owned(),
                                stream: s.clone(),
                                version: *version,
                            },
                        );
                    }
                }
                let total = l.fleet_size.map_or(known.len(), |n| n as usize);
                limits::fleet_disabled(
                    failure,
                    strategy,
                    disabled.into_values().collect(),
                    &disabling,
                    stream,
                    version_after,
                    total,
                    max_share,
                )?;
            }
        }
        if let Some(agent) = count_agent {
            self.counted.entry(agent).or_default().push_back(now);
        }
        Ok(())
    }

    /// A recorded outcome of `failure_id` by `strategy`: the candidate's, when it took the
    /// same action.
    pub fn recorded_outcome(
        &mut self,
        failure_id: &str,
        strategy: &str,
        success: bool,
        at: DateTime<Utc>,
    ) {
        self.advance(at);
        let observed = self
            .awaiting
            .get(failure_id)
            .is_some_and(|a| a.observed && a.strategy == strategy);
        if observed {
            self.outcome(failure_id, success, at, Origin::Observed);
        }
    }

    fn outcome(&mut self, failure_id: &str, success: bool, at: DateTime<Utc>, origin: Origin) {
        let Some(a) = self.awaiting.remove(failure_id) else {
            return;
        };
        let ttr = (at - a.failure.detected_at).num_milliseconds();
        self.tally.outcome(&a.strategy, origin, success, ttr);
        if let Some(strategy) = self.engine.strategy(&a.strategy).cloned() {
            let key = strategy.key(&a.failure);
            let (stream, _) = self.state_of(strategy.as_ref(), &key);
            let events = {
                let state = &self.states[&stream].3;
                strategy.on_result(state, &a.failure, success, at)
            };
            if self.engine.options().mode != crate::heal::Mode::SuggestOnly {
                self.record(strategy.as_ref(), &stream, &events);
            }
        }
        if !success && !a.rest.is_empty() {
            let rest = a
                .rest
                .iter()
                .filter_map(|n| self.engine.strategy(n).cloned())
                .collect();
            self.phase(
                &a.failure,
                rest,
                &RecordedPhase::default(),
                a.decided_at,
                a.recovery,
                a.released,
            );
            if a.released {
                // No recorded phase will meet it.
                self.unmet(&a.failure.failure_id);
                self.forget(&a.failure.failure_id);
            }
            return;
        }
        let treated = match origin {
            Origin::Observed => Treated::Observed,
            Origin::Modelled if success => Treated::Modelled {
                at,
                plan: a.plan,
                status_eligible: a.status_eligible,
            },
            _ => Treated::Other,
        };
        self.settle(&a.failure, a.recovery, treated);
        if a.released {
            self.forget(&a.failure.failure_id);
        }
    }

    /// The failures the replay holds: awaiting an outcome, or with phases not compared yet.
    pub fn held(&self) -> usize {
        self.awaiting.len() + self.phases.len()
    }

    /// Nothing more is recorded about `failure_id` in the window: what the candidate still
    /// holds of it ends as it would at the window's end (its phases history never met are
    /// changed decisions, an outcome awaited from history is unknown), except a modelled
    /// outcome still to come, which ends the failure when it comes. Memory follows the
    /// failures in flight, not the window.
    pub fn release(&mut self, failure_id: &str) {
        self.unmet(failure_id);
        match self.awaiting.get_mut(failure_id) {
            Some(a) if !a.observed => a.released = true,
            Some(_) => {
                if let Some(a) = self.awaiting.remove(failure_id) {
                    self.tally.outcome(&a.strategy, Origin::Unknown, false, 0);
                    self.settle(&a.failure, a.recovery, Treated::Other);
                }
                self.forget(failure_id);
            }
            None => self.forget(failure_id),
        }
    }

    /// The candidate's phases of `failure_id` that no recorded phase met: changed decisions.
    fn unmet(&mut self, failure_id: &str) {
        if let Some((failure, at, phases)) = self.phases.remove(failure_id) {
            for p in phases {
                self.compare(&failure, at, &[], Some(p), true);
            }
        }
    }

    /// A released failure is done: no comparison will count it again.
    fn forget(&mut self, failure_id: &str) {
        if !self.awaiting.contains_key(failure_id) {
            self.changed_seen.remove(&self.hasher.hash_one(failure_id));
        }
    }

    /// The candidate's treatment of a failure ended: its recovery is counted. Treated as
    /// history did, the recorded recovery; otherwise a healthy status drawn after a modelled
    /// success (see [`OutcomeModel`]), or else the world's own evidence as recorded (a
    /// success signal or a caller's confirmation; not a status, which answered history's
    /// remediation).
    fn settle(&mut self, failure: &Failure, recovery: Option<RecordedRecovery>, treated: Treated) {
        let world = recovery
            .filter(|r| r.how != RecoveryHow::Status)
            .map(|r| (r.at, Origin::Observed));
        let found = match treated {
            Treated::Observed => recovery.map(|r| (r.at, Origin::Observed)),
            Treated::Modelled {
                at,
                plan,
                status_eligible,
            } => {
                let drawn = (status_eligible
                    && self
                        .model
                        .draw_status_recovery(&failure.failure_type, &plan))
                .then_some((at, Origin::Modelled));
                match (drawn, world) {
                    (Some(d), Some(w)) => Some(if w.0 < d.0 { w } else { d }),
                    (d, w) => d.or(w),
                }
            }
            Treated::Other => world,
        };
        match found {
            Some((at, origin)) if at < self.until => self
                .tally
                .recovered(origin, (at - failure.detected_at).num_milliseconds()),
            _ => self.tally.unrecovered(),
        }
    }

    /// A failure detected in the window that history never decided (no phase was read): the
    /// candidate has nothing to decide either, and its recovery is the recorded one.
    pub fn undecided(&mut self, failure: &Failure, recovery: Option<RecordedRecovery>) {
        self.settle(failure, recovery, Treated::Observed);
    }

    /// A signal at `now`, to every strategy (only `only`, when given).
    pub fn signal(&mut self, signal: &Signal, now: DateTime<Utc>, only: Option<&str>) {
        self.advance(now);
        for strategy in self.engine.signalled(only) {
            let known: Vec<String> = if matches!(signal, Signal::Tick) {
                let mut k: Vec<String> = self
                    .states
                    .values()
                    .filter(|e| e.0 == strategy.name())
                    .map(|e| e.1.clone())
                    .collect();
                k.sort();
                k
            } else {
                Vec::new()
            };
            for key in strategy.signal_keys(signal, &known) {
                let (stream, _) = self.state_of(strategy.as_ref(), &key);
                let reacted = {
                    let state = &self.states[&stream].3;
                    self.engine
                        .react(strategy.as_ref(), state, &key, signal, now)
                };
                if let Some(r) = reacted
                    && r.record
                {
                    self.record(strategy.as_ref(), &stream, &r.reaction.events);
                }
            }
        }
    }

    /// Candidate phases never met by a recorded one (the candidate went on where history
    /// stopped) count as changed decisions.
    pub fn finish(&mut self) {
        let left: Vec<_> = self.phases.drain().map(|(_, v)| v).collect();
        for (failure, at, phases) in left {
            for p in phases {
                self.compare(&failure, at, &[], Some(p), true);
            }
        }
        let left: Vec<Awaiting> = self.awaiting.drain().map(|(_, a)| a).collect();
        for a in left {
            self.tally.outcome(&a.strategy, Origin::Unknown, false, 0);
            self.settle(&a.failure, a.recovery, Treated::Other);
        }
        // The changes found at releases come after the others, as at the window's end.
        if self.first_mismatch.is_none() {
            self.first_mismatch = self.late_first_mismatch.take();
        }
        let room = self.max_changed.saturating_sub(self.changed.len());
        self.changed.extend(self.late.drain(..).take(room));
    }
}
