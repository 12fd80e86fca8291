//! Many API nodes on one key, against a real cluster only: kassandra ignores LWT
//! conditions, so these would pass there for the wrong reason (or fail for it).
//! Set `ANNOSTORE_TEST_CASSANDRA=host:port` to run them.

mod common;

use annostore_cassandra::{CassandraStore, apply_schema};
use annostore_core::model::OperationStatus;
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
