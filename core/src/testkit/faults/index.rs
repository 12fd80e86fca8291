//! A fault-injecting layer over a real index. It holds upserts at a gate, fails a share
//! of calls (upserts only, or every call: searches, kNN, aggregations, counts and
//! refreshes too), hangs a share of calls past a deadline and then fails them as timed
//! out (an upsert may have reached the index first), and applies part of an upsert
//! before failing it (a partial bulk failure). For testing how the service, its index
//! pipeline and the reconciler cope; it never answers in the engine's place.

use super::Dice;
use crate::index::{
    AggregateQuery, Existing, Hit, Index, IndexError, IndexQuery, KnnHit, KnnQuery,
};
use crate::model::Annotation;
use crate::query::Aggregates;
use async_trait::async_trait;
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

/// Faults drawn for every call from a seeded sequence (see [`FaultyIndex::inject`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct IndexFaults {
    /// Percent of all calls that fail at once, without reaching the index. A failed
    /// refresh is not passed on (a refresh has no error to answer).
    pub fail_percent: u64,
    /// Percent of calls that hang for `hang_for`, then fail as timed out. A hung upsert
    /// reaches the index first when `hang_after_write` (the write lands, its answer
    /// does not); otherwise it never does.
    pub hang_percent: u64,
    pub hang_for: Duration,
    pub hang_after_write: bool,
    /// Percent of upserts that write a leading part of their batch (at least one
    /// annotation, never all of it) to the index, then fail.
    pub partial_percent: u64,
}

/// How many calls each kind of fault hit so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexFaultCounts {
    pub failed: u64,
    pub hung: u64,
    pub partial: u64,
}

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
    faults: Mutex<IndexFaults>,
    dice: Dice,
    counts: Mutex<IndexFaultCounts>,
    passed: Mutex<Vec<Vec<Uuid>>>,
    versions: Mutex<Vec<Option<u64>>>,
}

/// What one call draws.
enum Fault {
    None,
    Fail,
    Hang,
    Partial,
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
            faults: Mutex::new(IndexFaults::default()),
            dice: Dice::new(0),
            counts: Mutex::new(IndexFaultCounts::default()),
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

    /// Injects `faults` into every call from now on, drawn from the sequence of `seed`.
    pub fn inject(&self, faults: IndexFaults, seed: u64) {
        self.dice.reseed(seed);
        *self.faults.lock() = faults;
    }

    /// Ends every fault: injected ones, `fail_percent`, `fail_next` and the gate.
    /// Calls already hanging still end as timed out.
    pub fn heal(&self) {
        *self.faults.lock() = IndexFaults::default();
        self.fail_percent(0);
        self.fail_next(0);
        self.release();
    }

    /// How many calls each injected fault hit so far.
    pub fn counts(&self) -> IndexFaultCounts {
        *self.counts.lock()
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

    /// The fault this call draws; partial failures only for upserts of two or more.
    fn draw(&self, partial_allowed: bool) -> Fault {
        let f = *self.faults.lock();
        let mut counts = self.counts.lock();
        if self.dice.percent(f.fail_percent) {
            counts.failed += 1;
            Fault::Fail
        } else if self.dice.percent(f.hang_percent) {
            counts.hung += 1;
            Fault::Hang
        } else if partial_allowed && self.dice.percent(f.partial_percent) {
            counts.partial += 1;
            Fault::Partial
        } else {
            Fault::None
        }
    }

    async fn hang(&self) -> IndexError {
        let hang_for = self.faults.lock().hang_for;
        tokio::time::sleep(hang_for).await;
        IndexError::Unavailable(format!("injected fault: no answer within {hang_for:?}"))
    }

    /// Runs a read-only call unless it draws a fault.
    async fn read<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, IndexError>>,
    ) -> Result<T, IndexError> {
        match self.draw(false) {
            Fault::Fail => Err(injected()),
            Fault::Hang => Err(self.hang().await),
            _ => call.await,
        }
    }

