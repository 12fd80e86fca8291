//! A retry queue that can be taken down: while down, every call fails with
//! `Unavailable` without reaching the queue underneath. For testing that index work
//! whose retry could not be enqueued still converges from the store's pending records
//! (the sweep) once the queue is back; it never answers in the queue's place.

use crate::queue::{Delivery, QueueError, RetryQueue};
use crate::store::IndexWork;
use async_trait::async_trait;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use uuid::Uuid;

pub struct FaultyQueue {
    inner: Arc<dyn RetryQueue>,
    down: AtomicBool,
    /// Calls refused while down.
    refused: AtomicU64,
}

impl FaultyQueue {
    pub fn new(inner: Arc<dyn RetryQueue>) -> Arc<FaultyQueue> {
        Arc::new(FaultyQueue {
            inner,
            down: AtomicBool::new(false),
            refused: AtomicU64::new(0),
        })
    }

    /// Every call fails from now on, until [`FaultyQueue::up`].
    pub fn down(&self) {
        self.down.store(true, Ordering::SeqCst);
    }

    /// Calls reach the queue again.
    pub fn up(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    /// How many calls were refused while down.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    fn check(&self) -> Result<(), QueueError> {
        if self.down.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(QueueError::Unavailable("injected fault: queue down".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl RetryQueue for FaultyQueue {
    async fn enqueue(&self, work: &IndexWork) -> Result<(), QueueError> {
        self.check()?;
        self.inner.enqueue(work).await
    }

    async fn receive(&self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        self.check()?;
        self.inner.receive(max).await
    }

    async fn ack(&self, receipt: &str) -> Result<(), QueueError> {
        self.check()?;
        self.inner.ack(receipt).await
    }

    async fn depth(&self) -> Result<u64, QueueError> {
        self.check()?;
        self.inner.depth().await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<Delivery>, QueueError> {
        self.check()?;
        self.inner.dead_letters(limit).await
    }

    async fn dead_letter_count(&self) -> Result<u64, QueueError> {
        self.check()?;
        self.inner.dead_letter_count().await
    }

    async fn dead_letter(&self, work_id: Uuid) -> Result<Option<Delivery>, QueueError> {
        self.check()?;
        self.inner.dead_letter(work_id).await
    }

    async fn redrive(&self, work_ids: Option<&[Uuid]>) -> Result<u64, QueueError> {
        self.check()?;
        self.inner.redrive(work_ids).await
    }

    async fn purge_dead_letters(&self, work_ids: Option<&[Uuid]>) -> Result<u64, QueueError> {
        self.check()?;
        self.inner.purge_dead_letters(work_ids).await
    }
}
