//! The `annostore` binary's library: HTTP API (axum), server start-up, configuration and
//! the command-line client.

pub mod cli;
pub mod client;
pub mod config;
pub mod engines;
pub mod problem;
pub mod routes;
pub mod server;
