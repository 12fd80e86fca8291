//! Operating a store: scans in both orders with the admin filters, the activation
//! history that finishes and rollbacks write, rollback and roll forward, forced expiry.
//! Garbage collection is in [`super::collect`].

#[allow(unused_imports)]
use super::*;
use crate::model::{Activation, ActivationReason, OperationKey, ScanOrder};

fn ids(v: Vec<Operation>) -> Vec<Uuid> {
    v.into_iter().map(|o| o.id).collect()
}

async fn scan(
    s: &dyn Store,
    filter: &OperationFilter,
    order: ScanOrder,
    cursor: Option<Uuid>,
    limit: usize,
) -> Vec<Uuid> {
    ids(s
        .list_operations(filter, order, cursor, limit)
        .await
        .expect("list_operations"))
}

/// A STARTED run of `objects`/`pivot` started by `producer` with this metadata.
pub(crate) async fn started_by(
    s: &dyn Store,
    pivot: &str,
    producer: Option<&str>,
    metadata: serde_json::Value,
    now: OffsetDateTime,
) -> Operation {
    let req = StartOperation {
        producer: producer.map(str::to_string),
        metadata: metadata.as_object().cloned(),
        ..start_request("objects", 1, pivot)
    };
    s.start_operation(req, LEASE, now)
        .await
        .expect("start_operation")
}

/// Starts and finishes a run of `objects`/`pivot`, with `n` annotations indexed.
pub(crate) async fn finished_run(
    s: &dyn Store,
    pivot: &str,
    n: usize,
    now: OffsetDateTime,
) -> (Operation, Vec<Annotation>) {
    let op = started(s, "objects", pivot, now).await;
    let mut anns = annotations(&op, n);
    if n > 0 {
        let up = s
            .upsert_annotations(op.id, &anns, now)
            .await
            .expect("upsert");
        s.complete_work(&[up.work]).await.expect("complete_work");
    }
    let plan = s.finish_operation(op.id, now).await.expect("finish");
    anns.sort_by_key(|a| a.id);
    (plan.operation, anns)
}

fn key_of(pivot: &str) -> OperationKey {
    OperationKey {
        annotation_type: "objects".into(),
        annotation_type_version: 1,
        pivot_id: pivot.into(),
    }
}

async fn history(s: &dyn Store, pivot: &str) -> Vec<Activation> {
    s.activations(&key_of(pivot), 100)
        .await
        .expect("activations")
}

pub async fn list_operations_oldest_first_and_cursors(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let mut ops = Vec::new();
    for (i, pivot) in ["a", "b", "a", "c", "b"].into_iter().enumerate() {
        ops.push(started(s, "objects", pivot, at(i as i64 * 1_000)).await);
    }
    let oldest: Vec<Uuid> = ops.iter().map(|o| o.id).collect();
    let newest: Vec<Uuid> = oldest.iter().rev().copied().collect();
    let all = OperationFilter::default();
    assert_eq!(
        scan(s, &all, ScanOrder::OldestFirst, None, 100).await,
        oldest
    );
    assert_eq!(
        scan(s, &all, ScanOrder::NewestFirst, None, 100).await,
        newest
    );
    // Pages of two in each order: the cursor is exclusive and follows the order.
    for (order, want) in [
        (ScanOrder::OldestFirst, &oldest),
        (ScanOrder::NewestFirst, &newest),
    ] {
        let mut got = Vec::new();
        let mut cursor = None;
        loop {
            let page = scan(s, &all, order, cursor, 2).await;
            assert!(page.len() <= 2, "{order:?}: a page holds at most its limit");
            let Some(last) = page.last().copied() else {
                break;
            };
            got.extend(page);
            cursor = Some(last);
        }
        assert_eq!(&got, want, "{order:?}: pages in order, each id once");
        assert!(
            scan(s, &all, order, want.last().copied(), 10)
                .await
                .is_empty(),
            "{order:?}: nothing past the last"
        );
        assert!(scan(s, &all, order, None, 0).await.is_empty());
    }
    // A cursor in the middle, both ways.
    assert_eq!(
        scan(s, &all, ScanOrder::OldestFirst, Some(oldest[2]), 100).await,
        oldest[3..]
    );
    assert_eq!(
        scan(s, &all, ScanOrder::NewestFirst, Some(oldest[2]), 100).await,
        vec![oldest[1], oldest[0]]
    );
    // Filtered, oldest first: the limit counts matches, the cursor need not match.
    let pivot_a = OperationFilter {
        pivot_id: Some("a".into()),
        ..Default::default()
    };
    assert_eq!(
        scan(s, &pivot_a, ScanOrder::OldestFirst, None, 1).await,
        vec![oldest[0]]
    );
    assert_eq!(
        scan(s, &pivot_a, ScanOrder::OldestFirst, Some(oldest[1]), 1).await,
        vec![oldest[2]]
    );
    assert!(
        scan(s, &pivot_a, ScanOrder::OldestFirst, Some(oldest[2]), 5)
            .await
            .is_empty()
    );
}

