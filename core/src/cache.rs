//! The cache of operation state: recent operations by id, and the visibility snapshot.
//! The store stays the authority; entries expire after a short TTL so a node that missed
//! a change converges on the store.
//!
//! Writers may race (an upsert's answer can arrive after a finish's), so operation entries
//! only ever move to a higher `version`, and visibility moves only by explicit activation,
//! which the service serialises per operation key.

use crate::model::Operation;
use crate::visibility::Visibility;
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

pub trait OperationCache: Send + Sync + 'static {
    fn get(&self, id: &Uuid) -> Option<Operation>;
    /// Records these operation states, ignoring any older than what is cached.
    fn put(&self, ops: &[Operation]);
    /// Makes `activated` visible and `deactivated` invisible, in one step.
    fn activate(&self, activated: Uuid, deactivated: Option<Uuid>);
    /// The current visibility snapshot.
    fn visibility(&self) -> Arc<Visibility>;
    /// Replaces the visibility snapshot with the store's active set.
    fn reset(&self, active: &[Operation]);
}

/// `moka` for operations, `arc-swap` for the snapshot.
pub struct MokaOperationCache {
    ops: moka::sync::Cache<Uuid, Operation>,
    visibility: ArcSwap<Visibility>,
    /// Serialises read-modify-write of the entries and of the snapshot.
    writer: Mutex<()>,
}

impl MokaOperationCache {
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        MokaOperationCache {
            ops: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            visibility: ArcSwap::from_pointee(Visibility::default()),
            writer: Mutex::new(()),
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
        let _guard = self.writer.lock();
        for op in ops {
            if self.ops.get(&op.id).is_none_or(|c| c.version <= op.version) {
                self.ops.insert(op.id, op.clone());
            }
        }
    }

    fn activate(&self, activated: Uuid, deactivated: Option<Uuid>) {
        let _guard = self.writer.lock();
        let next = self
            .visibility
            .load()
            .with_change(&[activated], deactivated.as_slice());
        self.visibility.store(Arc::new(next));
    }

    fn visibility(&self) -> Arc<Visibility> {
        self.visibility.load_full()
    }

    fn reset(&self, active: &[Operation]) {
        let _guard = self.writer.lock();
        self.visibility.store(Arc::new(Visibility::from_active(
            active.iter().map(|o| o.id),
        )));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::from_unix_ms;
    use crate::lifecycle;
    use crate::model::StartOperation;

    fn op() -> Operation {
        let req = StartOperation {
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
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        cache.activate(a, None);
        let before = cache.visibility();
        cache.activate(b, Some(a));
        let after = cache.visibility();
        assert!(before.is_active(&a) && !before.is_active(&b));
        assert!(after.is_active(&b) && !after.is_active(&a));
    }
}
