//! Healing: failures in, decisions and actions out, every step recorded in the log.
//!
//! - [`model`]: failures, actions, priorities, agent status.
//! - [`detect`]: raw events to failures.
//! - [`strategy`]: the [`Strategy`] contract (pure fold, pure decisions).
//! - [`strategies`]: the built-in strategies.
//! - [`coordinator`]: the [`Coordinator`] through which actions reach the fleet.
//! - [`engine`]: the decision [`Engine`]: routes, strategies, mode and limits, pure.
//! - [`healer`]: the [`Healer`], which loads, folds, acts and appends around the engine.
//! - [`answers`]: the healer's answers as the command line and the HTTP API give them.

pub mod answers;
pub mod coordinator;
pub mod detect;
pub mod engine;
pub mod healer;
pub mod lines;
pub mod model;
pub mod prevention;
pub mod sim;
pub mod strategies;
pub mod strategy;

pub use answers::{CircuitsReport, StatesReport};
pub use coordinator::{Coordinator, CoordinatorError, NoopCoordinator};
pub use detect::detect;
pub use engine::Engine;
pub use healer::{
    ApprovalReport, Attempt, Composite, HealReport, Healer, HealerBuilder, HealerOptions, Limits,
    Mode, OutcomeReport, ProposalReport, ReactionReport, RecoveryReport, SignalReport, StateView,
    strategy_stream,
};
pub use model::{
    Action, AgentStatus, Failure, HealingResult, Priority, Severity, Topology, failure_types,
};
pub use strategy::{Decision, Reaction, Signal, Strategy, Verdict};
