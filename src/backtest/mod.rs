//! Backtests: recorded history replayed through a candidate configuration, without touching
//! the fleet or the log.
//!
//! [`backtest`] reads the window's events once, in the order they were recorded (a page at a
//! time: memory follows the states and the decisions awaiting an outcome, never the window),
//! and feeds every candidate's [`Engine`](crate::heal::Engine), the same engine the live
//! healer decides with:
//!
//! - **failures**: each recorded phase of a failure (its `healing_attempted` events) is
//!   decided again at the time it was decided then; a chain's later phases follow the
//!   candidate's own outcomes;
//! - **outcomes** ([`model`]): when the candidate takes the same action (same strategy, same
//!   actions) as history, the recorded result at the recorded time; otherwise a seeded draw
//!   from the window's own outcomes of that action plan on that failure type; with nothing
//!   to fit, `unknown` (counted, never guessed);
//! - **success signals** (`agent_succeeded`) and **usage reports**
//!   (`resource_usage_reported`), as signals at their time;
//! - **operator commands** on circuits (the transitions recorded with a `command`) and
//!   **permits** (the trials recorded as started), as the same signals;
//! - **the passage of time**: decisions are taken at their recorded instants, and strategies
//!   are time-aware (an open circuit is half-open from its deadline on, dated at the
//!   deadline); a tick at the window's end lets deadlines passed by then take effect. Ticks
//!   recorded in between are not replayed as such: a circuit's half-open period counts from
//!   its deadline either way.
//!
//! **Start and warm-up.** Each candidate starts from the strategy states at the window's
//! start, folded from the recorded strategy events before it (its own strategies only: a
//! strategy history did not run starts at rest), and from the acting decisions of the hour
//! before (for the hourly limit). When the candidate's parameters differ from those in
//! effect, this warm-up is history's state under the old parameters: counters are not all
//! zero at the start, and the candidate's own state takes over as it decides.
//!
//! **Fidelity.** [`Candidate::Current`] replays the configuration in effect (from the
//! `configuration_changed` events, switching where one is recorded in the window); its
//! [`Report::match_share`] is the share of decisions taken as recorded (strategy, decision
//! and reason), with the first mismatch. Limits are counted on the replay's own decisions;
//! the fleet limit's size is `limits.fleet_size`, or the agents with state (a coordinator's
//! topology is not known to a replay).
//!
//! The store is only read: a backtest appends nothing and calls no coordinator.

pub mod model;
mod replay;
pub mod report;

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use futures_util::StreamExt;
use serde_json::Value;

use crate::analytics::Window;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::events::HealEvent;
use crate::heal::engine::STRATEGY_STREAM_PREFIX;
use crate::heal::{Action, Attempt, Failure, Signal};
use crate::store::{EventFilter, Store};

pub use model::OutcomeModel;
use replay::{RecordedPhase, Replay};
pub use report::{Changed, DecisionView, Figures, Mttr, Origin, Report, Split};

/// A configuration to backtest.
#[derive(Debug, Clone)]
pub enum Candidate {
    /// The configuration in effect at each moment, from the log (the fidelity check).
    Current,
    /// A candidate configuration, with the name reports give it.
    Config { name: String, config: Box<Config> },
}

impl Candidate {
    /// A candidate read from a TOML file, checked as the healer checks its configuration:
    /// an unknown strategy or a bad parameter is refused with a one-line error.
    pub fn from_file(path: &std::path::Path) -> Result<Candidate> {
        let (config, _) = Config::load(Some(path))?;
        config.builder().engine()?;
        Ok(Candidate::Config {
            name: path.display().to_string(),
            config: Box::new(config),
        })
    }

    fn name(&self) -> String {
        match self {
            Candidate::Current => "current".into(),
            Candidate::Config { name, .. } => name.clone(),
        }
    }
}

/// Settings of a backtest.
#[derive(Debug, Clone, PartialEq)]
pub struct BacktestOptions {
    pub window: Window,
    /// Seeds the outcome model's draws.
    pub seed: u64,
}

