//! A deadline on every index call the service makes. An index that stops answering
//! (a hung connection, a stalled node) would otherwise hold a search forever, and an
//! upsert's indexing too: its batch would keep its room in the pipeline and every finish
//! of its operation would wait on it. Past the deadline a call fails as `Unavailable`
//! (the API's 503); a write that timed out stays pending in the store, and the retry
//! queue or the sweep replays it (applying work is idempotent).

use crate::index::{
    AggregateQuery, Existing, Hit, Index, IndexError, IndexQuery, KnnHit, KnnQuery,
};
use crate::model::Annotation;
use crate::query::Aggregates;
use async_trait::async_trait;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use uuid::Uuid;

/// How long an index call may take by default before it fails (see [`Deadline`]).
pub const DEFAULT_INDEX_TIMEOUT: Duration = Duration::from_secs(30);

/// The index behind a deadline on every call.
pub(crate) struct Deadline {
    inner: Arc<dyn Index>,
    millis: AtomicU64,
}

impl Deadline {
    pub(crate) fn new(inner: Arc<dyn Index>, timeout: Duration) -> Deadline {
        let d = Deadline {
            inner,
            millis: AtomicU64::new(0),
        };
        d.set(timeout);
        d
    }

    pub(crate) fn set(&self, timeout: Duration) {
        let ms = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.millis.store(ms, Ordering::Relaxed);
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.millis.load(Ordering::Relaxed))
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, IndexError>>,
    ) -> Result<T, IndexError> {
        let timeout = self.timeout();
        match tokio::time::timeout(timeout, call).await {
            Ok(answer) => answer,
            Err(_) => {
                metrics::counter!("annostore_index_timeouts_total").increment(1);
                Err(IndexError::Unavailable(format!(
                    "no answer within {timeout:?}"
                )))
            }
        }
    }
}

#[async_trait]
impl Index for Deadline {
    async fn upsert(
        &self,
        annotations: &[Annotation],
        existing: Existing<'_>,
    ) -> Result<(), IndexError> {
        self.bounded(self.inner.upsert(annotations, existing)).await
    }

    async fn upsert_versioned(
        &self,
        annotations: &[Annotation],
        existing: Existing<'_>,
        version: u64,
    ) -> Result<(), IndexError> {
        self.bounded(self.inner.upsert_versioned(annotations, existing, version))
            .await
    }

    async fn search(&self, query: &IndexQuery) -> Result<Vec<Hit>, IndexError> {
        self.bounded(self.inner.search(query)).await
    }

    async fn knn(&self, query: &KnnQuery) -> Result<Vec<KnnHit>, IndexError> {
        self.bounded(self.inner.knn(query)).await
    }

    async fn aggregate(&self, query: &AggregateQuery) -> Result<Aggregates, IndexError> {
        self.bounded(self.inner.aggregate(query)).await
    }

    async fn count_operation(&self, operation_id: Uuid) -> Result<u64, IndexError> {
        self.bounded(self.inner.count_operation(operation_id)).await
    }

    async fn sync(&self) -> Result<(), IndexError> {
        self.bounded(self.inner.sync()).await
    }

    async fn delete_operation(&self, operation_id: Uuid) -> Result<u64, IndexError> {
        self.bounded(self.inner.delete_operation(operation_id))
            .await
    }

    async fn refresh(&self) {
        // A hint: a refresh that does not answer is given up, like one that failed.
        let _ = tokio::time::timeout(self.timeout(), self.inner.refresh()).await;
    }

    fn needs_rebuild(&self) -> bool {
        self.inner.needs_rebuild()
    }

    async fn rebuilt(&self) -> Result<(), IndexError> {
        self.bounded(self.inner.rebuilt()).await
    }
}
