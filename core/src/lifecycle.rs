//! The operation state machine, as pure functions over [`Operation`] values.
//!
//! ```text
//! STARTED --finish--> FINISHED (active, or inactive with superseded_by)
//!    |----cancel----> CANCELLED       FINISHED --activate--> active again (rollback,
//!    `--lease lapses-> EXPIRED                                  roll forward)
//!       (or an admin's expire)
//! inactive FINISHED, CANCELLED, EXPIRED --begin_collection--> collected (never active again)
//! ```
//! Engines load the current state, ask these functions for a plan, and write the plan
//! atomically (one write batch in the embedded store, compare-and-set elsewhere). Nothing
//! here does I/O, so every rule is tested here once for all engines.

use crate::model::{
    Activation, ActivationReason, Collection, Operation, OperationStatus, StartOperation,
};
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
    #[error("operation {id} is {}: only a FINISHED operation can be made active", .status.as_str())]
    CannotActivate { id: Uuid, status: OperationStatus },
    #[error("operation {id} has been garbage collected: it can never be active again")]
    Collected { id: Uuid },
    #[error("operation {id} is its key's active run: it cannot be garbage collected")]
    CollectActive { id: Uuid },
    #[error("operation {id} is STARTED: it cannot be garbage collected")]
    CollectStarted { id: Uuid },
    #[error("operation {id} is not being garbage collected: its annotations stay")]
    CollectionNotBegun { id: Uuid },
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
        activation: 0,
        collected: None,
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
    /// The key's activation history entry, when this finish made the run active.
    pub activation: Option<Activation>,
    /// When the run is not the key's active one: the run that is, as the finish found
    /// it (the newer run that superseded it). A node whose snapshot lags the store (a
    /// finish of that run applied, its answer lost) learns of it here, before it
    /// answers this finish.
    pub active_run: Option<Operation>,
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
                activation: None,
                active_run: active.filter(|a| a.id != op.id && !op.active).cloned(),
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
                activation: None,
                active_run: Some(current.clone()),
            })
        }
        current => {
            let current = current.filter(|c| c.id != op.id);
            let operation = Operation {
                active: true,
                activation: next_activation(current),
                ..finished
            };
            Ok(FinishPlan {
                deactivated: current.map(|c| deactivate(c, op.id, now)),
                activation: Some(record(
                    &operation,
                    current,
                    ActivationReason::Finish,
                    op.producer.clone(),
                    now,
                )),
                operation,
                changed: true,
                active_run: None,
            })
        }
    }
}

fn next_activation(current: Option<&Operation>) -> u64 {
    current.map_or(0, |c| c.activation) + 1
}

fn deactivate(op: &Operation, by: Uuid, now: OffsetDateTime) -> Operation {
    Operation {
        active: false,
        superseded_by: Some(by),
        updated_at: now,
        version: op.version + 1,
        ..op.clone()
    }
}

fn record(
    activated: &Operation,
    previous: Option<&Operation>,
    reason: ActivationReason,
    actor: Option<String>,
    now: OffsetDateTime,
) -> Activation {
    Activation {
        annotation_type: activated.annotation_type.clone(),
        annotation_type_version: activated.annotation_type_version,
        pivot_id: activated.pivot_id.clone(),
        sequence: activated.activation,
        operation_id: activated.id,
        operation_number: activated.operation_number,
        previous: previous.map(|p| p.id),
        reason,
        actor,
        at: now,
    }
}

/// What making a finished run active again writes (a rollback or a roll forward).
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationPlan {
    /// The run, now active.
    pub operation: Operation,
    /// The previously active run, now inactive and superseded by `operation`.
    pub deactivated: Option<Operation>,
    /// The key's activation history entry; `None` when the run was already active.
    pub activation: Option<Activation>,
}

impl ActivationPlan {
    pub fn changed(&self) -> bool {
        self.activation.is_some()
    }
}

/// Makes `target`, a FINISHED run that has not been garbage collected, its key's
/// active run in place of `active` (the key's current active run, if any). Making the
/// active run active again changes nothing. The reason (rollback or roll forward) is
/// the caller's, for the history; the rule is the same either way.
pub fn activate(
    target: &Operation,
    active: Option<&Operation>,
    reason: ActivationReason,
    actor: Option<String>,
    now: OffsetDateTime,
) -> Result<ActivationPlan, LifecycleError> {
    if target.status != OperationStatus::Finished {
        return Err(LifecycleError::CannotActivate {
            id: target.id,
            status: target.status,
        });
    }
    if target.collected.is_some() {
        return Err(LifecycleError::Collected { id: target.id });
    }
    let current = active.filter(|c| c.id != target.id);
    if target.active && current.is_none() {
        return Ok(ActivationPlan {
            operation: target.clone(),
            deactivated: None,
            activation: None,
        });
    }
    let operation = Operation {
        active: true,
        superseded_by: None,
        activation: next_activation(current),
        updated_at: now,
        version: target.version + 1,
        ..target.clone()
    };
    Ok(ActivationPlan {
        deactivated: current.map(|c| deactivate(c, target.id, now)),
        activation: Some(record(&operation, current, reason, actor, now)),
        operation,
    })
}

/// Ends a STARTED operation as EXPIRED now, whatever its lease (an admin's bulk
/// expiry of abandoned runs). `None` when it is not STARTED: nothing to write.
pub fn force_expire(op: &Operation, now: OffsetDateTime) -> Option<Operation> {
    (op.status == OperationStatus::Started).then(|| Operation {
        status: OperationStatus::Expired,
        lease_expires_at: None,
        updated_at: now,
        version: op.version + 1,
        ..op.clone()
    })
}

/// When a run stopped being (or being able to become) visible: retention counts from
/// here. `None` while it is STARTED or active.
pub fn retired_at(op: &Operation) -> Option<OffsetDateTime> {
    match op.status {
        OperationStatus::Started => None,
        OperationStatus::Finished if op.active => None,
        _ => Some(op.updated_at),
    }
}

/// Marks a run's garbage collection as begun, so it can never become active again
/// and its annotations may be deleted. Only a run that is neither STARTED nor active
/// qualifies. Beginning again returns the run unchanged (`false`): a collection
/// resumes where it stopped.
pub fn begin_collection(
    op: &Operation,
    now: OffsetDateTime,
) -> Result<(Operation, bool), LifecycleError> {
    if op.collected.is_some() {
        return Ok((op.clone(), false));
    }
    if op.status == OperationStatus::Started {
        return Err(LifecycleError::CollectStarted { id: op.id });
    }
    if op.active {
        return Err(LifecycleError::CollectActive { id: op.id });
    }
    Ok((
        Operation {
            collected: Some(Collection {
                started_at: now,
                finished_at: None,
                freed: 0,
            }),
            version: op.version + 1,
            ..op.clone()
        },
        true,
    ))
}

/// Records a run's garbage collection as done, `freed` more annotations deleted.
/// `None` when its collection has not begun or is already recorded as done.
pub fn end_collection(op: &Operation, freed: u64, now: OffsetDateTime) -> Option<Operation> {
    let c = op.collected.as_ref()?;
    if c.finished_at.is_some() {
        return None;
    }
    Some(Operation {
        collected: Some(Collection {
            started_at: c.started_at,
            finished_at: Some(now),
            freed: c.freed + freed,
        }),
        version: op.version + 1,
        ..op.clone()
    })
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
mod tests;
