//! The window's events as a backtest reads them: the columns the store copies out of every
//! payload (`failure_id`, `strategy`, `success`, `duration_ms`), and payloads parsed only for
//! the events that need them, straight into their types.
//!
//! The replay needs, of each event in position order: failures detected (their payload, with
//! the recorded recovery from the `failures` read model), decisions (`healing_attempted`, their
//! payload), outcomes (`healing_completed`, columns only), success signals, usage reports,
//! configurations and strategy events (payloads). Every other event only ends the phase being
//! read (a phase's events are contiguous): SQLite skips them, and each decision and outcome
//! carries the position of the event before it in the window, so that the replay still sees
//! where such an event came between two it reads.
//!
//! A payload is parsed straight into its type; one that does not parse so is parsed as the
//! store reads it and decoded as [`crate::events::HealEvent::decode`] does, so that the outcome is the same
//! (an event that does not decode is not a decision, a signal or a configuration).

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::Row;

use super::replay::RecordedRecovery;
use crate::error::{Error, Result};
use crate::events::{
    AgentSucceeded, ConfigurationChanged, FailureDetected, HealingAttempted, RecoveryHow,
    ResourceUsageReported,
};
use crate::heal::engine::STRATEGY_STREAM_PREFIX;
use crate::heal::{Attempt, Failure};
use crate::store::Store;

/// One event of the window, as the replay uses it.
pub(crate) enum Input {
    /// A failure detected, with its recorded recovery and the position of the last event
    /// naming it in the window's span (nothing about it comes after that).
    Detected {
        failure: Failure,
        recovery: Option<RecordedRecovery>,
        last: i64,
    },
    /// A decision (`healing_attempted`): `stream_failure` is the failure whose stream holds
    /// it (`failure-<id>`), if it is a failure's stream.
    Attempted {
        failure_id: String,
        stream_failure: Option<String>,
        attempt: Attempt,
    },
    /// An outcome (`healing_completed`).
    Completed {
        failure_id: String,
        stream_failure: Option<String>,
        strategy: String,
        success: bool,
    },
    AgentSucceeded(AgentSucceeded),
    ResourceUsage(ResourceUsageReported),
    Configuration(Value),
    /// An event of a strategy's stream (not one of the above).
    Strategy {
        stream_id: String,
        event_type: String,
        payload: Value,
    },
    /// Anything else: it only ends the phase being read.
    Other,
}

/// An event read: its position, the position of the event before it in the window (for
/// decisions and outcomes, which may continue a phase), its time and what it is.
pub(crate) struct Read {
    pub position: i64,
    pub previous: Option<i64>,
    pub occurred_at: DateTime<Utc>,
    pub input: Input,
}

/// The events the replay reads; the others are skipped by SQLite (see the module
/// documentation). Few columns, each meaning what the event's type needs (every column of
/// every row is copied once more on its way out of SQLite): the payload, or an outcome's
/// failure; the failure whose stream holds a decision or an outcome, a detection's recorded
/// recovery (`how at`) or the stream; the position of the event before a decision or an
/// outcome, or of the last event naming a detected failure; an outcome's success and
/// strategy. `?1`, `?2`: the span's positions; `?3`, `?4`: the window's times; `?5`:
/// the cursor; `?6`: the page size.
const WINDOW: &str = "\
SELECT e.position, e.event_type, e.schema_version, e.occurred_at, \
       CASE WHEN e.event_type = 'healing_completed' THEN e.failure_id ELSE e.payload END, \
       CASE WHEN e.event_type IN ('healing_attempted', 'healing_completed') \
                 AND substr(e.stream_id, 1, 8) = 'failure-' THEN substr(e.stream_id, 9) \
            WHEN e.event_type IN ('healing_attempted', 'healing_completed') THEN NULL \
            WHEN e.event_type = 'failure_detected' THEN \
            (SELECT f.recovered_how || ' ' || f.recovered_at FROM failures f \
              WHERE f.position = e.position) \
            ELSE e.stream_id END, \
       CASE WHEN e.event_type IN ('healing_attempted', 'healing_completed') THEN \
            (SELECT p.position FROM events p WHERE p.position < e.position \
                AND p.position > ?1 AND p.occurred_at >= ?3 AND p.occurred_at < ?4 \
              ORDER BY p.position DESC LIMIT 1) \
            WHEN e.event_type = 'failure_detected' AND e.failure_id IS NOT NULL THEN \
            (SELECT MAX(x.position) FROM events x \
              WHERE x.failure_id = e.failure_id AND x.position <= ?2) END, \
       CASE WHEN e.event_type = 'healing_completed' THEN e.success || e.strategy END \
FROM events e \
WHERE e.position > ?5 AND e.position <= ?2 AND e.occurred_at >= ?3 AND e.occurred_at < ?4 \
  AND (e.event_type IN ('failure_detected', 'healing_attempted', 'healing_completed', \
                        'agent_succeeded', 'resource_usage_reported', 'configuration_changed') \
       OR (e.stream_id >= 'strategy-' AND e.stream_id < 'strategy.')) \
ORDER BY e.position LIMIT ?6";

/// Reads the window's events a page at a time.
pub(crate) struct WindowReader<'a> {
    store: &'a Store,
    span: (i64, i64),
    since: i64,
    until: i64,
    after: i64,
    done: bool,
}

impl<'a> WindowReader<'a> {
    const PAGE: i64 = 4096;

    pub fn new(store: &'a Store, span: (i64, i64), window: &crate::analytics::Window) -> Self {
        WindowReader {
            store,
            span,
            since: crate::time::to_micros(window.since),
            until: crate::time::to_micros(window.until),
            after: span.0,
            done: span.1 <= span.0,
        }
    }

