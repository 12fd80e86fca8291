//! Rollback and roll forward: making a finished run its key's active one again, the
//! history entries that records, and the activations that must be refused.

use super::ops::{finished_run, history};
#[allow(unused_imports)]
use super::*;
use crate::model::{Activation, ActivationReason};

pub async fn rollback_and_roll_forward(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let (one, _) = finished_run(s, "p", 0, at(1_000)).await;
    let (two, _) = finished_run(s, "p", 0, at(2_000)).await;
    let one = reload(s, one.id).await;
    assert_eq!(one.superseded_by, Some(two.id));

    // Rollback to the older run.
    let back = s
        .activate_operation(
            one.id,
            ActivationReason::Rollback,
            Some("admin".into()),
            at(3_000),
        )
        .await
        .unwrap();
    assert!(back.changed());
    let now_one = back.operation.clone();
    assert!(now_one.active);
    assert_eq!(now_one.superseded_by, None);
    assert_eq!(now_one.activation, 3);
    assert!(now_one.version > one.version);
    assert_eq!(now_one.status, OperationStatus::Finished);
    assert_eq!(reload(s, one.id).await, now_one);
    let now_two = back
        .deactivated
        .clone()
        .expect("the active run is deactivated");
    assert_eq!(now_two.id, two.id);
    assert!(!now_two.active);
    assert_eq!(now_two.superseded_by, Some(one.id));
    assert_eq!(
        now_two.activation, two.activation,
        "its own activation stays"
    );
    assert_eq!(reload(s, two.id).await, now_two);
    assert_eq!(s.active_operations().await.unwrap(), vec![now_one.clone()]);
    let h = history(s, "p").await;
    assert_eq!(h.len(), 3);
    assert_eq!(Some(&h[0]), back.activation.as_ref());
    assert_eq!(h[0].sequence, 3);
    assert_eq!(h[0].operation_id, one.id);
    assert_eq!(h[0].operation_number, one.operation_number);
    assert_eq!(h[0].previous, Some(two.id));
    assert_eq!(h[0].reason, ActivationReason::Rollback);
    assert_eq!(h[0].actor.as_deref(), Some("admin"));
    assert_eq!(h[0].at, at(3_000));

    // Roll forward to the newer run again.
    let fwd = s
        .activate_operation(two.id, ActivationReason::RollForward, None, at(4_000))
        .await
        .unwrap();
    assert!(fwd.changed());
    assert_eq!(fwd.operation.activation, 4);
    assert!(fwd.operation.active && fwd.operation.superseded_by.is_none());
    let off = fwd.deactivated.clone().unwrap();
    assert_eq!(
        (off.id, off.active, off.superseded_by),
        (one.id, false, Some(two.id))
    );
    assert_eq!(reload(s, one.id).await, off);
    assert_eq!(reload(s, two.id).await, fwd.operation);
    assert_eq!(
        s.active_operations().await.unwrap(),
        vec![fwd.operation.clone()]
    );
    let h = history(s, "p").await;
    assert_eq!(
        h.iter().map(|a| (a.sequence, a.reason)).collect::<Vec<_>>(),
        vec![
            (4, ActivationReason::RollForward),
            (3, ActivationReason::Rollback),
            (2, ActivationReason::Finish),
            (1, ActivationReason::Finish),
        ]
    );
    assert_eq!(h[0].previous, Some(one.id));
    assert_eq!(h[0].actor, None);
}

pub async fn a_newer_run_finishing_after_a_rollback_becomes_active(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let (one, _) = finished_run(s, "p", 0, at(1_000)).await;
    let (two, _) = finished_run(s, "p", 0, at(2_000)).await;
    let three = started(s, "objects", "p", at(2_500)).await;
    s.activate_operation(one.id, ActivationReason::Rollback, None, at(3_000))
        .await
        .unwrap();
    let plan = s.finish_operation(three.id, at(4_000)).await.unwrap();
    assert!(plan.operation.active);
    assert_eq!(plan.operation.activation, 4, "the sequence continues");
    let off = plan
        .deactivated
        .clone()
        .expect("the rolled-back-to run goes");
    assert_eq!((off.id, off.superseded_by), (one.id, Some(three.id)));
    assert_eq!(reload(s, one.id).await, off);
    assert!(!reload(s, two.id).await.active);
    assert_eq!(
        s.active_operations().await.unwrap(),
        vec![plan.operation.clone()]
    );
    let h = history(s, "p").await;
    assert_eq!(h.len(), 4);
    assert_eq!(
        (h[0].sequence, h[0].operation_id, h[0].previous, h[0].reason),
        (4, three.id, Some(one.id), ActivationReason::Finish)
    );
}

/// What a refused activation must leave as it was.
#[derive(Debug, PartialEq)]
struct State {
    ops: Vec<Operation>,
    history: Vec<Activation>,
    active: Vec<Operation>,
}

async fn state(s: &dyn Store, ids: [Uuid; 4]) -> State {
    let mut ops = Vec::new();
    for id in ids {
        ops.push(reload(s, id).await);
    }
    State {
        ops,
        history: history(s, "p").await,
        active: s.active_operations().await.expect("active_operations"),
    }
}

pub async fn activation_refusals_change_nothing(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let (one, _) = finished_run(s, "p", 0, at(1_000)).await;
    let (two, _) = finished_run(s, "p", 0, at(2_000)).await;
    let running = started(s, "objects", "p", at(2_100)).await;
    let cancelled = started(s, "objects", "p", at(2_200)).await;
    s.cancel_operation(cancelled.id, at(2_300)).await.unwrap();
    let ids = [one.id, two.id, running.id, cancelled.id];
    let before = state(s, ids).await;
    let unchanged = || state(s, ids);

    // The active run again: nothing to write, no history entry.
    let again = s
        .activate_operation(two.id, ActivationReason::RollForward, None, at(3_000))
        .await
        .unwrap();
    assert!(!again.changed());
    assert!(again.activation.is_none() && again.deactivated.is_none());
    assert_eq!(again.operation, before.ops[1]);
    assert_eq!(unchanged().await, before);

    for (id, status) in [
        (running.id, OperationStatus::Started),
        (cancelled.id, OperationStatus::Cancelled),
    ] {
        let err = s
            .activate_operation(id, ActivationReason::Rollback, None, at(3_000))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Lifecycle(LifecycleError::CannotActivate { id: e, status: st })
                    if e == id && st == status
            ),
            "{err:?}"
        );
        assert_eq!(unchanged().await, before);
    }
    assert!(matches!(
        s.activate_operation(Uuid::now_v7(), ActivationReason::Rollback, None, at(3_000))
            .await,
        Err(StoreError::NotFound { .. })
    ));

    // Once its collection began, a run can never be active again.
    let collecting = s.begin_collection(one.id, at(4_000)).await.unwrap();
    let before = State {
        ops: vec![
            collecting,
            before.ops[1].clone(),
            before.ops[2].clone(),
            before.ops[3].clone(),
        ],
        ..before
    };
    let err = s
        .activate_operation(one.id, ActivationReason::Rollback, None, at(5_000))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Lifecycle(LifecycleError::Collected { id }) if id == one.id),
        "{err:?}"
    );
    assert_eq!(unchanged().await, before);
}
