//! The Kafka-distributed ingest path: `annostore submit` starts runs and publishes one
//! task per segment; any number of stateless `annostore worker`s compute them and
//! report progress; a finisher inside every worker finishes a run once all its segments
//! are done (or cancels it on the first failure).
//!
//! - Tasks ([`SegmentTask`]) go to the tasks topic, keyed by `<operation>/<segment>` so
//!   that one video's segments spread over the partitions (keying by operation alone
//!   would put a whole video on one worker). A task names the video and the time range,
//!   never the frames.
//! - Workers share one consumer group on the tasks topic, with auto commit off. A task's
//!   offset is committed only after its annotations were upserted and its [`Progress`]
//!   was delivered. A worker that dies before committing leaves the task to another
//!   worker; computing a segment twice changes nothing, because annotation ids are
//!   UUIDv5 over (operation, segment, sample time, rank) (`segment::process`).
//! - Progress ([`Progress`]) goes to the progress topic keyed by operation id, so one
//!   run's reports are in one partition, in order. Every worker also runs a finisher:
//!   a second consumer, in group `<group>-finish`, whose bookkeeping is [`Tracker`]. It
//!   commits, per partition, the offset of the oldest report of a run it has not settled
//!   yet, so whoever owns the partition next re-reads everything it needs to rebuild
//!   the state. Runs that end without reports (cancelled by hand, expired) are found
//!   by asking the API: when a finisher first meets a run, and every minute for the
//!   runs it waits for.
//!
//! Outcomes of a task: a run that is over is not computed (FINISHED: commit; CANCELLED
//! or EXPIRED: `Failed`, commit). Annotations upserted → `Done`, commit. A video that cannot be
//! read (`SegmentError::Media`) or an upsert the server refuses for good (4xx, e.g. the
//! run was cancelled or expired: 409) → `Failed`, commit (the finisher cancels the run).
//! A refusal because the run is already FINISHED means the segment was done before (a
//! worker died between its report and its commit): commit, report nothing. Transient
//! API or Kafka failures are retried in place without committing. A model that fails
//! (`SegmentError::Model`) means this worker is misconfigured: it exits with an error,
//! without committing, so that another worker takes the task.
//!
//! Test-only failpoint: with `ANNOSTORE_FAULT_ABORT_AFTER_UPSERT=N`, a worker calls
//! `std::process::abort()` right after its N-th successful upsert of a segment, before
//! reporting progress and before committing (what a worker killed mid-task leaves).

use crate::api::{ApiClient, ApiError, Operation};
use crate::run::{PreparedVideo, RunOptions};
use crate::segment::{self, ModelConfig, Models, Segment, SegmentError, SegmentJob};
use annostore_kafka::KafkaConfig;
use anyhow::{Context, anyhow};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{error, info, warn};
use uuid::Uuid;

/// The test-only failpoint (see the module comment).
pub const FAULT_ABORT_AFTER_UPSERT: &str = "ANNOSTORE_FAULT_ABORT_AFTER_UPSERT";

/// How long a delivery to Kafka may take before it is retried.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the finisher checks the runs it waits for.
const AUDIT_INTERVAL: Duration = Duration::from_secs(60);
/// Pause between in-place retries of a transient failure.
const RETRY_PAUSE: Duration = Duration::from_secs(2);

/// One segment to compute, as published by `submit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentTask {
    pub job: SegmentJob,
    /// Annotations per upsert call.
    pub upsert_batch: usize,
}

/// What became of one segment, as a worker reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub operation_id: Uuid,
    pub segment: Segment,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    Done { annotations: u64 },
    Failed { error: String },
}

/// Where the tasks and reports go, and how workers behave in their group.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Brokers and authentication (its `topic` is not used).
    pub connection: KafkaConfig,
    pub tasks_topic: String,
    pub progress_topic: String,
}

/// A worker's settings beyond the topics.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub kafka: KafkaSettings,
    /// The tasks consumer group; the finishers use `<group>-finish`.
    pub group: String,
    /// A worker that stops heartbeating for this long loses its partitions.
    pub session_timeout_ms: u64,
    /// The longest a segment may take before the worker is considered stuck.
    pub max_poll_interval_ms: u64,
}

fn topic_config(settings: &KafkaSettings, topic: &str) -> KafkaConfig {
    KafkaConfig {
        topic: topic.to_owned(),
        ..settings.connection.clone()
    }
}

fn producer(settings: &KafkaSettings) -> anyhow::Result<FutureProducer> {
    settings
        .connection
        .client_config(&[
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("linger.ms", "5"),
            ("message.timeout.ms", "30000"),
        ])
        .create()
        .context("creating the Kafka producer")
}

/// Creates the tasks and progress topics unless they exist.
pub async fn ensure_topics(
    settings: &KafkaSettings,
    partitions: i32,
    replication: i32,
) -> anyhow::Result<()> {
    for topic in [&settings.tasks_topic, &settings.progress_topic] {
        annostore_kafka::ensure_topic(&topic_config(settings, topic), partitions, replication)
            .await
            .map_err(|e| anyhow!("Kafka topic {topic}: {e}"))?;
    }
    Ok(())
}

/// A connection that publishes segment tasks.
pub struct TaskPublisher {
    producer: FutureProducer,
    topic: String,
}

impl TaskPublisher {
    pub fn new(settings: &KafkaSettings) -> anyhow::Result<TaskPublisher> {
        Ok(TaskPublisher {
            producer: producer(settings)?,
            topic: settings.tasks_topic.clone(),
        })
    }

    /// Publishes one task per segment of `video` and waits until Kafka has them all.
    pub async fn publish(&self, video: &PreparedVideo, options: &RunOptions) -> anyhow::Result<()> {
        let sends = video.segments.iter().map(|s| {
            let task = SegmentTask {
                job: video.job(*s, options),
                upsert_batch: options.upsert_batch,
            };
            async move {
                let payload = serde_json::to_vec(&task)?;
                let key = format!("{}/{}", task.job.operation_id, s.index);
                self.producer
                    .send(
                        FutureRecord::to(&self.topic).key(&key).payload(&payload),
                        Timeout::After(DELIVERY_TIMEOUT),
                    )
                    .await
                    .map_err(|(e, _)| anyhow!("publishing task {key} to {}: {e}", self.topic))?;
                anyhow::Ok(())
            }
        });
        futures::future::try_join_all(sends).await?;
        Ok(())
    }
}

mod finisher;
mod worker;

pub use finisher::{Action, Observed, Tracker};
pub use worker::run_worker;
