//! Scans: operation listings, active operations, pending work, annotations of an operation.

#[allow(unused_imports)]
use super::*;
use crate::model::ScanOrder;

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
        ids(s
            .list_operations(&all, ScanOrder::NewestFirst, None, 100)
            .await
            .unwrap()),
        newest_first
    );
    // Paging: `before` is exclusive.
    let p1 = ids(s
        .list_operations(&all, ScanOrder::NewestFirst, None, 2)
        .await
        .unwrap());
    assert_eq!(p1, newest_first[..2]);
    let p2 = ids(s
        .list_operations(&all, ScanOrder::NewestFirst, Some(p1[1]), 2)
        .await
        .unwrap());
    assert_eq!(p2, newest_first[2..4]);
    let p3 = ids(s
        .list_operations(&all, ScanOrder::NewestFirst, Some(p2[1]), 2)
        .await
        .unwrap());
    assert_eq!(p3, newest_first[4..]);
    assert!(
        s.list_operations(&all, ScanOrder::NewestFirst, Some(ops[0].id), 2)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.list_operations(&all, ScanOrder::NewestFirst, None, 0)
            .await
            .unwrap()
            .is_empty()
    );

    let by_type = OperationFilter {
        annotation_type: Some("objects".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(s
            .list_operations(&by_type, ScanOrder::NewestFirst, None, 100)
            .await
            .unwrap()),
        vec![ops[3].id, ops[2].id, ops[0].id]
    );
    // Limit counts matches, not scanned records.
    assert_eq!(
        ids(s
            .list_operations(&by_type, ScanOrder::NewestFirst, None, 2)
            .await
            .unwrap()),
        vec![ops[3].id, ops[2].id]
    );
    assert_eq!(
        ids(s
            .list_operations(&by_type, ScanOrder::NewestFirst, Some(ops[2].id), 2)
            .await
            .unwrap()),
        vec![ops[0].id]
    );
    let by_status = OperationFilter {
        status: Some(OperationStatus::Started),
        ..Default::default()
    };
    assert_eq!(
        ids(s
            .list_operations(&by_status, ScanOrder::NewestFirst, None, 100)
            .await
            .unwrap()),
        vec![ops[4].id, ops[3].id, ops[0].id]
    );
    let finished = OperationFilter {
        status: Some(OperationStatus::Finished),
        ..Default::default()
    };
    let f = s
        .list_operations(&finished, ScanOrder::NewestFirst, None, 100)
        .await
        .unwrap();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0], reload(s, ops[1].id).await);
    let by_pivot = OperationFilter {
        pivot_id: Some("b".into()),
        annotation_type_version: Some(1),
        ..Default::default()
    };
    assert_eq!(
        ids(s
            .list_operations(&by_pivot, ScanOrder::NewestFirst, None, 100)
            .await
            .unwrap()),
        vec![ops[4].id, ops[2].id]
    );
    let other_version = OperationFilter {
        annotation_type_version: Some(2),
        ..Default::default()
    };
    assert!(
        s.list_operations(&other_version, ScanOrder::NewestFirst, None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let early = OperationFilter {
        started_before: Some(at(2_000)),
        ..Default::default()
    };
    assert_eq!(
        ids(s
            .list_operations(&early, ScanOrder::NewestFirst, None, 100)
            .await
            .unwrap()),
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
        .upsert_annotations(a.id, &annotations(&a, 2), at(1))
        .await
        .unwrap()
        .work;
    let w2 = s
        .upsert_annotations(b.id, &annotations(&b, 1), at(2))
        .await
        .unwrap()
        .work;
    let w3 = s
        .upsert_annotations(a.id, &annotations(&a, 3), at(3))
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
    s.upsert_annotations(op.id, &mine, at(1)).await.unwrap();
    s.upsert_annotations(other.id, &annotations(&other, 3), at(1))
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
