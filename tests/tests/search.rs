//! Search semantics against a brute-force model: filters, intersecting time ranges,
//! order, page sizes, paging, the media listing and reading one annotation.

use annostore_tests::{Api, Server, assert_search_order, s};
use serde_json::{Value, json};
use std::collections::HashSet;

/// Two finished runs (objects on two media, faces on one) and one STARTED run that must
/// never show. Returns every item written to a visible run.
async fn catalogue(api: &Api) -> Vec<Value> {
    api.register("objects", 1).await;
    api.register("faces", 1).await;
    let mut visible = Vec::new();

    let objects = s(&api.start_op("objects", 1, "show-1").await, "id");
    let items: Vec<Value> = (0..150)
        .map(|i| {
            let mut a = json!({
                "media_id": format!("m{}", i % 3),
                "start_ms": (i / 3) * 100,
                "end_ms": (i / 3) * 100 + 100 + (i % 4) * 10,
                "label": if i % 2 == 0 { "cat" } else { "dog" },
                "data": {"i": i},
            });
            if i % 5 != 0 {
                a["confidence"] = json!(f64::from(i % 10) / 10.0);
            }
            a
        })
        .collect();
    api.upsert_ok(&objects, &items).await;
    api.finish(&objects).await.expect(200);
    visible.extend(items);

    let faces = s(&api.start_op("faces", 1, "show-1").await, "id");
    let items: Vec<Value> = (0..40)
        .map(|i| {
            json!({
                "media_id": "m0",
                "start_ms": i * 250,
                "end_ms": i * 250 + 50,
                "label": if i % 4 == 0 { "cat" } else { "face" },
                "confidence": 0.9,
            })
        })
        .collect();
    api.upsert_ok(&faces, &items).await;
    api.finish(&faces).await.expect(200);
    visible.extend(items);

    let hidden = s(&api.start_op("objects", 1, "show-2").await, "id");
    let items: Vec<Value> = (0..30)
        .map(|i| json!({"media_id": "m0", "start_ms": i, "end_ms": i + 1, "label": "cat", "confidence": 1.0}))
        .collect();
    api.upsert_ok(&hidden, &items).await;
    visible
}

