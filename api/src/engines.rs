//! Opens the engine the configuration names for each seam, and applies their schemas
//! (`annostore schema apply`). Any mix works: the embedded engines keep their files
//! under `data_dir` (the embedded queue shares the embedded store's database).

use crate::config::{Config, EventsConfig, IndexConfig, QueueConfig, StoreConfig};
use annostore_cassandra::CassandraStore;
use annostore_core::cache::MokaOperationCache;
use annostore_core::events::{EventBus, LocalEventBus};
use annostore_core::index::Index;
use annostore_core::queue::RetryQueue;
use annostore_core::service::Engines;
use annostore_core::store::Store;
use annostore_elastic::ElasticIndex;
use annostore_embedded::index::{IndexOptions, TantivyIndex};
use annostore_embedded::queue::QueueOptions;
use annostore_embedded::store::FjallStore;
use annostore_kafka::KafkaEventBus;
use annostore_sqs::SqsRetryQueue;
use anyhow::Context;
use std::sync::Arc;

/// Opens the engines the configuration names.
pub async fn open(config: &Config) -> anyhow::Result<Engines> {
    // The embedded queue lives in the embedded store's database: open it for either.
    let fjall = match (&config.store, &config.queue) {
        (StoreConfig::Embedded, _) | (_, QueueConfig::Embedded) => {
            let dir = config.data_dir.join("store");
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            Some(
                FjallStore::open(&dir)
                    .with_context(|| format!("opening the embedded store in {}", dir.display()))?,
            )
        }
        _ => None,
    };
    let store: Arc<dyn Store> = match &config.store {
        StoreConfig::Embedded => Arc::new(fjall.clone().context("embedded store not opened")?),
        StoreConfig::Cassandra(c) => Arc::new(
            CassandraStore::connect(c)
                .await
                .with_context(|| {
                    format!(
                        "opening keyspace {} on Cassandra at {:?} (created by `annostore schema apply`)",
                        c.keyspace, c.contact_points
                    )
                })?,
        ),
    };
    let queue: Arc<dyn RetryQueue> = match &config.queue {
        QueueConfig::Embedded => Arc::new(
            fjall
                .as_ref()
                .context("embedded store not opened")?
                .retry_queue(QueueOptions::default()),
        ),
        QueueConfig::Sqs(c) => Arc::new(
            SqsRetryQueue::connect(c)
                .await
                .with_context(|| format!("connecting to SQS queue {}", c.queue_name))?,
        ),
    };
    let index: Arc<dyn Index> = match &config.index {
        IndexConfig::Embedded => {
            let dir = config.data_dir.join("index");
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            Arc::new(
                TantivyIndex::open(&dir, IndexOptions::default())
                    .with_context(|| format!("opening the embedded index in {}", dir.display()))?,
            )
        }
        IndexConfig::Elasticsearch(c) => Arc::new(
            ElasticIndex::connect(c)
                .with_context(|| format!("configuring Elasticsearch at {}", c.url))?,
        ),
    };
    let events: Arc<dyn EventBus> = match &config.events {
        EventsConfig::Embedded => Arc::new(LocalEventBus::default()),
        EventsConfig::Kafka(c) => Arc::new(
            KafkaEventBus::connect(c)
                .await
                .with_context(|| format!("connecting to Kafka at {}", c.brokers))?,
        ),
    };
    Ok(Engines {
        store,
        index,
        queue,
        cache: Arc::new(MokaOperationCache::default()),
        events,
    })
}

/// Partitions of a topic that `schema apply` creates: events of one operation key stay
/// in one partition (keyed), so more partitions only spread keys.
const EVENT_PARTITIONS: i32 = 6;

/// `annostore schema apply`: creates what each configured engine needs, idempotently,
/// and says what it did per seam. The embedded engines create their files on first
/// open and need nothing.
pub async fn apply_schema(config: &Config) -> anyhow::Result<()> {
    match &config.store {
        StoreConfig::Embedded => println!("[store] embedded: nothing to apply"),
        StoreConfig::Cassandra(c) => {
            annostore_cassandra::apply_schema(c)
                .await
                .context("applying the Cassandra schema")?;
            println!(
                "[store] cassandra: keyspace {} and its tables are in place",
                c.keyspace
            );
        }
    }
    match &config.index {
        IndexConfig::Embedded => println!("[index] embedded: nothing to apply"),
        IndexConfig::Elasticsearch(c) => {
            annostore_elastic::apply_schema(c)
                .await
                .context("applying the Elasticsearch template and index")?;
            println!(
                "[index] elasticsearch: template and index {} are in place",
                c.index
            );
        }
    }
    match &config.queue {
        QueueConfig::Embedded => println!("[queue] embedded: nothing to apply"),
        QueueConfig::Sqs(c) => {
            SqsRetryQueue::ensure_queues(c)
                .await
                .context("creating the SQS queues")?;
            println!(
                "[queue] sqs: queues {} and {} are in place",
                c.queue_name, c.dead_letter_queue_name
            );
        }
    }
    match &config.events {
        EventsConfig::Embedded => println!("[events] embedded: nothing to apply"),
        EventsConfig::Kafka(c) => {
            let created = annostore_kafka::ensure_topic(c, EVENT_PARTITIONS, 1)
                .await
                .context("creating the Kafka topic")?;
            let what = if created {
                "created"
            } else {
                "already in place"
            };
            println!("[events] kafka: topic {} {what}", c.topic);
        }
    }
    Ok(())
}
