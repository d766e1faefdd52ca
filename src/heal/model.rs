//! The healing domain's nouns: failures, their types and severities, actions, agents.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use crate::events::Severity;

/// Failure types healstore knows. The set is open: any string is a failure type, and a
/// strategy can be registered for it.
pub mod failure_types {
    pub const AGENT_DOWN: &str = "agent_down";
    pub const AGENT_FAILED: &str = "agent_failed";
    pub const HEARTBEAT_FAILED: &str = "heartbeat_failed";
    pub const TASK_TIMEOUT: &str = "task_timeout";
    pub const TASK_FAILED: &str = "task_failed";
    pub const EXECUTION_ERROR: &str = "execution_error";
    pub const RESOURCE_EXHAUSTION: &str = "resource_exhaustion";
    pub const TOKEN_EXHAUSTION: &str = "token_exhaustion";
    pub const QUOTA_EXCEEDED: &str = "quota_exceeded";
    pub const MEMORY_EXHAUSTION: &str = "memory_exhaustion";
    pub const MEMORY_PRESSURE: &str = "memory_pressure";
    pub const HIGH_LATENCY: &str = "high_latency";
    pub const QUORUM_LOSS: &str = "quorum_loss";
    pub const CONSENSUS_FAILED: &str = "consensus_failed";
    pub const INSUFFICIENT_AGENTS: &str = "insufficient_agents";

    /// Failures of an agent as a whole.
    pub const AGENT: &[&str] = &[AGENT_DOWN, AGENT_FAILED, HEARTBEAT_FAILED];
    /// Failures of a task.
    pub const TASK: &[&str] = &[TASK_TIMEOUT, TASK_FAILED, EXECUTION_ERROR];
    /// Resource pressure.
    pub const RESOURCE: &[&str] = &[
        RESOURCE_EXHAUSTION,
        TOKEN_EXHAUSTION,
        QUOTA_EXCEEDED,
        MEMORY_EXHAUSTION,
        MEMORY_PRESSURE,
        HIGH_LATENCY,
    ];
    /// Loss of quorum.
    pub const QUORUM: &[&str] = &[QUORUM_LOSS, CONSENSUS_FAILED, INSUFFICIENT_AGENTS];
}

/// A detected failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// Unique (UUIDv7 unless the caller gives one).
    pub failure_id: String,
    pub failure_type: String,
    /// `None` for system-wide failures (quorum loss, a shared resource).
    pub agent_id: Option<String>,
    pub task_id: Option<String>,
    pub severity: Severity,
    pub detected_at: DateTime<Utc>,
    /// The raw event the failure was detected from.
    pub source_event: Option<Value>,
    /// Strategy inputs: resource_type, current_usage, limit, required_quorum...
    pub metadata: Map<String, Value>,
}

impl Failure {
    /// A failure of the given type, detected at `at`, with a fresh id.
    pub fn new(failure_type: impl Into<String>, severity: Severity, at: DateTime<Utc>) -> Self {
        Failure {
            failure_id: uuid::Uuid::now_v7().to_string(),
            failure_type: failure_type.into(),
            agent_id: None,
            task_id: None,
            severity,
            detected_at: at,
            source_event: None,
            metadata: Map::new(),
        }
    }

    /// Refuses ids no event could hold (an empty failure id, type, agent or task), before
    /// anything is written.
    pub fn check_ids(&self) -> crate::Result<()> {
        use crate::event::check_id;
        check_id("failure_type", &self.failure_type)?;
        check_id("failure_id", &self.failure_id)?;
        for (name, v) in [("agent_id", &self.agent_id), ("task_id", &self.task_id)] {
            if let Some(v) = v {
                check_id(name, v)?;
            }
        }
        Ok(())
    }

    pub fn with_agent(mut self, agent: impl Into<String>) -> Self {
        self.agent_id = Some(agent.into());
        self
    }

    pub fn with_task(mut self, task: impl Into<String>) -> Self {
        self.task_id = Some(task.into());
        self
    }

    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.failure_id = id.into();
        self
    }

    pub fn with_meta(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.metadata.insert(key.to_owned(), value.into());
        self
    }

    /// A number from the metadata.
    pub fn meta_f64(&self, key: &str) -> Option<f64> {
        self.metadata.get(key).and_then(Value::as_f64)
    }

    /// A string from the metadata.
    pub fn meta_str(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).and_then(Value::as_str)
    }

    /// The stream holding this failure's story.
    pub fn stream_id(&self) -> String {
        failure_stream(&self.failure_id)
    }
}

/// The stream of a failure.
pub fn failure_stream(failure_id: &str) -> String {
    format!("failure-{failure_id}")
}

