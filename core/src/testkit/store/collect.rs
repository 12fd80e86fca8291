//! Garbage collection in the store: which runs may be collected, deleting their
//! annotations (only theirs), freeing ids for new runs, and recording the end.

use super::ops::finished_run;
#[allow(unused_imports)]
use super::*;
use crate::model::ActivationReason;

async fn bodies(s: &dyn Store, ids: &[Uuid]) -> Vec<Option<Annotation>> {
    s.get_annotations(ids).await.expect("get_annotations")
}

async fn listed(s: &dyn Store, op: Uuid) -> Vec<Annotation> {
    s.annotations_of_operation(op, None, 1_000)
        .await
        .expect("annotations_of_operation")
}

pub async fn begin_collection_rules(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let (one, _) = finished_run(s, "p", 2, at(1_000)).await;
    let (two, _) = finished_run(s, "p", 2, at(2_000)).await;
    let running = started(s, "objects", "p", at(2_100)).await;
    let cancelled = started(s, "objects", "q", at(0)).await;
    s.cancel_operation(cancelled.id, at(100)).await.unwrap();
    let expired = started(s, "objects", "r", at(0)).await;
    s.force_expire(expired.id, at(100)).await.unwrap();

    let err = s.begin_collection(two.id, at(3_000)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Lifecycle(LifecycleError::CollectActive { id }) if id == two.id),
        "{err:?}"
    );
    assert_eq!(reload(s, two.id).await, two);
    let err = s.begin_collection(running.id, at(3_000)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Lifecycle(LifecycleError::CollectStarted { id }) if id == running.id),
        "{err:?}"
    );
    assert_eq!(reload(s, running.id).await, running);
    assert!(matches!(
        s.begin_collection(Uuid::now_v7(), at(3_000)).await,
        Err(StoreError::NotFound { .. })
    ));

    let one_before = reload(s, one.id).await;
    let begun = s.begin_collection(one.id, at(3_000)).await.unwrap();
    let c = begun.collected.clone().expect("collection recorded");
    assert_eq!((c.started_at, c.finished_at, c.freed), (at(3_000), None, 0));
    assert!(begun.version > one_before.version);
    assert_eq!(begun.status, OperationStatus::Finished);
    assert_eq!(reload(s, one.id).await, begun);
    // Beginning again resumes: unchanged, the first start kept.
    assert_eq!(s.begin_collection(one.id, at(4_000)).await.unwrap(), begun);
    assert_eq!(reload(s, one.id).await, begun);
    // Ended runs qualify too.
    for id in [cancelled.id, expired.id] {
        let op = s.begin_collection(id, at(3_000)).await.unwrap();
        assert!(op.collected.is_some());
        assert_eq!(reload(s, id).await, op);
    }
    // A collected run can never be rolled back to.
    assert!(matches!(
        s.activate_operation(one.id, ActivationReason::Rollback, None, at(5_000))
            .await,
        Err(StoreError::Lifecycle(LifecycleError::Collected { .. }))
    ));
    assert_eq!(s.active_operations().await.unwrap(), vec![two]);
    // Nothing was deleted by beginning.
    assert_eq!(listed(s, one.id).await.len(), 2);
}

pub async fn delete_annotations_rules(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let (old, mine) = finished_run(s, "p", 4, at(1_000)).await;
    let (new, theirs) = finished_run(s, "p", 2, at(2_000)).await;
    let mine_ids: Vec<Uuid> = mine.iter().map(|a| a.id).collect();

    // Refused before its collection began: nothing goes.
    let err = s.delete_annotations(old.id, &mine_ids).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Lifecycle(LifecycleError::CollectionNotBegun { id }) if id == old.id),
        "{err:?}"
    );
    assert_eq!(listed(s, old.id).await, mine);
    assert!(bodies(s, &mine_ids).await.iter().all(Option::is_some));
    assert!(matches!(
        s.delete_annotations(Uuid::now_v7(), &mine_ids).await,
        Err(StoreError::NotFound { .. })
    ));

    s.begin_collection(old.id, at(3_000)).await.unwrap();
    // Two of its own, one of another run's, one unknown: only its own go.
    let unknown = Uuid::new_v4();
    let n = s
        .delete_annotations(old.id, &[mine_ids[0], theirs[0].id, unknown, mine_ids[2]])
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        bodies(s, &[mine_ids[0], mine_ids[1], mine_ids[2], mine_ids[3]]).await,
        vec![None, Some(mine[1].clone()), None, Some(mine[3].clone())]
    );
    assert_eq!(
        listed(s, old.id).await,
        vec![mine[1].clone(), mine[3].clone()]
    );
    assert_eq!(
        bodies(s, &[theirs[0].id]).await,
        vec![Some(theirs[0].clone())],
        "another run's annotation survives"
    );
    assert_eq!(listed(s, new.id).await, theirs);
    // Paging the listing still works over the holes.
    assert_eq!(
        s.annotations_of_operation(old.id, Some(mine_ids[1]), 10)
            .await
            .unwrap(),
        vec![mine[3].clone()]
    );

    // The rest, with one already gone: counted once.
    assert_eq!(s.delete_annotations(old.id, &mine_ids).await.unwrap(), 2);
    assert!(listed(s, old.id).await.is_empty());
    assert!(bodies(s, &mine_ids).await.iter().all(Option::is_none));
    assert_eq!(s.delete_annotations(old.id, &mine_ids).await.unwrap(), 0);
    assert_eq!(s.delete_annotations(old.id, &[]).await.unwrap(), 0);
    // The active run is whole.
    assert_eq!(listed(s, new.id).await, theirs);
    assert_eq!(s.active_operations().await.unwrap(), vec![new]);
}

