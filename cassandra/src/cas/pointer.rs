//! The key's active pointer (`key_state.active_id`) and its activation sequence
//! (`key_state.active_sequence`), moved together by one compare-and-set on both.
//!
//! # A move
//!
//! Every move of the pointer to a run X, by a finish or an activation, goes:
//!
//! 1. read the pointer P (the run C it names, loaded, and its sequence s);
//! 2. compare-and-set X's row on its version: FINISHED, marked active, `activation`
//!    = s + 1 (the *touch*; a finish's own STARTED -> FINISHED write is its touch);
//! 3. move the pointer to (X, s + 1) `IF active_id = C AND active_sequence = s`;
//! 4. insert the history row (key, s + 1);
//! 5. record C inactive, superseded by X: a compare-and-set on C's version, only while
//!    C's row still carries the activation number it had in P.
//!
//! A step 3 that does not apply goes back to 1 and, when the new pointer calls for
//! it, to 2 again with the new number: the number a run gets is always the one its
//! move took. The sequence in the condition makes the move ABA-free: a run that left
//! the pointer and came back (a rollback) comes back with a higher sequence, so a move
//! decided on the old state fails. Step 2 right before step 3, on every round, makes
//! any writer that recorded X inactive meanwhile (a second finisher of X that saw a
//! newer run active, a garbage collection) fail either its own write or X's move. The
//! deactivation's check of C's number (step 5) leaves C alone when C became active
//! again after the move (a later rollback to C is not undone).
//!
//! # Crash windows
//!
//! - Between 2 and 3: X's row says active while the pointer names C. The pointer is
//!   the truth (`active_operations`, activations, finishes read it); finishing X again
//!   resumes the move ([`settle_pointer`] on a FINISHED row marked active), and so does
//!   activating X again ([`activate`] plans from the pointer, not the row). A move that
//!   gives up (its [`Attempts`] spent) leaves the same state, as does a failed call
//!   after step 2: a conditional write that timed out may have applied, so the row is
//!   never "unmarked" afterwards.
//! - Between 3 and 4: the pointer names X and the history lacks its entry.
//!   `Store::activations` fills in the active run's entry from its row (its number,
//!   the run before it and why, inferred). Once the pointer moves on, that number
//!   stays missing from the history.
//! - Between 4 and 5 (or 3 and 5): C's row still says active though the pointer names
//!   X. Nothing repairs it; readers of the active set are right, a listing of C's row
//!   is not.

use super::Attempts;
use annostore_core::lifecycle::{self, ActivationPlan};
use annostore_core::model::{Activation, ActivationReason, Operation};
use annostore_core::store::{StoreError, StoreResult};
use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

/// Where the key's pointer stands: the run it names and the sequence number that run
/// took. Both absent before the key's first activation; the sequence absent too on
/// keys last activated before sequences were kept (their runs carry `activation` 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PointerAt {
    pub id: Option<Uuid>,
    pub sequence: Option<u64>,
}

/// The pointer as read, with the run it names loaded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pointer {
    pub at: PointerAt,
    pub run: Option<Operation>,
}

impl Pointer {
    /// The sequence number the next move from here takes: one more than the current
    /// run's (the larger of the pointer's and the run's own, should they differ).
    pub fn next_sequence(&self) -> u64 {
        let run = self.run.as_ref().map_or(0, |r| r.activation);
        self.at.sequence.unwrap_or(0).max(run) + 1
    }

    pub fn names(&self, id: Uuid) -> bool {
        self.at.id == Some(id)
    }
}

/// Operation rows: read, and written by compare-and-set on their version.
#[async_trait]
pub trait OpCell: Send {
    /// Re-reads an operation.
    async fn load(&mut self, id: Uuid) -> StoreResult<Option<Operation>>;
    /// `UPDATE operations SET ... IF version = expect_version`.
    async fn write_op(&mut self, op: &Operation, expect_version: u64) -> StoreResult<bool>;
}

