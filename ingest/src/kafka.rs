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

// ---------------------------------------------------------------------------------
// The worker.

/// Runs a worker until `stop` turns true (it then finishes its current tasks) or until
/// it must not go on (a model error, Kafka misconfiguration): then it returns the error,
/// leaving its tasks uncommitted.
///
/// `jobs` tasks are computed at once, each by a consumer of its own (in the one group)
/// with its own models: a consumer handles one task at a time, so its commits follow
/// the order of its partitions.
pub async fn run_worker(
    api: ApiClient,
    settings: WorkerSettings,
    models: ModelConfig,
    jobs: usize,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let jobs = jobs.max(1);
    let failpoint = Arc::new(Failpoint {
        abort_after: std::env::var(FAULT_ABORT_AFTER_UPSERT)
            .ok()
            .and_then(|v| v.parse().ok()),
        upserts: AtomicU64::new(0),
    });
    // With one job, let the decoder use both cores' worth of threads (as `run::Pool`).
    let decoder_threads = if jobs == 1 { 2 } else { 1 };
    let mut loaded = Vec::new();
    for _ in 0..jobs {
        let config = models.clone();
        loaded.push(
            tokio::task::spawn_blocking(move || config.load())
                .await
                .context("loading the models")?
                .context("loading the models")?,
        );
    }
    let producer = producer(&settings.kafka)?;
    let mut consumers = tokio::task::JoinSet::new();
    for models in loaded {
        let consumer = tasks_consumer(&settings)?;
        consumers.spawn(consume(
            api.clone(),
            consumer,
            producer.clone(),
            settings.kafka.progress_topic.clone(),
            models,
            decoder_threads,
            stop.clone(),
            failpoint.clone(),
        ));
    }
    let finisher = tokio::spawn(run_finisher(api.clone(), settings.clone(), stop.clone()));
    info!(
        group = settings.group,
        topic = settings.kafka.tasks_topic,
        jobs,
        "worker waiting for segment tasks"
    );
    while let Some(ended) = consumers.join_next().await {
        match ended {
            Ok(Ok(())) => {}
            // Dropping the set aborts the other consumers mid-task: nothing of theirs is
            // committed, so their tasks go to other workers.
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(anyhow!("a task consumer panicked: {e}")),
        }
    }
    let _ = finisher.await;
    Ok(())
}

/// The test-only failpoint (see the module comment), shared by a worker's consumers.
struct Failpoint {
    abort_after: Option<u64>,
    upserts: AtomicU64,
}

impl Failpoint {
    fn upserted(&self, operation: Uuid) {
        let n = self.upserts.fetch_add(1, Ordering::SeqCst) + 1;
        if self.abort_after == Some(n) {
            eprintln!(
                "{FAULT_ABORT_AFTER_UPSERT}: aborting after upserting into {operation}, \
                 before reporting and committing"
            );
            std::process::abort();
        }
    }
}

fn tasks_consumer(settings: &WorkerSettings) -> anyhow::Result<StreamConsumer> {
    let session = settings.session_timeout_ms.to_string();
    let heartbeat = (settings.session_timeout_ms / 4).max(100).to_string();
    let poll = settings.max_poll_interval_ms.to_string();
    let consumer: StreamConsumer = settings
        .kafka
        .connection
        .client_config(&[
            ("group.id", settings.group.as_str()),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
            ("session.timeout.ms", session.as_str()),
            ("heartbeat.interval.ms", heartbeat.as_str()),
            ("max.poll.interval.ms", poll.as_str()),
            // Little prefetch: tasks are small and each takes a while.
            ("queued.max.messages.kbytes", "64"),
        ])
        .create()
        .context("creating the Kafka tasks consumer")?;
    consumer
        .subscribe(&[settings.kafka.tasks_topic.as_str()])
        .with_context(|| format!("subscribing to {}", settings.kafka.tasks_topic))?;
    Ok(consumer)
}