pub async fn collected_ids_can_be_claimed_again(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let old = started(s, "objects", "p", at(0)).await;
    let a = annotation(&old, Uuid::new_v4(), "old");
    s.upsert_annotations(old.id, std::slice::from_ref(&a), at(0))
        .await
        .unwrap();
    s.cancel_operation(old.id, at(1_000)).await.unwrap();
    let new = started(s, "objects", "q", at(2_000)).await;
    let claimed = annotation(&new, a.id, "new");
    // While the old run holds it, the id is taken.
    assert!(matches!(
        s.upsert_annotations(new.id, std::slice::from_ref(&claimed), at(2_000))
            .await,
        Err(StoreError::IdConflict { id, owner }) if id == a.id && owner == old.id
    ));
    s.begin_collection(old.id, at(3_000)).await.unwrap();
    assert_eq!(s.delete_annotations(old.id, &[a.id]).await.unwrap(), 1);
    let up = s
        .upsert_annotations(new.id, std::slice::from_ref(&claimed), at(4_000))
        .await
        .unwrap();
    assert!(up.replaced.is_empty(), "a new annotation for its new owner");
    assert_eq!(up.operation.annotation_count, 1);
    assert_eq!(bodies(s, &[a.id]).await, vec![Some(claimed.clone())]);
    assert_eq!(listed(s, new.id).await, vec![claimed]);
    assert!(listed(s, old.id).await.is_empty());
    // The old run no longer owns it: deleting it again through the old run skips it.
    assert_eq!(s.delete_annotations(old.id, &[a.id]).await.unwrap(), 0);
    assert_eq!(
        bodies(s, &[a.id]).await[0].as_ref().map(|b| b.operation_id),
        Some(new.id)
    );
}

pub async fn end_collection_records_freed(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let (one, anns) = finished_run(s, "p", 3, at(1_000)).await;
    finished_run(s, "p", 0, at(2_000)).await;
    let err = s.end_collection(one.id, 3, at(2_500)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Lifecycle(LifecycleError::CollectionNotBegun { id }) if id == one.id),
        "{err:?}"
    );
    let begun = s.begin_collection(one.id, at(3_000)).await.unwrap();
    let ids: Vec<Uuid> = anns.iter().map(|a| a.id).collect();
    let freed = s.delete_annotations(one.id, &ids).await.unwrap();
    let done = s.end_collection(one.id, freed, at(4_000)).await.unwrap();
    let c = done.collected.clone().unwrap();
    assert_eq!(
        (c.started_at, c.finished_at, c.freed),
        (at(3_000), Some(at(4_000)), 3)
    );
    assert!(done.version > begun.version);
    assert_eq!(reload(s, one.id).await, done);
    // Recorded once: ending again changes nothing.
    assert_eq!(s.end_collection(one.id, 5, at(5_000)).await.unwrap(), done);
    assert_eq!(reload(s, one.id).await, done);
    // Beginning again after the end: still done.
    assert_eq!(s.begin_collection(one.id, at(6_000)).await.unwrap(), done);
    assert!(matches!(
        s.end_collection(Uuid::now_v7(), 0, at(5_000)).await,
        Err(StoreError::NotFound { .. })
    ));
}

/// The whole of a retired run's collection, beside the key's active run.
pub async fn retire_then_collect_spares_the_active_run(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let (one, old) = finished_run(s, "p", 5, at(1_000)).await;
    let (two, live) = finished_run(s, "p", 4, at(2_000)).await;
    let live_ids: Vec<Uuid> = live.iter().map(|a| a.id).collect();
    s.begin_collection(one.id, at(3_000)).await.unwrap();
    let mut freed = 0;
    loop {
        let page = s.annotations_of_operation(one.id, None, 2).await.unwrap();
        if page.is_empty() {
            break;
        }
        let ids: Vec<Uuid> = page.iter().map(|a| a.id).collect();
        let n = s.delete_annotations(one.id, &ids).await.unwrap();
        assert_eq!(n, ids.len() as u64);
        freed += n;
    }
    assert_eq!(freed, old.len() as u64);
    let done = s.end_collection(one.id, freed, at(4_000)).await.unwrap();
    assert_eq!(done.collected.unwrap().freed, 5);
    let old_ids: Vec<Uuid> = old.iter().map(|a| a.id).collect();
    assert!(bodies(s, &old_ids).await.iter().all(Option::is_none));

    // The active run: every annotation, its record, its place.
    assert_eq!(listed(s, two.id).await, live);
    assert_eq!(
        bodies(s, &live_ids).await,
        live.iter().cloned().map(Some).collect::<Vec<_>>()
    );
    assert_eq!(reload(s, two.id).await, two);
    assert_eq!(s.active_operations().await.unwrap(), vec![two.clone()]);
    assert!(matches!(
        s.begin_collection(two.id, at(5_000)).await,
        Err(StoreError::Lifecycle(LifecycleError::CollectActive { .. }))
    ));
    assert_eq!(listed(s, two.id).await, live);
}
