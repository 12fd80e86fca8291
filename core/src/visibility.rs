//! Which operations are visible to search: an immutable snapshot of the active set.
//!
//! A search takes one snapshot and uses it to the end, so it never mixes two runs of a
//! key, even while a finish moves the active pointer. Snapshots share structure
//! (`imbl`), so a finish copies O(log n), not the whole set.

use imbl::HashMap;
use uuid::Uuid;

/// The 64-bit key of an operation that index documents carry: the low half of its
/// UUIDv7, which is random. Hits are re-checked on the full id after the store read.
pub fn op_key(id: &Uuid) -> u64 {
    let (_, low) = id.as_u64_pair();
    low
}

#[derive(Debug, Clone, Default)]
pub struct Visibility {
    active: HashMap<u64, Uuid>,
}

impl Visibility {
    pub fn from_active(ids: impl IntoIterator<Item = Uuid>) -> Visibility {
        Visibility {
            active: ids.into_iter().map(|id| (op_key(&id), id)).collect(),
        }
    }

    pub fn is_active(&self, id: &Uuid) -> bool {
        self.active.get(&op_key(id)) == Some(id)
    }

    pub fn is_active_key(&self, key: u64) -> bool {
        self.active.contains_key(&key)
    }

    /// The 64-bit keys of the active operations, in no particular order (what an
    /// external index filters on when the set is small enough to send).
    pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.active.keys().copied()
    }

    pub fn len(&self) -> usize {
        self.active.len()
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// The next snapshot: `activate` becomes visible, `deactivate` stops being.
    pub fn with_change(&self, activate: &[Uuid], deactivate: &[Uuid]) -> Visibility {
        let mut active = self.active.clone();
        for id in deactivate {
            if active.get(&op_key(id)) == Some(id) {
                active.remove(&op_key(id));
            }
        }
        for id in activate {
            active.insert(op_key(id), *id);
        }
        Visibility { active }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_do_not_move() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let v1 = Visibility::from_active([a]);
        let v2 = v1.with_change(&[b], &[a]);
        assert!(v1.is_active(&a) && !v1.is_active(&b));
        assert!(v2.is_active(&b) && !v2.is_active(&a));
        assert!(v2.is_active_key(op_key(&b)));
    }
}