/// The model of a search: which stored annotations match `f`.
fn model(all: &[Value], f: &Value) -> Vec<Value> {
    let mut out: Vec<Value> = all
        .iter()
        .filter(|a| {
            [
                "media_id",
                "annotation_type",
                "annotation_type_version",
                "pivot_id",
                "label",
            ]
            .iter()
            .all(|k| f[k].is_null() || f[k] == a[k])
                && (f["time_range"].is_null()
                    || (a["start_ms"].as_i64() <= f["time_range"]["end_ms"].as_i64()
                        && a["end_ms"].as_i64() >= f["time_range"]["start_ms"].as_i64()))
                && (f["min_confidence"].is_null()
                    || a["confidence"]
                        .as_f64()
                        .is_some_and(|c| c >= f["min_confidence"].as_f64().unwrap() - 1e-6))
        })
        .cloned()
        .collect();
    out.sort_by_key(|a| (s(a, "media_id"), a["start_ms"].as_i64(), s(a, "id")));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_match_the_model() {
    let srv = Server::start();
    let written = catalogue(&srv).await;

    // Everything visible, paged by 7: every annotation exactly once, in order.
    let all = srv.search_all(&json!({}), 7).await;
    assert_eq!(all.len(), written.len());
    assert_search_order(&all);
    let ids: HashSet<String> = all.iter().map(|a| s(a, "id")).collect();
    assert_eq!(ids.len(), all.len());
    assert!(all.iter().all(|a| a["pivot_id"] == "show-1"));
    // Unpaged (one page of 1000) gives the same sequence.
    let one_page = srv.search(&json!({"limit": 1000})).await;
    let one_page = one_page.expect(200).clone();
    assert_eq!(one_page["annotations"].as_array().unwrap(), &all);
    assert_eq!(one_page["next_page_token"], Value::Null);

    let filters = [
        json!({"media_id": "m1"}),
        json!({"media_id": "m0", "annotation_type": "faces"}),
        json!({"annotation_type": "objects", "annotation_type_version": 1}),
        json!({"annotation_type": "objects", "annotation_type_version": 2}),
        json!({"pivot_id": "show-1", "label": "dog"}),
        json!({"pivot_id": "show-2"}),
        // A label across the whole catalogue: both types.
        json!({"label": "cat"}),
        json!({"label": "nothing"}),
        json!({"min_confidence": 0.7}),
        json!({"min_confidence": 0.0}),
        json!({"media_id": "m0", "min_confidence": 0.5, "label": "cat"}),
        // Time ranges match when they intersect; touching ends match.
        json!({"time_range": {"start_ms": 1000, "end_ms": 1000}}),
        json!({"time_range": {"start_ms": 0, "end_ms": 99}}),
        json!({"time_range": {"start_ms": 4950, "end_ms": 100000}}),
        json!({"media_id": "m2", "time_range": {"start_ms": 1205, "end_ms": 1299}}),
        json!({"media_id": "m0", "annotation_type": "faces", "time_range": {"start_ms": 51, "end_ms": 249}}),
        json!({"media_id": "m0", "annotation_type": "faces", "time_range": {"start_ms": 50, "end_ms": 250}}),
    ];
    for f in filters {
        let want = model(&all, &f);
        for limit in [5, 1000] {
            let got = srv.search_all(&f, limit).await;
            assert_eq!(
                got.iter().map(|a| s(a, "id")).collect::<Vec<_>>(),
                want.iter().map(|a| s(a, "id")).collect::<Vec<_>>(),
                "search {f} (limit {limit})"
            );
        }
    }
    // Spot checks on the model's own expectations, so the model cannot drift silently.
    let touching = model(
        &all,
        &json!({"media_id": "m0", "annotation_type": "faces", "time_range": {"start_ms": 50, "end_ms": 250}}),
    );
    assert_eq!(touching.len(), 2, "[0,50] and [250,300] touch [50,250]");
    let inside = model(
        &all,
        &json!({"media_id": "m0", "annotation_type": "faces", "time_range": {"start_ms": 51, "end_ms": 249}}),
    );
    assert!(inside.is_empty());
    let cats = model(&all, &json!({"label": "cat"}));
    let types: HashSet<&str> = cats
        .iter()
        .map(|a| a["annotation_type"].as_str().unwrap())
        .collect();
    assert_eq!(types.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_sizes_and_tokens() {
    let srv = Server::start();
    let written = catalogue(&srv).await;
    assert!(written.len() > 100);

    // Default 100.
    let r = srv.search(&json!({})).await;
    let page = r.expect(200);
    assert_eq!(page["annotations"].as_array().unwrap().len(), 100);
    let token = s(page, "next_page_token");
    let rest = srv
        .search(&json!({"page_token": token, "limit": 1000}))
        .await;
    assert_eq!(
        rest.expect(200)["annotations"].as_array().unwrap().len(),
        written.len() - 100
    );
    assert_eq!(rest.body["next_page_token"], Value::Null);
    // Max 1000; above (or 0) is a 422.
    srv.search(&json!({"limit": 1000})).await.expect(200);
    srv.search(&json!({"limit": 1001})).await.problem(422);
    srv.search(&json!({"limit": 0})).await.problem(422);

    // A token only works for the search that made it.
    let r = srv.search(&json!({"media_id": "m0", "limit": 3})).await;
    let token = s(r.expect(200), "next_page_token");
    srv.search(&json!({"media_id": "m0", "limit": 3, "page_token": token}))
        .await
        .expect(200);
    // The page size may change between pages; the filters may not.
    srv.search(&json!({"media_id": "m0", "limit": 50, "page_token": token}))
        .await
        .expect(200);
    srv.search(&json!({"media_id": "m1", "page_token": token}))
        .await
        .problem(400);
    srv.search(&json!({"page_token": token})).await.problem(400);
    srv.search(&json!({"media_id": "m0", "label": "cat", "page_token": token}))
        .await
        .problem(400);
    // Tampered tokens.
    let mut chars: Vec<char> = token.chars().collect();
    let mid = chars.len() / 2;
    chars[mid] = if chars[mid] == 'A' { 'B' } else { 'A' };
    let flipped: String = chars.into_iter().collect();
    for bad in [
        flipped,
        token[..token.len() - 3].to_owned(),
        format!("{token}xyz"),
        "!!!not base64!!!".to_owned(),
        String::new(),
        "A".repeat(5000),
        "eyJ2IjoxfQ".to_owned(), // {"v":1}
    ] {
        let r = srv
            .search(&json!({"media_id": "m0", "page_token": bad}))
            .await;
        r.problem(400);
    }
    // An operations-listing token is foreign to search, and the other way round.
    srv.start_op("objects", 1, "x").await;
    srv.start_op("objects", 1, "x").await;
    let r = srv.get("/v1/operations?limit=1").await;
    let op_token = s(r.expect(200), "next_page_token");
    srv.search(&json!({"media_id": "m0", "page_token": op_token}))
        .await
        .problem(400);
    srv.get(&format!("/v1/operations?page_token={token}"))
        .await
        .problem(400);
    srv.get("/v1/operations?page_token=%21%21")
        .await
        .problem(400);
    let r = srv.search(&json!({"media_id": "m1", "limit": 3})).await;
    let token_m1 = s(r.expect(200), "next_page_token");
    srv.get(&format!("/v1/media/m0/annotations?page_token={token_m1}"))
        .await
        .problem(400);
    // The same filters through the other read path accept it.
    srv.get(&format!("/v1/media/m1/annotations?page_token={token_m1}"))
        .await
        .expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_media_listing_is_a_search() {
    let srv = Server::start();
    catalogue(&srv).await;
    let all = srv.search_all(&json!({}), 1000).await;
    let cases = [
        ("", json!({"media_id": "m0"})),
        (
            "type=faces",
            json!({"media_id": "m0", "annotation_type": "faces"}),
        ),
        (
            "type=objects&version=1",
            json!({"media_id": "m0", "annotation_type": "objects", "annotation_type_version": 1}),
        ),
        ("label=cat", json!({"media_id": "m0", "label": "cat"})),
        (
            "from_ms=1000&to_ms=1000",
            json!({"media_id": "m0", "time_range": {"start_ms": 1000, "end_ms": 1000}}),
        ),
        (
            "from_ms=4000",
            json!({"media_id": "m0", "time_range": {"start_ms": 4000, "end_ms": i64::MAX}}),
        ),
        (
            "to_ms=120",
            json!({"media_id": "m0", "time_range": {"start_ms": 0, "end_ms": 120}}),
        ),
    ];
    for (query, f) in cases {
        let want: Vec<String> = model(&all, &f).iter().map(|a| s(a, "id")).collect();
        for limit in [6, 1000] {
            let got: Vec<String> = srv
                .media_all("m0", query, limit)
                .await
                .iter()
                .map(|a| s(a, "id"))
                .collect();
            assert_eq!(got, want, "media listing ?{query} (limit {limit})");
        }
    }
    // No limit: pages of 100 (m0 holds fewer, so one page).
    let r = srv.get("/v1/media/m0/annotations").await;
    let m0 = model(&all, &json!({"media_id": "m0"})).len();
    assert!(m0 < 100);
    assert_eq!(r.expect(200)["annotations"].as_array().unwrap().len(), m0);
    assert_eq!(r.body["next_page_token"], Value::Null);
    srv.get("/v1/media/m0/annotations?limit=1001")
        .await
        .problem(422);
    srv.get("/v1/media/nothing-here/annotations")
        .await
        .expect(200);
    // One annotation by id, as search returned it.
    let a = &all[42];
    let got = srv.get(&format!("/v1/annotations/{}", s(a, "id"))).await;
    assert_eq!(got.expect(200), a);
}

/// `omit_embeddings` (what the viewer asks for) leaves the vectors out and nothing else:
/// the same annotations, in the same order, equal but for `embedding`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn omit_embeddings_leaves_out_only_the_vectors() {
    let srv = Server::start();
    srv.put_type("clips", 1, &json!({"embedding_dim": 3}))
        .await
        .expect(201);
    let op = s(&srv.start_op("clips", 1, "omit").await, "id");
    let items: Vec<Value> = (0..5)
        .map(|i| json!({"media_id": "v", "start_ms": i * 10, "end_ms": i * 10 + 5, "label": "x", "embedding": [1.0, f64::from(i), 0.5]}))
        .collect();
    srv.upsert_ok(&op, &items).await;
    srv.finish(&op).await.expect(200);
    let full = srv
        .post("/v1/annotations/search", &json!({"media_id": "v"}))
        .await
        .expect(200)["annotations"]
        .as_array()
        .cloned()
        .unwrap();
    assert_eq!(full.len(), 5);
    assert!(full.iter().all(|a| a["embedding"].is_array()));
    let bare = srv
        .post(
            "/v1/annotations/search",
            &json!({"media_id": "v", "omit_embeddings": true}),
        )
        .await
        .expect(200)["annotations"]
        .as_array()
        .cloned()
        .unwrap();
    let stripped: Vec<Value> = full
        .into_iter()
        .map(|mut a| {
            a.as_object_mut().unwrap().remove("embedding");
            a
        })
        .collect();
    assert_eq!(bare, stripped);
}
