//! The worker: consumes segment tasks, computes and upserts them, reports progress, and
//! commits each task only after that (see the module comment of `kafka`).

use super::finisher::run_finisher;
use super::*;

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
    let decoder_threads = segment::decoder_threads(jobs);
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

impl Handled {
    /// A task whose report was delivered is settled; one whose report was not (the
    /// worker is stopping) is left.
    fn after_report(delivered: bool) -> Handled {
        if delivered {
            Handled::Commit
        } else {
            Handled::Leave
        }
    }
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
        return Ok(Handled::after_report(sent));
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
            return Ok(Handled::after_report(sent));
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
    Ok(Handled::after_report(sent))
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
    Ok(Handled::after_report(sent))
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
