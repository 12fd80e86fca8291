//! The write side of the index: callers hand documents to the writer in batches, and
//! one committer thread commits every pending batch at once (group commit, see the
//! module comment of [`super`]) and tells the waiters how their batch ended.

use super::{FreshChange, Inner, View, knn, unavailable};
use annostore_core::index::IndexError;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tantivy::IndexWriter;
use tantivy::indexer::UserOperation;
use tantivy::query::doc_predicate_query::DocPredicateQuery;
use tokio::sync::watch;
use tracing::{error, warn};

/// What the committer has done, as the waiters see it.
#[derive(Debug, Clone, Default)]
pub(super) struct Committed {
    /// Every batch up to this one has been committed or rolled back.
    pub(super) done: u64,
    /// The most recent batches that failed (rolled back or not made searchable).
    failed: Arc<VecDeque<u64>>,
}

/// How many failed batches the committer remembers; a waiter older than all of them
/// whose outcome was forgotten is answered with an error, conservatively.
const FAILURES_KEPT: usize = 256;

impl Committed {
    /// The outcome of `batch`, once known.
    pub(super) fn outcome(&self, batch: u64) -> Option<Result<(), IndexError>> {
        if self.done < batch {
            return None;
        }
        let forgotten = self.failed.len() >= FAILURES_KEPT
            && self.failed.front().is_some_and(|&oldest| batch < oldest);
        if forgotten || self.failed.contains(&batch) {
            Some(Err(IndexError::Unavailable(
                "the index commit failed; retry".into(),
            )))
        } else {
            Some(Ok(()))
        }
    }
}

#[derive(Default)]
pub(super) struct Requests {
    /// The newest batch someone waits for.
    pub(super) requested: u64,
    /// Someone asked for a commit now (see [`annostore_core::index::Index::refresh`]).
    pub(super) urgent: bool,
    pub(super) shutdown: bool,
}

impl Requests {
    pub(super) fn requested_batch(&mut self, batch: u64) {
        self.requested = self.requested.max(batch);
    }
}

/// How long the committer waits for callers that are building or handing over
/// documents, so that they join the commit instead of waiting for the next one.
const LINGER: Duration = Duration::from_millis(5);

/// A caller between starting an upsert and handing its documents to the writer.
/// Dropping it (also on cancellation) tells the committer.
pub(super) struct Adding<'a>(&'a Inner);

impl<'a> Adding<'a> {
    pub(super) fn start(inner: &'a Inner) -> Adding<'a> {
        inner.adding.fetch_add(1, Ordering::AcqRel);
        Adding(inner)
    }
}

impl Drop for Adding<'_> {
    fn drop(&mut self) {
        self.0.adding.fetch_sub(1, Ordering::AcqRel);
        // Under the lock, so the committer cannot miss it between test and wait.
        let _req = self.0.requests.lock();
        self.0.wake.notify_all();
    }
}

impl Inner {
    /// Puts the documents' vectors into their graphs (before any document can become
    /// searchable), then adds the operations to the open batch.
    pub(super) fn add_with_vectors(
        &self,
        delete: Option<DocPredicateQuery>,
        ops: Vec<UserOperation>,
        vectors: Vec<(u64, Vec<f32>)>,
        fresh: FreshChange,
    ) -> Result<u64, IndexError> {
        let keys: Vec<u64> = vectors.iter().map(|(k, _)| *k).collect();
        let refs: Vec<(u64, &[f32])> = vectors.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        if let Err(e) = self.vectors.add(&refs) {
            // Never handed to the writer: the next sweep removes them.
            self.vectors.handed(keys, true);
            return Err(IndexError::Unavailable(e));
        }
        let writer = self.writer.lock();
        self.add_locked(&writer, delete, ops, keys, fresh)
    }

    /// Adds operations to the open batch, and changes the fresh documents to match
    /// (under the writer lock, so the committer sees them in the batch they joined);
    /// returns the batch.
    pub(super) fn add_locked(
        &self,
        writer: &IndexWriter,
        delete: Option<DocPredicateQuery>,
        ops: Vec<UserOperation>,
        vector_keys: Vec<u64>,
        fresh: FreshChange,
    ) -> Result<u64, IndexError> {
        let deletes =
            delete.is_some() || ops.iter().any(|op| matches!(op, UserOperation::Delete(_)));
        let batch = self.open_batch.load(Ordering::Acquire);
        // The delete takes an opstamp before the adds, so it removes only older copies.
        let deleted = match delete {
            Some(q) => writer.delete_query(Box::new(q)).map(|_| ()),
            None => Ok(()),
        };
        let docs = ops.len();
        let bytes = fresh.bytes();
        let result = deleted.and_then(|()| writer.run(ops).map(|_| ()));
        self.vectors.handed(vector_keys, deletes || result.is_err());
        match result {
            Ok(_) => {
                self.change_fresh(batch, fresh);
                self.last_added.fetch_max(batch, Ordering::AcqRel);
                let many =
                    self.uncommitted.fetch_add(docs, Ordering::AcqRel) + docs >= self.commit_docs;
                let large = self.uncommitted_bytes.fetch_add(bytes, Ordering::AcqRel) + bytes
                    >= self.commit_bytes;
                if many || large {
                    let _req = self.requests.lock();
                    self.wake.notify_all();
                }
                Ok(batch)
            }
            Err(e) => {
                // A dead writer recovers through the committer's rollback: ask for a commit.
                self.requests.lock().requested_batch(batch);
                self.wake.notify_all();
                Err(unavailable(e))
            }
        }
    }
}

