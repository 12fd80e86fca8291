//! Upserts: counting, replacing, id conflicts, rejections and lapsed leases.

#[allow(unused_imports)]
use super::*;

pub async fn upsert_counts_replaces_and_renews(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let op = started(s, "objects", "p", at(0)).await;
    let first = annotations(&op, 3);
    let up = s
        .upsert_annotations(op.id, &first, at(10_000))
        .await
        .unwrap();
    assert_eq!(up.operation.annotation_count, 3);
    assert_eq!(
        up.operation.lease_expires_at,
        Some(at(10_000) + Duration::seconds(LEASE.into()))
    );
    assert_eq!(up.operation.updated_at, at(10_000));
    assert_eq!(up.work.operation_id, op.id);
    assert_eq!(
        up.work.kind,
        IndexWorkKind::Upsert {
            annotation_ids: first.iter().map(|a| a.id).collect()
        }
    );
    assert_eq!(reload(s, op.id).await, up.operation);

    // Replacing an id of the same operation keeps the count; a new id adds one.
    let replaced = annotation(&op, first[1].id, "replaced");
    let fresh = annotation(&op, Uuid::new_v4(), "fresh");
    // At 65s the first lease (to 60s) would have lapsed: the upsert at 10s renewed it.
    let up2 = s
        .upsert_annotations(op.id, &[replaced.clone(), fresh.clone()], at(65_000))
        .await
        .unwrap();
    assert_eq!(up2.operation.annotation_count, 4);
    assert_ne!(up2.work.id, up.work.id);
    assert!(up.replaced.is_empty(), "first batch replaced nothing");
    assert_eq!(
        up2.replaced,
        vec![first[1].id],
        "only the rewritten id is reported"
    );

    let missing = Uuid::new_v4();
    let got = s
        .get_annotations(&[fresh.id, missing, first[1].id, first[0].id])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![Some(fresh), None, Some(replaced), Some(first[0].clone())]
    );
    assert_eq!(reload(s, op.id).await.annotation_count, 4);
}

pub async fn upsert_id_conflict_writes_nothing(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let owner = started(s, "objects", "p", at(0)).await;
    let other = started(s, "objects", "p", at(0)).await;
    let taken = annotation(&owner, Uuid::new_v4(), "owner's");
    s.upsert_annotations(owner.id, std::slice::from_ref(&taken), at(1_000))
        .await
        .unwrap();

    let new_one = annotation(&other, Uuid::new_v4(), "new");
    let stolen = annotation(&other, taken.id, "stolen");
    let err = s
        .upsert_annotations(other.id, &[new_one.clone(), stolen], at(2_000))
        .await
        .unwrap_err();
    match err {
        StoreError::IdConflict { id, owner: o } => {
            assert_eq!(id, taken.id);
            assert_eq!(o, owner.id);
        }
        e => panic!("expected IdConflict, got {e:?}"),
    }
    // Nothing of the batch was written.
    assert_eq!(
        s.get_annotations(&[new_one.id, taken.id]).await.unwrap(),
        vec![None, Some(taken)]
    );
    let after = reload(s, other.id).await;
    assert_eq!(after, other, "count and lease unchanged");
    assert!(s.pending_work(Some(other.id), 10).await.unwrap().is_empty());
    assert!(
        s.annotations_of_operation(other.id, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(reload(s, owner.id).await.annotation_count, 1);
}

pub async fn upsert_rejections(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let unknown = Uuid::now_v7();
    assert!(matches!(
        s.upsert_annotations(unknown, &[], at(0)).await,
        Err(StoreError::NotFound { .. })
    ));
    let op = started(s, "objects", "p", at(0)).await;
    s.cancel_operation(op.id, at(1_000)).await.unwrap();
    let batch = annotations(&op, 2);
    refused_as(s, op.id, &batch, at(2_000), OperationStatus::Cancelled).await;
    let done = started(s, "objects", "q", at(0)).await;
    s.finish_operation(done.id, at(1_000)).await.unwrap();
    let late = annotations(&done, 1);
    refused_as(s, done.id, &late, at(2_000), OperationStatus::Finished).await;
    let ids: Vec<Uuid> = batch.iter().map(|a| a.id).collect();
    assert_eq!(s.get_annotations(&ids).await.unwrap(), vec![None, None]);
}

pub async fn lapsed_lease_is_recorded_expired(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let op = started(s, "objects", "p", at(0)).await;
    let lapse = LEASE as i64 * 1_000;
    let live = started(s, "objects", "q", at(30_000)).await;
    assert!(
        s.lapsed_operations(at(lapse - 1), 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.lapsed_operations(at(lapse), 100).await.unwrap(),
        vec![op.id]
    );
    // Not lapsed yet: expire changes nothing.
    assert_eq!(
        s.expire_operation(op.id, at(lapse - 1)).await.unwrap(),
        None
    );
    assert_eq!(reload(s, op.id).await.status, OperationStatus::Started);

    // An upsert after the lease lapsed records EXPIRED and writes nothing of its batch.
    let batch = annotations(&op, 2);
    refused_as(s, op.id, &batch, at(lapse), OperationStatus::Expired).await;
    let expired = reload(s, op.id).await;
    assert_eq!(expired.status, OperationStatus::Expired);
    assert_eq!(expired.lease_expires_at, None);
    assert_eq!(expired.annotation_count, 0);
    assert_eq!(s.get_annotations(&[batch[0].id]).await.unwrap(), vec![None]);
    assert!(s.pending_work(Some(op.id), 10).await.unwrap().is_empty());
    assert_eq!(
        s.expire_operation(op.id, at(lapse + 5)).await.unwrap(),
        None
    );
    assert!(
        !s.lapsed_operations(at(lapse * 10), 100)
            .await
            .unwrap()
            .contains(&op.id)
    );

    // expire_operation on a lapsed one records it and returns it.
    let live_lapse = 30_000 + lapse;
    assert!(
        s.lapsed_operations(at(live_lapse - 1), 100)
            .await
            .unwrap()
            .is_empty()
    );
    let e = s
        .expire_operation(live.id, at(live_lapse))
        .await
        .unwrap()
        .expect("expired");
    assert_eq!(e.status, OperationStatus::Expired);
    assert_eq!(e.updated_at, at(live_lapse));
    assert_eq!(reload(s, live.id).await, e);
    assert!(
        s.lapsed_operations(at(live_lapse * 10), 100)
            .await
            .unwrap()
            .is_empty()
    );

    // A renewed lease moves the lapse time.
    let r = started(s, "objects", "r", at(0)).await;
    s.upsert_annotations(r.id, &annotations(&r, 1), at(50_000))
        .await
        .unwrap();
    assert!(
        s.lapsed_operations(at(lapse), 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.lapsed_operations(at(50_000 + lapse), 100).await.unwrap(),
        vec![r.id]
    );
    let many = vec![
        started(s, "objects", "s", at(0)).await,
        started(s, "objects", "t", at(0)).await,
    ];
    assert_eq!(
        s.lapsed_operations(at(lapse * 10), 2).await.unwrap().len(),
        2
    );
    assert_eq!(
        s.lapsed_operations(at(lapse * 10), 100)
            .await
            .unwrap()
            .len(),
        3
    );
    drop(many);
}

/// Asserts that an upsert is refused because the operation is `status`, not STARTED.
async fn refused_as(
    s: &dyn Store,
    op: Uuid,
    batch: &[Annotation],
    now: OffsetDateTime,
    status: OperationStatus,
) {
    let err = s.upsert_annotations(op, batch, now).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Lifecycle(LifecycleError::NotStarted { status: got, .. }) if *got == status),
        "{err:?}"
    );
}
