//! Recoveries: success signals with the failures they recover, and confirmations.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::*;
use crate::event::{ExpectedVersion, NewEvent};
use crate::events::{HealEvent, RecoveryHow};
use crate::heal::engine::facts::*;
use crate::heal::model::failure_stream;
use crate::heal::strategy::Signal;
use crate::store::StreamAppend;

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
pub(super) struct Recovery {
    pub(super) detected_at: DateTime<Utc>,
    pub(super) agent_id: Option<String>,
    pub(super) task_id: Option<String>,
    pub(super) recorded: Option<RecoveryReport>,
}

impl Healer {
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
        let fact = fact(
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
    pub(super) async fn append_with_recoveries(
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
    pub(super) async fn open_failures(
        &self,
        agent: &str,
        task: Option<&str>,
        at: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<(String, Option<String>, Option<String>)>> {
        // SQLite is told which partial index each half reads (its planner would otherwise
        // pick the wider index on agent_id); PostgreSQL's planner matches them itself.
        let (by_agent, by_task) = match self.store.db().dialect() {
            crate::store::dialect::Dialect::Sqlite => (
                "failures INDEXED BY failures_open_by_agent",
                "failures INDEXED BY failures_open_by_task",
            ),
            crate::store::dialect::Dialect::Postgres => ("failures", "failures"),
        };
        self.store
            .db()
            .fetch_all(
                &format!(
                    "SELECT failure_id, agent_id, task_id FROM ( \
                       SELECT failure_id, agent_id, task_id, detected_at \
                       FROM {by_agent} \
                       WHERE agent_id = ?1 AND task_id IS NULL AND recovered_at IS NULL \
                         AND detected_at < ?3 \
                       UNION ALL \
                       SELECT failure_id, agent_id, task_id, detected_at \
                       FROM {by_task} \
                       WHERE task_id = ?2 AND recovered_at IS NULL AND detected_at < ?3) AS candidates \
                     ORDER BY detected_at, failure_id LIMIT ?4"
                ),
                &[
                    agent.into(),
                    task.into(),
                    crate::time::to_micros(at).into(),
                    limit.into(),
                ],
            )
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
    pub(super) async fn recovery_state(
        &self,
        failure_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Recovery> {
        crate::event::check_id("failure_id", failure_id)?;
        type Row = (
            i64,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<String>,
            Option<i64>,
        );
        let row: Option<Row> = self
            .store
            .db()
            .fetch_optional(
                "SELECT detected_at, agent_id, task_id, recovered_at, recovered_how, recover_us \
                 FROM failures WHERE failure_id = ?1",
                &[failure_id.into()],
            )
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
}
