//! Recommendations that propose configurations: each recommendation a configuration change
//! can address carries the change as a TOML fragment of the configuration file, and the
//! changes combine into a candidate configuration that a backtest can judge.
//!
//! | rule | change |
//! |---|---|
//! | `enable_circuit_breaker` | route `task_timeout` through `circuit_breaker` before its current strategies, and let the breaker count timeouts |
//! | `enable_degradation` | route the resource failure types without it to `gradual_degradation` |
//! | `flapping_circuit` | double `circuit_breaker.open_ms` (and `max_open_ms` if it would be exceeded) |
//! | `replace_strategy` | take the strategy out of the chains it shares with others (a strategy alone on its route has no alternative to propose) |
//! | `tune_strategy` | `task_retry.max_attempts` + 1, `circuit_breaker.failure_threshold` + 1, `agent_restart.base_ms` halved, `gradual_degradation.hysteresis` doubled (at most 0.5) |
//! | `healer_limits_reached` | raise `limits.max_actions_per_agent_per_hour` by half, `limits.max_disabled_fraction` by 0.1 |
//! | `ineffective_prevention` | remove the action from `prevention.auto.actions` |

use serde::Serialize;

use super::Recommendation;
use crate::config::{Config, RouteConfig, StrategyKind};
use crate::error::{Error, Result};
use crate::heal::failure_types as ft;

/// One edit of the configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    /// A setting, by its dotted key (`circuit_breaker.open_ms`).
    Set { key: String, value: toml::Value },
    /// A `[[route]]` that replaces the route of its failure types.
    Route(RouteConfig),
}

/// A configuration change a recommendation proposes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigProposal {
    pub rule: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The change in words.
    pub change: String,
    /// The change as a fragment of the configuration file.
    pub toml: String,
    #[serde(skip)]
    pub edits: Vec<Edit>,
}

impl ConfigProposal {
    /// `config` with this change.
    pub fn apply(&self, config: &Config) -> Result<Config> {
        let mut c = config.clone();
        for e in &self.edits {
            match e {
                Edit::Set { key, value } => c = c.with_setting(key, &value.to_string())?,
                Edit::Route(r) => {
                    c.route.retain(|x| x.failure_types != r.failure_types);
                    c.route.push(r.clone());
                }
            }
        }
        c.validate()?;
        Ok(c)
    }
}

/// `config` with every proposal applied, in order.
pub fn combine(config: &Config, proposals: &[ConfigProposal]) -> Result<Config> {
    let mut c = config.clone();
    for p in proposals {
        c = p.apply(&c)?;
    }
    Ok(c)
}

/// The configuration as a file's text.
pub fn to_toml(config: &Config) -> Result<String> {
    toml::to_string(config)
        .map_err(|e| Error::InvalidInput(format!("the configuration does not serialise: {e}")))
}