/// One consumer's loop: a task at a time, committed once settled.
#[allow(clippy::too_many_arguments)]
async fn consume(
    api: ApiClient,
    consumer: StreamConsumer,
    producer: FutureProducer,
    progress_topic: String,
    models: Models,
    decoder_threads: usize,
    mut stop: watch::Receiver<bool>,
    failpoint: Arc<Failpoint>,
) -> anyhow::Result<()> {
    let mut models = Some(models);
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let message = tokio::select! {
            // A dropped sender can no longer say stop: take it as one.
            r = stop.changed() => match r {
                Ok(()) => continue,
                Err(_) => return Ok(()),
            },
            m = consumer.recv() => m,
        };
        let message = match message {
            Ok(m) => m.detach(),
            Err(e) => {
                warn!(error = %e, "reading tasks");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let step = handle_task(
            &api,
            &producer,
            &progress_topic,
            (&mut models, decoder_threads),
            &message,
            &mut stop,
            &|operation| failpoint.upserted(operation),
        )
        .await?;
        match step {
            Handled::Commit => commit(&consumer, &message),
            Handled::Leave => {}
        }
    }
}

/// What a task came to.
enum Handled {
    /// Settled (reported, or nothing to report): commit.
    Commit,
    /// Not settled (stopping during a retry): leave it for another worker.
    Leave,
}

async fn handle_task(
    api: &ApiClient,
    producer: &FutureProducer,
    progress_topic: &str,
    (models, decoder_threads): (&mut Option<Models>, usize),
    message: &OwnedMessage,
    stop: &mut watch::Receiver<bool>,
    after_upsert: &impl Fn(Uuid),
) -> anyhow::Result<Handled> {
    let task: SegmentTask = match message.payload().map(serde_json::from_slice) {
        Some(Ok(t)) => t,
        other => {
            // It can never be processed; keeping it would block its partition forever.
            error!(
                partition = message.partition(),
                offset = message.offset(),
                error = ?other.map(|r| r.err()),
                "dropping a malformed task"
            );
            return Ok(Handled::Commit);
        }
    };
    let job = task.job.clone();
    // A run that is over needs no computing: FINISHED means this segment was done before
    // (a worker died before committing); CANCELLED or EXPIRED is reported as a failure,
    // so that a finisher settles the run rather than wait for its segments forever.
    if let Ok(op) = api.operation(job.operation_id).await
        && op.status != "STARTED"
    {
        info!(operation = %job.operation_id, segment = job.segment.index, status = op.status, "skipping a segment of a run that is over");
        if op.status == "FINISHED" {
            return Ok(Handled::Commit);
        }
        let failed = Progress {
            operation_id: job.operation_id,
            segment: job.segment,
            outcome: Outcome::Failed {
                error: format!("the run is {}", op.status),
            },
        };
        let sent = publish_progress(producer, progress_topic, &failed, stop).await;
        return Ok(if sent {
            Handled::Commit
        } else {
            Handled::Leave
        });
    }
    info!(
        operation = %job.operation_id,
        segment = job.segment.index,
        count = job.segment.count,
        "processing segment"
    );
    // The models move to a blocking thread and back.
    let taken = models
        .take()
        .ok_or_else(|| anyhow!("internal: the models were lost by an earlier task"))?;
    let (back, result) = tokio::task::spawn_blocking(move || {
        let mut m = taken;
        let r = segment::process(&mut m, &job, decoder_threads, |_| {});
        (m, r)
    })
    .await
    .context("the segment thread panicked")?;
    *models = Some(back);
    let job = &task.job;
    let report = |outcome: Outcome| Progress {
        operation_id: job.operation_id,
        segment: job.segment,
        outcome,
    };
    let items = match result {
        Ok(items) => items,
        Err(SegmentError::Media(e)) => {
            warn!(operation = %job.operation_id, segment = job.segment.index, error = %e, "segment failed");
            let sent = publish_progress(
                producer,
                progress_topic,
                &report(Outcome::Failed {
                    error: e.to_string(),
                }),
                stop,
            )
            .await;
            return Ok(if sent {
                Handled::Commit
            } else {
                Handled::Leave
            });
        }
        Err(SegmentError::Model(e)) => {
            return Err(anyhow!(e).context(format!(
                "the models failed on segment {} of {}; this worker is misconfigured \
                 (the task is left for another worker)",
                job.segment.index, job.operation_id
            )));
        }
    };
    loop {
        match api
            .upsert(job.operation_id, &items, task.upsert_batch)
            .await
        {
            Ok(()) => break,
            Err(e) if e.is_transient() => {
                warn!(operation = %job.operation_id, error = %e, "upsert keeps failing; retrying");
                if pause_or_stop(stop).await {
                    return Ok(Handled::Leave);
                }
            }
            Err(e) => return refused(api, producer, progress_topic, job, e, stop).await,
        }
    }
    // The test-only failpoint sits here: upserted, neither reported nor committed.
    after_upsert(job.operation_id);
    let annotations = items.len() as u64;
    let sent = publish_progress(
        producer,
        progress_topic,
        &report(Outcome::Done { annotations }),
        stop,
    )
    .await;
    info!(operation = %job.operation_id, segment = job.segment.index, annotations, "segment done");
    Ok(if sent {
        Handled::Commit
    } else {
        Handled::Leave
    })
}

/// A permanent refusal of an upsert: the run is over. If it FINISHED, this segment was
/// done before (its first worker died before committing): nothing to report.
async fn refused(
    api: &ApiClient,
    producer: &FutureProducer,
    progress_topic: &str,
    job: &SegmentJob,
    e: ApiError,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<Handled> {
    if let Ok(Operation { status, .. }) = api.operation(job.operation_id).await
        && status == "FINISHED"
    {
        info!(operation = %job.operation_id, segment = job.segment.index, "run already finished; segment was done before");
        return Ok(Handled::Commit);
    }
    warn!(operation = %job.operation_id, segment = job.segment.index, error = %e, "upsert refused");
    let sent = publish_progress(
        producer,
        progress_topic,
        &Progress {
            operation_id: job.operation_id,
            segment: job.segment,
            outcome: Outcome::Failed {
                error: e.to_string(),
            },
        },
        stop,
    )
    .await;
    Ok(if sent {
        Handled::Commit
    } else {
        Handled::Leave
    })
}

/// Publishes `progress` and waits for its delivery, retrying until it is delivered
/// (true) or the worker is told to stop (false).
async fn publish_progress(
    producer: &FutureProducer,
    topic: &str,
    progress: &Progress,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let Ok(payload) = serde_json::to_vec(progress) else {
        return false;
    };
    let key = progress.operation_id.to_string();
    loop {
        let sent = producer
            .send(
                FutureRecord::to(topic).key(&key).payload(&payload),
                Timeout::After(DELIVERY_TIMEOUT),
            )
            .await;
        match sent {
            Ok(_) => return true,
            Err((e, _)) => {
                warn!(topic, error = %e, "reporting progress failed; retrying");
                if pause_or_stop(stop).await {
                    return false;
                }
            }
        }
    }
}

/// Waits `RETRY_PAUSE`; true when the worker was told to stop meanwhile (or before).
async fn pause_or_stop(stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(RETRY_PAUSE) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

fn commit<C: Consumer<X>, X: ConsumerContext>(consumer: &C, message: &OwnedMessage) {
    let mut tpl = TopicPartitionList::new();
    let offset = Offset::Offset(message.offset() + 1);
    if let Err(e) = tpl.add_partition_offset(message.topic(), message.partition(), offset) {
        warn!(error = %e, "building the offset to commit");
        return;
    }
    // After a rebalance the partition may be another worker's: the commit then fails
    // and the new owner computes the segment again, which changes nothing.
    if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
        warn!(partition = message.partition(), offset = message.offset(), error = %e, "committing a task");
    }
}

// ---------------------------------------------------------------------------------
// The finisher.

/// What the finisher must do about a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Finish,
    Cancel { reason: String },
}

/// What [`Tracker::observe`] made of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// The first report of a run this tracker has seen.
    New,
    /// A report of a run it knew.
    Known,
    /// A report from a partition this finisher does not own (any more).
    Ignored,
}