impl Inner {
    fn change_fresh(&self, batch: u64, change: FreshChange) {
        let _changing = self.view_lock.lock();
        let view = self.view.load();
        let fresh = match change {
            FreshChange::Add(docs, rewrites) => view.fresh.with(batch, docs, rewrites),
            FreshChange::RemoveOperation(op) => view.fresh.without_operation(op),
            FreshChange::None => return,
        };
        self.view.store(Arc::new(View {
            searcher: view.searcher.clone(),
            fresh,
        }));
    }

    /// Searches read the reloaded searcher, without the documents it now holds.
    fn publish_committed(&self, batch: u64) {
        let _changing = self.view_lock.lock();
        let view = self.view.load();
        self.view.store(Arc::new(View {
            searcher: self.reader.searcher(),
            fresh: view.fresh.after_batch(batch),
        }));
    }

    /// After a rollback: every fresh document is handed to the writer again (the
    /// rollback dropped them all; none was added since, the writer lock being held),
    /// in the order they came, into the open batch, so they stay searchable and reach
    /// a later commit.
    fn readd_fresh(&self, writer: &IndexWriter) {
        let chunks = self.view.load().fresh.up_to_batch(u64::MAX);
        let mut moved = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            match self.readd_chunk(writer, &chunk) {
                Ok(batch) => moved.push(chunk.in_batch(batch)),
                Err(e) => {
                    error!(error = %e, "cannot hand fresh documents to the writer again after a failed commit; the retry queue replays them")
                }
            }
        }
        let _changing = self.view_lock.lock();
        let view = self.view.load();
        self.view.store(Arc::new(View {
            searcher: view.searcher.clone(),
            fresh: view.fresh.replacing(moved),
        }));
    }
}

pub(super) fn commit_loop(inner: &Inner, tx: watch::Sender<Committed>) {
    let mut done = 0u64;
    let mut failed: VecDeque<u64> = VecDeque::new();
    loop {
        {
            let mut req = inner.requests.lock();
            while req.requested <= done && !req.shutdown {
                inner.wake.wait(&mut req);
            }
            if req.requested <= done && req.shutdown {
                return;
            }
            // Hold the commit until it is worth it: many documents, a waiter in a hurry,
            // or the interval since the first write waiting.
            let deadline = Instant::now() + inner.commit_interval;
            while !req.urgent
                && !req.shutdown
                && inner.uncommitted.load(Ordering::Acquire) < inner.commit_docs
                && inner.uncommitted_bytes.load(Ordering::Acquire) < inner.commit_bytes
            {
                if inner.wake.wait_until(&mut req, deadline).timed_out() {
                    break;
                }
            }
            req.urgent = false;
            // Group commit: let the callers already under way join this commit.
            let deadline = Instant::now() + LINGER;
            while inner.adding.load(Ordering::Acquire) > 0 && !req.shutdown {
                if inner.wake.wait_until(&mut req, deadline).timed_out() {
                    break;
                }
            }
        }
        let mut writer = inner.writer.lock();
        let batch = inner.open_batch.fetch_add(1, Ordering::AcqRel);
        let closing = inner.vectors.close_batch();
        inner.uncommitted.store(0, Ordering::Release);
        inner.uncommitted_bytes.store(0, Ordering::Release);
        let ok = match writer.commit() {
            Ok(_) => true,
            Err(e) => {
                error!(error = %e, batch, "index commit failed; rolling back");
                if let Err(e) = writer.rollback() {
                    error!(error = %e, "index rollback failed");
                }
                inner.readd_fresh(&writer);
                false
            }
        };
        drop(writer);
        let ok = ok
            && match inner.reader.reload() {
                Ok(()) => {
                    inner.publish_committed(batch);
                    true
                }
                Err(e) => {
                    // The fresh documents stay until a later reload holds them.
                    warn!(error = %e, "index reader reload failed");
                    false
                }
            };
        inner.vectors.batch_done(closing, ok, || {
            knn::live_keys(&inner.reader.searcher()).map_err(|e| e.to_string())
        });
        done = batch;
        if !ok {
            if failed.len() >= FAILURES_KEPT {
                failed.pop_front();
            }
            failed.push_back(batch);
        }
        let failed_now = Arc::new(failed.clone());
        tx.send_replace(Committed {
            done,
            failed: failed_now,
        });
    }
}
