//! GradualDegradation: under resource pressure, gives up quality step by step to keep the
//! service up, and steps back as the pressure falls.
//!
//! One level per resource (the failure's `metadata.resource_type`, else its failure type).
//! Usage is `current_usage / limit` from the failure's metadata (`usage_percent / 100` only
//! when neither is given: detected failures carry the two numbers). The level is the highest
//! whose `threshold` the usage reaches; the defaults follow the seed design:
//!
//! | level | usage | actions in effect | concurrency | timeout × | quality | disabled features |
//! |---|---|---|---|---|---|---|
//! | FULL | < 0.80 | - | 10 | 1.0 | 0.95 | - |
//! | REDUCED_1 | ≥ 0.80 | pause_low_priority | 10 | 0.8 | 0.85 | detailed_metrics, verbose_logging |
//! | REDUCED_2 | ≥ 0.90 | + reduce_concurrency | 2 | 0.6 | 0.75 | + pattern_learning |
//! | MINIMAL | ≥ 0.95 | + enable_caching, simplify_prompts | 2 | 0.2 | 0.50 | + analytics, optimization |
//!
//! Actions are cumulative and enforced through the coordinator: a level's actions in effect
//! are those listed by it and by every level below it, and a change of level emits only the
//! difference with what is in effect (pausing LOW and BACKGROUND work, setting the per-agent
//! concurrency to the level's, turning caching and prompt simplification on or off). The
//! timeout multiplier, quality threshold and disabled features are the level's properties,
//! reported in decisions and in [`Strategy::describe`] for the system to read; no coordinator
//! operation enforces them.
//!
//! Recovery has hysteresis: a usage report ([`Signal::ResourceUsage`]) or a failure whose
//! usage is below the current level's threshold minus `hysteresis` steps down one level per
//! report, undoing what that level added; a usage between the two holds the level, so that a
//! usage hovering at a threshold does not flap. Usage reports only ever step down: raising a
//! level takes a failure, so that every degradation is tied to a recorded failure.
//!
//! A failed enforcement (an action the coordinator refused) is recorded; what is in effect is
//! then unknown, so the next change (or the next failure at the same level) re-sends the whole
//! configuration of its level rather than a difference.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::check::Section;
use super::rebalance::{resource_key, usage_ratio};
use crate::heal::model::{Action, Failure, Priority, failure_types};
use crate::heal::strategy::{Decision, Reaction, Signal, Strategy};

/// One degradation measure, as named in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DegradationAction {
    /// Pause work of `pause_priorities` (LOW and BACKGROUND).
    PauseLowPriority,
    /// Limit each agent to the level's `concurrency`.
    ReduceConcurrency,
    /// Turn response caching on.
    EnableCaching,
    /// Turn prompt simplification on.
    SimplifyPrompts,
}

/// One level of service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DegradationLevel {
    pub name: String,
    /// The level applies from this usage (current / limit) on.
    pub threshold: f64,
    /// Measures this level takes (those of lower levels stay in effect whether listed or not).
    pub actions: Vec<DegradationAction>,
    /// Concurrent tasks per agent at this level (enforced while `reduce_concurrency` is in
    /// effect; restored when stepping down to a level without it).
    pub concurrency: u32,
    pub timeout_multiplier: f64,
    pub quality_threshold: f64,
    pub disabled_features: Vec<String>,
}

impl Default for DegradationLevel {
    fn default() -> Self {
        DegradationLevel {
            name: "FULL".into(),
            threshold: 0.0,
            actions: Vec::new(),
            concurrency: 10,
            timeout_multiplier: 1.0,
            quality_threshold: 0.95,
            disabled_features: Vec::new(),
        }
    }
}

/// Settings of [`GradualDegradation`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GradualDegradationConfig {
    /// The failure types this strategy heals.
    pub failure_types: Vec<String>,
    /// How far below a level's threshold usage must fall to step down from it.
    pub hysteresis: f64,
    /// What `pause_low_priority` pauses.
    pub pause_priorities: Vec<Priority>,
    /// The levels, in any order (sorted by threshold). Without a level at threshold 0, a
    /// default FULL level is added below the others.
    pub levels: Vec<DegradationLevel>,
}

