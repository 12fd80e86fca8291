//! The cache of operation state: recent operations by id, and the visibility snapshot.
//! The store stays the authority; entries expire after a short TTL so a node that missed
//! a change converges on the store.
//!
//! Writers may race (an upsert's answer can arrive after a finish's, another node's event
//! after this node's own update), so operation entries only ever move to a higher
//! `version`, and visibility only ever moves a key to a later activation (a higher
//! `activation` sequence number, then a higher `operation_number` for runs recorded
//! before activations were numbered): the cache remembers each key's active run, so
//! however activations arrive, an earlier one never replaces a later one (a rollback is
//! a later activation of an older run) and a key never has two runs visible.

use crate::model::{Operation, OperationKey};
use crate::visibility::Visibility;
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

pub trait OperationCache: Send + Sync + 'static {
    fn get(&self, id: &Uuid) -> Option<Operation>;
    /// Records these operation states, ignoring any older than what is cached.
    fn put(&self, ops: &[Operation]);
    /// Makes `op` its key's visible run, and the key's previous run invisible, in one
    /// step; unless a later activation of the key is already visible. Returns whether
    /// the snapshot changed.
    fn activate(&self, op: &Operation) -> bool;
    /// The current visibility snapshot.
    fn visibility(&self) -> Arc<Visibility>;
    /// Replaces the visibility snapshot with the store's active set.
    fn reset(&self, active: &[Operation]);
    /// Merges the store's active set, read at some point in the past, into the snapshot:
    /// each key moves to the store's run if its activation is later than the cached one, and keys
    /// the read did not see are left alone (a change after the read is newer than it).
    /// Returns how many keys moved.
    fn refresh(&self, active: &[Operation]) -> usize {
        active.iter().filter(|op| self.activate(op)).count()
    }
}

/// `moka` for operations, `arc-swap` for the snapshot.
pub struct MokaOperationCache {
    ops: moka::sync::Cache<Uuid, Operation>,
    visibility: ArcSwap<Visibility>,
    /// The visible run of each key, as (its activation order, id). Its lock serialises
    /// read-modify-write of the entries and of the snapshot.
    active: Mutex<HashMap<OperationKey, (ActivationOrder, Uuid)>>,
}

impl MokaOperationCache {
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        MokaOperationCache {
            ops: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            visibility: ArcSwap::from_pointee(Visibility::default()),
            active: Mutex::new(HashMap::new()),
        }
    }
}

impl Default for MokaOperationCache {
    fn default() -> Self {
        Self::new(100_000, Duration::from_secs(30))
    }
}

impl OperationCache for MokaOperationCache {
    fn get(&self, id: &Uuid) -> Option<Operation> {
        self.ops.get(id)
    }

    fn put(&self, ops: &[Operation]) {
        let _guard = self.active.lock();
        for op in ops {
            if self.ops.get(&op.id).is_none_or(|c| c.version <= op.version) {
                self.ops.insert(op.id, op.clone());
            }
        }
    }

    fn activate(&self, op: &Operation) -> bool {
        self.refresh(std::slice::from_ref(op)) == 1
    }

    fn visibility(&self) -> Arc<Visibility> {
        self.visibility.load_full()
    }

    fn reset(&self, ops: &[Operation]) {
        let mut active = self.active.lock();
        active.clear();
        for op in ops {
            advance(&mut active, op);
        }
        self.visibility.store(Arc::new(Visibility::from_active(
            active.values().map(|&(_, id)| id),
        )));
    }

    fn refresh(&self, ops: &[Operation]) -> usize {
        let mut active = self.active.lock();
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for op in ops {
            if let Some(previous) = advance(&mut active, op) {
                on.push(op.id);
                off.extend(previous);
            }
        }
        if !on.is_empty() {
            let next = self.visibility.load().with_change(&on, &off);
            self.visibility.store(Arc::new(next));
        }
        on.len()
    }
}

/// Where an activation stands among its key's: the activation sequence number, then
/// the run's number (runs stored before activations were numbered all have 0).
type ActivationOrder = (u64, u64);

fn order(op: &Operation) -> ActivationOrder {
    (op.activation, op.operation_number)
}

