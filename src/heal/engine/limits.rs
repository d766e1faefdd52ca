//! The healer's own limits as arithmetic: the counts come from the log (read by the live
//! healer under its locks, or kept by a replay), the verdict and the fact recorded with a
//! decision that is counted come from here.

use crate::events::{DisabledAgent, LimitCounted};
use crate::heal::model::{Action, Failure};

/// The agent's hourly action limit, with `count` acting decisions on `agent` in the hour
/// before: `Err(why)` when it is reached, otherwise the fact that counts this one.
pub fn agent_actions(
    failure: &Failure,
    strategy: &str,
    agent: &str,
    count: u64,
    max: u32,
) -> Result<LimitCounted, String> {
    if count >= u64::from(max) {
        return Err(format!(
            "{count} automated actions on {agent} in the last hour (limit {max})"
        ));
    }
    Ok(LimitCounted {
        limit: "agent_actions".into(),
        failure_id: failure.failure_id.clone(),
        decided_by: strategy.to_owned(),
        agent_id: Some(agent.to_owned()),
        count: count + 1,
        allowed: u64::from(max),
        disabled: Vec::new(),
    })
}

/// The agents a decision's actions take out of rotation.
pub fn disabling_agents(actions: &[Action]) -> Vec<&str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::UnregisterAgent { agent_id } => Some(agent_id.as_str()),
            _ => None,
        })
        .collect()
}

/// The fleet's limit on disabled agents: `disabled` now (each with the state stream and
/// version that disables it), of `total`, plus those `disabling` would disable (their state
/// at `stream`, `version_after`). `Err(why)` over the share, otherwise the fact that counts
/// them.
#[allow(clippy::too_many_arguments)]
pub fn fleet_disabled(
    failure: &Failure,
    strategy: &str,
    mut disabled: Vec<DisabledAgent>,
    disabling: &[&str],
    stream: &str,
    version_after: u64,
    total: usize,
    max_share: f64,
) -> Result<LimitCounted, String> {
    let total = total.max(1);
    disabled.retain(|d| !disabling.contains(&d.agent.as_str()));
    for agent in disabling {
        disabled.push(DisabledAgent {
            agent: (*agent).to_owned(),
            stream: stream.to_owned(),
            version: version_after,
        });
    }
    let after = disabled.len();
    let share = after as f64 / total as f64;
    if share > max_share {
        return Err(format!(
            "{after} of {total} agents would be disabled ({:.0} %, limit {:.0} %)",
            share * 100.0,
            max_share * 100.0
        ));
    }
    disabled.sort_by(|a, b| a.agent.cmp(&b.agent));
    Ok(LimitCounted {
        limit: "fleet_disabled".into(),
        failure_id: failure.failure_id.clone(),
        decided_by: strategy.to_owned(),
        agent_id: None,
        count: after as u64,
        allowed: (max_share * total as f64 + 1e-9).floor() as u64,
        disabled,
    })
}
