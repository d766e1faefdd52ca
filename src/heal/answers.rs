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
    ///
    /// With `agent`, that agent's circuit, and a [`NotFound`](crate::Error::NotFound) error
    /// when the healer holds none for it (an agent it never counted a failure of, or whose
    /// circuit is back at rest and forgotten: closed, nothing to remember), as
    /// `healstore circuits --agent A` and `GET /v1/circuits/{agent}` (a 404) both answer.
    pub async fn circuits_report(&self, agent: Option<&str>) -> Result<CircuitsReport> {
        let circuits = self.circuits(agent).await?;
        if let Some(a) = agent
            && circuits.is_empty()
        {
            return Err(crate::Error::NotFound(format!(
                "no circuit is held for agent {a:?}: none of its failures is counted (a \
                 circuit at rest is closed)"
            )));
        }
        Ok(CircuitsReport { circuits })
    }

    /// Every strategy's state (only `strategy`'s when given), caught up with the log.
    pub async fn states_report(&self, strategy: Option<&str>) -> Result<StatesReport> {
        Ok(StatesReport {
            states: self.states(strategy).await?,
        })
    }
}
