//! The HTTP service (`healstore serve`).
//!
//! - [`guard`]: who may call the server and how much: bearer tokens with a role, and limits
//!   on a request's body, its time and the number served at once.

pub mod guard;
