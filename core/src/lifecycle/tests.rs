//! The lifecycle rules, one by one.

use super::*;
use crate::clock::from_unix_ms;

fn started(number: u64) -> Operation {
    let req = StartOperation {
        producer: None,
        annotation_type: "objects".into(),
        annotation_type_version: 1,
        pivot_id: "p".into(),
        lease_seconds: None,
        metadata: None,
    };
    start(
        &req,
        Uuid::now_v7(),
        number.checked_sub(1),
        60,
        from_unix_ms(1_000),
    )
}

#[test]
fn numbers_follow_the_previous_one() {
    assert_eq!(started(1).operation_number, 1);
    assert_eq!(started(7).operation_number, 7);
}

#[test]
fn first_finish_activates() {
    let op = started(1);
    let plan = finish(&op, None, from_unix_ms(2_000)).unwrap();
    assert!(plan.operation.active);
    assert_eq!(plan.operation.status, OperationStatus::Finished);
    assert_eq!(plan.new_active(), Some(op.id));
    assert!(plan.deactivated.is_none());
}

#[test]
fn newer_finish_supersedes_the_active_one() {
    let one = finish(&started(1), None, from_unix_ms(2_000))
        .unwrap()
        .operation;
    let two = started(2);
    let plan = finish(&two, Some(&one), from_unix_ms(3_000)).unwrap();
    assert!(plan.operation.active);
    assert_eq!(plan.active_run, None, "the finished run is the active one");
    let old = plan.deactivated.unwrap();
    assert!(!old.active);
    assert_eq!(old.superseded_by, Some(two.id));
}

#[test]
fn older_finish_after_newer_stays_inactive() {
    let one = started(1);
    let two = finish(&started(2), None, from_unix_ms(2_000))
        .unwrap()
        .operation;
    let plan = finish(&one, Some(&two), from_unix_ms(3_000)).unwrap();
    assert!(!plan.operation.active);
    assert_eq!(plan.operation.superseded_by, Some(two.id));
    assert_eq!(plan.new_active(), None);
    assert!(plan.deactivated.is_none());
    // The run that superseded it, for a node whose snapshot has not heard of it.
    assert_eq!(plan.active_run, Some(two.clone()));
    // And again when the older run's finish is retried.
    let again = finish(&plan.operation, Some(&two), from_unix_ms(4_000)).unwrap();
    assert!(!again.changed);
    assert_eq!(again.active_run, Some(two));
}

#[test]
fn finish_is_idempotent() {
    let done = finish(&started(1), None, from_unix_ms(2_000))
        .unwrap()
        .operation;
    let again = finish(&done, Some(&done), from_unix_ms(5_000)).unwrap();
    assert!(!again.changed);
    assert_eq!(again.operation, done);
}

#[test]
fn cancelled_and_expired_cannot_finish() {
    let (cancelled, _) = cancel(&started(1), from_unix_ms(2_000)).unwrap();
    assert!(matches!(
        finish(&cancelled, None, from_unix_ms(3_000)),
        Err(LifecycleError::CannotFinish {
            status: OperationStatus::Cancelled,
            ..
        })
    ));
    let lapsed = started(1);
    assert!(matches!(
        finish(&lapsed, None, from_unix_ms(61_000)),
        Err(LifecycleError::CannotFinish {
            status: OperationStatus::Expired,
            ..
        })
    ));
}

#[test]
fn upsert_renews_the_lease_and_counts() {
    let op = started(1);
    let later = from_unix_ms(30_000);
    let renewed = accept_upsert(&op, 5, later).unwrap();
    assert_eq!(renewed.annotation_count, 5);
    assert_eq!(renewed.version, op.version + 1);
    assert_eq!(
        renewed.lease_expires_at,
        Some(later + Duration::seconds(60))
    );
    assert!(accept_upsert(&op, 1, from_unix_ms(61_000)).is_err());
}

#[test]
fn expiry_only_when_lapsed() {
    let op = started(1);
    assert!(expire_if_lapsed(&op, from_unix_ms(60_999)).is_none());
    let expired = expire_if_lapsed(&op, from_unix_ms(61_000)).unwrap();
    assert_eq!(expired.status, OperationStatus::Expired);
    let finished = finish(&op, None, from_unix_ms(2_000)).unwrap().operation;
    assert!(expire_if_lapsed(&finished, from_unix_ms(1_000_000)).is_none());
}

#[test]
fn cancel_rules() {
    let op = started(1);
    let (c, changed) = cancel(&op, from_unix_ms(2_000)).unwrap();
    assert!(changed);
    assert_eq!(c.status, OperationStatus::Cancelled);
    assert!(!cancel(&c, from_unix_ms(3_000)).unwrap().1);
    let done = finish(&op, None, from_unix_ms(2_000)).unwrap().operation;
    assert!(cancel(&done, from_unix_ms(3_000)).is_err());
}

