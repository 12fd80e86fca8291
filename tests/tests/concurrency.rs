//! Producers replace runs on a few shared keys while readers search: every read shows,
//! per key, one whole finished run or nothing; never two runs, part of one, or a
//! STARTED, cancelled or superseded one once the newer run is in.

use annostore_tests::{Api, Server, s};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PRODUCERS: usize = 8;
const READERS: usize = 8;
const KEYS: usize = 3;
const BATCH: usize = 15;
const MEDIA: &str = "shared-media";
const RUN_FOR: Duration = Duration::from_secs(5);
const MAX_RUNS: usize = 12;

/// Runs for the producer: start, upsert 1-3 batches, finish (or now and then cancel).
async fn producer(api: Api, p: usize, finished: Arc<Mutex<Vec<String>>>) -> usize {
    let began = Instant::now();
    let mut runs = 0;
    while runs < MAX_RUNS && began.elapsed() < RUN_FOR {
        let key = format!("key-{}", (p + runs) % KEYS);
        let op = s(&api.start_op("objects", 1, &key).await, "id");
        let batches = 1 + (p * 7 + runs) % 3;
        let total = batches * BATCH;
        for b in 0..batches {
            let items: Vec<Value> = (0..BATCH)
                .map(|i| {
                    let n = b * BATCH + i;
                    json!({
                        "media_id": MEDIA,
                        "start_ms": n * 100 + p,
                        "end_ms": n * 100 + p + 50,
                        "label": "conc",
                        "data": {"op": op, "total": total, "n": n},
                    })
                })
                .collect();
            api.upsert_ok(&op, &items).await;
        }
        if runs % 5 == 4 {
            api.cancel(&op).await.expect(200);
        } else {
            let done = api.finish(&op).await.expect(200).clone();
            assert_eq!(done["annotation_count"], json!(total));
            finished.lock().unwrap().push(op);
        }
        runs += 1;
    }
    runs
}

/// Checks one read: per key, annotations of at most one operation, all of it.
fn check_read(anns: &[Value], what: &str) -> Vec<String> {
    let mut per_key: BTreeMap<String, HashMap<String, (usize, u64)>> = BTreeMap::new();
    for a in anns {
        let op = s(a, "operation_id");
        assert_eq!(
            a["data"]["op"],
            json!(op),
            "{what}: annotation data of another run"
        );
        let total = a["data"]["total"].as_u64().unwrap();
        let e = per_key
            .entry(s(a, "pivot_id"))
            .or_default()
            .entry(op)
            .or_insert((0, total));
        e.0 += 1;
    }
    let mut seen = Vec::new();
    for (key, ops) in per_key {
        assert!(
            ops.len() <= 1,
            "{what}: key {key} shows {} runs at once: {ops:?}",
            ops.len()
        );
        for (op, (n, total)) in ops {
            assert_eq!(
                n as u64, total,
                "{what}: key {key} shows {n} of the {total} annotations of run {op}"
            );
            seen.push(op);
        }
    }
    seen
}

async fn reader(api: Api, r: usize, stop: Arc<AtomicBool>, reads: Arc<AtomicUsize>) {
    let mut checked: HashSet<String> = HashSet::new();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let (what, resp) = match (r + i) % 3 {
            0 => (
                "search by media",
                api.search(&json!({"media_id": MEDIA, "limit": 1000})).await,
            ),
            1 => (
                "search by label",
                api.search(&json!({"label": "conc", "pivot_id": format!("key-{}", i % KEYS), "limit": 1000}))
                    .await,
            ),
            _ => (
                "media listing",
                api.get(&format!("/v1/media/{MEDIA}/annotations?limit=1000"))
                    .await,
            ),
        };
        let page = resp.expect(200);
        assert_eq!(
            page["next_page_token"],
            Value::Null,
            "one page holds everything"
        );
        let anns = page["annotations"].as_array().unwrap();
        for op in check_read(anns, what) {
            if checked.insert(op.clone()) {
                let o = api.op_ok(&op).await;
                assert_eq!(o["status"], "FINISHED", "{what}: a visible run is {o}");
            }
        }
        reads.fetch_add(1, Ordering::Relaxed);
        i += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_see_whole_runs_only() {
    let srv = Server::start();
    srv.register("objects", 1).await;
    let finished: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));

    let readers: Vec<_> = (0..READERS)
        .map(|r| tokio::spawn(reader(srv.api(), r, stop.clone(), reads.clone())))
        .collect();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| tokio::spawn(producer(srv.api(), p, finished.clone())))
        .collect();
    let mut runs = 0;
    for p in producers {
        runs += p.await.expect("producer");
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.expect("reader");
    }
    let reads = reads.load(Ordering::Relaxed);
    assert!(runs >= PRODUCERS, "only {runs} runs");
    assert!(reads >= READERS, "only {reads} reads");
    eprintln!("{runs} runs, {reads} reads");

    // In the end each key shows its newest finished run, whole, and only it is active.
    let all = srv.search_all(&json!({"media_id": MEDIA}), 1000).await;
    let seen = check_read(&all, "final read");
    let finished = finished.lock().unwrap().clone();
    for k in 0..KEYS {
        let key = format!("key-{k}");
        let r = srv
            .get(&format!(
                "/v1/operations?pivot_id={key}&status=FINISHED&limit=1000"
            ))
            .await;
        let ops = r.expect(200)["operations"].as_array().unwrap().clone();
        let Some(newest) = ops
            .iter()
            .max_by_key(|o| o["operation_number"].as_u64().unwrap())
        else {
            continue;
        };
        let newest_id = s(newest, "id");
        assert!(finished.contains(&newest_id));
        assert_eq!(newest["active"], true, "{newest}");
        assert!(
            seen.contains(&newest_id),
            "key {key}: newest run not visible"
        );
        for o in &ops {
            if s(o, "id") != newest_id {
                assert_eq!(o["active"], false, "{o}");
                assert!(!o["superseded_by"].is_null(), "{o}");
            }
        }
    }
}

/// Several runs of one key finished at the same moment: afterwards exactly the newest is
/// active and visible, through every read path, and the others name a superseder.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_finishes_on_one_key_leave_one_active() {
    let srv = Server::start();
    srv.register("objects", 1).await;
    for trial in 0..40 {
        let key = format!("race-{trial}");
        let mut ops = Vec::new();
        for _ in 0..4 {
            let op = s(&srv.start_op("objects", 1, &key).await, "id");
            let item = json!({"media_id": key, "start_ms": 0, "end_ms": 1, "data": {"op": op, "total": 1}});
            srv.upsert_ok(&op, &[item]).await;
            ops.push(op);
        }
        let finishes: Vec<_> = ops
            .iter()
            .map(|op| {
                let (api, op) = (srv.api(), op.clone());
                tokio::spawn(async move { api.finish(&op).await.expect(200).clone() })
            })
            .collect();
        for f in finishes {
            f.await.expect("finish task");
        }
        let newest = ops.last().unwrap();
        let mut active = Vec::new();
        for op in &ops {
            let o = srv.op_ok(op).await;
            if o["active"] == true {
                active.push(o["operation_number"].clone());
            } else {
                assert!(!o["superseded_by"].is_null(), "{o}");
            }
        }
        let visible = srv.search_all(&json!({"pivot_id": key}), 100).await;
        let visible_ops: Vec<String> = visible.iter().map(|a| s(a, "operation_id")).collect();
        assert_eq!(
            (active.clone(), visible_ops.clone()),
            (vec![json!(4)], vec![newest.clone()]),
            "trial {trial}: active operation numbers {active:?}, visible runs {visible_ops:?}"
        );
    }
}
