//! annostore's operation events on Kafka: [`KafkaEventBus`] implements
//! [`annostore_core::events::EventBus`] so that many API nodes sharing one store and one
//! index hear each other's lifecycle changes within a broker round trip.
//!
//! - Every node publishes to one topic, keyed by the operation key (type, version,
//!   pivot), so one key's events stay in one partition, in order.
//! - Every node reads every event: it has a consumer group of its own
//!   (`annostore-<uuid>`) and assigns itself all partitions of the topic at their end
//!   when it connects (no group rebalance to wait for; nothing older than the node is
//!   replayed: it warms up from the store instead).
//! - Delivery is confirmed in the background: a request never waits on the broker, and
//!   failures are logged and counted (`annostore_kafka_delivery_failed_total`); other
//!   nodes then converge through their periodic refresh from the store.
//!
//! [`ensure_topic`] creates the topic (idempotently) for `annostore schema apply`.

mod config;

pub use config::KafkaConfig;

use annostore_core::events::{EventBus, EventEnvelope, EventError, Subscription};
use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use uuid::Uuid;

/// How long connecting waits for the cluster's metadata and offsets.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Events kept for a follower that falls behind before it is told it missed some.
const SUBSCRIBER_BUFFER: usize = 4_096;

/// Operation events on a Kafka topic.
pub struct KafkaEventBus {
    producer: FutureProducer,
    topic: String,
    group: String,
    tx: broadcast::Sender<EventEnvelope>,
    pump: JoinHandle<()>,
}

impl KafkaEventBus {
    /// Connects a producer and this node's consumer, positioned at the end of every
    /// partition of `config.topic`: every event published after this returns reaches
    /// [`EventBus::subscribe`]rs. The topic must exist ([`ensure_topic`]). Call from
    /// within a tokio runtime.
    pub async fn connect(config: &KafkaConfig) -> Result<KafkaEventBus, EventError> {
        let group = format!("annostore-{}", Uuid::now_v7());
        let producer: FutureProducer = config
            .client_config(&[
                // Small batches: events are few and latency is the point.
                ("linger.ms", "1"),
                ("socket.nagle.disable", "true"),
                // Retries keep one key's events in order.
                ("enable.idempotence", "true"),
                ("message.timeout.ms", "10000"),
            ])
            .create()
            .map_err(config_error)?;
        let consumer: StreamConsumer = config
            .client_config(&[
                ("group.id", group.as_str()),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "latest"),
                ("enable.partition.eof", "false"),
                ("fetch.wait.max.ms", "10"),
                ("fetch.min.bytes", "1"),
                ("socket.nagle.disable", "true"),
            ])
            .create()
            .map_err(config_error)?;
        let consumer = Arc::new(consumer);
        let topic = config.topic.clone();
        let assigned = {
            let consumer = consumer.clone();
            let topic = topic.clone();
            tokio::task::spawn_blocking(move || assign_at_end(consumer.as_ref(), &topic))
                .await
                .map_err(|e| EventError::Transport(format!("assigning partitions: {e}")))??
        };
        info!(
            topic,
            group,
            partitions = assigned,
            "following operation events on Kafka"
        );
        let (tx, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        let pump = tokio::spawn(pump(consumer, tx.clone()));
        Ok(KafkaEventBus {
            producer,
            topic,
            group,
            tx,
            pump,
        })
    }

    /// This node's consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl Drop for KafkaEventBus {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

#[async_trait]
impl EventBus for KafkaEventBus {
    async fn publish(&self, event: &EventEnvelope) -> Result<(), EventError> {
        let key =
            serde_json::to_vec(&event.event.key()).map_err(|e| EventError::Codec(e.to_string()))?;
        let payload = serde_json::to_vec(event).map_err(|e| EventError::Codec(e.to_string()))?;
        let record = FutureRecord::to(&self.topic).key(&key).payload(&payload);
        let delivery = self
            .producer
            .send_result(record)
            .map_err(|(e, _)| EventError::Transport(e.to_string()))?;
        let operation = event.event.operation().id;
        let kind = event.event.kind();
        tokio::spawn(async move {
            let error = match delivery.await {
                Ok(Ok(_)) => return,
                Ok(Err((e, _))) => e.to_string(),
                Err(_) => "the producer went away before delivering".to_owned(),
            };
            metrics::counter!("annostore_kafka_delivery_failed_total", "kind" => kind).increment(1);
            warn!(%operation, kind, error, "operation event not delivered to Kafka");
        });
        Ok(())
    }

