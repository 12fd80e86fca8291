//! Hostile input: bytes that are not UTF-8, nesting past any parser's comfort, numbers
//! past every width, floats that overflow f32, time ranges backwards or below zero, page
//! tokens tampered with, ids that are not UUIDs, and media ids that try to climb out
//! of a directory. Every answer is the right 4xx as `application/problem+json` (never a
//! 5xx), and nothing is written. What tests/tests/bad_input.rs covers is not repeated.
//! Each test prints how many hostile inputs it sent.

mod hostile {
    pub mod names;
    pub mod raw;
    pub mod tokens;
}

use annostore_tests::{Server, s};
use hostile::raw::Hostile;
use serde_json::{Value, json};

pub(crate) fn item() -> Value {
    json!({"media_id": "m", "start_ms": 0, "end_ms": 10})
}

pub(crate) fn with(field: &str, v: Value) -> Value {
    let mut a = item();
    a[field] = v;
    a
}

/// A server with type `objects` v1 (embeddings of 4, a filterable `speed`) and a
/// STARTED operation of it.
pub(crate) async fn setup() -> (Server, String) {
    let srv = Server::start();
    srv.put_type(
        "objects",
        1,
        &json!({"schema": {"type": "object", "properties": {"speed": {"type": "number"}}},
                "embedding_dim": 4}),
    )
    .await
    .expect(201);
    let op = s(&srv.start_op("objects", 1, "p").await, "id");
    (srv, op)
}

/// Nothing was written: the operation holds no annotation, `objects` is the only type
/// and `op` the only operation.
pub(crate) async fn nothing_written(srv: &Server, op: &str) {
    assert_eq!(srv.op_ok(op).await["annotation_count"], 0);
    let types = srv.get("/v1/types").await.expect(200)["types"].clone();
    assert_eq!(types.as_array().unwrap().len(), 1, "{types}");
    let ops = srv.get("/v1/operations").await.expect(200)["operations"].clone();
    assert_eq!(ops.as_array().unwrap().len(), 1, "{ops}");
}

