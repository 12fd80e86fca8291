//! The command-line client against a running server.

use annostore_tests::{Server, Uuid, binary, s};
use serde_json::{Value, json};
use std::process::Output;

/// The JSON lines a `--json` command printed; panics unless it succeeded.
#[track_caller]
fn json_lines(out: &Output) -> Vec<Value> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "CLI failed ({}): {}\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_put_and_list() {
    let srv = Server::start();
    let out = srv.cli(&[
        "types",
        "put",
        "objects",
        "1",
        "--embedding-dim",
        "16",
        "--json",
    ]);
    let ty = json_lines(&out);
    assert_eq!(ty.len(), 1);
    assert_eq!(ty[0]["name"], "objects");
    assert_eq!(ty[0]["version"], 1);
    assert_eq!(ty[0]["embedding_dim"], 16);

    // With a schema file; the server then enforces it.
    let dir = tempfile::tempdir().unwrap();
    let schema_path = dir.path().join("schema.json");
    let schema = json!({"type": "object", "required": ["score"]});
    std::fs::write(&schema_path, schema.to_string()).unwrap();
    let out = srv.cli(&[
        "types",
        "put",
        "scored",
        "2",
        "--schema",
        schema_path.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(json_lines(&out)[0]["schema"], schema);
    let op = s(&srv.start_op("scored", 2, "p").await, "id");
    let r = srv
        .upsert(
            &op,
            &[json!({"media_id": "m", "start_ms": 0, "end_ms": 1, "data": {}})],
        )
        .await;
    r.problem(422);

    // Re-registering the same definition succeeds; a different one fails.
    let same = srv.cli(&[
        "types",
        "put",
        "objects",
        "1",
        "--embedding-dim",
        "16",
        "--json",
    ]);
    json_lines(&same);
    let diff = srv.cli(&["types", "put", "objects", "1", "--embedding-dim", "8"]);
    assert!(!diff.status.success());
    assert!(
        String::from_utf8_lossy(&diff.stderr).contains("409"),
        "stderr: {}",
        String::from_utf8_lossy(&diff.stderr)
    );

    let list = json_lines(&srv.cli(&["types", "list", "--json"]));
    let mut names: Vec<(String, u64)> = list
        .iter()
        .map(|t| (s(t, "name"), t["version"].as_u64().unwrap()))
        .collect();
    names.sort();
    assert_eq!(names, vec![("objects".into(), 1), ("scored".into(), 2)]);

    // The table form has a header and a row per type.
    let table = srv.cli(&["types", "list"]);
    assert!(table.status.success());
    let text = String::from_utf8_lossy(&table.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].contains("NAME") && lines[0].contains("VERSION"),
        "{text}"
    );
    assert!(text.contains("scored"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_list_show_cancel() {
    let srv = Server::start();
    srv.register("objects", 1).await;
    let a = s(&srv.start_op("objects", 1, "movie-1").await, "id");
    let b = s(&srv.start_op("objects", 1, "movie-2").await, "id");
    let c = s(&srv.start_op("objects", 1, "movie-1").await, "id");
    srv.finish(&a).await.expect(200);

    let all = json_lines(&srv.cli(&["ops", "list", "--json"]));
    let ids: Vec<String> = all.iter().map(|o| s(o, "id")).collect();
    assert_eq!(ids, vec![c.clone(), b.clone(), a.clone()], "newest first");

    let started = json_lines(&srv.cli(&["ops", "list", "--status", "STARTED", "--json"]));
    let ids: Vec<String> = started.iter().map(|o| s(o, "id")).collect();
    assert_eq!(ids, vec![c.clone(), b.clone()]);
    let movie1 = json_lines(&srv.cli(&["ops", "list", "--pivot", "movie-1", "--json"]));
    let ids: Vec<String> = movie1.iter().map(|o| s(o, "id")).collect();
    assert_eq!(ids, vec![c.clone(), a.clone()]);
    let limited =
        json_lines(&srv.cli(&["ops", "list", "--limit", "1", "--type", "objects", "--json"]));
    assert_eq!(limited.len(), 1);

    let shown = json_lines(&srv.cli(&["ops", "show", &a, "--json"]));
    assert_eq!(shown, vec![srv.op_ok(&a).await]);
    assert_eq!(shown[0]["status"], "FINISHED");

    let cancelled = json_lines(&srv.cli(&["ops", "cancel", &b, "--json"]));
    assert_eq!(cancelled[0]["status"], "CANCELLED");
    assert_eq!(srv.op_ok(&b).await["status"], "CANCELLED");

    // Failures exit non-zero and say why.
    let out = srv.cli(&["ops", "cancel", &a]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("409"));
    let out = srv.cli(&["ops", "show", &Uuid::new_v4().to_string()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));

    // Table output.
    let out = srv.cli(&["ops", "show", &c]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().next().unwrap().contains("STATUS"), "{text}");
    assert!(text.contains(&c) && text.contains("STARTED"), "{text}");

    // The server can come from ANNOSTORE_SERVER.
    let out = std::process::Command::new(binary())
        .args(["ops", "show", &c, "--json"])
        .env("ANNOSTORE_SERVER", &srv.base)
        .output()
        .unwrap();
    assert_eq!(json_lines(&out)[0]["id"], json!(c));

    // An unreachable server is an error, not a hang.
    let out = std::process::Command::new(binary())
        .args(["ops", "list", "--server", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_one_operation_or_all() {
    let srv = Server::start();
    srv.register("objects", 1).await;
    let done = s(&srv.start_op("objects", 1, "movie-1").await, "id");
    let items: Vec<Value> = (0..3)
        .map(|i| json!({"media_id": "m", "start_ms": i, "end_ms": i + 1}))
        .collect();
    srv.upsert_ok(&done, &items).await;
    srv.finish(&done).await.expect(200);
    let open = s(&srv.start_op("objects", 1, "movie-2").await, "id");
    srv.upsert_ok(&open, &items[..2]).await;
    let cancelled = s(&srv.start_op("objects", 1, "movie-3").await, "id");
    srv.cancel(&cancelled).await.expect(200);

    let one = json_lines(&srv.cli(&["reindex", "--operation", &done, "--json"]));
    assert_eq!(one, vec![json!({"operations": 1, "annotations": 3})]);
    // Every STARTED and FINISHED operation; not the cancelled one.
    let all = json_lines(&srv.cli(&["reindex", "--all", "--json"]));
    assert_eq!(all, vec![json!({"operations": 2, "annotations": 5})]);
    // Reindexing changes nothing a search shows.
    assert_eq!(srv.search_all(&json!({}), 2).await.len(), 3);

    let neither = srv.cli(&["reindex"]);
    assert!(
        !neither.status.success(),
        "reindex needs --operation or --all"
    );
    let unknown = srv.cli(&["reindex", "--operation", &Uuid::now_v7().to_string()]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("404"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_once_audits_and_repairs_a_lost_index() {
    let mut srv = Server::start();
    srv.register("objects", 1).await;
    let op = s(&srv.start_op("objects", 1, "movie-1").await, "id");
    let items: Vec<Value> = (0..3)
        .map(|i| json!({"media_id": "m", "start_ms": i, "end_ms": i + 1}))
        .collect();
    srv.upsert_ok(&op, &items).await;
    srv.finish(&op).await.expect(200);
    srv.kill9();

    assert_eq!(
        srv.reconcile_once()["audit"],
        json!({"checked": 1, "mismatched": 0, "repaired": 0})
    );
    // The index is lost; the store still has the run: refilled when the engines open,
    // before the audit looks.
    std::fs::remove_dir_all(srv.data_dir().join("index")).unwrap();
    assert_eq!(
        srv.reconcile_once()["audit"],
        json!({"checked": 1, "mismatched": 0, "repaired": 0})
    );
    // An index that lost the run without knowing it (another node's empty one): the
    // audit finds the run missing and reindexes it.
    let mut blank = Server::start();
    blank.kill9();
    std::fs::remove_dir_all(srv.data_dir().join("index")).unwrap();
    copy_dir(
        &blank.data_dir().join("index"),
        &srv.data_dir().join("index"),
    );
    assert_eq!(
        srv.reconcile_once()["audit"],
        json!({"checked": 1, "mismatched": 1, "repaired": 1})
    );

    srv.restart();
    assert_eq!(srv.search_all(&json!({}), 10).await.len(), 3);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn schema_apply_names_what_each_engine_needs() {
    let srv = Server::start();
    let out = srv.offline(&["schema", "apply"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for seam in ["store", "index", "queue", "events"] {
        assert!(text.contains(&format!("[{seam}] embedded")), "{text}");
    }
    let out = std::process::Command::new(binary())
        .args(["schema", "apply"])
        .env("ANNOSTORE_STORE__KIND", "mysql")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("mysql"));
}