pub async fn list_operations_admin_filters(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let a = started_by(s, "p", Some("key-a"), json!({"model": "m1", "gpu": true}), at(0)).await;
    let b = started_by(s, "q", Some("key-b"), json!({"model": "m2"}), at(1_000)).await;
    let c = started_by(s, "p", Some("key-a"), json!({"model": "m2"}), at(2_000)).await;
    let d = started_by(s, "r", None, json!({}), at(3_000)).await;
    s.finish_operation(a.id, at(5_000)).await.unwrap();
    s.finish_operation(c.id, at(6_000)).await.unwrap(); // supersedes a
    s.finish_operation(b.id, at(7_000)).await.unwrap();
    let order = ScanOrder::OldestFirst;
    let f = |filter: OperationFilter| filter;

    let by_producer = f(OperationFilter {
        producer: Some("key-a".into()),
        ..Default::default()
    });
    assert_eq!(
        scan(s, &by_producer, order, None, 100).await,
        vec![a.id, c.id]
    );
    let unknown_producer = f(OperationFilter {
        producer: Some("key-z".into()),
        ..Default::default()
    });
    assert!(scan(s, &unknown_producer, order, None, 100).await.is_empty());

    let m2 = f(OperationFilter {
        metadata: Map::from_iter([("model".to_string(), json!("m2"))]),
        ..Default::default()
    });
    assert_eq!(scan(s, &m2, order, None, 100).await, vec![b.id, c.id]);
    // Every property given must be equal; a missing one does not match.
    let m1_gpu = f(OperationFilter {
        metadata: Map::from_iter([
            ("model".to_string(), json!("m1")),
            ("gpu".to_string(), json!(true)),
        ]),
        ..Default::default()
    });
    assert_eq!(scan(s, &m1_gpu, order, None, 100).await, vec![a.id]);
    let m2_gpu = f(OperationFilter {
        metadata: Map::from_iter([
            ("model".to_string(), json!("m2")),
            ("gpu".to_string(), json!(true)),
        ]),
        ..Default::default()
    });
    assert!(scan(s, &m2_gpu, order, None, 100).await.is_empty());

    let active = f(OperationFilter {
        active: Some(true),
        ..Default::default()
    });
    assert_eq!(scan(s, &active, order, None, 100).await, vec![b.id, c.id]);
    let inactive = f(OperationFilter {
        active: Some(false),
        ..Default::default()
    });
    assert_eq!(scan(s, &inactive, order, None, 100).await, vec![a.id, d.id]);

    // started_after is inclusive, started_before exclusive.
    let after = f(OperationFilter {
        started_after: Some(at(1_000)),
        ..Default::default()
    });
    assert_eq!(
        scan(s, &after, order, None, 100).await,
        vec![b.id, c.id, d.id]
    );
    let window = f(OperationFilter {
        started_after: Some(at(1_000)),
        started_before: Some(at(3_000)),
        ..Default::default()
    });
    assert_eq!(
        scan(s, &window, ScanOrder::NewestFirst, None, 100).await,
        vec![c.id, b.id]
    );
    // Conditions combine.
    let combined = f(OperationFilter {
        producer: Some("key-a".into()),
        active: Some(false),
        status: Some(OperationStatus::Finished),
        ..Default::default()
    });
    assert_eq!(scan(s, &combined, order, None, 100).await, vec![a.id]);
}

pub async fn finish_records_activation_history(store: Arc<dyn Store>) {
    let s = store.as_ref();
    assert!(history(s, "p").await.is_empty());
    let runs = [
        started_by(s, "p", Some("key-1"), json!({}), at(0)).await,
        started_by(s, "p", Some("key-2"), json!({}), at(1)).await,
        started_by(s, "p", None, json!({}), at(2)).await,
    ];
    let other = started(s, "objects", "q", at(3)).await;
    let mut plans = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let plan = s
            .finish_operation(run.id, at(1_000 * (i as i64 + 1)))
            .await
            .unwrap();
        assert_eq!(plan.operation.activation, i as u64 + 1);
        assert_eq!(reload(s, run.id).await.activation, i as u64 + 1);
        plans.push(plan);
    }
    s.finish_operation(other.id, at(9_000)).await.unwrap();

    let h = history(s, "p").await;
    let recorded: Vec<Activation> = plans.iter().rev().map(|p| p.activation.clone().unwrap()).collect();
    assert_eq!(h, recorded, "the plans' entries, newest first");
    assert_eq!(
        h.iter().map(|a| a.sequence).collect::<Vec<_>>(),
        vec![3, 2, 1]
    );
    for (entry, (i, run)) in h.iter().zip(runs.iter().enumerate().rev()) {
        assert_eq!(entry.operation_id, run.id);
        assert_eq!(entry.operation_number, run.operation_number);
        assert_eq!(entry.reason, ActivationReason::Finish);
        assert_eq!(entry.actor, run.producer, "the actor of a finish is its producer");
        assert_eq!(entry.at, at(1_000 * (i as i64 + 1)));
        assert_eq!(entry.key(), key_of("p"));
        assert_eq!(entry.previous, i.checked_sub(1).map(|j| runs[j].id));
    }
    assert_eq!(h[0].actor, None);
    assert_eq!(h[1].actor.as_deref(), Some("key-2"));
    // The limit keeps the newest.
    assert_eq!(s.activations(&key_of("p"), 2).await.unwrap(), h[..2]);
    assert!(s.activations(&key_of("p"), 0).await.unwrap().is_empty());
    // Each key has its own history and its own sequence.
    let q = history(s, "q").await;
    assert_eq!(q.len(), 1);
    assert_eq!((q[0].operation_id, q[0].sequence), (other.id, 1));
    assert!(history(s, "nobody").await.is_empty());
    let other_version = OperationKey {
        annotation_type_version: 2,
        ..key_of("p")
    };
    assert!(s.activations(&other_version, 10).await.unwrap().is_empty());

    // A finish that does not activate records nothing: again, or an older run late.
    let late = started(s, "objects", "p", at(4)).await;
    let newest = started(s, "objects", "p", at(5)).await;
    s.finish_operation(newest.id, at(10_000)).await.unwrap();
    assert_eq!(history(s, "p").await.len(), 4);
    let again = s.finish_operation(newest.id, at(11_000)).await.unwrap();
    assert!(again.activation.is_none());
    let plan = s.finish_operation(late.id, at(12_000)).await.unwrap();
    assert!(plan.activation.is_none());
    assert_eq!(plan.operation.activation, 0, "never active");
    let h = history(s, "p").await;
    assert_eq!(h.len(), 4);
    assert_eq!((h[0].operation_id, h[0].sequence), (newest.id, 4));
}