impl Default for GradualDegradationConfig {
    fn default() -> Self {
        use DegradationAction::*;
        let features = |f: &[&str]| f.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        GradualDegradationConfig {
            failure_types: failure_types::RESOURCE
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            hysteresis: 0.05,
            pause_priorities: vec![Priority::Low, Priority::Background],
            levels: vec![
                DegradationLevel::default(),
                DegradationLevel {
                    name: "REDUCED_1".into(),
                    threshold: 0.80,
                    actions: vec![PauseLowPriority],
                    concurrency: 10,
                    timeout_multiplier: 0.8,
                    quality_threshold: 0.85,
                    disabled_features: features(&["detailed_metrics", "verbose_logging"]),
                },
                DegradationLevel {
                    name: "REDUCED_2".into(),
                    threshold: 0.90,
                    actions: vec![PauseLowPriority, ReduceConcurrency],
                    concurrency: 2,
                    timeout_multiplier: 0.6,
                    quality_threshold: 0.75,
                    disabled_features: features(&[
                        "detailed_metrics",
                        "verbose_logging",
                        "pattern_learning",
                    ]),
                },
                DegradationLevel {
                    name: "MINIMAL".into(),
                    threshold: 0.95,
                    actions: vec![
                        PauseLowPriority,
                        ReduceConcurrency,
                        EnableCaching,
                        SimplifyPrompts,
                    ],
                    concurrency: 2,
                    timeout_multiplier: 0.2,
                    quality_threshold: 0.50,
                    disabled_features: features(&[
                        "detailed_metrics",
                        "verbose_logging",
                        "pattern_learning",
                        "analytics",
                        "optimization",
                    ]),
                },
            ],
        }
    }
}

