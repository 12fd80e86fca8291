//! The index pipeline: puts acknowledged upserts into the index in the background.
//!
//! An upsert is acknowledged once the store holds it durably, together with its
//! pending index work; indexing follows here. Producers then wait for one store
//! commit instead of an index commit, and the index commits many batches at once.
//! Four rules keep this honest:
//!
//! - **Bounded.** At most `max_in_flight` annotations are between store and index. An
//!   upsert reserves room before it writes, so a slow index slows producers down
//!   instead of growing a backlog in memory. The room is freed once the index has the
//!   batch (searchable): what it holds until durable is its own to bound.
//! - **Ordered where it matters.** A batch that rewrote ids of its own operation
//!   (`Upserted::replaced`) is indexed only after every batch of that operation the
//!   store committed before it (ordered by the operation version the store gave each
//!   batch), so an older copy of an annotation never lands after the newer one.
//!   Batches of new ids commute and go at once.
//! - **Observable.** [`IndexPipeline::settle`] waits until every batch of an operation
//!   acknowledged so far is searchable or handed to the retry queue: a finish settles
//!   first (a run becomes visible whole), and so does a producer's preview search. The
//!   index makes a batch durable later (one commit for many); until then its pending
//!   record stays, and [`IndexPipeline::searchable_work`] names it for the finish,
//!   which the store lets through for that work alone.
//! - **Apart from replays.** A replay of an operation's work (a finish flushing what
//!   failed, the retry queue) bars the operation's new batches and waits for those on
//!   their way, so the two paths never interleave on one operation.
//!
//! Nothing here is durable, on purpose: the store's pending records are. Work lost with
//! the process is replayed from them by the reconciler's sweep.

use crate::Error;
use crate::index::{Existing, Index};
use crate::model::Annotation;
use crate::queue::RetryQueue;
use crate::reconcile::{Reconciler, ReplayGate};
use crate::store::{IndexWork, Upserted};
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::warn;
use uuid::Uuid;

/// Where one batch is on its way from the store to the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The store write is under way.
    Writing,
    /// Stored; the operation's version after this batch orders it among its siblings.
    Stored { version: u64 },
    /// Searchable in the index, not yet durable there.
    Searchable,
    /// Indexed durably, queued for retry, or never stored.
    Done,
}

struct Slot {
    stage: watch::Sender<Stage>,
}

impl Stage {
    /// Searchable, or as far as it will get.
    fn settled(&self) -> bool {
        matches!(self, Stage::Searchable | Stage::Done)
    }
}

impl Slot {
    async fn reached(&self, done: impl FnMut(&Stage) -> bool) -> Stage {
        let mut rx = self.stage.subscribe();
        // The sender lives as long as the slot, which the caller holds: no error.
        rx.wait_for(done).await.map(|s| *s).unwrap_or(Stage::Done)
    }
}

struct Inner {
    /// Replays through `registry` (see [`Registry::exclude`]).
    reconciler: Reconciler,
    queue: Arc<dyn RetryQueue>,
    room: Arc<Semaphore>,
    max_in_flight: u32,
    registry: Arc<Registry>,
}

/// The batches on their way, by operation, and the operations whose work is being
/// replayed (no new batch of theirs may start meanwhile).
struct Registry {
    index: Arc<dyn Index>,
    ops: Mutex<Ops>,
}

#[derive(Default)]
struct Ops {
    /// The batches of each operation between reserve and done, oldest first.
    slots: HashMap<Uuid, Vec<Arc<Slot>>>,
    /// Replays under way per operation; a new batch waits until the count is 0.
    barred: HashMap<Uuid, watch::Sender<usize>>,
    /// Work searchable in the index whose pending record is still there, by operation.
    searchable: HashMap<Uuid, HashSet<Uuid>>,
}

/// An operation's replay in progress; dropping it lets the operation's batches go.
struct Exclusion {
    registry: Arc<Registry>,
    operation_id: Uuid,
}

impl Drop for Exclusion {
    fn drop(&mut self) {
        let mut ops = self.registry.ops.lock();
        if let Some(bar) = ops.barred.get(&self.operation_id) {
            bar.send_modify(|n| *n -= 1);
            if *bar.borrow() == 0 {
                ops.barred.remove(&self.operation_id);
            }
        }
    }
}

