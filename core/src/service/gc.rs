//! Retention and garbage collection. A run that can no longer be visible keeps its
//! annotations for a while (a superseded FINISHED run: `superseded`, 7 days by default,
//! so a rollback can bring it back; a CANCELLED or EXPIRED run: `ended`, 1 day), then
//! they are deleted from index and store.
//!
//! One pass walks every operation, oldest first, and collects the runs past their
//! retention in bounded batches, up to a budget of annotations per pass. Each run's
//! collection is recorded in the store before anything is deleted
//! (`Store::begin_collection`, atomic against activations), so a collected run can never
//! become active again and a collection that a crash or the budget interrupted resumes
//! on the next pass. Index first, then store, then the index again (a replay that read
//! bodies before they went may have put documents back), then the end is recorded.
//! The active run of a key is never collected: `begin_collection` refuses it.

use super::admin::SCAN_PAGE;
use super::{Service, key_stripe};
use crate::error::Error;
use crate::lifecycle;
use crate::model::{Operation, OperationFilter, OperationStatus, ScanOrder};
use crate::store::StoreError;
use serde::Serialize;
use std::time::Duration;
use time::OffsetDateTime;
use tracing::{info, warn};

/// How long runs that can no longer be visible keep their annotations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// A FINISHED run that is not active (superseded, or rolled back from).
    pub superseded: Duration,
    /// A CANCELLED or EXPIRED run.
    pub ended: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            superseded: Duration::from_secs(7 * 24 * 3600),
            ended: Duration::from_secs(24 * 3600),
        }
    }
}

/// How one pass runs.
#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    pub retention: Retention,
    /// Annotations deleted at most in one pass; the rest waits for the next.
    pub max_annotations: usize,
    /// Annotations deleted per store call.
    pub batch: usize,
    /// Report what would go, delete nothing.
    pub dry_run: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            retention: Retention::default(),
            max_annotations: 100_000,
            batch: 1_000,
            dry_run: false,
        }
    }
}

/// What a pass found and freed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// Operations read.
    pub examined: u64,
    /// Runs past their retention, or with a collection to resume.
    pub eligible: u64,
    /// Runs whose collection this pass completed.
    pub collected: u64,
    /// Runs begun and not yet done (the budget ran out): the next pass resumes them.
    pub in_progress: u64,
    /// Runs that became active (a rollback) before their collection could begin.
    pub skipped: u64,
    /// Annotations deleted from the store (a dry run: that would be).
    pub annotations_freed: u64,
    /// Documents deleted from the index.
    pub index_documents_removed: u64,
}

/// Pending records dropped per store call when a run's collection begins.
const PENDING_PAGE: usize = 1_000;

impl Service {
    /// One garbage collection pass (see the module comment).
    pub async fn collect_garbage(&self, opts: &GcOptions) -> Result<GcReport, Error> {
        let now = self.clock.now();
        let mut report = GcReport {
            dry_run: opts.dry_run,
            started_at: Some(now),
            ..GcReport::default()
        };
        let mut budget = opts.max_annotations;
        let batch = opts.batch.max(1);
        let mut cursor = None;
        'pages: loop {
            let page = self
                .engines
                .store
                .list_operations(
                    &OperationFilter::default(),
                    ScanOrder::OldestFirst,
                    cursor,
                    SCAN_PAGE,
                )
                .await?;
            let full = page.len() == SCAN_PAGE;
            cursor = page.last().map(|o| o.id);
            for op in &page {
                report.examined += 1;
                if !due(op, &opts.retention, now) {
                    continue;
                }
                report.eligible += 1;
                if opts.dry_run {
                    report.annotations_freed += op.annotation_count;
                    continue;
                }
                if budget == 0 {
                    report.in_progress += u64::from(op.collected.is_some());
                    continue;
                }
                self.collect_run(op, &mut budget, batch, &mut report)
                    .await?;
            }
            if !full {
                break 'pages;
            }
        }
        report.finished_at = Some(self.clock.now());
        if !opts.dry_run {
            metrics::counter!("annostore_gc_annotations_freed_total")
                .increment(report.annotations_freed);
            metrics::counter!("annostore_gc_operations_collected_total")
                .increment(report.collected);
            if report.eligible > 0 {
                info!(
                    collected = report.collected,
                    in_progress = report.in_progress,
                    freed = report.annotations_freed,
                    index_removed = report.index_documents_removed,
                    "garbage collection pass"
                );
            }
            *self.last_gc.lock() = Some(report.clone());
        }
        Ok(report)
    }

    /// The report of the last pass that was not a dry run, if any ran in this process.
    pub fn last_gc(&self) -> Option<GcReport> {
        self.last_gc.lock().clone()
    }

    async fn collect_run(
        &self,
        op: &Operation,
        budget: &mut usize,
        batch: usize,
        report: &mut GcReport,
    ) -> Result<(), Error> {
        let store = &self.engines.store;
        // Under the key's lock, as activations are: on this node a rollback and the
        // start of a collection never interleave, whatever the store's own guard (a
        // compare-and-set, which kassandra, for one, does not enforce).
        let begun = {
            let _key = self.key_locks[key_stripe(&op.key())].lock().await;
            store.begin_collection(op.id, self.clock.now()).await
        };
        let op = match begun {
            Ok(op) => op,
            Err(StoreError::Lifecycle(e)) => {
                // Made active (or otherwise changed) since it was read: it stays.
                info!(operation = %op.id, reason = %e, "not collected");
                report.skipped += 1;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        self.engines.cache.put(std::slice::from_ref(&op));
        // Replays and reindexes of this run wait until the pass is done with it.
        let _apart = self.pipeline.exclude(op.id).await;
        loop {
            let pending = store.pending_work(Some(op.id), PENDING_PAGE).await?;
            if pending.is_empty() {
                break;
            }
            store.complete_work(&pending).await?;
        }
        let index = &self.engines.index;
        report.index_documents_removed += index.delete_operation(op.id).await?;
        loop {
            if *budget == 0 {
                report.in_progress += 1;
                return Ok(());
            }
            let page = store
                .annotations_of_operation(op.id, None, batch.min(*budget))
                .await?;
            if page.is_empty() {
                break;
            }
            let ids: Vec<_> = page.iter().map(|a| a.id).collect();
            let deleted = store.delete_annotations(op.id, &ids).await?;
            if deleted == 0 {
                warn!(operation = %op.id, "the store listed annotations it would not delete; the collection stops here");
                report.in_progress += 1;
                return Ok(());
            }
            report.annotations_freed += deleted;
            *budget = budget.saturating_sub(ids.len());
            tokio::task::yield_now().await;
        }
        report.index_documents_removed += index.delete_operation(op.id).await?;
        let done = store
            .end_collection(op.id, op.annotation_count, self.clock.now())
            .await?;
        self.engines.cache.put(std::slice::from_ref(&done));
        report.collected += 1;
        Ok(())
    }
}

/// True when a run is past its retention, or its collection began and is not done.
fn due(op: &Operation, retention: &Retention, now: OffsetDateTime) -> bool {
    if let Some(c) = &op.collected {
        return c.finished_at.is_none();
    }
    let keep = match op.status {
        OperationStatus::Finished => retention.superseded,
        _ => retention.ended,
    };
    lifecycle::retired_at(op).is_some_and(|t| t + keep <= now)
}
