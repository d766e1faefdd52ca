//! A backtest's report: the same figures for the recorded history and for the candidate,
//! the share of decisions that match, and the failures whose decision changed.
//!
//! Figures are counted by [`Tally`] from decisions, outcomes and strategy events, whichever
//! side they come from (the log, or the candidate's engine), so that both columns mean the
//! same thing. Every outcome says where it comes from ([`Origin`]).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::heal::Attempt;

/// Where an outcome comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Recorded: the same action on the same failure as history.
    Observed,
    /// Drawn from the outcome model ([`super::model`]).
    Modelled,
    /// Nothing to fit, or not known by the window's end: counted, never guessed.
    Unknown,
}

/// A count split by origin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Split {
    pub observed: u64,
    pub modelled: u64,
    pub unknown: u64,
}

impl Split {
    fn add(&mut self, o: Origin) {
        match o {
            Origin::Observed => self.observed += 1,
            Origin::Modelled => self.modelled += 1,
            Origin::Unknown => self.unknown += 1,
        }
    }
    pub fn total(&self) -> u64 {
        self.observed + self.modelled + self.unknown
    }
}

/// A mean time from detection, in ms, split by origin: to recovery (MTTR) or to remediation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Mttr {
    /// Over every time counted (observed and modelled).
    pub ms: Option<f64>,
    pub observed_ms: Option<f64>,
    pub observed: u64,
    pub modelled_ms: Option<f64>,
    pub modelled: u64,
}

/// The headline figures of one side.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    /// Decisions (attempts) by label: `act`, `delegated`, `declined`, `failed`, `held`,
    /// `withheld`, `shadow`, `suggest_only`, `no_strategy`.
    pub decisions: BTreeMap<String, u64>,
    /// Actions of acting decisions (`act`, `delegated`), by kind.
    pub actions: BTreeMap<String, u64>,
    /// Outcomes of acting decisions, by origin.
    pub outcomes: Split,
    /// Successful outcomes, by origin.
    pub successes: Split,
    /// Successes over known outcomes (observed and modelled).
    pub success_rate: Option<f64>,
    /// MTTR as the analytics define it: detection to recovery (evidence that the agent or
    /// task works again), over the window's failures recovered before its end. Observed: the
    /// recorded recovery (the same treatment as history's, or the world's own evidence, a
    /// success signal or a caller's confirmation); modelled: a healthy status drawn after a
    /// modelled remediation ([`super::model`]).
    pub mttr: Mttr,
    /// Failures of the window recovered before its end, by origin.
    pub recovered: Split,
    /// Failures of the window not recovered before its end.
    pub unrecovered: u64,
    /// Detection to remediation (a successful outcome), beside MTTR.
    pub time_to_remediate: Mttr,
    pub circuits_opened: u64,
    /// Agent-minutes isolated by open circuits within the window (an open circuit isolates
    /// its agent until its deadline, its closing, or the window's end).
    pub agent_minutes_isolated: f64,
    pub half_open_trials: u64,
    /// Decisions withheld by the healer's limits.
    pub limits_reached: u64,
    /// Actions of those decisions.
    pub withheld_actions: u64,
    /// The dashboard's score on these figures: success rate (50), MTTR (time to recover)
    /// against 500 ms (30, none when nothing recovered), the strategies' mean success rate
    /// (20).
    pub health_score: f64,
}

/// One decision as the report shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionView {
    pub strategy: String,
    pub decision: String,
    pub reason: String,
}

impl From<&Attempt> for DecisionView {
    fn from(a: &Attempt) -> Self {
        DecisionView {
            strategy: a.strategy.clone(),
            decision: a.decision.clone(),
            reason: a.reason.clone(),
        }
    }
}

/// A failure whose decision changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Changed {
    pub failure_id: String,
    pub failure_type: String,
    pub agent_id: Option<String>,
    #[serde(with = "crate::time::serde_rfc3339")]
    pub at: DateTime<Utc>,
    pub recorded: Vec<DecisionView>,
    pub candidate: Vec<DecisionView>,
}

