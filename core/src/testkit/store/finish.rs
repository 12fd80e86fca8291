//! Finish and cancel: activation, supersession, idempotence and refusals.

#[allow(unused_imports)]
use super::*;

pub async fn finish_refused_while_work_pending(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let op = started(s, "objects", "p", at(0)).await;
    let up = s
        .upsert_annotations(op.id, &annotations(&op, 2), at(1_000))
        .await
        .unwrap();
    let err = s.finish_operation(op.id, at(2_000)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::PendingIndexWork(id) if id == op.id),
        "{err:?}"
    );
    assert_eq!(reload(s, op.id).await, up.operation, "nothing written");
    assert!(s.active_operations().await.unwrap().is_empty());

    s.complete_work(std::slice::from_ref(&up.work))
        .await
        .unwrap();
    let plan = s.finish_operation(op.id, at(3_000)).await.unwrap();
    assert!(plan.changed);
    assert!(plan.operation.active);
    assert_eq!(plan.operation.status, OperationStatus::Finished);
    assert_eq!(plan.operation.annotation_count, 2);
}

pub async fn finish_activates_and_supersedes(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let one = started(s, "objects", "p", at(0)).await;
    let two = started(s, "objects", "p", at(1)).await;

    let p1 = s.finish_operation(one.id, at(1_000)).await.unwrap();
    assert!(p1.changed);
    assert_eq!(p1.new_active(), Some(one.id));
    assert!(p1.deactivated.is_none());
    let f1 = reload(s, one.id).await;
    assert_eq!(f1, p1.operation);
    assert!(f1.active);
    assert_eq!(f1.status, OperationStatus::Finished);
    assert_eq!(f1.finished_at, Some(at(1_000)));
    assert_eq!(f1.lease_expires_at, None);
    assert_eq!(s.active_operations().await.unwrap(), vec![f1.clone()]);
    // A finished operation is no longer watched for lapsing.
    assert_eq!(
        s.lapsed_operations(at(10_000_000), 10).await.unwrap(),
        vec![two.id]
    );

    let p2 = s.finish_operation(two.id, at(2_000)).await.unwrap();
    assert_eq!(p2.new_active(), Some(two.id));
    let old = p2.deactivated.clone().expect("one deactivated");
    assert_eq!(old.id, one.id);
    assert!(!old.active);
    assert_eq!(old.superseded_by, Some(two.id));
    assert_eq!(reload(s, one.id).await, old);
    assert_eq!(reload(s, two.id).await, p2.operation);
    assert_eq!(s.active_operations().await.unwrap(), vec![p2.operation]);
}

pub async fn finish_out_of_order_stays_inactive(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let older = started(s, "objects", "p", at(0)).await;
    let newer = started(s, "objects", "p", at(1)).await;
    let pn = s.finish_operation(newer.id, at(1_000)).await.unwrap();
    assert!(pn.operation.active);
    assert!(pn.deactivated.is_none());

    let po = s.finish_operation(older.id, at(2_000)).await.unwrap();
    assert!(po.changed);
    assert_eq!(po.new_active(), None);
    assert!(po.deactivated.is_none());
    assert!(!po.operation.active);
    assert_eq!(po.operation.status, OperationStatus::Finished);
    assert_eq!(po.operation.superseded_by, Some(newer.id));
    assert_eq!(reload(s, older.id).await, po.operation);
    assert_eq!(reload(s, newer.id).await, pn.operation, "newer untouched");
    let active = s.active_operations().await.unwrap();
    assert_eq!(active, vec![pn.operation]);
}

pub async fn finish_is_idempotent(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let op = started(s, "objects", "p", at(0)).await;
    let first = s.finish_operation(op.id, at(1_000)).await.unwrap();
    let again = s.finish_operation(op.id, at(9_000_000)).await.unwrap();
    assert!(!again.changed);
    assert_eq!(again.new_active(), None);
    assert!(again.deactivated.is_none());
    assert_eq!(again.operation, first.operation);
    assert_eq!(reload(s, op.id).await, first.operation);
    assert_eq!(s.active_operations().await.unwrap(), vec![first.operation]);
}

