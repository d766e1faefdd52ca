//! The coordinator: how healing decisions reach the fleet. healstore decides and records; the
//! coordinator (the user's orchestrator, or the simulated fleet of `healstore demo`) acts.

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::model::{AgentStatus, Priority, Topology};

/// An error reported by the coordinator. Recorded in the log as the action's result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct CoordinatorError(pub String);

impl CoordinatorError {
    pub fn new(msg: impl Into<String>) -> Self {
        CoordinatorError(msg.into())
    }
}

pub type CoordResult<T> = Result<T, CoordinatorError>;

/// The operations healing needs from the system being healed. Every method reports failure
/// as an error; healstore never assumes an action worked.
#[async_trait]
pub trait Coordinator: Send + Sync {
    /// The agent's status, or `None` when the coordinator does not know it.
    async fn agent_status(&self, agent_id: &str) -> CoordResult<Option<AgentStatus>>;
    async fn register_agent(&self, agent_id: &str, metadata: Map<String, Value>)
    -> CoordResult<()>;
    async fn unregister_agent(&self, agent_id: &str) -> CoordResult<()>;
    async fn topology(&self) -> CoordResult<Topology>;
    /// Pauses queued tasks of these priorities; returns how many were paused.
    async fn pause_tasks(&self, priorities: &[Priority]) -> CoordResult<u32>;
    /// Resumes tasks of these priorities; returns how many were resumed.
    async fn resume_tasks(&self, priorities: &[Priority]) -> CoordResult<u32>;
    async fn set_concurrency(&self, max_per_agent: u32) -> CoordResult<()>;
    async fn set_caching(&self, enabled: bool) -> CoordResult<()>;
    async fn set_prompt_simplification(&self, enabled: bool) -> CoordResult<()>;
    /// Schedules the task to run again after `delay_ms` (the coordinator waits, not healstore).
    async fn retry_task(
        &self,
        task_id: &str,
        agent_id: Option<&str>,
        delay_ms: u64,
    ) -> CoordResult<()>;
    /// Starts `count` agents; returns their ids.
    async fn spawn_agents(&self, count: u32) -> CoordResult<Vec<String>>;
}

/// A coordinator that accepts everything and does nothing (benchmarks, dry runs). It knows
/// every agent.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopCoordinator;

#[async_trait]
impl Coordinator for NoopCoordinator {
    async fn agent_status(&self, agent_id: &str) -> CoordResult<Option<AgentStatus>> {
        Ok(Some(AgentStatus {
            agent_id: agent_id.to_owned(),
            state: "active".into(),
            last_heartbeat: None,
            metadata: Map::new(),
        }))
    }
    async fn register_agent(&self, _: &str, _: Map<String, Value>) -> CoordResult<()> {
        Ok(())
    }
    async fn unregister_agent(&self, _: &str) -> CoordResult<()> {
        Ok(())
    }
    async fn topology(&self) -> CoordResult<Topology> {
        Ok(Topology {
            agent_count: 1,
            healthy_count: 1,
        })
    }
    async fn pause_tasks(&self, _: &[Priority]) -> CoordResult<u32> {
        Ok(0)
    }
    async fn resume_tasks(&self, _: &[Priority]) -> CoordResult<u32> {
        Ok(0)
    }
    async fn set_concurrency(&self, _: u32) -> CoordResult<()> {
        Ok(())
    }
    async fn set_caching(&self, _: bool) -> CoordResult<()> {
        Ok(())
    }
    async fn set_prompt_simplification(&self, _: bool) -> CoordResult<()> {
        Ok(())
    }
    async fn retry_task(&self, _: &str, _: Option<&str>, _: u64) -> CoordResult<()> {
        Ok(())
    }
    async fn spawn_agents(&self, count: u32) -> CoordResult<Vec<String>> {
        Ok((0..count).map(|i| format!("spawned-{i}")).collect())
    }
}
