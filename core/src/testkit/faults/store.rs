//! A store whose writes fail on purpose: a share of the calls that change something
//! (types, starts, upserts, finishes, cancels, expiries, completed index work) fail with
//! `StoreError::Io`, either before reaching the store underneath (nothing written) or
//! after it applied the write (the write happened, its answer was lost: what a timeout
//! on a distributed store looks like). Every write of the trait is atomic, so neither
//! leaves a half-written batch; what the service makes of the ambiguous one is what the
//! tests look at. Reads pass through. It never answers in the store's place.

use super::Dice;
use crate::lifecycle::{ActivationPlan, FinishPlan};
use crate::model::{
    Activation, ActivationReason, Annotation, AnnotationType, Operation, OperationFilter,
    OperationKey, ScanOrder, StartOperation,
};
use crate::store::{IndexWork, PutType, Store, StoreError, StoreResult, Upserted};
use async_trait::async_trait;
use parking_lot::Mutex;
use std::sync::Arc;
use time::OffsetDateTime;
use uuid::Uuid;

/// When an injected write failure strikes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WriteFault {
    /// Before the write: nothing is written.
    #[default]
    Before,
    /// After the store applied the write: the caller sees an error all the same.
    After,
    /// Either, half and half.
    Either,
}

/// Which writes fail (see [`FaultyStore::inject`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreFaults {
    pub fail_percent: u64,
    pub when: WriteFault,
}

/// How many writes failed, by when.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreFaultCounts {
    pub before: u64,
    pub after: u64,
}

pub struct FaultyStore {
    inner: Arc<dyn Store>,
    faults: Mutex<StoreFaults>,
    dice: Dice,
    counts: Mutex<StoreFaultCounts>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn Store>) -> Arc<FaultyStore> {
        Arc::new(FaultyStore {
            inner,
            faults: Mutex::new(StoreFaults::default()),
            dice: Dice::new(0),
            counts: Mutex::new(StoreFaultCounts::default()),
        })
    }

    /// Injects `faults` into every write from now on, drawn from the sequence of `seed`.
    pub fn inject(&self, faults: StoreFaults, seed: u64) {
        self.dice.reseed(seed);
        *self.faults.lock() = faults;
    }

    /// Writes reach the store again, every one.
    pub fn heal(&self) {
        *self.faults.lock() = StoreFaults::default();
    }

    pub fn counts(&self) -> StoreFaultCounts {
        *self.counts.lock()
    }

    /// Whether this write fails, and when.
    fn draw(&self) -> Option<WriteFault> {
        let f = *self.faults.lock();
        if !self.dice.percent(f.fail_percent) {
            return None;
        }
        let when = match f.when {
            WriteFault::Either if self.dice.percent(50) => WriteFault::After,
            WriteFault::Either => WriteFault::Before,
            w => w,
        };
        let mut counts = self.counts.lock();
        match when {
            WriteFault::After => counts.after += 1,
            _ => counts.before += 1,
        }
        Some(when)
    }

    /// Runs one write unless it draws a failure before it; a failure after it replaces
    /// the store's answer (an error of the store's own stays).
    async fn write<T>(
        &self,
        call: impl std::future::Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        match self.draw() {
            None => call.await,
            Some(WriteFault::After) => {
                call.await?;
                Err(StoreError::Io(
                    "injected fault: the write was applied, its answer lost".into(),
                ))
            }
            Some(_) => Err(StoreError::Io(
                "injected fault: the write was not applied".into(),
            )),
        }
    }
}

#[async_trait]
impl Store for FaultyStore {
    async fn put_type(&self, def: AnnotationType) -> StoreResult<PutType> {
        self.write(self.inner.put_type(def)).await
    }

    async fn get_type(&self, name: &str, version: u32) -> StoreResult<Option<AnnotationType>> {
        self.inner.get_type(name, version).await
    }

    async fn list_types(&self) -> StoreResult<Vec<AnnotationType>> {
        self.inner.list_types().await
    }

