//! `apply_schema` is idempotent, and what it creates is usable.

mod common;

use annostore_cassandra::{CassandraStore, apply_schema};
use annostore_core::model::AnnotationType;
use annostore_core::store::{PutType, Store};
use annostore_core::testkit::store::at;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_schema_twice_keeps_the_data() {
    let config = common::fresh_config("schema");
    apply_schema(&config).await.expect("first apply");
    let store = CassandraStore::connect(&config).await.expect("connect");
    assert!(
        !store.conditions_honoured(),
        "kassandra ignores conditions: the store must notice (it warns)"
    );
    let def = AnnotationType {
        name: "objects".into(),
        version: 1,
        schema: serde_json::json!({"type": "object"}),
        embedding_dim: None,
        created_at: at(0),
    };
    assert!(matches!(
        store.put_type(def.clone()).await.unwrap(),
        PutType::Created(_)
    ));
    apply_schema(&config).await.expect("second apply");
    let again = CassandraStore::connect(&config)
        .await
        .expect("connect again");
    assert_eq!(again.list_types().await.unwrap(), vec![def]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_without_schema_fails() {
    let config = common::fresh_config("noschema");
    assert!(CassandraStore::connect(&config).await.is_err());
}