/// Runs 1 and 2 finished in order: 2 active with activation 2, 1 superseded by it.
fn two_finished() -> (Operation, Operation) {
    let one = finish(&started(1), None, from_unix_ms(2_000))
        .unwrap()
        .operation;
    let plan = finish(&started(2), Some(&one), from_unix_ms(3_000)).unwrap();
    (plan.deactivated.unwrap(), plan.operation)
}

#[test]
fn finishes_number_activations_and_record_them() {
    let (one, two) = two_finished();
    assert_eq!((one.activation, two.activation), (1, 2));
    let plan = finish(&started(3), Some(&two), from_unix_ms(4_000)).unwrap();
    let rec = plan.activation.unwrap();
    assert_eq!(rec.sequence, 3);
    assert_eq!(rec.previous, Some(two.id));
    assert_eq!(rec.reason, ActivationReason::Finish);
    let late = finish(&started(1), Some(&plan.operation), from_unix_ms(5_000)).unwrap();
    assert!(
        late.activation.is_none(),
        "an older run finishing late is not activated"
    );
}

#[test]
fn rollback_and_roll_forward_move_the_sequence_on() {
    let (one, two) = two_finished();
    let back = activate(
        &one,
        Some(&two),
        ActivationReason::Rollback,
        None,
        from_unix_ms(9_000),
    )
    .unwrap();
    assert!(back.operation.active && back.operation.superseded_by.is_none());
    assert_eq!(back.operation.activation, 3);
    assert_eq!(back.operation.version, one.version + 1);
    let two_off = back.deactivated.unwrap();
    assert!(!two_off.active);
    assert_eq!(two_off.superseded_by, Some(one.id));
    let fwd = activate(
        &two_off,
        Some(&back.operation),
        ActivationReason::RollForward,
        Some("admin".into()),
        from_unix_ms(10_000),
    )
    .unwrap();
    assert_eq!(fwd.operation.activation, 4);
    assert_eq!(
        fwd.activation.unwrap().reason,
        ActivationReason::RollForward
    );
    // A newer run finishing after a rollback becomes active: it is newer than the
    // active run.
    let three = finish(&started(3), Some(&back.operation), from_unix_ms(11_000)).unwrap();
    assert!(three.operation.active);
    assert_eq!(three.operation.activation, 4);
}

#[test]
fn only_finished_uncollected_runs_can_be_activated() {
    let (one, two) = two_finished();
    let now = from_unix_ms(9_000);
    let again = activate(&two, Some(&two), ActivationReason::Rollback, None, now).unwrap();
    assert!(!again.changed(), "the active run again changes nothing");
    let s = started(3);
    assert!(matches!(
        activate(&s, Some(&two), ActivationReason::RollForward, None, now),
        Err(LifecycleError::CannotActivate { .. })
    ));
    let (collected, _) = begin_collection(&one, now).unwrap();
    assert!(matches!(
        activate(
            &collected,
            Some(&two),
            ActivationReason::Rollback,
            None,
            now
        ),
        Err(LifecycleError::Collected { .. })
    ));
}

#[test]
fn collection_rules() {
    let (one, two) = two_finished();
    let now = from_unix_ms(9_000);
    assert!(matches!(
        begin_collection(&two, now),
        Err(LifecycleError::CollectActive { .. })
    ));
    assert!(matches!(
        begin_collection(&started(3), now),
        Err(LifecycleError::CollectStarted { .. })
    ));
    let (c, changed) = begin_collection(&one, now).unwrap();
    assert!(changed);
    assert!(
        !begin_collection(&c, now).unwrap().1,
        "beginning again resumes"
    );
    let done = end_collection(&c, 7, from_unix_ms(10_000)).unwrap();
    let rec = done.collected.clone().unwrap();
    assert_eq!(
        (rec.freed, rec.finished_at),
        (7, Some(from_unix_ms(10_000)))
    );
    assert!(end_collection(&done, 1, now).is_none());
    assert!(end_collection(&one, 1, now).is_none(), "not begun");
}

#[test]
fn retirement_and_forced_expiry() {
    let (one, two) = two_finished();
    assert_eq!(retired_at(&one), Some(one.updated_at));
    assert_eq!(retired_at(&two), None);
    let s = started(3);
    assert_eq!(retired_at(&s), None);
    let e = force_expire(&s, from_unix_ms(1_500)).unwrap();
    assert_eq!(e.status, OperationStatus::Expired);
    assert_eq!(retired_at(&e), Some(from_unix_ms(1_500)));
    assert!(force_expire(&two, from_unix_ms(1_500)).is_none());
}
