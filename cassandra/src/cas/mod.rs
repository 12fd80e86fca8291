//! Compare-and-set decisions, kept above the driver so they are tested without a cluster.
//!
//! Many API nodes write one key at once. Operation numbers and the key's active pointer
//! move only by conditional writes (`INSERT ... IF NOT EXISTS`, `UPDATE ... IF col = ?`);
//! this module decides what a writer does when its write did not apply: re-read and
//! retry (bounded by [`Attempts`]), or settle on the outcome someone else made.
//!
//! The active pointer moves only from an older run to a newer one
//! ([`pointer_step`]), so whatever the interleaving of finishers, the pointer ends on
//! the newest finished run, and each loser records itself inactive, superseded by it.

use annostore_core::model::Operation;
use annostore_core::store::{StoreError, StoreResult};
use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

/// Conditional writes tried before giving up on a contended row.
pub const MAX_ATTEMPTS: u32 = 64;

/// A bounded retry budget for one contended row.
#[derive(Debug)]
pub struct Attempts {
    what: &'static str,
    done: u32,
    max: u32,
}

impl Attempts {
    pub fn new(what: &'static str) -> Attempts {
        Attempts::with_max(what, MAX_ATTEMPTS)
    }

    pub fn with_max(what: &'static str, max: u32) -> Attempts {
        Attempts { what, done: 0, max }
    }

    /// Takes one attempt; fails once the budget is spent (the row stayed contended).
    pub fn take(&mut self) -> StoreResult<()> {
        if self.done >= self.max {
            return Err(StoreError::Io(format!(
                "{}: gave up after {} conflicting conditional writes",
                self.what, self.done
            )));
        }
        self.done += 1;
        Ok(())
    }
}

/// How a start claims the next operation number of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberClaim {
    /// The key has no state row: `INSERT ... (last_number = 1) IF NOT EXISTS`.
    First,
    /// `UPDATE ... SET last_number = next IF last_number = expect`.
    Advance { expect: u64, next: u64 },
}

impl NumberClaim {
    /// The claim to try, given the key's last number as just read. When it does not
    /// apply, another start took the number: re-read and claim again.
    pub fn after(last: Option<u64>) -> NumberClaim {
        match last {
            None => NumberClaim::First,
            Some(n) => NumberClaim::Advance {
                expect: n,
                next: n + 1,
            },
        }
    }

    pub fn number(self) -> u64 {
        match self {
            NumberClaim::First => 1,
            NumberClaim::Advance { next, .. } => next,
        }
    }
}

/// What a finisher whose run is FINISHED and marked active does with the key's pointer,
/// given the run the pointer names now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PointerStep {
    /// Move the pointer from `expect` to this run, then deactivate `expect`.
    Move { expect: Option<Uuid> },
    /// The pointer already names this run (a retried or resumed finish).
    AlreadyMine,
    /// A newer run is active: this run is recorded inactive, superseded by it.
    Superseded { by: Uuid },
}

pub fn pointer_step(mine: &Operation, current: Option<&Operation>) -> PointerStep {
    match current {
        None => PointerStep::Move { expect: None },
        Some(c) if c.id == mine.id => PointerStep::AlreadyMine,
        Some(c) if c.operation_number > mine.operation_number => {
            PointerStep::Superseded { by: c.id }
        }
        Some(c) => PointerStep::Move { expect: Some(c.id) },
    }
}

/// The previously active run once `by` took the pointer from it; `None` when it is
/// already recorded inactive (nothing to write).
pub fn deactivated(prev: &Operation, by: Uuid, now: OffsetDateTime) -> Option<Operation> {
    prev.active.then(|| Operation {
        active: false,
        superseded_by: Some(by),
        updated_at: now,
        version: prev.version + 1,
        ..prev.clone()
    })
}

