//! One-call runs (`POST /v1/runs`, `annostore runs put`): a whole run in one request
//! becomes the key's active run; any failure after its start (a bad line, a body cut
//! short or too large, its time limit) cancels it and leaves the previous run visible;
//! the file form reads only under `[runs] file_root`; producers may call it, readers not.

use annostore_tests::{Api, Resp, Server, anns, eventually, s};
use futures::channel::mpsc;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const TYPE: &str = "objects";

/// The NDJSON of a run of `pivot` holding `items`.
fn run_text(pivot: &str, items: &[Value]) -> String {
    let start = json!({"annotation_type": TYPE, "annotation_type_version": 1, "pivot_id": pivot});
    let mut text = format!("{start}\n");
    for item in items {
        text.push_str(&item.to_string());
        text.push('\n');
    }
    text
}

async fn put_run(api: &Api, body: impl Into<reqwest::Body>) -> Resp {
    api.send(
        api.http
            .post(api.url("/v1/runs"))
            .header("content-type", "application/x-ndjson")
            .body(body),
    )
    .await
}

/// A run that must succeed: its answer.
#[track_caller]
fn done(r: &Resp, annotations: u64) -> Value {
    let body = r.expect(201).clone();
    assert_eq!(body["annotations"], json!(annotations), "{}", r.text);
    assert_eq!(body["operation"]["status"], "FINISHED", "{}", r.text);
    assert_eq!(body["operation"]["active"], true, "{}", r.text);
    body
}

/// A failed run's problem: the status, and that it names its operation, cancelled.
#[track_caller]
fn failed(r: &Resp, status: u16) -> (Value, String) {
    let p = r.problem(status).clone();
    assert_eq!(p["cancelled"], true, "{}", r.text);
    let op = s(&p, "operation_id");
    (p, op)
}

/// The `data.run` of every visible annotation of `media`, sorted and deduplicated, and
/// how many there are.
async fn visible_runs(api: &Api, media: &str) -> (Vec<String>, usize) {
    let all = api.search_all(&json!({"media_id": media}), 1000).await;
    let mut runs: Vec<String> = all.iter().map(|a| s(&a["data"], "run")).collect();
    runs.sort();
    runs.dedup();
    (runs, all.len())
}

async fn status_of(api: &Api, op: &str) -> String {
    s(&api.op_ok(op).await, "status")
}