/// The result of healing a failure, as the seed design describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealingResult {
    pub success: bool,
    pub failure_id: String,
    /// The strategy that acted (`Composite[Inner]` when a chain's member did), or a word for
    /// what happened instead: `none` (no strategy), `withheld`, ...
    pub strategy_used: String,
    /// Human-readable list of what was done.
    pub actions_taken: Vec<String>,
    pub duration_ms: i64,
    pub timestamp: DateTime<Utc>,
    pub metadata: Map<String, Value>,
}

/// Task priorities, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Priority {
    Critical,
    High,
    Medium,
    Low,
    Background,
}

/// What a coordinator reports of an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub agent_id: String,
    /// `active`, `idle`, `busy` or `failed`.
    pub state: String,
    pub last_heartbeat: Option<DateTime<Utc>>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// What a coordinator reports of the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    /// Registered agents.
    pub agent_count: u32,
    /// Agents that are registered and not failed.
    pub healthy_count: u32,
}

/// One thing a strategy asks the coordinator to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Save the agent's metadata, unregister it and register it again.
    RestartAgent { agent_id: String },
    /// Take the agent out of rotation.
    UnregisterAgent { agent_id: String },
    /// Put the agent (back) into rotation.
    RegisterAgent {
        agent_id: String,
        #[serde(default)]
        metadata: Map<String, Value>,
    },
    /// Run the task again after a delay.
    RetryTask {
        task_id: String,
        delay_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_id: Option<String>,
    },
    /// Pause queued tasks of these priorities.
    PauseTasks { priorities: Vec<Priority> },
    /// Resume tasks of these priorities.
    ResumeTasks { priorities: Vec<Priority> },
    /// Limit concurrent tasks per agent.
    SetConcurrency { max_per_agent: u32 },
    /// Turn response caching on or off.
    SetCaching { enabled: bool },
    /// Turn prompt simplification on or off.
    SetPromptSimplification { enabled: bool },
    /// Start new agents.
    SpawnAgents { count: u32 },
    /// Compare the healthy agents with a quorum and start the missing ones (the comparison
    /// happens when the action runs, against the coordinator's topology then).
    EnsureAgents { min_healthy: u32 },
}

impl Action {
    /// The action's name as recorded (`restart_agent`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Action::RestartAgent { .. } => "restart_agent",
            Action::UnregisterAgent { .. } => "unregister_agent",
            Action::RegisterAgent { .. } => "register_agent",
            Action::RetryTask { .. } => "retry_task",
            Action::PauseTasks { .. } => "pause_tasks",
            Action::ResumeTasks { .. } => "resume_tasks",
            Action::SetConcurrency { .. } => "set_concurrency",
            Action::SetCaching { .. } => "set_caching",
            Action::SetPromptSimplification { .. } => "set_prompt_simplification",
            Action::SpawnAgents { .. } => "spawn_agents",
            Action::EnsureAgents { .. } => "ensure_agents",
        }
    }

    /// The agent the action is about, if any.
    pub fn agent(&self) -> Option<&str> {
        match self {
            Action::RestartAgent { agent_id }
            | Action::UnregisterAgent { agent_id }
            | Action::RegisterAgent { agent_id, .. } => Some(agent_id),
            Action::RetryTask { agent_id, .. } => agent_id.as_deref(),
            _ => None,
        }
    }

    /// The target as text, for the log.
    pub fn target(&self) -> Option<String> {
        match self {
            Action::RetryTask { task_id, .. } => Some(task_id.clone()),
            other => other.agent().map(str::to_owned),
        }
    }

    /// A sentence for people.
    pub fn describe(&self) -> String {
        match self {
            Action::RestartAgent { agent_id } => format!("restart agent {agent_id}"),
            Action::UnregisterAgent { agent_id } => format!("unregister agent {agent_id}"),
            Action::RegisterAgent { agent_id, .. } => format!("register agent {agent_id}"),
            Action::RetryTask {
                task_id, delay_ms, ..
            } => format!("retry task {task_id} in {delay_ms} ms"),
            Action::PauseTasks { priorities } => format!("pause {priorities:?} tasks"),
            Action::ResumeTasks { priorities } => format!("resume {priorities:?} tasks"),
            Action::SetConcurrency { max_per_agent } => {
                format!("limit concurrency to {max_per_agent} per agent")
            }
            Action::SetCaching { enabled } => {
                format!(
                    "{} response caching",
                    if *enabled { "enable" } else { "disable" }
                )
            }
            Action::SetPromptSimplification { enabled } => format!(
                "{} prompt simplification",
                if *enabled { "enable" } else { "disable" }
            ),
            Action::SpawnAgents { count } => format!("spawn {count} agent(s)"),
            Action::EnsureAgents { min_healthy } => {
                format!("ensure at least {min_healthy} healthy agents")
            }
        }
    }
}
