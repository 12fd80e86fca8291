//! Operating a server (issue 7), as black-box scenarios over HTTP and the CLI, shared
//! by `operating.rs` (embedded engines) and `distributed_operating.rs` (Cassandra on
//! kassandra, SQS on moto). Each takes a server started with [`GC_ENV`] (retention
//! 0, no background passes) and works on its own keys.

use annostore_tests::{Api, Server, anns_with_ids, s};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Configuration every scenario expects: runs are collectable at once, and only the
/// passes a scenario asks for run.
pub const GC_ENV: &[(&str, &str)] = &[
    ("ANNOSTORE_GC__ENABLED", "false"),
    ("ANNOSTORE_GC__SUPERSEDED_RETENTION_HOURS", "0"),
    ("ANNOSTORE_GC__ENDED_RETENTION_HOURS", "0"),
];

const TYPE: &str = "objects";

/// A run of `n` annotations on `pivot`, left STARTED. Returns it and the ids.
async fn run(api: &Api, pivot: &str, n: usize, label: &str, extra: Value) -> (Value, Vec<String>) {
    let op = api.start_op_with(TYPE, 1, pivot, extra).await;
    let (items, ids) = anns_with_ids(&format!("media-{pivot}"), n, label, label);
    if n > 0 {
        api.upsert_ok(&s(&op, "id"), &items).await;
    }
    (op, ids)
}

async fn finished(api: &Api, pivot: &str, n: usize, label: &str) -> (String, Vec<String>) {
    let (op, ids) = run(api, pivot, n, label, json!({})).await;
    let id = s(&op, "id");
    api.finish(&id).await.expect(200);
    (id, ids)
}

/// The runs a search of `pivot` shows.
async fn shown_runs(api: &Api, pivot: &str) -> Vec<String> {
    let page = api
        .search(&json!({"pivot_id": pivot, "limit": 200}))
        .await
        .expect(200)
        .clone();
    let runs: BTreeSet<String> = page["annotations"]
        .as_array()
        .expect("annotations")
        .iter()
        .map(|a| s(a, "operation_id"))
        .collect();
    runs.into_iter().collect()
}

fn ids_of(ops: &Value) -> Vec<String> {
    ops["operations"]
        .as_array()
        .expect("operations")
        .iter()
        .map(|o| s(o, "id"))
        .collect()
}

