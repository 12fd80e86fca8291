//! The operation state machine, as pure functions over [`Operation`] values.
//!
//! ```text
//! STARTED --finish--> FINISHED (active, or inactive with superseded_by)
//!    |----cancel----> CANCELLED
//!    `--lease lapses-> EXPIRED
//! ```
//! Engines load the current state, ask these functions for a plan, and write the plan
//! atomically (one write batch in the embedded store, compare-and-set elsewhere). Nothing
//! here does I/O, so every rule is tested here once for all engines.

use crate::model::{Operation, OperationStatus, StartOperation};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    #[error("operation {id} is {}: only a STARTED operation accepts annotations", .status.as_str())]
    NotStarted { id: Uuid, status: OperationStatus },
    #[error("operation {id} is {}: it cannot be finished", .status.as_str())]
    CannotFinish { id: Uuid, status: OperationStatus },
    #[error("operation {id} is {}: it cannot be cancelled", .status.as_str())]
    CannotCancel { id: Uuid, status: OperationStatus },
}

/// A new STARTED operation with the next number of its key.
pub fn start(
    req: &StartOperation,
    id: Uuid,
    previous_number: Option<u64>,
    lease_seconds: u32,
    now: OffsetDateTime,
) -> Operation {
    Operation {
        id,
        annotation_type: req.annotation_type.clone(),
        annotation_type_version: req.annotation_type_version,
        pivot_id: req.pivot_id.clone(),
        operation_number: previous_number.map_or(1, |n| n + 1),
        status: OperationStatus::Started,
        active: false,
        annotation_count: 0,
        created_at: now,
        updated_at: now,
        finished_at: None,
        lease_seconds,
        lease_expires_at: Some(now + Duration::seconds(i64::from(lease_seconds))),
        superseded_by: None,
        metadata: req.metadata.clone().unwrap_or_default(),
        producer: req.producer.clone(),
        version: 1,
    }
}

/// True when a STARTED operation's lease has run out at `now`.
pub fn lease_lapsed(op: &Operation, now: OffsetDateTime) -> bool {
    op.status == OperationStatus::Started && op.lease_expires_at.is_some_and(|t| t <= now)
}

/// The operation as it stands at `now`: a STARTED one whose lease lapsed is EXPIRED.
/// Returns `None` when nothing changes, so callers write only real transitions.
pub fn expire_if_lapsed(op: &Operation, now: OffsetDateTime) -> Option<Operation> {
    lease_lapsed(op, now).then(|| Operation {
        status: OperationStatus::Expired,
        lease_expires_at: None,
        updated_at: now,
        version: op.version + 1,
        ..op.clone()
    })
}

/// The operation after an accepted upsert of `new_annotations` previously unseen ids:
/// the lease is renewed and the count grows.
pub fn accept_upsert(
    op: &Operation,
    new_annotations: u64,
    now: OffsetDateTime,
) -> Result<Operation, LifecycleError> {
    if op.status != OperationStatus::Started || lease_lapsed(op, now) {
        let status = if lease_lapsed(op, now) {
            OperationStatus::Expired
        } else {
            op.status
        };
        return Err(LifecycleError::NotStarted { id: op.id, status });
    }
    Ok(Operation {
        annotation_count: op.annotation_count + new_annotations,
        updated_at: now,
        version: op.version + 1,
        lease_expires_at: Some(now + Duration::seconds(i64::from(op.lease_seconds))),
        ..op.clone()
    })
}

/// What finishing an operation writes.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishPlan {
    /// The operation as it is after the finish.
    pub operation: Operation,
    /// The previously active operation of the key, now inactive, if this finish replaced it.
    pub deactivated: Option<Operation>,
    /// False when the operation was already FINISHED (finish is idempotent): nothing to write.
    pub changed: bool,
}

impl FinishPlan {
    /// The operation id the key's active pointer holds after the plan, if it moved.
    pub fn new_active(&self) -> Option<Uuid> {
        (self.changed && self.operation.active).then_some(self.operation.id)
    }
}

/// Finishes `op`, given the key's currently active operation (if any).
/// The newest finished run of a key is the active one: finishing an older run after a
/// newer one has finished leaves it inactive, superseded by the newer.
pub fn finish(
    op: &Operation,
    active: Option<&Operation>,
    now: OffsetDateTime,
) -> Result<FinishPlan, LifecycleError> {
    match op.status {
        OperationStatus::Finished => {
            return Ok(FinishPlan {
                operation: op.clone(),
                deactivated: None,
                changed: false,
            });
        }
        OperationStatus::Started if !lease_lapsed(op, now) => {}
        _ => {
            let status = if lease_lapsed(op, now) {
                OperationStatus::Expired
            } else {
                op.status
            };
            return Err(LifecycleError::CannotFinish { id: op.id, status });
        }
    }
    let finished = Operation {
        status: OperationStatus::Finished,
        finished_at: Some(now),
        updated_at: now,
        lease_expires_at: None,
        version: op.version + 1,
        ..op.clone()
    };
    match active {
        Some(current) if current.id != op.id && current.operation_number > op.operation_number => {
            Ok(FinishPlan {
                operation: Operation {
                    active: false,
                    superseded_by: Some(current.id),
                    ..finished
                },
                deactivated: None,
                changed: true,
            })
        }
        current => Ok(FinishPlan {
            deactivated: current.filter(|c| c.id != op.id).map(|c| Operation {
                active: false,
                superseded_by: Some(op.id),
                updated_at: now,
                version: c.version + 1,
                ..c.clone()
            }),
            operation: Operation {
                active: true,
                ..finished
            },
            changed: true,
        }),
    }
}

