//! Circuit analytics from `circuit_transitioned` events: time spent open and half-open inside
//! the window, how often each circuit opened and re-opened from half-open, and which circuits
//! flap (open at least `flap_threshold` times in the window).
//!
//! The state at the window's start is the target of each circuit's last transition before it;
//! time is clipped to the window. Transitions come from the `circuit_transitions` read model, so
//! circuit history outlives archived events.
//!
//! An open circuit is half-open from its deadline on (`open_until`, kept with each opening),
//! whether or not anything recorded it: the report follows the deadline, as `healstore
//! circuits` does at any `--now`. A recorded `open → half_open` transition is dated at the
//! deadline; one recorded later by an older healstore (dated when it was noticed) is taken as
//! the record of the transition the deadline made, not as a second one.

use std::collections::BTreeMap;

use futures_util::TryStreamExt;
use serde::Serialize;

use super::{Analytics, Window, WindowInfo};
use crate::error::Result;
use crate::time::{format_time, from_micros};

/// One circuit's summary over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CircuitSummary {
    pub strategy: String,
    pub circuit: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The state at the end of the window (at that instant, transitions then included).
    pub state: String,
    pub transitions: i64,
    pub opens: i64,
    /// Openings straight from half-open (a failed trial).
    pub reopens: i64,
    pub open_ms: i64,
    pub half_open_ms: i64,
    pub flapping: bool,
    /// The circuit's states over the window, in order.
    pub spans: Vec<CircuitSpan>,
}

/// A stretch of time a circuit spent in one state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CircuitSpan {
    pub state: String,
    pub from: String,
    pub until: String,
    #[serde(skip)]
    pub(crate) from_us: i64,
    #[serde(skip)]
    pub(crate) until_us: i64,
}

/// Circuit analytics for a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CircuitReport {
    pub window: WindowInfo,
    pub flap_threshold: i64,
    pub circuits: Vec<CircuitSummary>,
    pub total_opens: i64,
    pub total_reopens: i64,
    pub flapping: Vec<String>,
}

/// strategy, circuit, agent, state, open_until.
type PriorRow = (String, String, Option<String>, String, Option<i64>);

/// strategy, circuit, agent, from, to, at, open_until.
type TransitionRow = (
    String,
    String,
    Option<String>,
    String,
    String,
    i64,
    Option<i64>,
);

struct Fold {
    agent_id: Option<String>,
    state: String,
    since: i64,
    /// The deadline of the current opening, while open.
    until: Option<i64>,
    /// The circuit turned half-open at its deadline and no transition recorded it yet.
    implicit: bool,
    transitions: i64,
    opens: i64,
    reopens: i64,
    open_us: i64,
    half_open_us: i64,
    spans: Vec<(String, i64, i64)>,
}

impl Fold {
    fn new(state: String, at: i64, agent_id: Option<String>, until: Option<i64>) -> Fold {
        Fold {
            agent_id,
            until: until.filter(|_| state == "open"),
            implicit: false,
            state,
            since: at,
            transitions: 0,
            opens: 0,
            reopens: 0,
            open_us: 0,
            half_open_us: 0,
            spans: Vec::new(),
        }
    }

    fn close_span(&mut self, at: i64) {
        let d = (at - self.since).max(0);
        match self.state.as_str() {
            "open" => self.open_us += d,
            "half_open" => self.half_open_us += d,
            _ => {}
        }
        if at > self.since {
            self.spans.push((self.state.clone(), self.since, at));
        }
        self.since = at;
    }

    /// An open circuit whose deadline is at or before `at` is half-open from the deadline on;
    /// the transition counts when the deadline falls inside the window `[s, u)`.
    fn pass_deadline(&mut self, at: i64, s: i64, u: i64) {
        let Some(until) = self.until.filter(|d| self.state == "open" && *d <= at) else {
            return;
        };
        self.close_span(until.max(self.since));
        self.state = "half_open".into();
        self.until = None;
        self.implicit = true;
        if until >= s && until < u {
            self.transitions += 1;
        }
    }
}

