//! Conformance suite for the `store` seam.
//!
//! Every function takes a fresh, empty store and panics on a failure. Time is explicit
//! (the trait takes `now`), so leases lapse without sleeping. An engine runs them all with
//! [`run_all`], handing it a factory of empty stores.

use crate::clock::from_unix_ms;
use crate::lifecycle::LifecycleError;
use crate::model::{
    Annotation, AnnotationInput, AnnotationType, Operation, OperationFilter, OperationStatus,
    StartOperation,
};
use crate::store::{IndexWork, IndexWorkKind, PutType, Store, StoreError};
use serde_json::{Map, json};
use std::future::Future;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

const BASE_MS: i64 = 1_700_000_000_000;
const LEASE: u32 = 60;

/// `BASE + ms`: the suite's clock.
pub fn at(ms: i64) -> OffsetDateTime {
    from_unix_ms(BASE_MS + ms)
}

pub fn start_request(annotation_type: &str, version: u32, pivot: &str) -> StartOperation {
    StartOperation {
        annotation_type: annotation_type.into(),
        annotation_type_version: version,
        pivot_id: pivot.into(),
        lease_seconds: None,
        metadata: Some(Map::from_iter([("run".to_string(), json!(pivot))])),
    }
}

/// An annotation of `op` with the given id.
pub fn annotation(op: &Operation, id: Uuid, label: &str) -> Annotation {
    Annotation::from_input(
        AnnotationInput {
            id: Some(id),
            media_id: "media-1".into(),
            start_ms: 1_000,
            end_ms: 2_000,
            label: Some(label.into()),
            confidence: Some(0.5),
            bbox: None,
            embedding: Some(vec![0.25, -1.5]),
            data: Some(json!({"k": label})),
        },
        op,
    )
}

fn annotations(op: &Operation, n: usize) -> Vec<Annotation> {
    (0..n)
        .map(|_| annotation(op, Uuid::new_v4(), "a"))
        .collect()
}

async fn started(store: &dyn Store, ty: &str, pivot: &str, now: OffsetDateTime) -> Operation {
    store
        .start_operation(start_request(ty, 1, pivot), LEASE, now)
        .await
        .expect("start_operation")
}

async fn reload(store: &dyn Store, id: Uuid) -> Operation {
    store
        .get_operation(id)
        .await
        .expect("get_operation")
        .expect("operation exists")
}

/// Every test of the suite, each on a fresh store from `make`.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    types(make().await).await;
    numbering_per_key(make().await).await;
    upsert_counts_replaces_and_renews(make().await).await;
    upsert_id_conflict_writes_nothing(make().await).await;
    upsert_rejections(make().await).await;
    lapsed_lease_is_recorded_expired(make().await).await;
    finish_refused_while_work_pending(make().await).await;
    finish_activates_and_supersedes(make().await).await;
    finish_out_of_order_stays_inactive(make().await).await;
    finish_is_idempotent(make().await).await;
    finish_rejections(make().await).await;
    cancel_rules(make().await).await;
    list_operations_pages_and_filters(make().await).await;
    active_operations_one_per_key(make().await).await;
    pending_and_complete_work(make().await).await;
    annotations_of_operation_pages(make().await).await;
}

pub async fn types(store: Arc<dyn Store>) {
    let def = AnnotationType {
        name: "objects".into(),
        version: 1,
        schema: json!({"type": "object"}),
        embedding_dim: Some(2),
        created_at: at(0),
    };
    assert_eq!(store.get_type("objects", 1).await.unwrap(), None);
    assert_eq!(
        store.put_type(def.clone()).await.unwrap(),
        PutType::Created(def.clone())
    );
    // Same definition later: unchanged, and the first registration is what stays.
    let again = AnnotationType {
        created_at: at(5_000),
        ..def.clone()
    };
    assert_eq!(
        store.put_type(again).await.unwrap(),
        PutType::Unchanged(def.clone())
    );
    let different = AnnotationType {
        schema: json!({"type": "object", "required": ["x"]}),
        ..def.clone()
    };
    assert!(matches!(
        store.put_type(different).await,
        Err(StoreError::TypeConflict(_))
    ));
    let dim = AnnotationType {
        embedding_dim: Some(3),
        ..def.clone()
    };
    assert!(matches!(
        store.put_type(dim).await,
        Err(StoreError::TypeConflict(_))
    ));
    // Another version is another type.
    let v2 = AnnotationType {
        version: 2,
        schema: json!({}),
        ..def.clone()
    };
    assert!(matches!(
        store.put_type(v2.clone()).await.unwrap(),
        PutType::Created(_)
    ));
    assert_eq!(
        store.get_type("objects", 1).await.unwrap(),
        Some(def.clone())
    );
    assert_eq!(
        store.get_type("objects", 2).await.unwrap(),
        Some(v2.clone())
    );
    assert_eq!(store.get_type("objects", 3).await.unwrap(), None);
    let mut all = store.list_types().await.unwrap();
    all.sort_by_key(|t| t.version);
    assert_eq!(all, vec![def, v2]);
}

