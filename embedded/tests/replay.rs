//! A replay asks the index to commit its writes: it does not wait for the index to
//! commit on its own (tantivy every 500 ms; after a crash with many batches pending,
//! a finish replayed them one commit interval each).

use annostore_core::index::{
    AggregateQuery, Existing, Hit, Index, IndexError, IndexQuery, KnnHit, KnnQuery,
};
use annostore_core::model::Annotation;
use annostore_core::query::Aggregates;
use annostore_core::reconcile::Reconciler;
use annostore_core::testkit::store::{annotation, start_request};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::watch;
use uuid::Uuid;

/// A real index whose writes answer only after someone asks it to commit (as an index
/// with no commit interval of its own would).
struct CommitsWhenAsked {
    inner: Arc<dyn Index>,
    asked: watch::Sender<u64>,
}

#[async_trait]
impl Index for CommitsWhenAsked {
    async fn upsert(
        &self,
        annotations: &[Annotation],
        existing: Existing<'_>,
    ) -> Result<(), IndexError> {
        let mut asked = self.asked.subscribe();
        asked.mark_unchanged();
        self.inner.upsert(annotations, existing).await?;
        let _ = asked.changed().await;
        Ok(())
    }
    async fn search(&self, query: &IndexQuery) -> Result<Vec<Hit>, IndexError> {
        self.inner.search(query).await
    }
    async fn knn(&self, query: &KnnQuery) -> Result<Vec<KnnHit>, IndexError> {
        self.inner.knn(query).await
    }
    async fn aggregate(&self, query: &AggregateQuery) -> Result<Aggregates, IndexError> {
        self.inner.aggregate(query).await
    }
    async fn count_operation(&self, operation_id: Uuid) -> Result<u64, IndexError> {
        self.inner.count_operation(operation_id).await
    }
    async fn delete_operation(&self, operation_id: Uuid) -> Result<u64, IndexError> {
        self.inner.delete_operation(operation_id).await
    }
    async fn refresh(&self) {
        self.asked.send_modify(|n| *n += 1);
        self.inner.refresh().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_asks_the_index_to_commit() {
    let dir = tempfile::tempdir().unwrap();
    let engines = annostore_embedded::open(dir.path()).unwrap();
    let index = Arc::new(CommitsWhenAsked {
        inner: engines.index.clone(),
        asked: watch::Sender::new(0),
    });
    let reconciler = Reconciler::new(engines.store.clone(), index.clone(), engines.queue.clone());
    let now = OffsetDateTime::now_utc();
    let op = engines
        .store
        .start_operation(start_request("objects", 1, "p"), 3_600, now)
        .await
        .unwrap();
    // Three batches stored and never indexed: what a crash leaves pending.
    for _ in 0..3 {
        let batch: Vec<Annotation> = (0..2)
            .map(|_| annotation(&op, Uuid::new_v4(), "a"))
            .collect();
        engines
            .store
            .upsert_annotations(op.id, &batch, now)
            .await
            .unwrap();
    }
    // Without the replay's own requests to commit, this never ends.
    let replayed = tokio::time::timeout(Duration::from_secs(60), reconciler.flush_operation(op.id))
        .await
        .expect("the replay asked the index to commit")
        .unwrap();
    assert_eq!(replayed, 3);
    assert_eq!(index.count_operation(op.id).await.unwrap(), 6);
    assert!(
        engines
            .store
            .pending_work(Some(op.id), 10)
            .await
            .unwrap()
            .is_empty()
    );
}
