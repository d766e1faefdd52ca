//! The engine's settings: how decisions are acted on ([`Mode`]) and the healer's own
//! [`Limits`].

use serde::Serialize;

use crate::error::Result;
use crate::heal::strategies::check::Section;

/// How the healer acts on its decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Decide, record and act (through the coordinator when there is one; without one, the
    /// actions are handed back to the caller as `delegated`, and the caller reports the
    /// outcome with [`Healer::record_outcome`]).
    #[default]
    Auto,
    /// Auto-heal off: decisions are recorded as suggestions; nothing is acted on and no
    /// strategy state changes.
    SuggestOnly,
    /// Decide and record as if acting, state included, but do not act.
    Shadow,
}

/// Limits on the healer itself. Beyond them a decision is recorded as `withheld`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// At most this many acting decisions per agent in any hour.
    pub max_actions_per_agent_per_hour: Option<u32>,
    /// At most this share (0..=1) of the fleet disabled (isolated by open circuits) at once.
    pub max_disabled_fraction: Option<f64>,
    /// The fleet's size, for the share above. Without it the coordinator's topology is asked,
    /// and without a coordinator the agents the healer has state for are counted.
    pub fleet_size: Option<u32>,
}

impl Limits {
    /// Checks the limits (see [`crate::config`]): one line naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        let s = Section("limits");
        if let Some(v) = self.max_actions_per_agent_per_hour {
            s.at_least("max_actions_per_agent_per_hour", u64::from(v), 1)?;
        }
        if let Some(v) = self.max_disabled_fraction {
            s.number_within("max_disabled_fraction", v, 0.0, 1.0)?;
        }
        if let Some(v) = self.fleet_size {
            s.at_least("fleet_size", u64::from(v), 1)?;
        }
        Ok(())
    }
}

/// Settings of a [`Healer`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HealerOptions {
    pub mode: Mode,
    pub limits: Limits,
}