/// A backtest of one candidate over one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The candidate's name (`current` for the configuration in effect).
    pub candidate: String,
    #[serde(with = "crate::time::serde_rfc3339")]
    pub since: DateTime<Utc>,
    #[serde(with = "crate::time::serde_rfc3339")]
    pub until: DateTime<Utc>,
    pub seed: u64,
    /// Failures replayed.
    pub failures: u64,
    /// Decisions compared (one per phase of a failure, on either side).
    pub decisions: u64,
    /// Of those, the ones the candidate took as history did (strategy, decision, reason).
    pub matching: u64,
    /// `matching / decisions` (1 when there is nothing to compare).
    pub match_share: f64,
    /// Failures whose decision changed (all of them; `changed` lists the first
    /// [`super::BacktestOptions::max_changed`]).
    pub changed_failures: u64,
    /// The first decision that differs (strategy, decision or reason), if any.
    pub first_mismatch: Option<Changed>,
    pub recorded: Figures,
    pub backtest: Figures,
    /// The first failures whose decision changed (a strategy or a verdict differs), in the
    /// order they were replayed, at most [`super::BacktestOptions::max_changed`].
    pub changed: Vec<Changed>,
    /// How the replay started and what it could not know, in words.
    pub notes: Vec<String>,
    /// The most failures of the window held in memory at once (by the read, or by this
    /// candidate's replay): the failures in flight, not the window.
    #[serde(skip)]
    pub failures_held: usize,
}

/// Counts the figures of one side.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    f: Figures,
    /// Per strategy: (known outcomes, successes).
    per_strategy: BTreeMap<String, (u64, u64)>,
    mttr_observed: (f64, u64),
    mttr_modelled: (f64, u64),
    ttr_observed: (f64, u64),
    ttr_modelled: (f64, u64),
    /// Open circuits: stream -> (since, deadline).
    open: HashMap<String, (DateTime<Utc>, Option<DateTime<Utc>>)>,
    isolated_ms: i64,
}

impl Tally {
    pub fn attempt(&mut self, a: &Attempt) {
        *self.f.decisions.entry(a.decision.clone()).or_default() += 1;
        match a.decision.as_str() {
            "act" | "delegated" => {
                for act in &a.actions {
                    *self.f.actions.entry(act.name().to_owned()).or_default() += 1;
                }
            }
            "withheld" => {
                self.f.limits_reached += 1;
                self.f.withheld_actions += a.actions.len() as u64;
            }
            _ => {}
        }
    }

    /// An acting decision's outcome (`ttr_ms`: detection to the outcome).
    pub fn outcome(&mut self, strategy: &str, origin: Origin, success: bool, ttr_ms: i64) {
        self.f.outcomes.add(origin);
        if origin == Origin::Unknown {
            return;
        }
        let s = self.per_strategy.entry(strategy.to_owned()).or_default();
        s.0 += 1;
        if success {
            s.1 += 1;
            self.f.successes.add(origin);
            let m = match origin {
                Origin::Observed => &mut self.ttr_observed,
                _ => &mut self.ttr_modelled,
            };
            m.0 += ttr_ms.max(0) as f64;
            m.1 += 1;
        }
    }

    /// A failure of the window recovered before its end, `ms` after its detection.
    pub fn recovered(&mut self, origin: Origin, ms: i64) {
        self.f.recovered.add(origin);
        let m = match origin {
            Origin::Observed => &mut self.mttr_observed,
            _ => &mut self.mttr_modelled,
        };
        m.0 += ms.max(0) as f64;
        m.1 += 1;
    }

    /// A failure of the window not recovered before its end.
    pub fn unrecovered(&mut self) {
        self.f.unrecovered += 1;
    }

