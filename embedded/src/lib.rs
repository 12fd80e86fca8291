//! annostore's embedded engines: everything on one machine, no servers.
//!
//! - [`store`]: the source of truth on fjall (an LSM key-value store), with group commit.
//! - [`queue`]: the retry queue, in the same fjall database.
//! - [`index`]: the search index on tantivy.

pub mod index;
pub mod queue;
pub mod store;
