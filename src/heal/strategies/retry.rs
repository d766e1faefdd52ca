//! Built-in strategy (being written).