/// Every operation of `pivot` (the server is open: no keys).
async fn ops_of(api: &Api, pivot: &str) -> Vec<Value> {
    let r = api.get(&format!("/v1/operations?pivot_id={pivot}")).await;
    r.expect(200)["operations"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_in_one_call_replaces_the_previous_and_a_failed_one_leaves_it_visible() {
    let srv = Server::start_with(&[("ANNOSTORE_LIMITS__MAX_BATCH", "500")]);
    srv.register(TYPE, 1).await;

    let a = done(
        &put_run(&srv, run_text("video-1", &anns("m1", 2_500, "cat", "a"))).await,
        2_500,
    );
    assert_eq!(a["batches"], 5);
    assert_eq!(a["operation"]["annotation_count"], 2_500);
    assert_eq!(visible_runs(&srv, "m1").await, (vec!["a".into()], 2_500));

    // A second run of the key replaces the first, whole.
    let b = done(
        &put_run(&srv, run_text("video-1", &anns("m1", 2_500, "dog", "b"))).await,
        2_500,
    );
    assert_eq!(b["operation"]["operation_number"], 2);
    assert_eq!(visible_runs(&srv, "m1").await, (vec!["b".into()], 2_500));
    let first = srv.op_ok(&s(&a["operation"], "id")).await;
    assert_eq!(first["active"], false);
    assert_eq!(first["superseded_by"], b["operation"]["id"]);

    // Line 1,234 (the 1,233rd annotation, in the third batch of 500) ends before it
    // starts: 422 naming that line, and the run is cancelled.
    let mut items = anns("m1", 2_000, "bird", "c");
    items[1_232]["end_ms"] = json!(-1);
    let r = put_run(&srv, run_text("video-1", &items)).await;
    let (p, c) = failed(&r, 422);
    assert_eq!(p["line"], 1_234, "{}", r.text);
    assert_eq!(p["errors"][0]["line"], 1_234, "{}", r.text);
    assert!(s(&p, "detail").contains("line 1234"), "{}", r.text);
    assert_eq!(status_of(&srv, &c).await, "CANCELLED");
    assert_eq!(visible_runs(&srv, "m1").await, (vec!["b".into()], 2_500));

    // A line that is not JSON is named the same way.
    let mut text = run_text("video-1", &anns("m1", 800, "bird", "d"));
    text.push_str("{\"media_id\": \"m1\", oops\n");
    let r = put_run(&srv, text).await;
    let (p, d) = failed(&r, 422);
    assert_eq!(p["line"], 802, "{}", r.text);
    assert_eq!(status_of(&srv, &d).await, "CANCELLED");
    assert_eq!(visible_runs(&srv, "m1").await, (vec!["b".into()], 2_500));

    // A bad start line starts nothing; neither does an empty body.
    let before = ops_of(&srv, "video-1").await.len();
    let bad_start = "{\"annotation_type\": \"nope\", \"annotation_type_version\": 1, \"pivot_id\": \"video-1\"}\n{}\n";
    let r = put_run(&srv, bad_start).await;
    let p = r.problem(422);
    assert_eq!(p["line"], 1, "{}", r.text);
    assert!(p.get("operation_id").is_none(), "{}", r.text);
    let p = put_run(&srv, "\n\n").await.problem(422).clone();
    assert!(p.get("operation_id").is_none(), "{p}");
    assert_eq!(ops_of(&srv, "video-1").await.len(), before);
    assert_eq!(before, 4, "a, b, c, d");

    // A run of only its start line is a run of no annotations.
    let empty = done(&put_run(&srv, run_text("video-2", &[])).await, 0);
    assert_eq!(empty["batches"], 0);
    assert_eq!(empty["operation"]["annotation_count"], 0);

    // Neither NDJSON nor JSON: 415.
    let r = srv
        .send(
            srv.http
                .post(srv.url("/v1/runs"))
                .header("content-type", "text/plain")
                .body(run_text("video-2", &[])),
        )
        .await;
    r.problem(415);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_short_cancels_the_run() {
    let srv = Server::start();
    srv.register(TYPE, 1).await;
    let a = done(
        &put_run(&srv, run_text("video-1", &anns("m1", 10, "cat", "a"))).await,
        10,
    );
    let a = s(&a["operation"], "id");

    let (tx, rx) = mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
    let req = srv
        .http
        .post(srv.url("/v1/runs"))
        .header("content-type", "application/x-ndjson")
        .body(reqwest::Body::wrap_stream(rx));
    let sent = tokio::spawn(req.send());
    let text = run_text("video-1", &anns("m1", 1_000, "dog", "b"));
    tx.unbounded_send(Ok(text.into_bytes())).unwrap();
    // The run has started (the server read its first line) ...
    let api = srv.api();
    eventually(Duration::from_secs(20), "the run started", || async {
        ops_of(&api, "video-1").await.len() == 2
    })
    .await;
    // ... when the body breaks off mid-line.
    tx.unbounded_send(Ok(b"{\"media_id\": \"m1\", \"start".to_vec()))
        .unwrap();
    tx.unbounded_send(Err(std::io::Error::other("producer crashed")))
        .unwrap();
    assert!(
        sent.await.unwrap().is_err(),
        "the request failed on its side"
    );
    let cut = ops_of(&srv, "video-1")
        .await
        .iter()
        .map(|op| s(op, "id"))
        .find(|id| *id != a)
        .expect("the cut run");
    eventually(
        Duration::from_secs(20),
        "the cut run is cancelled",
        || async { status_of(&api, &cut).await == "CANCELLED" },
    )
    .await;
    assert_eq!(visible_runs(&srv, "m1").await, (vec!["a".into()], 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_over_their_size_or_time_are_refused_and_cancelled() {
    let srv = Server::start_with(&[
        ("ANNOSTORE_RUNS__MAX_BYTES", "100000"),
        ("ANNOSTORE_RUNS__TIMEOUT_SECONDS", "2"),
        ("ANNOSTORE_LIMITS__MAX_BODY_BYTES", "20000"),
    ]);
    srv.register(TYPE, 1).await;
    done(
        &put_run(&srv, run_text("video-1", &anns("m1", 10, "cat", "a"))).await,
        10,
    );

    // About 150 kB of run against a bound of 100 kB.
    let text = run_text("video-1", &anns("m1", 1_500, "dog", "b"));
    assert!(text.len() > 120_000, "{}", text.len());
    let r = put_run(&srv, text).await;
    let (p, op) = failed(&r, 413);
    assert!(p.get("line").is_none(), "{}", r.text);
    assert_eq!(status_of(&srv, &op).await, "CANCELLED");

    // One line longer than max_body_bytes: 413 naming it.
    let mut items = anns("m1", 5, "dog", "b");
    items[3]["data"]["pad"] = json!("x".repeat(25_000));
    let r = put_run(&srv, run_text("video-1", &items)).await;
    let (p, op) = failed(&r, 413);
    assert_eq!(p["line"], 5, "{}", r.text);
    assert_eq!(status_of(&srv, &op).await, "CANCELLED");

    // A body that stops arriving: past timeout_seconds, 408 and cancelled.
    let (tx, rx) = mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
    let text = run_text("video-1", &anns("m1", 10, "dog", "b"));
    tx.unbounded_send(Ok(text.into_bytes())).unwrap();
    let r = put_run(&srv, reqwest::Body::wrap_stream(rx)).await;
    let (p, op) = failed(&r, 408);
    assert!(s(&p, "detail").contains("time limit of 2 s"), "{}", r.text);
    assert_eq!(status_of(&srv, &op).await, "CANCELLED");
    drop(tx);

    assert_eq!(visible_runs(&srv, "m1").await, (vec!["a".into()], 10));
}

/// `{"file": name}` as a run.
async fn put_file(api: &Api, name: &str) -> Resp {
    api.post("/v1/runs", &json!({ "file": name })).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_form_reads_only_under_the_file_root() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let root_str = root.path().to_str().unwrap();
    let srv = Server::start_with(&[
        ("ANNOSTORE_RUNS__FILE_ROOT", root_str),
        ("ANNOSTORE_RUNS__MAX_BYTES", "100000"),
    ]);
    srv.register(TYPE, 1).await;
    let write = |dir: &Path, name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        root.path(),
        "runs/a.ndjson",
        &run_text("video-1", &anns("m1", 700, "cat", "a")),
    );
    write(
        outside.path(),
        "b.ndjson",
        &run_text("video-1", &anns("m1", 5, "dog", "b")),
    );
    std::os::unix::fs::symlink(
        outside.path().join("b.ndjson"),
        root.path().join("escape.ndjson"),
    )
    .unwrap();
    write(
        root.path(),
        "big.ndjson",
        &run_text("video-1", &anns("m1", 1_500, "dog", "b")),
    );

    done(&put_file(&srv, "runs/a.ndjson").await, 700);
    done(&put_file(&srv, "./runs/a.ndjson").await, 700);
    let outside_name = format!(
        "../{}/b.ndjson",
        outside.path().file_name().unwrap().to_str().unwrap()
    );
    let absolute = outside.path().join("b.ndjson");
    for (name, status) in [
        (outside_name.as_str(), 400),
        (absolute.to_str().unwrap(), 400),
        ("escape.ndjson", 403),
        ("missing.ndjson", 404),
        ("runs", 400),
        ("big.ndjson", 413),
    ] {
        let r = put_file(&srv, name).await;
        let p = r.problem(status);
        assert!(p.get("operation_id").is_none(), "{name}: {}", r.text);
        // The answer names no server path beyond what the caller sent.
        assert!(!r.text.contains(root_str), "{name}: {}", r.text);
        if name != absolute.to_str().unwrap() {
            assert!(
                !r.text.contains(outside.path().to_str().unwrap()),
                "{name}: {}",
                r.text
            );
        }
    }
    // Nothing but the two good runs was started; the second is visible.
    assert_eq!(ops_of(&srv, "video-1").await.len(), 2);
    assert_eq!(visible_runs(&srv, "m1").await, (vec!["a".into()], 700));
    // Not JSON of the right shape.
    srv.post("/v1/runs", &json!({"path": "a"}))
        .await
        .problem(422);

    // A server with no file root reads no files.
    let closed = Server::start();
    let r = put_file(&closed, "runs/a.ndjson").await;
    assert!(
        s(r.problem(403), "detail").contains("[runs] file_root"),
        "{}",
        r.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_may_put_runs_and_readers_may_not() {
    let srv = Server::start();
    srv.register(TYPE, 1).await;
    let (producer_id, producer) = srv.create_key("detector", "producer");
    let (_, reader) = srv.create_key("ui", "reader");
    let (producer, reader) = (srv.with_key(&producer), srv.with_key(&reader));
    let text = run_text("video-1", &anns("m1", 20, "cat", "a"));

    put_run(&srv, text.clone()).await.problem(401);
    put_run(&reader, text.clone()).await.problem(403);
    let run = done(&put_run(&producer, text).await, 20);
    assert_eq!(run["operation"]["producer"], json!(producer_id));
    let found = reader.search_all(&json!({"media_id": "m1"}), 100).await;
    assert_eq!(found.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_puts_a_run_file() {
    let root = tempfile::tempdir().unwrap();
    let srv = Server::start_with(&[
        ("ANNOSTORE_RUNS__FILE_ROOT", root.path().to_str().unwrap()),
        ("ANNOSTORE_LIMITS__MAX_BATCH", "300"),
    ]);
    srv.register(TYPE, 1).await;
    let file = root.path().join("a.ndjson");
    std::fs::write(&file, run_text("video-1", &anns("m1", 1_000, "cat", "a"))).unwrap();

    let out = srv.cli(&["runs", "put", file.to_str().unwrap(), "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "runs put failed: {stderr}");
    let op: Value = serde_json::from_slice(&out.stdout).expect("the operation as JSON");
    assert_eq!(op["status"], "FINISHED");
    assert_eq!(op["annotation_count"], 1_000);
    assert!(
        stderr.contains("1000 annotations written in 4 batches"),
        "{stderr}"
    );
    assert_eq!(visible_runs(&srv, "m1").await, (vec!["a".into()], 1_000));

    // A bad line: non-zero exit naming it, the run cancelled, the first still visible.
    let mut items = anns("m1", 500, "dog", "b");
    items[99]["confidence"] = json!(7);
    let bad = root.path().join("bad.ndjson");
    std::fs::write(&bad, run_text("video-1", &items)).unwrap();
    let out = srv.cli(&["runs", "put", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("422"), "{stderr}");
    assert!(stderr.contains("first bad line: 101"), "{stderr}");
    assert!(stderr.contains("cancelled"), "{stderr}");
    assert_eq!(visible_runs(&srv, "m1").await, (vec!["a".into()], 1_000));

    // The server reads the file itself.
    let b = root.path().join("b.ndjson");
    std::fs::write(&b, run_text("video-1", &anns("m1", 30, "dog", "b"))).unwrap();
    let out = srv.cli(&["runs", "put", "--file-on-server", "b.ndjson"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("FINISHED"),
        "a table of the operation: {stdout}"
    );
    assert_eq!(visible_runs(&srv, "m1").await, (vec!["b".into()], 30));
}
