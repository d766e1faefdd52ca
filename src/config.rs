//! Configuration: which strategy heals which failure type, with what parameters, read from a
//! TOML file (`healstore.toml`, or `--config PATH`). Without a file the defaults follow the
//! seed design: agent failures go through a composite of the circuit breaker and agent
//! restart, task failures to retry, resource exhaustion to gradual degradation, quorum loss to
//! quorum recovery.
//!
//! ```toml
//! mode = "auto"                 # auto | suggest_only | shadow
//!
//! [limits]
//! max_actions_per_agent_per_hour = 20
//! max_disabled_fraction = 0.25
//!
//! [[route]]                     # replaces the default route of these failure types
//! failure_types = ["agent_down", "heartbeat_failed"]
//! strategies = ["circuit_breaker", "agent_restart"]   # two or more: a composite chain
//!
//! [circuit_breaker]
//! failure_threshold = 3
//! ```
//!
//! The effective configuration is recorded in the log as a `configuration_changed` event
//! whenever it differs from the last one recorded; history and statistics are untouched by a
//! change.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::event::ExpectedVersion;
use crate::events::{ConfigurationChanged, HealEvent};
use crate::heal::failure_types as ft;
use crate::heal::strategies::circuit::{CircuitBreaker, CircuitBreakerConfig};
use crate::heal::strategies::degradation::{GradualDegradation, GradualDegradationConfig};
use crate::heal::strategies::quorum::{QuorumRecovery, QuorumRecoveryConfig};
use crate::heal::strategies::rebalance::{ResourceRebalance, ResourceRebalanceConfig};
use crate::heal::strategies::restart::{AgentRestart, AgentRestartConfig};
use crate::heal::strategies::retry::{TaskRetry, TaskRetryConfig};
use crate::heal::{Composite, HealerBuilder, HealerOptions, Limits, Mode};
use crate::store::{EventFilter, Store};

/// The default configuration file, looked up in the current directory.
pub const DEFAULT_FILE: &str = "healstore.toml";

/// The stream holding configuration changes.
pub const CONFIG_STREAM: &str = "config";

/// A built-in strategy, by its configuration name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyKind {
    CircuitBreaker,
    AgentRestart,
    TaskRetry,
    ResourceRebalance,
    QuorumRecovery,
    GradualDegradation,
}

/// Failure types routed to a strategy, or to a chain of strategies tried in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub failure_types: Vec<String>,
    /// One strategy, or several: a composite chain in this order. Empty: no strategy (the
    /// failure is recorded as `no_strategy`).
    pub strategies: Vec<StrategyKind>,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub mode: Mode,
    pub limits: Limits,
    /// Routes that replace the defaults for their failure types.
    pub route: Vec<RouteConfig>,
    pub circuit_breaker: CircuitBreakerConfig,
    pub agent_restart: AgentRestartConfig,
    pub task_retry: TaskRetryConfig,
    pub resource_rebalance: ResourceRebalanceConfig,
    pub quorum_recovery: QuorumRecoveryConfig,
    pub gradual_degradation: GradualDegradationConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Auto,
            limits: Limits::default(),
            route: Vec::new(),
            circuit_breaker: Default::default(),
            agent_restart: Default::default(),
            task_retry: Default::default(),
            resource_rebalance: Default::default(),
            quorum_recovery: Default::default(),
            gradual_degradation: Default::default(),
        }
    }
}

/// The routes used when the file names none: the seed design's examples.
pub fn default_routes() -> Vec<RouteConfig> {
    let r = |types: &[&str], strategies: &[StrategyKind]| RouteConfig {
        failure_types: types.iter().map(|s| (*s).to_owned()).collect(),
        strategies: strategies.to_vec(),
    };
    use StrategyKind::*;
    vec![
        r(ft::AGENT, &[CircuitBreaker, AgentRestart]),
        r(ft::TASK, &[TaskRetry]),
        r(
            &[
                ft::RESOURCE_EXHAUSTION,
                ft::TOKEN_EXHAUSTION,
                ft::QUOTA_EXCEEDED,
                ft::MEMORY_EXHAUSTION,
                ft::MEMORY_PRESSURE,
                ft::HIGH_LATENCY,
            ],
            &[GradualDegradation],
        ),
        r(ft::QUORUM, &[QuorumRecovery]),
    ]
}

impl Config {
    /// Reads `path`, or `healstore.toml` in the current directory when `path` is `None` and
    /// that file exists, or the defaults.
    pub fn load(path: Option<&Path>) -> Result<(Config, Option<PathBuf>)> {
        let file = match path {
            Some(p) => Some(p.to_path_buf()),
            None if Path::new(DEFAULT_FILE).is_file() => Some(PathBuf::from(DEFAULT_FILE)),
            None => None,
        };
        let Some(file) = file else {
            return Ok((Config::default(), None));
        };
        let text = std::fs::read_to_string(&file).map_err(|e| {
            Error::from_io(
                format_args!("cannot read configuration {}", file.display()),
                &e,
            )
        })?;
        let config = Config::parse(&text).map_err(|e| match e {
            Error::InvalidInput(m) => Error::InvalidInput(format!("{}: {m}", file.display())),
            other => other,
        })?;
        Ok((config, Some(file)))
    }

