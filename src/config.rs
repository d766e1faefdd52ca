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
//! Every setting is checked ([`Config::validate`]) before the configuration is recorded or a
//! healer is built from it: the first bad one is refused in one line naming its key.
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
use crate::heal::prevention::PreventionPolicy;
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

impl std::fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StrategyKind::CircuitBreaker => "circuit_breaker",
            StrategyKind::AgentRestart => "agent_restart",
            StrategyKind::TaskRetry => "task_retry",
            StrategyKind::ResourceRebalance => "resource_rebalance",
            StrategyKind::QuorumRecovery => "quorum_recovery",
            StrategyKind::GradualDegradation => "gradual_degradation",
        })
    }
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
    /// How predictions become preventions. Left out of the recorded configuration while it is
    /// the default.
    #[serde(skip_serializing_if = "PreventionPolicy::is_default")]
    pub prevention: PreventionPolicy,
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
            prevention: Default::default(),
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
        let config: Config = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every setting (the limits, the routes, each strategy's numbers) before anything
    /// is recorded: the first bad one is refused in one line that names its key as written in
    /// the file (`invalid configuration: task_retry.multiplier = -2: must be a finite number
    /// of at least 1`). [`Config::parse`] and [`Config::record`] call it; a healer built from
    /// a configuration checks it again when it opens.
    pub fn validate(&self) -> Result<()> {
        self.limits.validate()?;
        for (i, r) in self.route.iter().enumerate() {
            if r.failure_types.is_empty() {
                return Err(Error::InvalidInput(format!(
                    "invalid configuration: route[{i}].failure_types = []: a [[route]] needs at \
                     least one failure type"
                )));
            }
            for t in &r.failure_types {
                crate::event::check_id("failure type", t)?;
            }
            for (j, k) in r.strategies.iter().enumerate() {
                if r.strategies[..j].contains(k) {
                    let names: Vec<String> = r.strategies.iter().map(|k| k.to_string()).collect();
                    return Err(Error::InvalidInput(format!(
                        "invalid configuration: route[{i}].strategies = [{}]: lists {k} twice \
                         (a strategy decides once per failure)",
                        names.join(", ")
                    )));
                }
            }
        }
        self.circuit_breaker.validate()?;
        self.agent_restart.validate()?;
        self.task_retry.validate()?;
        self.resource_rebalance.validate()?;
        self.quorum_recovery.validate()?;
        self.gradual_degradation.validate()?;
        self.prevention.validate()
    }

    /// This configuration with one setting changed: `key` is a dotted path as written in the
    /// file (`circuit_breaker.failure_threshold`, `limits.max_disabled_fraction`, `mode`) and
    /// `value` a TOML value (`3`, `0.25`, `true`; a bare word is taken as a string, so
    /// `mode=shadow` works). Unknown keys, values of the wrong type and values the checks
    /// refuse are refused in one line naming the key; `self` is unchanged either way. Routes
    /// (a list of tables) are not settable this way: write them in a file.
    pub fn with_setting(&self, key: &str, value: &str) -> Result<Config> {
        let refuse =
            |why: &str| Error::InvalidInput(format!("invalid setting {key}={value}: {why}"));
        let parts: Vec<&str> = key.split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(refuse(
                "the key is a dotted path such as circuit_breaker.failure_threshold",
            ));
        }
        if parts[0] == "route" {
            return Err(refuse(
                "routes are set in a configuration file, not one key at a time",
            ));
        }
        let parsed: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
            Ok(mut t) => t
                .remove("v")
                .unwrap_or(toml::Value::String(value.to_owned())),
            Err(_) => toml::Value::String(value.to_owned()),
        };
        let mut doc = toml::Value::try_from(self).map_err(|e| refuse(&e.to_string()))?;
        set_path(&mut doc, &parts, parsed).map_err(|why| refuse(&why))?;
        let text = toml::to_string(&doc).map_err(|e| refuse(&e.to_string()))?;
        let config: Config = toml::from_str(&text).map_err(|e| {
            let m = e.message().trim_end().replace('\n', "; ");
            if m.starts_with("unknown field") {
                refuse("no such setting")
            } else {
                refuse(&m)
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Every combination of the values given per key (`--set key=v1,v2,...`, in the order
    /// given, the last key varying fastest), each with a label naming its settings. A sweep
    /// of no keys is this configuration alone; a combination the checks refuse is refused
    /// with its key and value; more than 1,000 combinations are refused.
    pub fn sweep(&self, settings: &[(String, Vec<String>)]) -> Result<Vec<(String, Config)>> {
        let total = settings
            .iter()
            .try_fold(1usize, |n, (_, vs)| n.checked_mul(vs.len()))
            .unwrap_or(usize::MAX);
        if total > 1000 {
            return Err(Error::InvalidInput(format!(
                "a sweep of {total} combinations is too large (at most 1000)"
            )));
        }
        let mut out = vec![(String::new(), self.clone())];
        for (key, values) in settings {
            if values.is_empty() {
                return Err(Error::InvalidInput(format!("--set {key}= names no value")));
            }
            let mut next = Vec::with_capacity(out.len() * values.len());
            for (label, config) in &out {
                for v in values {
                    let label = if label.is_empty() {
                        format!("{key}={v}")
                    } else {
                        format!("{label} {key}={v}")
                    };
                    next.push((label, config.with_setting(key, v)?));
                }
            }
            out = next;
        }
        Ok(out)
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

    /// The routes in effect, each failure type with its strategies' names (what predictions
    /// recommend when no pattern says more).
    pub fn route_names(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        self.effective_routes()
            .into_iter()
            .map(|(t, kinds)| (t, kinds.iter().map(|k| format!("{k:?}")).collect()))
            .collect()
    }

    /// A healer builder with every route registered.
    pub fn builder(&self) -> HealerBuilder {
        let mut b = HealerBuilder::new()
            .options(HealerOptions {
                mode: self.mode,
                limits: self.limits,
            })
            .prevention(self.prevention.clone());
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
        // Nothing that fails its checks is recorded.
        self.validate()?;
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

/// A TOML error in one line. A value the settings' types refuse (a negative count, text for a
/// number) names its key with the table it is in, as the other checks do:
/// `invalid configuration: limits.fleet_size = -1: must be a whole number from 0 to
/// 4294967295 (line 2, column 14)`.
/// Sets `parts` (a dotted path) in a TOML document to `value`. A missing last key is inserted
/// (optional settings that are unset are absent from the serialised form; an unknown one is
/// refused when the document is read back), a missing section is refused.
fn set_path(
    doc: &mut toml::Value,
    parts: &[&str],
    value: toml::Value,
) -> std::result::Result<(), String> {
    let table = doc
        .as_table_mut()
        .ok_or_else(|| "no such setting (its parent is a setting, not a section)".to_owned())?;
    match parts {
        [] => Err("the key is empty".to_owned()),
        [last] => {
            if table.get(*last).is_some_and(toml::Value::is_table) {
                return Err("names a section, not a setting".to_owned());
            }
            table.insert((*last).to_owned(), value);
            Ok(())
        }
        [first, rest @ ..] => match table.get_mut(*first) {
            Some(inner) => set_path(inner, rest, value),
            None => Err("no such setting".to_owned()),
        },
    }
}

fn toml_error(text: &str, e: &toml::de::Error) -> Error {
    // toml's own rendering quotes the line over several lines: keep one.
    let message = e.message().trim_end().replace('\n', "; ");
    let Some(span) = e.span() else {
        return Error::InvalidInput(format!("invalid configuration: {message}"));
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line_no = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    let line_start = span.start - (column - 1).min(span.start);
    // A value error: the span lies after the line's `=`.
    let key = line
        .find('=')
        .filter(|eq| line_start + eq < span.start && !line.trim_start().starts_with('['))
        .map(|eq| line[..eq].trim());
    if let Some(key) = key.filter(|k| !k.is_empty()) {
        let table = text
            .get(..line_start)
            .unwrap_or("")
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(|h| {
                let h = h.split('#').next().unwrap_or(h).trim();
                h.trim_start_matches('[')
                    .trim_end_matches(']')
                    .trim()
                    .to_owned()
            });
        let path = match table {
            Some(t) if !t.is_empty() => format!("{t}.{key}"),
            _ => key.to_owned(),
        };
        let value: String = text
            .get(span.clone())
            .unwrap_or("")
            .trim()
            .chars()
            .take(40)
            .collect();
        let why = whole_number(&message).unwrap_or(message);
        return Error::InvalidInput(format!(
            "invalid configuration: {path} = {value}: {why} (line {line_no}, column {column})"
        ));
    }
    let source: String = line.trim().chars().take(80).collect();
    Error::InvalidInput(format!(
        "invalid configuration at line {line_no}, column {column} (`{source}`): {message}"
    ))
}

/// serde's words for an integer out of an unsigned type's range, in the configuration's.
fn whole_number(message: &str) -> Option<String> {
    let max = if message.ends_with("expected u32") {
        u64::from(u32::MAX)
    } else if message.ends_with("expected u64") || message.ends_with("expected usize") {
        u64::MAX
    } else {
        return None;
    };
    message
        .starts_with("invalid value: integer")
        .then(|| format!("must be a whole number from 0 to {max}"))
}
