//! The store conformance suite (`annostore_core::testkit::store`) on kassandra, one
//! fresh keyspace per test; and on a real cluster when `ANNOSTORE_TEST_CASSANDRA` is set.
//!
//! None of the suite's tests depends on LWT conditions, clustering order or ranges
//! (they write sequentially, and the store sorts and filters bounded partitions itself),
//! so all of them are meaningful on kassandra.

mod common;

use annostore_cassandra::{CassandraStore, apply_schema};
use annostore_core::store::Store;
use annostore_core::testkit::store::run_all;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_conformance_on_kassandra() {
    run_all(|| async { Arc::new(common::fresh_store("conf").await) as Arc<dyn Store> }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_conformance_on_a_real_cluster() {
    let Some(base) = common::real_cluster("conf", "store_conformance_on_a_real_cluster") else {
        return;
    };
    run_all(|| {
        let mut config = base.clone();
        config.keyspace = common::fresh_config("conf_real").keyspace;
        async move {
            apply_schema(&config).await.expect("apply schema");
            let store = CassandraStore::connect(&config).await.expect("connect");
            assert!(store.conditions_honoured(), "a real cluster honours LWT");
            Arc::new(store) as Arc<dyn Store>
        }
    })
    .await;
}
