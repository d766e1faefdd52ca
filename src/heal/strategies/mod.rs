//! The built-in strategies.