/// Cancels a STARTED operation. Cancelling a cancelled one again changes nothing.
pub fn cancel(op: &Operation, now: OffsetDateTime) -> Result<(Operation, bool), LifecycleError> {
    match op.status {
        OperationStatus::Cancelled => Ok((op.clone(), false)),
        OperationStatus::Started if !lease_lapsed(op, now) => Ok((
            Operation {
                status: OperationStatus::Cancelled,
                updated_at: now,
                lease_expires_at: None,
                version: op.version + 1,
                ..op.clone()
            },
            true,
        )),
        _ => Err(LifecycleError::CannotCancel {
            id: op.id,
            status: if lease_lapsed(op, now) {
                OperationStatus::Expired
            } else {
                op.status
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::from_unix_ms;

    fn started(number: u64) -> Operation {
        let req = StartOperation {
            producer: None,
            annotation_type: "objects".into(),
            annotation_type_version: 1,
            pivot_id: "p".into(),
            lease_seconds: None,
            metadata: None,
        };
        start(
            &req,
            Uuid::now_v7(),
            number.checked_sub(1),
            60,
            from_unix_ms(1_000),
        )
    }

    #[test]
    fn numbers_follow_the_previous_one() {
        assert_eq!(started(1).operation_number, 1);
        assert_eq!(started(7).operation_number, 7);
    }

    #[test]
    fn first_finish_activates() {
        let op = started(1);
        let plan = finish(&op, None, from_unix_ms(2_000)).unwrap();
        assert!(plan.operation.active);
        assert_eq!(plan.operation.status, OperationStatus::Finished);
        assert_eq!(plan.new_active(), Some(op.id));
        assert!(plan.deactivated.is_none());
    }

    #[test]
    fn newer_finish_supersedes_the_active_one() {
        let one = finish(&started(1), None, from_unix_ms(2_000))
            .unwrap()
            .operation;
        let two = started(2);
        let plan = finish(&two, Some(&one), from_unix_ms(3_000)).unwrap();
        assert!(plan.operation.active);
        let old = plan.deactivated.unwrap();
        assert!(!old.active);
        assert_eq!(old.superseded_by, Some(two.id));
    }

    #[test]
    fn older_finish_after_newer_stays_inactive() {
        let one = started(1);
        let two = finish(&started(2), None, from_unix_ms(2_000))
            .unwrap()
            .operation;
        let plan = finish(&one, Some(&two), from_unix_ms(3_000)).unwrap();
        assert!(!plan.operation.active);
        assert_eq!(plan.operation.superseded_by, Some(two.id));
        assert_eq!(plan.new_active(), None);
        assert!(plan.deactivated.is_none());
    }

    #[test]
    fn finish_is_idempotent() {
        let done = finish(&started(1), None, from_unix_ms(2_000))
            .unwrap()
            .operation;
        let again = finish(&done, Some(&done), from_unix_ms(5_000)).unwrap();
        assert!(!again.changed);
        assert_eq!(again.operation, done);
    }

    #[test]
    fn cancelled_and_expired_cannot_finish() {
        let (cancelled, _) = cancel(&started(1), from_unix_ms(2_000)).unwrap();
        assert!(matches!(
            finish(&cancelled, None, from_unix_ms(3_000)),
            Err(LifecycleError::CannotFinish {
                status: OperationStatus::Cancelled,
                ..
            })
        ));
        let lapsed = started(1);
        assert!(matches!(
            finish(&lapsed, None, from_unix_ms(61_000)),
            Err(LifecycleError::CannotFinish {
                status: OperationStatus::Expired,
                ..
            })
        ));
    }

    #[test]
    fn upsert_renews_the_lease_and_counts() {
        let op = started(1);
        let later = from_unix_ms(30_000);
        let renewed = accept_upsert(&op, 5, later).unwrap();
        assert_eq!(renewed.annotation_count, 5);
        assert_eq!(renewed.version, op.version + 1);
        assert_eq!(
            renewed.lease_expires_at,
            Some(later + Duration::seconds(60))
        );
        assert!(accept_upsert(&op, 1, from_unix_ms(61_000)).is_err());
    }

    #[test]
    fn expiry_only_when_lapsed() {
        let op = started(1);
        assert!(expire_if_lapsed(&op, from_unix_ms(60_999)).is_none());
        let expired = expire_if_lapsed(&op, from_unix_ms(61_000)).unwrap();
        assert_eq!(expired.status, OperationStatus::Expired);
        let finished = finish(&op, None, from_unix_ms(2_000)).unwrap().operation;
        assert!(expire_if_lapsed(&finished, from_unix_ms(1_000_000)).is_none());
    }

    #[test]
    fn cancel_rules() {
        let op = started(1);
        let (c, changed) = cancel(&op, from_unix_ms(2_000)).unwrap();
        assert!(changed);
        assert_eq!(c.status, OperationStatus::Cancelled);
        assert!(!cancel(&c, from_unix_ms(3_000)).unwrap().1);
        let done = finish(&op, None, from_unix_ms(2_000)).unwrap().operation;
        assert!(cancel(&done, from_unix_ms(3_000)).is_err());
    }
}