impl GradualDegradationConfig {
    /// Checks every setting, each level's included (see [`crate::config`]): one line naming
    /// the first bad one.
    pub fn validate(&self) -> crate::error::Result<()> {
        Section("gradual_degradation").number_within("hysteresis", self.hysteresis, 0.0, 1.0)?;
        for (i, level) in self.levels.iter().enumerate() {
            let name = format!("gradual_degradation.levels[{i}]");
            let s = Section(&name);
            s.number_within("threshold", level.threshold, 0.0, 1.0)?;
            s.at_least("concurrency", u64::from(level.concurrency), 1)?;
            s.number_above("timeout_multiplier", level.timeout_multiplier, 0.0)?;
            s.number_within("quality_threshold", level.quality_threshold, 0.0, 1.0)?;
            if let Some(j) = self.levels[..i]
                .iter()
                .position(|l| l.threshold == level.threshold)
            {
                return Err(s.refuse(
                    "threshold",
                    level.threshold,
                    format!(
                        "the same as gradual_degradation.levels[{j}]'s: one level per threshold"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// What this strategy has put into effect through the coordinator.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enforced {
    pub tasks_paused: bool,
    /// The per-agent limit set, while concurrency is reduced.
    pub concurrency: Option<u32>,
    pub caching: bool,
    pub prompts_simplified: bool,
}

/// The degradation of one resource.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DegradationState {
    /// Index of the level (0: the normal level).
    pub level: usize,
    /// The level's name when it was entered.
    pub level_name: String,
    /// The usage the last change was decided on.
    pub usage: Option<f64>,
    pub enforced: Enforced,
    /// The last enforcement failed: what is in effect is unknown.
    pub enforcement_failed: bool,
    pub changed_at: Option<DateTime<Utc>>,
    /// Level changes up and down, ever.
    pub raised: u64,
    pub lowered: u64,
}

/// Facts about a resource's degradation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DegradationEvent {
    /// The level went up; `enforced` is what is in effect from now on.
    DegradationRaised {
        at: DateTime<Utc>,
        from: usize,
        to: usize,
        level_name: String,
        usage: f64,
        enforced: Enforced,
    },
    /// The level went down one step.
    DegradationLowered {
        at: DateTime<Utc>,
        from: usize,
        to: usize,
        level_name: String,
        usage: f64,
        enforced: Enforced,
    },
    /// The level's whole configuration was sent again after a failed enforcement.
    DegradationReasserted {
        at: DateTime<Utc>,
        level: usize,
        level_name: String,
        usage: f64,
        enforced: Enforced,
    },
    /// The coordinator refused an action of the last change.
    DegradationEnforcementFailed { at: DateTime<Utc> },
}

/// Degrades service level by level under pressure. See the module documentation.
#[derive(Debug, Clone)]
pub struct GradualDegradation {
    config: GradualDegradationConfig,
    /// The configured levels sorted by threshold, with a normal level at index 0.
    levels: Vec<DegradationLevel>,
    /// The configured hysteresis, 0 when it is not a non-negative number (TOML allows `nan`,
    /// which would otherwise block every recovery).
    hysteresis: f64,
}

impl Default for GradualDegradation {
    fn default() -> Self {
        GradualDegradation::new(GradualDegradationConfig::default())
    }
}

/// Which way a plan goes (undoing runs in the reverse order of doing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Up,
    Down,
}

impl GradualDegradation {
    pub fn new(config: GradualDegradationConfig) -> Self {
        let mut levels: Vec<DegradationLevel> = config
            .levels
            .iter()
            .filter(|l| l.threshold.is_finite())
            .cloned()
            .collect();
        levels.sort_by(|a, b| a.threshold.total_cmp(&b.threshold));
        if levels.first().is_none_or(|l| l.threshold > 0.0) {
            levels.insert(0, DegradationLevel::default());
        }
        let hysteresis = if config.hysteresis >= 0.0 && config.hysteresis.is_finite() {
            config.hysteresis
        } else {
            0.0
        };
        GradualDegradation {
            config,
            levels,
            hysteresis,
        }
    }

    pub fn config(&self) -> &GradualDegradationConfig {
        &self.config
    }

    /// The levels as used: sorted by threshold, the normal level first.
    pub fn levels(&self) -> &[DegradationLevel] {
        &self.levels
    }

    /// The level a usage calls for.
    pub fn level_for(&self, usage: f64) -> usize {
        self.levels
            .iter()
            .rposition(|l| usage >= l.threshold)
            .unwrap_or(0)
    }

    fn current(&self, state: &DegradationState) -> usize {
        state.level.min(self.levels.len() - 1)
    }

    /// Whether a usage is low enough to step down from `level`.
    fn below_band(&self, level: usize, usage: f64) -> bool {
        level > 0 && usage < self.levels[level].threshold - self.hysteresis
    }

    /// Every measure in effect at a level: its own and those of the levels below.
    fn measures(&self, level: usize) -> Vec<DegradationAction> {
        let mut v: Vec<DegradationAction> = Vec::new();
        for a in self.levels[..=level].iter().flat_map(|l| &l.actions) {
            if !v.contains(a) {
                v.push(*a);
            }
        }
        v
    }

    /// The actions that take what is in effect (`from`, unknown when `None`) to what `target`
    /// calls for, and what is in effect afterwards.
    fn plan(
        &self,
        from: Option<&Enforced>,
        target: usize,
        dir: Direction,
    ) -> (Vec<Action>, Enforced) {
        use DegradationAction::*;
        let want = self.measures(target);
        let level = &self.levels[target];
        // Unknown: every measure is sent, on or off; known: only the changes.
        let all = from.is_none();
        let from = from.cloned().unwrap_or_default();
        let mut to = Enforced::default();
        let mut actions = Vec::new();

        let pause = want.contains(&PauseLowPriority);
        to.tasks_paused = pause;
        if all || pause != from.tasks_paused {
            let priorities = self.config.pause_priorities.clone();
            actions.push(if pause {
                Action::PauseTasks { priorities }
            } else {
                Action::ResumeTasks { priorities }
            });
        }

        if want.contains(&ReduceConcurrency) {
            to.concurrency = Some(level.concurrency);
            if all || from.concurrency != Some(level.concurrency) {
                actions.push(Action::SetConcurrency {
                    max_per_agent: level.concurrency,
                });
            }
        } else if all || from.concurrency.is_some() {
            // Back to the level's own (normal) concurrency.
            actions.push(Action::SetConcurrency {
                max_per_agent: level.concurrency,
            });
        }

        to.caching = want.contains(&EnableCaching);
        if all || to.caching != from.caching {
            actions.push(Action::SetCaching {
                enabled: to.caching,
            });
        }

        to.prompts_simplified = want.contains(&SimplifyPrompts);
        if all || to.prompts_simplified != from.prompts_simplified {
            actions.push(Action::SetPromptSimplification {
                enabled: to.prompts_simplified,
            });
        }

        if dir == Direction::Down {
            // Undo the last measure first: bring capacity back before resuming paused work.
            actions.reverse();
        }
        (actions, to)
    }

    /// A level's properties, for decisions and descriptions.
    fn properties(&self, level: usize) -> Value {
        let l = &self.levels[level];
        json!({
            "level": level,
            "level_name": l.name,
            "threshold": l.threshold,
            "measures": self.measures(level),
            "concurrency": l.concurrency,
            "timeout_multiplier": l.timeout_multiplier,
            "quality_threshold": l.quality_threshold,
            "disabled_features": l.disabled_features,
        })
    }

    /// A change of level (`to` may equal the current level: a re-assertion) with its actions
    /// and event. Without any action to send, nothing is enforced and nothing is claimed: the
    /// level change is recorded and the failure declined.
    fn change(
        &self,
        state: &DegradationState,
        key: &str,
        to: usize,
        usage: f64,
        now: DateTime<Utc>,
    ) -> (String, Vec<Action>, DegradationEvent) {
        let from = self.current(state);
        let dir = if to < from {
            Direction::Down
        } else {
            Direction::Up
        };
        let known = (!state.enforcement_failed).then_some(&state.enforced);
        let (actions, enforced) = self.plan(known, to, dir);
        let level_name = self.levels[to].name.clone();
        let from_name = &self.levels[from].name;
        let (reason, event) = if to > from {
            (
                format!(
                    "{key} usage {usage:.2} reached {:.2}: degrade from {from_name} to {level_name}",
                    self.levels[to].threshold
                ),
                DegradationEvent::DegradationRaised {
                    at: now,
                    from,
                    to,
                    level_name,
                    usage,
                    enforced,
                },
            )
        } else if to < from {
            (
                format!(
                    "{key} usage {usage:.2} fell below {:.2}: recover from {from_name} to {level_name}",
                    self.levels[from].threshold - self.hysteresis
                ),
                DegradationEvent::DegradationLowered {
                    at: now,
                    from,
                    to,
                    level_name,
                    usage,
                    enforced,
                },
            )
        } else {
            (
                format!(
                    "{key} at {level_name} after a failed enforcement: send its configuration again"
                ),
                DegradationEvent::DegradationReasserted {
                    at: now,
                    level: to,
                    level_name,
                    usage,
                    enforced,
                },
            )
        };
        (reason, actions, event)
    }

    /// Usage from a failure's metadata, or why there is none.
    fn failure_usage(failure: &Failure) -> Result<f64, String> {
        let number = |k: &str| match failure.metadata.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| format!("metadata.{k} ({v}) is not a number")),
        };
        match (number("current_usage")?, number("limit")?) {
            (Some(_), Some(0.0)) => Err("limit is 0: no usage can be computed".to_owned()),
            (Some(current), Some(limit)) => usage_ratio(current, limit)
                .ok_or_else(|| format!("current_usage {current} of limit {limit} is not a usage")),
            (Some(_), None) => {
                Err("current_usage without a limit: no usage can be computed".into())
            }
            (None, Some(_)) => {
                Err("a limit without current_usage: no usage can be computed".into())
            }
            (None, None) => match number("usage_percent")? {
                Some(p) if p.is_finite() && p >= 0.0 => Ok(p / 100.0),
                Some(p) => Err(format!("usage_percent {p} is not a usage")),
                None => Err(
                    "the failure carries no usage (current_usage and limit, or usage_percent)"
                        .into(),
                ),
            },
        }
    }
}

impl Strategy for GradualDegradation {
    type State = DegradationState;
    type Event = DegradationEvent;