/// Scans by status, metadata, producer-less filters and order, paged; counts per
/// status; bulk expire and cancel with a dry run first; and the same through the CLI.
pub async fn scans_counts_and_bulk_ends(srv: &Server) {
    let api = srv.api();
    api.register(TYPE, 1).await;
    let (a1, _) = finished(&api, "scan-a", 2, "a1").await;
    let (a2, _) = run(
        &api,
        "scan-a",
        2,
        "a2",
        json!({"metadata": {"model": "m2"}}),
    )
    .await;
    let (b1, _) = run(
        &api,
        "scan-b",
        1,
        "b1",
        json!({"metadata": {"model": "m1"}}),
    )
    .await;
    let (b2, _) = run(&api, "scan-b", 1, "b2", json!({})).await;
    api.cancel(&s(&b2, "id")).await.expect(200);
    let (a2, b1, b2) = (s(&a2, "id"), s(&b1, "id"), s(&b2, "id"));
    let scan = |body: Value| {
        let api = api.clone();
        async move {
            api.post("/v1/admin/operations/scan", &body)
                .await
                .expect(200)
                .clone()
        }
    };

    let started = json!({"filter": {"status": "STARTED"}, "order": "oldest_first"});
    assert_eq!(ids_of(&scan(started).await), [a2.clone(), b1.clone()]);
    let newest = json!({"filter": {"status": "STARTED"}});
    assert_eq!(ids_of(&scan(newest).await), [b1.clone(), a2.clone()]);
    let by_meta = json!({"filter": {"metadata": {"model": "m2"}}});
    assert_eq!(ids_of(&scan(by_meta).await), vec![a2.clone()]);
    let active = json!({"filter": {"active": true, "pivot_id": "scan-a"}});
    assert_eq!(ids_of(&scan(active).await), vec![a1.clone()]);
    let old = json!({"filter": {"status": "STARTED"}, "older_than_seconds": 3600});
    assert!(
        ids_of(&scan(old).await).is_empty(),
        "nothing is an hour old"
    );

    // Paged, oldest first; a token of one order is refused by the other.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({"order": "oldest_first", "limit": 1});
        if let Some(t) = &token {
            body["page_token"] = json!(t);
        }
        let page = scan(body).await;
        seen.extend(ids_of(&page));
        match page["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, [a1.clone(), a2.clone(), b1.clone(), b2.clone()]);
    let first = scan(json!({"limit": 1})).await;
    let token = s(&first, "next_page_token");
    api.post(
        "/v1/admin/operations/scan",
        &json!({"order": "oldest_first", "limit": 1, "page_token": token}),
    )
    .await
    .problem(400);

    let counts = api
        .post("/v1/admin/operations/counts", &json!({}))
        .await
        .expect(200)
        .clone();
    assert_eq!(
        (
            &counts["STARTED"],
            &counts["FINISHED"],
            &counts["CANCELLED"],
            &counts["active"],
            &counts["total"]
        ),
        (&json!(2), &json!(1), &json!(1), &json!(1), &json!(4))
    );

    // A dry run lists and changes nothing.
    let dry = api
        .post(
            "/v1/admin/operations/end",
            &json!({"older_than_seconds": 0, "action": "cancel", "dry_run": true}),
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(dry["matched"], json!(2));
    assert_eq!(dry["ended"], json!(0));
    assert_eq!(s(&api.op_ok(&a2).await, "status"), "STARTED");
    // Only STARTED runs can be ended in bulk.
    api.post(
        "/v1/admin/operations/end",
        &json!({"filter": {"status": "FINISHED"}, "action": "cancel"}),
    )
    .await
    .problem(422);

    // The CLI: bulk expire of one pivot's abandoned runs, then the list as JSON lines.
    let out = srv.cli(&["ops", "expire", "--pivot", "scan-a", "--older-than", "0s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s(&api.op_ok(&a2).await, "status"), "EXPIRED");
    assert_eq!(s(&api.op_ok(&b1).await, "status"), "STARTED");
    let out = srv.cli(&["ops", "cancel", "--idle-for", "0s", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(report["ended"], json!(1), "{report}");
    assert_eq!(s(&api.op_ok(&b1).await, "status"), "CANCELLED");
    let out = srv.cli(&[
        "ops",
        "list",
        "--status",
        "CANCELLED",
        "--oldest-first",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| s(&serde_json::from_str(l).expect("JSON lines"), "id"))
        .collect();
    assert_eq!(listed, [b1.clone(), b2.clone()]);
    let out = srv.cli(&["ops", "cancel"]);
    assert!(
        !out.status.success(),
        "a bulk cancel needs filters or an id"
    );
}

/// Rolls a key back and forward twenty times while readers search it: every search
/// sees exactly one run, whole. The history records every activation.
pub async fn rollback_under_concurrent_searches(srv: &Server) {
    let api = srv.api();
    api.register(TYPE, 1).await;
    let pivot = "rollback";
    const N: usize = 40;
    let (one, _) = finished(&api, pivot, N, "one").await;
    let (two, _) = finished(&api, pivot, N, "two").await;
    let stop = Arc::new(AtomicBool::new(false));
    let searches = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (api, stop, searches) = (api.clone(), stop.clone(), searches.clone());
        let runs = [one.clone(), two.clone()];
        readers.push(tokio::spawn(async move {
            let mut seen = BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                let page = api
                    .search(&json!({"pivot_id": pivot, "limit": 200}))
                    .await
                    .expect(200)
                    .clone();
                let hits = page["annotations"].as_array().expect("annotations");
                let ops: BTreeSet<String> = hits.iter().map(|a| s(a, "operation_id")).collect();
                assert_eq!(ops.len(), 1, "one run at a time, never none: {ops:?}");
                assert_eq!(hits.len(), N, "the run whole");
                let op = ops.into_iter().next().unwrap_or_default();
                assert!(runs.contains(&op));
                seen.insert(op);
                searches.fetch_add(1, Ordering::Relaxed);
            }
            seen
        }));
    }
    let key = json!({"annotation_type": TYPE, "annotation_type_version": 1, "pivot_id": pivot});
    for i in 0..10 {
        let back = api
            .post("/v1/admin/rollback", &key)
            .await
            .expect(200)
            .clone();
        assert_eq!(s(&back["operation"], "id"), one, "round {i}");
        assert_eq!(s(&back["deactivated"], "id"), two);
        assert_eq!(
            shown_runs(&api, pivot).await,
            vec![one.clone()],
            "after rollback {i}"
        );
        let fwd = api
            .post("/v1/admin/rollforward", &key)
            .await
            .expect(200)
            .clone();
        assert_eq!(s(&fwd["operation"], "id"), two);
        assert_eq!(
            shown_runs(&api, pivot).await,
            vec![two.clone()],
            "after roll forward {i}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.expect("a reader panicked");
    }
    assert!(searches.load(Ordering::Relaxed) > 0);

    // Nothing older than run 1, nothing newer than run 2.
    api.post("/v1/admin/rollforward", &key).await.problem(409);
    api.post("/v1/admin/rollback", &key).await.expect(200);
    api.post("/v1/admin/rollback", &key).await.problem(409);
    // A STARTED run is no target.
    let (three, _) = run(&api, pivot, 1, "three", json!({})).await;
    let mut to = key.clone();
    to["to"] = json!(s(&three, "id"));
    api.post("/v1/admin/rollforward", &to).await.problem(409);
    // A run that finishes after a rollback is newer than the active one: it shows.
    api.finish(&s(&three, "id")).await.expect(200);
    let hits = api
        .search(&json!({"pivot_id": pivot, "limit": 200}))
        .await
        .expect(200)
        .clone();
    assert_eq!(hits["annotations"].as_array().map(Vec::len), Some(1));

    let history = api
        .get(&format!(
            "/v1/admin/activations?annotation_type={TYPE}&annotation_type_version=1&pivot_id={pivot}&limit=100"
        ))
        .await
        .expect(200)
        .clone();
    let entries = history["activations"].as_array().expect("activations");
    // Two finishes, 20 moves, one more rollback, the third finish.
    assert_eq!(entries.len(), 24, "{history}");
    let sequences: Vec<u64> = entries
        .iter()
        .filter_map(|e| e["sequence"].as_u64())
        .collect();
    assert_eq!(sequences, (1..=24).rev().collect::<Vec<_>>());
    assert_eq!(s(&entries[0], "reason"), "finish");
    assert_eq!(s(&entries[1], "reason"), "rollback");
    assert_eq!(s(&entries[2], "reason"), "roll_forward");
    assert_eq!(s(&entries[23], "reason"), "finish");
    let out = srv.cli(&[
        "ops",
        "history",
        "--type",
        TYPE,
        "--type-version",
        "1",
        "--pivot",
        pivot,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 24);
}

/// Garbage collection: a dry run deletes nothing; a pass with a small budget stops
/// half way and, after a kill -9, the next pass finishes; superseded and cancelled
/// runs are gone from store and index, the active and the STARTED runs untouched; a
/// collected run cannot be rolled back to.
pub async fn gc_frees_what_is_no_longer_visible(srv: &mut Server) {
    let api = srv.api();
    api.register(TYPE, 1).await;
    let pivot = "gc";
    let (one, one_ids) = finished(&api, pivot, 30, "one").await;
    let (two, two_ids) = finished(&api, pivot, 30, "two").await;
    let (cancelled, cancelled_ids) = run(&api, pivot, 30, "cancelled", json!({})).await;
    api.cancel(&s(&cancelled, "id")).await.expect(200);
    let (started, started_ids) = run(&api, pivot, 10, "started", json!({})).await;

    // A run that will reuse ids of the runs collected: refused while they own them.
    let (probe, _) = run(&api, "gc-probe", 0, "probe", json!({})).await;
    let probe = s(&probe, "id");
    let reuse = |id: &str| {
        let (mut items, _) = anns_with_ids("media-probe", 1, "probe", "probe");
        items[0]["id"] = json!(id);
        items
    };
    api.upsert(&probe, &reuse(&one_ids[0])).await.problem(409);

    let dry = api
        .post("/v1/admin/gc", &json!({"dry_run": true}))
        .await
        .expect(200)
        .clone();
    assert_eq!(dry["eligible"], json!(2), "{dry}");
    assert_eq!(dry["annotations_freed"], json!(60), "{dry}");
    api.upsert(&probe, &reuse(&one_ids[0])).await.problem(409);

    let half = api
        .post("/v1/admin/gc", &json!({"max_annotations": 20}))
        .await
        .expect(200)
        .clone();
    assert_eq!(half["annotations_freed"], json!(20), "{half}");
    assert_eq!(half["in_progress"], json!(1), "{half}");
    // A crash between passes: the next one resumes.
    srv.restart();
    let api = srv.api();
    let rest = api
        .post("/v1/admin/gc", &json!({}))
        .await
        .expect(200)
        .clone();
    assert_eq!(rest["annotations_freed"], json!(40), "{rest}");
    assert_eq!(rest["collected"], json!(2), "{rest}");
    let status = api.get("/v1/admin/gc").await.expect(200).clone();
    assert_eq!(status["last"]["collected"], json!(2), "{status}");
    let again = api
        .post("/v1/admin/gc", &json!({}))
        .await
        .expect(200)
        .clone();
    assert_eq!(again["eligible"], json!(0), "nothing left: {again}");

    // The store let go of the collected runs' ids; the others keep theirs.
    api.upsert_ok(&probe, &reuse(&one_ids[0])).await;
    api.upsert_ok(&probe, &reuse(&cancelled_ids[0])).await;
    api.upsert(&probe, &reuse(&two_ids[0])).await.problem(409);
    for id in &two_ids {
        api.get(&format!("/v1/annotations/{id}")).await.expect(200);
    }
    let preview = api
        .search(&json!({"operation_id": s(&started, "id"), "limit": 100}))
        .await
        .expect(200)
        .clone();
    let preview: BTreeSet<String> = preview["annotations"]
        .as_array()
        .expect("annotations")
        .iter()
        .map(|a| s(a, "id"))
        .collect();
    assert_eq!(preview, started_ids.iter().cloned().collect());
    let visible = api
        .search(&json!({"pivot_id": pivot, "limit": 200}))
        .await
        .expect(200)
        .clone();
    let visible: BTreeSet<String> = visible["annotations"]
        .as_array()
        .expect("annotations")
        .iter()
        .map(|a| s(a, "id"))
        .collect();
    assert_eq!(visible, two_ids.iter().cloned().collect());
    let op = api.op_ok(&one).await;
    assert!(op["collected"]["finished_at"].is_string(), "{op}");
    assert_eq!(op["collected"]["freed"], json!(30));
    assert_eq!(s(&api.op_ok(&two).await, "status"), "FINISHED");

    // The index agrees: nothing of the collected runs is left in it.
    let report = api
        .post(
            "/v1/admin/consistency",
            &json!({"filter": {"pivot_id": pivot}}),
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(report["checked"], json!(4), "{report}");
    assert_eq!(report["disagreeing"], json!(0), "{report}");
    for row in report["operations"].as_array().expect("rows") {
        let id = s(row, "operation_id");
        if id == s(&started, "id") {
            continue; // STARTED: its index may still be catching up (agrees says so).
        }
        let expected = if id == two { 30 } else { 0 };
        assert_eq!(row["index"], json!(expected), "{row}");
        assert_eq!(row["store"], json!(expected), "{row}");
    }
    let key = json!({"annotation_type": TYPE, "annotation_type_version": 1, "pivot_id": pivot, "to": one});
    api.post("/v1/admin/rollback", &key).await.problem(409);
    let out = srv.cli(&["admin", "gc", "--status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One-call runs: a whole run in one NDJSON request replaces the key's run; one with a
/// bad line is cancelled and the previous run stays; the CLI streams a file.
pub async fn one_call_runs(srv: &Server) {
    let api = srv.api();
    api.register(TYPE, 1).await;
    let pivot = "one-call";
    let text = |n: usize, label: &str, bad_at: Option<usize>| {
        let start =
            json!({"annotation_type": TYPE, "annotation_type_version": 1, "pivot_id": pivot});
        let mut text = format!("{start}\n");
        for i in 0..n {
            let line = if bad_at == Some(i) {
                json!({"media_id": "m", "start_ms": 5, "end_ms": 1}).to_string()
            } else {
                json!({"media_id": "m", "start_ms": i, "end_ms": i + 1, "label": label}).to_string()
            };
            text.push_str(&line);
            text.push('\n');
        }
        text
    };
    let put = |body: String| {
        let api = api.clone();
        async move {
            api.send(
                api.http
                    .post(api.url("/v1/runs"))
                    .header("content-type", "application/x-ndjson")
                    .body(body),
            )
            .await
        }
    };
    let first = put(text(300, "first", None)).await.expect(201).clone();
    let first = s(&first["operation"], "id");
    assert_eq!(shown_runs(&api, pivot).await, vec![first.clone()]);
    // Line 1 is the start request: the bad annotation (the 51st) is line 52.
    let bad = put(text(100, "bad", Some(50))).await;
    let problem = bad.problem(422).clone();
    assert_eq!(problem["line"], json!(52), "{problem}");
    assert_eq!(problem["cancelled"], json!(true), "{problem}");
    let cancelled = api.op_ok(&s(&problem, "operation_id")).await;
    assert_eq!(s(&cancelled, "status"), "CANCELLED");
    assert_eq!(shown_runs(&api, pivot).await, vec![first.clone()]);

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("run.ndjson");
    std::fs::write(&file, text(250, "second", None)).expect("write the run");
    let out = srv.cli(&["runs", "put", file.to_str().expect("utf-8 path"), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let op: Value = serde_json::from_slice(&out.stdout).expect("the operation as JSON");
    assert_eq!(op["annotation_count"], json!(250), "{op}");
    assert_eq!(shown_runs(&api, pivot).await, vec![s(&op, "id")]);
}

/// The `admin` commands of the CLI answer, as JSON, what the API says.
pub async fn admin_cli(srv: &Server) {
    let api = srv.api();
    api.register(TYPE, 1).await;
    finished(&api, "admin-cli", 3, "x").await;
    let json_of = |args: &[&str]| {
        let out = srv.cli(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).expect("one JSON object")
    };
    let dry = json_of(&["admin", "gc", "--dry-run", "--json"]);
    assert_eq!(dry["dry_run"], json!(true), "{dry}");
    let report = json_of(&["admin", "consistency", "--pivot", "admin-cli", "--json"]);
    assert_eq!(report["checked"], json!(1), "{report}");
    assert_eq!(report["disagreeing"], json!(0), "{report}");
    let counts = json_of(&["ops", "counts", "--pivot", "admin-cli"]);
    assert_eq!(counts["FINISHED"], json!(1), "{counts}");
    let out = srv.cli(&["admin", "dead-letters", "list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 dead letters in all"));
    let out = srv.cli(&["admin", "dead-letters", "redrive"]);
    assert!(!out.status.success(), "redrive needs ids or --all");
    let out = srv.cli(&["admin", "dead-letters", "purge", "--all", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
