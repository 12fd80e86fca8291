//! Every kind of bad input gets its 4xx problem, never a 5xx, and changes nothing.

use annostore_tests::{Api, Server, Uuid, anns, s};
use serde_json::{Value, json};

fn item() -> Value {
    json!({"media_id": "m", "start_ms": 0, "end_ms": 10})
}

fn with(field: &str, v: Value) -> Value {
    let mut a = item();
    a[field] = v;
    a
}

/// Upserts one bad item and expects a 422 naming `field` at index 0; nothing written.
async fn rejects(api: &Api, op: &str, bad: Value, field: &str) {
    let r = api.upsert(op, std::slice::from_ref(&bad)).await;
    let p = r.problem(422);
    let errors = p["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors: {p}"));
    assert!(
        errors
            .iter()
            .any(|e| e["index"] == 0 && e["field"].as_str().unwrap_or("").starts_with(field)),
        "{bad} should be refused on {field}: {p}"
    );
    assert!(errors.iter().all(|e| e["reason"].is_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_misshapen_bodies() {
    let srv = Server::start();
    srv.register("objects", 1).await;
    let op = s(&srv.start_op("objects", 1, "p").await, "id");
    let upsert = format!("/v1/operations/{op}/annotations");
    for path in ["/v1/operations", upsert.as_str(), "/v1/annotations/search"] {
        // Malformed JSON is a 400 even when a key or value comes before the error.
        for body in [
            "{",
            "{,}",
            "not json",
            "{\"",
            "",
            "{\"a\": }",
            "{} trailing",
            "[",
            "{\"annotations\": [1,}",
        ] {
            srv.post_raw(path, body.to_owned()).await.problem(400);
        }
        // Well-formed JSON of the wrong shape: 422.
        srv.post_raw(path, "[]").await.problem(422);
        srv.post_raw(path, "{\"unknown_field\": 1}")
            .await
            .problem(422);
    }
    let r = srv
        .send(
            srv.http
                .put(srv.url("/v1/types/t/versions/1"))
                .header("content-type", "application/json")
                .body("{"),
        )
        .await;
    r.problem(400);
    srv.put_type("t", 1, &json!({"schema": {}, "bogus": 1}))
        .await
        .problem(422);
    // Wrong types in a start request.
    for body in [
        json!({"annotation_type": 1, "annotation_type_version": 1, "pivot_id": "p"}),
        json!({"annotation_type": "objects", "annotation_type_version": "1", "pivot_id": "p"}),
        json!({"annotation_type": "objects", "pivot_id": "p"}),
        json!({"annotation_type": "objects", "annotation_type_version": 1, "pivot_id": "p", "metadata": [1]}),
        json!({"annotation_type": "objects", "annotation_type_version": 1, "pivot_id": ""}),
    ] {
        srv.start_raw(&body).await.problem(422);
    }
    // A body that is not JSON at all in content type.
    let r = srv
        .send(
            srv.http
                .post(srv.url("/v1/annotations/search"))
                .header("content-type", "text/plain")
                .body("{}"),
        )
        .await;
    assert!(
        (400..500).contains(&r.status),
        "text/plain body: {}",
        r.status
    );
    // `annotations` of the wrong type.
    srv.post(&upsert, &json!({"annotations": {"a": 1}}))
        .await
        .problem(422);
    srv.post(&upsert, &json!({})).await.problem(422);
    assert_eq!(srv.op_ok(&op).await["annotation_count"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_item_fails_the_whole_batch_and_every_bad_item_is_named() {
    let srv = Server::start();
    let schema = json!({"type": "object", "properties": {"score": {"type": "number"}}, "required": ["score"]});
    srv.put_type("scored", 1, &json!({"schema": schema, "embedding_dim": 3}))
        .await
        .expect(201);
    let op = s(&srv.start_op("scored", 1, "p").await, "id");
    let good =
        |i: i64| json!({"media_id": "m", "start_ms": i, "end_ms": i + 1, "data": {"score": 1}});
    let batch = vec![
        good(0),
        json!({"media_id": "", "start_ms": 5, "end_ms": 1, "data": {"score": 1}}),
        good(2),
        json!({"media_id": "m", "start_ms": 0, "end_ms": 1, "confidence": 7, "embedding": [1.0], "data": {}}),
        good(4),
        json!("not an object"),
    ];
    let r = srv.upsert(&op, &batch).await;
    let p = r.problem(422).clone();
    let errors = p["errors"].as_array().unwrap();
    let at = |i: u64| -> Vec<String> {
        errors
            .iter()
            .filter(|e| e["index"] == i)
            .map(|e| s(e, "field"))
            .collect()
    };
    for i in [0, 2, 4] {
        assert!(at(i).is_empty(), "good item {i} reported: {p}");
    }
    let one = at(1);
    assert!(
        one.contains(&"media_id".to_owned()) && one.contains(&"end_ms".to_owned()),
        "{p}"
    );
    let three = at(3);
    for f in ["confidence", "embedding"] {
        assert!(
            three.contains(&f.to_owned()),
            "{f} of item 3 not reported: {p}"
        );
    }
    assert!(
        three.iter().any(|f| f.starts_with("data")),
        "schema of item 3: {p}"
    );
    assert!(!at(5).is_empty(), "item 5 not reported: {p}");
    // Nothing of the batch was written.
    assert_eq!(srv.op_ok(&op).await["annotation_count"], 0);
    assert!(
        srv.search_all(&json!({"operation_id": op}), 100)
            .await
            .is_empty()
    );
    // The good items alone go in.
    srv.upsert_ok(&op, &[good(0), good(2), good(4)]).await;
    assert_eq!(srv.op_ok(&op).await["annotation_count"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_fields_are_checked() {
    let srv = Server::start();
    srv.put_type("emb", 1, &json!({"embedding_dim": 4}))
        .await
        .expect(201);
    srv.put_type("wide", 1, &json!({"embedding_dim": 4096}))
        .await
        .expect(201);
    srv.put_type(
        "strict",
        1,
        &json!({"schema": {"type": "object", "properties": {"n": {"type": "integer"}}, "additionalProperties": false}}),
    )
    .await
    .expect(201);
    let op = s(&srv.start_op("emb", 1, "p").await, "id");
    let wide = s(&srv.start_op("wide", 1, "p").await, "id");
    let strict = s(&srv.start_op("strict", 1, "p").await, "id");
    let long = "x".repeat(257);
    let max = "x".repeat(256);

    // Required fields and their types.
    for f in ["media_id", "start_ms", "end_ms"] {
        let mut a = item();
        a.as_object_mut().unwrap().remove(f);
        rejects(&srv, &op, a, f).await;
    }
    rejects(&srv, &op, with("media_id", json!(5)), "media_id").await;
    rejects(&srv, &op, with("start_ms", json!(-1)), "start_ms").await;
    rejects(&srv, &op, with("start_ms", json!(1.5)), "start_ms").await;
    rejects(&srv, &op, with("start_ms", json!("0")), "start_ms").await;
    rejects(
        &srv,
        &op,
        with("end_ms", json!(9_000_000_000_001_i64)),
        "end_ms",
    )
    .await;
    rejects(&srv, &op, with("start_ms", json!(11)), "end_ms").await;
    rejects(&srv, &op, with("extra", json!(1)), "extra").await;
    // Ids: UUIDs only; anything else (including long strings) is a 422.
    rejects(&srv, &op, with("id", json!("not-a-uuid")), "id").await;
    rejects(&srv, &op, with("id", json!(long)), "id").await;
    rejects(&srv, &op, with("id", json!(12)), "id").await;
    // Names and labels: at most 256 bytes, counted in bytes.
    rejects(&srv, &op, with("media_id", json!(long)), "media_id").await;
    rejects(&srv, &op, with("label", json!(long)), "label").await;
    rejects(
        &srv,
        &op,
        with("media_id", json!("é".repeat(129))),
        "media_id",
    )
    .await;
    rejects(&srv, &op, with("label", json!(7)), "label").await;
    // Confidence in [0, 1], a number.
    for c in [
        json!(-0.01),
        json!(1.01),
        json!(1e300),
        json!(-1e300),
        json!("NaN"),
        json!("Infinity"),
        json!("0.5"),
        json!(true),
    ] {
        rejects(&srv, &op, with("confidence", c), "confidence").await;
    }
    // Boxes: four numbers in [0, 1], inside the frame.
    for b in [
        json!({"x": 0.8, "y": 0.0, "w": 0.3, "h": 0.1}),
        json!({"x": 0.0, "y": 0.5, "w": 0.1, "h": 0.6}),
        json!({"x": -0.1, "y": 0.0, "w": 0.1, "h": 0.1}),
        json!({"x": 0.0, "y": 0.0, "w": 1.5, "h": 0.1}),
        json!({"x": "NaN", "y": 0.0, "w": 0.1, "h": 0.1}),
        json!({"x": 0.0, "y": "Infinity", "w": 0.1, "h": 0.1}),
        json!({"x": 0.0, "y": 0.0, "w": 1e300, "h": 0.1}),
        json!({"x": 0.0, "y": 0.0, "w": 0.1}),
        json!({"x": 0.0, "y": 0.0, "w": 0.1, "h": 0.1, "z": 0.0}),
        json!([0.0, 0.0, 0.1, 0.1]),
        json!("box"),
    ] {
        rejects(&srv, &op, with("bbox", b), "bbox").await;
    }
    // Embeddings: the type's dimension, finite numbers, at most 4096.
    rejects(
        &srv,
        &op,
        with("embedding", json!([1.0, 2.0, 3.0])),
        "embedding",
    )
    .await;
    rejects(
        &srv,
        &op,
        with("embedding", json!([1.0, 2.0, 3.0, 4.0, 5.0])),
        "embedding",
    )
    .await;
    rejects(
        &srv,
        &op,
        with("embedding", json!([1.0, 2.0, "x", 4.0])),
        "embedding",
    )
    .await;
    rejects(
        &srv,
        &op,
        with("embedding", json!([1.0, 2.0, 1e300, 4.0])),
        "embedding",
    )
    .await;
    rejects(&srv, &op, with("embedding", json!("1,2,3,4")), "embedding").await;
    rejects(
        &srv,
        &wide,
        with("embedding", json!(vec![0.5; 4097])),
        "embedding",
    )
    .await;
    srv.upsert_ok(&wide, &[with("embedding", json!(vec![0.5; 4096]))])
        .await;
    let plain = s(&srv.start_op("strict", 1, "q").await, "id");
    rejects(&srv, &plain, with("embedding", json!([1.0])), "embedding").await;
    // Data: the type's schema, at most 64 KiB.
    rejects(&srv, &strict, with("data", json!({"n": "one"})), "data").await;
    rejects(&srv, &strict, with("data", json!({"other": 1})), "data").await;
    let big = json!({"n": 1, "pad": "x".repeat(64 * 1024)});
    let mut any = srv.start_op("emb", 1, "big").await;
    rejects(&srv, &s(&any, "id"), with("data", big), "data").await;
    let mut deep = json!(1);
    for _ in 0..40 {
        deep = json!({ "d": deep });
    }
    rejects(&srv, &s(&any, "id"), with("data", deep), "data").await;

    // Nothing of all that was written.
    for id in [&op, &wide, &strict, &plain] {
        let n = srv.op_ok(id).await["annotation_count"].clone();
        assert!(n == 0 || (id == &wide && n == 1), "{id}: {n}");
    }
    any = srv.op_ok(&s(&any, "id")).await;
    assert_eq!(any["annotation_count"], 0);

    // The limits themselves are accepted.
    let mut ok = item();
    ok["media_id"] = json!(max);
    ok["label"] = json!(max);
    ok["confidence"] = json!(1.0);
    ok["bbox"] = json!({"x": 0.5, "y": 0.0, "w": 0.5, "h": 1.0});
    ok["embedding"] = json!([0.0, -1.5, 3.25, 1e30]);
    ok["data"] = json!({"pad": "x".repeat(60 * 1024)});
    ok["id"] = json!(Uuid::new_v4().to_string());
    srv.upsert_ok(&op, &[ok.clone()]).await;
    srv.upsert_ok(&strict, &[with("data", json!({"n": 1})), item()])
        .await;
    srv.finish(&op).await.expect(200);
    let got = srv.get(&format!("/v1/annotations/{}", s(&ok, "id"))).await;
    let got = got.expect(200);
    assert_eq!(got["label"], ok["label"]);
    assert_eq!(got["bbox"], ok["bbox"]);
    assert_eq!(got["embedding"], ok["embedding"]);
    assert_eq!(got["data"], ok["data"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_that_is_not_a_number_is_refused() {
    // JSON has no NaN or infinities: bodies that try are malformed (400), or refused as
    // invalid values (422); never accepted, never a 5xx.
    let srv = Server::start();
    srv.register("objects", 1).await;
    let op = s(&srv.start_op("objects", 1, "p").await, "id");
    let path = format!("/v1/operations/{op}/annotations");
    for v in ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"] {
        for field in [
            format!("\"confidence\": {v}"),
            format!("\"bbox\": {{\"x\": {v}, \"y\": 0, \"w\": 0.1, \"h\": 0.1}}"),
        ] {
            let body = format!(
                "{{\"annotations\": [{{\"media_id\": \"m\", \"start_ms\": 0, \"end_ms\": 1, {field}}}]}}"
            );
            let r = srv.post_raw(&path, body.clone()).await;
            assert!(
                r.status == 400 || r.status == 422,
                "{body}: {} {}",
                r.status,
                r.text
            );
            r.problem(r.status);
        }
    }
    assert_eq!(srv.op_ok(&op).await["annotation_count"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_types_operations_and_searches_are_checked() {
    let srv = Server::start();
    let long = "x".repeat(257);
    // Types.
    srv.put_type(&long, 1, &json!({})).await.problem(422);
    srv.put_type("t", 0, &json!({})).await.problem(422);
    srv.put_type("t", 1, &json!({"schema": {"type": 12}}))
        .await
        .problem(422);
    srv.put_type("t", 1, &json!({"schema": 5}))
        .await
        .problem(422);
    srv.put_type("t", 1, &json!({"embedding_dim": 0}))
        .await
        .problem(422);
    srv.put_type("t", 1, &json!({"embedding_dim": 4097}))
        .await
        .problem(422);
    srv.put_type("t", 1, &json!({"embedding_dim": -1}))
        .await
        .problem(422);
    let r = srv
        .send(
            srv.http
                .put(srv.url("/v1/types/t/versions/abc"))
                .json(&json!({})),
        )
        .await;
    assert!(
        r.status == 422 || r.status == 404 || r.status == 400,
        "{}",
        r.status
    );
    r.problem(r.status);
    let r = srv.get("/v1/types").await;
    assert_eq!(
        r.expect(200)["types"],
        json!([]),
        "refused types were stored"
    );
    srv.put_type(&"x".repeat(256), 1, &json!({}))
        .await
        .expect(201);

    // Operations.
    srv.register("objects", 1).await;
    let start = |pivot: &str| json!({"annotation_type": "objects", "annotation_type_version": 1, "pivot_id": pivot});
    srv.start_raw(&start(&long)).await.problem(422);
    srv.start_raw(&start(&"x".repeat(256))).await.expect(201);
    srv.start_raw(&json!({"annotation_type": long, "annotation_type_version": 1, "pivot_id": "p"}))
        .await
        .problem(422);
    let mut big_meta = start("p");
    big_meta["metadata"] = json!({"pad": "x".repeat(65 * 1024)});
    srv.start_raw(&big_meta).await.problem(422);

    // Searches.
    for body in [
        json!({"limit": 1001}),
        json!({"limit": 0}),
        json!({"limit": -1}),
        json!({"min_confidence": 1.5}),
        json!({"min_confidence": -0.5}),
        json!({"time_range": {"start_ms": 10, "end_ms": 5}}),
        json!({"time_range": {"start_ms": 10}}),
        json!({"operation_id": "not-a-uuid"}),
        json!({"bogus": 1}),
    ] {
        srv.search(&body).await.problem(422);
    }
    srv.get("/v1/media/m/annotations?from_ms=-5")
        .await
        .problem(422);
    srv.get("/v1/media/m/annotations?limit=0")
        .await
        .problem(422);
    // Bad query parameters: 400.
    srv.get("/v1/media/m/annotations?limit=abc")
        .await
        .problem(400);
    srv.get("/v1/media/m/annotations?bogus=1")
        .await
        .problem(400);
    srv.get("/v1/operations?status=RUNNING").await.problem(400);
    srv.get("/v1/operations?started_before=yesterday")
        .await
        .problem(400);
    srv.get("/v1/operations?limit=x").await.problem(400);
    srv.get("/v1/operations?limit=1001").await.problem(422);

    // Routes.
    srv.get("/v1/nothing").await.problem(404);
    srv.get("/").await.problem(404);
    srv.post("/v1/annotations/none/search", &json!({}))
        .await
        .problem(404);
    let r = srv.send(srv.http.delete(srv.url("/v1/types"))).await;
    r.problem(405);
    let r = srv.get("/v1/annotations/search").await;
    r.problem(405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_limits_on_batches_and_bodies() {
    let srv = Server::start();
    srv.register("objects", 1).await;
    let op = s(&srv.start_op("objects", 1, "p").await, "id");
    let items: Vec<Value> = (0..10_001)
        .map(|i| json!({"media_id": "m", "start_ms": i, "end_ms": i + 1}))
        .collect();
    let r = srv.upsert(&op, &items).await;
    r.problem(413);
    assert_eq!(srv.op_ok(&op).await["annotation_count"], 0);
    // 10,000 is fine.
    srv.upsert_ok(&op, &items[..10_000]).await;
    assert_eq!(srv.op_ok(&op).await["annotation_count"], 10_000);
    // A body over 16 MiB: 413, whatever it holds.
    let pad = "x".repeat(16 * 1024 * 1024);
    let body = format!(
        "{{\"annotations\": [{{\"media_id\": \"m\", \"start_ms\": 0, \"end_ms\": 1, \"label\": \"{pad}\"}}]}}"
    );
    srv.post_raw(&format!("/v1/operations/{op}/annotations"), body)
        .await
        .problem(413);
    assert_eq!(srv.op_ok(&op).await["annotation_count"], 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_limits_on_batches_and_bodies() {
    let srv = Server::start_with(&[
        ("ANNOSTORE_LIMITS__MAX_BATCH", "10"),
        ("ANNOSTORE_LIMITS__MAX_BODY_BYTES", "4096"),
    ]);
    srv.register("objects", 1).await;
    let op = s(&srv.start_op("objects", 1, "p").await, "id");
    srv.upsert(&op, &anns("m", 11, "cat", "r"))
        .await
        .problem(413);
    srv.upsert_ok(&op, &anns("m", 10, "cat", "r")).await;
    let one = json!({"media_id": "m", "start_ms": 0, "end_ms": 1, "label": "y".repeat(5000)});
    srv.upsert(&op, &[one]).await.problem(413);
    // The body limit holds for every JSON route.
    let big = json!({"label": "z".repeat(5000)});
    srv.search(&big).await.problem(413);
    assert_eq!(srv.op_ok(&op).await["annotation_count"], 10);
}
