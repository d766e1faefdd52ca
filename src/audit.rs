//! Audit reports over a time window: every automated action, one record per action.
//!
//! A record is either an action healstore carried out (an `action_executed` event) or an
//! action a decision planned that healstore did not carry out itself: handed to the caller
//! (`delegated`), only recorded (`shadow`, `suggest_only`), refused by a healer limit
//! (`withheld`), or planned by an `act` decision but never executed (an earlier action of the
//! decision failed, or the process stopped before recording results). Decisions that planned
//! nothing (`declined`, `held`, `failed`, `no_strategy`) are not actions and are not listed;
//! `healstore audit FAILURE_ID` shows them.
//!
//! Each record carries the failure it heals (from the `failures` read model), the decision
//! and reason behind it (the strategy's latest `healing_attempted` before the action), its
//! result and duration, and where the failure stands as of the report (possibly after the
//! window): whether it was *remediated* (the healing actions succeeded), when and by which
//! strategy, and whether it *recovered* (the agent or task works again), when and how it is
//! known.
//!
//! The report streams: events are read in keyset-paged queries over `(occurred_at,
//! position)`, each its own short read transaction, with SQL doing the joins; memory holds one
//! page whatever the window's size.

use std::collections::VecDeque;

use futures_util::stream::{BoxStream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::analytics::Window;
use crate::error::{Error, Result};
use crate::store::Store;
use crate::time::{format_time, from_micros};

/// What to report: the actions whose time is in `window` (start inclusive, end exclusive),
/// optionally only those naming `agent_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditQuery {
    pub window: Window,
    /// Only actions whose event names this agent (the agent acted on, or the failure's agent).
    pub agent_id: Option<String>,
}

/// One automated action. Field names are a stable contract (the JSON Lines of `healstore
/// audit --since ... --format json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// When the action was carried out (`action_executed`), or decided (other records).
    pub time: String,
    /// `action_executed` or `healing_attempted`: the event the record comes from.
    pub source: String,
    /// That event's position and id, to find it in the log.
    pub position: i64,
    pub event_id: String,
    /// The failure healed; `None` for actions taken on a signal (a circuit's trial).
    pub failure_id: Option<String>,
    pub failure_type: Option<String>,
    /// The agent acted on, or the failure's agent.
    pub agent_id: Option<String>,
    pub severity: Option<String>,
    pub detected_at: Option<String>,
    pub strategy: String,
    /// The decision behind the action (`act`, `delegated`, `shadow`, `suggest_only`,
    /// `withheld`) and its reason; `None` for actions taken on a signal.
    pub decision: Option<String>,
    pub reason: Option<String>,
    /// The action's name (`restart_agent`, ...) and its target (agent or task).
    pub action: Option<String>,
    pub target: Option<String>,
    /// For an action healstore did not execute: the action as the decision planned it (with
    /// its parameters: delay, priorities, counts).
    pub planned: Option<Value>,
    /// `success` or `error` (executed, or for `delegated` the outcome the caller reported),
    /// `pending` (delegated, no outcome reported yet), `not_executed` (shadow, suggest_only,
    /// withheld), `skipped` (an earlier action of the decision failed), `unrecorded` (decided
    /// to act, but no result was ever recorded).
    pub result: String,
    pub error: Option<String>,
    pub duration_ms: Option<i64>,
    /// Whether the failure was remediated (a strategy's healing actions succeeded), when and
    /// by which strategy (as of the report).
    pub remediated: bool,
    pub remediated_at: Option<String>,
    pub remediated_by: Option<String>,
    /// Whether the failure recovered (its agent or task works again), when, and how that is
    /// known: `signal` (a success signal), `status` (a healthy status from the coordinator
    /// after a remediation) or `confirmed` (a caller said so).
    pub recovered: bool,
    pub recovered_at: Option<String>,
    pub recovered_how: Option<String>,
}

/// Decisions that plan actions (the others plan none).
const ACTING: &str = "'act', 'delegated', 'shadow', 'suggest_only', 'withheld'";

