//! A key's activation history (`activations`, written by the pointer moves of
//! [`crate::cas::pointer`]), read newest first. A move that stopped between the
//! pointer's compare-and-set and the history insert leaves the active run without its
//! entry: the read fills it in from the run's row ([`recovered`]).

use super::*;

impl CassandraStore {
    pub(super) async fn history(
        &self,
        key: &OperationKey,
        limit: usize,
    ) -> StoreResult<Vec<Activation>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // The pointer first: an entry written after this read is then the active
        // run's own, never one this read would fill in for a run no longer active.
        let (_, at) = self.key_state(key).await?;
        let max = self.inner.honoured.then_some(limit);
        let rows = self
            .st()
            .activations_get
            .rows_up_to(self.s(), key_values(key)?, max)
            .await?;
        let mut out = rows
            .iter()
            .map(|r| from_json::<Activation>("activation", text_at(r, 0)?))
            .collect::<StoreResult<Vec<_>>>()?;
        out.sort_unstable_by_key(|a| std::cmp::Reverse(a.sequence));
        out.dedup_by_key(|a| a.sequence);
        let active = match at.id {
            Some(id) => self.load_op(id).await?,
            None => None,
        };
        let newest = out.first().map_or(0, |a| a.sequence);
        if let Some(active) = active.filter(|a| a.activation > newest) {
            tracing::debug!(operation = %active.id, sequence = active.activation, "activation entry missing; filled in from the run");
            let runs = self.runs_of(key).await?;
            out.insert(0, recovered(&active, &runs));
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Every run of a key (its own partition: a key has few).
    async fn runs_of(&self, key: &OperationKey) -> StoreResult<Vec<Operation>> {
        let rows = self
            .st()
            .key_ops_get
            .rows(self.s(), key_values(key)?)
            .await?;
        let ids = rows
            .iter()
            .map(|r| uuid_at(r, 1))
            .collect::<StoreResult<Vec<_>>>()?;
        self.load_ops(ids).await
    }
}

/// The history entry of `active` (the run the key's pointer names) rebuilt from the
/// runs of its key, for a move that stopped before writing it. The run before it is
/// the one that held the number below (preferring one recorded superseded by it);
/// when none or several did, it is left out. Why it moved: a finish sets the run's
/// `updated_at` to its `finished_at` and an activation later, so a finish is told
/// apart; otherwise a newer run before it means a rollback, else a roll forward. The
/// actor is known only for a finish (its producer); the time is the run's last change.
pub fn recovered(active: &Operation, runs: &[Operation]) -> Activation {
    let below = active.activation.saturating_sub(1);
    let held: Vec<&Operation> = runs
        .iter()
        .filter(|r| r.id != active.id && below > 0 && r.activation == below)
        .collect();
    let superseded: Vec<&Operation> = held
        .iter()
        .copied()
        .filter(|r| r.superseded_by == Some(active.id))
        .collect();
    let previous = match (superseded.as_slice(), held.as_slice()) {
        ([one], _) | ([], [one]) => Some(*one),
        _ => None,
    };
    let reason = if active.finished_at == Some(active.updated_at) {
        ActivationReason::Finish
    } else if previous.is_some_and(|p| p.operation_number > active.operation_number) {
        ActivationReason::Rollback
    } else {
        ActivationReason::RollForward
    };
    let actor = match reason {
        ActivationReason::Finish => active.producer.clone(),
        _ => None,
    };
    Activation {
        annotation_type: active.annotation_type.clone(),
        annotation_type_version: active.annotation_type_version,
        pivot_id: active.pivot_id.clone(),
        sequence: active.activation,
        operation_id: active.id,
        operation_number: active.operation_number,
        previous: previous.map(|p| p.id),
        reason,
        actor,
        at: active.updated_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use annostore_core::clock::from_unix_ms;
    use annostore_core::model::StartOperation;

    fn finished(number: u64, activation: u64) -> Operation {
        let req = StartOperation {
            producer: Some("p".into()),
            annotation_type: "objects".into(),
            annotation_type_version: 1,
            pivot_id: "k".into(),
            lease_seconds: None,
            metadata: None,
        };
        let op = lifecycle::start(
            &req,
            Uuid::now_v7(),
            number.checked_sub(1),
            60,
            from_unix_ms(0),
        );
        Operation {
            activation,
            active: false,
            ..lifecycle::finish(&op, None, from_unix_ms(1_000))
                .unwrap()
                .operation
        }
    }

    #[test]
    fn a_finish_is_recovered_with_the_run_before_it() {
        let one = finished(1, 1);
        let two = Operation {
            active: true,
            ..finished(2, 2)
        };
        let e = recovered(&two, &[one.clone(), two.clone()]);
        assert_eq!((e.sequence, e.operation_id), (2, two.id));
        assert_eq!(e.previous, Some(one.id));
        assert_eq!(e.reason, ActivationReason::Finish);
        assert_eq!(e.actor.as_deref(), Some("p"));
    }

    #[test]
    fn a_rollback_is_told_from_a_finish_by_its_time() {
        let two = finished(2, 2);
        let one = Operation {
            active: true,
            activation: 3,
            updated_at: from_unix_ms(9_000),
            ..finished(1, 1)
        };
        // A run that never held 2 but was recorded superseded by it is preferred.
        let other = Operation {
            superseded_by: Some(one.id),
            ..finished(3, 2)
        };
        let e = recovered(&one, &[one.clone(), two.clone()]);
        assert_eq!(
            (e.previous, e.reason, e.actor),
            (Some(two.id), ActivationReason::Rollback, None)
        );
        assert_eq!(e.at, from_unix_ms(9_000));
        let e = recovered(&one, &[one.clone(), two.clone(), other.clone()]);
        assert_eq!(e.previous, Some(other.id));
        assert_eq!(e.reason, ActivationReason::Rollback);
        let forward = Operation {
            updated_at: from_unix_ms(9_000),
            ..finished(4, 3)
        };
        let e = recovered(&forward, &[forward.clone(), two.clone()]);
        assert_eq!(e.reason, ActivationReason::RollForward);
    }

    #[test]
    fn an_ambiguous_or_missing_previous_is_left_out() {
        let (a, b) = (finished(1, 1), finished(2, 1));
        let c = Operation {
            active: true,
            ..finished(3, 2)
        };
        assert_eq!(recovered(&c, &[a, b, c.clone()]).previous, None);
        let first = Operation {
            active: true,
            ..finished(1, 1)
        };
        assert_eq!(
            recovered(&first, std::slice::from_ref(&first)).previous,
            None
        );
    }
}
