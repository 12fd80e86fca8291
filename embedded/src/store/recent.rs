//! Which annotation ids recent writes gave or took an owner, so ownership can be read
//! off the writer.
//!
//! An upsert must know, for each of its ids, whether another operation owns it, and the
//! answer must be atomic with the write. Reading a thousand random keys on the single
//! writer thread made it the bottleneck, so the upsert reads them on its caller first,
//! after noting the writer's [`Recent::mark`]. The writer then trusts a read unless the
//! id's owner changed after that mark (the log below says so), and re-reads only those
//! ids. An owner changes only when an id is first written (a new id) or when garbage
//! collection deletes it (`delete_annotations`); both log it, nothing else does. A read
//! older than what the log still remembers is re-done whole: slower, never wrong.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use uuid::Uuid;

/// Upserts the log remembers; callers read within milliseconds, so this is generous.
const KEPT_WRITES: usize = 4_096;

#[derive(Default)]
pub(crate) struct Recent {
    /// The sequence number of the last upsert applied; published after its commit.
    applied: AtomicU64,
    /// Only the writer thread touches the log (the mutex is never contended).
    log: parking_lot::Mutex<Log>,
}

#[derive(Default)]
struct Log {
    last_write: HashMap<Uuid, u64>,
    writes: VecDeque<(u64, Vec<Uuid>)>,
    /// Writes up to this sequence number are no longer in the log.
    forgotten_through: u64,
}

/// What a caller's reads can be checked against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark(u64);

/// How the writer must treat a caller's read of one id.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Check {
    Trust,
    Reread,
}

impl Recent {
    /// Taken before reading: every write at or before it is visible to the read.
    pub(crate) fn mark(&self) -> Mark {
        Mark(self.applied.load(Ordering::Acquire))
    }

    /// Writer only: records the ids whose owner a committed write changed (an upsert
    /// gave them one, or a collection deleted them).
    pub(crate) fn record(&self, ids: impl Iterator<Item = Uuid>) {
        let mut log = self.log.lock();
        let seq = self.applied.load(Ordering::Relaxed) + 1;
        let ids: Vec<Uuid> = ids.collect();
        for id in &ids {
            log.last_write.insert(*id, seq);
        }
        log.writes.push_back((seq, ids));
        while log.writes.len() > KEPT_WRITES {
            if let Some((old, ids)) = log.writes.pop_front() {
                for id in ids {
                    if log.last_write.get(&id) == Some(&old) {
                        log.last_write.remove(&id);
                    }
                }
                log.forgotten_through = old;
            }
        }
        self.applied.store(seq, Ordering::Release);
    }

    /// Writer only: the checks for reads taken at `mark`, or `None` if the log no
    /// longer reaches back that far (re-read everything).
    pub(crate) fn checks(&self, mark: Mark, ids: &[Uuid]) -> Option<Vec<Check>> {
        let log = self.log.lock();
        if mark.0 < log.forgotten_through {
            return None;
        }
        Some(
            ids.iter()
                .map(|id| match log.last_write.get(id) {
                    Some(&seq) if seq > mark.0 => Check::Reread,
                    _ => Check::Trust,
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_before_a_write_of_their_id_are_reread() {
        let recent = Recent::default();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        recent.record([a].into_iter());
        let mark = recent.mark();
        recent.record([b].into_iter());
        assert_eq!(
            recent.checks(mark, &[a, b]),
            Some(vec![Check::Trust, Check::Reread])
        );
        assert_eq!(
            recent.checks(recent.mark(), &[a, b]),
            Some(vec![Check::Trust, Check::Trust])
        );
    }

    #[test]
    fn reads_older_than_the_log_are_redone() {
        let recent = Recent::default();
        let mark = recent.mark();
        recent.record([Uuid::from_u128(9)].into_iter());
        for i in 0..KEPT_WRITES as u128 {
            recent.record([Uuid::from_u128(100 + i)].into_iter());
        }
        assert_eq!(recent.checks(mark, &[Uuid::from_u128(1)]), None);
        assert!(
            recent
                .checks(recent.mark(), &[Uuid::from_u128(1)])
                .is_some()
        );
    }
}
