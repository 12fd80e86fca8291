//! The scenario of Netflix's Marken "annotation operations": a run replaces the previous
//! run of the same key atomically, and readers never see a partial run or two runs.

use annostore_tests::{Api, Server, anns, assert_search_order, s};
use serde_json::{Value, json};
use std::collections::HashSet;

const MEDIA: &str = "movie-42";

/// Everything visible for the media, through both read paths, checked for order,
/// uniqueness and origin: every annotation must belong to `want_op` (or none when None).
async fn check_visible(api: &Api, want_op: Option<&str>, want_count: usize) {
    let by_search = api
        .search_all(
            &json!({"media_id": MEDIA, "annotation_type": "objects"}),
            97,
        )
        .await;
    let by_media = api.media_all(MEDIA, "type=objects&version=1", 113).await;
    for (what, got) in [("search", &by_search), ("media listing", &by_media)] {
        assert_eq!(got.len(), want_count, "{what}: wrong number of annotations");
        assert_search_order(got);
        let ids: HashSet<String> = got.iter().map(|a| s(a, "id")).collect();
        assert_eq!(ids.len(), got.len(), "{what}: duplicates across pages");
        if let Some(op) = want_op {
            for a in got {
                assert_eq!(
                    s(a, "operation_id"),
                    op,
                    "{what}: annotation of another run"
                );
                assert_eq!(a["pivot_id"], "movie-42");
            }
        }
    }
    assert_eq!(by_search, by_media, "the two read paths disagree");
    // The default page of a search of the whole catalogue sees the same run.
    let page = api.search(&json!({})).await;
    let page = page.expect(200)["annotations"].as_array().unwrap().clone();
    assert_eq!(page.len(), want_count.min(100), "default page size is 100");
    if let Some(op) = want_op {
        assert!(page.iter().all(|a| s(a, "operation_id") == op));
    }
}

/// `n` annotations spread over the movie, in shuffled-ish order, labelled by run.
fn objects(n: usize, run: &str) -> Vec<Value> {
    let mut items = anns(MEDIA, n, "object", run);
    for (i, a) in items.iter_mut().enumerate() {
        // Several annotations share a start time, so the id breaks ties.
        let start = (i * 37 % n) / 3 * 40;
        a["start_ms"] = json!(start);
        a["end_ms"] = json!(start + 500);
        a["bbox"] = json!({"x": 0.1, "y": 0.2, "w": 0.3, "h": 0.4});
    }
    items.reverse();
    items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_run_replaces_the_old_one_whole() {
    let srv = Server::start();
    srv.register("objects", 1).await;

    // Run 1: 500 objects in five batches; nothing visible until it finishes.
    let run1 = srv.start_op("objects", 1, "movie-42").await;
    let op1 = s(&run1, "id");
    let items1 = objects(500, "run-1");
    for (i, batch) in items1.chunks(100).enumerate() {
        srv.upsert_ok(&op1, batch).await;
        assert_eq!(
            srv.op_ok(&op1).await["annotation_count"],
            json!((i + 1) * 100)
        );
        check_visible(&srv, None, 0).await;
    }
    let preview = srv.search_all(&json!({"operation_id": op1}), 1000).await;
    assert_eq!(preview.len(), 500);
    let some_id = s(&preview[17], "id");
    srv.get(&format!("/v1/annotations/{some_id}"))
        .await
        .problem(404);

    let f1 = srv.finish(&op1).await.expect(200).clone();
    assert_eq!(f1["active"], true);
    assert_eq!(f1["annotation_count"], 500);
    check_visible(&srv, Some(&op1), 500).await;
    let one = srv.get(&format!("/v1/annotations/{some_id}")).await;
    let one = one.expect(200);
    assert_eq!(s(one, "operation_id"), op1);
    assert_eq!(one["media_id"], MEDIA);
    assert_eq!(one["annotation_type"], "objects");
    assert_eq!(one["annotation_type_version"], 1);
    assert_eq!(one["data"]["run"], "run-1");
    assert_eq!(one["bbox"], json!({"x": 0.1, "y": 0.2, "w": 0.3, "h": 0.4}));

    // Run 2: 600 objects on the same key and media; run 1 alone stays visible meanwhile.
    let run2 = srv.start_op("objects", 1, "movie-42").await;
    let op2 = s(&run2, "id");
    assert_eq!(run2["operation_number"], 2);
    let items2 = objects(600, "run-2");
    for batch in items2.chunks(150) {
        srv.upsert_ok(&op2, batch).await;
        check_visible(&srv, Some(&op1), 500).await;
    }
    assert_eq!(srv.op_ok(&op2).await["annotation_count"], 600);

    let f2 = srv.finish(&op2).await.expect(200).clone();
    assert_eq!(f2["active"], true);
    assert_eq!(f2["operation_number"], 2);
    check_visible(&srv, Some(&op2), 600).await;
    let old = srv.op_ok(&op1).await;
    assert_eq!(old["active"], false);
    assert_eq!(old["superseded_by"], json!(op2));
    // Run 1's annotations are gone from every read path.
    srv.get(&format!("/v1/annotations/{some_id}"))
        .await
        .problem(404);
    let labels = srv.search_all(&json!({"label": "object"}), 1000).await;
    assert_eq!(labels.len(), 600);
    assert!(labels.iter().all(|a| a["data"]["run"] == "run-2"));
}