/// The records of `query`, in time order (ties by position, then by the action's place in
/// its decision).
pub fn records(store: &Store, query: AuditQuery) -> BoxStream<'static, Result<AuditRecord>> {
    let scan = Scan {
        pool: store.read_pool().clone(),
        page: i64::from(store.options().page_size.max(1)),
        since: query.window.since_us(),
        until: query.window.until_us(),
        agent: query.agent_id,
        cursor: None,
        buffer: VecDeque::new(),
        finished: false,
    };
    futures_util::stream::unfold(scan, |mut scan| async move {
        loop {
            if let Some(r) = scan.buffer.pop_front() {
                return Some((Ok(r), scan));
            }
            if scan.finished {
                return None;
            }
            if let Err(e) = scan.next_page().await {
                scan.finished = true;
                return Some((Err(e), scan));
            }
        }
    })
    .boxed()
}

struct Scan {
    pool: sqlx::SqlitePool,
    page: i64,
    since: i64,
    until: i64,
    agent: Option<String>,
    /// The last event read: `(occurred_at, position)`.
    cursor: Option<(i64, i64)>,
    buffer: VecDeque<AuditRecord>,
    finished: bool,
}

impl Scan {
    async fn next_page(&mut self) -> Result<()> {
        // The unary `+` on event_type keeps SQLite on the time index (or the agent's), which
        // returns rows in the order wanted: with the type index it would sort the window's
        // whole remainder for every page.
        let sql = format!(
            "SELECT e.position, e.event_id, e.event_type, e.occurred_at, e.failure_id, e.agent_id,
                    e.strategy, e.success, e.duration_ms, e.payload,
                    f.failure_type, f.agent_id, f.severity, f.detected_at, f.remediated_at,
                    f.remediated_by,
                    d.payload, c.position, c.success, c.duration_ms,
                    CASE WHEN e.event_type = 'healing_attempted' AND c.position IS NOT NULL THEN
                        (SELECT count(*) FROM events x
                         WHERE x.failure_id = e.failure_id AND x.event_type = 'action_executed'
                           AND x.strategy = e.strategy
                           AND x.position > e.position AND x.position < c.position)
                    END,
                    f.recovered_at, f.recovered_how
             FROM events e
             LEFT JOIN failures f ON f.failure_id = e.failure_id
             LEFT JOIN events d ON e.event_type = 'action_executed' AND d.position =
                 (SELECT max(h.position) FROM events h
                  WHERE h.failure_id = e.failure_id AND h.event_type = 'healing_attempted'
                    AND h.strategy = e.strategy AND h.position < e.position)
             LEFT JOIN events c ON e.event_type = 'healing_attempted' AND c.position =
                 (SELECT min(x.position) FROM events x
                  WHERE x.failure_id = e.failure_id AND x.event_type = 'healing_completed'
                    AND x.strategy = e.strategy AND x.position > e.position)
             WHERE +e.event_type IN ('action_executed', 'healing_attempted')
               AND e.occurred_at >= ?1 AND e.occurred_at < ?2
               AND (e.occurred_at, e.position) > (?3, ?4)
               {agent}
               AND (e.event_type = 'action_executed'
                    OR e.payload ->> '$.decision' IN ({ACTING}))
             ORDER BY e.occurred_at, e.position
             LIMIT ?6",
            agent = if self.agent.is_some() {
                "AND e.agent_id = ?5"
            } else {
                "AND ?5 IS NULL"
            },
        );
        let (t, p) = self.cursor.unwrap_or((self.since, i64::MIN));
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(self.since)
            .bind(self.until)
            .bind(t)
            .bind(p)
            .bind(self.agent.as_deref())
            .bind(self.page)
            .fetch_all(&self.pool)
            .await
            .map_err(Error::from)?;
        if (rows.len() as i64) < self.page {
            self.finished = true;
        }
        for row in &rows {
            let occurred: i64 = row.try_get(3)?;
            let position: i64 = row.try_get(0)?;
            self.cursor = Some((occurred, position));
            self.buffer.extend(to_records(row)?);
        }
        Ok(())
    }
}

fn time_of(us: Option<i64>) -> Result<Option<String>> {
    us.map(|us| from_micros(us).map(format_time)).transpose()
}

