//! Operating annostore, part one: counts of operations per status and the bulk end
//! of abandoned runs (cancel or expire). Admin work; the routes behind it need the
//! admin role.

use super::Service;
use crate::error::Error;
use crate::events::OperationEvent;
use crate::lifecycle;
use crate::model::{Operation, OperationFilter, OperationStatus, ScanOrder};
use crate::store::StoreError;
use serde::{Deserialize, Serialize};
use tracing::info;
use uuid::Uuid;

pub use super::consistency::{Consistency, ConsistencyRow};
pub use super::dead_letters::{DeadLetter, Purged};

/// Operations read per page of an admin scan.
pub(super) const SCAN_PAGE: usize = 1_000;
/// At most this many operations in one bulk end or consistency report.
pub const MAX_BULK: usize = 10_000;

/// Operations per status, as they stand now (a STARTED run whose lease lapsed counts
/// as EXPIRED).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct StatusCounts {
    #[serde(rename = "STARTED")]
    pub started: u64,
    #[serde(rename = "FINISHED")]
    pub finished: u64,
    #[serde(rename = "CANCELLED")]
    pub cancelled: u64,
    #[serde(rename = "EXPIRED")]
    pub expired: u64,
    /// Of the FINISHED ones, those active.
    pub active: u64,
    /// Of all, those whose garbage collection has begun.
    pub collected: u64,
    pub total: u64,
}

/// What a bulk end does to each STARTED run it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndAction {
    Cancel,
    Expire,
}

/// One run a bulk end ended (or, in a dry run, would end).
#[derive(Debug, Clone, Serialize)]
pub struct Ended {
    pub operation: Operation,
    /// The error that kept it from ending, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndReport {
    pub dry_run: bool,
    pub action: EndAction,
    /// STARTED runs that matched (at most the limit).
    pub matched: u64,
    /// Runs now CANCELLED or EXPIRED.
    pub ended: u64,
    pub failed: u64,
    /// True when more runs matched than the limit allowed: run it again.
    pub truncated: bool,
    pub operations: Vec<Ended>,
}

impl Service {
    /// Calls `visit` with every operation matching `filter`, in `order`, as it stands
    /// now (a lapsed lease reads as EXPIRED), page by page, until `visit` says stop.
    /// True when it stopped before the end.
    pub(super) async fn walk(
        &self,
        filter: &OperationFilter,
        order: ScanOrder,
        mut visit: impl FnMut(Operation) -> bool,
    ) -> Result<bool, Error> {
        let mut cursor = None;
        let now = self.clock.now();
        loop {
            let page = self
                .engines
                .store
                .list_operations(filter, order, cursor, SCAN_PAGE)
                .await?;
            let full = page.len() == SCAN_PAGE;
            cursor = page.last().map(|o| o.id);
            for op in page {
                if !visit(lifecycle::expire_if_lapsed(&op, now).unwrap_or(op)) {
                    return Ok(true);
                }
            }
            if !full {
                return Ok(false);
            }
        }
    }

    /// Up to `cap` operations matching `filter`, in `order`, as they stand now; true
    /// when more matched.
    pub(super) async fn collect_operations(
        &self,
        filter: &OperationFilter,
        order: ScanOrder,
        cap: usize,
    ) -> Result<(Vec<Operation>, bool), Error> {
        let mut out = Vec::new();
        let more = self
            .walk(filter, order, |op| {
                if out.len() == cap {
                    return false;
                }
                out.push(op);
                true
            })
            .await?;
        Ok((out, more))
    }