/// A run that finished marked active but lost the pointer to a newer run `by`.
pub fn superseded(mine: &Operation, by: Uuid, now: OffsetDateTime) -> Option<Operation> {
    (mine.active || mine.superseded_by != Some(by)).then(|| Operation {
        active: false,
        superseded_by: Some(by),
        updated_at: now,
        version: mine.version + 1,
        ..mine.clone()
    })
}

/// The rows the pointer protocol reads and conditionally writes. The store implements
/// it on the driver; the tests on memory, with other writers cutting in.
#[async_trait]
pub trait PointerCell: Send {
    /// The run the key's pointer names now (loaded from its row), if any.
    async fn current(&mut self) -> StoreResult<Option<Operation>>;
    /// `UPDATE key_state SET active_id = to IF active_id = expect`.
    async fn move_pointer(&mut self, expect: Option<Uuid>, to: Uuid) -> StoreResult<bool>;
    /// Re-reads an operation.
    async fn load(&mut self, id: Uuid) -> StoreResult<Option<Operation>>;
    /// `UPDATE operations SET ... IF version = expect_version`.
    async fn write_op(&mut self, op: &Operation, expect_version: u64) -> StoreResult<bool>;
}

/// How a finish ended once the pointer settled.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    /// This run as stored at the end (inactive and superseded if it lost).
    pub operation: Operation,
    /// The run this finish took the pointer from, as recorded inactive.
    pub deactivated: Option<Operation>,
    /// True when this call moved the pointer to the run.
    pub moved: bool,
}

/// Moves the key's pointer to `mine` (FINISHED, marked active in its row), or records
/// `mine` superseded when a newer run holds it. Each failed conditional write re-reads
/// and decides again, within `attempts`.
pub async fn settle_pointer<C: PointerCell>(
    cell: &mut C,
    mut mine: Operation,
    now: OffsetDateTime,
    attempts: &mut Attempts,
) -> StoreResult<Settled> {
    loop {
        attempts.take()?;
        let current = cell.current().await?;
        match pointer_step(&mine, current.as_ref()) {
            PointerStep::AlreadyMine => {
                return Ok(Settled {
                    operation: mine,
                    deactivated: None,
                    moved: false,
                });
            }
            PointerStep::Superseded { by } => {
                while let Some(next) = superseded(&mine, by, now) {
                    if cell.write_op(&next, mine.version).await? {
                        mine = next;
                        break;
                    }
                    attempts.take()?;
                    mine = reload(cell, mine.id).await?;
                }
                return Ok(Settled {
                    operation: mine,
                    deactivated: None,
                    moved: false,
                });
            }
            PointerStep::Move { expect } => {
                if !cell.move_pointer(expect, mine.id).await? {
                    tracing::debug!(operation = %mine.id, ?expect, "active pointer moved meanwhile; re-reading");
                    continue;
                }
                let deactivated = match expect {
                    Some(prev) => deactivate(cell, prev, mine.id, now, attempts).await?,
                    None => None,
                };
                return Ok(Settled {
                    operation: mine,
                    deactivated,
                    moved: true,
                });
            }
        }
    }
}

async fn reload<C: PointerCell>(cell: &mut C, id: Uuid) -> StoreResult<Operation> {
    cell.load(id).await?.ok_or_else(|| StoreError::NotFound {
        what: "operation",
        id: id.to_string(),
    })
}

