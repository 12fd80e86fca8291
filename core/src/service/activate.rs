//! Rollback and roll forward: making an earlier (or, after a rollback, a later)
//! FINISHED run its key's active one again, with the same guarantees as a finish: the
//! run is whole in the index before it becomes visible, the store moves the key's
//! pointer atomically, and the snapshot swaps both runs in one step under the key's
//! lock (invariant 5). Every activation is kept in the key's history.

use super::{Service, key_stripe};
use crate::error::Error;
use crate::events::OperationEvent;
use crate::model::{
    Activation, ActivationReason, Operation, OperationFilter, OperationKey, OperationStatus,
    ScanOrder,
};
use serde::Serialize;
use tracing::{info, warn};
use uuid::Uuid;

/// At most this many runs of one key are considered for a rollback target.
const MAX_RUNS_OF_KEY: usize = 10_000;

/// What a rollback or roll forward did.
#[derive(Debug, Clone, Serialize)]
pub struct Activated {
    /// The run, now active.
    pub operation: Operation,
    /// The run it replaced, now inactive.
    pub deactivated: Option<Operation>,
    /// The history entry; absent when the run was already active (nothing changed).
    pub activation: Option<Activation>,
}

impl Service {
    /// Makes an older FINISHED run of `key` active again: `to`, or else the newest
    /// FINISHED run older than the active one that has not been garbage collected.
    pub async fn rollback(
        &self,
        key: &OperationKey,
        to: Option<Uuid>,
        actor: Option<String>,
    ) -> Result<Activated, Error> {
        self.move_active(key, to, ActivationReason::Rollback, actor)
            .await
    }

    /// Makes a newer FINISHED run of `key` active again after a rollback: `to`, or else
    /// the newest FINISHED run newer than the active one that has not been collected.
    pub async fn roll_forward(
        &self,
        key: &OperationKey,
        to: Option<Uuid>,
        actor: Option<String>,
    ) -> Result<Activated, Error> {
        self.move_active(key, to, ActivationReason::RollForward, actor)
            .await
    }

    /// The key's activation history, newest first.
    pub async fn activations(
        &self,
        key: &OperationKey,
        limit: Option<u32>,
    ) -> Result<Vec<Activation>, Error> {
        let limit = self.page_size(limit)?;
        Ok(self.engines.store.activations(key, limit).await?)
    }

    /// A rollback or a roll forward, by `reason` (see [`Service::rollback`] and
    /// [`Service::roll_forward`]).
    pub async fn move_active(
        &self,
        key: &OperationKey,
        to: Option<Uuid>,
        reason: ActivationReason,
        actor: Option<String>,
    ) -> Result<Activated, Error> {
        let filter = OperationFilter {
            annotation_type: Some(key.annotation_type.clone()),
            annotation_type_version: Some(key.annotation_type_version),
            pivot_id: Some(key.pivot_id.clone()),
            ..OperationFilter::default()
        };
        let (runs, _) = self
            .collect_operations(&filter, ScanOrder::NewestFirst, MAX_RUNS_OF_KEY)
            .await?;
        let active = runs.iter().find(|o| o.active).ok_or_else(|| {
            Error::Conflict(format!(
                "{} version {} pivot {} has no active run to move from",
                key.annotation_type, key.annotation_type_version, key.pivot_id
            ))
        })?;
        let older = reason == ActivationReason::Rollback;
        let direction = if older { "older" } else { "newer" };
        let on_the_way = |o: &Operation| {
            if older {
                o.operation_number < active.operation_number
            } else {
                o.operation_number > active.operation_number
            }
        };
        let target = match to {
            Some(id) => {
                let target = runs.iter().find(|o| o.id == id).ok_or_else(|| {
                    Error::invalid("to", format!("operation {id} is not a run of this key"))
                })?;
                if !on_the_way(target) {
                    return Err(Error::invalid(
                        "to",
                        format!(
                            "run {} is not {direction} than the active run {}",
                            target.operation_number, active.operation_number
                        ),
                    ));
                }
                target
            }
            // `runs` is newest first: the first candidate is the newest.
            None => runs
                .iter()
                .find(|o| {
                    o.status == OperationStatus::Finished && o.collected.is_none() && on_the_way(o)
                })
                .ok_or_else(|| {
                    Error::Conflict(format!(
                        "no FINISHED run {direction} than the active run {} is left to move to",
                        active.operation_number
                    ))
                })?,
        };
        self.activate_run(target.id, reason, actor).await
    }

    /// Makes run `id` its key's active one (see the module comment).
    pub async fn activate_run(
        &self,
        id: Uuid,
        reason: ActivationReason,
        actor: Option<String>,
    ) -> Result<Activated, Error> {
        let target = self.operation(id).await?;
        let _key = self.key_locks[key_stripe(&target.key())].lock().await;
        if target.status == OperationStatus::Finished && target.collected.is_none() {
            self.ensure_whole_in_index(&target).await?;
        }
        let plan = self
            .engines
            .store
            .activate_operation(id, reason, actor, self.clock.now())
            .await?;
        let mut changed = vec![plan.operation.clone()];
        changed.extend(plan.deactivated.clone());
        self.engines.cache.put(&changed);
        self.engines.cache.activate(&plan.operation);
        if plan.changed() {
            let kind = match reason {
                ActivationReason::Finish => "finish",
                ActivationReason::Rollback => "rollback",
                ActivationReason::RollForward => "roll_forward",
            };
            metrics::counter!("annostore_operations_activated_total", "reason" => kind)
                .increment(1);
            info!(
                operation = %id,
                number = plan.operation.operation_number,
                deactivated = ?plan.deactivated.as_ref().map(|d| d.id),
                reason = kind,
                "active run moved"
            );
            self.publish(OperationEvent::Activated {
                operation: plan.operation.clone(),
                deactivated: plan.deactivated.clone().map(Box::new),
            })
            .await;
        }
        Ok(Activated {
            operation: plan.operation,
            deactivated: plan.deactivated,
            activation: plan.activation,
        })
    }

    /// Checks that the index holds every annotation of a FINISHED run, rebuilding the
    /// run's entries from the store when it does not: a run must become visible whole,
    /// and an inactive run is not audited, so its entries may have been lost.
    async fn ensure_whole_in_index(&self, op: &Operation) -> Result<(), Error> {
        let indexed = self.engines.index.count_operation(op.id).await?;
        if indexed == op.annotation_count {
            return Ok(());
        }
        warn!(
            operation = %op.id,
            store = op.annotation_count,
            index = indexed,
            "the index lacks part of a run about to become active; reindexing it first"
        );
        self.reindex_operation(op).await?;
        self.durable_now().await?;
        let indexed = self.engines.index.count_operation(op.id).await?;
        if indexed == op.annotation_count {
            return Ok(());
        }
        Err(Error::Unavailable {
            what: "index",
            detail: format!(
                "the index holds {indexed} of the {} annotations of operation {} after a reindex; it stays inactive",
                op.annotation_count, op.id
            ),
        })
    }
}