/// Backtests every candidate over one read of the window (see the module documentation).
/// One report per candidate, in order.
pub async fn backtest(
    store: &Store,
    options: &BacktestOptions,
    candidates: &[Candidate],
) -> Result<Vec<Report>> {
    let Window { since, until } = options.window;
    let configs = configurations(store).await?;
    let (model, acts) = fit(store, &options.window, options.seed).await?;
    let in_effect = |at: DateTime<Utc>| -> Config {
        configs
            .iter()
            .rev()
            .find(|(t, _)| *t < at)
            .map(|(_, c)| c.clone())
            .unwrap_or_default()
    };
    let mut replays = Vec::with_capacity(candidates.len());
    for c in candidates {
        let config = match c {
            Candidate::Current => in_effect(since),
            Candidate::Config { config, .. } => (**config).clone(),
        };
        let engine = config.builder().engine()?.with_acting(acts);
        replays.push(Replay::new(engine, model.clone()));
    }

    // Warm-up: the states at the window's start, and the hour's counted actions.
    let mut events = store.read(EventFilter {
        stream_prefix: Some(STRATEGY_STREAM_PREFIX.to_owned()),
        until: Some(since),
        position_order: true,
        ..Default::default()
    });
    while let Some(e) = events.next().await {
        let e = e?;
        for r in &mut replays {
            r.warm(&e.stream_id, e.stream_version, &e.payload);
        }
    }
    drop(events);
    let mut events = store.read(EventFilter {
        stream_prefix: Some("limits-agent-".to_owned()),
        since: Some(since - Duration::hours(1)),
        until: Some(since),
        position_order: true,
        ..Default::default()
    });
    while let Some(e) = events.next().await {
        let e = e?;
        if let Some(HealEvent::LimitCounted(l)) = e.decode()
            && let Some(agent) = l.agent_id
        {
            for r in &mut replays {
                r.warm_limit(&agent, e.occurred_at);
            }
        }
    }
    drop(events);

    let mut d = Driver {
        replays,
        candidates,
        acts,
        open: None,
        failures: HashMap::new(),
        recorded: report::Tally::default(),
        replayed: 0,
    };
    let mut events = store.read(EventFilter {
        since: Some(since),
        until: Some(until),
        position_order: true,
        ..Default::default()
    });
    while let Some(e) = events.next().await {
        d.event(&e?)?;
    }
    drop(events);
    d.flush();
    for r in &mut d.replays {
        r.signal(&Signal::Tick, until, None);
        r.finish();
    }
    let recorded = d.recorded.finish(until);
    let mut reports = Vec::new();
    for (c, r) in candidates.iter().zip(d.replays) {
        let first_mismatch = r.first_mismatch.clone();
        let mut notes = vec![
            "states at the window's start are folded from the recorded strategy events before it"
                .to_owned(),
            format!(
                "outcomes of actions history did not take are drawn from the window's own \
                 outcomes (seed {}); none to fit: unknown",
                options.seed
            ),
        ];
        if !acts {
            notes.push("history delegated its actions (no coordinator): so does the replay".into());
        }
        reports.push(Report {
            candidate: c.name(),
            since,
            until,
            seed: options.seed,
            failures: d.replayed,
            decisions: r.decisions,
            matching: r.matching,
            match_share: if r.decisions == 0 {
                1.0
            } else {
                r.matching as f64 / r.decisions as f64
            },
            first_mismatch,
            recorded: recorded.clone(),
            backtest: r.tally.finish(until),
            changed: r.changed,
            notes,
        });
    }
    Ok(reports)
}

/// The configurations recorded, oldest first, each with its time.
async fn configurations(store: &Store) -> Result<Vec<(DateTime<Utc>, Config)>> {
    let mut out = Vec::new();
    let mut events = store.read(EventFilter::stream(crate::config::CONFIG_STREAM));
    while let Some(e) = events.next().await {
        let e = e?;
        if let Some(HealEvent::ConfigurationChanged(c)) = e.decode() {
            let config: Config = serde_json::from_value(c.config).map_err(|err| {
                Error::InvalidInput(format!(
                    "the configuration recorded at position {} does not read: {err}",
                    e.position
                ))
            })?;
            out.push((e.occurred_at, config));
        }
    }
    Ok(out)
}