#[async_trait]
impl ReplayGate for Registry {
    /// Bars new batches of the operation, then waits for those on their way: a replay
    /// that re-reads the store and a fast path that indexes what it wrote cannot
    /// interleave (the later one could leave an older copy, or a second one).
    async fn exclude(self: Arc<Self>, operation_id: Uuid) -> Box<dyn Send> {
        {
            let mut ops = self.ops.lock();
            ops.barred
                .entry(operation_id)
                .or_insert_with(|| watch::Sender::new(0))
                .send_modify(|n| *n += 1);
        }
        let guard = Exclusion {
            registry: self.clone(),
            operation_id,
        };
        self.settle(operation_id).await;
        Box::new(guard)
    }

    fn searchable(&self, work: &IndexWork) {
        self.ops
            .lock()
            .searchable
            .entry(work.operation_id)
            .or_default()
            .insert(work.id);
    }

    fn settled(&self, work: &IndexWork) {
        let mut ops = self.ops.lock();
        if let Some(works) = ops.searchable.get_mut(&work.operation_id) {
            works.remove(&work.id);
            if works.is_empty() {
                ops.searchable.remove(&work.operation_id);
            }
        }
    }
}

/// How often a waiter repeats its refresh request while its batches are on the way (a
/// batch may reach the index after the commit the last request caused).
pub(crate) const NUDGE: Duration = Duration::from_millis(20);

impl Registry {
    /// Registers a new batch of `operation_id`, once no replay of it is under way.
    async fn register(&self, operation_id: Uuid) -> Arc<Slot> {
        loop {
            let mut bar = {
                let mut ops = self.ops.lock();
                match ops.barred.get(&operation_id) {
                    Some(bar) => bar.subscribe(),
                    None => {
                        let slot = Arc::new(Slot {
                            stage: watch::Sender::new(Stage::Writing),
                        });
                        ops.slots
                            .entry(operation_id)
                            .or_default()
                            .push(slot.clone());
                        return slot;
                    }
                }
            };
            let _ = bar.wait_for(|n| *n == 0).await;
        }
    }

    fn unregister(&self, operation_id: Uuid, slot: &Arc<Slot>) {
        slot.stage.send_replace(Stage::Done);
        let mut ops = self.ops.lock();
        if let Some(slots) = ops.slots.get_mut(&operation_id) {
            slots.retain(|s| !Arc::ptr_eq(s, slot));
            if slots.is_empty() {
                ops.slots.remove(&operation_id);
            }
        }
    }

    /// Waits until every batch of the operation reserved so far is searchable (or as
    /// far as it will get).
    async fn settle(&self, operation_id: Uuid) {
        for slot in self.slots_of(operation_id) {
            slot.reached(Stage::settled).await;
        }
    }

    /// Waits until `slot` is done (durable too), asking the index to commit meanwhile.
    async fn hurry(&self, slot: &Slot) {
        loop {
            self.index.refresh().await;
            if tokio::time::timeout(NUDGE, slot.reached(|s| *s == Stage::Done))
                .await
                .is_ok()
            {
                return;
            }
        }
    }

    fn slots_of(&self, operation_id: Uuid) -> Vec<Arc<Slot>> {
        self.ops
            .lock()
            .slots
            .get(&operation_id)
            .cloned()
            .unwrap_or_default()
    }
}

/// See the module comment. Cheap to clone.
#[derive(Clone)]
pub struct IndexPipeline {
    inner: Arc<Inner>,
}

/// Room for one batch, reserved before its store write. Dropped without
/// [`Ticket::stored`] (a failed or abandoned write), it frees the room at once.
pub struct Ticket {
    inner: Arc<Inner>,
    operation_id: Uuid,
    slot: Arc<Slot>,
    /// Freed once the batch is searchable.
    room: Option<OwnedSemaphorePermit>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.inner
            .registry
            .unregister(self.operation_id, &self.slot);
    }
}

impl IndexPipeline {
    pub fn new(
        reconciler: Reconciler,
        index: Arc<dyn Index>,
        queue: Arc<dyn RetryQueue>,
        max_in_flight: u32,
    ) -> Self {
        let max_in_flight = max_in_flight.max(1);
        let registry = Arc::new(Registry {
            index,
            ops: Mutex::new(Ops::default()),
        });
        IndexPipeline {
            inner: Arc::new(Inner {
                reconciler: reconciler.with_gate(registry.clone()),
                registry,
                queue,
                room: Arc::new(Semaphore::new(max_in_flight as usize)),
                max_in_flight,
            }),
        }
    }

