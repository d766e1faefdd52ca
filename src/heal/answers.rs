//! The healer's answers as documents: what `healstore circuits` and `states` print with
//! `--format json`, and what the HTTP API answers (one definition for both).

use serde::Serialize;
use serde_json::Value;

use super::healer::{Healer, StateView};
use crate::Result;

/// `circuits --format json`: every circuit breaker not at rest, each the breaker's state with
/// its `agent_id`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CircuitsReport {
    pub circuits: Vec<Value>,
}

/// `states --format json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatesReport {
    pub states: Vec<StateView>,
}

impl Healer {
    /// `circuits --format json`: [`Healer::circuits`] as the document.
    pub async fn circuits_report(&self, agent: Option<&str>) -> Result<CircuitsReport> {
        Ok(CircuitsReport {
            circuits: self.circuits(agent).await?,
        })
    }

    /// Every strategy's state (only `strategy`'s when given), caught up with the log.
    pub async fn states_report(&self, strategy: Option<&str>) -> Result<StatesReport> {
        Ok(StatesReport {
            states: self.states(strategy).await?,
        })
    }
}
