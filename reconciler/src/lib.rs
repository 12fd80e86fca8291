//! The reconciler: the background work that makes the index agree with the store.
//!
//! Three loops, each idempotent, so any number of reconcilers may run at once (every
//! `annostore serve` by default, and `annostore reconcile` as a process of its own):
//! - the queue loop receives failed index work from the retry queue and replays it
//!   (the queue backs a failed item off exponentially and dead-letters it after too many
//!   receives);
//! - the sweep re-enqueues pending records older than a threshold (a lost message, or
//!   a node that died between its store write and its index write or enqueue);
//! - the audit compares, per active operation, the store's annotation count with the
//!   index's, and rebuilds the operation's index entries where they differ.
//!
//! Each loop also reports the backlog as metrics (see [`metrics`]).

mod audit;
pub mod metrics;
mod worker;

pub use audit::Audit;
pub use worker::{ReconcilerConfig, Round, Worker};