/// The outcome model fitted on the window, and whether history acted (rather than
/// delegated).
async fn fit(store: &Store, window: &Window, seed: u64) -> Result<(OutcomeModel, bool)> {
    let mut model = OutcomeModel::new(seed);
    let mut acting: HashMap<String, (String, String, String)> = HashMap::new();
    let (mut acted, mut delegated) = (false, false);
    let mut events = store.read(EventFilter {
        since: Some(window.since),
        until: Some(window.until),
        event_types: vec!["healing_attempted".into(), "healing_completed".into()],
        position_order: true,
        ..Default::default()
    });
    while let Some(e) = events.next().await {
        match e?.decode() {
            Some(HealEvent::HealingAttempted(a)) => {
                acted |= a.decision == "act";
                delegated |= a.decision == "delegated";
                if matches!(a.decision.as_str(), "act" | "delegated") {
                    let actions: Vec<Action> = a
                        .actions
                        .into_iter()
                        .filter_map(|v| serde_json::from_value(v).ok())
                        .collect();
                    acting.insert(
                        a.failure_id,
                        (
                            a.strategy,
                            a.failure_type.unwrap_or_default(),
                            model::plan(&actions),
                        ),
                    );
                }
            }
            Some(HealEvent::HealingCompleted(c)) => {
                if acting
                    .get(&c.failure_id)
                    .is_some_and(|(s, _, _)| *s == c.strategy)
                    && let Some((_, t, plan)) = acting.remove(&c.failure_id)
                {
                    model.observe(&t, &plan, c.success, c.duration_ms);
                }
            }
            _ => {}
        }
    }
    Ok((model, acted || !delegated))
}

/// A failure of the window, while more of it may come.
struct Tracked {
    failure: Failure,
    /// A phase of it was read.
    phased: bool,
    /// The strategy of its recorded acting decision awaiting an outcome.
    acting: Option<String>,
}

/// A recorded phase being read (its events are contiguous in the log).
struct Open {
    failure: Failure,
    first: bool,
    phase: RecordedPhase,
}

/// Feeds the window's events to the replays and to the recorded side's tally.
struct Driver<'a> {
    replays: Vec<Replay>,
    candidates: &'a [Candidate],
    acts: bool,
    open: Option<Open>,
    /// Failures detected in the window and not settled yet (no phase read, or an acting
    /// decision whose outcome, or next phase, may come): memory follows the failures in
    /// flight.
    failures: HashMap<String, Tracked>,
    recorded: report::Tally,
    replayed: u64,
}