    fn name(&self) -> &str {
        "GradualDegradation"
    }

    fn validate(&self) -> crate::error::Result<()> {
        self.config.validate()
    }

    fn can_heal(&self, failure: &Failure) -> bool {
        self.config.failure_types.contains(&failure.failure_type)
    }

    fn key(&self, failure: &Failure) -> String {
        resource_key(failure)
    }

    /// Before a predicted exhaustion of a resource it degrades for: one level more degraded
    /// than the current one (its state event is recorded when the prevention is approved).
    fn prevent(
        &self,
        state: &DegradationState,
        prediction: &crate::analytics::Prediction,
        now: DateTime<Utc>,
    ) -> Decision<DegradationEvent> {
        let failure = prediction.as_failure();
        if !self.can_heal(&failure) {
            return Decision::decline(format!(
                "GradualDegradation does not degrade for {}",
                prediction.failure_type
            ));
        }
        let key = self.key(&failure);
        let current = self.current(state);
        let target = current + 1;
        let Some(level) = self.levels.get(target) else {
            return Decision::decline(format!(
                "{key} is already at the last level ({})",
                self.levels[current].name
            ));
        };
        let (reason, actions, event) = self.change(state, &key, target, level.threshold, now);
        if actions.is_empty() {
            return Decision::decline(format!("{reason} (no coordinator action at this level)"));
        }
        let mut d = Decision::act(format!(
            "step {key} down before the predicted {} (probability {:.2}): {reason}",
            prediction.failure_type, prediction.probability
        ));
        d.actions = actions;
        d.detail("probability", prediction.probability)
            .detail("from", self.properties(current))
            .detail("to", self.properties(target))
            .event(event)
    }

