//! Security: API keys with roles (producers held to their own runs), the keys file
//! managed by `annostore keys`, secure-by-default listening, and HTTPS.

use annostore_tests::{Server, anns, command, s};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_roles_and_ownership() {
    let srv = Server::start();
    // No keys yet: the API is open (on loopback).
    srv.register("objects", 1).await;
    let (admin_id, admin_key) = srv.create_key("ops-team", "admin");
    let (p1_id, p1) = srv.create_key("detector-a", "producer");
    let (_, p2) = srv.create_key("detector-b", "producer");
    let (_, reader) = srv.create_key("search-ui", "reader");
    let (admin, p1, p2, reader) = (
        srv.with_key(&admin_key),
        srv.with_key(&p1),
        srv.with_key(&p2),
        srv.with_key(&reader),
    );

    // Keys now exist: without one (or with a bad one) only health and the contract answer.
    let r = srv.get("/v1/types").await;
    assert_eq!(r.problem(401)["status"], 401);
    let raw = srv
        .http
        .get(srv.url("/v1/types"))
        .send()
        .await
        .expect("request");
    assert_eq!(
        raw.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer realm=\"annostore\"")
    );
    srv.get("/healthz").await.expect(200);
    srv.get("/openapi.yaml").await.expect(200);
    let wrong_secret = format!("ask_{admin_id}_{}", "x".repeat(43));
    srv.with_key(&wrong_secret)
        .get("/v1/types")
        .await
        .problem(401);
    srv.with_key("not-a-key")
        .get("/v1/types")
        .await
        .problem(401);
    let by_header = srv
        .send(srv.http.get(srv.url("/v1/types")).header("x-api-key", {
            let out = srv.create_key("header-user", "reader");
            out.1
        }))
        .await;
    by_header.expect(200);

    // Producers start runs; each run records its producer.
    let op1 = p1.start_op("objects", 1, "video-1").await;
    assert_eq!(op1["producer"], json!(p1_id));
    let op1 = s(&op1, "id");
    let op2 = s(&p2.start_op("objects", 1, "video-2").await, "id");
    reader
        .start_raw(
            &json!({"annotation_type": "objects", "annotation_type_version": 1, "pivot_id": "x"}),
        )
        .await
        .problem(403);

    // A producer writes, finishes and cancels only its own runs.
    let items = anns("media-1", 5, "cat", "run-1");
    p2.upsert(&op1, &items).await.problem(403);
    reader.upsert(&op1, &items).await.problem(403);
    p1.upsert_ok(&op1, &items).await;
    p2.finish(&op1).await.problem(403);
    p1.cancel(&op2).await.problem(403);

    // Previews: the run's producer and admins; readers see only visible runs.
    let preview = json!({"operation_id": op1});
    let page = p1.search(&preview).await;
    assert_eq!(
        page.expect(200)["annotations"].as_array().map(Vec::len),
        Some(5)
    );
    admin.search(&preview).await.expect(200);
    p2.search(&preview).await.problem(403);
    reader.search(&preview).await.problem(403);
    p1.search(&json!({"media_id": "media-1"}))
        .await
        .problem(403);
    p1.post(
        "/v1/annotations/aggregate",
        &json!({"media_id": "media-1", "aggregations": {"types": true}}),
    )
    .await
    .problem(403);

    p1.finish(&op1).await.expect(200);
    let seen = reader
        .search_all(&json!({"media_id": "media-1"}), 100)
        .await;
    assert_eq!(seen.len(), 5);
    reader.search(&preview).await.expect(200);
    reader
        .get(&format!("/v1/operations/{op1}"))
        .await
        .expect(200);

    // Scans, admin routes and metrics are the admin's.
    reader.get("/v1/operations").await.problem(403);
    p1.get("/v1/operations").await.problem(403);
    admin.get("/v1/operations").await.expect(200);
    reader.get("/metrics").await.problem(403);
    admin.get("/metrics").await.expect(200);
    p1.post("/v1/admin/reindex", &json!({"operation_id": op1}))
        .await
        .problem(403);
    admin.cancel(&op2).await.expect(200);

    // The CLI lists keys without their secrets, and presents a key when given one.
    let out = srv.offline(&["keys", "list", "--json"]);
    assert!(out.status.success());
    let listed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listed.lines().count(), 5, "{listed}");
    assert!(
        !listed.contains("ask_") && !listed.contains("argon2"),
        "{listed}"
    );
    let out = srv.cli(&["ops", "list", "--json", "--api-key", &admin_key]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = srv.cli(&["ops", "list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));

    // Revoking takes effect on the next request.
    let out = srv.offline(&["keys", "revoke", "detector-a"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p1.get("/v1/types").await.problem(401);
    p2.get("/v1/types").await.expect(200);
}

/// `annostore serve ARGS` in a fresh directory: the listening line, or the exit and
/// its stderr when it refuses to start.
fn serve(
    root: &std::path::Path,
    args: &[&str],
    env: &[(String, String)],
) -> Result<(std::process::Child, String), String> {
    let mut child = command(root, env)
        .arg("serve")
        .args(args)
        .arg("--data-dir")
        .arg(root.join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning annostore serve");
    let stdout = child.stdout.take().expect("stdout");
    match BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("annostore listening on ").map(str::to_owned))
    {
        Some(base) => Ok((child, base)),
        None => {
            let out = child.wait_with_output().expect("wait");
            assert!(!out.status.success(), "serve exited 0 without listening");
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

#[tokio::test]
async fn beyond_loopback_needs_keys_or_insecure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let refused = serve(dir.path(), &["--listen", "0.0.0.0:0"], &[]).map(|(mut c, _)| {
        let _ = c.kill();
    });
    let err = refused.expect_err("no keys and no --insecure: serve must refuse");
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0 with no API keys"),
        "{err}"
    );

    let (mut child, base) = serve(dir.path(), &["--listen", "0.0.0.0:0", "--insecure"], &[])
        .expect("--insecure serves");
    let port = base.rsplit(':').next().expect("port").to_owned();
    let api = annostore_tests::Api::new(&format!("http://127.0.0.1:{port}"));
    api.get("/v1/types").await.expect(200);
    let _ = child.kill();
    let _ = child.wait();

    // With a key, beyond loopback serves and requires it.
    let out = command(dir.path(), &[])
        .args([
            "keys",
            "create",
            "--name",
            "a",
            "--role",
            "admin",
            "--json",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .output()
        .expect("keys create");
    assert!(out.status.success());
    let key: Value = serde_json::from_slice(&out.stdout).expect("json");
    let (mut child, base) =
        serve(dir.path(), &["--listen", "0.0.0.0:0"], &[]).expect("keys: serves");
    let port = base.rsplit(':').next().expect("port").to_owned();
    let api = annostore_tests::Api::new(&format!("http://127.0.0.1:{port}"));
    api.get("/v1/types").await.problem(401);
    api.with_key(&s(&key, "key"))
        .get("/v1/types")
        .await
        .expect(200);
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn https_with_a_configured_certificate() {
    let certs = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let cert_pem = cert.cert.pem();
    std::fs::write(certs.path().join("cert.pem"), &cert_pem).expect("write");
    std::fs::write(
        certs.path().join("key.pem"),
        cert.signing_key.serialize_pem(),
    )
    .expect("write");
    let path = |f: &str| certs.path().join(f).to_string_lossy().into_owned();
    let srv = Server::start_with(&[
        ("ANNOSTORE_TLS__CERT", &path("cert.pem")),
        ("ANNOSTORE_TLS__KEY", &path("key.pem")),
    ]);
    assert!(srv.base.starts_with("https://"), "{}", srv.base);
    let port = srv.base.rsplit(':').next().expect("port").to_owned();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("pem"))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let r = client
        .get(format!("https://localhost:{port}/v1/types"))
        .send()
        .await
        .expect("HTTPS request");
    assert_eq!(r.status(), 200);
    // Plain HTTP to the HTTPS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/v1/types"))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
}