#[derive(Debug, Default)]
struct RunState {
    count: u32,
    done: BTreeSet<u32>,
    failed: Option<String>,
    settled: bool,
    /// The offset of its first report in the partition.
    first_offset: i64,
}

#[derive(Debug, Default)]
struct PartitionState {
    runs: HashMap<Uuid, RunState>,
    /// The offset after the last report observed.
    next: Option<i64>,
    /// The last position handed out by `commits`.
    committed: Option<i64>,
}

/// The finisher's bookkeeping, per progress partition: which segments of each run are
/// done, which runs are due to be finished or cancelled, and which offset is safe to
/// commit (the oldest report of a run not yet settled, or past the last report).
#[derive(Debug, Default)]
pub struct Tracker {
    partitions: BTreeMap<i32, PartitionState>,
}

impl Tracker {
    /// Partitions this finisher now owns: their state starts over, from their
    /// committed offset.
    pub fn assign(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.partitions.insert(*p, PartitionState::default());
        }
    }

    /// Partitions taken away: their runs are someone else's now.
    pub fn revoke(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.partitions.remove(p);
        }
    }

    pub fn observe(&mut self, partition: i32, offset: i64, progress: &Progress) -> Observed {
        let Some(state) = self.partitions.get_mut(&partition) else {
            return Observed::Ignored;
        };
        state.next = Some(state.next.map_or(offset + 1, |n| n.max(offset + 1)));
        let mut observed = Observed::Known;
        let run = state.runs.entry(progress.operation_id).or_insert_with(|| {
            observed = Observed::New;
            RunState {
                count: progress.segment.count,
                first_offset: offset,
                ..RunState::default()
            }
        });
        if run.settled {
            return observed;
        }
        run.count = run.count.max(progress.segment.count);
        match &progress.outcome {
            Outcome::Done { .. } => {
                run.done.insert(progress.segment.index);
            }
            Outcome::Failed { error } => {
                if run.failed.is_none() {
                    run.failed = Some(format!("segment {}: {error}", progress.segment.index));
                }
            }
        }
        observed
    }

    /// Runs to finish (all segments done) or cancel (a segment failed), not yet settled.
    pub fn due(&self) -> Vec<(Uuid, Action)> {
        let mut due = Vec::new();
        for state in self.partitions.values() {
            for (id, run) in &state.runs {
                if run.settled {
                    continue;
                }
                if let Some(reason) = &run.failed {
                    due.push((
                        *id,
                        Action::Cancel {
                            reason: reason.clone(),
                        },
                    ));
                } else if run.done.len() as u32 >= run.count {
                    due.push((*id, Action::Finish));
                }
            }
        }
        due.sort_by_key(|(id, _)| *id);
        due
    }

    /// Runs with reports here that are neither settled nor due: waiting for segments.
    pub fn waiting(&self) -> Vec<Uuid> {
        let due: BTreeSet<Uuid> = self.due().into_iter().map(|(id, _)| id).collect();
        let mut out: Vec<Uuid> = self
            .partitions
            .values()
            .flat_map(|p| p.runs.iter())
            .filter(|(id, r)| !r.settled && !due.contains(id))
            .map(|(id, _)| *id)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The run is finished or cancelled: later reports of it change nothing.
    pub fn settle(&mut self, operation: Uuid) {
        for state in self.partitions.values_mut() {
            if let Some(run) = state.runs.get_mut(&operation) {
                run.settled = true;
                run.done = BTreeSet::new();
            }
        }
    }

    /// The position to commit in each partition where it moved since the last call:
    /// the first report of the oldest unsettled run, else past the last report.
    pub fn commits(&mut self) -> Vec<(i32, i64)> {
        let mut out = Vec::new();
        for (p, state) in &mut self.partitions {
            let oldest = state
                .runs
                .values()
                .filter(|r| !r.settled)
                .map(|r| r.first_offset)
                .min();
            let Some(position) = oldest.or(state.next) else {
                continue;
            };
            if state.committed != Some(position) {
                state.committed = Some(position);
                out.push((*p, position));
            }
        }
        out
    }
}

