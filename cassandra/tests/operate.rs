//! The operating side of the store on kassandra: activation numbers and the history
//! through finishes, rollbacks and roll forwards (and a history entry lost to a crash,
//! filled in); forced expiry; the garbage collection of a run. Writes here are
//! sequential: races need a real cluster, and the compare-and-set decisions behind
//! them are unit-tested in `src/cas/`.

mod common;

use annostore_cassandra::{CassandraConfig, CassandraStore, apply_schema};
use annostore_core::lifecycle::LifecycleError;
use annostore_core::model::{ActivationReason, Operation, OperationKey, OperationStatus};
use annostore_core::store::{Store, StoreError};
use annostore_core::testkit::store::{annotation, at, start_request};
use uuid::Uuid;

async fn store() -> (CassandraStore, CassandraConfig) {
    let config = common::fresh_config("operate");
    apply_schema(&config).await.expect("apply schema");
    let s = CassandraStore::connect(&config).await.expect("connect");
    (s, config)
}

fn key(pivot: &str) -> OperationKey {
    OperationKey {
        annotation_type: "objects".into(),
        annotation_type_version: 1,
        pivot_id: pivot.into(),
    }
}

async fn finished(s: &CassandraStore, pivot: &str, t: i64) -> Operation {
    let op = s
        .start_operation(start_request("objects", 1, pivot), 600, at(t))
        .await
        .unwrap();
    s.finish_operation(op.id, at(t + 1))
        .await
        .unwrap()
        .operation
}

fn refused<T: std::fmt::Debug>(r: Result<T, StoreError>) -> LifecycleError {
    match r {
        Err(StoreError::Lifecycle(e)) => e,
        other => panic!("expected a lifecycle refusal, got {other:?}"),
    }
}