    /// How many operations match `filter`, per status. Reads every matching operation:
    /// narrow the filter (a type, a key) on a large store.
    pub async fn count_operations(&self, filter: &OperationFilter) -> Result<StatusCounts, Error> {
        let mut counts = StatusCounts::default();
        self.walk(filter, ScanOrder::NewestFirst, |op| {
            *match op.status {
                OperationStatus::Started => &mut counts.started,
                OperationStatus::Finished => &mut counts.finished,
                OperationStatus::Cancelled => &mut counts.cancelled,
                OperationStatus::Expired => &mut counts.expired,
            } += 1;
            counts.active += u64::from(op.active);
            counts.collected += u64::from(op.collected.is_some());
            counts.total += 1;
            true
        })
        .await?;
        Ok(counts)
    }

    /// Cancels or expires the STARTED runs matching `filter` (its status must be
    /// STARTED or absent), oldest first, at most `limit` of them. A dry run only lists
    /// them. A run whose lease lapsed is recorded EXPIRED whatever the action.
    pub async fn end_operations(
        &self,
        filter: &OperationFilter,
        action: EndAction,
        dry_run: bool,
        limit: usize,
    ) -> Result<EndReport, Error> {
        if filter.status.is_some_and(|s| s != OperationStatus::Started) {
            return Err(Error::invalid(
                "status",
                "only STARTED operations can be cancelled or expired",
            ));
        }
        if limit == 0 || limit > MAX_BULK {
            return Err(Error::invalid(
                "limit",
                format!("must be between 1 and {MAX_BULK}"),
            ));
        }
        let filter = OperationFilter {
            status: Some(OperationStatus::Started),
            ..filter.clone()
        };
        let (ops, truncated) = self
            .collect_operations(&filter, ScanOrder::OldestFirst, limit)
            .await?;
        let mut report = EndReport {
            dry_run,
            action,
            matched: ops.len() as u64,
            ended: 0,
            failed: 0,
            truncated,
            operations: Vec::with_capacity(ops.len()),
        };
        for op in ops {
            if dry_run {
                report.operations.push(Ended {
                    operation: op,
                    error: None,
                });
                continue;
            }
            let outcome = match (action, op.status) {
                // The lease lapsed: what it is, recorded.
                (_, OperationStatus::Expired) => self.expire(op.id).await,
                (EndAction::Cancel, _) => self.cancel(op.id).await,
                (EndAction::Expire, _) => self.force_expire(op.id).await,
            };
            match outcome {
                Ok(ended) => {
                    report.ended += 1;
                    report.operations.push(Ended {
                        operation: ended,
                        error: None,
                    });
                }
                Err(e) => {
                    report.failed += 1;
                    report.operations.push(Ended {
                        operation: op,
                        error: Some(e.to_string()),
                    });
                }
            }
        }
        if !dry_run {
            info!(
                ?action,
                ended = report.ended,
                failed = report.failed,
                "bulk end of STARTED operations"
            );
        }
        Ok(report)
    }

    /// Ends a STARTED run as EXPIRED now, whatever its lease (an admin's decision that
    /// the run is abandoned). A run that is not STARTED is a conflict.
    pub async fn force_expire(&self, id: Uuid) -> Result<Operation, Error> {
        let op = self.operation(id).await?;
        if op.status != OperationStatus::Started {
            return Err(Error::Conflict(format!(
                "operation {id} is {}: only a STARTED operation can be expired",
                op.status.as_str()
            )));
        }
        match self.engines.store.force_expire(id, self.clock.now()).await {
            Ok(Some(expired)) => {
                metrics::counter!("annostore_operations_expired_total").increment(1);
                self.engines.cache.put(std::slice::from_ref(&expired));
                self.publish(OperationEvent::Expired {
                    operation: expired.clone(),
                })
                .await;
                Ok(expired)
            }
            // Ended meanwhile (finished, cancelled, lapsed): report it as it is.
            Ok(None) => {
                let now = self.operation(id).await?;
                Err(Error::Conflict(format!(
                    "operation {id} is {}: only a STARTED operation can be expired",
                    now.status.as_str()
                )))
            }
            Err(StoreError::NotFound { .. }) => Err(Error::operation_not_found(id)),
            Err(e) => Err(e.into()),
        }
    }
}
