//! Ids and names: path ids that are not UUIDs (404 on every route that takes one, 422
//! in bodies), and media ids that read like paths, which are names and never paths.

use super::raw::Hostile;
use crate::{item, nothing_written, setup, with};
use serde_json::{Value, json};

/// Strings that are not UUIDs, as they would sit in a path (percent-encoded).
const NOT_UUIDS: [&str; 12] = [
    "not-a-uuid",
    "123",
    "0b5e0c6c-54f4-4c1e-9a0e-4f1a3c1d2e0",
    "0b5e0c6c-54f4-4c1e-9a0e-4f1a3c1d2e011",
    "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
    "0b5e0c6c_54f4_4c1e_9a0e_4f1a3c1d2e01",
    "urn:uuid:",
    "%7B%7D",
    "%20",
    "%00",
    "..",
    "-1",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_are_not_uuids() {
    let (srv, op) = setup().await;
    let h = Hostile::new(&srv, "not_uuids");
    let long = "a".repeat(10_000);
    for id in NOT_UUIDS.iter().copied().chain([long.as_str()]) {
        for (method, path) in [
            ("GET", format!("/v1/operations/{id}")),
            ("POST", format!("/v1/operations/{id}/finish")),
            ("POST", format!("/v1/operations/{id}/cancel")),
            ("GET", format!("/v1/annotations/{id}")),
        ] {
            let r = h
                .raw(format!("{method} {path} HTTP/1.1").as_bytes(), b"")
                .await;
            h.check(&r, 404, &path);
        }
        let head = format!(
            "POST /v1/operations/{id}/annotations HTTP/1.1\r\ncontent-type: application/json"
        );
        let body = json!({"annotations": [item()]}).to_string();
        h.check(
            &h.raw(head.as_bytes(), body.as_bytes()).await,
            404,
            "upsert",
        );
    }
    // Ids in bodies: 422.
    for id in [
        json!("not-a-uuid"),
        json!(""),
        json!(12),
        json!(long),
        json!({"id": 1}),
        json!([op]),
    ] {
        h.check(
            &srv.search(&json!({"operation_id": id})).await,
            422,
            "search",
        );
        h.check(
            &srv.post("/v1/admin/reindex", &json!({"operation_id": id}))
                .await,
            422,
            "reindex",
        );
        let co = json!({"media_id": "m", "conditions": [{"label": "x", "operation_id": id}]});
        h.check(
            &srv.post("/v1/annotations/cooccurrence", &co).await,
            422,
            "cooccurrence",
        );
    }
    nothing_written(&srv, &op).await;
    assert_eq!(srv.op_ok(&op).await["status"], "STARTED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_ids_are_names_never_paths() {
    // Media ids are keys in the store and the index; no code builds a file path from one
    // (ingest derives a media id *from* a file name, never the other way). So a media id
    // that reads like a path is stored and found verbatim, and the disk shows no trace.
    let (srv, op) = setup().await;
    let h = Hostile::new(&srv, "traversal");
    let sneaky = [
        "../../etc/passwd",
        "..\\..\\windows\\win.ini",
        "/etc/passwd",
        "a/../../../../tmp/annostore-escape",
        "..",
        "%2e%2e%2fetc%2fpasswd",
        "..%00.png",
        "~/.ssh/id_rsa",
    ];
    let items: Vec<Value> = sneaky.iter().map(|m| with("media_id", json!(m))).collect();
    srv.upsert_ok(&op, &items).await;
    // With a NUL or another control character it is not a name at all.
    for m in ["../\u{0}etc/passwd", "a\u{0}", "\u{1b}[2J", "..\n/etc"] {
        let p = h.check(
            &srv.upsert(&op, &[with("media_id", json!(m))]).await,
            422,
            m,
        );
        assert_eq!(p["errors"][0]["field"], "media_id", "{p}");
    }
    srv.finish(&op).await.expect(200);
    for m in sneaky {
        let enc: String = m.bytes().map(|b| format!("%{b:02X}")).collect();
        let r = h
            .raw(
                format!("GET /v1/media/{enc}/annotations HTTP/1.1").as_bytes(),
                b"",
            )
            .await;
        h.count();
        let anns = r.expect(200)["annotations"].clone();
        assert_eq!(anns.as_array().unwrap().len(), 1, "{m}: {anns}");
        assert_eq!(anns[0]["media_id"], m);
    }
    // Unencoded, the dots are path segments: no route has that shape.
    for path in [
        "/v1/media/../../etc/passwd/annotations",
        "/v1/../../etc/passwd",
    ] {
        let r = h.raw(format!("GET {path} HTTP/1.1").as_bytes(), b"").await;
        h.check(&r, 404, path);
    }
    // One segment of dots is a media id like any other: the one stored under it.
    let r = h.raw(b"GET /v1/media/../annotations HTTP/1.1", b"").await;
    h.count();
    let anns = r.expect(200)["annotations"].clone();
    assert_eq!(anns.as_array().unwrap().len(), 1, "{anns}");
    assert_eq!(anns[0]["media_id"], "..");
    // A NUL in the path is a lookup that finds nothing.
    let r = h
        .raw(
            b"GET /v1/media/..%2F%00etc%2Fpasswd/annotations HTTP/1.1",
            b"",
        )
        .await;
    h.count();
    assert_eq!(r.expect(200)["annotations"], json!([]));
    // Type names and pivot ids are names too (the type's, percent-encoded in the path).
    srv.put_type("..%2F..%2Fescape", 1, &json!({}))
        .await
        .expect(201);
    srv.start_op("../../escape", 1, "../../../tmp/annostore-escape")
        .await;
    h.count();
    // Nothing on disk is named after any of it, inside or beside the data directory.
    let data = srv.data_dir();
    let mut stack = vec![data.parent().unwrap().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            for bad in ["passwd", "win.ini", "escape", "id_rsa", ".png"] {
                assert!(!name.contains(bad), "{} on disk", e.path().display());
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    let beside = data.parent().unwrap().parent().unwrap();
    assert!(!beside.join("etc").join("passwd").exists());
    assert!(!std::path::Path::new("/tmp/annostore-escape").exists());
}
