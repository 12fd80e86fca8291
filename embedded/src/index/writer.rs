//! The write side of the index: one committer thread takes the fresh documents in
//! order (see [`super::fresh`]), hands them to tantivy's writer (documents built,
//! vectors put into their graphs first), commits, reloads the reader, and swaps the new
//! searcher in with the committed entries left out of the fresh documents, in one step.
//! Callers only add to the fresh documents; they never wait for the writer.
//!
//! A commit holds everything added up to it: it waits for [`IndexOptions`]'s interval
//! after the first entry, unless enough documents or bytes wait, or someone asks for a
//! commit now ([`annostore_core::index::Index::refresh`]). A commit that fails is
//! rolled back and its entries handed over again by the next one: they stay in the
//! fresh documents, searchable, until a commit holds them.
//!
//! [`IndexOptions`]: super::IndexOptions

use super::fresh::Entry;
use super::{Inner, View, ids_query, knn, uuid_text};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tantivy::{IndexWriter, Term};
use tokio::sync::watch;
use tracing::{error, warn};

/// What the committer asks of the callers, and they of it.
#[derive(Default)]
pub(super) struct Requests {
    /// Someone asked for a commit now (see [`annostore_core::index::Index::refresh`]).
    pub(super) urgent: bool,
    pub(super) shutdown: bool,
}

/// How long the committer waits after a failed commit before it tries again.
const RETRY: Duration = Duration::from_millis(200);

impl Inner {
    /// Whether the fresh documents are enough for a commit without waiting longer.
    fn enough(&self, view: &View) -> bool {
        view.fresh.len() >= self.commit_docs || view.fresh.bytes() >= self.commit_bytes
    }

    /// Searches read the reloaded searcher, without the entries it now holds.
    fn publish_committed(&self, through: u64) {
        let _changing = self.view_lock.lock();
        let view = self.view.load();
        self.view.store(Arc::new(View {
            searcher: self.reader.searcher(),
            fresh: view.fresh.committed_through(through),
        }));
    }

    /// Hands one entry to the writer.
    fn hand(&self, writer: &IndexWriter, entry: &Entry) -> Result<(), String> {
        match entry {
            Entry::Add(chunk) => {
                let (ops, vectors) = self.documents(chunk.docs().iter());
                let keys: Vec<u64> = vectors.iter().map(|(k, _)| *k).collect();
                let refs: Vec<(u64, &[f32])> =
                    vectors.iter().map(|(k, v)| (*k, v.as_slice())).collect();
                // Into their graphs before their documents can be committed: a
                // committed document's vector is always in a graph.
                if let Err(e) = self.vectors.add(&refs) {
                    self.vectors.handed(keys, true);
                    return Err(e);
                }
                let rewrites = !chunk.rewrites().is_empty();
                let deleted = if rewrites {
                    // The delete takes an opstamp before the adds: it removes only the
                    // older copies.
                    let ids = chunk
                        .rewrites()
                        .iter()
                        .map(|id| ((*id >> 64) as u64, *id as u64))
                        .collect();
                    writer.delete_query(Box::new(ids_query(ids))).map(drop)
                } else {
                    Ok(())
                };
                let result = deleted.and_then(|()| writer.run(ops).map(drop));
                self.vectors.handed(keys, rewrites || result.is_err());
                result.map_err(|e| e.to_string())
            }
            Entry::DeleteOperation(_, op) => {
                let term = Term::from_field_text(self.fields.operation_id, uuid_text(op).as_ref());
                // The run's vectors leave the graphs after the commit (a dirty batch
                // makes the committer sweep every key no live document has).
                self.vectors.handed([], true);
                writer.delete_term(term);
                Ok(())
            }
        }
    }
}

pub(super) fn commit_loop(inner: &Inner, tx: watch::Sender<u64>) {
    // This thread, and any of tantivy's that were not named yet when the index opened.
    crate::priority::lower_background_threads();
    // Entries up to this one are committed; up to `handed`, with the writer.
    let mut committed = 0u64;
    let mut handed = 0u64;
    loop {
        {
            let mut req = inner.requests.lock();
            while !inner.view.load().fresh.has_entries() && !req.urgent && !req.shutdown {
                inner.wake.wait(&mut req);
            }
            let view = inner.view.load();
            if !view.fresh.has_entries() {
                req.urgent = false;
                if req.shutdown {
                    return;
                }
                continue;
            }
            // Hold the commit until it is worth it: many documents, a waiter in a hurry,
            // shutting down, or the interval since the first entry waiting.
            let deadline = Instant::now() + inner.commit_interval;
            while !req.urgent && !req.shutdown && !inner.enough(&inner.view.load()) {
                if inner.wake.wait_until(&mut req, deadline).timed_out() {
                    break;
                }
            }
            req.urgent = false;
        }
        let entries = inner.view.load().fresh.after(handed);
        let Some(last) = entries.last().map(Entry::seq) else {
            continue;
        };
        let mut writer = inner.writer.lock();
        let mut ok = true;
        for entry in &entries {
            if let Err(e) = inner.hand(&writer, entry) {
                error!(error = %e, "handing documents to the index writer failed; rolling back");
                ok = false;
                break;
            }
        }
        let closing = inner.vectors.close_batch();
        let ok = ok
            && match writer.commit() {
                Ok(_) => true,
                Err(e) => {
                    error!(error = %e, "index commit failed; rolling back");
                    false
                }
            };
        if !ok {
            if let Err(e) = writer.rollback() {
                error!(error = %e, "index rollback failed");
            }
            // The rollback started new indexing threads.
            crate::priority::lower_background_threads();
            drop(writer);
            inner
                .vectors
                .batch_done(closing, false, || Ok(Default::default()));
            // Everything since the last commit goes to the writer again, after a pause;
            // when shutting down, it is left to the store's pending records.
            handed = committed;
            let mut req = inner.requests.lock();
            if req.shutdown {
                return;
            }
            inner.wake.wait_for(&mut req, RETRY);
            continue;
        }
        drop(writer);
        handed = last;
        let reloaded = match inner.reader.reload() {
            Ok(()) => {
                inner.publish_committed(last);
                true
            }
            Err(e) => {
                // Durable, but not in a searcher: the entries stay fresh until a later
                // reload holds them.
                warn!(error = %e, "index reader reload failed");
                false
            }
        };
        inner.vectors.batch_done(closing, reloaded, || {
            knn::live_keys(&inner.reader.searcher()).map_err(|e| e.to_string())
        });
        committed = last;
        tx.send_replace(committed);
    }
}