    /// Ends the warm-up (strategy events before the window, fed to
    /// [`Tally::strategy_event`]): the circuits open at the window's start isolate from its
    /// start; nothing before it is counted.
    pub fn begin(&mut self, since: DateTime<Utc>) {
        self.f = Figures::default();
        self.isolated_ms = 0;
        self.open.retain(|_, (from, deadline)| {
            *from = (*from).max(since);
            deadline.is_none_or(|d| d > since)
        });
    }

    /// A strategy event (its stored type and payload) on `stream`, dated `at`.
    pub fn strategy_event(&mut self, stream: &str, event_type: &str, payload: &Value) {
        match event_type {
            "circuit_trial_started" => self.f.half_open_trials += 1,
            "circuit_transitioned" => {
                // Agent-minutes: only circuits that guard an agent isolate one.
                let agent = payload.get("agent_id").is_some_and(Value::is_string);
                let at = time_of(payload.get("at"));
                let to = payload.get("to").and_then(Value::as_str).unwrap_or("");
                if let Some((since, deadline)) = self.open.remove(stream)
                    && let Some(at) = at
                {
                    let end = deadline.map_or(at, |d| d.min(at));
                    self.isolated_ms += (end - since).num_milliseconds().max(0);
                }
                if matches!(to, "open" | "forced_open") {
                    self.f.circuits_opened += 1;
                    if let Some(at) = at
                        && agent
                    {
                        let deadline = if to == "open" {
                            time_of(payload.get("open_until"))
                        } else {
                            None
                        };
                        self.open.insert(stream.to_owned(), (at, deadline));
                    }
                }
            }
            _ => {}
        }
    }

    /// The figures, circuits still open counted up to `until`.
    pub fn finish(mut self, until: DateTime<Utc>) -> Figures {
        for (_, (since, deadline)) in self.open.drain() {
            let end = deadline.map_or(until, |d| d.min(until));
            self.isolated_ms += (end - since).num_milliseconds().max(0);
        }
        let mut f = self.f;
        f.agent_minutes_isolated = self.isolated_ms as f64 / 60_000.0;
        let known = f.outcomes.observed + f.outcomes.modelled;
        let won = f.successes.observed + f.successes.modelled;
        f.success_rate = (known > 0).then(|| won as f64 / known as f64);
        let mean = |(sum, n): (f64, u64)| (n > 0).then(|| sum / n as f64);
        let split = |o: (f64, u64), m: (f64, u64)| Mttr {
            ms: mean((o.0 + m.0, o.1 + m.1)),
            observed_ms: mean(o),
            observed: o.1,
            modelled_ms: mean(m),
            modelled: m.1,
        };
        f.mttr = split(self.mttr_observed, self.mttr_modelled);
        f.time_to_remediate = split(self.ttr_observed, self.ttr_modelled);
        let rates: Vec<f64> = self
            .per_strategy
            .values()
            .filter(|(n, _)| *n > 0)
            .map(|(n, s)| *s as f64 / *n as f64)
            .collect();
        let strategy_mean = if rates.is_empty() {
            0.5
        } else {
            rates.iter().sum::<f64>() / rates.len() as f64
        };
        let success_points = f.success_rate.unwrap_or(0.0) * 50.0;
        let mttr_points = f
            .mttr
            .ms
            .map_or(0.0, |ms| (1.0 - ms / 500.0).max(0.0) * 30.0);
        f.health_score = if f.decisions.is_empty() {
            100.0
        } else {
            (success_points + mttr_points + strategy_mean * 20.0).min(100.0)
        };
        f
    }
}

