//! Prometheus metrics: what the log received, what the writer did, the circuits' states, the
//! health score and the HTTP service's requests, in the Prometheus text format.
//!
//! Where each figure comes from, and why:
//!
//! - **Facts from the log** (failures detected, healing decisions, action results, healing
//!   durations, times to recovery, circuit transitions, events by type, the head position):
//!   one tail of the log per process reads every event committed after [`Metrics::attach`]
//!   (by this process or any other on the database) and counts it, reading only indexed
//!   columns and a few payload fields in SQL. The counters are exactly the log's events since
//!   the tail started (a scrape first reads what was committed since the tail last looked), so
//!   they agree with the store; they start from zero when the process starts, as Prometheus
//!   counters may (`rate()` and `increase()` handle the reset). Counting from the log rather
//!   than from hooks in the healer keeps the healer's hot path untouched, and sees the
//!   decisions of every process sharing the database.
//! - **The writer's work** (appends answered, events per group commit, append latency): the
//!   store's [`StoreObserver`] hook, a few atomic updates per group on the writer's thread.
//!   This process's appends only: another process's writer is its own.
//! - **Circuit states**: the healer's states in memory, read at each scrape (never the log):
//!   one gauge per circuit and state, as resilience4j exposes its circuit breakers. A circuit
//!   at rest (closed, nothing counted) has no state in memory: one seen earlier is shown
//!   closed; one never seen since the process started has no series.
//! - **The health score** over a window (the dashboard's): computed by a task of its own at
//!   most every [`MetricsOptions::health_interval`], never by a scrape.
//!
//! Labels are bounded: never a failure id; values that come from input (failure types,
//! strategies, actions, event types) are kept for the first [`MetricsOptions::label_values_max`]
//! distinct values of each label, and any later one is counted under `_other`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::store::dialect::Dialect;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::analytics::{Analytics, EffectivenessOptions, Window};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::heal::Healer;
use crate::store::{Store, StoreObserver};

/// The `Content-Type` of a scrape's answer.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The label value that stands for every value past a label's bound.
pub const OTHER: &str = "_other";

/// The name of the circuit breaker strategy whose states are exposed.
const CIRCUIT_STRATEGY: &str = "CircuitBreaker";

/// Settings for [`Metrics`].
#[derive(Debug, Clone)]
pub struct MetricsOptions {
    /// The window the health score is computed over (ending now).
    pub health_window: Duration,
    /// How often the health score is computed again.
    pub health_interval: Duration,
    /// Distinct values kept per label that comes from input; later ones count as `_other`.
    pub label_values_max: usize,
    /// Circuits exposed at most (a fleet larger than this shows the first ones seen).
    pub circuits_max: usize,
    /// Events read from the log per query of the tail.
    pub tail_page: u32,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        MetricsOptions {
            health_window: Duration::from_secs(3600),
            health_interval: Duration::from_secs(30),
            label_values_max: 200,
            circuits_max: 100_000,
            tail_page: 1000,
        }
    }
}

type L1 = [(&'static str, String); 1];
type L2 = [(&'static str, String); 2];
type L3 = [(&'static str, String); 3];

const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
const RECOVERY_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
];
const APPEND_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const GROUP_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];
const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS.iter().copied())
}

fn recovery_histogram() -> Histogram {
    Histogram::new(RECOVERY_BUCKETS.iter().copied())
}

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_BUCKETS.iter().copied())
}

/// The first `max` distinct values of one label; later values are `_other`.
#[derive(Debug)]
struct Bounded {
    seen: Mutex<HashSet<String>>,
    max: usize,
}

impl Bounded {
    fn new(max: usize) -> Self {
        Bounded {
            seen: Mutex::new(HashSet::new()),
            max,
        }
    }

    fn value(&self, v: &str) -> String {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(v) {
            return v.to_owned();
        }
        if seen.len() < self.max {
            seen.insert(v.to_owned());
            return v.to_owned();
        }
        OTHER.to_owned()
    }
}