fn render(edits: &[Edit]) -> String {
    let mut out = String::new();
    let mut tables: Vec<(String, Vec<String>)> = Vec::new();
    for e in edits {
        if let Edit::Set { key, value } = e {
            let (table, name) = key.rsplit_once('.').unwrap_or(("", key));
            let line = format!("{name} = {value}");
            match tables.iter_mut().find(|(t, _)| t == table) {
                Some((_, lines)) => lines.push(line),
                None => tables.push((table.to_owned(), vec![line])),
            }
        }
    }
    for (table, lines) in tables {
        if !table.is_empty() {
            out.push_str(&format!("[{table}]\n"));
        }
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    for e in edits {
        if let Edit::Route(r) = e {
            let types: Vec<String> = r.failure_types.iter().map(|t| format!("{t:?}")).collect();
            let kinds: Vec<String> = r.strategies.iter().map(|k| format!("\"{k}\"")).collect();
            out.push_str(&format!(
                "[[route]]\nfailure_types = [{}]\nstrategies = [{}]\n",
                types.join(", "),
                kinds.join(", ")
            ));
        }
    }
    out
}

fn strings(v: &[String]) -> toml::Value {
    toml::Value::Array(v.iter().cloned().map(toml::Value::String).collect())
}

fn kind_of(name: &str) -> Option<StrategyKind> {
    use StrategyKind::*;
    Some(match name {
        "CircuitBreaker" => CircuitBreaker,
        "AgentRestart" => AgentRestart,
        "TaskRetry" => TaskRetry,
        "ResourceRebalance" => ResourceRebalance,
        "QuorumRecovery" => QuorumRecovery,
        "GradualDegradation" => GradualDegradation,
        _ => return None,
    })
}

fn set(key: &str, value: toml::Value) -> Edit {
    Edit::Set {
        key: key.into(),
        value,
    }
}

/// The change one recommendation proposes on `config`, if a configuration change can address
/// it.
pub fn proposal_for(r: &Recommendation, config: &Config) -> Option<ConfigProposal> {
    let routes = config.effective_routes();
    let route_of = |t: &str| {
        routes
            .iter()
            .find(|(x, _)| x == t)
            .map(|(_, k)| k.clone())
            .unwrap_or_default()
    };
    let (change, edits): (String, Vec<Edit>) = match r.rule.as_str() {
        "enable_circuit_breaker" => {
            let mut edits = Vec::new();
            let current = route_of(ft::TASK_TIMEOUT);
            if !current.contains(&StrategyKind::CircuitBreaker) {
                let mut s = vec![StrategyKind::CircuitBreaker];
                s.extend(current);
                edits.push(Edit::Route(RouteConfig {
                    failure_types: vec![ft::TASK_TIMEOUT.into()],
                    strategies: s,
                }));
            }
            let types = &config.circuit_breaker.failure_types;
            if !types.iter().any(|t| t == ft::TASK_TIMEOUT) {
                let mut t = types.clone();
                t.push(ft::TASK_TIMEOUT.into());
                edits.push(set("circuit_breaker.failure_types", strings(&t)));
            }
            (
                "route task_timeout through the circuit breaker first".into(),
                edits,
            )
        }
        "enable_degradation" => {
            let mut edits = Vec::new();
            let missing: Vec<String> = ft::RESOURCE
                .iter()
                .filter(|t| !route_of(t).contains(&StrategyKind::GradualDegradation))
                .map(|t| (*t).to_owned())
                .collect();
            if !missing.is_empty() {
                edits.push(Edit::Route(RouteConfig {
                    failure_types: missing.clone(),
                    strategies: vec![StrategyKind::GradualDegradation],
                }));
            }
            let types = &config.gradual_degradation.failure_types;
            let lacking: Vec<&String> = missing.iter().filter(|t| !types.contains(t)).collect();
            if !lacking.is_empty() {
                let mut t = types.clone();
                t.extend(lacking.into_iter().cloned());
                edits.push(set("gradual_degradation.failure_types", strings(&t)));
            }
            (
                format!("route {} to gradual degradation", missing.join(", ")),
                edits,
            )
        }
        "flapping_circuit" => {
            let cb = &config.circuit_breaker;
            let open = cb.open_ms.saturating_mul(2);
            let mut edits = vec![set(
                "circuit_breaker.open_ms",
                toml::Value::Integer(open as i64),
            )];
            if open > cb.max_open_ms {
                edits.push(set(
                    "circuit_breaker.max_open_ms",
                    toml::Value::Integer(open as i64),
                ));
            }
            (
                format!(
                    "keep flapping circuits open longer: open_ms {} -> {open}",
                    cb.open_ms
                ),
                edits,
            )
        }
        "replace_strategy" => {
            let kind = kind_of(r.subject.as_deref()?)?;
            let mut edits = Vec::new();
            let mut by_chain: Vec<(Vec<StrategyKind>, Vec<String>)> = Vec::new();
            for (t, ks) in &routes {
                if ks.contains(&kind) && ks.len() > 1 {
                    let rest: Vec<StrategyKind> =
                        ks.iter().copied().filter(|k| *k != kind).collect();
                    match by_chain.iter_mut().find(|(c, _)| *c == rest) {
                        Some((_, types)) => types.push(t.clone()),
                        None => by_chain.push((rest, vec![t.clone()])),
                    }
                }
            }
            for (strategies, failure_types) in by_chain {
                edits.push(Edit::Route(RouteConfig {
                    failure_types,
                    strategies,
                }));
            }
            (
                format!("take {kind} out of the chains it shares with other strategies"),
                edits,
            )
        }
        "tune_strategy" => match kind_of(r.subject.as_deref()?)? {
            StrategyKind::TaskRetry => {
                let n = config.task_retry.max_attempts + 1;
                (
                    format!("one more retry: max_attempts {n}"),
                    vec![set(
                        "task_retry.max_attempts",
                        toml::Value::Integer(n.into()),
                    )],
                )
            }
            StrategyKind::CircuitBreaker => {
                let n = config.circuit_breaker.failure_threshold + 1;
                (
                    format!("open after one more failure: failure_threshold {n}"),
                    vec![set(
                        "circuit_breaker.failure_threshold",
                        toml::Value::Integer(n.into()),
                    )],
                )
            }
            StrategyKind::AgentRestart => {
                let b = (config.agent_restart.base_ms / 2).max(1);
                (
                    format!("restart sooner: base_ms {b}"),
                    vec![set("agent_restart.base_ms", toml::Value::Integer(b as i64))],
                )
            }
            StrategyKind::GradualDegradation => {
                let h = (config.gradual_degradation.hysteresis * 2.0).clamp(0.01, 0.5);
                (
                    format!("step back later: hysteresis {h}"),
                    vec![set("gradual_degradation.hysteresis", toml::Value::Float(h))],
                )
            }
            _ => return None,
        },
        "healer_limits_reached" => {
            let mut edits = Vec::new();
            let l = &config.limits;
            if let Some(n) = l.max_actions_per_agent_per_hour {
                let m = (n + n / 2).max(n + 1);
                edits.push(set(
                    "limits.max_actions_per_agent_per_hour",
                    toml::Value::Integer(m.into()),
                ));
            }
            if let Some(f) = l.max_disabled_fraction {
                let g = ((f + 0.1) * 100.0).round() / 100.0;
                edits.push(set(
                    "limits.max_disabled_fraction",
                    toml::Value::Float(g.min(1.0)),
                ));
            }
            ("raise the healer's limits".into(), edits)
        }
        "ineffective_prevention" => {
            let action = r.subject.as_deref()?.split_once('/')?.1;
            let auto = config.prevention.auto.as_ref()?;
            let parts: Vec<&str> = action.split('+').collect();
            if !auto.actions.iter().any(|a| parts.contains(&a.as_str())) {
                return None;
            }
            let kept: Vec<String> = auto
                .actions
                .iter()
                .filter(|a| !parts.contains(&a.as_str()))
                .cloned()
                .collect();
            (
                format!("stop approving {action} automatically"),
                vec![set("prevention.auto.actions", strings(&kept))],
            )
        }
        _ => return None,
    };
    if edits.is_empty() {
        return None;
    }
    Some(ConfigProposal {
        rule: r.rule.clone(),
        subject: r.subject.clone(),
        change,
        toml: render(&edits),
        edits,
    })
}

/// The proposals of a list of recommendations (those a configuration change addresses, whose
/// change applies to `config`), and the same recommendations carrying their fragments
/// (`proposal`).
pub fn proposals(recs: &mut [Recommendation], config: &Config) -> Vec<ConfigProposal> {
    let mut out = Vec::new();
    for r in recs.iter_mut() {
        if let Some(p) = proposal_for(r, config).filter(|p| p.apply(config).is_ok()) {
            r.proposal = Some(p.toml.clone());
            out.push(p);
        }
    }
    out
}
