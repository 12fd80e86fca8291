//! The cache of operation state: recent operations by id, and the visibility snapshot.
//! The store stays the authority; entries expire after a short TTL so a node that missed
//! a change (issue 3's multi-node case) converges on the store.

use crate::model::Operation;
use crate::visibility::Visibility;
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

pub trait OperationCache: Send + Sync + 'static {
    fn get(&self, id: &Uuid) -> Option<Operation>;
    /// Records the new state of these operations, and moves visibility for all of them
    /// in one step (a finish activates one run and deactivates another at once).
    fn put(&self, ops: &[Operation]);
    /// The current visibility snapshot.
    fn visibility(&self) -> Arc<Visibility>;
    /// Replaces the visibility snapshot with the store's active set.
    fn reset(&self, active: &[Operation]);
}

/// `moka` for operations, `arc-swap` for the snapshot.
pub struct MokaOperationCache {
    ops: moka::sync::Cache<Uuid, Operation>,
    visibility: ArcSwap<Visibility>,
    /// Serialises snapshot updates (read-modify-write of the ArcSwap).
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
        let current = self.visibility.load();
        let activate: Vec<Uuid> = ops.iter().filter(|o| o.active).map(|o| o.id).collect();
        let deactivate: Vec<Uuid> = ops
            .iter()
            .filter(|o| !o.active && current.is_active(&o.id))
            .map(|o| o.id)
            .collect();
        if !activate.iter().all(|id| current.is_active(id)) || !deactivate.is_empty() {
            self.visibility
                .store(Arc::new(current.with_change(&activate, &deactivate)));
        }
        for op in ops {
            self.ops.insert(op.id, op.clone());
        }
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