/// The facts counted from the log.
struct LogFamilies {
    failures: Family<L2, Counter>,
    decisions: Family<L2, Counter>,
    actions: Family<L2, Counter>,
    healing_duration: HistogramFamily<L1>,
    recovery: HistogramFamily<L1>,
    transitions: Family<L2, Counter>,
    events: Family<L1, Counter>,
    head: Gauge<i64, AtomicI64>,
}

/// Per label name, its bound.
struct Labels {
    failure_type: Bounded,
    severity: Bounded,
    strategy: Bounded,
    decision: Bounded,
    action: Bounded,
    state: Bounded,
    event_type: Bounded,
    route: Bounded,
}

/// The writer's work, told by the store (see [`StoreObserver`]).
#[derive(Clone, Debug)]
struct WriterFamilies {
    appends: Family<L1, Counter>,
    append_duration: Histogram,
    group_events: Histogram,
}

impl StoreObserver for WriterFamilies {
    fn group_committed(&self, events: usize) {
        self.group_events.observe(events as f64);
    }

    fn append_answered(&self, waited: Duration, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.appends
            .get_or_create(&[("result", result.to_owned())])
            .inc();
        self.append_duration.observe(waited.as_secs_f64());
    }
}

/// The circuits as the last scrape read them: `(circuit, state)`, and every circuit seen.
#[derive(Debug, Default)]
struct CircuitSnapshot {
    /// The circuits exposed, in order, with their state's index in [`CIRCUIT_STATES`].
    rows: Vec<(String, usize)>,
    /// Every circuit seen since the process started (bounded by `circuits_max`).
    known: HashSet<String>,
}

/// The states of a circuit, as `healstore circuits` names them.
const CIRCUIT_STATES: [&str; 4] = ["closed", "open", "half_open", "forced_open"];

#[derive(Debug)]
struct CircuitCollector {
    snapshot: Arc<Mutex<CircuitSnapshot>>,
}

