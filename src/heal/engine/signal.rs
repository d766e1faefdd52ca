//! Reactions to signals (success, usage, operator commands, time, permits), and which of
//! them are recorded and acted on in each mode.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::Engine;
use super::settings::Mode;
use crate::heal::strategy::{AnyState, ErasedReaction, ErasedStrategy, Signal};

/// A strategy's reaction to a signal for one key.
pub(crate) struct Reacted {
    pub reaction: ErasedReaction,
    /// Its state events are appended (and folded): in every mode but suggest-only, and for a
    /// permit in every mode (a permit's answer is only as good as the trial count it is
    /// based on).
    pub record: bool,
}

impl Engine {
    /// The strategies a signal goes to, by name (only `only`, when given).
    pub(crate) fn signalled(&self, only: Option<&str>) -> Vec<Arc<dyn ErasedStrategy>> {
        let mut names: Vec<&String> = self.strategies.keys().collect();
        names.sort();
        names
            .into_iter()
            .filter(|n| only.is_none_or(|o| o == n.as_str()))
            .map(|n| self.strategies[n].clone())
            .collect()
    }

    /// `strategy`'s reaction to `signal` for `key`, on `state`.
    pub(crate) fn react(
        &self,
        strategy: &dyn ErasedStrategy,
        state: &AnyState,
        key: &str,
        signal: &Signal,
        now: DateTime<Utc>,
    ) -> Option<Reacted> {
        let reaction = strategy.on_signal(state, key, signal, now)?;
        let record = !reaction.events.is_empty()
            && (self.options.mode != Mode::SuggestOnly || matches!(signal, Signal::Permit { .. }));
        Some(Reacted { reaction, record })
    }

    /// Whether a reaction's actions are carried out (in `auto` mode, by a healer that acts).
    pub fn acts_on_reactions(&self) -> bool {
        self.options.mode == Mode::Auto && self.acts
    }
}
