//! The outcome model: what an action the candidate takes, and history did not, would have
//! done.
//!
//! Fitted on the window's own history: for each pair of a failure type and an action plan
//! (the kinds of the actions, in order, such as `restart_agent` or
//! `unregister_agent+register_agent`), the recorded outcomes of acting decisions with that
//! plan on failures of that type: how many succeeded, and their durations. A modelled
//! outcome succeeds with the pair's success rate and lasts the pair's mean duration (of the
//! outcomes with the same result, or of all when none); the draw is seeded, so a backtest
//! is deterministic. A pair with no recorded outcome is not guessed: the outcome is
//! `unknown`.
//!
//! Recoveries: of the pair's recorded successes, the share the coordinator reported healthy
//! right after (a recovery `how` = `status`). A modelled success of a failure that such a
//! status could recover (an agent's failure naming no task, whose actions do not take the
//! agent out of rotation) recovers at its remediation with that probability, drawn as well.

use std::collections::HashMap;

/// Recorded outcomes of one (failure type, action plan) pair.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fitted {
    pub outcomes: u64,
    pub successes: u64,
    pub success_ms: i64,
    pub failure_ms: i64,
    /// Successes followed by a recovery shown by the coordinator's status.
    pub status_recoveries: u64,
}

/// The fitted outcomes and the seeded draw.
#[derive(Debug, Clone)]
pub struct OutcomeModel {
    fitted: HashMap<(String, String), Fitted>,
    state: u64,
}

/// The plan of a list of actions: their kinds joined with `+`.
pub fn plan(actions: &[crate::heal::Action]) -> String {
    actions
        .iter()
        .map(|a| a.name())
        .collect::<Vec<_>>()
        .join("+")
}

impl OutcomeModel {
    pub fn new(seed: u64) -> OutcomeModel {
        OutcomeModel {
            fitted: HashMap::new(),
            state: seed ^ 0x9e37_79b9_7f4a_7c15,
        }
    }

    /// Counts one recorded outcome.
    pub fn observe(&mut self, failure_type: &str, plan: &str, success: bool, duration_ms: i64) {
        let f = self
            .fitted
            .entry((failure_type.to_owned(), plan.to_owned()))
            .or_default();
        f.outcomes += 1;
        if success {
            f.successes += 1;
            f.success_ms += duration_ms.max(0);
        } else {
            f.failure_ms += duration_ms.max(0);
        }
    }

    /// Counts a recorded success of the pair that a healthy status recovered at once.
    pub fn observe_status_recovery(&mut self, failure_type: &str, plan: &str) {
        if let Some(f) = self
            .fitted
            .get_mut(&(failure_type.to_owned(), plan.to_owned()))
        {
            f.status_recoveries += 1;
        }
    }

    /// Whether a modelled success of the pair recovers at once (a healthy status), drawn
    /// with the share of its recorded successes that did.
    pub fn draw_status_recovery(&mut self, failure_type: &str, plan: &str) -> bool {
        let Some(f) = self.fitted(failure_type, plan) else {
            return false;
        };
        if f.successes == 0 || f.status_recoveries == 0 {
            return false;
        }
        let p = f.status_recoveries as f64 / f.successes as f64;
        self.next_unit() < p
    }

    /// What history says about a pair, if anything.
    pub fn fitted(&self, failure_type: &str, plan: &str) -> Option<&Fitted> {
        self.fitted
            .get(&(failure_type.to_owned(), plan.to_owned()))
            .filter(|f| f.outcomes > 0)
    }

    /// A modelled outcome `(success, duration_ms)`, or `None` when history has nothing to fit.
    pub fn draw(&mut self, failure_type: &str, plan: &str) -> Option<(bool, i64)> {
        let f = self.fitted(failure_type, plan)?.clone();
        let p = f.successes as f64 / f.outcomes as f64;
        let success = self.next_unit() < p;
        let failures = f.outcomes - f.successes;
        let ms = match (success, f.successes, failures) {
            (true, n, _) if n > 0 => f.success_ms / n as i64,
            (false, _, n) if n > 0 => f.failure_ms / n as i64,
            _ => (f.success_ms + f.failure_ms) / f.outcomes as i64,
        };
        Some((success, ms))
    }

    /// A uniform number in `[0, 1)` (splitmix64).
    fn next_unit(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}
