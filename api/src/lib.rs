//! The `annostore` binary's library: HTTP API (axum), server start-up, configuration and
//! the command-line client, and the producer commands (`ingest`, `submit`, `worker`).

pub mod admission;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod engines;
pub mod ingest;
pub mod problem;
pub mod routes;
pub mod server;
pub mod ui;
