//! Tests of rollbacks and roll forwards ([`activate`]) and of single-row changes
//! ([`update_op`]) racing them, against memory rows with other nodes cutting in.

use super::Attempts;
use super::memory::*;
use super::pointer::*;
use super::update::update_op;
use annostore_core::lifecycle::{self, ActivationPlan, LifecycleError};
use annostore_core::model::{ActivationReason, Operation};
use annostore_core::store::{StoreError, StoreResult};
use uuid::Uuid;

fn run(m: &mut Memory, id: Uuid, reason: ActivationReason) -> StoreResult<ActivationPlan> {
    let why = Why {
        reason,
        actor: Some("admin".into()),
    };
    block(activate(m, id, &why, now(), &mut Attempts::new("t")))
}

/// Runs 1 and 2 finished in order: 2 active at sequence 2, 1 superseded by it.
fn two_finished() -> (Memory, Operation, Operation) {
    let (one, two) = (finished(1), finished(2));
    let mut m = Memory::new(&[&one, &two]);
    m.take(one.id, ActivationReason::Finish);
    m.take(two.id, ActivationReason::Finish);
    let (one, two) = (m.op(one.id).clone(), m.op(two.id).clone());
    (m, one, two)
}

#[test]
fn rollback_and_roll_forward_number_their_moves() {
    let (mut m, one, two) = two_finished();
    let back = run(&mut m, one.id, ActivationReason::Rollback).unwrap();
    assert!(back.operation.active && back.operation.superseded_by.is_none());
    assert_eq!(back.operation.activation, 3);
    assert_eq!(m.op(one.id), &back.operation);
    assert_eq!(m.pointer.id, Some(one.id));
    assert_eq!(m.pointer.sequence, Some(3));
    let off = back.deactivated.unwrap();
    assert_eq!(
        (off.id, off.active, off.superseded_by),
        (two.id, false, Some(one.id))
    );
    assert_eq!(off.activation, 2, "it keeps the number it held");
    let rec = back.activation.unwrap();
    assert_eq!(rec.reason, ActivationReason::Rollback);
    assert_eq!(rec.actor.as_deref(), Some("admin"));
    assert_eq!((rec.sequence, rec.previous), (3, Some(two.id)));
    assert_eq!(m.history[&3], rec);

    let fwd = run(&mut m, two.id, ActivationReason::RollForward).unwrap();
    assert_eq!(fwd.operation.activation, 4);
    assert_eq!(m.pointer.id, Some(two.id));
    assert!(!m.op(one.id).active);
    assert_eq!(m.history[&4].reason, ActivationReason::RollForward);
}

#[test]
fn activating_the_active_run_changes_nothing() {
    let (mut m, _, two) = two_finished();
    let plan = run(&mut m, two.id, ActivationReason::Rollback).unwrap();
    assert!(!plan.changed());
    assert_eq!(plan.operation, two);
    assert_eq!(m.op(two.id), &two, "nothing written");
    assert_eq!(m.history.len(), 2);
}

