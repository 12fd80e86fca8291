//! The sweep re-enqueues every forgotten piece of work it can, past one the queue
//! refuses, and gives up only when the queue refuses everything.

use annostore_core::model::Annotation;
use annostore_core::queue::{Delivery, QueueError, RetryQueue};
use annostore_core::reconcile::Reconciler;
use annostore_core::store::IndexWork;
use annostore_core::testkit::store::{annotation, start_request};
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::Arc;
use time::OffsetDateTime;
use uuid::Uuid;

/// The embedded queue, refusing to enqueue the works named in `refuse`.
struct Refusing {
    inner: Arc<dyn RetryQueue>,
    refuse: Mutex<HashSet<Uuid>>,
}

#[async_trait]
impl RetryQueue for Refusing {
    async fn enqueue(&self, work: &IndexWork) -> Result<(), QueueError> {
        if self.refuse.lock().contains(&work.id) {
            return Err(QueueError::Unavailable("refused on purpose".into()));
        }
        self.inner.enqueue(work).await
    }
    async fn receive(&self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        self.inner.receive(max).await
    }
    async fn ack(&self, receipt: &str) -> Result<(), QueueError> {
        self.inner.ack(receipt).await
    }
    async fn depth(&self) -> Result<u64, QueueError> {
        self.inner.depth().await
    }
    async fn dead_letters(&self, limit: usize) -> Result<Vec<Delivery>, QueueError> {
        self.inner.dead_letters(limit).await
    }
    async fn dead_letter_count(&self) -> Result<u64, QueueError> {
        self.inner.dead_letter_count().await
    }
    async fn dead_letter(&self, work_id: Uuid) -> Result<Option<Delivery>, QueueError> {
        self.inner.dead_letter(work_id).await
    }
    async fn redrive(&self, work_ids: Option<&[Uuid]>) -> Result<u64, QueueError> {
        self.inner.redrive(work_ids).await
    }
    async fn purge_dead_letters(&self, work_ids: Option<&[Uuid]>) -> Result<u64, QueueError> {
        self.inner.purge_dead_letters(work_ids).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refused_work_does_not_stop_the_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let engines = annostore_embedded::open(dir.path()).unwrap();
    let queue = Arc::new(Refusing {
        inner: engines.queue.clone(),
        refuse: Mutex::new(HashSet::new()),
    });
    let reconciler = Reconciler::new(engines.store.clone(), engines.index.clone(), queue.clone());
    let now = OffsetDateTime::now_utc();
    let op = engines
        .store
        .start_operation(start_request("objects", 1, "p"), 3_600, now)
        .await
        .unwrap();
    // Four batches stored, none indexed or enqueued: forgotten work.
    let mut works = Vec::new();
    for _ in 0..4 {
        let batch: Vec<Annotation> = (0..2)
            .map(|_| annotation(&op, Uuid::new_v4(), "a"))
            .collect();
        let up = engines
            .store
            .upsert_annotations(op.id, &batch, now)
            .await
            .unwrap();
        works.push(up.work.id);
    }
    let later = OffsetDateTime::now_utc() + time::Duration::seconds(1);

    queue.refuse.lock().insert(works[0]);
    assert_eq!(reconciler.sweep(later, 100).await.unwrap(), 3);
    assert_eq!(engines.queue.depth().await.unwrap(), 3);

    // A queue that refuses everything ends the sweep with an error.
    queue.refuse.lock().extend(works.iter().copied());
    assert!(reconciler.sweep(later, 100).await.is_err());
    // The refused work is still pending in the store, for the next sweep.
    let pending = engines.store.pending_work(None, 10).await.unwrap();
    assert!(pending.iter().any(|w| w.id == works[0]));
}
