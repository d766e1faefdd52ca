//! Routes: which strategies a failure type goes to, alone or as a composite chain.

use std::sync::Arc;

use crate::heal::strategy::{Erased, ErasedStrategy, Strategy};

/// succeeds; every attempt is recorded. The strategy used is reported as `Composite[Inner]`.
#[derive(Clone, Default)]
pub struct Composite {
    pub(crate) members: Vec<(i32, Arc<dyn ErasedStrategy>)>,
}

impl Composite {
    pub fn new() -> Self {
        Composite::default()
    }

    /// Adds a member with a priority (lower runs first).
    pub fn with<S: Strategy>(mut self, priority: i32, strategy: S) -> Self {
        self.members.push((priority, Arc::new(Erased(strategy))));
        self.members.sort_by_key(|(p, _)| *p);
        self
    }
}

/// What a failure type is routed to.
#[derive(Clone)]
pub(crate) struct Route {
    pub(crate) members: Vec<Arc<dyn ErasedStrategy>>,
    pub(crate) composite: bool,
}

impl Route {
    pub(crate) fn name(&self) -> String {
        if self.composite {
            let names: Vec<&str> = self.members.iter().map(|m| m.name()).collect();
            format!("Composite({})", names.join(","))
        } else {
            self.members
                .first()
                .map(|m| m.name().to_owned())
                .unwrap_or_default()
        }
    }
}