/// The rows of a key's pointer protocol. The store implements it on the driver; the
/// tests on memory, with other writers cutting in.
#[async_trait]
pub trait PointerCell: OpCell {
    /// The pointer as it stands now, with the run it names.
    async fn current(&mut self) -> StoreResult<Pointer>;
    /// `UPDATE key_state SET active_id, active_sequence = to
    ///  IF active_id = from.id AND active_sequence = from.sequence`.
    async fn move_pointer(&mut self, from: PointerAt, to: PointerAt) -> StoreResult<bool>;
    /// Inserts the history row of `activation` (idempotent: keyed by its sequence).
    async fn record(&mut self, activation: &Activation) -> StoreResult<()>;
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

/// A finish's rule: the pointer moves only from an older run to a newer one.
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

/// Why the pointer moves, for the history.
#[derive(Debug, Clone, PartialEq)]
pub struct Why {
    pub reason: ActivationReason,
    pub actor: Option<String>,
}

/// `mine`'s row marked active with activation number `sequence` (a move's touch).
pub fn numbered(mine: &Operation, sequence: u64, now: OffsetDateTime) -> Operation {
    Operation {
        active: true,
        superseded_by: None,
        activation: sequence,
        updated_at: now,
        version: mine.version + 1,
        ..mine.clone()
    }
}

/// The history entry of `run` taking the pointer from `previous`.
pub fn record(
    run: &Operation,
    previous: Option<&Operation>,
    why: &Why,
    now: OffsetDateTime,
) -> Activation {
    Activation {
        annotation_type: run.annotation_type.clone(),
        annotation_type_version: run.annotation_type_version,
        pivot_id: run.pivot_id.clone(),
        sequence: run.activation,
        operation_id: run.id,
        operation_number: run.operation_number,
        previous: previous.map(|p| p.id),
        reason: why.reason,
        actor: why.actor.clone(),
        at: now,
    }
}

/// The previously active run once `by` took the pointer from it, when it held the
/// pointer at activation number `taken_at`. `None` when there is nothing to write: it
/// is recorded inactive already, or it became active again since (a later activation
/// of it, which this must not undo).
pub fn deactivated(
    prev: &Operation,
    taken_at: u64,
    by: Uuid,
    now: OffsetDateTime,
) -> Option<Operation> {
    (prev.active && prev.activation == taken_at).then(|| Operation {
        active: false,
        superseded_by: Some(by),
        updated_at: now,
        version: prev.version + 1,
        ..prev.clone()
    })
}

/// A run marked active that lost the pointer to `by`, recorded inactive. Its
/// activation number goes back to `prior` (what it was before this call marked it);
/// when that is unknown (a resumed move), a number it cannot have held (not below the
/// winner's) goes back to 0. `None` when it is recorded so already.
pub fn superseded(
    mine: &Operation,
    by: &Operation,
    prior: Option<u64>,
    now: OffsetDateTime,
) -> Option<Operation> {
    let activation = match prior {
        Some(p) => p,
        None if mine.activation >= by.activation => 0,
        None => mine.activation,
    };
    (mine.active || mine.superseded_by != Some(by.id)).then(|| Operation {
        active: false,
        superseded_by: Some(by.id),
        activation,
        updated_at: now,
        version: mine.version + 1,
        ..mine.clone()
    })
}

/// How a move ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    /// The run as stored at the end (inactive and superseded if it lost).
    pub operation: Operation,
    /// The run the move took the pointer from, as recorded inactive by this call.
    pub deactivated: Option<Operation>,
    /// True when this call moved the pointer to the run.
    pub moved: bool,
    /// The history entry this call wrote.
    pub activation: Option<Activation>,
}

impl Settled {
    fn stays(operation: Operation) -> Settled {
        Settled {
            operation,
            deactivated: None,
            moved: false,
            activation: None,
        }
    }
}

/// A finish's move: takes the key's pointer for `mine` (FINISHED, marked active in its
/// row) if it names an older run or none, or records `mine` superseded when a newer
/// run holds it. `seen` is the pointer as the caller read it right before its last
/// write of `mine`'s row (that write then serves as the first round's touch); `None`
/// reads it afresh (a resumed finish). `prior` is `mine`'s activation number before the
/// caller marked it, when known (see [`superseded`]).
pub async fn settle_pointer<C: PointerCell>(
    cell: &mut C,
    mut mine: Operation,
    mut seen: Option<Pointer>,
    prior: Option<u64>,
    why: &Why,
    now: OffsetDateTime,
    attempts: &mut Attempts,
) -> StoreResult<Settled> {
    loop {
        attempts.take()?;
        let (pointer, touched) = match seen.take() {
            Some(p) => (p, true),
            None => (cell.current().await?, false),
        };
        if !mine.active {
            // Recorded superseded meanwhile, by another finisher of this run.
            return Ok(Settled::stays(mine));
        }
        match (pointer_step(&mine, pointer.run.as_ref()), &pointer.run) {
            (PointerStep::AlreadyMine, _) => return Ok(Settled::stays(mine)),
            (PointerStep::Superseded { .. }, Some(by)) => {
                let Some(next) = superseded(&mine, by, prior, now) else {
                    return Ok(Settled::stays(mine));
                };
                if cell.write_op(&next, mine.version).await? {
                    return Ok(Settled::stays(next));
                }
                // The row changed: decide again on a fresh pointer (it may have gone
                // back to an older run since).
                mine = reload(cell, mine.id).await?;
            }
            _ => {
                let sequence = pointer.next_sequence();
                if !touched || mine.activation != sequence {
                    let next = numbered(&mine, sequence, now);
                    if !cell.write_op(&next, mine.version).await? {
                        mine = reload(cell, mine.id).await?;
                        continue;
                    }
                    mine = next;
                }
                let to = PointerAt {
                    id: Some(mine.id),
                    sequence: Some(sequence),
                };
                if !cell.move_pointer(pointer.at, to).await? {
                    tracing::debug!(operation = %mine.id, from = ?pointer.at, "active pointer moved meanwhile; re-reading");
                    continue;
                }
                return took_pointer(cell, mine, pointer, why, now, attempts).await;
            }
        }
    }
}

