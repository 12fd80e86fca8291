//! annostore's domain, free of HTTP and of any storage engine.
//!
//! - [`model`]: operations, annotation types and annotations as clients see them.
//! - [`lifecycle`]: the operation state machine as pure functions; every engine applies its plans.
//! - [`query`]: the search language (time, space, text, data, vectors, aggregations) and its semantics.
//! - [`encode`]: the `TextEncoder` seam, text to a vector for search by meaning.
//! - [`validate`]: limits and per-item validation of annotation batches.
//! - [`store`], [`index`], [`queue`], [`cache`]: the traits at the engine seams.
//! - [`visibility`]: which operations a search may show, as an immutable snapshot.
//! - [`events`]: operation events between the nodes that share a store.
//! - [`service`]: the one place that orchestrates store, index, queue and cache.
//! - [`pipeline`]: indexes acknowledged upserts in the background, bounded and ordered.
//! - [`reconcile`]: replays index work until the index agrees with the store.

pub mod cache;
pub mod clock;
pub mod encode;
pub mod error;
pub mod events;
pub mod index;
pub mod lifecycle;
pub mod model;
pub mod page;
pub mod pipeline;
pub mod query;
pub mod queue;
pub mod reconcile;
pub mod service;
pub mod store;
pub mod validate;
pub mod visibility;

pub use error::{Error, FieldError};
#[cfg(feature = "testkit")]
pub mod testkit;
