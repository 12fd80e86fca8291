//! Repair: rebuilding index entries from the store.

use super::Service;
use crate::error::Error;
use crate::index::{Existing, replay_version};
use crate::model::{Operation, OperationFilter, OperationStatus, ScanOrder};
use std::collections::HashMap;
use tracing::info;
use uuid::Uuid;

/// Operations, and annotations, read per step of a reindex.
const REINDEX_PAGE: usize = 1_000;

/// What a reindex rewrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Reindexed {
    pub operations: u64,
    pub annotations: u64,
}

impl Service {
    /// What a node does before serving, after opening its engines: an index that may
    /// lack what the store holds (just created, found in an older format, or a refill
    /// cut short: [`crate::index::Index::needs_rebuild`]) is refilled from the store,
    /// every STARTED and FINISHED run not collected, then recorded as rebuilt.
    pub async fn recover(&self) -> Result<(), Error> {
        self.replay_ended_work().await?;
        if self.engines.index.needs_rebuild() {
            info!("the index is new or was emptied: refilling it from the store");
            let done = self.reindex(None).await?;
            self.engines.index.rebuilt().await?;
            info!(
                operations = done.operations,
                annotations = done.annotations,
                "index refilled from the store"
            );
        }
        Ok(())
    }

    /// Replays the pending index work of runs that are no longer STARTED: an index that
    /// makes writes durable after it makes them searchable (tantivy) loses the last
    /// ones in a crash, while a finish counted them done (see
    /// [`crate::store::Store::finish_operation_with`]), so a finished run would show in
    /// part. STARTED runs' work is left to the sweep, a finish and a preview, which
    /// replay what they need.
    async fn replay_ended_work(&self) -> Result<(), Error> {
        let pending = self.engines.store.pending_work(None, usize::MAX).await?;
        let mut status: HashMap<Uuid, bool> = HashMap::new();
        let mut ended = Vec::new();
        for work in pending {
            let is_ended = match status.get(&work.operation_id) {
                Some(s) => *s,
                None => {
                    let op = self.engines.store.get_operation(work.operation_id).await?;
                    let s = op.is_some_and(|o| o.status != OperationStatus::Started);
                    status.insert(work.operation_id, s);
                    s
                }
            };
            if is_ended {
                ended.push(work);
            }
        }
        if !ended.is_empty() {
            info!(
                work = ended.len(),
                "replaying the index work of ended runs before serving"
            );
            self.reconciler().apply_all(&ended).await?;
        }
        Ok(())
    }

    /// Rebuilds the index entries of one operation, or of every STARTED and FINISHED
    /// one not garbage collected, from the store (after losing or damaging the index). Idempotent: each
    /// annotation replaces whatever the index holds under its id. An operation's new
    /// batches wait while its annotations are rewritten.
    pub async fn reindex(&self, operation_id: Option<Uuid>) -> Result<Reindexed, Error> {
        let mut done = Reindexed::default();
        if let Some(id) = operation_id {
            let op = self.operation(id).await?;
            done.annotations += self.reindex_operation(&op).await?;
            done.operations += 1;
            self.durable_now().await?;
            return Ok(done);
        }
        let mut before = None;
        loop {
            let ops = self
                .engines
                .store
                .list_operations(
                    &OperationFilter::default(),
                    ScanOrder::NewestFirst,
                    before,
                    REINDEX_PAGE,
                )
                .await?;
            for op in &ops {
                // A run being garbage collected loses its entries on purpose.
                if matches!(
                    op.status,
                    OperationStatus::Started | OperationStatus::Finished
                ) && op.collected.is_none()
                {
                    done.annotations += self.reindex_operation(op).await?;
                    done.operations += 1;
                }
            }
            match ops.last() {
                Some(last) if ops.len() == REINDEX_PAGE => before = Some(last.id),
                _ => {
                    self.durable_now().await?;
                    return Ok(done);
                }
            }
        }
    }

    /// Waits until everything the index serves survives a restart, asking it to commit
    /// now: no pending record covers what a reindex wrote.
    pub(super) async fn durable_now(&self) -> Result<(), Error> {
        self.engines.index.refresh().await;
        Ok(self.engines.index.sync().await?)
    }

    /// Rewrites one operation's annotations into the index from the store: searchable
    /// when this returns, durable after [`Service::durable_now`].
    pub(super) async fn reindex_operation(&self, op: &Operation) -> Result<u64, Error> {
        let _apart = self.pipeline.exclude(op.id).await;
        let mut after = None;
        let mut n = 0;
        loop {
            let page = self
                .engines
                .store
                .annotations_of_operation(op.id, after, REINDEX_PAGE)
                .await?;
            // `op` was read before its annotations: see `replay_version`.
            self.engines
                .index
                .upsert_versioned(&page, Existing::Unknown, replay_version(op.version))
                .await?;
            n += page.len() as u64;
            match page.last() {
                Some(last) if page.len() == REINDEX_PAGE => after = Some(last.id),
                _ => {
                    info!(operation = %op.id, annotations = n, "operation reindexed");
                    return Ok(n);
                }
            }
        }
    }
}