fn time_of(v: Option<&Value>) -> Option<DateTime<Utc>> {
    v.and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

impl Report {
    /// The report as a table: the figures side by side, then the first `changed` failures
    /// whose decision changed.
    pub fn table(&self, changed: usize) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Backtest of {} over {} to {} (seed {})",
            self.candidate,
            crate::time::format_time(self.since),
            crate::time::format_time(self.until),
            self.seed
        );
        let _ = writeln!(
            out,
            "{} failures; {} of {} decisions as recorded ({:.1} %)",
            self.failures,
            self.matching,
            self.decisions,
            self.match_share * 100.0
        );
        let rows = self.rows();
        let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(6);
        let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(8);
        let _ = writeln!(out, "{:<w0$}  {:<w1$}  candidate", "figure", "recorded");
        for (a, b, c) in rows {
            let _ = writeln!(out, "{a:<w0$}  {b:<w1$}  {c}");
        }
        if self.changed_failures > 0 {
            let _ = writeln!(
                out,
                "\nDecisions changed: {} failures (first {} shown)",
                self.changed_failures,
                changed.min(self.changed.len())
            );
            for ch in self.changed.iter().take(changed) {
                let _ = writeln!(
                    out,
                    "{} {} {} at {}\n  recorded:  {}\n  candidate: {}",
                    ch.failure_id,
                    ch.failure_type,
                    ch.agent_id.as_deref().unwrap_or("-"),
                    crate::time::format_time(ch.at),
                    show_decisions(&ch.recorded),
                    show_decisions(&ch.candidate)
                );
            }
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }

    /// The figures side by side: (figure, recorded, candidate), as the table shows them.
    pub fn rows(&self) -> Vec<(String, String, String)> {
        let (r, c) = (&self.recorded, &self.backtest);
        let mut rows: Vec<(String, String, String)> = Vec::new();
        let mut keys: Vec<&String> = r.decisions.keys().chain(c.decisions.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            let n = |f: &Figures| f.decisions.get(k).copied().unwrap_or(0).to_string();
            rows.push((format!("decisions {k}"), n(r), n(c)));
        }
        let mut keys: Vec<&String> = r.actions.keys().chain(c.actions.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            let n = |f: &Figures| f.actions.get(k).copied().unwrap_or(0).to_string();
            rows.push((format!("actions {k}"), n(r), n(c)));
        }
        let split = |s: &Split| {
            format!(
                "{} ({} observed, {} modelled, {} unknown)",
                s.total(),
                s.observed,
                s.modelled,
                s.unknown
            )
        };
        rows.push(("outcomes".into(), split(&r.outcomes), split(&c.outcomes)));
        rows.push(("successes".into(), split(&r.successes), split(&c.successes)));
        let pct = |x: Option<f64>| x.map_or("-".into(), |x| format!("{:.1} %", x * 100.0));
        rows.push((
            "success rate".into(),
            pct(r.success_rate),
            pct(c.success_rate),
        ));
        let mttr = |m: &Mttr| {
            let ms = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.0} ms"));
            format!(
                "{} (observed {} x{}, modelled {} x{})",
                ms(m.ms),
                ms(m.observed_ms),
                m.observed,
                ms(m.modelled_ms),
                m.modelled
            )
        };
        rows.push(("MTTR (to recovery)".into(), mttr(&r.mttr), mttr(&c.mttr)));
        let rec = |f: &Figures| {
            format!(
                "{} ({} observed, {} modelled), {} not",
                f.recovered.total(),
                f.recovered.observed,
                f.recovered.modelled,
                f.unrecovered
            )
        };
        rows.push(("recovered".into(), rec(r), rec(c)));
        rows.push((
            "time to remediate".into(),
            mttr(&r.time_to_remediate),
            mttr(&c.time_to_remediate),
        ));
        let int = |f: &Figures, g: fn(&Figures) -> u64| g(f).to_string();
        rows.push((
            "circuits opened".into(),
            int(r, |f| f.circuits_opened),
            int(c, |f| f.circuits_opened),
        ));
        rows.push((
            "agent-minutes isolated".into(),
            format!("{:.1}", r.agent_minutes_isolated),
            format!("{:.1}", c.agent_minutes_isolated),
        ));
        rows.push((
            "half-open trials".into(),
            int(r, |f| f.half_open_trials),
            int(c, |f| f.half_open_trials),
        ));
        rows.push((
            "healer limits reached".into(),
            int(r, |f| f.limits_reached),
            int(c, |f| f.limits_reached),
        ));
        rows.push((
            "withheld actions".into(),
            int(r, |f| f.withheld_actions),
            int(c, |f| f.withheld_actions),
        ));
        rows.push((
            "health score".into(),
            format!("{:.1}", r.health_score),
            format!("{:.1}", c.health_score),
        ));
        rows
    }
}

