//! The operation state machine as the API shows it: numbering, finish order, idempotent
//! finish, cancel, lease expiry (background sweep and lazy), lease renewal, idempotent
//! batch retries, id ownership, last-version-wins and previews.

use annostore_tests::{Api, Server, Uuid, anns, anns_with_ids, eventually, s};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

fn ts(v: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(v.as_str().expect("a timestamp string"), &Rfc3339).expect("RFC 3339")
}

/// Operation ids of what a search with `filter` returns (all pages).
async fn visible_ops(api: &Api, filter: Value) -> (usize, HashSet<String>) {
    let all = api.search_all(&filter, 1000).await;
    (
        all.len(),
        all.iter().map(|a| s(a, "operation_id")).collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_have_every_field_and_numbers_per_key() {
    let srv = Server::start();
    srv.register("objects", 1).await;
    srv.register("objects", 2).await;
    let one = srv
        .start_op_with(
            "objects",
            1,
            "movie-1",
            json!({"lease_seconds": 120, "metadata": {"model": "detr", "git": "abc"}}),
        )
        .await;
    for field in [
        "id",
        "annotation_type",
        "annotation_type_version",
        "pivot_id",
        "operation_number",
        "status",
        "active",
        "annotation_count",
        "created_at",
        "updated_at",
        "finished_at",
        "lease_seconds",
        "lease_expires_at",
        "superseded_by",
        "metadata",
    ] {
        assert!(
            one.as_object().unwrap().contains_key(field),
            "operation lacks {field}: {one}"
        );
    }
    Uuid::parse_str(&s(&one, "id")).expect("id is a UUID");
    assert_eq!(one["annotation_type"], "objects");
    assert_eq!(one["annotation_type_version"], 1);
    assert_eq!(one["pivot_id"], "movie-1");
    assert_eq!(one["operation_number"], 1);
    assert_eq!(one["status"], "STARTED");
    assert_eq!(one["active"], false);
    assert_eq!(one["annotation_count"], 0);
    assert_eq!(one["finished_at"], Value::Null);
    assert_eq!(one["superseded_by"], Value::Null);
    assert_eq!(one["lease_seconds"], 120);
    assert_eq!(one["metadata"], json!({"model": "detr", "git": "abc"}));
    let lease = ts(&one["lease_expires_at"]) - ts(&one["created_at"]);
    assert_eq!(lease.whole_seconds(), 120);
    ts(&one["updated_at"]);

    // GET shows the same operation.
    assert_eq!(srv.op_ok(&s(&one, "id")).await, one);

    // The default lease is used when none is named.
    let dflt = srv.start_op("objects", 1, "lease-default").await;
    assert!(dflt["lease_seconds"].as_u64().unwrap() >= 1);

    // Numbers grow per key, whatever happened to the earlier runs.
    let two = srv.start_op("objects", 1, "movie-1").await;
    assert_eq!(two["operation_number"], 2);
    srv.cancel(&s(&two, "id")).await.expect(200);
    let three = srv.start_op("objects", 1, "movie-1").await;
    assert_eq!(three["operation_number"], 3);
    srv.finish(&s(&three, "id")).await.expect(200);
    let four = srv.start_op("objects", 1, "movie-1").await;
    assert_eq!(four["operation_number"], 4);
    // Other keys are independent: another pivot, another version, another type.
    assert_eq!(
        srv.start_op("objects", 1, "movie-2").await["operation_number"],
        1
    );
    assert_eq!(
        srv.start_op("objects", 2, "movie-1").await["operation_number"],
        1
    );
    srv.register("faces", 1).await;
    assert_eq!(
        srv.start_op("faces", 1, "movie-1").await["operation_number"],
        1
    );
    assert_eq!(
        srv.start_op("objects", 1, "movie-1").await["operation_number"],
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_finished_run_is_active_whatever_the_finish_order() {
    let srv = Server::start();
    srv.register("objects", 1).await;

    // In order: 1 finishes, then 2 replaces it.
    let a1 = s(&srv.start_op("objects", 1, "inorder").await, "id");
    srv.upsert_ok(&a1, &anns("m-in", 10, "cat", "a1")).await;
    let f1 = srv.finish(&a1).await.expect(200).clone();
    assert_eq!(f1["status"], "FINISHED");
    assert_eq!(f1["active"], true);
    assert_eq!(f1["superseded_by"], Value::Null);
    assert_eq!(f1["lease_expires_at"], Value::Null);
    assert!(ts(&f1["finished_at"]) >= ts(&f1["created_at"]));
    let a2 = s(&srv.start_op("objects", 1, "inorder").await, "id");
    srv.upsert_ok(&a2, &anns("m-in", 7, "cat", "a2")).await;
    let f2 = srv.finish(&a2).await.expect(200).clone();
    assert_eq!(f2["active"], true);
    let old = srv.op_ok(&a1).await;
    assert_eq!(old["status"], "FINISHED");
    assert_eq!(old["active"], false);
    assert_eq!(old["superseded_by"], json!(a2));
    let (n, ops) = visible_ops(&srv, json!({"pivot_id": "inorder"})).await;
    assert_eq!((n, ops), (7, HashSet::from([a2.clone()])));

    // Out of order: 2 finishes first, then 1; 1 stays inactive, superseded by 2.
    let b1 = s(&srv.start_op("objects", 1, "outoforder").await, "id");
    let b2 = s(&srv.start_op("objects", 1, "outoforder").await, "id");
    srv.upsert_ok(&b1, &anns("m-out", 5, "cat", "b1")).await;
    srv.upsert_ok(&b2, &anns("m-out", 6, "cat", "b2")).await;
    let g2 = srv.finish(&b2).await.expect(200).clone();
    assert_eq!(g2["active"], true);
    let g1 = srv.finish(&b1).await.expect(200).clone();
    assert_eq!(g1["status"], "FINISHED");
    assert_eq!(g1["active"], false);
    assert_eq!(g1["superseded_by"], json!(b2));
    let still = srv.op_ok(&b2).await;
    assert_eq!(still["active"], true);
    assert_eq!(still["superseded_by"], Value::Null);
    let (n, ops) = visible_ops(&srv, json!({"pivot_id": "outoforder"})).await;
    assert_eq!((n, ops), (6, HashSet::from([b2.clone()])));
    // The superseded run's annotations are not reachable by id either.
    let b1_ann = srv.search_all(&json!({"operation_id": b1}), 1000).await;
    assert!(
        b1_ann.is_empty(),
        "a superseded run can be searched: {b1_ann:?}"
    );

    // Finishing again answers the same operation, and changes nothing.
    let again = srv.finish(&b1).await.expect(200).clone();
    assert_eq!(again, g1);
    let again = srv.finish(&b2).await.expect(200).clone();
    assert_eq!(again, srv.op_ok(&b2).await);
    assert_eq!(again["finished_at"], g2["finished_at"]);
    assert_eq!(again["active"], true);
    // A finished run accepts nothing more and cannot be cancelled.
    srv.upsert(&b2, &anns("m-out", 1, "cat", "late"))
        .await
        .problem(409);
    srv.cancel(&b2).await.problem(409);
    assert_eq!(srv.op_ok(&b2).await["annotation_count"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_runs_are_never_visible() {
    let srv = Server::start();
    srv.register("objects", 1).await;
    let done = s(&srv.start_op("objects", 1, "k").await, "id");
    srv.upsert_ok(&done, &anns("m", 4, "cat", "done")).await;
    srv.finish(&done).await.expect(200);

    let c = s(&srv.start_op("objects", 1, "k").await, "id");
    srv.upsert_ok(&c, &anns("m", 9, "dog", "cancelled")).await;
    let cancelled = srv.cancel(&c).await.expect(200).clone();
    assert_eq!(cancelled["status"], "CANCELLED");
    assert_eq!(cancelled["active"], false);
    assert_eq!(cancelled["lease_expires_at"], Value::Null);
    assert_eq!(srv.op_ok(&c).await["status"], "CANCELLED");
    // Cancelled: no upsert, no finish.
    srv.upsert(&c, &anns("m", 1, "dog", "x")).await.problem(409);
    srv.finish(&c).await.problem(409);
    assert_eq!(srv.op_ok(&c).await["status"], "CANCELLED");

    let (n, ops) = visible_ops(&srv, json!({"media_id": "m"})).await;
    assert_eq!((n, ops), (4, HashSet::from([done.clone()])));
    assert!(
        srv.search_all(&json!({"label": "dog"}), 100)
            .await
            .is_empty()
    );
    assert!(
        srv.search_all(&json!({"operation_id": c}), 100)
            .await
            .is_empty(),
        "a cancelled run can be previewed"
    );
    assert_eq!(srv.op_ok(&done).await["active"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapsed_leases_expire_by_the_background_sweep() {
    let srv = Server::start_with(&[("ANNOSTORE_EXPIRY_SWEEP_SECONDS", "1")]);
    srv.register("objects", 1).await;
    let op = srv
        .start_op_with("objects", 1, "sweep", json!({"lease_seconds": 2}))
        .await;
    let id = s(&op, "id");
    srv.upsert_ok(&id, &anns("m", 3, "cat", "exp")).await;
    assert_eq!(op["lease_seconds"], 2);
    // The stored status filter only sees what was written: only the sweep writes here,
    // since nothing reads the operation by id in the meantime.
    let api = srv.api();
    eventually(Duration::from_secs(15), "the sweep expires the run", || {
        let api = api.clone();
        async move {
            let r = api
                .get("/v1/operations?status=EXPIRED&pivot_id=sweep")
                .await;
            r.expect(200)["operations"].as_array().unwrap().len() == 1
        }
    })
    .await;
    let expired = srv.op_ok(&id).await;
    assert_eq!(expired["status"], "EXPIRED");
    assert_eq!(expired["active"], false);
    assert_eq!(expired["annotation_count"], 3);
    srv.upsert(&id, &anns("m", 1, "cat", "late"))
        .await
        .problem(409);
    srv.finish(&id).await.problem(409);
    srv.cancel(&id).await.problem(409);
    assert_eq!(srv.op_ok(&id).await["status"], "EXPIRED");
    assert!(srv.search_all(&json!({}), 100).await.is_empty());
    assert!(
        srv.search_all(&json!({"operation_id": id}), 100)
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapsed_leases_expire_lazily_on_access() {
    // The sweep is far away: only access can expire the run.
    let srv = Server::start_with(&[("ANNOSTORE_EXPIRY_SWEEP_SECONDS", "3600")]);
    srv.register("objects", 1).await;
    let a = s(
        &srv.start_op_with("objects", 1, "lazy-a", json!({"lease_seconds": 1}))
            .await,
        "id",
    );
    let b = s(
        &srv.start_op_with("objects", 1, "lazy-b", json!({"lease_seconds": 1}))
            .await,
        "id",
    );
    let c = s(
        &srv.start_op_with("objects", 1, "lazy-c", json!({"lease_seconds": 1}))
            .await,
        "id",
    );
    let api = srv.api();
    let a2 = a.clone();
    eventually(Duration::from_secs(10), "GET shows EXPIRED", || {
        let (api, a) = (api.clone(), a2.clone());
        async move { api.op_ok(&a).await["status"] == "EXPIRED" }
    })
    .await;
    // The expiry seen on access is recorded, so the stored status filter finds it.
    let r = srv.get("/v1/operations?status=EXPIRED").await;
    let listed: Vec<String> = r.expect(200)["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| s(o, "id"))
        .collect();
    assert!(listed.contains(&a), "{listed:?}");
    // b and c lapsed too: a finish and an upsert discover it (409), and say EXPIRED after.
    srv.finish(&b).await.problem(409);
    assert_eq!(srv.op_ok(&b).await["status"], "EXPIRED");
    srv.upsert(&c, &anns("m", 1, "cat", "x")).await.problem(409);
    assert_eq!(srv.op_ok(&c).await["status"], "EXPIRED");
    // Listing shows lapsed runs as EXPIRED too.
    let r = srv.get("/v1/operations?pivot_id=lazy-c").await;
    assert_eq!(r.expect(200)["operations"][0]["status"], "EXPIRED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upsert_renews_the_lease() {
    let srv = Server::start_with(&[("ANNOSTORE_EXPIRY_SWEEP_SECONDS", "1")]);
    srv.register("objects", 1).await;
    let op = srv
        .start_op_with("objects", 1, "renew", json!({"lease_seconds": 2}))
        .await;
    let id = s(&op, "id");
    let first_expiry = ts(&op["lease_expires_at"]);
    let began = Instant::now();
    let mut i = 0;
    // Upserts paced at 0.5 s keep a 2 s lease alive for 3.5 s.
    while began.elapsed() < Duration::from_millis(3500) {
        let item = json!({"media_id": "m", "start_ms": i, "end_ms": i + 1});
        srv.upsert_ok(&id, &[item]).await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let now = srv.op_ok(&id).await;
    assert_eq!(now["status"], "STARTED", "renewed lease lapsed: {now}");
    assert!(ts(&now["lease_expires_at"]) > first_expiry + time::Duration::seconds(1));
    let done = srv.finish(&id).await.expect(200).clone();
    assert_eq!(done["status"], "FINISHED");
    assert_eq!(done["annotation_count"], json!(i));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_bounds() {
    let srv = Server::start();
    srv.register("objects", 1).await;
    let body = |lease: Value| json!({"annotation_type": "objects", "annotation_type_version": 1, "pivot_id": "p", "lease_seconds": lease});
    srv.start_raw(&body(json!(0))).await.problem(422);
    srv.start_raw(&body(json!(604_801))).await.problem(422);
    srv.start_raw(&body(json!(-1))).await.problem(422);
    srv.start_raw(&body(json!(1.5))).await.problem(422);
    let max = srv.start_raw(&body(json!(604_800))).await;
    assert_eq!(max.expect(201)["lease_seconds"], 604_800);
    let min = srv.start_raw(&body(json!(1))).await;
    assert_eq!(min.expect(201)["lease_seconds"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_batches_do_not_duplicate() {
    let srv = Server::start();
    srv.register("objects", 1).await;
    let id = s(&srv.start_op("objects", 1, "retry").await, "id");
    let batch = anns("m", 50, "cat", "retry");
    srv.upsert_ok(&id, &batch).await;
    assert_eq!(srv.op_ok(&id).await["annotation_count"], 50);
    // The same batch again (a producer retrying after a timeout): same derived ids.
    srv.upsert_ok(&id, &batch).await;
    srv.upsert_ok(&id, &batch[10..20]).await;
    assert_eq!(srv.op_ok(&id).await["annotation_count"], 50);
    // A changed item is a different annotation.
    let mut changed = batch[0].clone();
    changed["label"] = json!("dog");
    srv.upsert_ok(&id, &[changed]).await;
    assert_eq!(srv.op_ok(&id).await["annotation_count"], 51);
    let done = srv.finish(&id).await.expect(200).clone();
    assert_eq!(done["annotation_count"], 51);
    let all = srv.search_all(&json!({"pivot_id": "retry"}), 1000).await;
    assert_eq!(all.len(), 51);
    let ids: HashSet<String> = all.iter().map(|a| s(a, "id")).collect();
    assert_eq!(ids.len(), 51);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_belongs_to_one_operation() {
    let srv = Server::start();
    srv.register("objects", 1).await;
    let a = s(&srv.start_op("objects", 1, "owner").await, "id");
    let b = s(&srv.start_op("objects", 1, "other").await, "id");
    let c = s(&srv.start_op("objects", 1, "owner").await, "id");
    let (items, ids) = anns_with_ids("m", 3, "cat", "a");
    srv.upsert_ok(&a, &items).await;
    // Another operation, another key: 409, and nothing of its batch is written.
    let (mut theirs, _) = anns_with_ids("m", 4, "cat", "b");
    theirs[2]["id"] = json!(ids[1]);
    srv.upsert(&b, &theirs).await.problem(409);
    assert_eq!(srv.op_ok(&b).await["annotation_count"], 0);
    // Another run of the same key: also 409.
    srv.upsert(&c, &[items[0].clone()]).await.problem(409);
    assert_eq!(srv.op_ok(&c).await["annotation_count"], 0);
    // Still 409 once the owner finished.
    srv.finish(&a).await.expect(200);
    srv.upsert(&c, &[items[2].clone()]).await.problem(409);
    srv.finish(&b).await.expect(200);
    let visible = srv.search_all(&json!({"pivot_id": "other"}), 100).await;
    assert!(visible.is_empty(), "{visible:?}");
    let a_ann = srv.get(&format!("/v1/annotations/{}", ids[1])).await;
    assert_eq!(s(a_ann.expect(200), "operation_id"), a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_version_of_an_id_wins() {
    let srv = Server::start();
    srv.register("objects", 1).await;
    let op = s(&srv.start_op("objects", 1, "lvw").await, "id");
    let x = Uuid::new_v4().to_string();
    let y = Uuid::new_v4().to_string();
    let item = |id: &str, label: &str, start: i64| json!({"id": id, "media_id": "m", "start_ms": start, "end_ms": start + 10, "label": label});
    // Twice in one batch: the later item wins.
    let r = srv
        .upsert(
            &op,
            &[
                item(&x, "first", 0),
                item(&y, "y", 5),
                item(&x, "second", 100),
            ],
        )
        .await;
    r.expect(200);
    assert_eq!(srv.op_ok(&op).await["annotation_count"], 2);
    // Across batches: the later batch wins.
    srv.upsert_ok(&op, &[item(&y, "y-again", 7)]).await;
    assert_eq!(srv.op_ok(&op).await["annotation_count"], 2);
    srv.finish(&op).await.expect(200);
    let all = srv.search_all(&json!({"pivot_id": "lvw"}), 100).await;
    assert_eq!(all.len(), 2, "{all:?}");
    let gx = srv.get(&format!("/v1/annotations/{x}")).await;
    let gx = gx.expect(200);
    assert_eq!(gx["label"], "second");
    assert_eq!(gx["start_ms"], 100);
    let gy = srv.get(&format!("/v1/annotations/{y}")).await;
    assert_eq!(gy.expect(200)["label"], "y-again");
    assert_eq!(gy.body["start_ms"], 7);
    // The old versions are not searchable under their old values.
    assert!(
        srv.search_all(&json!({"label": "first"}), 10)
            .await
            .is_empty()
    );
    assert!(
        srv.search_all(
            &json!({"pivot_id": "lvw", "time_range": {"start_ms": 0, "end_ms": 4}}),
            10
        )
        .await
        .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_can_preview_its_started_run() {
    let srv = Server::start();
    srv.register("objects", 1).await;
    let done = s(&srv.start_op("objects", 1, "prev").await, "id");
    srv.upsert_ok(&done, &anns("m", 3, "cat", "done")).await;
    srv.finish(&done).await.expect(200);
    let op = s(&srv.start_op("objects", 1, "prev").await, "id");
    srv.upsert_ok(&op, &anns("m", 25, "cat", "started")).await;
    let preview = srv.search_all(&json!({"operation_id": op}), 10).await;
    assert_eq!(preview.len(), 25);
    assert!(preview.iter().all(|a| s(a, "operation_id") == op));
    annostore_tests::assert_search_order(&preview);
    // Filters still apply within a preview.
    let some = srv
        .search_all(
            &json!({"operation_id": op, "time_range": {"start_ms": 0, "end_ms": 20}}),
            10,
        )
        .await;
    assert_eq!(some.len(), 3);
    // Without operation_id only the active run is seen; nor by id.
    let (n, ops) = visible_ops(&srv, json!({"pivot_id": "prev"})).await;
    assert_eq!((n, ops), (3, HashSet::from([done.clone()])));
    let one = s(&preview[0], "id");
    srv.get(&format!("/v1/annotations/{one}"))
        .await
        .problem(404);
    // The active run can be named too; an unknown operation id gives nothing.
    assert_eq!(
        srv.search_all(&json!({"operation_id": done}), 10)
            .await
            .len(),
        3
    );
    let r = srv
        .search(&json!({"operation_id": Uuid::new_v4().to_string()}))
        .await;
    assert_eq!(r.expect(200)["annotations"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_are_listed_newest_first_and_paged() {
    let srv = Server::start();
    srv.register("objects", 1).await;
    srv.register("faces", 1).await;
    let mut started = Vec::new();
    for i in 0..12 {
        let ty = if i % 3 == 0 { "faces" } else { "objects" };
        let pivot = format!("p{}", i % 2);
        started.push(srv.start_op(ty, 1, &pivot).await);
    }
    for op in &started[0..4] {
        srv.finish(&s(op, "id")).await.expect(200);
    }
    srv.cancel(&s(&started[4], "id")).await.expect(200);
    let newest_first: Vec<String> = started.iter().rev().map(|o| s(o, "id")).collect();

    // All of them, paged by 5.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut path = "/v1/operations?limit=5".to_owned();
        if let Some(t) = &token {
            path.push_str(&format!("&page_token={t}"));
        }
        let r = srv.get(&path).await;
        let page = r.expect(200);
        let ops = page["operations"].as_array().unwrap();
        assert!(ops.len() <= 5);
        seen.extend(ops.iter().map(|o| s(o, "id")));
        match page["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, newest_first);

    let ids = |r: &annostore_tests::Resp| -> Vec<String> {
        r.expect(200)["operations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| s(o, "id"))
            .collect()
    };
    let expect = |pred: &dyn Fn(usize, &Value) -> bool| -> Vec<String> {
        started
            .iter()
            .enumerate()
            .rev()
            .filter(|(i, o)| pred(*i, o))
            .map(|(_, o)| s(o, "id"))
            .collect()
    };
    let r = srv.get("/v1/operations?status=FINISHED").await;
    assert_eq!(ids(&r), expect(&|i, _| i < 4));
    let r = srv.get("/v1/operations?status=CANCELLED").await;
    assert_eq!(ids(&r), expect(&|i, _| i == 4));
    let r = srv.get("/v1/operations?status=STARTED").await;
    assert_eq!(ids(&r), expect(&|i, _| i > 4));
    let r = srv.get("/v1/operations?annotation_type=faces").await;
    assert_eq!(ids(&r), expect(&|_, o| o["annotation_type"] == "faces"));
    let r = srv
        .get("/v1/operations?annotation_type=objects&pivot_id=p1")
        .await;
    assert_eq!(
        ids(&r),
        expect(&|_, o| o["annotation_type"] == "objects" && o["pivot_id"] == "p1")
    );
    // started_before: strictly earlier creation times.
    let cut = s(&started[6], "created_at");
    let r = srv
        .send(
            srv.http
                .get(srv.url("/v1/operations"))
                .query(&[("started_before", cut.as_str())]),
        )
        .await;
    let cut_t = ts(&started[6]["created_at"]);
    assert_eq!(
        ids(&r),
        expect(&|_, o| ts(&o["created_at"]) < cut_t),
        "started_before={cut}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_operations_are_404() {
    let srv = Server::start();
    let random = Uuid::new_v4().to_string();
    srv.op(&random).await.problem(404);
    srv.op("not-a-uuid").await.problem(404);
    srv.finish(&random).await.problem(404);
    srv.cancel(&random).await.problem(404);
    srv.finish("not-a-uuid").await.problem(404);
    srv.upsert(&random, &anns("m", 1, "cat", "x"))
        .await
        .problem(404);
    srv.upsert("nope", &anns("m", 1, "cat", "x"))
        .await
        .problem(404);
    srv.get(&format!("/v1/annotations/{random}"))
        .await
        .problem(404);
    srv.get("/v1/annotations/not-a-uuid").await.problem(404);
}
