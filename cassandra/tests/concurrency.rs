//! Many API nodes on one key, against a real cluster only: kassandra ignores LWT
//! conditions, so these would pass there for the wrong reason (or fail for it).
//! Set `ANNOSTORE_TEST_CASSANDRA=host:port` to run them.

mod common;

use annostore_cassandra::{CassandraStore, apply_schema};
use annostore_core::model::{ActivationReason, OperationKey, OperationStatus};
use annostore_core::store::Store;
use annostore_core::testkit::store::{at, start_request};
use std::collections::HashSet;

async fn two_nodes(test: &str) -> Option<(CassandraStore, CassandraStore)> {
    let config = common::real_cluster("conc", test)?;
    apply_schema(&config).await.expect("apply schema");
    let a = CassandraStore::connect(&config)
        .await
        .expect("connect node a");
    let b = CassandraStore::connect(&config)
        .await
        .expect("connect node b");
    assert!(a.conditions_honoured(), "the cluster must honour LWT");
    Some((a, b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_finishing_runs_of_one_key_leave_the_newest_active() {
    let Some((a, b)) = two_nodes("two_nodes_finishing_runs_of_one_key").await else {
        return;
    };
    for round in 0..10 {
        let pivot = format!("race-{round}");
        let older = a
            .start_operation(start_request("objects", 1, &pivot), 600, at(0))
            .await
            .unwrap();
        let newer = b
            .start_operation(start_request("objects", 1, &pivot), 600, at(1))
            .await
            .unwrap();
        assert_eq!(newer.operation_number, older.operation_number + 1);
        // Alternate who goes first; both run at once.
        let (ra, rb) = if round % 2 == 0 {
            tokio::join!(
                a.finish_operation(older.id, at(10)),
                b.finish_operation(newer.id, at(10))
            )
        } else {
            let (rb, ra) = tokio::join!(
                b.finish_operation(newer.id, at(10)),
                a.finish_operation(older.id, at(10))
            );
            (ra, rb)
        };
        ra.unwrap();
        rb.unwrap();
        let o = a.get_operation(older.id).await.unwrap().unwrap();
        let n = a.get_operation(newer.id).await.unwrap().unwrap();
        assert_eq!(o.status, OperationStatus::Finished);
        assert_eq!(n.status, OperationStatus::Finished);
        assert!(n.active, "round {round}: the newest finished run is active");
        assert!(!o.active, "round {round}: the older run is not");
        assert_eq!(o.superseded_by, Some(n.id));
        let active: Vec<_> = a
            .active_operations()
            .await
            .unwrap()
            .into_iter()
            .filter(|op| op.pivot_id == pivot)
            .collect();
        assert_eq!(active, vec![n], "round {round}: one active run per key");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_of_one_key_get_distinct_numbers() {
    let Some((a, b)) = two_nodes("concurrent_starts_of_one_key").await else {
        return;
    };
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            s.start_operation(start_request("objects", 1, "same"), 600, at(0))
                .await
                .unwrap()
                .operation_number
        }));
    }
    let mut numbers = HashSet::new();
    for t in tasks {
        assert!(numbers.insert(t.await.unwrap()), "numbers are unique");
    }
    assert_eq!(numbers, (1..=20).collect::<HashSet<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_annotation_id_is_won_by_exactly_one_operation() {
    use annostore_core::store::StoreError;
    use annostore_core::testkit::store::annotation;
    let Some((a, b)) = two_nodes("one_annotation_id_is_won_by_exactly_one_operation").await else {
        return;
    };
    for round in 0..10 {
        let pivot = format!("ids-{round}");
        let x = a
            .start_operation(start_request("objects", 1, &pivot), 600, at(0))
            .await
            .unwrap();
        let y = b
            .start_operation(start_request("objects", 1, &pivot), 600, at(0))
            .await
            .unwrap();
        let id = uuid::Uuid::new_v4();
        let (ax, ay) = ([annotation(&x, id, "x")], [annotation(&y, id, "y")]);
        let (rx, ry) = tokio::join!(
            a.upsert_annotations(x.id, &ax, at(1)),
            b.upsert_annotations(y.id, &ay, at(1))
        );
        let winner = match (rx, ry) {
            (Ok(_), Err(StoreError::IdConflict { owner, .. })) => {
                assert_eq!(owner, x.id);
                x.id
            }
            (Err(StoreError::IdConflict { owner, .. }), Ok(_)) => {
                assert_eq!(owner, y.id);
                y.id
            }
            other => panic!("round {round}: exactly one must win, got {other:?}"),
        };
        let stored = a.get_annotations(&[id]).await.unwrap();
        assert_eq!(stored[0].as_ref().map(|s| s.operation_id), Some(winner));
        let loser = if winner == x.id { y.id } else { x.id };
        let l = a.get_operation(loser).await.unwrap().unwrap();
        assert_eq!(l.annotation_count, 0, "the loser wrote nothing");
        assert!(a.pending_work(Some(loser), 10).await.unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_racing_a_finish_leaves_one_active_and_a_gapless_history() {
    let Some((a, b)) = two_nodes("a_rollback_racing_a_finish").await else {
        return;
    };
    for round in 0..10 {
        let pivot = format!("rollback-race-{round}");
        let mut runs = Vec::new();
        for t in 0..2 {
            let op = a
                .start_operation(start_request("objects", 1, &pivot), 600, at(t))
                .await
                .unwrap();
            a.finish_operation(op.id, at(t + 1)).await.unwrap();
            runs.push(op.id);
        }
        let newest = b
            .start_operation(start_request("objects", 1, &pivot), 600, at(5))
            .await
            .unwrap();
        // Node a rolls back to run 1 while node b finishes run 3 (newer than both).
        let (rolled, finished) = tokio::join!(
            a.activate_operation(runs[0], ActivationReason::Rollback, None, at(10)),
            b.finish_operation(newest.id, at(10))
        );
        rolled.unwrap();
        finished.unwrap();
        runs.push(newest.id);
        let mut ops = Vec::new();
        for id in &runs {
            ops.push(a.get_operation(*id).await.unwrap().unwrap());
        }
        let active: Vec<_> = ops.iter().filter(|o| o.active).collect();
        assert_eq!(active.len(), 1, "round {round}: one run active: {ops:?}");
        let active = active[0];
        let key = OperationKey {
            annotation_type: "objects".into(),
            annotation_type_version: 1,
            pivot_id: pivot.clone(),
        };
        let history = a.activations(&key, 10).await.unwrap();
        let seqs: Vec<u64> = history.iter().map(|h| h.sequence).collect();
        assert_eq!(
            seqs,
            vec![4, 3, 2, 1],
            "round {round}: every move numbered once"
        );
        assert_eq!(history[0].operation_id, active.id);
        assert_eq!(active.activation, 4);
        assert_eq!(history[0].previous, Some(history[1].operation_id));
        for o in ops.iter().filter(|o| !o.active) {
            assert!(o.activation < 4, "round {round}: {o:?}");
        }
        let in_store: Vec<_> = a
            .active_operations()
            .await
            .unwrap()
            .into_iter()
            .filter(|op| op.pivot_id == pivot)
            .collect();
        assert_eq!(in_store, vec![active.clone()]);
    }
}