pub async fn numbering_per_key(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let a1 = started(s, "objects", "movie-a", at(0)).await;
    let a2 = started(s, "objects", "movie-a", at(1)).await;
    let b1 = started(s, "objects", "movie-b", at(2)).await;
    let a3 = started(s, "objects", "movie-a", at(3)).await;
    let other_type = started(s, "faces", "movie-a", at(4)).await;
    let other_version = s
        .start_operation(start_request("objects", 2, "movie-a"), LEASE, at(5))
        .await
        .unwrap();
    let b2 = started(s, "objects", "movie-b", at(6)).await;
    assert_eq!(
        [
            a1.operation_number,
            a2.operation_number,
            a3.operation_number
        ],
        [1, 2, 3]
    );
    assert_eq!([b1.operation_number, b2.operation_number], [1, 2]);
    assert_eq!(other_type.operation_number, 1);
    assert_eq!(other_version.operation_number, 1);
    // A finished or cancelled run still takes its number.
    s.finish_operation(a3.id, at(10)).await.unwrap();
    s.cancel_operation(b2.id, at(10)).await.unwrap();
    assert_eq!(
        started(s, "objects", "movie-a", at(11))
            .await
            .operation_number,
        4
    );
    assert_eq!(
        started(s, "objects", "movie-b", at(11))
            .await
            .operation_number,
        3
    );

    assert_eq!(a1.status, OperationStatus::Started);
    assert!(!a1.active);
    assert_eq!(a1.annotation_count, 0);
    assert_eq!(a1.created_at, at(0));
    assert_eq!(a1.lease_seconds, LEASE);
    assert_eq!(
        a1.lease_expires_at,
        Some(at(0) + Duration::seconds(LEASE.into()))
    );
    assert_eq!(a1.metadata.get("run"), Some(&json!("movie-a")));
    assert_eq!(reload(s, a1.id).await, a1);
    assert_eq!(s.get_operation(Uuid::now_v7()).await.unwrap(), None);
}

pub async fn upsert_counts_replaces_and_renews(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let op = started(s, "objects", "p", at(0)).await;
    let first = annotations(&op, 3);
    let up = s
        .upsert_annotations(op.id, first.clone(), at(10_000))
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
        .upsert_annotations(op.id, vec![replaced.clone(), fresh.clone()], at(65_000))
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
    s.upsert_annotations(owner.id, vec![taken.clone()], at(1_000))
        .await
        .unwrap();

    let new_one = annotation(&other, Uuid::new_v4(), "new");
    let stolen = annotation(&other, taken.id, "stolen");
    let err = s
        .upsert_annotations(other.id, vec![new_one.clone(), stolen], at(2_000))
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
        s.upsert_annotations(unknown, vec![], at(0)).await,
        Err(StoreError::NotFound { .. })
    ));
    let op = started(s, "objects", "p", at(0)).await;
    s.cancel_operation(op.id, at(1_000)).await.unwrap();
    let batch = annotations(&op, 2);
    let err = s
        .upsert_annotations(op.id, batch.clone(), at(2_000))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Lifecycle(LifecycleError::NotStarted {
                status: OperationStatus::Cancelled,
                ..
            })
        ),
        "{err:?}"
    );
    let done = started(s, "objects", "q", at(0)).await;
    s.finish_operation(done.id, at(1_000)).await.unwrap();
    assert!(matches!(
        s.upsert_annotations(done.id, annotations(&done, 1), at(2_000))
            .await,
        Err(StoreError::Lifecycle(LifecycleError::NotStarted {
            status: OperationStatus::Finished,
            ..
        }))
    ));
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
    let err = s
        .upsert_annotations(op.id, batch.clone(), at(lapse))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Lifecycle(LifecycleError::NotStarted {
                status: OperationStatus::Expired,
                ..
            })
        ),
        "{err:?}"
    );
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
    s.upsert_annotations(r.id, annotations(&r, 1), at(50_000))
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

