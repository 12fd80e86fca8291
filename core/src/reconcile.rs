//! Replays index work until the index agrees with the store.
//!
//! Work reaches the index three ways: directly after an upsert (the fast path, in the
//! service), from the retry queue when that failed, and from the store's pending records
//! when a message was lost or a process died between store write and index write (the
//! sweep). Applying work is idempotent: it re-reads the annotations from the store and
//! upserts them by id.

use crate::Error;
use crate::index::{Existing, Index, replay_version};
use crate::model::{Annotation, Operation, OperationStatus};
use crate::pipeline::NUDGE;
use crate::queue::RetryQueue;
use crate::store::{IndexWork, IndexWorkKind, Store};
use async_trait::async_trait;
use std::sync::Arc;
use time::OffsetDateTime;
use tracing::{debug, warn};
use uuid::Uuid;

/// Enqueue failures in a row after which a sweep gives up (the queue is down).
const SWEEP_FAILURES_IN_A_ROW: usize = 3;

#[derive(Clone)]
pub struct Reconciler {
    store: Arc<dyn Store>,
    index: Arc<dyn Index>,
    queue: Arc<dyn RetryQueue>,
    gate: Option<Arc<dyn ReplayGate>>,
}

/// What keeps a replay of an operation's work apart from that operation's writes in
/// progress in this process (the service's index pipeline), and what hears which work
/// is searchable before it is durable (a finish counts that work as done).
#[async_trait]
pub trait ReplayGate: Send + Sync + 'static {
    /// Holds the operation's new writes back, and returns once those already under way
    /// are done, until the returned guard is dropped.
    async fn exclude(self: Arc<Self>, operation_id: Uuid) -> Box<dyn Send>;
    /// `work` is in the index and searchable; its pending record is still there.
    fn searchable(&self, work: &IndexWork);
    /// `work` is no longer searchable-but-pending: done, or failed.
    fn settled(&self, work: &IndexWork);
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub applied: usize,
    pub failed: usize,
    /// Deliveries received before (retries of earlier failures), whatever their outcome.
    pub retried: usize,
}

impl Reconciler {
    pub fn new(store: Arc<dyn Store>, index: Arc<dyn Index>, queue: Arc<dyn RetryQueue>) -> Self {
        Reconciler {
            store,
            index,
            queue,
            gate: None,
        }
    }

