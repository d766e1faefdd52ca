//! healstore's integration tests, in one binary to keep link times down.

mod cli;
mod common;
mod process;
mod store;