    /// Parses TOML text and checks it.
    pub fn parse(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| {
            // toml's own rendering quotes the line over several lines: keep one, and the
            // line's text in it.
            let at = e
                .span()
                .map(|span| {
                    let before = text.get(..span.start).unwrap_or(text);
                    let line = before.matches('\n').count() + 1;
                    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                    let source: String = text
                        .lines()
                        .nth(line - 1)
                        .unwrap_or("")
                        .trim()
                        .chars()
                        .take(80)
                        .collect();
                    format!(" at line {line}, column {column} (`{source}`)")
                })
                .unwrap_or_default();
            let message = e.message().trim_end().replace('\n', "; ");
            Error::InvalidInput(format!("invalid configuration{at}: {message}"))
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        self.circuit_breaker.validate()?;
        if let Some(f) = self.limits.max_disabled_fraction
            && !(0.0..=1.0).contains(&f)
        {
            return Err(Error::InvalidInput(format!(
                "limits.max_disabled_fraction must be between 0 and 1, not {f}"
            )));
        }
        for r in &self.route {
            if r.failure_types.is_empty() {
                return Err(Error::InvalidInput(
                    "a [[route]] needs at least one failure type".into(),
                ));
            }
            for t in &r.failure_types {
                crate::event::check_id("failure type", t)?;
            }
        }
        Ok(())
    }

    /// The routes in effect: the defaults, with the file's routes replacing theirs per type.
    pub fn effective_routes(&self) -> Vec<(String, Vec<StrategyKind>)> {
        let mut map: std::collections::BTreeMap<String, Vec<StrategyKind>> = Default::default();
        for r in default_routes().iter().chain(&self.route) {
            for t in &r.failure_types {
                map.insert(t.clone(), r.strategies.clone());
            }
        }
        map.into_iter().collect()
    }

    /// A healer builder with every route registered.
    pub fn builder(&self) -> HealerBuilder {
        let mut b = HealerBuilder::new().options(HealerOptions {
            mode: self.mode,
            limits: self.limits,
        });
        for (failure_type, kinds) in self.effective_routes() {
            let types = [failure_type.as_str()];
            b = match kinds.as_slice() {
                [] => b,
                [one] => self.register_one(b, &types, *one),
                many => {
                    let mut chain = Composite::new();
                    for (i, k) in many.iter().enumerate() {
                        chain = self.add_to_chain(chain, i as i32 + 1, *k);
                    }
                    b.register_chain(&types, chain)
                }
            };
        }
        b
    }

    fn register_one(&self, b: HealerBuilder, types: &[&str], k: StrategyKind) -> HealerBuilder {
        match k {
            StrategyKind::CircuitBreaker => {
                b.register(types, CircuitBreaker::new(self.circuit_breaker.clone()))
            }
            StrategyKind::AgentRestart => {
                b.register(types, AgentRestart::new(self.agent_restart.clone()))
            }
            StrategyKind::TaskRetry => b.register(types, TaskRetry::new(self.task_retry.clone())),
            StrategyKind::ResourceRebalance => b.register(
                types,
                ResourceRebalance::new(self.resource_rebalance.clone()),
            ),
            StrategyKind::QuorumRecovery => {
                b.register(types, QuorumRecovery::new(self.quorum_recovery.clone()))
            }
            StrategyKind::GradualDegradation => b.register(
                types,
                GradualDegradation::new(self.gradual_degradation.clone()),
            ),
        }
    }

    fn add_to_chain(&self, c: Composite, p: i32, k: StrategyKind) -> Composite {
        match k {
            StrategyKind::CircuitBreaker => {
                c.with(p, CircuitBreaker::new(self.circuit_breaker.clone()))
            }
            StrategyKind::AgentRestart => c.with(p, AgentRestart::new(self.agent_restart.clone())),
            StrategyKind::TaskRetry => c.with(p, TaskRetry::new(self.task_retry.clone())),
            StrategyKind::ResourceRebalance => {
                c.with(p, ResourceRebalance::new(self.resource_rebalance.clone()))
            }
            StrategyKind::QuorumRecovery => {
                c.with(p, QuorumRecovery::new(self.quorum_recovery.clone()))
            }
            StrategyKind::GradualDegradation => {
                c.with(p, GradualDegradation::new(self.gradual_degradation.clone()))
            }
        }
    }

    /// The effective configuration as canonical JSON (routes resolved), and its hash.
    pub fn fingerprint(&self) -> (serde_json::Value, String) {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "route".into(),
                serde_json::to_value(
                    self.effective_routes()
                        .into_iter()
                        .map(|(t, s)| RouteConfig {
                            failure_types: vec![t],
                            strategies: s,
                        })
                        .collect::<Vec<_>>(),
                )
                .unwrap_or_default(),
            );
        }
        let text = v.to_string(); // serde_json maps are ordered: canonical
        let hash = Sha256::digest(text.as_bytes());
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        (v, hex)
    }

    /// Records the configuration if it differs from the last one recorded. Returns whether it
    /// was recorded.
    pub async fn record(&self, store: &Store) -> Result<bool> {
        let (value, hash) = self.fingerprint();
        use futures_util::StreamExt;
        let mut last: Option<(u64, String)> = None;
        let mut events = store.read(EventFilter::stream(CONFIG_STREAM));
        while let Some(e) = events.next().await {
            let e = e?;
            if let Some(HealEvent::ConfigurationChanged(c)) = e.decode() {
                last = Some((e.stream_version, c.config_hash));
            }
        }
        drop(events);
        let (version, previous) = match last {
            Some((v, h)) => (v, Some(h)),
            None => (0, None),
        };
        if previous.as_deref() == Some(hash.as_str()) {
            return Ok(false);
        }
        let event = HealEvent::ConfigurationChanged(ConfigurationChanged {
            config_hash: hash,
            previous_hash: previous,
            config: value,
        })
        .to_new_event(store.options().clock.now());
        match store
            .append(CONFIG_STREAM, ExpectedVersion::Exact(version), vec![event])
            .await
        {
            Ok(_) => Ok(true),
            // Another process recorded a configuration at the same moment: its record stands.
            Err(Error::WrongExpectedVersion { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