fn parse_payload(text: &str, position: i64) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| {
        Error::InvalidInput(format!(
            "stored payload at position {position} is not JSON: {e}"
        ))
    })
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// The records one event stands for: one for an executed action; one per planned action not
/// executed for a decision (none when every planned action was executed).
fn to_records(row: &SqliteRow) -> Result<Vec<AuditRecord>> {
    let position: i64 = row.try_get(0)?;
    let event_type: String = row.try_get(2)?;
    let payload = parse_payload(&row.try_get::<String, _>(9)?, position)?;
    let remediated_at = time_of(row.try_get(14)?)?;
    let recovered_at = time_of(row.try_get(21)?)?;
    let base = AuditRecord {
        time: time_of(Some(row.try_get(3)?))?.unwrap_or_default(),
        source: event_type.clone(),
        position,
        event_id: row.try_get(1)?,
        failure_id: row.try_get(4)?,
        failure_type: row
            .try_get::<Option<String>, _>(10)?
            .or_else(|| text(&payload, "failure_type")),
        agent_id: row
            .try_get::<Option<String>, _>(5)?
            .or(row.try_get::<Option<String>, _>(11)?),
        severity: row.try_get(12)?,
        detected_at: time_of(row.try_get(13)?)?,
        strategy: row
            .try_get::<Option<String>, _>(6)?
            .unwrap_or_else(|| text(&payload, "strategy").unwrap_or_default()),
        decision: None,
        reason: None,
        action: None,
        target: None,
        planned: None,
        result: String::new(),
        error: None,
        duration_ms: None,
        remediated: remediated_at.is_some(),
        remediated_at,
        remediated_by: row.try_get(15)?,
        recovered: recovered_at.is_some(),
        recovered_at,
        recovered_how: row.try_get(22)?,
    };
    if event_type == "action_executed" {
        let decision = row
            .try_get::<Option<String>, _>(16)?
            .map(|d| parse_payload(&d, position))
            .transpose()?;
        let success: Option<i64> = row.try_get(7)?;
        return Ok(vec![AuditRecord {
            decision: decision.as_ref().and_then(|d| text(d, "decision")),
            reason: decision.as_ref().and_then(|d| text(d, "reason")),
            action: text(&payload, "action"),
            target: text(&payload, "target"),
            result: if success == Some(1) {
                "success"
            } else {
                "error"
            }
            .to_owned(),
            error: text(&payload, "error"),
            duration_ms: row.try_get(8)?,
            ..base
        }]);
    }

    // A decision: its planned actions that no action_executed stands for.
    let decision = text(&payload, "decision").unwrap_or_default();
    let completed: Option<i64> = row.try_get(17)?;
    let outcome: Option<i64> = row.try_get(18)?;
    let outcome_ms: Option<i64> = row.try_get(19)?;
    let executed: Option<i64> = row.try_get(20)?;
    let planned: Vec<Value> = payload
        .get("actions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let (skip, result, duration_ms) = match decision.as_str() {
        "act" => match completed {
            Some(_) => (
                usize::try_from(executed.unwrap_or(0)).unwrap_or(0),
                "skipped",
                None,
            ),
            None => (0, "unrecorded", None),
        },
        "delegated" => match outcome {
            Some(1) => (0, "success", outcome_ms),
            Some(_) => (0, "error", outcome_ms),
            None => (0, "pending", None),
        },
        _ => (0, "not_executed", None),
    };
    let reason = text(&payload, "reason");
    let mut out: Vec<AuditRecord> = planned
        .iter()
        .skip(skip)
        .map(|a| AuditRecord {
            decision: Some(decision.clone()),
            reason: reason.clone(),
            action: text(a, "action"),
            target: text(a, "task_id").or_else(|| text(a, "agent_id")),
            planned: Some(a.clone()),
            result: result.to_owned(),
            error: (result == "error").then(|| "the caller reported a failed outcome".to_owned()),
            duration_ms,
            ..base.clone()
        })
        .collect();
    if planned.is_empty() && decision != "act" {
        // A decision to act that planned nothing still stands in the record.
        out.push(AuditRecord {
            decision: Some(decision.clone()),
            reason,
            result: result.to_owned(),
            duration_ms,
            ..base
        });
    }
    Ok(out)
}