pub async fn finish_refused_while_work_pending(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let op = started(s, "objects", "p", at(0)).await;
    let up = s
        .upsert_annotations(op.id, annotations(&op, 2), at(1_000))
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
    s.upsert_annotations(busy.id, annotations(&busy, 1), at(0))
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

pub async fn list_operations_pages_and_filters(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let mut ops = Vec::new();
    for (i, (ty, pivot)) in [
        ("objects", "a"),
        ("faces", "a"),
        ("objects", "b"),
        ("objects", "a"),
        ("faces", "b"),
    ]
    .into_iter()
    .enumerate()
    {
        ops.push(started(s, ty, pivot, at(i as i64 * 1_000)).await);
    }
    s.finish_operation(ops[1].id, at(10_000)).await.unwrap();
    s.cancel_operation(ops[2].id, at(10_000)).await.unwrap();
    let newest_first: Vec<Uuid> = ops.iter().rev().map(|o| o.id).collect();
    let ids = |v: Vec<Operation>| v.into_iter().map(|o| o.id).collect::<Vec<_>>();
    let all = OperationFilter::default();

    assert_eq!(
        ids(s.list_operations(&all, None, 100).await.unwrap()),
        newest_first
    );
    // Paging: `before` is exclusive.
    let p1 = ids(s.list_operations(&all, None, 2).await.unwrap());
    assert_eq!(p1, newest_first[..2]);
    let p2 = ids(s.list_operations(&all, Some(p1[1]), 2).await.unwrap());
    assert_eq!(p2, newest_first[2..4]);
    let p3 = ids(s.list_operations(&all, Some(p2[1]), 2).await.unwrap());
    assert_eq!(p3, newest_first[4..]);
    assert!(
        s.list_operations(&all, Some(ops[0].id), 2)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.list_operations(&all, None, 0).await.unwrap().is_empty());

    let by_type = OperationFilter {
        annotation_type: Some("objects".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(s.list_operations(&by_type, None, 100).await.unwrap()),
        vec![ops[3].id, ops[2].id, ops[0].id]
    );
    // Limit counts matches, not scanned records.
    assert_eq!(
        ids(s.list_operations(&by_type, None, 2).await.unwrap()),
        vec![ops[3].id, ops[2].id]
    );
    assert_eq!(
        ids(s
            .list_operations(&by_type, Some(ops[2].id), 2)
            .await
            .unwrap()),
        vec![ops[0].id]
    );
    let by_status = OperationFilter {
        status: Some(OperationStatus::Started),
        ..Default::default()
    };
    assert_eq!(
        ids(s.list_operations(&by_status, None, 100).await.unwrap()),
        vec![ops[4].id, ops[3].id, ops[0].id]
    );
    let finished = OperationFilter {
        status: Some(OperationStatus::Finished),
        ..Default::default()
    };
    let f = s.list_operations(&finished, None, 100).await.unwrap();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0], reload(s, ops[1].id).await);
    let by_pivot = OperationFilter {
        pivot_id: Some("b".into()),
        annotation_type_version: Some(1),
        ..Default::default()
    };
    assert_eq!(
        ids(s.list_operations(&by_pivot, None, 100).await.unwrap()),
        vec![ops[4].id, ops[2].id]
    );
    let other_version = OperationFilter {
        annotation_type_version: Some(2),
        ..Default::default()
    };
    assert!(
        s.list_operations(&other_version, None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let early = OperationFilter {
        started_before: Some(at(2_000)),
        ..Default::default()
    };
    assert_eq!(
        ids(s.list_operations(&early, None, 100).await.unwrap()),
        vec![ops[1].id, ops[0].id]
    );
}

pub async fn active_operations_one_per_key(store: Arc<dyn Store>) {
    let s = store.as_ref();
    assert!(s.active_operations().await.unwrap().is_empty());
    let a1 = started(s, "objects", "a", at(0)).await;
    let a2 = started(s, "objects", "a", at(0)).await;
    let b1 = started(s, "objects", "b", at(0)).await;
    let _c1 = started(s, "objects", "c", at(0)).await;
    s.finish_operation(a1.id, at(1_000)).await.unwrap();
    s.finish_operation(a2.id, at(1_000)).await.unwrap();
    s.finish_operation(b1.id, at(1_000)).await.unwrap();
    let mut active = s.active_operations().await.unwrap();
    active.sort_by_key(|o| o.pivot_id.clone());
    assert_eq!(active, vec![reload(s, a2.id).await, reload(s, b1.id).await]);
    assert!(active.iter().all(|o| o.active));
}

pub async fn pending_and_complete_work(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let a = started(s, "objects", "a", at(0)).await;
    let b = started(s, "objects", "b", at(0)).await;
    let w1 = s
        .upsert_annotations(a.id, annotations(&a, 2), at(1))
        .await
        .unwrap()
        .work;
    let w2 = s
        .upsert_annotations(b.id, annotations(&b, 1), at(2))
        .await
        .unwrap()
        .work;
    let w3 = s
        .upsert_annotations(a.id, annotations(&a, 3), at(3))
        .await
        .unwrap()
        .work;
    assert_eq!(
        s.pending_work(None, 100).await.unwrap(),
        vec![w1.clone(), w2.clone(), w3.clone()]
    );
    assert_eq!(
        s.pending_work(None, 2).await.unwrap(),
        vec![w1.clone(), w2.clone()]
    );
    assert_eq!(
        s.pending_work(Some(a.id), 100).await.unwrap(),
        vec![w1.clone(), w3.clone()]
    );
    assert_eq!(
        s.pending_work(Some(a.id), 1).await.unwrap(),
        vec![w1.clone()]
    );
    assert_eq!(
        s.pending_work(Some(b.id), 100).await.unwrap(),
        vec![w2.clone()]
    );
    assert!(
        s.pending_work(Some(Uuid::now_v7()), 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(w1.created_at().is_some());

    let unknown = IndexWork {
        id: Uuid::now_v7(),
        operation_id: a.id,
        kind: IndexWorkKind::Upsert {
            annotation_ids: vec![],
        },
    };
    s.complete_work(&[w2.clone(), unknown]).await.unwrap();
    assert_eq!(
        s.pending_work(None, 100).await.unwrap(),
        vec![w1.clone(), w3.clone()]
    );
    assert!(s.pending_work(Some(b.id), 100).await.unwrap().is_empty());
    // Completing twice is fine.
    s.complete_work(&[w2]).await.unwrap();
    s.complete_work(&[]).await.unwrap();
    s.complete_work(&[w1, w3]).await.unwrap();
    assert!(s.pending_work(None, 100).await.unwrap().is_empty());
    assert!(s.pending_work(Some(a.id), 100).await.unwrap().is_empty());
    // Completing work does not touch the data.
    assert_eq!(reload(s, a.id).await.annotation_count, 5);
}

pub async fn annotations_of_operation_pages(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let op = started(s, "objects", "p", at(0)).await;
    let other = started(s, "objects", "q", at(0)).await;
    let mut mine = annotations(&op, 5);
    s.upsert_annotations(op.id, mine.clone(), at(1))
        .await
        .unwrap();
    s.upsert_annotations(other.id, annotations(&other, 3), at(1))
        .await
        .unwrap();
    mine.sort_by_key(|a| a.id);
    assert_eq!(
        s.annotations_of_operation(op.id, None, 100).await.unwrap(),
        mine
    );
    let page1 = s.annotations_of_operation(op.id, None, 2).await.unwrap();
    assert_eq!(page1, mine[..2]);
    let page2 = s
        .annotations_of_operation(op.id, Some(page1[1].id), 2)
        .await
        .unwrap();
    assert_eq!(page2, mine[2..4]);
    let page3 = s
        .annotations_of_operation(op.id, Some(page2[1].id), 2)
        .await
        .unwrap();
    assert_eq!(page3, mine[4..]);
    assert!(
        s.annotations_of_operation(op.id, Some(mine[4].id), 2)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.annotations_of_operation(other.id, None, 100)
            .await
            .unwrap()
            .len(),
        3
    );
    assert!(
        s.annotations_of_operation(Uuid::now_v7(), None, 100)
            .await
            .unwrap()
            .is_empty()
    );
}