    async fn start_operation(
        &self,
        req: StartOperation,
        lease_seconds: u32,
        now: OffsetDateTime,
    ) -> StoreResult<Operation> {
        self.write(self.inner.start_operation(req, lease_seconds, now))
            .await
    }

    async fn get_operation(&self, id: Uuid) -> StoreResult<Option<Operation>> {
        self.inner.get_operation(id).await
    }

    async fn list_operations(
        &self,
        filter: &OperationFilter,
        order: ScanOrder,
        cursor: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<Operation>> {
        self.inner
            .list_operations(filter, order, cursor, limit)
            .await
    }

    async fn active_operations(&self) -> StoreResult<Vec<Operation>> {
        self.inner.active_operations().await
    }

    async fn upsert_annotations(
        &self,
        operation_id: Uuid,
        annotations: &[Annotation],
        now: OffsetDateTime,
    ) -> StoreResult<Upserted> {
        self.write(
            self.inner
                .upsert_annotations(operation_id, annotations, now),
        )
        .await
    }

    async fn finish_operation_with(
        &self,
        id: Uuid,
        now: OffsetDateTime,
        searchable: &[Uuid],
    ) -> StoreResult<FinishPlan> {
        self.write(self.inner.finish_operation_with(id, now, searchable))
            .await
    }

    async fn cancel_operation(&self, id: Uuid, now: OffsetDateTime) -> StoreResult<Operation> {
        self.write(self.inner.cancel_operation(id, now)).await
    }

    async fn activate_operation(
        &self,
        id: Uuid,
        reason: ActivationReason,
        actor: Option<String>,
        now: OffsetDateTime,
    ) -> StoreResult<ActivationPlan> {
        self.write(self.inner.activate_operation(id, reason, actor, now))
            .await
    }

    async fn activations(&self, key: &OperationKey, limit: usize) -> StoreResult<Vec<Activation>> {
        self.inner.activations(key, limit).await
    }

    async fn force_expire(&self, id: Uuid, now: OffsetDateTime) -> StoreResult<Option<Operation>> {
        self.write(self.inner.force_expire(id, now)).await
    }

    async fn begin_collection(&self, id: Uuid, now: OffsetDateTime) -> StoreResult<Operation> {
        self.write(self.inner.begin_collection(id, now)).await
    }

    async fn delete_annotations(&self, operation_id: Uuid, ids: &[Uuid]) -> StoreResult<u64> {
        self.write(self.inner.delete_annotations(operation_id, ids))
            .await
    }

    async fn end_collection(
        &self,
        id: Uuid,
        freed: u64,
        now: OffsetDateTime,
    ) -> StoreResult<Operation> {
        self.write(self.inner.end_collection(id, freed, now)).await
    }

    async fn expire_operation(
        &self,
        id: Uuid,
        now: OffsetDateTime,
    ) -> StoreResult<Option<Operation>> {
        self.write(self.inner.expire_operation(id, now)).await
    }

    async fn lapsed_operations(&self, now: OffsetDateTime, limit: usize) -> StoreResult<Vec<Uuid>> {
        self.inner.lapsed_operations(now, limit).await
    }

    async fn get_annotations(&self, ids: &[Uuid]) -> StoreResult<Vec<Option<Annotation>>> {
        self.inner.get_annotations(ids).await
    }

    async fn annotations_of_operation(
        &self,
        operation_id: Uuid,
        after: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<Annotation>> {
        self.inner
            .annotations_of_operation(operation_id, after, limit)
            .await
    }

    async fn pending_work(
        &self,
        operation_id: Option<Uuid>,
        limit: usize,
    ) -> StoreResult<Vec<IndexWork>> {
        self.inner.pending_work(operation_id, limit).await
    }

    async fn complete_work(&self, work: &[IndexWork]) -> StoreResult<()> {
        self.write(self.inner.complete_work(work)).await
    }
}