/// Keeps the tracker's partitions in step with the group's assignment.
struct FinisherContext {
    tracker: Arc<Mutex<Tracker>>,
}

impl ClientContext for FinisherContext {}

impl ConsumerContext for FinisherContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Ok(mut tracker) = self.tracker.lock() else {
            return;
        };
        match rebalance {
            Rebalance::Assign(tpl) => tracker.assign(&partitions(tpl)),
            Rebalance::Revoke(tpl) => tracker.revoke(&partitions(tpl)),
            Rebalance::Error(e) => warn!(error = %e, "progress consumer rebalance"),
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

async fn run_finisher(api: ApiClient, settings: WorkerSettings, mut stop: watch::Receiver<bool>) {
    if let Err(e) = finisher_loop(&api, &settings, &mut stop).await {
        // Without a finisher this worker still computes segments; other workers'
        // finishers take over the progress partitions.
        error!(error = format!("{e:#}"), "the finisher stopped");
    }
}

async fn finisher_loop(
    api: &ApiClient,
    settings: &WorkerSettings,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let group = format!("{}-finish", settings.group);
    let session = settings.session_timeout_ms.to_string();
    let consumer: StreamConsumer<FinisherContext> = settings
        .kafka
        .connection
        .client_config(&[
            ("group.id", group.as_str()),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
            ("session.timeout.ms", session.as_str()),
            (
                "heartbeat.interval.ms",
                &(settings.session_timeout_ms / 4).max(100).to_string(),
            ),
        ])
        .create_with_context(FinisherContext {
            tracker: tracker.clone(),
        })
        .context("creating the Kafka progress consumer")?;
    consumer
        .subscribe(&[settings.kafka.progress_topic.as_str()])
        .with_context(|| format!("subscribing to {}", settings.kafka.progress_topic))?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // Runs can end without a report: cancelled by hand, or expired after their tasks
    // were lost. Such a run would hold its partition's offset back forever.
    let mut audit = tokio::time::interval(AUDIT_INTERVAL);
    audit.tick().await;
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        tokio::select! {
            r = stop.changed() => match r {
                Ok(()) => continue,
                Err(_) => return Ok(()),
            },
            _ = tick.tick() => {}
            _ = audit.tick() => {
                let waiting = lock(&tracker).waiting();
                for id in waiting {
                    if let Ok(op) = api.operation(id).await
                        && op.status != "STARTED"
                    {
                        info!(operation = %id, status = op.status, "a run ended without its reports");
                        lock(&tracker).settle(id);
                    }
                }
            }
            m = consumer.recv() => match m {
                Ok(m) => {
                    let (partition, offset) = (m.partition(), m.offset());
                    let progress: Option<Progress> =
                        m.payload().and_then(|p| serde_json::from_slice(p).ok());
                    match progress {
                        Some(progress) => {
                            let observed = lock(&tracker).observe(partition, offset, &progress);
                            if observed == Observed::New {
                                // A run settled before this finisher owned the partition
                                // (late duplicate reports): nothing to do for it.
                                if let Ok(op) = api.operation(progress.operation_id).await
                                    && op.status != "STARTED"
                                {
                                    info!(operation = %op.id, status = op.status, "reports of a run that is already over");
                                    lock(&tracker).settle(op.id);
                                }
                            }
                        }
                        None => warn!(partition, offset, "skipping a malformed progress report"),
                    }
                }
                Err(e) => {
                    warn!(error = %e, "reading progress");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
        }
        let due = lock(&tracker).due();
        for (operation, action) in due {
            if settle_run(api, operation, &action).await {
                lock(&tracker).settle(operation);
            }
        }
        let commits = lock(&tracker).commits();
        if !commits.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (p, position) in &commits {
                let _ = tpl.add_partition_offset(
                    &settings.kafka.progress_topic,
                    *p,
                    Offset::Offset(*position),
                );
            }
            if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                warn!(error = %e, "committing progress offsets");
            }
        }
    }
}