impl Collector for CircuitCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::result::Result<(), std::fmt::Error> {
        let snap = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        let mut counts = [0i64; CIRCUIT_STATES.len()];
        {
            let mut family = encoder.encode_descriptor(
                "circuit_state",
                "The state of each circuit breaker, one series per state: 1 for the current \
                 one, 0 otherwise (as resilience4j exposes circuit breakers)",
                None,
                MetricType::Gauge,
            )?;
            for (circuit, state) in &snap.rows {
                counts[*state] += 1;
                for (i, name) in CIRCUIT_STATES.iter().enumerate() {
                    let labels = [("agent", circuit.as_str()), ("state", *name)];
                    let value = ConstGauge::new(i64::from(i == *state));
                    value.encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "circuits",
            "Circuit breakers in each state",
            None,
            MetricType::Gauge,
        )?;
        for (i, name) in CIRCUIT_STATES.iter().enumerate() {
            let labels = [("state", *name)];
            ConstGauge::new(counts[i]).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The HTTP service's requests.
struct HttpFamilies {
    requests: Family<L3, Counter>,
    duration: HistogramFamily<L2>,
    in_flight: Gauge<i64, AtomicI64>,
}

/// One HTTP request in flight (counted in `healstore_http_requests_in_flight` until dropped).
#[must_use]
pub struct InFlight(Gauge<i64, AtomicI64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Where the tail has read to, and the store's change mark when it last asked.
struct Tail {
    store: Store,
    cursor: i64,
    mark: Option<crate::store::ChangeMark>,
}

/// The process's metrics. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    options: MetricsOptions,
    registry: Registry,
    log: LogFamilies,
    labels: Labels,
    writer: WriterFamilies,
    http: HttpFamilies,
    circuits: Arc<Mutex<CircuitSnapshot>>,
    health: Gauge<f64, AtomicU64>,
    health_computed: Gauge<f64, AtomicU64>,
    tail: tokio::sync::Mutex<Option<Tail>>,
    /// One scrape at a time.
    scrape: tokio::sync::Mutex<()>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in self
            .tasks
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The least time between two catch-ups of the metrics' log tail in the background.
const TAIL_PAUSE: Duration = Duration::from_millis(100);

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(MetricsOptions::default())
    }
}

impl Metrics {
    pub fn new(options: MetricsOptions) -> Metrics {
        let max = options.label_values_max.max(1);
        let mut registry = Registry::with_prefix("healstore");
        let log = LogFamilies {
            failures: Family::default(),
            decisions: Family::default(),
            actions: Family::default(),
            healing_duration: Family::new_with_constructor(duration_histogram),
            recovery: Family::new_with_constructor(recovery_histogram),
            transitions: Family::default(),
            events: Family::default(),
            head: Gauge::default(),
        };
        registry.register(
            "failures_detected",
            "Failures detected (failure_detected events in the log), by type and severity",
            log.failures.clone(),
        );
        registry.register(
            "healing_decisions",
            "Healing decisions (healing_attempted events), by strategy and decision: act, \
             delegated, declined, failed, held, no_strategy, suggest_only, shadow, withheld",
            log.decisions.clone(),
        );
        registry.register(
            "healing_actions",
            "Healing actions carried out (action_executed events), by action and result",
            log.actions.clone(),
        );
        registry.register_with_unit(
            "healing_duration",
            "Duration of healing attempts (healing_completed events), by strategy",
            Unit::Seconds,
            log.healing_duration.clone(),
        );
        registry.register_with_unit(
            "time_to_recovery",
            "Time from a failure's detection to its recovery (failure_recovered events), by \
             failure type",
            Unit::Seconds,
            log.recovery.clone(),
        );
        registry.register(
            "circuit_transitions",
            "Circuit breaker transitions (circuit_transitioned events), by from and to state",
            log.transitions.clone(),
        );
        registry.register(
            "log_events",
            "Events committed to the log since this process started, by event type",
            log.events.clone(),
        );
        registry.register(
            "log_head_position",
            "The log's newest position",
            log.head.clone(),
        );
        let writer = WriterFamilies {
            appends: Family::default(),
            append_duration: Histogram::new(APPEND_BUCKETS.iter().copied()),
            group_events: Histogram::new(GROUP_BUCKETS.iter().copied()),
        };
        registry.register(
            "appends",
            "Appends answered by this process's writer, by result (ok or error)",
            writer.appends.clone(),
        );
        registry.register_with_unit(
            "append_duration",
            "Time from an append's queueing to its answer (committed at the configured \
             durability, or refused)",
            Unit::Seconds,
            writer.append_duration.clone(),
        );
        registry.register(
            "group_commit_events",
            "Events stored per group commit",
            writer.group_events.clone(),
        );
        let http = HttpFamilies {
            requests: Family::default(),
            duration: Family::new_with_constructor(http_histogram),
            in_flight: Gauge::default(),
        };
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being answered now (until the answer's head; a streamed body is \
             not counted)",
            http.in_flight.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route (the matched route template) and status",
            http.requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer HTTP requests (to the response's head; a stream's body is not \
             counted), by method and route",
            Unit::Seconds,
            http.duration.clone(),
        );
        let health = Gauge::<f64, AtomicU64>::default();
        let health_computed = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "health_score",
            format!(
                "The dashboard's health score (0 to 100) over the last {}",
                describe_duration(options.health_window)
            ),
            health.clone(),
        );
        registry.register(
            "health_score_computed_timestamp_seconds",
            "When the health score was last computed (Unix time; 0: not yet)",
            health_computed.clone(),
        );
        let circuits = Arc::new(Mutex::new(CircuitSnapshot::default()));
        registry.register_collector(Box::new(CircuitCollector {
            snapshot: circuits.clone(),
        }));
        let labels = Labels {
            failure_type: Bounded::new(max),
            severity: Bounded::new(max),
            strategy: Bounded::new(max),
            decision: Bounded::new(max),
            action: Bounded::new(max),
            state: Bounded::new(max),
            event_type: Bounded::new(max),
            route: Bounded::new(max),
        };
        Metrics {
            inner: Arc::new(Inner {
                options,
                registry,
                log,
                labels,
                writer,
                http,
                circuits,
                health,
                health_computed,
                tail: tokio::sync::Mutex::new(None),
                scrape: tokio::sync::Mutex::new(()),
                tasks: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn options(&self) -> &MetricsOptions {
        &self.inner.options
    }

    /// Starts counting: the store's writer reports to these metrics, a task tails the log from
    /// its current head (events committed before are not counted), and another computes the
    /// health score every [`MetricsOptions::health_interval`], dated by the store's clock.
    /// Call once, within a tokio runtime.
    pub async fn attach(&self, store: &Store) -> Result<()> {
        {
            let mut tail = self.inner.tail.lock().await;
            if tail.is_some() {
                return Err(Error::InvalidInput(
                    "the metrics already count another store's events".into(),
                ));
            }
            store.observe(Arc::new(self.inner.writer.clone()));
            let mark = store.change_mark();
            let head = store.head_position().await?;
            self.inner.log.head.set(head);
            *tail = Some(Tail {
                store: store.clone(),
                cursor: head,
                mark,
            });
        }
        let weak = Arc::downgrade(&self.inner);
        let mut head = store.head_watch();
        let poll = store.options().poll_interval;
        let tail = tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = head.changed() => {
                        if changed.is_err() {
                            tokio::time::sleep(poll).await;
                        }
                    }
                    _ = tokio::time::sleep(poll) => {}
                }
                let Some(inner) = weak.upgrade() else { return };
                if let Err(e) = (Metrics { inner }).catch_up().await {
                    tracing::debug!(error = %e, "metrics: the log tail could not read");
                }
                // Commits that come meanwhile are read together by the next catch-up: one
                // read per pause under load rather than one per group commit (a scrape
                // catches up first, so it never shows less than the log holds).
                tokio::time::sleep(TAIL_PAUSE).await;
            }
        });
        if store.is_postgres() {
            // No health score there yet (see `refresh_health`): only the tail runs.
            self.inner
                .tasks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(tail);
            return Ok(());
        }
        let weak = Arc::downgrade(&self.inner);
        let interval = self
            .inner
            .options
            .health_interval
            .max(Duration::from_millis(10));
        let health = tokio::spawn(async move {
            loop {
                {
                    let Some(inner) = weak.upgrade() else { return };
                    if let Err(e) = (Metrics { inner }).refresh_health().await {
                        tracing::debug!(error = %e, "metrics: the health score could not be computed");
                    }
                }
                tokio::time::sleep(interval).await;
            }
        });
        let mut tasks = self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.push(tail);
        tasks.push(health);
        Ok(())
    }

    /// Computes the health score over [`MetricsOptions::health_window`] ending at the store's
    /// clock's now, and keeps it for the scrapes (the task [`Metrics::attach`] started calls
    /// this every [`MetricsOptions::health_interval`]).
    pub async fn refresh_health(&self) -> Result<f64> {
        let store = match self.inner.tail.lock().await.as_ref() {
            Some(t) => t.store.clone(),
            None => return Err(Error::InvalidInput("the metrics count no store".into())),
        };
        // (the score is the analytics' stats and effectiveness)
        store.require_sqlite("the health score (the analytics read models)")?;
        let clock = store.options().clock.clone();
        let score = health_score(
            &Analytics::new(&store),
            clock.as_ref(),
            self.inner.options.health_window,
        )
        .await?;
        self.inner.health.set(score);
        self.inner
            .health_computed
            .set(clock.now().timestamp_micros() as f64 / 1e6);
        Ok(score)
    }

    /// Stops the tasks [`Metrics::attach`] started (dropping the last clone does too).
    pub fn stop(&self) {
        for t in self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }

    /// Counts every event committed since the tail last read (nothing when nothing was
    /// committed, by anyone: the store's change mark says so without a query).
    pub async fn catch_up(&self) -> Result<()> {
        let mut guard = self.inner.tail.lock().await;
        let Some(tail) = guard.as_mut() else {
            return Ok(());
        };
        let mark = tail.store.change_mark();
        if mark.is_some() && mark == tail.mark {
            return Ok(());
        }
        let page = self.inner.options.tail_page.max(1);
        let db = tail.store.db().clone();
        let sql = match db.dialect() {
            Dialect::Sqlite => TAIL_SQL,
            Dialect::Postgres => PG_TAIL_SQL,
        };
        loop {
            let rows: Vec<FactRow> = db
                .fetch_all(sql, &[tail.cursor.into(), i64::from(page).into()])
                .await
                .map_err(|e| Error::from_db(e, tail.store.path()))?;
            let n = rows.len();
            for row in rows {
                let fact = Fact::from(row);
                tail.cursor = tail.cursor.max(fact.position);
                self.count(&fact);
            }
            self.inner.log.head.set(tail.cursor);
            if n < page as usize {
                break;
            }
        }
        tail.mark = mark;
        Ok(())
    }

    fn count(&self, f: &Fact) {
        let l = &self.inner.labels;
        let log = &self.inner.log;
        log.events
            .get_or_create(&[("event_type", l.event_type.value(&f.event_type))])
            .inc();
        if f.schema_version != 1 {
            return;
        }
        let text = |v: &Option<String>| v.as_deref().unwrap_or("unknown").to_owned();
        match f.event_type.as_str() {
            "failure_detected" => {
                log.failures
                    .get_or_create(&[
                        ("failure_type", l.failure_type.value(&text(&f.failure_type))),
                        ("severity", l.severity.value(&text(&f.field))),
                    ])
                    .inc();
            }
            "healing_attempted" => {
                log.decisions
                    .get_or_create(&[
                        ("strategy", l.strategy.value(&text(&f.strategy))),
                        ("decision", l.decision.value(&text(&f.field))),
                    ])
                    .inc();
            }
            "action_executed" => {
                let result = match f.success {
                    Some(true) => "success",
                    Some(false) => "failure",
                    None => "unknown",
                };
                log.actions
                    .get_or_create(&[
                        ("action", l.action.value(&text(&f.field))),
                        ("result", result.to_owned()),
                    ])
                    .inc();
            }
            "healing_completed" => {
                if let Some(ms) = f.duration_ms {
                    log.healing_duration
                        .get_or_create(&[("strategy", l.strategy.value(&text(&f.strategy)))])
                        .observe(ms.max(0) as f64 / 1e3);
                }
            }
            "failure_recovered" => {
                // The read model's figure: kept only for a failure's first recovery.
                if let Some(us) = f.recover_us {
                    log.recovery
                        .get_or_create(&[(
                            "failure_type",
                            l.failure_type.value(&text(&f.recovered_type)),
                        )])
                        .observe(us.max(0) as f64 / 1e6);
                }
            }
            "circuit_transitioned" => {
                log.transitions
                    .get_or_create(&[
                        ("from", l.state.value(&text(&f.field))),
                        ("to", l.state.value(&text(&f.to))),
                    ])
                    .inc();
            }
            _ => {}
        }
    }

    /// Counts one HTTP request in flight until the value returned is dropped.
    pub fn http_in_flight(&self) -> InFlight {
        self.inner.http.in_flight.inc();
        InFlight(self.inner.http.in_flight.clone())
    }

    /// Counts one HTTP request: its method, the route template it matched (`unmatched` when
    /// none did; never the raw path), its status and how long its answer took.
    pub fn observe_http(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let method = match method {
            "GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS" => method,
            _ => OTHER,
        };
        let route = self.inner.labels.route.value(route);
        self.inner
            .http
            .requests
            .get_or_create(&[
                ("method", method.to_owned()),
                ("route", route.clone()),
                ("status", status.to_string()),
            ])
            .inc();
        self.inner
            .http
            .duration
            .get_or_create(&[("method", method.to_owned()), ("route", route)])
            .observe(elapsed.as_secs_f64());
    }

    /// Reads the circuits' states from the healer's memory (every state not at rest, caught up
    /// with other processes' appends; no log scan).
    pub async fn read_circuits(&self, healer: &Healer) -> Result<()> {
        use crate::heal::strategies::circuit::{CircuitState, CircuitStatus};
        let now = healer.now();
        let max = self.inner.options.circuits_max;
        let mut current: HashMap<String, usize> = HashMap::new();
        healer
            .visit_states(CIRCUIT_STRATEGY, |key, state| {
                if let Some(s) = state.downcast_ref::<CircuitState>() {
                    let i = match s.status_at(now) {
                        CircuitStatus::Closed => 0,
                        CircuitStatus::Open => 1,
                        CircuitStatus::HalfOpen => 2,
                        CircuitStatus::ForcedOpen => 3,
                    };
                    current.insert(key.to_owned(), i);
                }
            })
            .await?;
        let mut snap = self
            .inner
            .circuits
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for key in current.keys() {
            if snap.known.len() >= max {
                break;
            }
            if !snap.known.contains(key) {
                snap.known.insert(key.clone());
            }
        }
        let mut rows: Vec<(String, usize)> = snap
            .known
            .iter()
            .map(|k| (k.clone(), current.get(k).copied().unwrap_or(0)))
            .collect();
        rows.sort_unstable();
        snap.rows = rows;
        Ok(())
    }

    /// A scrape: the log's events up to now counted, the circuits read from the healer (when
    /// given), then every metric in the Prometheus text format ([`CONTENT_TYPE`]).
    pub async fn render(&self, healer: Option<&Healer>) -> Result<String> {
        let _one = self.inner.scrape.lock().await;
        self.catch_up().await?;
        if let Some(h) = healer {
            self.read_circuits(h).await?;
        }
        let mut out = String::with_capacity(64 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.inner.registry)
            .map_err(|_| Error::InvalidInput("the metrics could not be encoded".into()))?;
        Ok(out)
    }
}

/// The dashboard's health score over the window ending at the clock's now.
async fn health_score(analytics: &Analytics, clock: &dyn Clock, window: Duration) -> Result<f64> {
    let length = chrono::Duration::from_std(window)
        .map_err(|_| Error::InvalidInput("the health window is too long".into()))?;
    let window = Window::last(length, clock.now())?;
    let stats = analytics.stats(&window).await?;
    let eff = analytics
        .effectiveness(&window, &EffectivenessOptions::default())
        .await?;
    Ok(crate::analytics::advice::health_score(&stats, &eff).score)
}

fn describe_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{} ms", d.as_millis()),
        s if s % 86_400 == 0 => format!("{} d", s / 86_400),
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// One event as the tail reads it: indexed columns and the payload fields it counts by.
struct Fact {
    position: i64,
    event_type: String,
    schema_version: i64,
    failure_type: Option<String>,
    strategy: Option<String>,
    success: Option<bool>,
    duration_ms: Option<i64>,
    /// severity, decision, action or from, by event type.
    field: Option<String>,
    to: Option<String>,
    recover_us: Option<i64>,
    recovered_type: Option<String>,
}

/// A row of [`TAIL_SQL`], of either backend.
type FactRow = (
    i64,
    String,
    i64,
    Option<String>,
    Option<String>,
    Option<bool>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
);

impl From<FactRow> for Fact {
    fn from(r: FactRow) -> Fact {
        Fact {
            position: r.0,
            event_type: r.1,
            schema_version: r.2,
            failure_type: r.3,
            strategy: r.4,
            success: r.5,
            duration_ms: r.6,
            field: r.7,
            to: r.8,
            recover_us: r.9,
            recovered_type: r.10,
        }
    }
}

/// The tail's page: indexed columns, a payload field per counted type (extracted by SQLite,
/// so that no payload is parsed here), and for a recovery the read model's time to recover
/// (set only by a failure's first recovery).
const TAIL_SQL: &str = "\
SELECT e.position, e.event_type, e.schema_version, e.failure_type, e.strategy, e.success, \
       e.duration_ms, \
       CAST(CASE e.event_type \
         WHEN 'failure_detected' THEN json_extract(e.payload, '$.severity') \
         WHEN 'healing_attempted' THEN json_extract(e.payload, '$.decision') \
         WHEN 'action_executed' THEN json_extract(e.payload, '$.action') \
         WHEN 'circuit_transitioned' THEN json_extract(e.payload, '$.from') \
       END AS TEXT), \
       CAST(CASE WHEN e.event_type = 'circuit_transitioned' \
         THEN json_extract(e.payload, '$.to') END AS TEXT), \
       f.recover_us, f.failure_type \
FROM events e \
LEFT JOIN failures f ON e.event_type = 'failure_recovered' AND f.failure_id = e.failure_id \
     AND f.recovered_position = e.position \
WHERE e.position > ?1 ORDER BY e.position LIMIT ?2";

/// [`TAIL_SQL`] on PostgreSQL: the payload fields read by the function the `failures`
/// trigger reads them with.
const PG_TAIL_SQL: &str = "\
SELECT e.position, e.event_type, e.schema_version, e.failure_type, e.strategy, e.success, \
       e.duration_ms, \
       CASE e.event_type \
         WHEN 'failure_detected' THEN healstore_payload_text(e.payload, 'severity') \
         WHEN 'healing_attempted' THEN healstore_payload_text(e.payload, 'decision') \
         WHEN 'action_executed' THEN healstore_payload_text(e.payload, 'action') \
         WHEN 'circuit_transitioned' THEN healstore_payload_text(e.payload, 'from') \
       END, \
       CASE WHEN e.event_type = 'circuit_transitioned' \
         THEN healstore_payload_text(e.payload, 'to') END, \
       f.recover_us, f.failure_type \
FROM events e \
LEFT JOIN failures f ON e.event_type = 'failure_recovered' AND f.failure_id = e.failure_id \
     AND f.recovered_position = e.position \
WHERE e.position > ?1 ORDER BY e.position LIMIT ?2";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_keeps_its_first_values_and_counts_later_ones_as_other() {
        let b = Bounded::new(2);
        assert_eq!(b.value("a"), "a");
        assert_eq!(b.value("b"), "b");
        assert_eq!(b.value("c"), OTHER);
        assert_eq!(b.value("a"), "a");
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        // (a family with no series yet is left out of a scrape: the log-derived ones are
        // checked against a store in the integration tests)
        let m = Metrics::default();
        m.observe_http("GET", "/v1/circuits/{agent}", 200, Duration::from_millis(3));
        m.observe_http("BREW", "/x", 418, Duration::from_millis(3));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &m.inner.registry).unwrap();
        for name in [
            "# TYPE healstore_append_duration_seconds histogram",
            "# TYPE healstore_group_commit_events histogram",
            "# TYPE healstore_log_head_position gauge",
            "# TYPE healstore_health_score gauge",
            "# TYPE healstore_circuits gauge",
            "# TYPE healstore_http_requests_total counter",
            "# TYPE healstore_http_request_duration_seconds histogram",
            "healstore_http_requests_total{method=\"GET\",route=\"/v1/circuits/{agent}\",status=\"200\"} 1",
            "healstore_http_requests_total{method=\"_other\",route=\"/x\",status=\"418\"} 1",
        ] {
            assert!(out.contains(name), "{name} missing from:\n{out}");
        }
    }
}
