//! The index pipeline: puts acknowledged upserts into the index in the background.
//!
//! An upsert is acknowledged once the store holds it durably, together with its
//! pending index work; indexing follows here. Producers then wait for one store
//! commit instead of an index commit, and the index commits many batches at once.
//! Three rules keep this honest:
//!
//! - **Bounded.** At most `max_in_flight` annotations are between store and index. An
//!   upsert reserves room before it writes, so a slow index slows producers down
//!   instead of growing a backlog in memory.
//! - **Ordered where it matters.** A batch that rewrote ids of its own operation
//!   (`Upserted::replaced`) is indexed only after every batch of that operation the
//!   store committed before it (ordered by the operation version the store gave each
//!   batch), so an older copy of an annotation never lands after the newer one.
//!   Batches of new ids commute and go at once.
//! - **Observable.** [`IndexPipeline::settle`] waits until every batch of an operation
//!   acknowledged so far is indexed or handed to the retry queue: a finish settles
//!   first (a run becomes visible whole), and so does a producer's preview search.
//!
//! Nothing here is durable, on purpose: the store's pending records are. Work lost with
//! the process is replayed from them by the reconciler's sweep.

use crate::Error;
use crate::index::{Existing, Index};
use crate::model::Annotation;
use crate::queue::RetryQueue;
use crate::reconcile::Reconciler;
use crate::store::Upserted;
use parking_lot::Mutex;
use std::collections::HashMap;
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
    /// Indexed, queued for retry, or never stored.
    Done,
}

struct Slot {
    stage: watch::Sender<Stage>,
}

impl Slot {
    async fn reached(&self, done: impl FnMut(&Stage) -> bool) -> Stage {
        let mut rx = self.stage.subscribe();
        // The sender lives as long as the slot, which the caller holds: no error.
        rx.wait_for(done).await.map(|s| *s).unwrap_or(Stage::Done)
    }
}

struct Inner {
    reconciler: Reconciler,
    index: Arc<dyn Index>,
    queue: Arc<dyn RetryQueue>,
    room: Arc<Semaphore>,
    max_in_flight: u32,
    /// The batches of each operation between reserve and done, oldest first.
    ops: Mutex<HashMap<Uuid, Vec<Arc<Slot>>>>,
}

/// How often a waiter repeats its refresh request while its batches are on the way (a
/// batch may reach the index after the commit the last request caused).
const NUDGE: Duration = Duration::from_millis(20);

impl Inner {
    /// Waits until `slot` is done, asking the index to commit meanwhile.
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
    _room: OwnedSemaphorePermit,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.slot.stage.send_replace(Stage::Done);
        let mut ops = self.inner.ops.lock();
        if let Some(slots) = ops.get_mut(&self.operation_id) {
            slots.retain(|s| !Arc::ptr_eq(s, &self.slot));
            if slots.is_empty() {
                ops.remove(&self.operation_id);
            }
        }
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
        IndexPipeline {
            inner: Arc::new(Inner {
                reconciler,
                index,
                queue,
                room: Arc::new(Semaphore::new(max_in_flight as usize)),
                max_in_flight,
                ops: Mutex::new(HashMap::new()),
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
        let slot = Arc::new(Slot {
            stage: watch::Sender::new(Stage::Writing),
        });
        self.inner
            .ops
            .lock()
            .entry(operation_id)
            .or_default()
            .push(slot.clone());
        Ok(Ticket {
            inner: self.inner.clone(),
            operation_id,
            slot,
            _room: room,
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
                .slots_of(ticket.operation_id)
                .into_iter()
                .filter(|s| !Arc::ptr_eq(s, &ticket.slot))
                .collect()
        };
        let inner = self.inner.clone();
        tokio::spawn(async move {
            for slot in earlier {
                // Wait until the store has answered that batch; if it was committed
                // before this one, wait until it is indexed too. Waits only go to lower
                // versions, so they cannot form a cycle.
                let stage = slot.reached(|s| *s != Stage::Writing).await;
                if matches!(stage, Stage::Stored { version: v } if v < version) {
                    slot.reached(|s| *s == Stage::Done).await;
                }
            }
            let indexed = inner
                .reconciler
                .index(
                    &upserted.work,
                    &annotations,
                    Existing::Only(&upserted.replaced),
                )
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

    /// Waits until every batch of `operation_id` reserved so far is done.
    pub async fn settle(&self, operation_id: Uuid) {
        for slot in self.inner.slots_of(operation_id) {
            self.inner.hurry(&slot).await;
        }
    }

    /// Waits until every batch reserved so far, of any operation, is done.
    pub async fn settle_all(&self) {
        let slots: Vec<Arc<Slot>> = self.inner.ops.lock().values().flatten().cloned().collect();
        for slot in slots {
            self.inner.hurry(&slot).await;
        }
    }

    /// Annotations reserved and not yet done.
    pub fn in_flight(&self) -> usize {
        self.inner.max_in_flight as usize - self.inner.room.available_permits()
    }
}