/// Decisions as one line: `strategy decision: reason | ...`, or `(none)`.
pub fn show_decisions(v: &[DecisionView]) -> String {
    if v.is_empty() {
        return "(none)".to_owned();
    }
    v.iter()
        .map(|d| format!("{} {}: {}", d.strategy, d.decision, d.reason))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// One combination of a sweep: its settings and headline figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepRow {
    /// Its settings, `key=value` joined by spaces.
    pub label: String,
    pub settings: Vec<Setting>,
    pub decisions: u64,
    pub matching: u64,
    pub match_share: f64,
    pub changed_failures: u64,
    pub figures: Figures,
}

/// One setting of a sweep's combination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    pub key: String,
    pub value: String,
}

/// A sweep: one backtest per combination of settings over one read of the window, best
/// first by health score (ties in the order the combinations were given).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sweep {
    /// What the settings were applied to (a configuration file, or `current`).
    pub base: String,
    #[serde(with = "crate::time::serde_rfc3339")]
    pub since: DateTime<Utc>,
    #[serde(with = "crate::time::serde_rfc3339")]
    pub until: DateTime<Utc>,
    pub seed: u64,
    /// Failures replayed.
    pub failures: u64,
    /// History's figures over the window.
    pub recorded: Figures,
    pub rows: Vec<SweepRow>,
}

impl Sweep {
    /// The sweep as a table: history's figures, then one line per combination, best first.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Sweep of {} combinations on {} over {} to {} (seed {}), {} failures; best first by health score",
            self.rows.len(),
            self.base,
            crate::time::format_time(self.since),
            crate::time::format_time(self.until),
            self.seed,
            self.failures
        );
        let pct = |x: Option<f64>| x.map_or("-".into(), |x| format!("{:.1} %", x * 100.0));
        let ms = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.0}"));
        let line = |rank: String, label: &str, f: &Figures, changed: String, matched: String| {
            vec![
                rank,
                label.to_owned(),
                format!("{:.1}", f.health_score),
                pct(f.success_rate),
                ms(f.mttr.ms),
                format!(
                    "{}/{}",
                    f.recovered.total(),
                    f.recovered.total() + f.unrecovered
                ),
                f.circuits_opened.to_string(),
                format!("{:.1}", f.agent_minutes_isolated),
                f.withheld_actions.to_string(),
                changed,
                matched,
            ]
        };
        let mut rows = vec![line(
            "-".into(),
            "(recorded)",
            &self.recorded,
            "-".into(),
            "-".into(),
        )];
        for (i, r) in self.rows.iter().enumerate() {
            rows.push(line(
                (i + 1).to_string(),
                &r.label,
                &r.figures,
                r.changed_failures.to_string(),
                format!("{:.1} %", r.match_share * 100.0),
            ));
        }
        let head = [
            "#",
            "settings",
            "health",
            "success",
            "MTTR ms",
            "recovered",
            "opened",
            "agent-min",
            "withheld",
            "changed",
            "as recorded",
        ];
        let widths: Vec<usize> = (0..head.len())
            .map(|i| {
                rows.iter()
                    .map(|r| r[i].len())
                    .chain([head[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let fmt = |cells: Vec<String>| {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        };
        let _ = writeln!(out, "{}", fmt(head.iter().map(|h| h.to_string()).collect()));
        for r in rows {
            let _ = writeln!(out, "{}", fmt(r));
        }
        out
    }
}