pub async fn finish_rejections(store: Arc<dyn Store>) {
    let s = store.as_ref();
    assert!(matches!(
        s.finish_operation(Uuid::now_v7(), at(0)).await,
        Err(StoreError::NotFound { .. })
    ));
    let cancelled = started(s, "objects", "p", at(0)).await;
    s.cancel_operation(cancelled.id, at(1)).await.unwrap();
    assert!(matches!(
        s.finish_operation(cancelled.id, at(2)).await,
        Err(StoreError::Lifecycle(LifecycleError::CannotFinish {
            status: OperationStatus::Cancelled,
            ..
        }))
    ));
    // A lapsed lease: the finish fails and the expiry is recorded.
    let lapsed = started(s, "objects", "q", at(0)).await;
    let lapse = LEASE as i64 * 1_000;
    let err = s
        .finish_operation(lapsed.id, at(lapse + 1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Lifecycle(LifecycleError::CannotFinish {
                status: OperationStatus::Expired,
                ..
            })
        ),
        "{err:?}"
    );
    let e = reload(s, lapsed.id).await;
    assert_eq!(e.status, OperationStatus::Expired);
    assert!(!e.active);
    assert!(s.active_operations().await.unwrap().is_empty());
    assert!(matches!(
        s.finish_operation(lapsed.id, at(lapse + 2)).await,
        Err(StoreError::Lifecycle(LifecycleError::CannotFinish {
            status: OperationStatus::Expired,
            ..
        }))
    ));
    // Lapsed with pending work: the lease decides, not the pending work.
    let busy = started(s, "objects", "r", at(0)).await;
    s.upsert_annotations(busy.id, &annotations(&busy, 1), at(0))
        .await
        .unwrap();
    assert!(matches!(
        s.finish_operation(busy.id, at(lapse)).await,
        Err(StoreError::Lifecycle(LifecycleError::CannotFinish {
            status: OperationStatus::Expired,
            ..
        }))
    ));
    assert_eq!(reload(s, busy.id).await.status, OperationStatus::Expired);
}

pub async fn cancel_rules(store: Arc<dyn Store>) {
    let s = store.as_ref();
    assert!(matches!(
        s.cancel_operation(Uuid::now_v7(), at(0)).await,
        Err(StoreError::NotFound { .. })
    ));
    let op = started(s, "objects", "p", at(0)).await;
    let c = s.cancel_operation(op.id, at(1_000)).await.unwrap();
    assert_eq!(c.status, OperationStatus::Cancelled);
    assert_eq!(c.lease_expires_at, None);
    assert_eq!(c.updated_at, at(1_000));
    assert_eq!(reload(s, op.id).await, c);
    // Again: no error, nothing changes.
    let again = s.cancel_operation(op.id, at(2_000)).await.unwrap();
    assert_eq!(again, c);
    assert_eq!(reload(s, op.id).await, c);
    assert!(
        s.lapsed_operations(at(10_000_000), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.active_operations().await.unwrap().is_empty());

    let done = started(s, "objects", "q", at(0)).await;
    s.finish_operation(done.id, at(1_000)).await.unwrap();
    assert!(matches!(
        s.cancel_operation(done.id, at(2_000)).await,
        Err(StoreError::Lifecycle(LifecycleError::CannotCancel {
            status: OperationStatus::Finished,
            ..
        }))
    ));
    assert_eq!(reload(s, done.id).await.status, OperationStatus::Finished);

    let lapsed = started(s, "objects", "r", at(0)).await;
    let lapse = LEASE as i64 * 1_000;
    assert!(matches!(
        s.cancel_operation(lapsed.id, at(lapse)).await,
        Err(StoreError::Lifecycle(LifecycleError::CannotCancel {
            status: OperationStatus::Expired,
            ..
        }))
    ));
    assert_eq!(reload(s, lapsed.id).await.status, OperationStatus::Expired);
}
