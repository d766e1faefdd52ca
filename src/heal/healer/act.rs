//! Carrying out an acting decision through the coordinator.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::Map;

use super::*;
use crate::event::{ExpectedVersion, NewEvent};
use crate::events::{ActionExecuted, HealEvent, RecoveryHow};
use crate::heal::coordinator::Coordinator;
use crate::heal::engine::facts::*;
use crate::heal::model::{Action, Failure};

/// The agent states a coordinator reports for an agent that works.
pub(super) const HEALTHY_STATES: &[&str] = &["active", "idle", "busy"];

/// Carries out one action; `Ok` says what was done, `Err` why it failed.
pub(super) async fn execute(
    c: &dyn Coordinator,
    action: &Action,
) -> std::result::Result<String, String> {
    let e = |e: crate::heal::coordinator::CoordinatorError| e.to_string();
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

impl Healer {
    /// Carries out an acting decision through the coordinator, recording every action's result
    /// and the outcome (with the strategy's reaction to it). Returns whether it healed.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn act(
        &self,
        strategy: &Arc<dyn ErasedStrategy>,
        failure: &Failure,
        fstream: &str,
        decision: &crate::heal::strategy::ErasedDecision,
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
            events.push(fact(
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
    pub(super) async fn status_recovery(
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
}
