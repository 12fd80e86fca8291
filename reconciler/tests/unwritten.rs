//! Index work whose annotations the store does not hold yet (a distributed store records
//! the pending work before the bodies): while the operation is STARTED the work must not
//! be completed, or a finish would make the run visible without them.

use annostore_core::lifecycle::{ActivationPlan, FinishPlan};
use annostore_core::model::{
    Activation, ActivationReason, Annotation, AnnotationType, Operation, OperationFilter,
    OperationKey, ScanOrder, SearchRequest, StartOperation, TypeDefinition,
};
use annostore_core::service::{Engines, Service};
use annostore_core::store::{IndexWork, PutType, Store, StoreResult, Upserted};
use annostore_core::testkit::store::{annotation, start_request};
use annostore_core::validate::Limits;
use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;
use time::OffsetDateTime;
use uuid::Uuid;

/// The embedded store, except that `get_annotations` does not see the hidden ids yet.
struct Unwritten {
    inner: Arc<dyn Store>,
    hidden: Mutex<HashSet<Uuid>>,
}

#[async_trait]
impl Store for Unwritten {
    async fn put_type(&self, def: AnnotationType) -> StoreResult<PutType> {
        self.inner.put_type(def).await
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
        self.inner.start_operation(req, lease_seconds, now).await
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
    async fn activate_operation(
        &self,
        id: Uuid,
        reason: ActivationReason,
        actor: Option<String>,
        now: OffsetDateTime,
    ) -> StoreResult<ActivationPlan> {
        self.inner.activate_operation(id, reason, actor, now).await
    }
    async fn activations(&self, key: &OperationKey, limit: usize) -> StoreResult<Vec<Activation>> {
        self.inner.activations(key, limit).await
    }
    async fn force_expire(&self, id: Uuid, now: OffsetDateTime) -> StoreResult<Option<Operation>> {
        self.inner.force_expire(id, now).await
    }
    async fn begin_collection(&self, id: Uuid, now: OffsetDateTime) -> StoreResult<Operation> {
        self.inner.begin_collection(id, now).await
    }
    async fn delete_annotations(&self, operation_id: Uuid, ids: &[Uuid]) -> StoreResult<u64> {
        self.inner.delete_annotations(operation_id, ids).await
    }
    async fn end_collection(
        &self,
        id: Uuid,
        freed: u64,
        now: OffsetDateTime,
    ) -> StoreResult<Operation> {
        self.inner.end_collection(id, freed, now).await
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
        self.inner
            .upsert_annotations(operation_id, annotations, now)
            .await
    }
    async fn finish_operation_with(
        &self,
        id: Uuid,
        now: OffsetDateTime,
        searchable: &[Uuid],
    ) -> StoreResult<FinishPlan> {
        self.inner.finish_operation_with(id, now, searchable).await
    }
    async fn cancel_operation(&self, id: Uuid, now: OffsetDateTime) -> StoreResult<Operation> {
        self.inner.cancel_operation(id, now).await
    }
    async fn expire_operation(
        &self,
        id: Uuid,
        now: OffsetDateTime,
    ) -> StoreResult<Option<Operation>> {
        self.inner.expire_operation(id, now).await
    }
    async fn lapsed_operations(&self, now: OffsetDateTime, limit: usize) -> StoreResult<Vec<Uuid>> {
        self.inner.lapsed_operations(now, limit).await
    }
    async fn get_annotations(&self, ids: &[Uuid]) -> StoreResult<Vec<Option<Annotation>>> {
        let found = self.inner.get_annotations(ids).await?;
        let hidden = self.hidden.lock();
        Ok(found
            .into_iter()
            .map(|a| a.filter(|a| !hidden.contains(&a.id)))
            .collect())
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
        self.inner.complete_work(work).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finish_waits_for_annotations_still_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let engines = annostore_embedded::open(dir.path()).unwrap();
    let store = Arc::new(Unwritten {
        inner: engines.store.clone(),
        hidden: Mutex::new(HashSet::new()),
    });
    let engines = Engines {
        store: store.clone(),
        ..engines
    };
    let service = Service::new(
        engines.clone(),
        Limits::default(),
        Arc::new(annostore_core::clock::SystemClock),
    );
    let def = TypeDefinition {
        schema: json!({}),
        embedding_dim: None,
    };
    service.put_type("objects", 1, def).await.unwrap();
    let op = service
        .start(start_request("objects", 1, "p"))
        .await
        .unwrap();
    // Another node's upsert: its pending work is recorded, one body is not readable yet.
    let batch: Vec<Annotation> = (0..3)
        .map(|_| annotation(&op, Uuid::new_v4(), "a"))
        .collect();
    store.hidden.lock().insert(batch[2].id);
    store
        .upsert_annotations(op.id, &batch, OffsetDateTime::now_utc())
        .await
        .unwrap();

    let refused = service.finish(op.id).await;
    assert!(refused.is_err(), "finished with an annotation unwritten");
    assert_eq!(
        engines
            .store
            .pending_work(Some(op.id), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(engines.index.count_operation(op.id).await.unwrap(), 0);

    // The body lands: the finish goes through, with the whole run.
    store.hidden.lock().clear();
    service.finish(op.id).await.unwrap();
    let page = service.search(&SearchRequest::default()).await.unwrap();
    assert_eq!(page.annotations.len(), 3);
}
