//! annostore's search index on Elasticsearch: [`ElasticIndex`] implements the core
//! `Index` seam with the official `elasticsearch` client (rustls, no OpenSSL).
//!
//! - [`config`]: [`ElasticConfig`], where the cluster is and how to write to it.
//! - [`body`]: the request bodies (template, bulk NDJSON, search, count), pure.
//! - [`response`]: reading answers, and which failures to retry.
//! - [`index`]: the adapter itself and [`apply_schema`].
//!
//! The index template lives in `schema/es/` at the repository root, with a README that
//! explains the mapping choices.

pub mod body;
pub mod config;
pub mod index;
pub mod response;

pub use config::ElasticConfig;
pub use index::{ElasticIndex, apply_schema};
