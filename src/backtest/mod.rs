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
//! - **the passage of time**: decisions are taken at their recorded instants, and between
//!   inputs every timed transition of the candidate's states happens at its instant
//!   ([`Strategy::wakes_at`](crate::heal::Strategy::wakes_at)): an open circuit turns
//!   half-open at its deadline, a half-open period without a verdict re-opens when its
//!   `half_open_max_wait_ms` is up, a restart backoff resets after its healthy period, each
//!   as a tick of that state at that instant (a healer that ticks at every deadline). Modelled
//!   outcomes come at their modelled instants, in time order with those transitions.
//! - **recoveries** (MTTR is detection to recovery, as in the analytics): each failure's
//!   recorded recovery is read with its detection (from the `failures` read model). Treated
//!   as history did, a failure recovers as recorded; treated otherwise, a modelled success
//!   may recover at once by a healthy status ([`model`]), and else the world's own evidence
//!   stands (a success signal or a caller's confirmation, as recorded); a status recovery
//!   answered history's remediation and is not carried over.
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
mod read;
mod replay;
pub mod report;
mod workers;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use futures_util::StreamExt;
use serde_json::Value;

use crate::analytics::Window;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::events::HealEvent;
use crate::heal::engine::STRATEGY_STREAM_PREFIX;
use crate::heal::{Action, Failure, Signal};
use crate::store::{EventFilter, Store};

pub use model::OutcomeModel;
use read::Input;
use replay::{RecordedPhase, RecordedRecovery, Replay};
pub use report::{
    Changed, DecisionView, Figures, Mttr, Origin, Report, Setting, Split, Sweep, SweepRow,
};
use workers::Cmd;

pub mod html;

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
    /// At most this many changed failures listed per report (all are counted): memory
    /// follows this, not the window.
    pub max_changed: usize,
    /// Keeps every failure of the window until its end, instead of releasing each once the
    /// read is past the last event naming it (the reports are the same; memory then grows
    /// with the failures of the window that await an outcome never recorded). For
    /// comparison.
    pub keep_failures_to_end: bool,
}

impl BacktestOptions {
    /// A backtest of `window`, seed 1, the first 1,000 changed failures listed.
    pub fn new(window: Window) -> BacktestOptions {
        BacktestOptions {
            window,
            seed: 1,
            max_changed: 1000,
            keep_failures_to_end: false,
        }
    }
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
    let span = window_positions(store, &options.window).await?;
    let (model, acts) = fit(store, &options.window, span, options.seed).await?;
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
        let engine = config
            .builder()
            .engine()?
            .with_acting(acts)
            .without_state_descriptions();
        replays.push(Replay::new(
            engine,
            model.clone(),
            options.max_changed,
            since,
            until,
        ));
    }

    // Warm-up: the states at the window's start, and the hour's counted actions.
    let mut recorded = report::Tally::default();
    warm_up(store, since, |stream, version, event_type, payload| {
        recorded.strategy_event(stream, event_type, payload);
        for r in &mut replays {
            r.warm(stream, version, event_type, payload);
        }
    })
    .await?;
    let hour = Window::new(since - Duration::hours(1), since)?;
    let hour_span = window_positions(store, &hour).await?;
    let mut events = store.read(EventFilter {
        stream_prefix: Some("limits-agent-".to_owned()),
        since: Some(hour.since),
        until: Some(hour.until),
        after_position: hour_span.0,
        up_to_position: Some(hour_span.1),
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
    recorded.begin(since);
    for r in &mut replays {
        r.begin(since);
    }
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

    let slots = replays
        .into_iter()
        .zip(candidates)
        .enumerate()
        .map(|(index, (replay, c))| workers::Slot {
            index,
            replay,
            current: matches!(c, Candidate::Current),
            acts,
            held: 0,
        })
        .collect();
    let mut d = Driver {
        workers: workers::Workers::start(slots),
        open: None,
        failures: HashMap::new(),
        releases: BinaryHeap::new(),
        keep: options.keep_failures_to_end,
        held: 0,
        last_read: span.0,
        recorded,
        replayed: 0,
        until,
    };
    // The next pages are read (and their payloads parsed) while this one is fed.
    let (tx, mut pages) = tokio::sync::mpsc::channel::<Result<Vec<read::Read>>>(2);
    let (reader_store, window) = (store.clone(), options.window);
    tokio::spawn(async move {
        let mut reader = read::WindowReader::new(&reader_store, span, &window);
        loop {
            let mut page = Vec::new();
            let read = reader.page(&mut page).await;
            let more = matches!(read, Ok(true));
            if tx.send(read.map(|_| page)).await.is_err() || !more {
                return;
            }
        }
    });
    while let Some(page) = pages.recv().await {
        for r in page? {
            d.event(r).await?;
        }
    }
    d.flush().await;
    // Every failure still held ends as at the window's end.
    d.release(i64::MAX).await;
    d.workers.send(workers::Cmd::End(until)).await;
    let held = d.held;
    let slots = d.workers.finish().await?;
    let recorded = d.recorded.finish(until);
    let mut reports = Vec::new();
    for (c, slot) in candidates.iter().zip(slots) {
        let r = slot.replay;
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
            changed_failures: r.changed_failures,
            changed: r.changed,
            notes,
            failures_held: held.max(slot.held),
        });
    }
    Ok(reports)
}

