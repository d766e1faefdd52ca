//! healstore's integration tests, in one binary to keep link times down.

mod analytics;
mod archive;
mod audit_report;
mod circuit;
mod cli;
mod common;
mod config;
mod crash;
mod errors;
mod faults;
mod heal_stream;
mod healer;
mod input;
mod live;
mod logging;
mod metrics;
mod outputs;
mod patterns;
mod process;
mod resolution;
mod serve;
mod serve_common;
mod state;
mod store;
mod strategies;
mod verify;
