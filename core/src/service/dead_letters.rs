//! The retry queue's dead letters, for an operator: index work the reconciler gave up
//! on after too many attempts. List and inspect them (with whether the store still
//! holds the work as pending), redrive them once the index is healthy, or purge them.
//! The store's pending record stays the authority: purging a message never drops index
//! work, except work of a run that is gone or garbage collected, which nothing needs.

use super::Service;
use crate::error::Error;
use crate::model::Operation;
use crate::queue::{Delivery, QueueError};
use crate::store::IndexWorkKind;
use serde::Serialize;
use time::OffsetDateTime;
use tracing::info;
use uuid::Uuid;

/// At most this many dead letters in one listing (and in one purge of all).
pub const MAX_DEAD_LETTERS: usize = 10_000;
/// Pending records read per operation when telling whether a dead letter's work is
/// still pending.
const PENDING_PEEK: usize = 10_000;

/// A dead letter, as an operator sees it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub work_id: Uuid,
    pub operation_id: Uuid,
    /// Annotations the work names.
    pub annotations: usize,
    /// Times the reconciler received it before giving up.
    pub receive_count: u32,
    #[serde(with = "time::serde::rfc3339::option")]
    pub created_at: Option<OffsetDateTime>,
    /// Whether the store still records the work as pending (not yet in the index).
    pub pending: bool,
    /// The operation as it stands (absent when the store no longer has it).
    pub operation: Option<Operation>,
    /// Ids of the annotations, when inspecting one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotation_ids: Option<Vec<Uuid>>,
}

/// What a purge did.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Purged {
    /// Messages deleted.
    pub purged: u64,
    /// Pending records dropped with them (their run is gone or garbage collected).
    pub pending_dropped: u64,
}

impl Service {
    /// The dead letters (at most `limit`) and how many there are.
    pub async fn dead_letters(&self, limit: usize) -> Result<(Vec<DeadLetter>, u64), Error> {
        let limit = limit.clamp(1, MAX_DEAD_LETTERS);
        let queue = &self.engines.queue;
        let total = queue.dead_letter_count().await.map_err(unavailable)?;
        let mut out = Vec::new();
        for d in queue.dead_letters(limit).await.map_err(unavailable)? {
            out.push(self.describe(d, false).await?);
        }
        Ok((out, total))
    }

    /// One dead letter, with the ids of its annotations.
    pub async fn dead_letter(&self, work_id: Uuid) -> Result<DeadLetter, Error> {
        let found = self
            .engines
            .queue
            .dead_letter(work_id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| Error::NotFound {
                what: "dead letter",
                id: work_id.to_string(),
            })?;
        self.describe(found, true).await
    }

    /// Moves dead letters back into the retry queue (these, or all): the reconciler
    /// retries them at once. Returns how many moved.
    pub async fn redrive_dead_letters(&self, ids: Option<&[Uuid]>) -> Result<u64, Error> {
        let moved = self.engines.queue.redrive(ids).await.map_err(unavailable)?;
        info!(moved, "dead letters redriven");
        Ok(moved)
    }

    /// Deletes dead letters (these, or all). The pending records of their work stay,
    /// so the reconciler's sweep enqueues the work again later, unless its run is gone
    /// or garbage collected: then the record goes too.
    pub async fn purge_dead_letters(&self, ids: Option<&[Uuid]>) -> Result<Purged, Error> {
        let queue = &self.engines.queue;
        let letters = match ids {
            Some(ids) => {
                let mut found = Vec::new();
                for id in ids {
                    found.extend(queue.dead_letter(*id).await.map_err(unavailable)?);
                }
                found
            }
            None => queue
                .dead_letters(MAX_DEAD_LETTERS)
                .await
                .map_err(unavailable)?,
        };
        let mut purged = Purged::default();
        let mut obsolete = Vec::new();
        for d in &letters {
            let op = self
                .engines
                .store
                .get_operation(d.work.operation_id)
                .await?;
            if op.is_none_or(|o| o.collected.is_some()) {
                obsolete.push(d.work.clone());
            }
        }
        let found: Vec<Uuid> = letters.iter().map(|d| d.work.id).collect();
        purged.purged = queue
            .purge_dead_letters(ids.map(|_| found.as_slice()))
            .await
            .map_err(unavailable)?;
        if !obsolete.is_empty() {
            self.engines.store.complete_work(&obsolete).await?;
            purged.pending_dropped = obsolete.len() as u64;
        }
        info!(
            purged = purged.purged,
            pending_dropped = purged.pending_dropped,
            "dead letters purged"
        );
        Ok(purged)
    }

    async fn describe(&self, d: Delivery, with_ids: bool) -> Result<DeadLetter, Error> {
        let store = &self.engines.store;
        let operation = store.get_operation(d.work.operation_id).await?;
        let pending = store
            .pending_work(Some(d.work.operation_id), PENDING_PEEK)
            .await?
            .iter()
            .any(|w| w.id == d.work.id);
        let IndexWorkKind::Upsert { annotation_ids } = &d.work.kind;
        Ok(DeadLetter {
            work_id: d.work.id,
            operation_id: d.work.operation_id,
            annotations: annotation_ids.len(),
            receive_count: d.receive_count,
            created_at: d.work.created_at(),
            pending,
            operation,
            annotation_ids: with_ids.then(|| annotation_ids.clone()),
        })
    }
}

fn unavailable(e: QueueError) -> Error {
    Error::Unavailable {
        what: "retry queue",
        detail: e.to_string(),
    }
}