/// Records `prev` inactive after `by` took the pointer from it.
async fn deactivate<C: PointerCell>(
    cell: &mut C,
    prev: Uuid,
    by: Uuid,
    now: OffsetDateTime,
    attempts: &mut Attempts,
) -> StoreResult<Option<Operation>> {
    loop {
        let current = reload(cell, prev).await?;
        let Some(next) = deactivated(&current, by, now) else {
            return Ok(None);
        };
        if cell.write_op(&next, current.version).await? {
            return Ok(Some(next));
        }
        attempts.take()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use annostore_core::clock::from_unix_ms;
    use annostore_core::lifecycle;
    use annostore_core::model::StartOperation;
    use std::collections::HashMap;

    fn run(number: u64) -> Operation {
        let req = StartOperation {
            producer: None,
            annotation_type: "objects".into(),
            annotation_type_version: 1,
            pivot_id: "p".into(),
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
        // Finished and marked active in its own row, as a finisher leaves it before
        // moving the pointer.
        lifecycle::finish(&op, None, from_unix_ms(1_000))
            .unwrap()
            .operation
    }

    #[test]
    fn number_claims() {
        assert_eq!(NumberClaim::after(None), NumberClaim::First);
        assert_eq!(NumberClaim::after(None).number(), 1);
        let c = NumberClaim::after(Some(4));
        assert_eq!(c, NumberClaim::Advance { expect: 4, next: 5 });
        assert_eq!(c.number(), 5);
    }

    #[test]
    fn attempts_are_bounded() {
        let mut a = Attempts::with_max("x", 2);
        assert!(a.take().is_ok());
        assert!(a.take().is_ok());
        assert!(matches!(a.take(), Err(StoreError::Io(m)) if m.contains("gave up after 2")));
    }

    #[test]
    fn pointer_moves_only_forward() {
        let (one, two) = (run(1), run(2));
        assert_eq!(pointer_step(&two, None), PointerStep::Move { expect: None });
        assert_eq!(
            pointer_step(&two, Some(&one)),
            PointerStep::Move {
                expect: Some(one.id)
            }
        );
        assert_eq!(
            pointer_step(&one, Some(&two)),
            PointerStep::Superseded { by: two.id }
        );
        assert_eq!(pointer_step(&two, Some(&two)), PointerStep::AlreadyMine);
    }

    #[test]
    fn deactivate_and_supersede_write_only_changes() {
        let (one, two) = (run(1), run(2));
        let d = deactivated(&one, two.id, from_unix_ms(5)).unwrap();
        assert!(!d.active);
        assert_eq!(d.superseded_by, Some(two.id));
        assert_eq!(d.version, one.version + 1);
        assert_eq!(deactivated(&d, two.id, from_unix_ms(6)), None);
        let s = superseded(&one, two.id, from_unix_ms(5)).unwrap();
        assert!(!s.active);
        assert_eq!(superseded(&s, two.id, from_unix_ms(6)), None);
    }

    type CutIn = Box<dyn FnOnce(&mut Memory) + Send>;

    /// Memory rows, with a hook that lets "another node" write just before a
    /// conditional write of ours.
    struct Memory {
        pointer: Option<Uuid>,
        ops: HashMap<Uuid, Operation>,
        before_cas: Vec<CutIn>,
        failed_cas: u32,
    }

    impl Memory {
        fn new(ops: &[&Operation]) -> Memory {
            Memory {
                pointer: None,
                ops: ops.iter().map(|o| (o.id, (*o).clone())).collect(),
                before_cas: Vec::new(),
                failed_cas: 0,
            }
        }
        fn cut_in(&mut self) {
            if !self.before_cas.is_empty() {
                let f = self.before_cas.remove(0);
                f(self);
            }
        }
    }

    #[async_trait]
    impl PointerCell for Memory {
        async fn current(&mut self) -> StoreResult<Option<Operation>> {
            Ok(self.pointer.and_then(|p| self.ops.get(&p).cloned()))
        }
        async fn move_pointer(&mut self, expect: Option<Uuid>, to: Uuid) -> StoreResult<bool> {
            self.cut_in();
            if self.pointer == expect {
                self.pointer = Some(to);
                Ok(true)
            } else {
                self.failed_cas += 1;
                Ok(false)
            }
        }
        async fn load(&mut self, id: Uuid) -> StoreResult<Option<Operation>> {
            Ok(self.ops.get(&id).cloned())
        }
        async fn write_op(&mut self, op: &Operation, expect_version: u64) -> StoreResult<bool> {
            self.cut_in();
            let cur = self.ops.get(&op.id).map(|o| o.version);
            if cur == Some(expect_version) {
                self.ops.insert(op.id, op.clone());
                Ok(true)
            } else {
                self.failed_cas += 1;
                Ok(false)
            }
        }
    }

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn first_finish_takes_the_empty_pointer() {
        let one = run(1);
        let mut m = Memory::new(&[&one]);
        let s = block(settle_pointer(
            &mut m,
            one.clone(),
            from_unix_ms(2),
            &mut Attempts::new("t"),
        ))
        .unwrap();
        assert_eq!(m.pointer, Some(one.id));
        assert_eq!(s.operation, one);
        assert_eq!(s.deactivated, None);
    }

    #[test]
    fn older_finisher_that_loses_the_race_is_superseded() {
        // Both read an empty pointer; the newer run's node moves it first.
        let (one, two) = (run(1), run(2));
        let mut m = Memory::new(&[&one, &two]);
        let two_id = two.id;
        m.before_cas.push(Box::new(move |m: &mut Memory| {
            m.pointer = Some(two_id);
        }));
        let s = block(settle_pointer(
            &mut m,
            one.clone(),
            from_unix_ms(2),
            &mut Attempts::new("t"),
        ))
        .unwrap();
        assert_eq!(m.failed_cas, 1);
        assert_eq!(m.pointer, Some(two.id), "the newest run stays active");
        assert!(!s.operation.active);
        assert_eq!(s.operation.superseded_by, Some(two.id));
        assert_eq!(m.ops[&one.id], s.operation, "stored as returned");
        assert!(m.ops[&two.id].active);
    }

    #[test]
    fn newer_finisher_that_loses_the_race_takes_over_and_deactivates() {
        // Both read an empty pointer; the older run's node moves it first.
        let (one, two) = (run(1), run(2));
        let mut m = Memory::new(&[&one, &two]);
        let one_id = one.id;
        m.before_cas.push(Box::new(move |m: &mut Memory| {
            m.pointer = Some(one_id);
        }));
        let s = block(settle_pointer(
            &mut m,
            two.clone(),
            from_unix_ms(2),
            &mut Attempts::new("t"),
        ))
        .unwrap();
        assert_eq!(m.failed_cas, 1);
        assert_eq!(m.pointer, Some(two.id));
        assert_eq!(s.operation, two);
        let d = s.deactivated.unwrap();
        assert_eq!(d.id, one.id);
        assert!(!d.active);
        assert_eq!(d.superseded_by, Some(two.id));
        assert_eq!(m.ops[&one.id], d);
    }

    #[test]
    fn deactivation_retries_when_the_old_row_changed() {
        let (one, two) = (run(1), run(2));
        let mut m = Memory::new(&[&one, &two]);
        m.pointer = Some(one.id);
        // Skip the pointer CAS, then bump one's version just before its deactivation.
        m.before_cas.push(Box::new(|_: &mut Memory| {}));
        let one_id = one.id;
        m.before_cas.push(Box::new(move |m: &mut Memory| {
            if let Some(o) = m.ops.get_mut(&one_id) {
                o.version += 1;
            }
        }));
        let s = block(settle_pointer(
            &mut m,
            two.clone(),
            from_unix_ms(2),
            &mut Attempts::new("t"),
        ))
        .unwrap();
        assert_eq!(m.failed_cas, 1);
        let d = s.deactivated.unwrap();
        assert_eq!(d.version, one.version + 2);
        assert!(!m.ops[&one.id].active);
    }

    #[test]
    fn endless_contention_gives_up() {
        let (one, two) = (run(1), run(2));
        let mut m = Memory::new(&[&one, &two]);
        for _ in 0..10 {
            m.before_cas.push(Box::new(|m: &mut Memory| {
                m.pointer = Some(Uuid::new_v4());
            }));
        }
        let err = block(settle_pointer(
            &mut m,
            two,
            from_unix_ms(2),
            &mut Attempts::with_max("t", 3),
        ))
        .unwrap_err();
        assert!(matches!(err, StoreError::Io(_)), "{err:?}");
    }
}