/// Makes `op` its key's run in `active` if its activation is later than that of the
/// key's run there. None when it is not; else the run it replaced, if any.
fn advance(
    active: &mut HashMap<OperationKey, (ActivationOrder, Uuid)>,
    op: &Operation,
) -> Option<Option<Uuid>> {
    let previous = match active.get(&op.key()) {
        Some(&(at, _)) if at >= order(op) => return None,
        current => current.map(|&(_, id)| id),
    };
    active.insert(op.key(), (order(op), op.id));
    Some(previous)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::from_unix_ms;
    use crate::lifecycle;
    use crate::model::StartOperation;

    fn op() -> Operation {
        let req = StartOperation {
            producer: None,
            annotation_type: "t".into(),
            annotation_type_version: 1,
            pivot_id: "p".into(),
            lease_seconds: None,
            metadata: None,
        };
        lifecycle::start(&req, Uuid::now_v7(), None, 60, from_unix_ms(0))
    }

    #[test]
    fn older_states_never_replace_newer_ones() {
        let cache = MokaOperationCache::default();
        let started = op();
        let finished = lifecycle::finish(&started, None, from_unix_ms(1))
            .unwrap()
            .operation;
        cache.put(std::slice::from_ref(&finished));
        cache.put(std::slice::from_ref(&started));
        assert_eq!(cache.get(&started.id), Some(finished));
    }

    #[test]
    fn activation_swaps_in_one_step() {
        let cache = MokaOperationCache::default();
        let (a, b) = (op(), next(&op()));
        assert!(cache.activate(&a));
        let before = cache.visibility();
        assert!(cache.activate(&b));
        let after = cache.visibility();
        assert!(before.is_active(&a.id) && !before.is_active(&b.id));
        assert!(after.is_active(&b.id) && !after.is_active(&a.id));
    }

    /// A run of the same key numbered one past `op`.
    fn next(op: &Operation) -> Operation {
        Operation {
            id: Uuid::now_v7(),
            operation_number: op.operation_number + 1,
            ..op.clone()
        }
    }

    #[test]
    fn an_older_run_never_replaces_a_newer_one() {
        let cache = MokaOperationCache::default();
        let run1 = op();
        let run2 = next(&run1);
        assert!(cache.activate(&run2));
        assert!(!cache.activate(&run1), "run 1 arrives late");
        assert!(!cache.activate(&run2), "again: nothing changes");
        let v = cache.visibility();
        assert!(v.is_active(&run2.id) && !v.is_active(&run1.id));
        assert_eq!(v.len(), 1);
    }

    #[test]
    fn keys_move_independently() {
        let cache = MokaOperationCache::default();
        let a = op();
        let b = Operation {
            id: Uuid::now_v7(),
            pivot_id: "other".into(),
            ..a.clone()
        };
        assert!(cache.activate(&a) && cache.activate(&b));
        let a2 = next(&a);
        assert!(cache.activate(&a2));
        let v = cache.visibility();
        assert!(v.is_active(&a2.id) && v.is_active(&b.id) && !v.is_active(&a.id));
    }

    #[test]
    fn a_refresh_from_an_older_read_keeps_newer_runs() {
        let cache = MokaOperationCache::default();
        let run1 = op();
        let run2 = next(&run1);
        let run3 = next(&run2);
        let other = Operation {
            id: Uuid::now_v7(),
            pivot_id: "other".into(),
            ..run1.clone()
        };
        cache.reset(std::slice::from_ref(&run1));
        cache.activate(&run3);
        // The store was read while run 2 was the key's newest, and did not see `other`
        // yet, which this node activated since.
        cache.activate(&other);
        assert_eq!(cache.refresh(std::slice::from_ref(&run2)), 0);
        let v = cache.visibility();
        assert!(v.is_active(&run3.id) && v.is_active(&other.id));
        assert_eq!(v.len(), 2);
        // A read that is ahead of the cache moves the key.
        let run4 = next(&run3);
        assert_eq!(cache.refresh(&[run4.clone(), other.clone()]), 1);
        let v = cache.visibility();
        assert!(v.is_active(&run4.id) && !v.is_active(&run3.id) && v.is_active(&other.id));
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn reset_replaces_everything() {
        let cache = MokaOperationCache::default();
        let run1 = op();
        let run2 = next(&run1);
        cache.activate(&run2);
        cache.reset(std::slice::from_ref(&run1));
        let v = cache.visibility();
        assert!(v.is_active(&run1.id) && !v.is_active(&run2.id));
        // The key's remembered run went with the reset: run 2 can come back.
        assert!(cache.activate(&run2));
    }

    #[test]
    fn a_rollback_is_a_later_activation_of_an_older_run() {
        let cache = MokaOperationCache::default();
        let run1 = Operation {
            activation: 1,
            ..op()
        };
        let run2 = Operation {
            activation: 2,
            ..next(&run1)
        };
        assert!(cache.activate(&run1) && cache.activate(&run2));
        let back = Operation {
            activation: 3,
            version: run1.version + 1,
            ..run1.clone()
        };
        assert!(
            cache.activate(&back),
            "the rollback moves the key back to run 1"
        );
        assert!(
            !cache.activate(&run2),
            "run 2's late activation event changes nothing"
        );
        assert!(!cache.activate(&run1), "nor run 1's first activation");
        let v = cache.visibility();
        assert!(v.is_active(&run1.id) && !v.is_active(&run2.id));
        assert_eq!(v.len(), 1);
    }
}
