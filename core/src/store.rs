//! The source of truth: the `Store` trait, and the records it keeps besides operations,
//! types and annotations (pending index work).
//!
//! Every method that changes an operation is atomic in the engine: the embedded store
//! writes one batch from its single writer; a distributed store uses compare-and-set.

use crate::lifecycle::{ActivationPlan, FinishPlan, LifecycleError};
use crate::model::{
    Activation, ActivationReason, Annotation, AnnotationType, Operation, OperationFilter,
    OperationKey, ScanOrder, StartOperation,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error("annotation {id} already belongs to operation {owner}")]
    IdConflict { id: Uuid, owner: Uuid },
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    #[error("annotation type {0} is already registered with a different definition")]
    TypeConflict(String),
    /// A finish found index work of the operation not yet done: flush it, then retry.
    #[error("operation {0} has index work pending")]
    PendingIndexWork(Uuid),
    #[error("store I/O failed: {0}")]
    Io(String),
    #[error("corrupt record in the store: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Whether a type registration created the version or found it already there.
#[derive(Debug, Clone, PartialEq)]
pub enum PutType {
    Created(AnnotationType),
    Unchanged(AnnotationType),
}

/// Index work, recorded in the store in the same atomic write as the data it is for,
/// and removed only once the index holds that data. Nothing depends on a queue message
/// alone: a crash or a lost message leaves this record, and the reconciler replays it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexWork {
    /// UUIDv7: time-ordered, so the age of the oldest pending work is cheap to read.
    pub id: Uuid,
    pub operation_id: Uuid,
    pub kind: IndexWorkKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum IndexWorkKind {
    /// Index (or re-index) these annotations of the operation.
    Upsert { annotation_ids: Vec<Uuid> },
}

impl IndexWork {
    pub fn created_at(&self) -> Option<OffsetDateTime> {
        let (secs, nanos) = self.id.get_timestamp()?.to_unix();
        OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(secs) * 1_000_000_000 + i128::from(nanos),
        )
        .ok()
    }
}

