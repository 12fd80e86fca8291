//! Durability: a 200 on an upsert means the batch survives a kill -9, and a crash never
//! makes part of a run visible.

use annostore_tests::{Api, Server, anns_with_ids, eventually, s};
use serde_json::json;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PRODUCERS: usize = 4;
const BATCH: usize = 40;

/// Upserts batches of fresh ids until the server stops answering; records each
/// acknowledged batch's ids, and every id it ever sent.
async fn produce(
    api: Api,
    op: String,
    acked: Arc<Mutex<Vec<String>>>,
    sent: Arc<Mutex<HashSet<String>>>,
) {
    let mut n = 0;
    loop {
        let (items, ids) = anns_with_ids(&format!("media-{op}"), BATCH, "obj", &op);
        sent.lock().unwrap().extend(ids.iter().cloned());
        let req = api
            .http
            .post(api.url(&format!("/v1/operations/{op}/annotations")))
            .json(&json!({ "annotations": items }));
        match api.try_send(req).await {
            Ok(r) => {
                assert_eq!(r.status, 200, "upsert: {}", r.text);
                acked.lock().unwrap().extend(ids);
                n += 1;
            }
            Err(_) => return,
        }
        assert!(n < 100_000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_batches_survive_kill_9() {
    let mut srv = Server::start();
    srv.register("objects", 1).await;

    // A finished run from before the crash must stay visible, and alone.
    let before = s(&srv.start_op("objects", 1, "finished-before").await, "id");
    let (items, before_ids) = anns_with_ids("media-before", 30, "obj", "before");
    srv.upsert_ok(&before, &items).await;
    srv.finish(&before).await.expect(200);

    // Producers: one run each (two of them on one key, numbers 1 and 2).
    let mut ops = Vec::new();
    for p in 0..PRODUCERS {
        let pivot = format!("crash-{}", p.min(PRODUCERS - 2));
        let op = srv
            .start_op_with("objects", 1, &pivot, json!({"lease_seconds": 3600}))
            .await;
        ops.push(s(&op, "id"));
    }
    let acked: Vec<Arc<Mutex<Vec<String>>>> = (0..PRODUCERS).map(|_| Arc::default()).collect();
    let sent: Vec<Arc<Mutex<HashSet<String>>>> = (0..PRODUCERS).map(|_| Arc::default()).collect();
    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        tasks.push(tokio::spawn(produce(
            srv.api(),
            ops[p].clone(),
            acked[p].clone(),
            sent[p].clone(),
        )));
    }
    // Kill once every producer has had several batches acknowledged.
    let watch = acked.clone();
    eventually(
        Duration::from_secs(60),
        "every producer has 5 acknowledged batches",
        || {
            let watch = watch.clone();
            async move { watch.iter().all(|a| a.lock().unwrap().len() >= 5 * BATCH) }
        },
    )
    .await;
    srv.kill9();
    for t in tasks {
        t.await.expect("producer task");
    }

    srv.restart();

    // Nothing of an unfinished run is visible; the finished run is, whole.
    let visible = srv.search_all(&json!({}), 1000).await;
    let visible_ids: HashSet<String> = visible.iter().map(|a| s(a, "id")).collect();
    assert_eq!(
        visible_ids,
        before_ids.iter().cloned().collect::<HashSet<_>>()
    );
    assert!(visible.iter().all(|a| s(a, "operation_id") == before));
    assert_eq!(srv.op_ok(&before).await["active"], true);

    for p in 0..PRODUCERS {
        let op = srv.op_ok(&ops[p]).await;
        assert_eq!(op["status"], "STARTED", "{op}");
        let count = op["annotation_count"].as_u64().unwrap() as usize;
        let acked_n = acked[p].lock().unwrap().len();
        // Every acknowledged batch is there; at most the one in flight besides, whole.
        assert!(
            count >= acked_n && count <= acked_n + BATCH,
            "producer {p}: {acked_n} acknowledged, {count} stored"
        );
        assert_eq!(count % BATCH, 0, "a partial batch was stored");
        let n = srv
            .search_all(&json!({"pivot_id": s(&op, "pivot_id")}), 1000)
            .await
            .len();
        assert_eq!(n, 0, "annotations of an unfinished run are visible");
    }

    // Numbers continue after the restart.
    let next = srv.start_op("objects", 1, "finished-before").await;
    assert_eq!(next["operation_number"], 2);
    srv.cancel(&s(&next, "id")).await.expect(200);

    // The producers' runs can still be previewed whole (the index catches up), finished,
    // and then searched: every acknowledged annotation is there.
    for p in 0..PRODUCERS {
        let op = ops[p].clone();
        let want = srv.op_ok(&op).await["annotation_count"].as_u64().unwrap() as usize;
        let api = srv.api();
        let op2 = op.clone();
        eventually(
            Duration::from_secs(30),
            "the preview shows the whole run",
            || {
                let (api, op) = (api.clone(), op2.clone());
                async move {
                    api.search_all(&json!({"operation_id": op}), 1000)
                        .await
                        .len()
                        == want
                }
            },
        )
        .await;
        let done = srv.finish(&op).await.expect(200).clone();
        assert_eq!(done["annotation_count"].as_u64().unwrap() as usize, want);
        let got = srv
            .search_all(&json!({"media_id": format!("media-{op}")}), 1000)
            .await;
        assert_eq!(got.len(), want);
        let got: HashSet<String> = got.iter().map(|a| s(a, "id")).collect();
        for id in acked[p].lock().unwrap().iter() {
            assert!(got.contains(id), "acknowledged annotation {id} lost");
        }
        let sent = sent[p].lock().unwrap();
        assert!(
            got.iter().all(|id| sent.contains(id)),
            "annotations nobody sent"
        );
    }
    // On the shared key the later run is the active one.
    let shared_first = srv.op_ok(&ops[PRODUCERS - 2]).await;
    let shared_second = srv.op_ok(&ops[PRODUCERS - 1]).await;
    assert_eq!(shared_first["active"], false);
    assert_eq!(shared_second["active"], true);
    assert_eq!(shared_first["superseded_by"], json!(ops[PRODUCERS - 1]));
    let pivot = s(&shared_second, "pivot_id");
    let on_key = srv.search_all(&json!({"pivot_id": pivot}), 1000).await;
    assert!(
        on_key
            .iter()
            .all(|a| s(a, "operation_id") == ops[PRODUCERS - 1])
    );

    // And all of it survives a second, clean-slate restart.
    srv.restart();
    let after = srv.search_all(&json!({}), 1000).await;
    let mut expected = before_ids.len();
    for op in &ops[..PRODUCERS - 2] {
        expected += srv.op_ok(op).await["annotation_count"].as_u64().unwrap() as usize;
    }
    expected += srv.op_ok(&ops[PRODUCERS - 1]).await["annotation_count"]
        .as_u64()
        .unwrap() as usize;
    assert_eq!(after.len(), expected);
}
