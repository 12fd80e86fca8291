//! annostore's retry queue on Amazon SQS (or anything that speaks its API: moto,
//! ElasticMQ, LocalStack).
//!
//! - [`config`]: [`SqsConfig`], the `[queue]` settings when `kind = "sqs"`.
//! - [`body`]: the compact JSON body of a message.
//! - [`queue`]: [`SqsRetryQueue`], the [`annostore_core::queue::RetryQueue`] itself, and
//!   [`SqsRetryQueue::ensure_queues`] for `annostore schema apply`.
//! - [`dead`]: dead letters by work id (inspect, redrive, purge), by scanning the
//!   dead-letter queue.

pub mod body;
pub mod config;
pub mod dead;
pub mod queue;

pub use config::SqsConfig;
pub use queue::SqsRetryQueue;

#[cfg(feature = "testkit")]
pub mod testkit;
