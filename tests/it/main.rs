//! healstore's integration tests, in one binary to keep link times down.

mod circuit;
mod cli;
mod common;
mod faults;
mod healer;
mod process;
mod store;
mod strategies;
