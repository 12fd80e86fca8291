//! annostore's search index on Elasticsearch: [`ElasticIndex`] implements the core
//! `Index` seam with the official `elasticsearch` client (rustls, no OpenSSL).
//!
//! - [`config`]: [`ElasticConfig`], where the cluster is and how to write to it.
//! - [`body`]: the request bodies (template, bulk NDJSON, the search language's filter
//!   clauses, search, kNN, aggregations, count), pure.
//! - [`response`]: reading answers (hits, kNN hits, aggregations, field mappings), and
//!   which failures to retry.
//! - [`index`]: the adapter itself and [`apply_schema`].
//!
//! The index template lives in `schema/es/` at the repository root, with a README that
//! explains the mapping choices.
//!
//! Tests (`elastic/tests/`): `golden.rs` (request bodies on the wire, against
//! `tests/golden/`; `UPDATE_GOLDEN=1` rewrites them), `stub.rs` (answers of a stub server
//! from `tests/fixtures/`, failures on purpose; `stub_search.rs`, `stub_schema.rs` and
//! `stub_query.rs` (kNN, aggregations, confidence order) likewise), `model.rs` (the core index conformance
//! suite against a model of the query subset), and `conformance.rs` (the same suite
//! against a real server: `ANNOSTORE_TEST_ES_URL=http://127.0.0.1:9200`, optionally
//! `ANNOSTORE_TEST_ES_USERNAME`/`_PASSWORD`/`_CA_CERT`; `ANNOSTORE_REQUIRE_ES=1` makes a missing
//! server a failure).

pub mod body;
pub mod config;
pub mod index;
pub mod response;
pub mod schema;

pub use config::ElasticConfig;
pub use index::ElasticIndex;
pub use schema::apply_schema;
