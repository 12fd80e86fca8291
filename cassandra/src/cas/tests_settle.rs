//! Tests of a finish's move ([`settle_pointer`]) and the pure rules under it, against
//! memory rows with other nodes cutting in.

use super::Attempts;
use super::memory::*;
use super::pointer::*;
use annostore_core::model::{ActivationReason, Operation};
use annostore_core::store::StoreError;

fn settle(m: &mut Memory, mine: &Operation, seen: Option<Pointer>) -> Settled {
    block(settle_pointer(
        m,
        mine.clone(),
        seen,
        Some(0),
        &finish_why(),
        now(),
        &mut Attempts::new("t"),
    ))
    .unwrap()
}

#[test]
fn pointer_moves_only_forward() {
    let (one, two) = (finishing(1), finishing(2));
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
fn the_next_sequence_follows_the_pointer() {
    let c = finishing(1);
    assert_eq!(Pointer::default().next_sequence(), 1);
    let p = |sequence, activation| Pointer {
        at: PointerAt {
            id: Some(c.id),
            sequence,
        },
        run: Some(Operation {
            activation,
            ..c.clone()
        }),
    };
    assert_eq!(p(Some(4), 4).next_sequence(), 5);
    assert_eq!(p(Some(6), 4).next_sequence(), 7, "the larger one wins");
    assert_eq!(
        p(None, 0).next_sequence(),
        1,
        "a run activated before numbering"
    );
}

#[test]
fn deactivate_and_supersede_write_only_changes() {
    let (mut one, mut two) = (finishing(1), finishing(2));
    two.activation = 2;
    let d = deactivated(&one, 1, two.id, now()).unwrap();
    assert!(!d.active);
    assert_eq!(d.superseded_by, Some(two.id));
    assert_eq!(d.version, one.version + 1);
    assert_eq!(d.activation, 1, "it keeps the number it held");
    assert_eq!(deactivated(&d, 1, two.id, now()), None);
    one.activation = 3;
    assert_eq!(
        deactivated(&one, 1, two.id, now()),
        None,
        "active again under a later number: left alone"
    );
    let s = superseded(&one, &two, Some(0), now()).unwrap();
    assert!(!s.active);
    assert_eq!(s.activation, 0, "back to what it was before the finish");
    assert_eq!(superseded(&s, &two, Some(0), now()), None);
    // Unknown prior: a number not below the winner's was never held.
    assert_eq!(superseded(&one, &two, None, now()).unwrap().activation, 0);
    one.activation = 1;
    assert_eq!(superseded(&one, &two, None, now()).unwrap().activation, 1);
}

#[test]
fn first_finish_takes_the_empty_pointer_and_records_it() {
    let one = finishing(1);
    let mut m = Memory::new(&[&one]);
    // The finish read the empty pointer before its own write: no second touch.
    let s = settle(&mut m, &one, Some(Pointer::default()));
    assert_eq!(m.pointer.id, Some(one.id));
    assert_eq!(m.pointer.sequence, Some(1));
    assert_eq!(s.operation, one);
    assert_eq!(m.op(one.id).version, one.version, "no extra write");
    assert!(s.moved);
    assert_eq!(s.deactivated, None);
    let rec = s.activation.unwrap();
    assert_eq!(
        (rec.sequence, rec.previous, rec.reason),
        (1, None, ActivationReason::Finish)
    );
    assert_eq!(m.history[&1], rec);
}

#[test]
fn a_resumed_finish_touches_its_row_before_moving() {
    let one = finishing(1);
    let mut m = Memory::new(&[&one]);
    let s = settle(&mut m, &one, None);
    assert_eq!(m.pointer.id, Some(one.id));
    assert_eq!(s.operation.version, one.version + 1);
    assert_eq!(m.op(one.id), &s.operation);
    // Resumed again: the pointer is its own, nothing moves or is recorded twice.
    let again = settle(&mut m, &s.operation, None);
    assert!(!again.moved && again.activation.is_none());
    assert_eq!(m.history.len(), 1);
}

#[test]
fn older_finisher_that_loses_the_race_is_superseded_and_unnumbered() {
    // Both read an empty pointer; the newer run's node moves it first.
    let (one, two) = (finishing(1), finishing(2));
    let mut m = Memory::new(&[&one, &two]);
    let two_id = two.id;
    m.before_cas.push(Box::new(move |m: &mut Memory| {
        m.take(two_id, ActivationReason::Finish)
    }));
    let s = settle(&mut m, &one, Some(Pointer::default()));
    assert_eq!(m.failed_cas, 1);
    assert_eq!(m.pointer.id, Some(two.id), "the newest run stays active");
    assert!(!s.operation.active && !s.moved);
    assert_eq!(s.operation.superseded_by, Some(two.id));
    assert_eq!(s.operation.activation, 0, "it never took number 1");
    assert_eq!(m.op(one.id), &s.operation, "stored as returned");
    assert_eq!(m.history.len(), 1);
    assert_eq!(m.history[&1].operation_id, two.id);
}

#[test]
fn newer_finisher_that_loses_the_race_renumbers_takes_over_and_deactivates() {
    // Both read an empty pointer (both planned number 1); the older run's node moves
    // it first.
    let (one, two) = (finishing(1), finishing(2));
    let mut m = Memory::new(&[&one, &two]);
    let one_id = one.id;
    m.before_cas.push(Box::new(move |m: &mut Memory| {
        m.take(one_id, ActivationReason::Finish)
    }));
    let s = settle(&mut m, &two, Some(Pointer::default()));
    assert_eq!(m.failed_cas, 1);
    assert_eq!(m.pointer.id, Some(two.id));
    assert_eq!(m.pointer.sequence, Some(2));
    assert_eq!(
        s.operation.activation, 2,
        "renumbered after the run it replaced"
    );
    assert_eq!(m.op(two.id), &s.operation);
    let d = s.deactivated.unwrap();
    assert_eq!(
        (d.id, d.active, d.superseded_by),
        (one.id, false, Some(two.id))
    );
    assert_eq!(m.op(one.id), &d);
    let rec = s.activation.unwrap();
    assert_eq!((rec.sequence, rec.previous), (2, Some(one.id)));
    assert_eq!(
        m.history.keys().copied().collect::<Vec<_>>(),
        vec![1, 2],
        "each number once"
    );
}

#[test]
fn a_run_that_left_the_pointer_and_came_back_makes_the_move_renumber() {
    // C active at 1; X (newest) planned 2 against it. Before X moves the pointer, an
    // admin rolls back to R (2) and forward to C again (3): the pointer names C again.
    let (r, c, x) = (finished(1), finished(2), finishing(3));
    let mut m = Memory::new(&[&r, &c, &x]);
    m.take(c.id, ActivationReason::Finish);
    let seen = block(m.current()).unwrap();
    let x = numbered(&x, seen.next_sequence(), now());
    m.ops.insert(x.id, x.clone());
    let (r_id, c_id) = (r.id, c.id);
    m.before_cas.push(Box::new(move |m: &mut Memory| {
        m.take(r_id, ActivationReason::Rollback);
        m.take(c_id, ActivationReason::RollForward);
    }));
    let s = settle(&mut m, &x, Some(seen));
    assert_eq!(m.failed_cas, 1, "the sequence in the condition caught it");
    assert_eq!(m.pointer.id, Some(x.id));
    assert_eq!(s.operation.activation, 4, "not 2: that number was taken");
    assert_eq!(m.history[&4].previous, Some(c.id));
    assert_eq!(
        m.history[&2].operation_id, r.id,
        "the rollback's entry stays"
    );
    assert!(!m.op(c.id).active);
    assert_eq!(m.op(c.id).superseded_by, Some(x.id));
}

#[test]
fn deactivation_leaves_a_run_that_became_active_again() {
    // X takes the pointer from C (1 -> 2); just before X records C inactive, a
    // rollback to C marks C's row with number 3 (it will move the pointer next).
    let (c, x) = (finished(1), finishing(2));
    let mut m = Memory::new(&[&c, &x]);
    m.take(c.id, ActivationReason::Finish);
    let seen = block(m.current()).unwrap();
    let x = numbered(&x, 2, now());
    m.ops.insert(x.id, x.clone());
    m.before_cas.push(Box::new(|_: &mut Memory| {})); // the pointer move
    let c_id = c.id;
    m.before_cas
        .push(Box::new(move |m: &mut Memory| m.mark(c_id, 3)));
    let s = settle(&mut m, &x, Some(seen));
    assert!(s.moved);
    assert_eq!(s.deactivated, None);
    assert!(m.op(c.id).active, "the rollback in flight is not undone");
    assert_eq!(m.op(c.id).activation, 3);
}

#[test]
fn deactivation_retries_when_the_old_row_changed() {
    let (one, two) = (finished(1), finishing(2));
    let mut m = Memory::new(&[&one, &two]);
    m.take(one.id, ActivationReason::Finish);
    let seen = block(m.current()).unwrap();
    let two = numbered(&two, 2, now());
    m.ops.insert(two.id, two.clone());
    m.before_cas.push(Box::new(|_: &mut Memory| {}));
    let one_id = one.id;
    m.before_cas.push(Box::new(move |m: &mut Memory| {
        if let Some(o) = m.ops.get_mut(&one_id) {
            o.version += 1;
        }
    }));
    let before = m.op(one.id).version;
    let s = settle(&mut m, &two, Some(seen));
    assert_eq!(m.failed_cas, 1);
    let d = s.deactivated.unwrap();
    assert_eq!(d.version, before + 2);
    assert!(!m.op(one.id).active);
}

#[test]
fn a_supersede_that_fails_decides_again_on_a_fresh_pointer() {
    // X (2) resumes its finish while N (3) is active: superseded. Its write fails (a
    // second finisher of X touched the row), and meanwhile an admin rolled back to
    // R (1): on the fresh pointer X is newer than the active run, so it takes over.
    let (r, x, n) = (finished(1), finishing(2), finished(3));
    let mut m = Memory::new(&[&r, &x, &n]);
    m.take(r.id, ActivationReason::Finish);
    m.take(n.id, ActivationReason::Finish);
    let (x_id, r_id) = (x.id, r.id);
    m.before_cas.push(Box::new(move |m: &mut Memory| {
        if let Some(o) = m.ops.get_mut(&x_id) {
            o.version += 1;
        }
        m.take(r_id, ActivationReason::Rollback);
    }));
    let s = settle(&mut m, &x, None);
    assert_eq!(m.failed_cas, 1);
    assert!(s.moved && s.operation.active);
    assert_eq!(m.pointer.id, Some(x.id));
    assert_eq!(s.operation.activation, 4);
    assert_eq!(m.history[&4].previous, Some(r.id));
    assert!(!m.op(r.id).active);
}

#[test]
fn a_run_recorded_superseded_meanwhile_stops_its_move() {
    // X's touch fails: a second finisher recorded X superseded by N, newer.
    let (x, n) = (finishing(1), finished(2));
    let mut m = Memory::new(&[&x, &n]);
    let (x_id, n_id) = (x.id, n.id);
    m.before_cas.push(Box::new(move |m: &mut Memory| {
        m.take(n_id, ActivationReason::Finish);
        let n = m.op(n_id).clone();
        let s = superseded(m.op(x_id), &n, Some(0), now()).unwrap();
        m.ops.insert(x_id, s);
    }));
    let s = settle(&mut m, &x, None);
    assert!(!s.moved && !s.operation.active);
    assert_eq!(s.operation.superseded_by, Some(n.id));
    assert_eq!(m.pointer.id, Some(n.id));
}

#[test]
fn endless_contention_gives_up() {
    let two = finishing(2);
    let mut m = Memory::new(&[&two]);
    for i in 0..10 {
        m.before_cas.push(Box::new(move |m: &mut Memory| {
            m.pointer.sequence = Some(100 + i);
        }));
    }
    let err = block(settle_pointer(
        &mut m,
        two,
        None,
        Some(0),
        &finish_why(),
        now(),
        &mut Attempts::with_max("t", 3),
    ))
    .unwrap_err();
    assert!(matches!(err, StoreError::Io(_)), "{err:?}");
    assert_eq!(m.pointer.id, None);
}

#[test]
fn a_row_written_with_another_number_is_renumbered_before_the_move() {
    // The caller's write gave the run number 1, but the pointer it read calls for 2.
    let (c, x) = (finished(1), finishing(2));
    let mut m = Memory::new(&[&c, &x]);
    m.take(c.id, ActivationReason::Finish);
    let seen = block(m.current()).unwrap();
    let s = settle(&mut m, &x, Some(seen));
    assert_eq!(s.operation.activation, 2);
    assert_eq!(m.op(x.id).activation, 2, "renumbered in its row first");
    assert_eq!(m.pointer.sequence, Some(2));
}