/// A rollback's or roll forward's move (see [`lifecycle::activate`]): makes run `id`
/// its key's active one, whatever its number, unless it is not FINISHED or its garbage
/// collection began (refused, also when that happens during the move). The pointer
/// decides whether the run is active, not its row (a row marked active by a move that
/// stopped before the pointer is taken over).
pub async fn activate<C: PointerCell>(
    cell: &mut C,
    id: Uuid,
    why: &Why,
    now: OffsetDateTime,
    attempts: &mut Attempts,
) -> StoreResult<ActivationPlan> {
    loop {
        attempts.take()?;
        let target = reload(cell, id).await?;
        let pointer = cell.current().await?;
        let seen = Operation {
            active: pointer.names(id),
            ..target.clone()
        };
        let current = pointer.run.as_ref().filter(|c| c.id != id);
        let plan = lifecycle::activate(&seen, current, why.reason, why.actor.clone(), now)?;
        if !plan.changed() {
            return Ok(ActivationPlan {
                operation: target,
                deactivated: None,
                activation: None,
            });
        }
        let sequence = pointer.next_sequence();
        let marked = Operation {
            activation: sequence,
            ..plan.operation
        };
        if !cell.write_op(&marked, target.version).await? {
            tracing::debug!(operation = %id, "operation changed meanwhile; re-reading");
            continue;
        }
        let to = PointerAt {
            id: Some(id),
            sequence: Some(sequence),
        };
        if !cell.move_pointer(pointer.at, to).await? {
            tracing::debug!(operation = %id, from = ?pointer.at, "active pointer moved meanwhile; re-reading");
            continue;
        }
        let settled = took_pointer(cell, marked, pointer, why, now, attempts).await?;
        return Ok(ActivationPlan {
            operation: settled.operation,
            deactivated: settled.deactivated,
            activation: settled.activation,
        });
    }
}

/// Steps 4 and 5 of a move (see the module comment).
async fn took_pointer<C: PointerCell>(
    cell: &mut C,
    mine: Operation,
    from: Pointer,
    why: &Why,
    now: OffsetDateTime,
    attempts: &mut Attempts,
) -> StoreResult<Settled> {
    let entry = record(&mine, from.run.as_ref(), why, now);
    // A crash here leaves the pointer moved and the history without this entry (see
    // the module comment: `Store::activations` fills it in while the run is active).
    cell.record(&entry).await?;
    let deactivated = match &from.run {
        Some(prev) => deactivate(cell, prev.id, prev.activation, mine.id, now, attempts).await?,
        None => None,
    };
    Ok(Settled {
        operation: mine,
        deactivated,
        moved: true,
        activation: Some(entry),
    })
}

pub(super) async fn reload<C: OpCell + ?Sized>(cell: &mut C, id: Uuid) -> StoreResult<Operation> {
    cell.load(id).await?.ok_or_else(|| StoreError::NotFound {
        what: "operation",
        id: id.to_string(),
    })
}

/// Records `prev` inactive after `by` took the pointer from it at number `taken_at`.
async fn deactivate<C: PointerCell>(
    cell: &mut C,
    prev: Uuid,
    taken_at: u64,
    by: Uuid,
    now: OffsetDateTime,
    attempts: &mut Attempts,
) -> StoreResult<Option<Operation>> {
    loop {
        let current = reload(cell, prev).await?;
        let Some(next) = deactivated(&current, taken_at, by, now) else {
            return Ok(None);
        };
        if cell.write_op(&next, current.version).await? {
            return Ok(Some(next));
        }
        attempts.take()?;
    }
}