    /// The version each upsert passed to the index carried (None: a plain `upsert`), in
    /// the order they were passed.
    pub fn versions(&self) -> Vec<Option<u64>> {
        self.versions.lock().clone()
    }

    /// The ids of each upsert passed to the index (of a partial failure, the part
    /// passed), in the order they were passed.
    pub fn passed(&self) -> Vec<Vec<Uuid>> {
        self.passed.lock().clone()
    }
}

fn injected() -> IndexError {
    IndexError::Unavailable("injected fault".into())
}

#[async_trait]
impl Index for FaultyIndex {
    async fn upsert(
        &self,
        annotations: &[Annotation],
        existing: Existing<'_>,
    ) -> Result<(), IndexError> {
        self.write(annotations, existing, None).await
    }

    async fn upsert_versioned(
        &self,
        annotations: &[Annotation],
        existing: Existing<'_>,
        version: u64,
    ) -> Result<(), IndexError> {
        self.write(annotations, existing, Some(version)).await
    }

    async fn search(&self, query: &IndexQuery) -> Result<Vec<Hit>, IndexError> {
        self.read(self.inner.search(query)).await
    }

    async fn knn(&self, query: &KnnQuery) -> Result<Vec<KnnHit>, IndexError> {
        self.read(self.inner.knn(query)).await
    }

    async fn aggregate(&self, query: &AggregateQuery) -> Result<Aggregates, IndexError> {
        self.read(self.inner.aggregate(query)).await
    }

    async fn count_operation(&self, operation_id: Uuid) -> Result<u64, IndexError> {
        self.read(self.inner.count_operation(operation_id)).await
    }

    async fn sync(&self) -> Result<(), IndexError> {
        self.read(self.inner.sync()).await
    }

    async fn delete_operation(&self, operation_id: Uuid) -> Result<u64, IndexError> {
        self.read(self.inner.delete_operation(operation_id)).await
    }

    async fn refresh(&self) {
        let _ = self
            .read(async {
                self.inner.refresh().await;
                Ok(())
            })
            .await;
    }

    fn needs_rebuild(&self) -> bool {
        self.inner.needs_rebuild()
    }

    async fn rebuilt(&self) -> Result<(), IndexError> {
        self.read(self.inner.rebuilt()).await
    }
}

impl FaultyIndex {
    /// One upsert: held while held, then failed, hung, half-applied or passed through
    /// (and recorded).
    async fn write(
        &self,
        annotations: &[Annotation],
        existing: Existing<'_>,
        version: Option<u64>,
    ) -> Result<(), IndexError> {
        self.admit().await?;
        let upsert = |part: &[Annotation]| {
            self.passed.lock().push(part.iter().map(|a| a.id).collect());
            self.versions.lock().push(version);
            let part = part.to_vec();
            async move {
                match version {
                    Some(v) => self.inner.upsert_versioned(&part, existing, v).await,
                    None => self.inner.upsert(&part, existing).await,
                }
            }
        };
        match self.draw(annotations.len() > 1) {
            Fault::None => upsert(annotations).await,
            Fault::Fail => Err(injected()),
            Fault::Hang => {
                if self.faults.lock().hang_after_write {
                    upsert(annotations).await?;
                }
                Err(self.hang().await)
            }
            Fault::Partial => {
                let keep = 1 + self.dice.below(annotations.len() as u64 - 1) as usize;
                upsert(&annotations[..keep]).await?;
                Err(IndexError::Unavailable(format!(
                    "injected fault: {} of {} documents of the bulk request failed",
                    annotations.len() - keep,
                    annotations.len()
                )))
            }
        }
    }

    /// Holds a write while held, then fails it (`fail_next`, `fail_percent`) or lets it on.
    async fn admit(&self) -> Result<(), IndexError> {
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
            return Err(injected());
        }
        Ok(())
    }
}