impl Driver<'_> {
    fn event(&mut self, e: &crate::event::RecordedEvent) -> Result<()> {
        let decoded = e.decode();
        // Does the event continue the phase being read?
        if let Some(open) = &mut self.open {
            let same = e.stream_id == open.failure.stream_id();
            match &decoded {
                Some(HealEvent::HealingAttempted(a)) if same => {
                    open.phase.attempts.push(attempt(a));
                    return Ok(());
                }
                Some(HealEvent::HealingCompleted(c))
                    if same
                        && open
                            .phase
                            .attempts
                            .iter()
                            .any(|a| a.strategy == c.strategy && a.decision == "failed") =>
                {
                    return Ok(());
                }
                _ => self.flush(),
            }
        }
        let at = e.occurred_at;
        match decoded {
            Some(HealEvent::FailureDetected(d)) => {
                let failure = Failure {
                    failure_id: d.failure_id,
                    failure_type: d.failure_type,
                    agent_id: d.agent_id,
                    task_id: d.task_id,
                    severity: d.severity,
                    detected_at: e.occurred_at,
                    source_event: d.source_event,
                    metadata: d.metadata,
                };
                self.replayed += 1;
                self.failures.insert(
                    failure.failure_id.clone(),
                    Tracked {
                        failure,
                        phased: false,
                        acting: None,
                    },
                );
            }
            Some(HealEvent::HealingAttempted(a)) => {
                // A phase starts (the first one with the failure's detection).
                let Some(t) = self.failures.get(&a.failure_id) else {
                    return Ok(()); // detected before the window
                };
                let (failure, first) = (t.failure.clone(), !t.phased);
                self.open = Some(Open {
                    failure,
                    first,
                    phase: RecordedPhase {
                        at: Some(at),
                        attempts: vec![attempt(&a)],
                    },
                });
            }
            Some(HealEvent::HealingCompleted(c)) => {
                if let Some(t) = self.failures.get_mut(&c.failure_id)
                    && t.acting.as_deref() == Some(c.strategy.as_str())
                {
                    let ttr = (at - t.failure.detected_at).num_milliseconds();
                    self.recorded
                        .outcome(&c.strategy, Origin::Observed, c.success, ttr);
                    t.acting = None;
                    if c.success {
                        self.failures.remove(&c.failure_id);
                    }
                }
                for r in &mut self.replays {
                    r.recorded_outcome(&c.failure_id, &c.strategy, c.success, at);
                }
            }
            Some(HealEvent::AgentSucceeded(s)) => {
                let signal = Signal::AgentSucceeded {
                    agent_id: s.agent_id,
                    task_id: s.task_id,
                };
                for r in &mut self.replays {
                    r.signal(&signal, at, None);
                }
            }
            Some(HealEvent::ResourceUsageReported(u)) => {
                let signal = Signal::ResourceUsage {
                    resource_type: u.resource_type,
                    current_usage: u.current_usage,
                    limit: u.limit,
                };
                for r in &mut self.replays {
                    r.signal(&signal, at, None);
                }
            }
            Some(HealEvent::ConfigurationChanged(c)) => {
                let config: Config = serde_json::from_value(c.config).map_err(|err| {
                    Error::InvalidInput(format!(
                        "the configuration recorded at position {} does not read: {err}",
                        e.position
                    ))
                })?;
                for (r, cand) in self.replays.iter_mut().zip(self.candidates) {
                    if matches!(cand, Candidate::Current) {
                        r.engine = config.builder().engine()?.with_acting(self.acts);
                    }
                }
            }
            _ if e.stream_id.starts_with(STRATEGY_STREAM_PREFIX) => self.strategy_event(e),
            _ => {}
        }
        Ok(())
    }

    /// A recorded strategy event: counted for the recorded side; operator commands and
    /// permits are replayed as signals.
    fn strategy_event(&mut self, e: &crate::event::RecordedEvent) {
        self.recorded
            .strategy_event(&e.stream_id, &e.event_type, &e.payload);
        let key = e.payload.get("key").and_then(Value::as_str);
        let strategy = e.payload.get("strategy").and_then(Value::as_str);
        let (Some(key), Some(strategy)) = (key, strategy) else {
            return;
        };
        let details = e.payload.get("details");
        let command = details
            .and_then(|d| d.get("command"))
            .and_then(Value::as_str);
        if e.event_type == "circuit_transitioned"
            && let Some(command) = command
        {
            let reason = details
                .and_then(|d| d.get("operator_reason"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let signal = Signal::Command {
                key: key.to_owned(),
                command: command.to_owned(),
                reason: reason.to_owned(),
            };
            let now = recorded_now(e);
            for r in &mut self.replays {
                r.signal(&signal, now, Some(strategy));
            }
        } else if e.event_type == "circuit_trial_started" {
            let signal = Signal::Permit {
                agent_id: key.to_owned(),
            };
            let now = recorded_now(e);
            for r in &mut self.replays {
                r.signal(&signal, now, None);
            }
        }
    }

    /// Ends the phase being read: every candidate decides it, and it is compared.
    fn flush(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        let at = open.phase.at.unwrap_or(open.failure.detected_at);
        for a in &open.phase.attempts {
            self.recorded.attempt(a);
        }
        for r in &mut self.replays {
            r.failure_phase(&open.failure, open.first, &open.phase, at);
        }
        let id = &open.failure.failure_id;
        match open
            .phase
            .attempts
            .iter()
            .find(|a| matches!(a.decision.as_str(), "act" | "delegated"))
        {
            Some(a) => {
                if let Some(t) = self.failures.get_mut(id) {
                    t.phased = true;
                    t.acting = Some(a.strategy.clone());
                }
            }
            // Nothing more comes of it.
            None => {
                self.failures.remove(id);
            }
        }
    }
}

/// The instant a signal's reaction was taken at: its `at` (a deadline's transition is dated
/// earlier; the signal came when it was recorded, at most `recorded_at`).
fn recorded_now(e: &crate::event::RecordedEvent) -> DateTime<Utc> {
    e.payload
        .get("noticed_at")
        .or_else(|| e.payload.get("at"))
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map_or(e.occurred_at, |t| t.with_timezone(&Utc))
}

fn attempt(a: &crate::events::HealingAttempted) -> Attempt {
    Attempt {
        strategy: a.strategy.clone(),
        decision: a.decision.clone(),
        reason: a.reason.clone(),
        details: a.details.clone(),
        actions: a
            .actions
            .iter()
            .filter_map(|v| serde_json::from_value(v.clone()).ok())
            .collect(),
        results: Vec::new(),
        success: None,
    }
}