fn lock(tracker: &Mutex<Tracker>) -> std::sync::MutexGuard<'_, Tracker> {
    // The tracker holds no invariant a panic elsewhere could break half-way.
    tracker.lock().unwrap_or_else(|p| p.into_inner())
}

/// Finishes or cancels `operation`; true once that is settled (done, or refused for
/// good), false when it should be tried again later.
async fn settle_run(api: &ApiClient, operation: Uuid, action: &Action) -> bool {
    let result = match action {
        Action::Finish => api.finish(operation).await,
        Action::Cancel { reason } => {
            warn!(%operation, reason, "a segment failed: cancelling the run");
            api.cancel(operation).await
        }
    };
    match result {
        Ok(op) => {
            info!(%operation, status = op.status, annotations = ?op.annotation_count, "run settled");
            true
        }
        Err(e) if e.is_transient() => {
            warn!(%operation, error = %e, "settling the run failed; will retry");
            false
        }
        Err(e) => {
            error!(%operation, error = %e, "the run could not be settled as planned (it failed)");
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(op: Uuid, index: u32, count: u32, done: bool) -> Progress {
        Progress {
            operation_id: op,
            segment: Segment {
                index,
                count,
                start_ms: u64::from(index) * 1000,
                end_ms: u64::from(index + 1) * 1000,
            },
            outcome: if done {
                Outcome::Done { annotations: 3 }
            } else {
                Outcome::Failed {
                    error: "corrupt".into(),
                }
            },
        }
    }

    #[test]
    fn a_segment_reported_twice_counts_once_and_a_run_finishes_once() {
        let op = Uuid::new_v4();
        let mut t = Tracker::default();
        t.assign(&[0]);
        assert_eq!(t.observe(0, 0, &report(op, 0, 3, true)), Observed::New);
        assert_eq!(t.observe(0, 1, &report(op, 1, 3, true)), Observed::Known);
        t.observe(0, 2, &report(op, 1, 3, true));
        assert!(t.due().is_empty(), "two of three segments");
        assert_eq!(t.waiting(), vec![op]);
        t.observe(0, 3, &report(op, 2, 3, true));
        assert_eq!(t.due(), vec![(op, Action::Finish)]);
        assert!(t.waiting().is_empty(), "due, not waiting");
        t.settle(op);
        assert!(t.due().is_empty());
        t.observe(0, 4, &report(op, 2, 3, true));
        assert!(
            t.due().is_empty(),
            "a late duplicate does not finish it again"
        );
    }

    #[test]
    fn the_first_failure_cancels_and_later_reports_are_ignored() {
        let op = Uuid::new_v4();
        let mut t = Tracker::default();
        t.assign(&[0]);
        t.observe(0, 0, &report(op, 0, 2, true));
        t.observe(0, 1, &report(op, 1, 2, false));
        let due = t.due();
        assert_eq!(due.len(), 1);
        assert!(matches!(&due[0].1, Action::Cancel { reason } if reason.contains("segment 1")));
        t.settle(op);
        t.observe(0, 2, &report(op, 1, 2, true));
        assert!(t.due().is_empty());
    }

    #[test]
    fn commits_hold_at_the_oldest_unsettled_run_of_each_partition() {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut t = Tracker::default();
        t.assign(&[0, 1]);
        t.observe(0, 10, &report(a, 0, 2, true));
        t.observe(0, 11, &report(b, 0, 1, true));
        t.observe(0, 12, &report(a, 1, 2, true));
        t.observe(0, 13, &report(c, 0, 2, true));
        t.observe(1, 5, &report(Uuid::new_v4(), 0, 2, true));
        assert_eq!(t.commits(), vec![(0, 10), (1, 5)]);
        assert_eq!(t.commits(), vec![], "only positions that moved");
        // b settles first: a still holds the partition at its first report.
        t.settle(b);
        assert_eq!(t.commits(), vec![]);
        t.settle(a);
        assert_eq!(
            t.commits(),
            vec![(0, 13)],
            "c is the oldest unsettled run now"
        );
        t.settle(c);
        assert_eq!(t.commits(), vec![(0, 14)], "past the last report");
    }

    #[test]
    fn revoked_partitions_are_forgotten_and_reassigned_ones_start_over() {
        let op = Uuid::new_v4();
        let mut t = Tracker::default();
        t.assign(&[0]);
        t.observe(0, 0, &report(op, 0, 2, true));
        t.revoke(&[0]);
        assert_eq!(t.observe(0, 1, &report(op, 1, 2, true)), Observed::Ignored);
        assert!(t.due().is_empty());
        assert!(t.commits().is_empty());
        t.assign(&[0]);
        assert_eq!(t.observe(0, 0, &report(op, 0, 2, true)), Observed::New);
        t.observe(0, 1, &report(op, 1, 2, true));
        assert_eq!(t.due(), vec![(op, Action::Finish)]);
    }

    #[test]
    fn messages_round_trip_as_json() {
        let p = report(Uuid::new_v4(), 1, 2, false);
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains(r#""kind":"failed""#), "{json}");
        assert_eq!(serde_json::from_str::<Progress>(&json).unwrap(), p);
    }
}
