//! The search features of issue 5 over HTTP: each capability once end to end (time
//! relations with frames, regions, fuzzy text over a schema-marked field, data filters,
//! confidence order, kNN, aggregations, co-occurrence), and every kind of bad input
//! answered with a problem+json 4xx that names the field.

use annostore_tests::{Api, Server, s};
use serde_json::{Value, json};

async fn catalogue(api: &Api) {
    let schema = json!({"type": "object", "properties": {
        "caption": {"type": "string", "x-annostore-search": "text"},
        "speed": {"type": "number"}
    }});
    api.put_type("objects", 1, &json!({"schema": schema, "embedding_dim": 3}))
        .await
        .expect(201);
    let op = s(&api.start_op("objects", 1, "clip").await, "id");
    let items = vec![
        json!({"media_id": "v", "start_ms": 0, "end_ms": 999, "label": "person", "confidence": 0.9,
               "bbox": {"x": 0.1, "y": 0.1, "w": 0.2, "h": 0.3},
               "data": {"caption": "by the curtain", "speed": 1.5}, "embedding": [1.0, 0.0, 0.0]}),
        json!({"media_id": "v", "start_ms": 400, "end_ms": 1400, "label": "motorcycle", "confidence": 0.6,
               "bbox": {"x": 0.6, "y": 0.5, "w": 0.3, "h": 0.3},
               "data": {"speed": 30}, "embedding": [0.0, 1.0, 0.0]}),
        json!({"media_id": "v", "start_ms": 5000, "end_ms": 5999, "label": "person",
               "embedding": [0.6, 0.8, 0.0]}),
    ];
    api.upsert_ok(&op, &items).await;
    api.finish(&op).await.expect(200);
}

