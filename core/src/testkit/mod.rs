//! Backend-agnostic conformance suites: every engine behind a seam must pass the same
//! tests. Enabled with the `testkit` feature; each engine crate calls these from its
//! own tests (embedded always; Cassandra, Elasticsearch and SQS when their servers run).

pub mod faults;
pub mod index;
pub mod queue;
pub mod store;