#[test]
fn only_finished_runs_can_be_activated() {
    let (mut m, _, _) = two_finished();
    let s = started(3);
    m.ops.insert(s.id, s.clone());
    assert!(matches!(
        run(&mut m, s.id, ActivationReason::RollForward),
        Err(StoreError::Lifecycle(LifecycleError::CannotActivate { .. }))
    ));
    assert!(matches!(
        run(&mut m, Uuid::now_v7(), ActivationReason::Rollback),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn a_collection_that_begins_during_the_move_refuses_it() {
    let (mut m, one, two) = two_finished();
    let one_id = one.id;
    m.before_cas.push(Box::new(move |m: &mut Memory| {
        let (c, _) = lifecycle::begin_collection(m.op(one_id), now()).unwrap();
        m.ops.insert(one_id, c);
    }));
    let err = run(&mut m, one.id, ActivationReason::Rollback).unwrap_err();
    assert!(
        matches!(err, StoreError::Lifecycle(LifecycleError::Collected { .. })),
        "{err:?}"
    );
    assert_eq!(m.failed_cas, 1);
    assert_eq!(m.pointer.id, Some(two.id), "the pointer did not move");
    assert!(!m.op(one.id).active);
    assert!(m.op(two.id).active);
    assert_eq!(m.history.len(), 2);
}

#[test]
fn a_collection_refuses_a_run_an_activation_marked_first() {
    let (mut m, one, _) = two_finished();
    let one_id = one.id;
    // The rollback's touch lands just before the collection's write.
    m.before_cas
        .push(Box::new(move |m: &mut Memory| m.mark(one_id, 3)));
    let err = block(update_op(&mut m, one.id, &mut Attempts::new("t"), |op| {
        let (next, changed) = lifecycle::begin_collection(op, now())?;
        Ok(changed.then_some(next))
    }))
    .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Lifecycle(LifecycleError::CollectActive { .. })
        ),
        "{err:?}"
    );
    assert!(m.op(one.id).collected.is_none());
}

#[test]
fn a_collection_that_wins_is_written_once() {
    let (mut m, one, _) = two_finished();
    let change = |op: &Operation| -> StoreResult<Option<Operation>> {
        let (next, changed) = lifecycle::begin_collection(op, now())?;
        Ok(changed.then_some(next))
    };
    let (c, wrote) = block(update_op(&mut m, one.id, &mut Attempts::new("t"), change)).unwrap();
    assert!(wrote && c.collected.is_some());
    assert_eq!(c.version, one.version + 1);
    let (again, wrote) = block(update_op(&mut m, one.id, &mut Attempts::new("t"), change)).unwrap();
    assert!(!wrote, "beginning again writes nothing");
    assert_eq!(again, c);
}

#[test]
fn an_activation_that_loses_the_pointer_to_a_finish_renumbers() {
    let (mut m, one, two) = two_finished();
    let three = finished(3);
    m.ops.insert(three.id, three.clone());
    m.before_cas.push(Box::new(|_: &mut Memory| {})); // one's touch
    let three_id = three.id;
    m.before_cas.push(Box::new(move |m: &mut Memory| {
        m.take(three_id, ActivationReason::Finish)
    }));
    let plan = run(&mut m, one.id, ActivationReason::Rollback).unwrap();
    assert_eq!(m.failed_cas, 1);
    assert_eq!(plan.operation.activation, 4, "3 went to the finish");
    assert_eq!(m.pointer.id, Some(one.id));
    let off = plan.deactivated.unwrap();
    assert_eq!((off.id, off.superseded_by), (three.id, Some(one.id)));
    assert!(!m.op(two.id).active);
    assert_eq!(m.history[&3].operation_id, three.id);
    assert_eq!(m.history[&4].previous, Some(three.id));
    assert_eq!(m.op(one.id), &plan.operation);
}

#[test]
fn a_row_marked_by_a_move_that_stopped_is_taken_over() {
    // A rollback to 1 marked its row and stopped before the pointer: the row says
    // active, the pointer names 2. Activating 1 again completes it.
    let (mut m, one, two) = two_finished();
    m.mark(one.id, 3);
    let plan = run(&mut m, one.id, ActivationReason::Rollback).unwrap();
    assert!(plan.changed());
    assert_eq!(plan.operation.activation, 3);
    assert_eq!(m.pointer.id, Some(one.id));
    assert!(!m.op(two.id).active);
    assert_eq!(m.history[&3].previous, Some(two.id));
}

#[test]
fn two_activations_of_one_key_end_with_the_later_move() {
    // An activation of 2 decided on the pointer at 1 loses to one of 3 made meanwhile;
    // it decides again and takes the pointer from 3.
    let (one, two, three) = (finished(1), finished(2), finished(3));
    let mut m = Memory::new(&[&one, &two, &three]);
    m.take(one.id, ActivationReason::Finish);
    m.before_cas.push(Box::new(|_: &mut Memory| {}));
    let three_id = three.id;
    m.before_cas.push(Box::new(move |m: &mut Memory| {
        m.take(three_id, ActivationReason::RollForward)
    }));
    let plan = run(&mut m, two.id, ActivationReason::RollForward).unwrap();
    assert_eq!(m.pointer.id, Some(two.id));
    assert_eq!(plan.operation.activation, 3);
    let actives: Vec<_> = m.ops.values().filter(|o| o.active).map(|o| o.id).collect();
    assert_eq!(actives, vec![two.id], "one run active");
    assert_eq!(m.history.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
}