fn starts(page: &Value) -> Vec<i64> {
    page["annotations"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["start_ms"].as_i64()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn every_capability_end_to_end() {
    let srv = Server::start();
    let api = srv.api();
    catalogue(&api).await;
    // Frames at 25 fps: frames 10..=24 are 400..999 ms; only the first lies within.
    let within = api
        .search(&json!({"time_range": {
            "start": {"frame": 0, "rate_num": 25, "rate_den": 1},
            "end": {"frame": 24, "rate_num": 25, "rate_den": 1},
            "relation": "within"}}))
        .await;
    assert_eq!(starts(within.expect(200)), vec![0]);
    let region = api
        .search(&json!({"region": {"x": 0.5, "y": 0.5, "w": 0.5, "h": 0.5}}))
        .await;
    assert_eq!(starts(region.expect(200)), vec![400]);
    let fuzzy = api.search(&json!({"text": {"query": "curtian"}})).await;
    assert_eq!(starts(fuzzy.expect(200)), vec![0]);
    let exact_label = api.search(&json!({"label": "persn"})).await;
    assert_eq!(starts(exact_label.expect(200)), Vec::<i64>::new());
    let fast = api
        .search(&json!({"data": [{"field": "speed", "gte": 10}]}))
        .await;
    assert_eq!(starts(fast.expect(200)), vec![400]);
    let by_conf = api.search(&json!({"sort": "confidence"})).await;
    assert_eq!(starts(by_conf.expect(200)), vec![0, 400, 5000]);
    let knn = api
        .search(&json!({"knn": {"vector": [0.0, 1.0, 0.1], "k": 2}}))
        .await;
    let knn = knn.expect(200);
    assert_eq!(starts(knn), vec![400, 5000]);
    let scores = knn["scores"].as_array().expect("scores");
    assert!(scores[0].as_f64() > scores[1].as_f64(), "{scores:?}");
    let agg = api
        .post(
            "/v1/annotations/aggregate",
            &json!({"media_id": "v", "aggregations": {"labels": 5, "types": true,
                    "histogram": {"interval_ms": 1000, "by_label": true}}}),
        )
        .await;
    let agg = agg.expect(200);
    assert_eq!(agg["total"], 3);
    assert_eq!(agg["labels"][0], json!({"label": "person", "count": 2}));
    assert_eq!(
        agg["types"],
        json!([{"annotation_type": "objects", "annotation_type_version": 1, "count": 3}])
    );
    assert_eq!(agg["histogram"][0]["start_ms"], 0);
    assert_eq!(agg["histogram"][0]["count"], 2);
    assert_eq!(
        agg["histogram"][1],
        json!({"start_ms": 1000, "count": 1, "labels": {"motorcycle": 1}})
    );
    let co = api
        .post(
            "/v1/annotations/cooccurrence",
            &json!({"media_id": "v", "conditions": [{"label": "person"}, {"label": "motorcycle"}]}),
        )
        .await;
    assert_eq!(
        co.expect(200)["intervals"],
        json!([{"start_ms": 400, "end_ms": 999}])
    );
    // The CLI's common cases.
    let out = srv.cli(&["search", "--text", "curtian", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("\"person\""), "{stdout}");
    let out = srv.cli(&[
        "cooccur",
        "--media",
        "v",
        "--with",
        "person",
        "--with",
        "motorcycle",
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"end_ms\":999"),
        "{out:?}"
    );
}

#[tokio::test]
async fn bad_searches_name_their_field() {
    let srv = Server::start();
    let api = srv.api();
    catalogue(&api).await;
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "/v1/annotations/search",
            json!({"region": {"x": 2, "y": 0, "w": 0.1, "h": 0.1}}),
            422,
            "region",
        ),
        (
            "/v1/annotations/search",
            json!({"data": [{"field": "nope", "eq": 1}]}),
            422,
            "data[0]",
        ),
        (
            "/v1/annotations/search",
            json!({"data": [{"field": "speed", "eq": "fast"}]}),
            422,
            "data[0]",
        ),
        (
            "/v1/annotations/search",
            json!({"data": [{"field": "caption", "gt": 3}]}),
            422,
            "data[0]",
        ),
        (
            "/v1/annotations/search",
            json!({"text": {"query": "!!"}}),
            422,
            "text",
        ),
        (
            "/v1/annotations/search",
            json!({"text": {"query": "x", "fields": ["data.speed"]}}),
            422,
            "text",
        ),
        (
            "/v1/annotations/search",
            json!({"labels": []}),
            422,
            "labels",
        ),
        (
            "/v1/annotations/search",
            json!({"max_confidence": 1.5}),
            422,
            "max_confidence",
        ),
        (
            "/v1/annotations/search",
            json!({"sort": "score"}),
            422,
            "sort",
        ),
        (
            "/v1/annotations/search",
            json!({"knn": {"vector": [1.0], "text": "a", "k": 1}}),
            422,
            "knn",
        ),
        (
            "/v1/annotations/search",
            json!({"knn": {"vector": [0.0, 0.0, 0.0]}}),
            422,
            "knn.vector",
        ),
        (
            "/v1/annotations/search",
            json!({"knn": {"vector": [1.0], "k": 100000}}),
            422,
            "knn.k",
        ),
        (
            "/v1/annotations/search",
            json!({"knn": {"text": "a red car"}}),
            422,
            "knn.text",
        ),
        (
            "/v1/annotations/search",
            json!({"time_range": {"start_ms": 5, "end_ms": 1}}),
            422,
            "time_range",
        ),
        (
            "/v1/annotations/search",
            json!({"time_range": {"start": {"frame": 1, "rate_num": 0, "rate_den": 1}, "end_ms": 9}}),
            422,
            "",
        ),
        (
            "/v1/annotations/search",
            json!({"sort": "sideways"}),
            422,
            "",
        ),
        (
            "/v1/annotations/aggregate",
            json!({"aggregations": {"histogram": {"interval_ms": 10}}}),
            422,
            "aggregations.histogram",
        ),
        (
            "/v1/annotations/aggregate",
            json!({"media_id": "v", "aggregations": {"histogram": {"interval_ms": 0}}}),
            422,
            "aggregations.histogram.interval_ms",
        ),
        (
            "/v1/annotations/aggregate",
            json!({"aggregations": {"labels": 0}}),
            422,
            "aggregations.labels",
        ),
        (
            "/v1/annotations/cooccurrence",
            json!({"media_id": "v", "conditions": []}),
            422,
            "conditions",
        ),
        (
            "/v1/annotations/cooccurrence",
            json!({"media_id": "v", "conditions": [{"media_id": "w"}]}),
            422,
            "conditions[0]",
        ),
        (
            "/v1/annotations/cooccurrence",
            json!({"media_id": "v", "conditions": [{"label": "a"}], "slack_ms": -1}),
            422,
            "slack_ms",
        ),
        (
            "/v1/annotations/cooccurrence",
            json!({"media_id": "v", "conditions": [{"region": {"x": 9, "y": 0, "w": 0, "h": 0}}]}),
            422,
            "conditions[0].region",
        ),
    ];
    for (path, body, status, field) in cases {
        let r = api.post(path, &body).await;
        let p = r.problem(status);
        if !field.is_empty() {
            let fields: Vec<&str> = p["errors"]
                .as_array()
                .map(|e| e.iter().filter_map(|x| x["field"].as_str()).collect())
                .unwrap_or_default();
            assert!(
                fields.contains(&field),
                "{path} {body}: fields {fields:?} in {p}"
            );
        }
    }
    // A token is bound to its request: another order is a 400.
    let page = api.search(&json!({"limit": 1})).await;
    let token = s(page.expect(200), "next_page_token");
    let r = api
        .search(&json!({"limit": 1, "sort": "confidence", "page_token": token}))
        .await;
    r.problem(400);
}