    /// Waits for room for `annotations` more annotations (a batch larger than the whole
    /// room takes all of it) and registers the batch with its operation.
    pub async fn reserve(&self, operation_id: Uuid, annotations: usize) -> Result<Ticket, Error> {
        let want = u32::try_from(annotations)
            .unwrap_or(u32::MAX)
            .clamp(1, self.inner.max_in_flight);
        let room = self
            .inner
            .room
            .clone()
            .acquire_many_owned(want)
            .await
            .map_err(|_| Error::Unavailable {
                what: "index pipeline",
                detail: "closed".into(),
            })?;
        let slot = self.inner.registry.register(operation_id).await;
        Ok(Ticket {
            inner: self.inner.clone(),
            operation_id,
            slot,
            room: Some(room),
        })
    }

    /// Indexes a stored batch in the background; its ticket is done when that is.
    pub fn stored(&self, ticket: Ticket, upserted: Upserted, annotations: Vec<Annotation>) {
        let version = upserted.operation.version;
        ticket.slot.stage.send_replace(Stage::Stored { version });
        // Taken now, before this call returns: every batch committed before this one
        // reserved its slot before its own write, so it is here unless already done.
        let earlier: Vec<Arc<Slot>> = if upserted.replaced.is_empty() {
            Vec::new()
        } else {
            self.inner
                .registry
                .slots_of(ticket.operation_id)
                .into_iter()
                .filter(|s| !Arc::ptr_eq(s, &ticket.slot))
                .collect()
        };
        let inner = self.inner.clone();
        let mut ticket = ticket;
        tokio::spawn(async move {
            for slot in earlier {
                // Wait until the store has answered that batch; if it was committed
                // before this one, wait until the index has it too (the index applies
                // writes in the order they come). Waits only go to lower versions, so
                // they cannot form a cycle.
                let stage = slot.reached(|s| *s != Stage::Writing).await;
                if matches!(stage, Stage::Stored { version: v } if v < version) {
                    slot.reached(Stage::settled).await;
                }
            }
            let indexed = async {
                inner
                    .reconciler
                    .make_searchable(
                        &upserted.work,
                        &annotations,
                        Existing::Only(&upserted.replaced),
                        crate::index::batch_version(upserted.operation.version),
                    )
                    .await?;
                drop(annotations);
                ticket.room.take();
                ticket.slot.stage.send_replace(Stage::Searchable);
                inner.reconciler.make_durable(&upserted.work).await
            }
            .await;
            if let Err(e) = indexed {
                metrics::counter!("annostore_index_failures_total").increment(1);
                warn!(operation = %ticket.operation_id, error = %e, "indexing failed; queued for retry");
                if let Err(qe) = inner.queue.enqueue(&upserted.work).await {
                    warn!(error = %qe, "retry queue unavailable; the sweep will pick the work up");
                }
            }
            drop(ticket);
        });
    }

    /// Waits until every batch of `operation_id` reserved so far is searchable (or in
    /// the retry queue).
    pub async fn settle(&self, operation_id: Uuid) {
        self.inner.registry.settle(operation_id).await
    }

    /// The operation's work that is searchable in the index and not yet durable there
    /// (its pending records are still in the store).
    pub fn searchable_work(&self, operation_id: Uuid) -> Vec<Uuid> {
        self.inner
            .registry
            .ops
            .lock()
            .searchable
            .get(&operation_id)
            .map(|works| works.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Waits until every batch reserved so far, of any operation, is done: durable in
    /// the index, or in the retry queue.
    pub async fn settle_all(&self) {
        let slots: Vec<Arc<Slot>> = {
            let ops = self.inner.registry.ops.lock();
            ops.slots.values().flatten().cloned().collect()
        };
        for slot in slots {
            self.inner.registry.hurry(&slot).await;
        }
    }

    /// The reconciler whose replays keep out of this pipeline's way (use it for every
    /// replay in this process).
    pub fn reconciler(&self) -> &Reconciler {
        &self.inner.reconciler
    }

    /// Bars new batches of `operation_id` and waits for those on their way, until the
    /// returned guard is dropped (for replays that do not go through the reconciler).
    pub async fn exclude(&self, operation_id: Uuid) -> Box<dyn Send> {
        self.inner.registry.clone().exclude(operation_id).await
    }

    /// Annotations reserved and not yet done.
    pub fn in_flight(&self) -> usize {
        self.inner.max_in_flight as usize - self.inner.room.available_permits()
    }
}