    fn subscribe(&self) -> Subscription {
        Subscription::new(self.tx.subscribe())
    }
}

/// Assigns every partition of `topic` at its current end. Blocking.
fn assign_at_end(consumer: &StreamConsumer, topic: &str) -> Result<usize, EventError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(|e| EventError::Transport(format!("reading the metadata of {topic}: {e}")))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(EventError::Config(format!(
            "Kafka topic {topic} does not exist; create it first (annostore schema apply)"
        )));
    }
    let mut assignment = TopicPartitionList::new();
    for &p in &partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, METADATA_TIMEOUT)
            .map_err(|e| {
                EventError::Transport(format!("reading the end of {topic} partition {p}: {e}"))
            })?;
        assignment
            .add_partition_offset(topic, p, Offset::Offset(high))
            .map_err(|e| EventError::Transport(e.to_string()))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|e| EventError::Transport(format!("assigning {topic}: {e}")))?;
    Ok(partitions.len())
}

/// Moves events from the consumer to the subscribers until the bus is dropped.
async fn pump(consumer: Arc<StreamConsumer>, tx: broadcast::Sender<EventEnvelope>) {
    loop {
        match consumer.recv().await {
            Ok(message) => {
                let Some(payload) = message.payload() else {
                    continue;
                };
                match serde_json::from_slice::<EventEnvelope>(payload) {
                    // No subscriber yet is fine: nobody needs it.
                    Ok(envelope) => {
                        let _ = tx.send(envelope);
                    }
                    Err(e) => {
                        metrics::counter!("annostore_kafka_undecodable_events_total").increment(1);
                        warn!(
                            partition = message.partition(),
                            offset = message.offset(),
                            error = %e,
                            "skipping an operation event that does not decode"
                        );
                    }
                }
            }
            Err(e) => {
                metrics::counter!("annostore_kafka_consumer_errors_total").increment(1);
                warn!(error = %e, "Kafka consumer error");
                // librdkafka reconnects by itself; do not spin on a broken connection.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Creates `config.topic` with `partitions` and `replication` unless it exists. Returns
/// whether it created it. An existing topic is left as it is, whatever its layout.
pub async fn ensure_topic(
    config: &KafkaConfig,
    partitions: i32,
    replication: i32,
) -> Result<bool, EventError> {
    let admin: AdminClient<DefaultClientContext> =
        config.client_config(&[]).create().map_err(config_error)?;
    let admin = Arc::new(admin);
    let topic = config.topic.clone();
    // All topics' metadata: asking for one by name may make the broker auto-create it.
    let exists = {
        let admin = admin.clone();
        let topic = topic.clone();
        tokio::task::spawn_blocking(move || {
            admin
                .inner()
                .fetch_metadata(None, METADATA_TIMEOUT)
                .map(|m| {
                    m.topics()
                        .iter()
                        .any(|t| t.name() == topic && t.error().is_none())
                })
        })
        .await
        .map_err(|e| EventError::Transport(format!("reading the cluster's topics: {e}")))?
        .map_err(|e| EventError::Transport(format!("reading the cluster's topics: {e}")))?
    };
    if exists {
        debug!(topic, "Kafka topic exists");
        return Ok(false);
    }
    let new = NewTopic::new(&topic, partitions, TopicReplication::Fixed(replication));
    let options = AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT));
    let results = admin
        .create_topics([&new], &options)
        .await
        .map_err(|e| EventError::Transport(format!("creating {topic}: {e}")))?;
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => return Ok(false),
            Err((name, code)) => {
                return Err(EventError::Transport(format!("creating {name}: {code}")));
            }
        }
    }
    info!(topic, partitions, replication, "Kafka topic created");
    Ok(true)
}

fn config_error(e: KafkaError) -> EventError {
    EventError::Config(format!("Kafka client configuration: {e}"))
}
