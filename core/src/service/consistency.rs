//! The consistency report: per operation, how many annotations the store holds and
//! how many the index holds, and a repair by reindex where they disagree.

use super::Service;
use super::admin::MAX_BULK;
use crate::error::Error;
use crate::model::{Operation, OperationFilter, OperationStatus, ScanOrder};
use serde::Serialize;
use tracing::warn;
use uuid::Uuid;

/// Pending records read per operation to tell "still being indexed" from "lost".
const PENDING_PEEK: usize = 1_000;

/// One operation in a consistency report.
#[derive(Debug, Clone, Serialize)]
pub struct ConsistencyRow {
    pub operation_id: Uuid,
    pub annotation_type: String,
    pub annotation_type_version: u32,
    pub pivot_id: String,
    pub operation_number: u64,
    pub status: OperationStatus,
    pub active: bool,
    /// Annotations the store holds for it (none once its garbage collection is done).
    pub store: u64,
    /// Documents the index holds for it.
    pub index: u64,
    /// Index work of it still pending in the store (at most 1,000 counted).
    pub pending_work: u64,
    /// Whether the two agree: equal counts, or a STARTED run with work pending (its
    /// index catches up), or a run being garbage collected.
    pub agrees: bool,
    /// True when a repair made them agree.
    pub repaired: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Consistency {
    pub checked: u64,
    pub disagreeing: u64,
    pub repaired: u64,
    /// True when more operations matched than the limit allowed.
    pub truncated: bool,
    /// Every operation checked, or only those that disagreed (`only_disagreeing`).
    pub operations: Vec<ConsistencyRow>,
}

impl Service {
    /// Compares store and index counts for the operations matching `filter` (newest
    /// first, at most `limit`), and with `repair` rebuilds each disagreeing run's index
    /// entries from the store (a collected run's leftovers are deleted instead).
    pub async fn consistency(
        &self,
        filter: &OperationFilter,
        limit: usize,
        repair: bool,
        only_disagreeing: bool,
    ) -> Result<Consistency, Error> {
        if limit == 0 || limit > MAX_BULK {
            return Err(Error::invalid(
                "limit",
                format!("must be between 1 and {MAX_BULK}"),
            ));
        }
        let (ops, truncated) = self
            .collect_operations(filter, ScanOrder::NewestFirst, limit)
            .await?;
        let mut report = Consistency {
            checked: 0,
            disagreeing: 0,
            repaired: 0,
            truncated,
            operations: Vec::new(),
        };
        for op in ops {
            let mut row = self.compare(&op).await?;
            report.checked += 1;
            if !row.agrees {
                report.disagreeing += 1;
                if repair {
                    self.repair(&op, &mut row).await;
                    report.repaired += u64::from(row.repaired);
                }
            }
            if !only_disagreeing || !row.agrees {
                report.operations.push(row);
            }
        }
        Ok(report)
    }

    async fn compare(&self, op: &Operation) -> Result<ConsistencyRow, Error> {
        let index = self.engines.index.count_operation(op.id).await?;
        let pending = self
            .engines
            .store
            .pending_work(Some(op.id), PENDING_PEEK)
            .await?
            .len() as u64;
        let (store, agrees, note) = match &op.collected {
            Some(c) if c.finished_at.is_some() => (0, index == 0, None),
            Some(_) => (
                op.annotation_count,
                true,
                Some("being garbage collected".to_owned()),
            ),
            None => {
                let settling = op.status == OperationStatus::Started && pending > 0;
                (
                    op.annotation_count,
                    index == op.annotation_count || settling,
                    settling.then(|| "index work pending".to_owned()),
                )
            }
        };
        Ok(ConsistencyRow {
            operation_id: op.id,
            annotation_type: op.annotation_type.clone(),
            annotation_type_version: op.annotation_type_version,
            pivot_id: op.pivot_id.clone(),
            operation_number: op.operation_number,
            status: op.status,
            active: op.active,
            store,
            index,
            pending_work: pending,
            agrees,
            repaired: false,
            note,
        })
    }

    async fn repair(&self, op: &Operation, row: &mut ConsistencyRow) {
        let outcome: Result<(), Error> = if op.collected.is_some() {
            self.engines
                .index
                .delete_operation(op.id)
                .await
                .map(drop)
                .map_err(Error::from)
        } else {
            match self.reindex_operation(op).await {
                Ok(_) => self.durable_now().await,
                Err(e) => Err(e),
            }
        };
        if let Err(e) = outcome {
            warn!(operation = %op.id, error = %e, "consistency repair failed");
            row.note = Some(format!("repair failed: {e}"));
            return;
        }
        match self.engines.index.count_operation(op.id).await {
            Ok(index) => {
                row.index = index;
                row.repaired = index == row.store;
                if !row.repaired {
                    // A reindex adds and replaces; it cannot remove documents the store
                    // no longer knows.
                    row.note = Some(format!(
                        "still {index} in the index after the repair, {} in the store",
                        row.store
                    ));
                }
            }
            Err(e) => row.note = Some(format!("recount failed: {e}")),
        }
    }
}
