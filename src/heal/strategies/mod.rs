//! The built-in strategies.

pub mod circuit;
pub mod degradation;
pub mod quorum;
pub mod rebalance;
pub mod restart;
pub mod retry;
