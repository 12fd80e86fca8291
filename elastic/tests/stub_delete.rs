//! `delete_operation` (`_delete_by_query`, for garbage collection) against a stub
//! Elasticsearch (tests/common): the request on the wire (golden body, refresh and
//! conflict parameters), and answers that must fail it: a partial delete (failures
//! listed), a timed-out one, a server that keeps failing, a malformed answer. Against
//! a real server, the index conformance suite (conformance.rs) runs it.

mod common;

use annostore_core::index::{Index, IndexError};
use common::{Stub, fixture, golden, op};
use serde_json::json;

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap() + "\n"
}

#[tokio::test]
async fn delete_by_query_on_the_wire_returns_what_was_deleted() {
    let stub = Stub::start(Box::new(|_, _| (200, fixture("delete_by_query.json")))).await;
    let n = stub.index().delete_operation(op(5)).await.unwrap();
    assert_eq!(n, 3);
    let reqs = stub.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, "/annostore-annotations/_delete_by_query");
    let params: Vec<&str> = reqs[0].query.split('&').collect();
    assert!(params.contains(&"refresh=true"), "{}", reqs[0].query);
    assert!(params.contains(&"conflicts=proceed"), "{}", reqs[0].query);
    golden("delete_operation.json", &pretty(&reqs[0].json()));
}

#[tokio::test]
async fn nothing_to_delete_is_zero() {
    let stub = Stub::start(Box::new(|_, _| {
        let body = json!({"took": 1, "timed_out": false, "total": 0, "deleted": 0,
            "batches": 0, "version_conflicts": 0, "noops": 0, "failures": []});
        (200, serde_json::to_vec(&body).unwrap())
    }))
    .await;
    assert_eq!(stub.index().delete_operation(op(6)).await.unwrap(), 0);
}

#[tokio::test]
async fn a_partial_delete_is_an_error_naming_the_first_failure() {
    let stub = Stub::start(Box::new(|_, _| {
        (200, fixture("delete_by_query_failures.json"))
    }))
    .await;
    let err = stub.index().delete_operation(op(5)).await.unwrap_err();
    match &err {
        IndexError::Unavailable(m) => {
            assert!(m.contains("deleted 3"), "{m}");
            assert!(m.contains("failed 2 time(s)"), "{m}");
            assert!(m.contains("es_rejected_execution_exception"), "{m}");
            assert!(m.contains(&op(5).to_string()), "{m}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(stub.requests().len(), 1, "answered: not sent again");
}

#[tokio::test]
async fn a_search_side_failure_is_described_by_its_reason() {
    let stub = Stub::start(Box::new(|_, _| {
        let mut body: serde_json::Value =
            serde_json::from_slice(&fixture("delete_by_query_failures.json")).unwrap();
        let second = body["failures"][1].clone();
        body["failures"] = json!([second]);
        (200, serde_json::to_vec(&body).unwrap())
    }))
    .await;
    let err = stub.index().delete_operation(op(5)).await.unwrap_err();
    assert!(
        matches!(&err, IndexError::Unavailable(m) if m.contains("node_not_connected_exception")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_timed_out_delete_is_an_error() {
    let stub = Stub::start(Box::new(|_, _| {
        let mut body: serde_json::Value =
            serde_json::from_slice(&fixture("delete_by_query.json")).unwrap();
        body["timed_out"] = json!(true);
        (200, serde_json::to_vec(&body).unwrap())
    }))
    .await;
    let err = stub.index().delete_operation(op(5)).await.unwrap_err();
    assert!(
        matches!(&err, IndexError::Unavailable(m) if m.contains("timed out after deleting 3")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_server_error_is_retried_then_unavailable() {
    let stub = Stub::start(Box::new(|_, n| {
        if n == 0 {
            (503, fixture("error_503_cluster_block.json"))
        } else {
            (200, fixture("delete_by_query.json"))
        }
    }))
    .await;
    assert_eq!(stub.index().delete_operation(op(5)).await.unwrap(), 3);
    assert_eq!(stub.requests().len(), 2, "the 503 was retried");

    let down = Stub::start(Box::new(|_, _| {
        (503, fixture("error_503_cluster_block.json"))
    }))
    .await;
    let err = down.index().delete_operation(op(5)).await.unwrap_err();
    match &err {
        IndexError::Unavailable(m) => assert!(m.contains("delete by query"), "{m}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(
        down.requests().len(),
        1 + 3,
        "the first try and max_retries (3)"
    );
}

#[tokio::test]
async fn a_bad_request_or_a_malformed_answer_fails() {
    let stub = Stub::start(Box::new(|_, _| {
        (400, fixture("error_400_illegal_argument.json"))
    }))
    .await;
    assert!(matches!(
        stub.index().delete_operation(op(5)).await,
        Err(IndexError::Rejected(_))
    ));
    assert_eq!(stub.requests().len(), 1);
    let stub = Stub::start(Box::new(|_, _| (200, b"{\"took\": 3}".to_vec()))).await;
    assert!(matches!(
        stub.index().delete_operation(op(5)).await,
        Err(IndexError::Unavailable(m)) if m.contains("unreadable")
    ));
}