    /// The next page into `out`; false when the window is read.
    pub async fn page(&mut self, out: &mut Vec<Read>) -> Result<bool> {
        if self.done {
            return Ok(false);
        }
        let mut rows = sqlx::query(WINDOW)
            .bind(self.span.0)
            .bind(self.span.1)
            .bind(self.since)
            .bind(self.until)
            .bind(self.after)
            .bind(Self::PAGE)
            .fetch(self.store.read_pool());
        let mut n = 0;
        while let Some(row) = rows.try_next().await.map_err(Error::from)? {
            n += 1;
            let r = decode_row(&row)?;
            self.after = r.position;
            out.push(r);
        }
        self.done = n < Self::PAGE;
        Ok(true)
    }
}

fn decode_row(row: &sqlx::sqlite::SqliteRow) -> Result<Read> {
    let get_err = |e: sqlx::Error| Error::from(e);
    let position: i64 = row.try_get(0).map_err(get_err)?;
    let event_type: &str = row.try_get(1).map_err(get_err)?;
    let schema_version: i64 = row.try_get(2).map_err(get_err)?;
    let occurred_at = crate::time::from_micros(row.try_get(3).map_err(get_err)?)?;
    let payload: Option<&str> = row.try_get(4).map_err(get_err)?;
    let stream: Option<&str> = row.try_get(5).map_err(get_err)?;
    let previous: Option<i64> = row.try_get(6).map_err(get_err)?;
    let known = schema_version == 1;
    let input = match event_type {
        "failure_detected" if known => match payload.and_then(parse::<FailureDetected>) {
            Some(d) => {
                let (how, recovered_at) = match stream.and_then(|r| r.split_once(' ')) {
                    Some((how, at)) => (Some(how), at.parse::<i64>().ok()),
                    None => (None, None),
                };
                Input::Detected {
                    recovery: recovery(recovered_at, how)?,
                    last: previous.unwrap_or(position).max(position),
                    failure: Failure {
                        failure_id: d.failure_id,
                        failure_type: d.failure_type,
                        agent_id: d.agent_id,
                        task_id: d.task_id,
                        severity: d.severity,
                        detected_at: occurred_at,
                        source_event: d.source_event,
                        metadata: d.metadata,
                    },
                }
            }
            None => Input::Other,
        },
        "healing_attempted" if known => {
            match payload.and_then(parse::<HealingAttempted>) {
                Some(a) => Input::Attempted {
                    stream_failure: stream.map(str::to_owned),
                    attempt: Attempt {
                        strategy: a.strategy,
                        decision: a.decision,
                        reason: a.reason,
                        // The replay compares strategies, verdicts, reasons and actions.
                        details: Default::default(),
                        actions: a
                            .actions
                            .into_iter()
                            .filter_map(|v| serde_json::from_value(v).ok())
                            .collect(),
                        results: Vec::new(),
                        success: None,
                    },
                    failure_id: a.failure_id,
                },
                None => Input::Other,
            }
        }
        // The columns are the payload's fields (the store copies them on append).
        "healing_completed" if known => {
            let outcome: Option<&str> = row.try_get(7).map_err(get_err)?;
            match (payload, outcome.and_then(|o| o.split_at_checked(1))) {
                (Some(f), Some((ok, s))) => Input::Completed {
                    failure_id: f.to_owned(),
                    stream_failure: stream.map(str::to_owned),
                    strategy: s.to_owned(),
                    success: ok == "1",
                },
                _ => Input::Other,
            }
        }
        "agent_succeeded" if known => payload
            .and_then(parse::<AgentSucceeded>)
            .map_or(Input::Other, Input::AgentSucceeded),
        "resource_usage_reported" if known => payload
            .and_then(parse::<ResourceUsageReported>)
            .map_or(Input::Other, Input::ResourceUsage),
        "configuration_changed" if known => payload
            .and_then(parse::<ConfigurationChanged>)
            .map_or(Input::Other, |c| Input::Configuration(c.config)),
        _ => match (stream, payload) {
            (Some(s), Some(p)) if s.starts_with(STRATEGY_STREAM_PREFIX) => {
                // As the store reads a payload: one that is not JSON is an error.
                let payload: Value = serde_json::from_str(p).map_err(|e| {
                    Error::InvalidInput(format!("stored payload at position {position}: {e}"))
                })?;
                Input::Strategy {
                    stream_id: s.to_owned(),
                    event_type: event_type.to_owned(),
                    payload,
                }
            }
            _ => Input::Other,
        },
    };
    let previous = match &input {
        Input::Attempted { .. } | Input::Completed { .. } => previous,
        _ => None,
    };
    Ok(Read {
        position,
        previous,
        occurred_at,
        input,
    })
}

/// A payload of a known type, parsed straight into it; else as the store reads it and
/// decodes it (which differs only for payloads with repeated keys: the last one counts).
pub(crate) fn parse<T: DeserializeOwned>(payload: &str) -> Option<T> {
    match serde_json::from_str::<T>(payload) {
        Ok(t) => Some(t),
        Err(_) => T::deserialize(serde_json::from_str::<Value>(payload).ok()?).ok(),
    }
}

/// A recovery from the `failures` read model's columns.
pub(crate) fn recovery(at: Option<i64>, how: Option<&str>) -> Result<Option<RecordedRecovery>> {
    let how = match how {
        Some("signal") => RecoveryHow::Signal,
        Some("status") => RecoveryHow::Status,
        Some("confirmed") => RecoveryHow::Confirmed,
        _ => return Ok(None),
    };
    Ok(match at {
        Some(us) => Some(RecordedRecovery {
            at: crate::time::from_micros(us)?,
            how,
        }),
        None => None,
    })
}