impl Analytics {
    /// Circuit analytics over the window.
    pub async fn circuits(&self, window: &Window, flap_threshold: i64) -> Result<CircuitReport> {
        let (s, u) = (window.since_us(), window.until_us());
        let mut folds: BTreeMap<(String, String), Fold> = BTreeMap::new();

        // States at the window's start (only transitions exist in the log, so this looks at
        // each circuit's last one before it): the circuits listed by skipping through their
        // index (the next circuit of the same strategy, else the first of the next strategy:
        // plain comparisons, each one seek), then one seek for each one's last transition
        // before the window, so that the cost grows with the circuits, not with their history.
        // (A row-value comparison, `(strategy, circuit) > (?, ?)`, was not a seek for SQLite.)
        let prior: Vec<PriorRow> = sqlx::query_as(
            "WITH RECURSIVE c(strategy, circuit) AS ( \
               SELECT * FROM (SELECT strategy, circuit FROM circuit_transitions \
                              ORDER BY strategy, circuit LIMIT 1) \
               UNION ALL \
               SELECT CASE WHEN (SELECT MIN(t.circuit) FROM circuit_transitions t \
                                 WHERE t.strategy = c.strategy AND t.circuit > c.circuit) \
                                IS NOT NULL THEN c.strategy \
                           ELSE (SELECT MIN(t.strategy) FROM circuit_transitions t \
                                 WHERE t.strategy > c.strategy) END, \
                      COALESCE((SELECT MIN(t.circuit) FROM circuit_transitions t \
                                WHERE t.strategy = c.strategy AND t.circuit > c.circuit), \
                               (SELECT MIN(t.circuit) FROM circuit_transitions t \
                                WHERE t.strategy = (SELECT MIN(t2.strategy) \
                                                    FROM circuit_transitions t2 \
                                                    WHERE t2.strategy > c.strategy))) \
               FROM c WHERE c.strategy IS NOT NULL) \
             SELECT t.strategy, t.circuit, t.agent_id, t.to_state, t.open_until \
             FROM (SELECT (SELECT l.position FROM circuit_transitions l \
                           WHERE l.strategy = c.strategy AND l.circuit = c.circuit \
                             AND l.at < ?1 \
                           ORDER BY l.at DESC, l.position DESC LIMIT 1) AS p \
                   FROM c WHERE c.strategy IS NOT NULL) x \
             JOIN circuit_transitions t ON t.position = x.p \
             WHERE t.to_state <> 'closed'",
        )
        .bind(s)
        .fetch_all(self.pool())
        .await?;
        for (strategy, circuit, agent, st, until) in prior {
            let mut f = Fold::new(st, s, agent, until);
            f.pass_deadline(s, s, u);
            folds.insert((strategy, circuit), f);
        }

        let mut rows = sqlx::query_as::<_, TransitionRow>(
            "SELECT strategy, circuit, agent_id, from_state, to_state, at, open_until \
             FROM circuit_transitions WHERE at >= ?1 AND at <= ?2 ORDER BY at, position",
        )
        .bind(s)
        .bind(u)
        .fetch(self.pool());
        while let Some((strategy, circuit, agent, from, to, at, until)) = rows.try_next().await? {
            let f = folds
                .entry((strategy, circuit))
                .or_insert_with(|| Fold::new(from.clone(), s, agent.clone(), None));
            if f.agent_id.is_none() {
                f.agent_id = agent;
            }
            f.pass_deadline(at, s, u);
            if std::mem::take(&mut f.implicit) && from == "open" && to == "half_open" {
                // The record of the transition the deadline made.
                continue;
            }
            f.close_span(at);
            // A transition at the window's end counts in the next window; it only sets the
            // state at the end (what `healstore circuits` shows at that instant).
            if at < u {
                f.transitions += 1;
            }
            if to == "open" && at < u {
                f.opens += 1;
                if from == "half_open" {
                    f.reopens += 1;
                }
            }
            f.until = until.filter(|_| to == "open");
            f.state = to;
        }
        drop(rows);

        let mut circuits = Vec::new();
        for ((strategy, circuit), mut f) in folds {
            f.pass_deadline(u, s, u);
            f.close_span(u);
            let spans = f
                .spans
                .iter()
                .map(|(state, a, b)| {
                    Ok(CircuitSpan {
                        state: state.clone(),
                        from: format_time(from_micros(*a)?),
                        until: format_time(from_micros(*b)?),
                        from_us: *a,
                        until_us: *b,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            circuits.push(CircuitSummary {
                strategy,
                circuit,
                agent_id: f.agent_id,
                state: f.state,
                transitions: f.transitions,
                opens: f.opens,
                reopens: f.reopens,
                open_ms: f.open_us / 1000,
                half_open_ms: f.half_open_us / 1000,
                flapping: f.opens >= flap_threshold.max(1),
                spans,
            });
        }
        circuits.sort_by(|a, b| {
            b.opens
                .cmp(&a.opens)
                .then(b.open_ms.cmp(&a.open_ms))
                .then(a.circuit.cmp(&b.circuit))
        });
        Ok(CircuitReport {
            window: window.describe(),
            flap_threshold,
            total_opens: circuits.iter().map(|c| c.opens).sum(),
            total_reopens: circuits.iter().map(|c| c.reopens).sum(),
            flapping: circuits
                .iter()
                .filter(|c| c.flapping)
                .map(|c| c.circuit.clone())
                .collect(),
            circuits,
        })
    }
}