    /// The same reconciler, replaying each operation's work behind `gate`.
    pub fn with_gate(mut self, gate: Arc<dyn ReplayGate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Puts one piece of work into the index and clears its pending record.
    pub async fn apply(&self, work: &IndexWork) -> Result<(), Error> {
        let _apart = self.apart(work.operation_id).await;
        let (annotations, version) = self.bodies(work).await?;
        let indexing = self.index(work, &annotations, Existing::Unknown, version);
        hurried(self.index.as_ref(), indexing).await
    }

    /// Kept apart from the operation's writes in progress, while held.
    async fn apart(&self, operation_id: Uuid) -> Option<Box<dyn Send>> {
        match &self.gate {
            Some(gate) => Some(gate.clone().exclude(operation_id).await),
            None => None,
        }
    }

    /// The annotations a piece of work names, as the store holds them now, and the
    /// version to index them with.
    async fn bodies(&self, work: &IndexWork) -> Result<(Vec<Annotation>, u64), Error> {
        let IndexWorkKind::Upsert { annotation_ids } = &work.kind;
        // The version is read before the bodies: see `replay_version`.
        let op = self.store.get_operation(work.operation_id).await?;
        let version = replay_version(op.as_ref().map_or(0, |o| o.version));
        let found = self.store.get_annotations(annotation_ids).await?;
        if found.iter().any(Option::is_none) {
            check_missing(work, op.as_ref())?;
        }
        let annotations = found
            .into_iter()
            .flatten()
            .filter(|a| a.operation_id == work.operation_id)
            .collect();
        Ok((annotations, version))
    }

    /// Puts the annotations of `work` into the index, then clears the work's pending
    /// record once the index holds them durably: the one path from the store to the
    /// index, for the service's fast path after an upsert and for every replay.
    pub async fn index(
        &self,
        work: &IndexWork,
        annotations: &[Annotation],
        existing: Existing<'_>,
        version: u64,
    ) -> Result<(), Error> {
        self.make_searchable(work, annotations, existing, version)
            .await?;
        self.make_durable(work).await
    }

    /// The first half of [`Reconciler::index`]: the annotations are searchable when
    /// this returns, and the gate hears it.
    pub async fn make_searchable(
        &self,
        work: &IndexWork,
        annotations: &[Annotation],
        existing: Existing<'_>,
        version: u64,
    ) -> Result<(), Error> {
        self.index
            .upsert_versioned(annotations, existing, version)
            .await?;
        if let Some(gate) = &self.gate {
            gate.searchable(work);
        }
        Ok(())
    }

    /// The second half: waits until the index holds the work durably, then clears its
    /// pending record.
    pub async fn make_durable(&self, work: &IndexWork) -> Result<(), Error> {
        let done = async {
            self.index.sync().await?;
            self.store.complete_work(std::slice::from_ref(work)).await?;
            Ok(())
        }
        .await;
        if let Some(gate) = &self.gate {
            gate.settled(work);
        }
        done
    }

    /// Applies many pieces of work at once: each is made searchable in turn (by one
    /// operation's gate at a time), then one wait makes them all durable and their
    /// pending records go together. What a node replays before serving.
    pub async fn apply_all(&self, works: &[IndexWork]) -> Result<(), Error> {
        let mut searchable = Vec::with_capacity(works.len());
        let mut result = Ok(());
        for work in works {
            let _apart = self.apart(work.operation_id).await;
            let made = match self.bodies(work).await {
                Ok((annotations, version)) => {
                    self.make_searchable(work, &annotations, Existing::Unknown, version)
                        .await
                }
                Err(e) => Err(e),
            };
            match made {
                Ok(()) => searchable.push(work.clone()),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_ok() {
            result = async {
                hurried(self.index.as_ref(), self.index.sync()).await?;
                self.store.complete_work(&searchable).await?;
                Ok(())
            }
            .await;
        }
        if let Some(gate) = &self.gate {
            for work in &searchable {
                gate.settled(work);
            }
        }
        result
    }

    /// Applies every pending piece of work of one operation (what a finish waits for).
    pub async fn flush_operation(&self, operation_id: uuid::Uuid) -> Result<usize, Error> {
        let mut done = 0;
        loop {
            let pending = self.store.pending_work(Some(operation_id), 64).await?;
            if pending.is_empty() {
                return Ok(done);
            }
            for work in &pending {
                self.apply(work).await?;
                done += 1;
            }
        }
    }

    /// Receives due messages from the retry queue and applies them. A failed item is
    /// left unacknowledged: the queue makes it visible again after its backoff.
    pub async fn run_queue_once(&self, max: usize) -> Result<Pass, Error> {
        let deliveries = self.queue.receive(max).await.map_err(queue_err)?;
        let mut pass = Pass::default();
        for d in deliveries {
            if d.receive_count > 1 {
                pass.retried += 1;
            }
            match self.apply(&d.work).await {
                Ok(()) => {
                    pass.applied += 1;
                    if let Err(e) = self.queue.ack(&d.receipt).await {
                        warn!(error = %e, "ack failed; the message will be applied again");
                    }
                }
                Err(e) => {
                    pass.failed += 1;
                    debug!(work = %d.work.id, attempt = d.receive_count, error = %e, "index work failed; backing off");
                }
            }
        }
        Ok(pass)
    }

    /// Re-enqueues pending records older than `cutoff` (anti-entropy for lost messages
    /// and for processes that died between the store write and the enqueue).
    pub async fn sweep(&self, cutoff: OffsetDateTime, limit: usize) -> Result<usize, Error> {
        let pending = self.store.pending_work(None, limit).await?;
        let mut queued = 0;
        let mut failed_in_a_row = 0;
        for work in pending {
            if work.created_at().is_some_and(|t| t > cutoff) {
                continue;
            }
            match self.queue.enqueue(&work).await {
                Ok(()) => {
                    queued += 1;
                    failed_in_a_row = 0;
                }
                // One piece of work the queue refuses (too large for it, say) must not
                // keep the sweep from the rest; a queue that refuses everything ends it.
                Err(e) if failed_in_a_row + 1 < SWEEP_FAILURES_IN_A_ROW => {
                    failed_in_a_row += 1;
                    warn!(work = %work.id, operation = %work.operation_id, error = %e, "could not re-enqueue pending work; it stays pending");
                }
                Err(e) => return Err(queue_err(e)),
            }
        }
        Ok(queued)
    }
}

/// Drives a replay's index write to its end while asking the index to commit every
/// [`NUDGE`]. The pipeline does this for the fast path (`Registry::hurry`); a replay
/// has no pipeline, and without it each replayed batch waited for the index's own
/// commit interval (tantivy: 500 ms), one after the other: after a crash with N
/// batches pending, a finish took N × 0.5 s.
async fn hurried<T>(index: &dyn Index, write: impl std::future::Future<Output = T>) -> T {
    tokio::pin!(write);
    loop {
        tokio::select! {
            biased;
            out = &mut write => return out,
            () = tokio::time::sleep(NUDGE) => index.refresh().await,
        }
    }
}

/// Work naming annotations the store does not hold. While the operation is STARTED,
/// an upsert may still be writing them (a distributed store records the pending work
/// before the bodies): completing the work now would let a finish make the run
/// visible without them, so the work waits (a finish answers 503; the queue retries).
/// Once the operation has ended, nothing will write them: there is nothing to index.
fn check_missing(work: &IndexWork, op: Option<&Operation>) -> Result<(), Error> {
    match op {
        Some(op) if op.status == OperationStatus::Started => Err(Error::Unavailable {
            what: "store",
            detail: format!(
                "annotations of index work {} are not all written yet (operation {} is still being written)",
                work.id, work.operation_id
            ),
        }),
        _ => Ok(()),
    }
}

fn queue_err(e: crate::queue::QueueError) -> Error {
    Error::Unavailable {
        what: "retry queue",
        detail: e.to_string(),
    }
}
