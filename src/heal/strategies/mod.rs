//! The built-in strategies.

pub(crate) mod check;
pub mod circuit;
pub mod degradation;
pub mod quorum;
pub mod rebalance;
pub mod restart;
pub mod retry;

pub use check::MAX_DURATION_MS;
