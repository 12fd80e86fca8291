//! A fault-injecting layer over a real index: it fails or holds upserts on purpose and
//! passes everything else through to the engine underneath. For testing how the
//! service, its index pipeline and the reconciler cope; it never answers in the
//! engine's place.

use crate::index::{
    AggregateQuery, Existing, Hit, Index, IndexError, IndexQuery, KnnHit, KnnQuery,
};
use crate::model::Annotation;
use crate::query::Aggregates;
use async_trait::async_trait;
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tokio::sync::watch;
use uuid::Uuid;

pub struct FaultyIndex {
    inner: Arc<dyn Index>,
    /// While false, upserts wait at the gate.
    open: watch::Sender<bool>,
    /// Upserts waiting at the gate now.
    waiting: watch::Sender<usize>,
    fail_next: AtomicUsize,
    /// Percent of upserts to fail, drawn from a fixed sequence (repeatable runs).
    fail_percent: AtomicU64,
    draws: Mutex<u64>,
    passed: Mutex<Vec<Vec<Uuid>>>,
    versions: Mutex<Vec<Option<u64>>>,
}

impl FaultyIndex {
    pub fn new(inner: Arc<dyn Index>) -> Arc<FaultyIndex> {
        Arc::new(FaultyIndex {
            inner,
            open: watch::Sender::new(true),
            waiting: watch::Sender::new(0),
            fail_next: AtomicUsize::new(0),
            fail_percent: AtomicU64::new(0),
            draws: Mutex::new(0x9E37_79B9_7F4A_7C15),
            passed: Mutex::new(Vec::new()),
            versions: Mutex::new(Vec::new()),
        })
    }

    /// Holds every upsert from now on at the gate.
    pub fn hold(&self) {
        self.open.send_replace(false);
    }

    /// Lets the held upserts, and all later ones, through.
    pub fn release(&self) {
        self.open.send_replace(true);
    }

    /// Waits until `n` upserts wait at the gate.
    pub async fn held(&self, n: usize) {
        let mut rx = self.waiting.subscribe();
        let _ = rx.wait_for(|w| *w >= n).await;
    }

    /// Fails the next `n` upserts with `Unavailable`, without touching the index.
    pub fn fail_next(&self, n: usize) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Fails `percent` of the upserts from now on, chosen by a fixed pseudo-random sequence.
    pub fn fail_percent(&self, percent: u64) {
        self.fail_percent.store(percent.min(100), Ordering::SeqCst);
    }

    fn draw_failure(&self) -> bool {
        let percent = self.fail_percent.load(Ordering::SeqCst);
        if percent == 0 {
            return false;
        }
        let mut x = self.draws.lock();
        // xorshift64: enough to spread failures; a fixed seed keeps runs comparable.
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x % 100 < percent
    }

    /// The version each upsert passed to the index carried (None: a plain `upsert`), in
    /// the order they were passed.
    pub fn versions(&self) -> Vec<Option<u64>> {
        self.versions.lock().clone()
    }

    /// The ids of each upsert passed to the index, in the order they were passed.
    pub fn passed(&self) -> Vec<Vec<Uuid>> {
        self.passed.lock().clone()
    }
}

#[async_trait]
impl Index for FaultyIndex {
    async fn upsert(
        &self,
        annotations: &[Annotation],
        existing: Existing<'_>,
    ) -> Result<(), IndexError> {
        self.admit(annotations, None).await?;
        self.inner.upsert(annotations, existing).await
    }

    async fn upsert_versioned(
        &self,
        annotations: &[Annotation],
        existing: Existing<'_>,
        version: u64,
    ) -> Result<(), IndexError> {
        self.admit(annotations, Some(version)).await?;
        self.inner
            .upsert_versioned(annotations, existing, version)
            .await
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

    async fn refresh(&self) {
        self.inner.refresh().await
    }
}

impl FaultyIndex {
    /// Holds a write while held, then fails it or lets it through (and records it).
    async fn admit(
        &self,
        annotations: &[Annotation],
        version: Option<u64>,
    ) -> Result<(), IndexError> {
        let mut open = self.open.subscribe();
        if !*open.borrow() {
            self.waiting.send_modify(|w| *w += 1);
            let _ = open.wait_for(|o| *o).await;
            self.waiting.send_modify(|w| *w -= 1);
        }
        let failing = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
            || self.draw_failure();
        if failing {
            return Err(IndexError::Unavailable("injected fault".into()));
        }
        self.passed
            .lock()
            .push(annotations.iter().map(|a| a.id).collect());
        self.versions.lock().push(version);
        Ok(())
    }
}
