//! The queue of index work to retry. Work goes here when the index failed it; the
//! reconciler receives it, applies it and acknowledges it. A received item stays
//! invisible for a backoff that doubles with every receive, and after too many receives
//! it moves to the dead letters. The pending record in the store stays the authority:
//! losing a message delays work, it never loses it.

use crate::store::IndexWork;
use async_trait::async_trait;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("retry queue unavailable: {0}")]
    Unavailable(String),
    #[error("corrupt retry queue message: {0}")]
    Corrupt(String),
    /// The work does not fit in one message of this queue (SQS takes 256 KiB).
    #[error("retry queue message too large: {bytes} bytes, the queue takes at most {limit}")]
    TooLarge { bytes: usize, limit: usize },
}

/// A received message.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub work: IndexWork,
    /// Opaque handle for [`RetryQueue::ack`].
    pub receipt: String,
    /// How many times it has been received, this time included.
    pub receive_count: u32,
}

#[async_trait]
pub trait RetryQueue: Send + Sync + 'static {
    async fn enqueue(&self, work: &IndexWork) -> Result<(), QueueError>;
    /// Up to `max` items that are due; each becomes invisible for its backoff.
    async fn receive(&self, max: usize) -> Result<Vec<Delivery>, QueueError>;
    /// Removes a received item for good.
    async fn ack(&self, receipt: &str) -> Result<(), QueueError>;
    /// Items waiting (due or backing off), not counting dead letters.
    async fn depth(&self) -> Result<u64, QueueError>;
    /// Items moved aside after too many receives.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<Delivery>, QueueError>;
    /// How many dead letters there are.
    async fn dead_letter_count(&self) -> Result<u64, QueueError>;
    /// One dead letter, by the id of its work.
    async fn dead_letter(&self, work_id: Uuid) -> Result<Option<Delivery>, QueueError>;
    /// Moves dead letters back into the queue, due now, their receive count reset:
    /// those of these work ids, or all when `None`. Returns how many moved.
    async fn redrive(&self, work_ids: Option<&[Uuid]>) -> Result<u64, QueueError>;
    /// Deletes dead letters: those of these work ids, or all when `None`. Returns how
    /// many went. Only messages go: the store's pending records stay the authority.
    async fn purge_dead_letters(&self, work_ids: Option<&[Uuid]>) -> Result<u64, QueueError>;
}
