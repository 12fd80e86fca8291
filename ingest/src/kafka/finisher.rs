//! The finisher: follows the progress topic, finishes a run once all its segments are
//! done or cancels it on the first failure, and commits only past settled runs.

use super::*;

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

pub(super) async fn run_finisher(
    api: ApiClient,
    settings: WorkerSettings,
    mut stop: watch::Receiver<bool>,
) {
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
