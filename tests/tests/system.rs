//! Type registration, health, metrics and the served OpenAPI contract.

use annostore_tests::{Server, eventually, s};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_registration_is_immutable_and_listed() {
    let srv = Server::start();
    let def = json!({"schema": {"type": "object", "properties": {"k": {"type": "integer"}}}, "embedding_dim": 8});
    let created = srv.put_type("objects", 1, &def).await;
    let ty = created.expect(201).clone();
    assert_eq!(ty["name"], "objects");
    assert_eq!(ty["version"], 1);
    assert_eq!(ty["embedding_dim"], 8);
    assert_eq!(ty["schema"], def["schema"]);

    // The same body again: 200, the registration unchanged.
    let again = srv.put_type("objects", 1, &def).await;
    assert_eq!(again.expect(200), &ty);

    // A different body for the same version: 409, and the first one stays.
    let other = json!({"schema": {"type": "object"}, "embedding_dim": 8});
    srv.put_type("objects", 1, &other).await.problem(409);
    let dim = json!({"schema": def["schema"], "embedding_dim": 9});
    srv.put_type("objects", 1, &dim).await.problem(409);

    // Another version is another registration; no body fields means schema {}.
    srv.put_type("objects", 2, &json!({})).await.expect(201);
    srv.put_type("faces", 1, &json!({})).await.expect(201);

    let list = srv.get("/v1/types").await;
    let types = list.expect(200)["types"].as_array().unwrap().clone();
    let mut names: Vec<(String, u64)> = types
        .iter()
        .map(|t| (s(t, "name"), t["version"].as_u64().unwrap()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            ("faces".into(), 1),
            ("objects".into(), 1),
            ("objects".into(), 2)
        ]
    );
    let v1 = types
        .iter()
        .find(|t| t["name"] == "objects" && t["version"] == 1)
        .unwrap();
    assert_eq!(v1["embedding_dim"], 8, "the 409s must not have changed it");

    // Starting an operation needs a registered type version.
    srv.start_op("objects", 2, "p").await;
    let r = srv
        .start_raw(
            &json!({"annotation_type": "objects", "annotation_type_version": 3, "pivot_id": "p"}),
        )
        .await;
    r.problem(422);
    let r = srv
        .start_raw(
            &json!({"annotation_type": "nope", "annotation_type_version": 1, "pivot_id": "p"}),
        )
        .await;
    r.problem(422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_openapi() {
    let srv = Server::start();
    let h = srv.get("/healthz").await;
    h.expect(200);

    // Some traffic first, so request metrics exist.
    srv.register("objects", 1).await;
    let op = srv.start_op("objects", 1, "p").await;
    srv.upsert_ok(&s(&op, "id"), &annostore_tests::anns("m", 3, "cat", "r"))
        .await;
    srv.search(&json!({})).await.expect(200);
    srv.get("/no/such/route").await.problem(404);

    let m = srv.get("/metrics").await;
    m.expect(200);
    assert!(
        m.content_type.starts_with("text/plain"),
        "metrics content type {:?}",
        m.content_type
    );
    assert!(
        m.text.contains("annostore_http_requests_total"),
        "no request counter in:\n{}",
        m.text
    );
    let metric_lines = m
        .text
        .lines()
        .filter(|l| l.starts_with("annostore_"))
        .count();
    assert!(metric_lines >= 3, "few annostore_ metrics:\n{}", m.text);
    // The index backlog gauges: nothing queued, nothing pending, on a healthy server.
    eventually(
        Duration::from_secs(20),
        "backlog gauges are published",
        || async {
            let text = srv.get("/metrics").await.text;
            text.contains("annostore_retry_queue_depth 0")
                && text.contains("annostore_retry_dead_letters 0")
                && text.contains("annostore_pending_index_work_oldest_seconds 0")
        },
    )
    .await;

    let o = srv.get("/openapi.yaml").await;
    o.expect(200);
    assert!(!o.text.trim().is_empty(), "openapi.yaml is empty");
    assert!(
        o.text.trim_start().starts_with("openapi: 3.1"),
        "openapi.yaml does not start with `openapi: 3.1`: {:?}",
        o.text.chars().take(80).collect::<String>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_filter_variable_is_not_configuration() {
    // ANNOSTORE_LOG (the documented log filter) shares the prefix of the configuration
    // variables; it must not make the configuration invalid.
    let srv = Server::start_with(&[("ANNOSTORE_LOG", "debug")]);
    srv.get("/healthz").await.expect(200);
}