/// The configuration in effect at `at`: the last one recorded before it, or the defaults.
pub async fn configuration_at(store: &Store, at: DateTime<Utc>) -> Result<Config> {
    Ok(configurations(store)
        .await?
        .into_iter()
        .rev()
        .find(|(t, _)| *t < at)
        .map(|(_, c)| c)
        .unwrap_or_default())
}

/// A sweep: `base` with every combination of `settings` (each a dotted key and its values,
/// as [`Config::sweep`] takes them), backtested over one read of the window (every engine
/// fed the same events). The combinations are checked before anything is read: an unknown
/// key, a bad value or an empty list is refused in one line. Rows come best first by health
/// score; a sweep lists no changed decisions, it counts them.
pub async fn sweep(
    store: &Store,
    options: &BacktestOptions,
    base_name: &str,
    base: &Config,
    settings: &[(String, Vec<String>)],
) -> Result<Sweep> {
    let combos = base.sweep(settings)?;
    let mut candidates = Vec::with_capacity(combos.len());
    for (label, config) in combos {
        config.builder().engine()?;
        candidates.push(Candidate::Config {
            name: label,
            config: Box::new(config),
        });
    }
    let options = BacktestOptions {
        max_changed: 0,
        ..options.clone()
    };
    let reports = backtest(store, &options, &candidates).await?;
    // The values of combination `i`: the last key varies fastest.
    let value_of = |i: usize, j: usize| -> &str {
        let inner: usize = settings[j + 1..].iter().map(|(_, v)| v.len()).product();
        let values = &settings[j].1;
        &values[(i / inner) % values.len()]
    };
    let (since, until, seed) = (options.window.since, options.window.until, options.seed);
    let failures = reports.first().map_or(0, |r| r.failures);
    let recorded = reports
        .first()
        .map(|r| r.recorded.clone())
        .unwrap_or_default();
    let mut rows: Vec<SweepRow> = reports
        .into_iter()
        .enumerate()
        .map(|(i, r)| SweepRow {
            label: r.candidate,
            settings: settings
                .iter()
                .enumerate()
                .map(|(j, (key, _))| Setting {
                    key: key.clone(),
                    value: value_of(i, j).to_owned(),
                })
                .collect(),
            decisions: r.decisions,
            matching: r.matching,
            match_share: r.match_share,
            changed_failures: r.changed_failures,
            figures: r.backtest,
        })
        .collect();
    rows.sort_by(|a, b| b.figures.health_score.total_cmp(&a.figures.health_score));
    Ok(Sweep {
        base: base_name.to_owned(),
        since,
        until,
        seed,
        failures,
        recorded,
        rows,
    })
}