const JSON_ROUTES: [&str; 5] = [
    "/v1/operations",
    "/v1/annotations/search",
    "/v1/annotations/aggregate",
    "/v1/annotations/cooccurrence",
    "/v1/admin/reindex",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_bodies_paths_and_query_strings() {
    let (srv, op) = setup().await;
    let h = Hostile::new(&srv, "invalid_utf8");
    let upsert = format!("/v1/operations/{op}/annotations");
    // Bodies: raw bytes that are not UTF-8, and escapes of lone surrogates.
    for bad in [
        &b"\xff\xfe"[..],
        b"\xc3\x28",
        b"\xed\xa0\x80",
        b"\xf8\x88\x80\x80\x80",
    ] {
        let mut body = br#"{"annotations": [{"media_id": ""#.to_vec();
        body.extend_from_slice(bad);
        body.extend_from_slice(br#"", "start_ms": 0, "end_ms": 1}]}"#);
        h.check(&srv.post_raw(&upsert, body).await, 400, "upsert");
        for path in JSON_ROUTES {
            let mut body = br#"{"media_id": ""#.to_vec();
            body.extend_from_slice(bad);
            body.extend_from_slice(br#""}"#);
            h.check(&srv.post_raw(path, body).await, 400, path);
        }
        let mut schema = br#"{"schema": {"title": ""#.to_vec();
        schema.extend_from_slice(bad);
        schema.extend_from_slice(br#""}}"#);
        let r = h.raw(
            b"PUT /v1/types/t/versions/1 HTTP/1.1\r\ncontent-type: application/json",
            &schema,
        );
        h.check(&r.await, 400, "put type");
    }
    for esc in [r"\ud800", r"\udfff", r"\ud800\u0041"] {
        let body =
            format!(r#"{{"annotations": [{{"media_id": "{esc}", "start_ms": 0, "end_ms": 1}}]}}"#);
        h.check(&srv.post_raw(&upsert, body).await, 400, esc);
    }
    // Path segments that do not percent-decode to UTF-8: 400, as problems.
    for seg in ["%FF", "%C3%28", "%ED%A0%80", "a%80b"] {
        for (method, path) in [
            ("GET", format!("/v1/operations/{seg}")),
            ("POST", format!("/v1/operations/{seg}/finish")),
            ("POST", format!("/v1/operations/{seg}/cancel")),
            ("GET", format!("/v1/annotations/{seg}")),
            ("GET", format!("/v1/media/{seg}/annotations")),
        ] {
            let r = h
                .raw(format!("{method} {path} HTTP/1.1").as_bytes(), b"")
                .await;
            h.check(&r, 400, &path);
        }
        let body = br#"{"annotations": []}"#;
        let r = h
            .raw(format!("POST /v1/operations/{seg}/annotations HTTP/1.1\r\ncontent-type: application/json").as_bytes(), body)
            .await;
        h.check(&r, 400, "upsert path");
        for path in [
            format!("/v1/types/{seg}/versions/1"),
            format!("/v1/types/t/versions/{seg}"),
        ] {
            let head = format!("PUT {path} HTTP/1.1\r\ncontent-type: application/json");
            h.check(&h.raw(head.as_bytes(), b"{}").await, 400, &path);
        }
        // Query strings: a value of a typed parameter is a 400; a string filter is read
        // with the bad bytes replaced, matches nothing, and is not an error.
        for q in [
            format!("/v1/operations?limit={seg}"),
            format!("/v1/operations?status={seg}"),
            format!("/v1/media/m/annotations?from_ms={seg}"),
            format!("/v1/media/m/annotations?page_token={seg}"),
            format!("/v1/operations?page_token={seg}"),
            format!("/v1/operations?{seg}=1"),
        ] {
            h.check(
                &h.raw(format!("GET {q} HTTP/1.1").as_bytes(), b"").await,
                400,
                &q,
            );
        }
        for q in [
            format!("/v1/operations?pivot_id={seg}"),
            format!("/v1/media/m/annotations?label={seg}"),
        ] {
            let r = h.raw(format!("GET {q} HTTP/1.1").as_bytes(), b"").await;
            h.count();
            let page = r.expect(200);
            let list = page.get("operations").or(page.get("annotations")).unwrap();
            assert_eq!(list, &json!([]), "{q}");
        }
    }
    nothing_written(&srv, &op).await;
}

/// `depth` arrays around `inner`.
fn nested(depth: usize, inner: &str) -> String {
    format!("{}{inner}{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_json() {
    let (srv, op) = setup().await;
    let h = Hostile::new(&srv, "deep_nesting");
    let upsert = format!("/v1/operations/{op}/annotations");
    // Far past the parser's recursion limit: malformed (400), whatever the route.
    for depth in [129, 10_000, 100_000] {
        for path in JSON_ROUTES.iter().copied().chain([upsert.as_str()]) {
            h.check(&srv.post_raw(path, nested(depth, "")).await, 400, path);
            let obj = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
            h.check(&srv.post_raw(path, obj).await, 400, path);
        }
        let data = format!(
            r#"{{"annotations": [{{"media_id": "m", "start_ms": 0, "end_ms": 1, "data": {}}}]}}"#,
            nested(depth, "")
        );
        h.check(&srv.post_raw(&upsert, data).await, 400, "data");
        let schema = format!(r#"{{"schema": {{"items": {}}}}}"#, nested(depth, "{}"));
        let head = b"PUT /v1/types/t/versions/1 HTTP/1.1\r\ncontent-type: application/json";
        h.check(&h.raw(head, schema.as_bytes()).await, 400, "schema");
    }
    // Deep, but within what JSON parses: refused by the nesting limit (32), on its field.
    let data: Value = serde_json::from_str(&nested(100, "1")).unwrap();
    let p = h.check(
        &srv.upsert(&op, &[with("data", data.clone())]).await,
        422,
        "data 100",
    );
    assert_eq!(p["errors"][0]["field"], "data", "{p}");
    let start = json!({"annotation_type": "objects", "annotation_type_version": 1,
                       "pivot_id": "q", "metadata": {"m": data}});
    let p = h.check(&srv.start_raw(&start).await, 422, "metadata 100");
    assert_eq!(p["errors"][0]["field"], "metadata", "{p}");
    let mut schema = json!({});
    for _ in 0..100 {
        schema = json!({ "items": schema });
    }
    let p = h.check(
        &srv.put_type("t", 1, &json!({ "schema": schema })).await,
        422,
        "schema 100",
    );
    assert!(
        p["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["field"] == "schema"),
        "{p}"
    );
    // Deep values where searches expect scalars.
    for body in [
        json!({"data": [{"field": "speed", "eq": data}]}),
        json!({"knn": {"vector": data, "k": 1}}),
        json!({"labels": data}),
    ] {
        h.refused(&srv.search(&body).await, "deep search value");
    }
    nothing_written(&srv, &op).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_numbers_and_floats_past_f32() {
    let (srv, op) = setup().await;
    let h = Hostile::new(&srv, "huge_numbers");
    let upsert = format!("/v1/operations/{op}/annotations");
    // Integers past u32 where a u32 is expected, past i64 where an i64 is.
    let past_u32 = [
        "4294967296",
        "18446744073709551617",
        "9223372036854775808",
        "1e20",
    ];
    let past_i64 = [
        "9223372036854775808",
        "18446744073709551617",
        "-9223372036854775809",
        "1e20",
    ];
    for n in past_u32 {
        for body in [
            format!(
                r#"{{"annotation_type": "objects", "annotation_type_version": {n}, "pivot_id": "q"}}"#
            ),
            format!(
                r#"{{"annotation_type": "objects", "annotation_type_version": 1, "pivot_id": "q", "lease_seconds": {n}}}"#
            ),
        ] {
            h.check(&srv.post_raw("/v1/operations", body).await, 422, "start");
        }
        for body in [
            format!(r#"{{"limit": {n}}}"#),
            format!(r#"{{"knn": {{"vector": [1, 0, 0, 0], "k": {n}}}}}"#),
            format!(r#"{{"annotation_type_version": {n}}}"#),
        ] {
            h.check(
                &srv.post_raw("/v1/annotations/search", body).await,
                422,
                "search",
            );
        }
        let head = b"PUT /v1/types/t/versions/1 HTTP/1.1\r\ncontent-type: application/json";
        let body = format!(r#"{{"embedding_dim": {n}}}"#);
        h.check(&h.raw(head, body.as_bytes()).await, 422, "embedding_dim");
        let head =
            format!("PUT /v1/types/t/versions/{n} HTTP/1.1\r\ncontent-type: application/json");
        let p = h.check(&h.raw(head.as_bytes(), b"{}").await, 422, "version");
        assert_eq!(p["errors"][0]["field"], "version", "{p}");
        for q in [
            format!("/v1/operations?limit={n}"),
            format!("/v1/operations?annotation_type_version={n}"),
            format!("/v1/media/m/annotations?version={n}"),
            format!("/v1/media/m/annotations?limit={n}"),
        ] {
            h.check(&srv.get(&q).await, 400, &q);
        }
    }
    for n in past_i64 {
        for item in [
            format!(r#"{{"media_id": "m", "start_ms": {n}, "end_ms": 1}}"#),
            format!(r#"{{"media_id": "m", "start_ms": 0, "end_ms": {n}}}"#),
        ] {
            let body = format!(r#"{{"annotations": [{item}]}}"#);
            let p = h.check(&srv.post_raw(&upsert, body).await, 422, &item);
            assert!(
                p["errors"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["field"].as_str().unwrap().ends_with("_ms")),
                "{p}"
            );
        }
        for body in [
            format!(r#"{{"time_range": {{"start_ms": 0, "end_ms": {n}}}}}"#),
            format!(r#"{{"time_range": {{"start_ms": {n}, "end_ms": 0}}}}"#),
            format!(
                r#"{{"time_range": {{"start": {{"frame": {n}, "rate_num": 1, "rate_den": 1}}, "end_ms": 0}}}}"#
            ),
        ] {
            h.check(
                &srv.post_raw("/v1/annotations/search", body).await,
                422,
                "time",
            );
        }
        let body = format!(
            r#"{{"media_id": "m", "aggregations": {{"histogram": {{"interval_ms": {n}}}}}}}"#
        );
        h.refused(
            &srv.post_raw("/v1/annotations/aggregate", body).await,
            "interval",
        );
        let body = format!(r#"{{"media_id": "m", "conditions": [{{}}], "slack_ms": {n}}}"#);
        h.check(
            &srv.post_raw("/v1/annotations/cooccurrence", body).await,
            422,
            "slack",
        );
        for q in [
            format!("/v1/media/m/annotations?from_ms={n}"),
            format!("/v1/media/m/annotations?to_ms={n}"),
        ] {
            h.check(&srv.get(&q).await, 400, &q);
        }
    }
    // Past f64: not a JSON number serde can hold; NaN and infinities are not JSON.
    for n in ["1e400", "-1e400", "NaN", "Infinity", "-Infinity"] {
        let body = format!(
            r#"{{"annotations": [{{"media_id": "m", "start_ms": 0, "end_ms": 1, "embedding": [{n}, 0, 0, 1]}}]}}"#
        );
        h.check(&srv.post_raw(&upsert, body).await, 400, n);
        for body in [
            format!(r#"{{"min_confidence": {n}}}"#),
            format!(r#"{{"knn": {{"vector": [{n}, 1, 1, 1]}}}}"#),
            format!(r#"{{"region": {{"x": {n}, "y": 0, "w": 1, "h": 1}}}}"#),
            format!(r#"{{"data": [{{"field": "speed", "gte": {n}}}]}}"#),
        ] {
            h.check(&srv.post_raw("/v1/annotations/search", body).await, 400, n);
        }
    }
    // Finite in f64, infinite in f32: refused, never stored as inf.
    for x in [1e39, -1e39, 3.5e38, f64::MAX] {
        for (field, v) in [
            ("confidence", json!(x)),
            ("bbox", json!({"x": x, "y": 0, "w": 0.1, "h": 0.1})),
            ("embedding", json!([x, 0.5, 0.5, 0.5])),
        ] {
            let p = h.check(&srv.upsert(&op, &[with(field, v)]).await, 422, field);
            assert!(
                p["errors"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["field"].as_str().unwrap().starts_with(field)),
                "{p}"
            );
        }
        for body in [
            json!({"min_confidence": x}),
            json!({"max_confidence": x}),
            json!({"knn": {"vector": [x, 1, 1, 1], "k": 1}}),
            json!({"region": {"x": 0, "y": 0, "w": x, "h": 1}}),
        ] {
            h.check(&srv.search(&body).await, 422, &body.to_string());
        }
    }
    nothing_written(&srv, &op).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_and_reversed_time_ranges() {
    let (srv, op) = setup().await;
    let h = Hostile::new(&srv, "time_ranges");
    // Items: an end below zero or before the start, in every spelling.
    for (start, end) in [
        (0, -1),
        (i64::MIN, 0),
        (i64::MIN, i64::MIN),
        (5, 4),
        (9_000_000_000_000, 0),
    ] {
        let item = json!({"media_id": "m", "start_ms": start, "end_ms": end});
        h.refused(&srv.upsert(&op, &[item]).await, "item range");
    }
    srv.upsert_ok(&op, &[item()]).await;
    srv.finish(&op).await.expect(200);
    // Searches: reversed in frames, mixed, or by a frame of zero rate.
    let frame = |f: i64, num: i64, den: i64| json!({"frame": f, "rate_num": num, "rate_den": den});
    for range in [
        json!({"start": frame(59, 30, 1), "end": frame(30, 30, 1)}),
        json!({"start": frame(1000, 1, 1), "end_ms": 5}),
        json!({"start_ms": 5000, "end": frame(0, 1, 1)}),
        json!({"start": frame(-1, 30, 1), "end_ms": 5}),
        json!({"start": frame(0, 0, 1), "end_ms": 5}),
        json!({"start": frame(0, 30, 0), "end_ms": 5}),
        json!({"start_ms": i64::MAX, "end_ms": i64::MIN}),
        json!({"start_ms": 0, "start": frame(0, 1, 1), "end_ms": 5}),
    ] {
        h.check(
            &srv.search(&json!({"time_range": range.clone()})).await,
            422,
            &range.to_string(),
        );
        let agg = json!({"time_range": range.clone(), "aggregations": {}});
        h.check(
            &srv.post("/v1/annotations/aggregate", &agg).await,
            422,
            "aggregate",
        );
        let co =
            json!({"media_id": "m", "conditions": [{"label": "x"}], "time_range": range.clone()});
        h.check(
            &srv.post("/v1/annotations/cooccurrence", &co).await,
            422,
            "cooccurrence",
        );
        let co = json!({"media_id": "m", "conditions": [{"time_range": range}]});
        h.check(
            &srv.post("/v1/annotations/cooccurrence", &co).await,
            422,
            "condition",
        );
    }
    for q in [
        "from_ms=10&to_ms=5",
        "to_ms=-1",
        "from_ms=-9223372036854775808",
    ] {
        h.check(
            &srv.get(&format!("/v1/media/m/annotations?{q}")).await,
            422,
            q,
        );
    }
    let co = json!({"media_id": "m", "conditions": [{"label": "x"}], "slack_ms": -1});
    h.check(
        &srv.post("/v1/annotations/cooccurrence", &co).await,
        422,
        "slack",
    );
    let agg = json!({"media_id": "m", "aggregations": {"histogram": {"interval_ms": -1000}}});
    h.check(
        &srv.post("/v1/annotations/aggregate", &agg).await,
        422,
        "interval",
    );
    // A range below zero is a range: it holds nothing, or what reaches into it.
    let ids = |r: &annostore_tests::Resp| r.expect(200)["annotations"].as_array().unwrap().len();
    h.count();
    assert_eq!(
        ids(&srv
            .search(&json!({"time_range": {"start_ms": -10, "end_ms": -5}}))
            .await),
        0
    );
    h.count();
    assert_eq!(
        ids(&srv
            .search(&json!({"time_range": {"start_ms": i64::MIN, "end_ms": 0}}))
            .await),
        1
    );
    let op2 = srv.op_ok(&op).await;
    assert_eq!(op2["annotation_count"], 1);
}
