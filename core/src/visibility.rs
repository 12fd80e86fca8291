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
    /// XOR of [`view_hash`] over the active ids: equal sets have equal fingerprints on
    /// every node, and a change costs one XOR per id (see [`Visibility::fingerprint`]).
    fingerprint: u64,
}

/// splitmix64's finaliser: a well-mixed 64-bit hash of a 64-bit value. Hand-written
/// because it is three lines and must never change between versions (page tokens carry
/// its results).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// An operation id's share of a view's fingerprint.
pub fn view_hash(id: &Uuid) -> u64 {
    let (hi, lo) = id.as_u64_pair();
    mix(hi ^ mix(lo))
}

impl Visibility {
    pub fn from_active(ids: impl IntoIterator<Item = Uuid>) -> Visibility {
        let active: HashMap<u64, Uuid> = ids.into_iter().map(|id| (op_key(&id), id)).collect();
        let fingerprint = active.values().fold(0, |f, id| f ^ view_hash(id));
        Visibility {
            active,
            fingerprint,
        }
    }

    /// A fingerprint of the active set: page tokens carry it, so a later page knows
    /// whether it sees the same runs as the first (on any node).
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
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
        let mut fingerprint = self.fingerprint;
        for id in deactivate {
            if active.get(&op_key(id)) == Some(id) {
                active.remove(&op_key(id));
                fingerprint ^= view_hash(id);
            }
        }
        for id in activate {
            if let Some(old) = active.insert(op_key(id), *id) {
                fingerprint ^= view_hash(&old);
            }
            fingerprint ^= view_hash(id);
        }
        Visibility {
            active,
            fingerprint,
        }
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

    #[test]
    fn fingerprints_follow_the_set_not_its_history() {
        let ids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
        let v = Visibility::from_active(ids[..2].iter().copied());
        let w = v
            .with_change(&[ids[2]], &[ids[0]])
            .with_change(&[ids[0]], &[ids[2]]);
        assert_eq!(v.fingerprint(), w.fingerprint());
        let x = v.with_change(&[ids[3]], &[]);
        assert_ne!(v.fingerprint(), x.fingerprint());
        assert_eq!(
            x.fingerprint(),
            Visibility::from_active([ids[0], ids[1], ids[3]]).fingerprint()
        );
        // Re-activating an active id changes nothing.
        assert_eq!(x.with_change(&[ids[3]], &[]).fingerprint(), x.fingerprint());
    }
}