/// Every strategy event that occurred before `since`, each stream's in version order, to
/// `f(stream, version, type, payload)`: read through the streams' index (strategy streams
/// only, a page at a time), never by scanning the log before the window.
async fn warm_up(
    store: &Store,
    since: DateTime<Utc>,
    mut f: impl FnMut(&str, u64, &str, &Value),
) -> Result<()> {
    const PAGE: i64 = 1024;
    // The prefix's successor: "strategy." (every id starting with "strategy-" sorts below).
    let end = format!("{}.", STRATEGY_STREAM_PREFIX.trim_end_matches('-'));
    let (mut stream, mut version) = (STRATEGY_STREAM_PREFIX.to_owned(), 0i64);
    loop {
        let rows: Vec<(String, i64, String, String)> = sqlx::query_as(
            "SELECT stream_id, stream_version, event_type, payload FROM events \
             WHERE stream_id >= ?1 AND stream_id < ?2 \
               AND (stream_id > ?1 OR stream_version > ?3) AND occurred_at < ?4 \
             ORDER BY stream_id, stream_version LIMIT ?5",
        )
        .bind(&stream)
        .bind(&end)
        .bind(version)
        .bind(crate::time::to_micros(since))
        .bind(PAGE)
        .fetch_all(store.read_pool())
        .await
        .map_err(Error::from)?;
        let full = rows.len() as i64 == PAGE;
        for (s, v, t, payload) in &rows {
            let payload: Value = serde_json::from_str(payload).map_err(|e| {
                Error::InvalidInput(format!(
                    "stored payload of {s} version {v} is not JSON: {e}"
                ))
            })?;
            f(s, u64::try_from(*v).unwrap_or(0), t, &payload);
        }
        match rows.into_iter().last() {
            Some((s, v, _, _)) if full => (stream, version) = (s, v),
            _ => return Ok(()),
        }
    }
}

