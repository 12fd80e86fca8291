//! Backend-agnostic conformance suites: every engine behind a seam must pass the same
//! tests. Enabled with the `testkit` feature; each engine crate calls these from its
//! own tests (embedded always; Cassandra, Elasticsearch and SQS when their servers run).
//! Besides the suites: fault-injecting layers over real engines (`faults`), and the
//! checkers a fault scenario ends with (`invariants` at rest, `history` for what a
//! concurrent run's reads saw), and whole-service scenarios of operating a store
//! (`operating`: dead letters, consistency, garbage collection racing rollbacks).

pub mod faults;
pub mod history;
pub mod index;
pub mod invariants;
pub mod operating;
pub mod queue;
pub mod store;
