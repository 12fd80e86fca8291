//! Operating a store: scans in both orders with the admin filters, the activation
//! history that finishes write, forced expiry. Rollback and roll forward are in
//! [`super::activate`], garbage collection in [`super::collect`].

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

pub(crate) fn key_of(pivot: &str) -> OperationKey {
    OperationKey {
        annotation_type: "objects".into(),
        annotation_type_version: 1,
        pivot_id: pivot.into(),
    }
}

pub(crate) async fn history(s: &dyn Store, pivot: &str) -> Vec<Activation> {
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
    let a = started_by(
        s,
        "p",
        Some("key-a"),
        json!({"model": "m1", "gpu": true}),
        at(0),
    )
    .await;
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
    assert!(
        scan(s, &unknown_producer, order, None, 100)
            .await
            .is_empty()
    );

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
    // updated_before is exclusive: a STARTED run idle since its start; `a` last
    // changed when `c` superseded it.
    let idle = f(OperationFilter {
        updated_before: Some(at(6_000)),
        ..Default::default()
    });
    assert_eq!(scan(s, &idle, order, None, 100).await, vec![d.id]);
    let idle = f(OperationFilter {
        updated_before: Some(at(7_000)),
        ..Default::default()
    });
    assert_eq!(
        scan(s, &idle, order, None, 100).await,
        vec![a.id, c.id, d.id]
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
    let recorded: Vec<Activation> = plans
        .iter()
        .rev()
        .map(|p| p.activation.clone().unwrap())
        .collect();
    assert_eq!(h, recorded, "the plans' entries, newest first");
    assert_eq!(
        h.iter().map(|a| a.sequence).collect::<Vec<_>>(),
        vec![3, 2, 1]
    );
    for (entry, (i, run)) in h.iter().zip(runs.iter().enumerate().rev()) {
        assert_eq!(entry.operation_id, run.id);
        assert_eq!(entry.operation_number, run.operation_number);
        assert_eq!(entry.reason, ActivationReason::Finish);
        assert_eq!(
            entry.actor, run.producer,
            "the actor of a finish is its producer"
        );
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
    assert_eq!(
        reload(s, op.id).await,
        expired,
        "the refused upsert wrote nothing"
    );
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