/// The positions the window's events lie within: `(after, up_to)`, read from the time
/// index, so that the reads in position order start at the window's first event rather than
/// scanning the log before it (and stop at its last).
async fn window_positions(store: &Store, window: &Window) -> Result<(i64, i64)> {
    let (lo, hi): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT MIN(position), MAX(position) FROM events INDEXED BY events_by_time \
         WHERE occurred_at >= ?1 AND occurred_at < ?2",
    )
    .bind(crate::time::to_micros(window.since))
    .bind(crate::time::to_micros(window.until))
    .fetch_one(store.read_pool())
    .await
    .map_err(Error::from)?;
    Ok(match (lo, hi) {
        (Some(lo), Some(hi)) => (lo - 1, hi),
        _ => (0, 0),
    })
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
///
/// Read by position within the window's span, the types and times filtered row by row (the
/// unary `+`: through the type index, SQLite sorted every page's whole window); outcomes from
/// their columns (the store copies `failure_id`, `strategy`, `success` and `duration_ms` out
/// of each payload), recoveries by their `how`, and only decisions' payloads parsed.
async fn fit(
    store: &Store,
    window: &Window,
    span: (i64, i64),
    seed: u64,
) -> Result<(OutcomeModel, bool)> {
    use sqlx::Row;
    let mut model = OutcomeModel::new(seed);
    // Per failure: the acting decision's (strategy, failure type, plan).
    let mut acting: HashMap<String, (String, String, String)> = HashMap::new();
    let (mut acted, mut delegated) = (false, false);
    // The last success counted: a status recovery comes in the same append, right after.
    let mut last_success: Option<(String, String, String)> = None;
    const PAGE: i64 = 4096;
    let mut after = span.0;
    loop {
        let rows = sqlx::query(
            "SELECT position, event_type, schema_version, failure_id, strategy, success, \
                    duration_ms, \
                    CASE WHEN event_type = 'healing_attempted' THEN payload END, \
                    CASE WHEN event_type = 'failure_recovered' THEN payload ->> '$.how' END \
             FROM events \
             WHERE position > ?1 AND position <= ?2 \
               AND +event_type IN ('healing_attempted', 'healing_completed', \
                                   'failure_recovered') \
               AND +occurred_at >= ?3 AND +occurred_at < ?4 \
             ORDER BY position LIMIT ?5",
        )
        .bind(after)
        .bind(span.1)
        .bind(crate::time::to_micros(window.since))
        .bind(crate::time::to_micros(window.until))
        .bind(PAGE)
        .fetch_all(store.read_pool())
        .await
        .map_err(Error::from)?;
        let full = rows.len() as i64 == PAGE;
        for row in &rows {
            let get = |e: sqlx::Error| Error::from(e);
            after = row.try_get(0).map_err(get)?;
            let event_type: &str = row.try_get(1).map_err(get)?;
            let known = row.try_get::<i64, _>(2).map_err(get)? == 1;
            let failure_id: Option<&str> = row.try_get(3).map_err(get)?;
            match event_type {
                "healing_attempted" if known => {
                    let payload: &str = row.try_get(7).map_err(get)?;
                    let decoded = read::parse::<crate::events::HealingAttempted>(payload);
                    if decoded.is_none()
                        && serde_json::from_str::<serde::de::IgnoredAny>(payload).is_err()
                    {
                        continue; // not JSON: skipped
                    }
                    if let Some(a) = decoded {
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
                }
                "healing_completed" if known => {
                    let strategy: Option<&str> = row.try_get(4).map_err(get)?;
                    let success: Option<bool> = row.try_get(5).map_err(get)?;
                    let duration_ms: Option<i64> = row.try_get(6).map_err(get)?;
                    if let (Some(id), Some(strategy), Some(success), Some(duration_ms)) =
                        (failure_id, strategy, success, duration_ms)
                        && acting.get(id).is_some_and(|(s, _, _)| s == strategy)
                        && let Some((_, t, plan)) = acting.remove(id)
                    {
                        model.observe(&t, &plan, success, duration_ms);
                        if success {
                            last_success = Some((id.to_owned(), t, plan));
                            continue;
                        }
                    }
                }
                "failure_recovered" if known => {
                    let how: Option<&str> = row.try_get(8).map_err(get)?;
                    if how == Some("status")
                        && let Some((id, t, plan)) = &last_success
                        && failure_id == Some(id.as_str())
                    {
                        model.observe_status_recovery(t, plan);
                    }
                }
                _ => {}
            }
            last_success = None;
        }
        if !full {
            break;
        }
    }
    Ok((model, acted || !delegated))
}

/// A failure of the window, while more of it may come.
struct Tracked {
    failure: Arc<Failure>,
    /// A phase of it was read.
    phased: bool,
    /// The strategy of its recorded acting decision awaiting an outcome.
    acting: Option<String>,
    /// Its recorded recovery (from the `failures` read model).
    recovery: Option<RecordedRecovery>,
}

/// A recorded phase being read (its events are contiguous in the log).
struct Open {
    failure: Arc<Failure>,
    first: bool,
    phase: RecordedPhase,
}

/// Feeds the window's events to the replays and to the recorded side's tally.
struct Driver {
    workers: workers::Workers,
    open: Option<Open>,
    /// Failures detected in the window and not settled yet (no phase read, or an acting
    /// decision whose outcome, or next phase, may come).
    failures: HashMap<String, Tracked>,
    /// Each failure detected in the window, by the position of the last event naming it:
    /// once the read is past it, nothing more comes of it, and it is released (from here and
    /// from the replays). Memory follows the failures in flight, not the window.
    releases: BinaryHeap<Reverse<(i64, String)>>,
    /// Release nothing before the window's end ([`BacktestOptions::keep_failures_to_end`]).
    keep: bool,
    /// The most failures held at once.
    held: usize,
    /// The position of the last event read.
    last_read: i64,
    recorded: report::Tally,
    replayed: u64,
    until: DateTime<Utc>,
}

impl Driver {
    async fn event(&mut self, e: read::Read) -> Result<()> {
        // Does the event continue the phase being read? Only if no other event of the window
        // came between (the events the read skips end a phase).
        let adjacent = e.previous == Some(self.last_read);
        self.last_read = e.position;
        if let Some(open) = &mut self.open {
            let same = |stream_failure: &Option<String>| {
                adjacent && stream_failure.as_deref() == Some(open.failure.failure_id.as_str())
            };
            match &e.input {
                Input::Attempted {
                    stream_failure,
                    attempt,
                    ..
                } if same(stream_failure) => {
                    open.phase.attempts.push(attempt.clone());
                    return Ok(());
                }
                Input::Completed {
                    stream_failure,
                    strategy,
                    ..
                } if same(stream_failure)
                    && open
                        .phase
                        .attempts
                        .iter()
                        .any(|a| a.strategy == *strategy && a.decision == "failed") =>
                {
                    return Ok(());
                }
                _ => self.flush().await,
            }
        }
        if !self.keep {
            self.release(e.position).await;
        }
        let at = e.occurred_at;
        match e.input {
            Input::Detected {
                failure,
                recovery,
                last,
            } => {
                self.replayed += 1;
                match recovery {
                    Some(r) if r.at < self.until => self.recorded.recovered(
                        Origin::Observed,
                        (r.at - failure.detected_at).num_milliseconds(),
                    ),
                    _ => self.recorded.unrecovered(),
                }
                self.releases
                    .push(Reverse((last, failure.failure_id.clone())));
                self.failures.insert(
                    failure.failure_id.clone(),
                    Tracked {
                        failure: Arc::new(failure),
                        phased: false,
                        acting: None,
                        recovery,
                    },
                );
                self.held = self.held.max(self.failures.len());
            }
            Input::Attempted {
                failure_id,
                attempt,
                ..
            } => {
                // A phase starts (the first one with the failure's detection).
                let Some(t) = self.failures.get(&failure_id) else {
                    return Ok(()); // detected before the window
                };
                self.open = Some(Open {
                    failure: Arc::clone(&t.failure),
                    first: !t.phased,
                    phase: RecordedPhase {
                        at: Some(at),
                        attempts: vec![attempt],
                        recovery: t.recovery,
                    },
                });
            }
            Input::Completed {
                failure_id,
                strategy,
                success,
                ..
            } => {
                if let Some(t) = self.failures.get_mut(&failure_id)
                    && t.acting.as_deref() == Some(strategy.as_str())
                {
                    let ttr = (at - t.failure.detected_at).num_milliseconds();
                    self.recorded
                        .outcome(&strategy, Origin::Observed, success, ttr);
                    t.acting = None;
                    if success {
                        self.failures.remove(&failure_id);
                    }
                }
                self.workers
                    .send(Cmd::Outcome {
                        failure_id,
                        strategy,
                        success,
                        at,
                    })
                    .await;
            }
            Input::AgentSucceeded(s) => {
                let signal = Signal::AgentSucceeded {
                    agent_id: s.agent_id,
                    task_id: s.task_id,
                };
                self.signal(signal, at, None).await;
            }
            Input::ResourceUsage(u) => {
                let signal = Signal::ResourceUsage {
                    resource_type: u.resource_type,
                    current_usage: u.current_usage,
                    limit: u.limit,
                };
                self.signal(signal, at, None).await;
            }
            Input::Configuration(config) => {
                let config: Config = serde_json::from_value(config).map_err(|err| {
                    Error::InvalidInput(format!(
                        "the configuration recorded at position {} does not read: {err}",
                        e.position
                    ))
                })?;
                // Refused here, as the replays switch to it on their threads.
                config.builder().engine()?;
                self.workers
                    .send(Cmd::Configuration(Arc::new(config)))
                    .await;
            }
            Input::Strategy {
                stream_id,
                event_type,
                payload,
            } => {
                self.strategy_event(&stream_id, &event_type, &payload, at)
                    .await
            }
            Input::Other => {}
        }
        Ok(())
    }

    async fn signal(&mut self, signal: Signal, at: DateTime<Utc>, only: Option<String>) {
        self.workers.send(Cmd::Signal { signal, at, only }).await;
    }

    /// Releases the failures whose last event comes before `position`: a failure history
    /// never decided is settled as at the window's end (its recorded recovery), and the
    /// replays end what they hold of each (see [`Replay::release`]).
    async fn release(&mut self, position: i64) {
        while let Some(Reverse((last, _))) = self.releases.peek()
            && *last < position
        {
            let Some(Reverse((_, id))) = self.releases.pop() else {
                break;
            };
            match self.failures.remove(&id) {
                Some(t) if !t.phased => {
                    self.workers
                        .send(Cmd::Undecided {
                            failure: t.failure,
                            recovery: t.recovery,
                        })
                        .await;
                }
                _ => self.workers.send(Cmd::Release(id)).await,
            }
        }
    }

    /// A recorded strategy event: counted for the recorded side; operator commands and
    /// permits are replayed as signals.
    async fn strategy_event(
        &mut self,
        stream_id: &str,
        event_type: &str,
        payload: &Value,
        occurred_at: DateTime<Utc>,
    ) {
        self.recorded.strategy_event(stream_id, event_type, payload);
        let key = payload.get("key").and_then(Value::as_str);
        let strategy = payload.get("strategy").and_then(Value::as_str);
        let (Some(key), Some(strategy)) = (key, strategy) else {
            return;
        };
        let details = payload.get("details");
        let command = details
            .and_then(|d| d.get("command"))
            .and_then(Value::as_str);
        if event_type == "circuit_transitioned"
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
            let now = recorded_now(payload, occurred_at);
            self.signal(signal, now, Some(strategy.to_owned())).await;
        } else if event_type == "circuit_trial_started" {
            let signal = Signal::Permit {
                agent_id: key.to_owned(),
            };
            let now = recorded_now(payload, occurred_at);
            self.signal(signal, now, None).await;
        }
    }

    /// Ends the phase being read: every candidate decides it, and it is compared.
    async fn flush(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        let at = open.phase.at.unwrap_or(open.failure.detected_at);
        for a in &open.phase.attempts {
            self.recorded.attempt(a);
        }
        let id = open.failure.failure_id.clone();
        let acting = open
            .phase
            .attempts
            .iter()
            .find(|a| matches!(a.decision.as_str(), "act" | "delegated"))
            .map(|a| a.strategy.clone());
        self.workers
            .send(Cmd::Phase {
                failure: open.failure,
                first: open.first,
                phase: open.phase,
                at,
            })
            .await;
        match acting {
            Some(strategy) => {
                if let Some(t) = self.failures.get_mut(&id) {
                    t.phased = true;
                    t.acting = Some(strategy);
                }
            }
            // Nothing more comes of it.
            None => {
                self.failures.remove(&id);
            }
        }
    }
}

/// The instant a signal's reaction was taken at: its `at` (a deadline's transition is dated
/// earlier; the signal came when it was recorded, at most `recorded_at`).
fn recorded_now(payload: &Value, occurred_at: DateTime<Utc>) -> DateTime<Utc> {
    payload
        .get("noticed_at")
        .or_else(|| payload.get("at"))
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map_or(occurred_at, |t| t.with_timezone(&Utc))
}