/// What an accepted upsert wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Upserted {
    /// The operation after the upsert (count grown, lease renewed).
    pub operation: Operation,
    /// The index work recorded for the batch.
    pub work: IndexWork,
    /// Ids of the batch the operation already held (rewritten, not new).
    pub replaced: Vec<Uuid>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Registers a type version; the same definition again is `Unchanged`, a different
    /// one is `TypeConflict`.
    async fn put_type(&self, def: AnnotationType) -> StoreResult<PutType>;
    async fn get_type(&self, name: &str, version: u32) -> StoreResult<Option<AnnotationType>>;
    async fn list_types(&self) -> StoreResult<Vec<AnnotationType>>;

    /// Creates a STARTED operation numbered one past the key's newest.
    async fn start_operation(
        &self,
        req: StartOperation,
        lease_seconds: u32,
        now: OffsetDateTime,
    ) -> StoreResult<Operation>;
    async fn get_operation(&self, id: Uuid) -> StoreResult<Option<Operation>>;
    /// Operations matching `filter`, in `order` (by id: newest or oldest first), past
    /// `cursor` in that order (exclusive) when given.
    async fn list_operations(
        &self,
        filter: &OperationFilter,
        order: ScanOrder,
        cursor: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<Operation>>;
    /// Every active operation (one per key that has a finished run).
    async fn active_operations(&self) -> StoreResult<Vec<Operation>>;

    /// Writes a batch into a STARTED operation, all or nothing, durably. Ids owned by
    /// another operation fail the batch with `IdConflict`; a lapsed lease is recorded as
    /// EXPIRED and fails it with a lifecycle error. Records the batch's index work.
    async fn upsert_annotations(
        &self,
        operation_id: Uuid,
        annotations: &[Annotation],
        now: OffsetDateTime,
    ) -> StoreResult<Upserted>;
    /// Finishes an operation (see [`crate::lifecycle::finish`]) and moves the key's active
    /// pointer, recording the plan's activation in the key's history. Fails with
    /// `PendingIndexWork` while index work of the operation remains, but for the work
    /// named in `searchable`: work the caller's index has made searchable and will make
    /// durable (its pending record goes then), checked in the same atomic step.
    async fn finish_operation_with(
        &self,
        id: Uuid,
        now: OffsetDateTime,
        searchable: &[Uuid],
    ) -> StoreResult<FinishPlan>;
    /// [`Store::finish_operation_with`], counting no work as searchable.
    async fn finish_operation(&self, id: Uuid, now: OffsetDateTime) -> StoreResult<FinishPlan> {
        self.finish_operation_with(id, now, &[]).await
    }
    /// Makes a FINISHED run its key's active one again, a rollback or a roll forward
    /// (see [`crate::lifecycle::activate`]): the run, the run it deactivates, the key's
    /// active pointer and the history entry, atomically against finishes, other
    /// activations and [`Store::begin_collection`].
    async fn activate_operation(
        &self,
        id: Uuid,
        reason: ActivationReason,
        actor: Option<String>,
        now: OffsetDateTime,
    ) -> StoreResult<ActivationPlan>;
    /// The key's activation history, newest first (highest sequence first).
    async fn activations(&self, key: &OperationKey, limit: usize) -> StoreResult<Vec<Activation>>;
    async fn cancel_operation(&self, id: Uuid, now: OffsetDateTime) -> StoreResult<Operation>;
    /// Records EXPIRED if the operation's lease has lapsed; returns it if it changed.
    async fn expire_operation(
        &self,
        id: Uuid,
        now: OffsetDateTime,
    ) -> StoreResult<Option<Operation>>;
    /// Ends a STARTED operation as EXPIRED now, whatever its lease
    /// ([`crate::lifecycle::force_expire`]); `None` when it was not STARTED.
    async fn force_expire(&self, id: Uuid, now: OffsetDateTime) -> StoreResult<Option<Operation>>;
    /// STARTED operations whose lease lapsed before `now`.
    async fn lapsed_operations(&self, now: OffsetDateTime, limit: usize) -> StoreResult<Vec<Uuid>>;

    /// Annotations by id, in the order asked (None where absent).
    async fn get_annotations(&self, ids: &[Uuid]) -> StoreResult<Vec<Option<Annotation>>>;
    /// Annotations of an operation in id order, after `after`.
    async fn annotations_of_operation(
        &self,
        operation_id: Uuid,
        after: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<Annotation>>;

    /// Marks the operation's garbage collection as begun
    /// ([`crate::lifecycle::begin_collection`]), atomically against activations: once
    /// this returns, the run can never become active, so its annotations may go.
    /// Beginning again returns it as it is.
    async fn begin_collection(&self, id: Uuid, now: OffsetDateTime) -> StoreResult<Operation>;
    /// Deletes these annotations of an operation whose collection has begun: their
    /// bodies, their ownership and the operation's listing of them. Ids the operation
    /// does not hold are skipped. Returns how many were deleted. Refused with
    /// `LifecycleError::CollectionNotBegun` otherwise.
    async fn delete_annotations(&self, operation_id: Uuid, ids: &[Uuid]) -> StoreResult<u64>;
    /// Records the collection as done, `freed` more annotations deleted
    /// ([`crate::lifecycle::end_collection`]); returns the operation as it stands.
    async fn end_collection(
        &self,
        id: Uuid,
        freed: u64,
        now: OffsetDateTime,
    ) -> StoreResult<Operation>;

    /// Pending index work, oldest first, of one operation or of all.
    async fn pending_work(
        &self,
        operation_id: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<IndexWork>>;
    /// The ids of an operation's pending work, in no particular order: what a preview
    /// compares with the work its index already serves.
    async fn pending_work_ids(&self, operation_id: Uuid) -> StoreResult<Vec<Uuid>> {
        Ok(self
            .pending_work(Some(operation_id), usize::MAX)
            .await?
            .into_iter()
            .map(|w| w.id)
            .collect())
    }
    /// Removes pending work once the index holds it. Unknown ids are ignored.
    async fn complete_work(&self, work: &[IndexWork]) -> StoreResult<()>;
}
