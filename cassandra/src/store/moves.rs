//! The lifecycle writes that move a key's active pointer (finish, rollback and roll
//! forward) and those of one operation row (cancel, forced expiry), on the cells of
//! [`crate::cas`]. The protocol of a pointer move and its crash windows are described
//! in [`crate::cas::pointer`].

use super::rows::{KeyPointer, Rows};
use super::*;
use annostore_core::model::OperationStatus;

impl CassandraStore {
    pub(super) async fn finish(
        &self,
        id: Uuid,
        now: OffsetDateTime,
        searchable: &[Uuid],
    ) -> StoreResult<FinishPlan> {
        let mut attempts = Attempts::new("finish operation");
        loop {
            attempts.take()?;
            let op = self.require_op(id).await?;
            let why = Why {
                reason: ActivationReason::Finish,
                actor: op.producer.clone(),
            };
            let mut cell = KeyPointer {
                store: self,
                key: op.key(),
            };
            if op.status == OperationStatus::Finished {
                if op.active {
                    // A finish (or an activation) that stopped between its writes:
                    // complete it. What the run's number was before is not known.
                    let settled =
                        cas::settle_pointer(&mut cell, op, None, None, &why, now, &mut attempts)
                            .await?;
                    return Ok(FinishPlan {
                        changed: settled.moved,
                        operation: settled.operation,
                        deactivated: settled.deactivated,
                        activation: settled.activation,
                        active_run: None,
                    });
                }
                let active_run = cell.current().await?.run.filter(|r| r.id != op.id);
                return Ok(FinishPlan {
                    operation: op,
                    deactivated: None,
                    changed: false,
                    activation: None,
                    active_run,
                });
            }
            if op.status == OperationStatus::Started
                && !lifecycle::lease_lapsed(&op, now)
                && self.has_unsearchable(id, searchable).await?
            {
                return Err(StoreError::PendingIndexWork(id));
            }
            let pointer = cell.current().await?;
            let mut plan = match lifecycle::finish(&op, pointer.run.as_ref(), now) {
                Ok(plan) => plan,
                Err(e) => {
                    self.record_expiry(&op, now).await?;
                    return Err(e.into());
                }
            };
            if plan.operation.active {
                // The number this move takes if the pointer is still where it was read.
                plan.operation.activation = pointer.next_sequence();
            }
            // This write is also the move's touch of the row (see cas::pointer).
            if !self.cas_op(&plan.operation, op.version).await? {
                continue;
            }
            if !plan.operation.active {
                return Ok(plan);
            }
            let settled = cas::settle_pointer(
                &mut cell,
                plan.operation,
                Some(pointer),
                Some(op.activation),
                &why,
                now,
                &mut attempts,
            )
            .await?;
            return Ok(FinishPlan {
                operation: settled.operation,
                deactivated: settled.deactivated,
                changed: true,
                activation: settled.activation,
                active_run: None,
            });
        }
    }

    pub(super) async fn activate(
        &self,
        id: Uuid,
        reason: ActivationReason,
        actor: Option<String>,
        now: OffsetDateTime,
    ) -> StoreResult<ActivationPlan> {
        let op = self.require_op(id).await?;
        let mut cell = KeyPointer {
            store: self,
            key: op.key(),
        };
        let why = Why { reason, actor };
        let mut attempts = Attempts::new("activate operation");
        cas::activate(&mut cell, id, &why, now, &mut attempts).await
    }

    pub(super) async fn cancel(&self, id: Uuid, now: OffsetDateTime) -> StoreResult<Operation> {
        let mut attempts = Attempts::new("cancel operation");
        loop {
            attempts.take()?;
            let op = self.require_op(id).await?;
            match lifecycle::cancel(&op, now) {
                Ok((cancelled, changed)) => {
                    if changed && !self.cas_op(&cancelled, op.version).await? {
                        continue;
                    }
                    return Ok(cancelled);
                }
                Err(e) => {
                    self.record_expiry(&op, now).await?;
                    return Err(e.into());
                }
            }
        }
    }

    /// `cas_op` keeps `started_operations` in step, so an expired run leaves it.
    pub(super) async fn expire_now(
        &self,
        id: Uuid,
        now: OffsetDateTime,
    ) -> StoreResult<Option<Operation>> {
        let mut attempts = Attempts::new("force expiry");
        let (op, wrote) = cas::update_op(&mut Rows(self), id, &mut attempts, |op| {
            Ok(lifecycle::force_expire(op, now))
        })
        .await?;
        Ok(wrote.then_some(op))
    }
}