pub async fn rollback_and_roll_forward(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let (one, _) = finished_run(s, "p", 0, at(1_000)).await;
    let (two, _) = finished_run(s, "p", 0, at(2_000)).await;
    let one = reload(s, one.id).await;
    assert_eq!(one.superseded_by, Some(two.id));

    // Rollback to the older run.
    let back = s
        .activate_operation(one.id, ActivationReason::Rollback, Some("admin".into()), at(3_000))
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
    let now_two = back.deactivated.clone().expect("the active run is deactivated");
    assert_eq!(now_two.id, two.id);
    assert!(!now_two.active);
    assert_eq!(now_two.superseded_by, Some(one.id));
    assert_eq!(now_two.activation, two.activation, "its own activation stays");
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
    assert_eq!((off.id, off.active, off.superseded_by), (one.id, false, Some(two.id)));
    assert_eq!(reload(s, one.id).await, off);
    assert_eq!(reload(s, two.id).await, fwd.operation);
    assert_eq!(s.active_operations().await.unwrap(), vec![fwd.operation.clone()]);
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
    let off = plan.deactivated.clone().expect("the rolled-back-to run goes");
    assert_eq!((off.id, off.superseded_by), (one.id, Some(three.id)));
    assert_eq!(reload(s, one.id).await, off);
    assert!(!reload(s, two.id).await.active);
    assert_eq!(s.active_operations().await.unwrap(), vec![plan.operation.clone()]);
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
        ops: vec![collecting, before.ops[1].clone(), before.ops[2].clone(), before.ops[3].clone()],
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

pub async fn force_expire_rules(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let op = started(s, "objects", "p", at(0)).await;
    let keep = started(s, "objects", "q", at(0)).await;
    assert!(
        s.lapsed_operations(at(10_000_000), 10)
            .await
            .unwrap()
            .contains(&op.id)
    );
    // Well within its lease.
    let expired = s
        .force_expire(op.id, at(1_000))
        .await
        .unwrap()
        .expect("a STARTED run expires");
    assert_eq!(expired.status, OperationStatus::Expired);
    assert_eq!(expired.lease_expires_at, None);
    assert_eq!(expired.updated_at, at(1_000));
    assert!(!expired.active);
    assert!(expired.version > op.version);
    assert_eq!(reload(s, op.id).await, expired);
    assert_eq!(
        s.lapsed_operations(at(10_000_000), 10).await.unwrap(),
        vec![keep.id],
        "no longer watched for lapsing"
    );
    let err = s
        .upsert_annotations(op.id, &annotations(&op, 1), at(2_000))
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
    assert_eq!(reload(s, op.id).await, expired, "the refused upsert wrote nothing");
    assert!(matches!(
        s.finish_operation(op.id, at(2_000)).await,
        Err(StoreError::Lifecycle(LifecycleError::CannotFinish { .. }))
    ));
    // Again: nothing to do.
    assert_eq!(s.force_expire(op.id, at(3_000)).await.unwrap(), None);
    assert_eq!(reload(s, op.id).await, expired);

    // A FINISHED run is left alone.
    let (done, _) = finished_run(s, "r", 1, at(1_000)).await;
    assert_eq!(s.force_expire(done.id, at(5_000)).await.unwrap(), None);
    assert_eq!(reload(s, done.id).await, done);
    assert!(s.active_operations().await.unwrap().contains(&done));
    assert!(matches!(
        s.force_expire(Uuid::now_v7(), at(5_000)).await,
        Err(StoreError::NotFound { .. })
    ));
    // The other run is untouched.
    assert_eq!(reload(s, keep.id).await, keep);
}