    fn decide(
        &self,
        state: &DegradationState,
        failure: &Failure,
        now: DateTime<Utc>,
    ) -> Decision<DegradationEvent> {
        let usage = match Self::failure_usage(failure) {
            Ok(u) => u,
            Err(why) => return Decision::decline(why),
        };
        let key = self.key(failure);
        let current = self.current(state);
        let called_for = self.level_for(usage);
        let target = if called_for > current {
            Some(called_for)
        } else if self.below_band(current, usage) {
            Some(current - 1)
        } else if state.enforcement_failed {
            Some(current)
        } else {
            None
        };
        let Some(target) = target else {
            let d = if current == 0 {
                let reason = match self.levels.get(1) {
                    Some(l) => format!(
                        "no degradation needed: {key} usage {usage:.2} is below {:.2}",
                        l.threshold
                    ),
                    None => "no degradation needed: no degraded level is configured".into(),
                };
                Decision::decline(reason)
            } else {
                let floor = self.levels[current].threshold - self.hysteresis;
                let ceiling = self.levels.get(current + 1).map(|l| l.threshold);
                Decision::hold(format!(
                    "holding {key} at {}: usage {usage:.2} is within [{floor:.2}, {})",
                    self.levels[current].name,
                    ceiling.map_or("-".to_owned(), |c| format!("{c:.2}"))
                ))
            };
            return d
                .detail("usage", usage)
                .detail("level", self.properties(current));
        };
        let (reason, actions, event) = self.change(state, &key, target, usage, now);
        let mut d = if actions.is_empty() {
            Decision::decline(format!("{reason} (no coordinator action at this level)"))
        } else {
            Decision::act(reason)
        };
        d.actions = actions;
        d.detail("usage", usage)
            .detail("from", self.properties(current))
            .detail("to", self.properties(target))
            .event(event)
    }

    fn on_result(
        &self,
        _state: &DegradationState,
        _failure: &Failure,
        success: bool,
        now: DateTime<Utc>,
    ) -> Vec<DegradationEvent> {
        if success {
            Vec::new()
        } else {
            vec![DegradationEvent::DegradationEnforcementFailed { at: now }]
        }
    }

    /// Only usage reports concern degradation.
    fn signal_keys(&self, signal: &Signal, _known: &[String]) -> Vec<String> {
        match signal {
            Signal::ResourceUsage { resource_type, .. } => vec![resource_type.clone()],
            _ => Vec::new(),
        }
    }

    fn on_signal(
        &self,
        state: &DegradationState,
        key: &str,
        signal: &Signal,
        now: DateTime<Utc>,
    ) -> Option<Reaction<DegradationEvent>> {
        let Signal::ResourceUsage {
            current_usage,
            limit,
            ..
        } = signal
        else {
            return None;
        };
        let usage = usage_ratio(*current_usage, *limit)?;
        let current = self.current(state);
        if !self.below_band(current, usage) {
            return None;
        }
        let (reason, actions, event) = self.change(state, key, current - 1, usage, now);
        let mut r = Reaction::new(key, reason).event(event);
        r.actions = actions;
        Some(r)
    }

    fn apply(&self, state: &mut DegradationState, event: &DegradationEvent) {
        match event {
            DegradationEvent::DegradationRaised {
                at,
                to,
                level_name,
                usage,
                enforced,
                ..
            }
            | DegradationEvent::DegradationLowered {
                at,
                to,
                level_name,
                usage,
                enforced,
                ..
            }
            | DegradationEvent::DegradationReasserted {
                at,
                level: to,
                level_name,
                usage,
                enforced,
            } => {
                match event {
                    DegradationEvent::DegradationRaised { .. } => state.raised += 1,
                    DegradationEvent::DegradationLowered { .. } => state.lowered += 1,
                    _ => {}
                }
                state.level = *to;
                state.level_name = level_name.clone();
                state.usage = Some(*usage);
                state.enforced = enforced.clone();
                state.enforcement_failed = false;
                state.changed_at = Some(*at);
            }
            DegradationEvent::DegradationEnforcementFailed { .. } => {
                state.enforcement_failed = true;
            }
        }
    }

    fn describe(&self, state: &DegradationState, _now: DateTime<Utc>) -> Value {
        let mut v = self.properties(self.current(state));
        if let Value::Object(o) = &mut v {
            o.insert("usage".into(), json!(state.usage));
            o.insert("enforced".into(), json!(state.enforced));
            o.insert("enforcement_failed".into(), json!(state.enforcement_failed));
            o.insert("changed_at".into(), json!(state.changed_at));
            o.insert("raised".into(), json!(state.raised));
            o.insert("lowered".into(), json!(state.lowered));
        }
        v
    }
}