async fn op(s: &CassandraStore, id: Uuid) -> Operation {
    s.get_operation(id).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finishes_rollbacks_and_roll_forwards_number_the_history() {
    let (s, _) = store().await;
    let one = finished(&s, "k", 0).await;
    assert_eq!((one.active, one.activation), (true, 1));
    let started = s
        .start_operation(start_request("objects", 1, "k"), 600, at(2))
        .await
        .unwrap();
    let plan = s.finish_operation(started.id, at(3)).await.unwrap();
    let two = plan.operation.clone();
    assert_eq!(two.activation, 2);
    let rec = plan.activation.expect("the finish made it active");
    assert_eq!(
        (rec.sequence, rec.previous, rec.reason),
        (2, Some(one.id), ActivationReason::Finish)
    );
    assert_eq!(plan.deactivated.map(|d| d.id), Some(one.id));

    let back = s
        .activate_operation(
            one.id,
            ActivationReason::Rollback,
            Some("admin".into()),
            at(10),
        )
        .await
        .unwrap();
    assert_eq!(back.operation.activation, 3);
    assert_eq!(back.deactivated.as_ref().map(|d| d.id), Some(two.id));
    assert_eq!(op(&s, one.id).await, back.operation);
    let off = op(&s, two.id).await;
    assert_eq!((off.active, off.superseded_by), (false, Some(one.id)));
    let actives = s.active_operations().await.unwrap();
    assert_eq!(actives, vec![back.operation.clone()]);

    let again = s
        .activate_operation(one.id, ActivationReason::Rollback, None, at(11))
        .await
        .unwrap();
    assert!(!again.changed(), "the active run again changes nothing");

    let fwd = s
        .activate_operation(two.id, ActivationReason::RollForward, None, at(12))
        .await
        .unwrap();
    assert_eq!(fwd.operation.activation, 4);
    // A newer run finishing after that is the next activation.
    let three = finished(&s, "k", 20).await;
    assert_eq!(three.activation, 5);

    let history = s.activations(&key("k"), 10).await.unwrap();
    let seen: Vec<_> = history
        .iter()
        .map(|a| (a.sequence, a.operation_id, a.reason))
        .collect();
    assert_eq!(
        seen,
        vec![
            (5, three.id, ActivationReason::Finish),
            (4, two.id, ActivationReason::RollForward),
            (3, one.id, ActivationReason::Rollback),
            (2, two.id, ActivationReason::Finish),
            (1, one.id, ActivationReason::Finish),
        ]
    );
    assert_eq!(history[2].actor.as_deref(), Some("admin"));
    assert_eq!(history[1].previous, Some(one.id));
    assert_eq!(
        s.activations(&key("k"), 2)
            .await
            .unwrap()
            .iter()
            .map(|a| a.sequence)
            .collect::<Vec<_>>(),
        vec![5, 4]
    );
    assert!(s.activations(&key("k"), 0).await.unwrap().is_empty());
    assert!(s.activations(&key("other"), 10).await.unwrap().is_empty());

    let running = s
        .start_operation(start_request("objects", 1, "k"), 600, at(30))
        .await
        .unwrap();
    assert!(matches!(
        s.activate_operation(running.id, ActivationReason::RollForward, None, at(31))
            .await,
        Err(StoreError::Lifecycle(LifecycleError::CannotActivate { .. }))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_history_entry_of_the_active_run_is_filled_in() {
    let (s, config) = store().await;
    let one = finished(&s, "k", 0).await;
    let two = finished(&s, "k", 2).await;
    s.activate_operation(one.id, ActivationReason::Rollback, None, at(10))
        .await
        .unwrap();
    // What a crash between the pointer's move and the history insert leaves.
    let session = scylla::client::session_builder::SessionBuilder::new()
        .known_nodes(&config.contact_points)
        .build()
        .await
        .unwrap();
    session
        .query_unpaged(
            format!(
                "DELETE FROM {}.activations WHERE annotation_type = 'objects' AND type_version = 1 AND pivot_id = 'k' AND sequence = 3",
                config.keyspace
            ),
            (),
        )
        .await
        .unwrap();
    let history = s.activations(&key("k"), 10).await.unwrap();
    assert_eq!(history.len(), 3);
    let filled = &history[0];
    assert_eq!((filled.sequence, filled.operation_id), (3, one.id));
    assert_eq!(filled.previous, Some(two.id));
    assert_eq!(filled.reason, ActivationReason::Rollback);
    assert_eq!(filled.at, at(10));
    assert_eq!(history[1].sequence, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_expiry_ends_started_runs_only() {
    let (s, _) = store().await;
    let running = s
        .start_operation(start_request("objects", 1, "k"), 600, at(0))
        .await
        .unwrap();
    let e = s
        .force_expire(running.id, at(1))
        .await
        .unwrap()
        .expect("it was STARTED");
    assert_eq!(e.status, OperationStatus::Expired);
    assert_eq!(e.lease_expires_at, None);
    assert_eq!(op(&s, running.id).await, e);
    assert!(
        s.lapsed_operations(at(10_000_000), 10)
            .await
            .unwrap()
            .is_empty(),
        "no longer among the runs whose lease can lapse"
    );
    assert_eq!(s.force_expire(running.id, at(2)).await.unwrap(), None);
    let done = finished(&s, "k", 5).await;
    assert_eq!(s.force_expire(done.id, at(7)).await.unwrap(), None);
    assert!(op(&s, done.id).await.active);
    assert!(matches!(
        s.force_expire(Uuid::now_v7(), at(8)).await,
        Err(StoreError::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_of_a_run() {
    let (s, _) = store().await;
    let old = s
        .start_operation(start_request("objects", 1, "k"), 600, at(0))
        .await
        .unwrap();
    let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let batch: Vec<_> = [a, b, c]
        .iter()
        .map(|id| annotation(&old, *id, "x"))
        .collect();
    let up = s.upsert_annotations(old.id, &batch, at(1)).await.unwrap();
    s.complete_work(&[up.work]).await.unwrap();
    s.finish_operation(old.id, at(2)).await.unwrap();
    let new = s
        .start_operation(start_request("objects", 1, "k"), 600, at(3))
        .await
        .unwrap();
    let n = Uuid::now_v7();
    let up = s
        .upsert_annotations(new.id, &[annotation(&new, n, "y")], at(4))
        .await
        .unwrap();
    s.complete_work(&[up.work]).await.unwrap();
    s.finish_operation(new.id, at(5)).await.unwrap();
    let running = s
        .start_operation(start_request("objects", 1, "k"), 600, at(6))
        .await
        .unwrap();

    assert!(matches!(
        refused(s.delete_annotations(old.id, &[a]).await),
        LifecycleError::CollectionNotBegun { .. }
    ));
    assert!(matches!(
        refused(s.begin_collection(new.id, at(7)).await),
        LifecycleError::CollectActive { .. }
    ));
    assert!(matches!(
        refused(s.begin_collection(running.id, at(7)).await),
        LifecycleError::CollectStarted { .. }
    ));
    let begun = s.begin_collection(old.id, at(8)).await.unwrap();
    let c0 = begun.collected.clone().expect("begun");
    assert_eq!((c0.started_at, c0.finished_at, c0.freed), (at(8), None, 0));
    assert_eq!(s.begin_collection(old.id, at(9)).await.unwrap(), begun);
    assert!(matches!(
        refused(
            s.activate_operation(old.id, ActivationReason::Rollback, None, at(9))
                .await
        ),
        LifecycleError::Collected { .. }
    ));

    // Ids of another run, or of none, are skipped.
    let deleted = s
        .delete_annotations(old.id, &[a, b, b, n, Uuid::now_v7()])
        .await
        .unwrap();
    assert_eq!(deleted, 2);
    let got = s.get_annotations(&[a, b, c, n]).await.unwrap();
    assert_eq!(
        got.iter().map(Option::is_some).collect::<Vec<_>>(),
        vec![false, false, true, true]
    );
    let left = s.annotations_of_operation(old.id, None, 10).await.unwrap();
    assert_eq!(left.iter().map(|x| x.id).collect::<Vec<_>>(), vec![c]);
    // The ids are free again: another run may claim one.
    s.upsert_annotations(running.id, &[annotation(&running, a, "z")], at(10))
        .await
        .expect("a deleted id can be claimed again");
    assert_eq!(s.delete_annotations(old.id, &[a]).await.unwrap(), 0);
    assert_eq!(
        s.get_annotations(&[a]).await.unwrap()[0]
            .as_ref()
            .map(|x| x.operation_id),
        Some(running.id)
    );

    assert_eq!(s.delete_annotations(old.id, &[c]).await.unwrap(), 1);
    assert!(
        s.annotations_of_operation(old.id, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let done = s.end_collection(old.id, 3, at(11)).await.unwrap();
    let c1 = done.collected.clone().unwrap();
    assert_eq!((c1.finished_at, c1.freed), (Some(at(11)), 3));
    assert_eq!(op(&s, old.id).await, done);
    assert_eq!(s.end_collection(old.id, 5, at(12)).await.unwrap(), done);
    assert!(matches!(
        refused(s.end_collection(new.id, 1, at(12)).await),
        LifecycleError::CollectionNotBegun { .. }
    ));
}
