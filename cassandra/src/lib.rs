//! annostore's distributed store: the `Store` trait on Cassandra or ScyllaDB with the
//! `scylla` driver. Lifecycle rules come from `annostore_core::lifecycle`; concurrent
//! API nodes are kept consistent by compare-and-set writes whose retry decisions live
//! in [`cas`]. The schema is `schema/cql/*.cql` at the repository root.

pub mod cas;
pub mod config;
pub mod schema;
mod session;
mod statements;
mod store;

pub use config::{CassandraConfig, Replication};
pub use schema::apply_schema;
pub use store::CassandraStore;

#[cfg(feature = "testkit")]
pub mod testkit;
