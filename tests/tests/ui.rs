//! The web viewer's server side: the page at `/ui/` (headers, caching, assets, 404s),
//! `GET /ui/config.json` in both auth modes, `[ui]` settings, the media file route
//! (ranges, HEAD, traversal refused, the key from a cookie). The media listings are
//! `operating/media.rs`'s, run on both engine sets.

use annostore_tests::{Api, Server, command};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

const CSP: &str = "default-src 'self'; img-src 'self' data: blob:; media-src 'self'; \
                   style-src 'self'; script-src 'self'; connect-src 'self'; \
                   frame-ancestors 'none'";

/// A raw answer: status, headers and bytes (the harness's `Resp` reads JSON).
struct Raw {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client that follows no redirects and sends only the headers given.
fn plain() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

async fn raw(api: &Api, method: reqwest::Method, path: &str, headers: &[(&str, &str)]) -> Raw {
    let mut req = plain().request(method, api.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.expect("body").to_vec();
    assert!(
        status < 500,
        "{path}: {status} {}",
        String::from_utf8_lossy(&body)
    );
    Raw {
        status,
        headers,
        body,
    }
}

async fn get(api: &Api, path: &str, headers: &[(&str, &str)]) -> Raw {
    raw(api, reqwest::Method::GET, path, headers).await
}

#[track_caller]
fn assert_problem(r: &Raw, status: u16) {
    assert_eq!(r.status, status, "{}", r.text());
    assert!(
        r.header("content-type")
            .starts_with("application/problem+json"),
        "{}: {}",
        r.header("content-type"),
        r.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_with_its_headers() {
    let srv = Server::start();

    let r = get(&srv, "/ui", &[]).await;
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), "/ui/");
    assert_eq!(
        get(&srv, "/ui?x=1", &[]).await.header("location"),
        "/ui/?x=1"
    );

    let page = get(&srv, "/ui/", &[]).await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.header("content-type").starts_with("text/html"));
    assert_eq!(page.header("content-security-policy"), CSP);
    assert_eq!(page.header("cache-control"), "no-cache");
    assert_eq!(page.header("x-content-type-options"), "nosniff");
    let etag = page.header("etag").to_owned();
    assert!(etag.starts_with('"') && etag.len() > 2, "{etag:?}");
    // Revalidation: the same ETag is a 304 without a body.
    let again = get(&srv, "/ui/", &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(
        get(&srv, "/ui/", &[("if-none-match", "\"other\"")])
            .await
            .status,
        200
    );

    // The script index.html loads is served, with a JS type, cached for good.
    let html = page.text();
    let script = html
        .split("src=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .find(|src| src.starts_with("/ui/assets/") && src.ends_with(".js"))
        .unwrap_or_else(|| panic!("index.html loads no /ui/assets/*.js: {html}"))
        .to_owned();
    let js = get(&srv, &script, &[]).await;
    assert_eq!(js.status, 200, "{script}: {}", js.text());
    assert!(
        js.header("content-type").contains("javascript"),
        "{}",
        js.header("content-type")
    );
    assert_eq!(
        js.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(js.header("x-content-type-options"), "nosniff");
    assert!(!js.header("etag").is_empty());
    assert!(!js.body.is_empty());
    // HEAD of the same asset: the headers, no body.
    let head = raw(&srv, reqwest::Method::HEAD, &script, &[]).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("etag"), js.header("etag"));

    for missing in [
        "/ui/assets/nope.js",
        "/ui/nope.html",
        "/ui/..%2FCargo.toml",
        "/ui/%2Fetc%2Fpasswd",
    ] {
        let r = get(&srv, missing, &[]).await;
        assert_problem(&r, 404);
        assert_eq!(r.header("content-security-policy"), CSP, "{missing}");
    }

    let config = srv.get("/ui/config.json").await;
    assert_eq!(
        config.expect(200),
        &json!({
            "auth": "open",
            "media_url_template": null,
            "media_files": false,
            "poll_seconds": 5,
            "version": env!("CARGO_PKG_VERSION"),
        })
    );

    // No [ui] media_root: no media files.
    assert_problem(&get(&srv, "/v1/media/clip.mp4/file", &[]).await, 404);
    // The page's routes are not part of the API contract.
    let openapi = srv.get("/openapi.yaml").await;
    assert!(
        !openapi.text.contains("\n  /ui"),
        "openapi.yaml lists /ui routes"
    );
    assert!(openapi.text.contains("\n  /v1/media/{media_id}/file:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_section_sets_the_template_the_period_and_whether_the_page_is_served() {
    let srv = Server::start_with(&[
        (
            "ANNOSTORE_UI__MEDIA_URL_TEMPLATE",
            "https://cdn.example:8443/videos/{media_id}",
        ),
        ("ANNOSTORE_UI__POLL_SECONDS", "7"),
    ]);
    let page = get(&srv, "/ui/", &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-security-policy"),
        CSP.replace(
            "media-src 'self';",
            "media-src 'self' https://cdn.example:8443;"
        )
    );
    let config = srv.get("/ui/config.json").await;
    let c = config.expect(200);
    assert_eq!(
        c["media_url_template"],
        "https://cdn.example:8443/videos/{media_id}"
    );
    assert_eq!(c["poll_seconds"], 7);

    let off = Server::start_with(&[("ANNOSTORE_UI__ENABLED", "false")]);
    for path in ["/ui", "/ui/", "/ui/config.json", "/ui/assets/x.js"] {
        assert_problem(&get(&off, path, &[]).await, 404);
    }
    off.get("/healthz").await.expect(200);

    // A template without {media_id}, or not http(s) nor a path, stops serve at start.
    for bad in ["https://cdn.example/videos/", "javascript:{media_id}"] {
        let dir = tempfile::tempdir().unwrap();
        let env = [(
            "ANNOSTORE_UI__MEDIA_URL_TEMPLATE".to_owned(),
            bad.to_owned(),
        )];
        let out = command(dir.path(), &env)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .output()
            .expect("running serve");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}: serve started");
        assert!(stderr.contains("media_url_template"), "{bad}: {stderr}");
    }
}

/// A media root with `clip.mp4` (1000 bytes, each its index mod 251), a file in a
/// subdirectory, and a symlink to a secret outside it.
struct Media {
    root: tempfile::TempDir,
    _outside: tempfile::TempDir,
    clip: Vec<u8>,
    secret: Vec<u8>,
}

fn media() -> Media {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let clip: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let secret = b"SECRET-BYTES-OUTSIDE-THE-ROOT".to_vec();
    std::fs::write(root.path().join("clip.mp4"), &clip).unwrap();
    std::fs::create_dir(root.path().join("sub")).unwrap();
    std::fs::write(root.path().join("sub/inner.webm"), b"inner").unwrap();
    std::fs::write(outside.path().join("secret.mp4"), &secret).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.mp4"),
        root.path().join("escape.mp4"),
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("out")).unwrap();
    Media {
        root,
        _outside: outside,
        clip,
        secret,
    }
}

fn root_of(m: &Media) -> &str {
    m.root.path().to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_files_are_served_with_ranges_and_only_from_the_root() {
    let m = media();
    let srv = Server::start_with(&[("ANNOSTORE_UI__MEDIA_ROOT", root_of(&m))]);
    let config = srv.get("/ui/config.json").await;
    assert_eq!(config.expect(200)["media_files"], true);

    let path = "/v1/media/clip.mp4/file";
    let full = get(&srv, path, &[]).await;
    assert_eq!(full.status, 200);
    assert_eq!(full.body, m.clip);
    assert_eq!(full.header("content-type"), "video/mp4");
    assert_eq!(full.header("accept-ranges"), "bytes");
    assert!(!full.header("last-modified").is_empty());

    let first = get(&srv, path, &[("range", "bytes=0-99")]).await;
    assert_eq!(first.status, 206);
    assert_eq!(first.header("content-range"), "bytes 0-99/1000");
    assert_eq!(first.body, m.clip[..100]);

    let middle = get(&srv, path, &[("range", "bytes=500-509")]).await;
    assert_eq!(middle.status, 206);
    assert_eq!(middle.body, m.clip[500..510]);

    let suffix = get(&srv, path, &[("range", "bytes=-100")]).await;
    assert_eq!(suffix.status, 206);
    assert_eq!(suffix.header("content-range"), "bytes 900-999/1000");
    assert_eq!(suffix.body, m.clip[900..]);

    let beyond = get(&srv, path, &[("range", "bytes=5000-6000")]).await;
    assert_problem(&beyond, 416);
    assert_eq!(beyond.header("content-range"), "bytes */1000");
    let two = get(&srv, path, &[("range", "bytes=0-1,5-6")]).await;
    assert_problem(&two, 416);

    let head = raw(&srv, reqwest::Method::HEAD, path, &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), "1000");
    assert!(head.body.is_empty());

    let inner = get(&srv, "/v1/media/sub%2Finner.webm/file", &[]).await;
    assert_eq!(inner.status, 200);
    assert_eq!(inner.body, b"inner");
    assert_eq!(inner.header("content-type"), "video/webm");

    let outside_dir = m._outside.path().to_str().unwrap().replace('/', "%2F");
    let absolute = format!("/v1/media/{outside_dir}%2Fsecret.mp4/file");
    let long = format!("/v1/media/{}/file", "0".repeat(300));
    for (path, status) in [
        ("/v1/media/..%2Fsecret.mp4/file", 400),
        ("/v1/media/sub%2F..%2F..%2Fsecret.mp4/file", 400),
        (absolute.as_str(), 400),
        ("/v1/media/%2Fetc%2Fpasswd/file", 400),
        ("/v1/media/escape.mp4/file", 403),
        ("/v1/media/out%2Fsecret.mp4/file", 403),
        ("/v1/media/missing.mp4/file", 404),
        ("/v1/media/sub/file", 404),
        ("/v1/media/clip.mp4%2Fx/file", 404),
        (long.as_str(), 404),
    ] {
        let r = get(&srv, path, &[]).await;
        assert_problem(&r, status);
        let text = r.text();
        assert!(!text.contains("SECRET"), "{path}: {text}");
        assert!(!text.contains(root_of(&m)), "{path}: {text}");
        assert!(
            !r.body.windows(m.secret.len()).any(|w| w == m.secret),
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_media_file_takes_the_key_from_a_cookie_and_only_it() {
    let m = media();
    let srv = Server::start_with(&[("ANNOSTORE_UI__MEDIA_ROOT", root_of(&m))]);
    let (reader_id, reader) = srv.create_key("viewer", "reader");
    let (_, producer) = srv.create_key("detector", "producer");
    let path = "/v1/media/clip.mp4/file";
    let bearer = |k: &str| format!("Bearer {k}");
    let cookie = |k: &str| format!("theme=dark; annostore_key={k}");
    let wrong = format!("ask_{reader_id}_{}", "x".repeat(43));

    assert_problem(&get(&srv, path, &[]).await, 401);
    let by_header = get(&srv, path, &[("authorization", &bearer(&reader))]).await;
    assert_eq!(by_header.status, 200);
    assert_eq!(by_header.body, m.clip);
    let by_cookie = get(&srv, path, &[("cookie", &cookie(&reader))]).await;
    assert_eq!(by_cookie.status, 200);
    assert_eq!(by_cookie.body, m.clip);
    let ranged = get(
        &srv,
        path,
        &[("cookie", &cookie(&reader)), ("range", "bytes=10-19")],
    )
    .await;
    assert_eq!(ranged.status, 206);
    assert_eq!(ranged.body, m.clip[10..20]);
    assert_problem(&get(&srv, path, &[("cookie", &cookie(&wrong))]).await, 401);
    assert_problem(&get(&srv, path, &[("cookie", "annostore_key=")]).await, 401);
    // The role still counts: a producer key reads no media.
    assert_problem(
        &get(&srv, path, &[("cookie", &cookie(&producer))]).await,
        403,
    );
    // Headers win over the cookie.
    assert_problem(
        &get(
            &srv,
            path,
            &[
                ("authorization", &bearer(&wrong)),
                ("cookie", &cookie(&reader)),
            ],
        )
        .await,
        401,
    );
    // The cookie counts on this route only.
    for other in ["/v1/media", "/v1/media/clip.mp4/runs", "/v1/types"] {
        assert_problem(
            &get(&srv, other, &[("cookie", &cookie(&reader))]).await,
            401,
        );
    }

    // The listings: readers yes, producers no.
    let reader_api = srv.with_key(&reader);
    reader_api.get("/v1/media").await.expect(200);
    reader_api.get("/v1/media/clip.mp4/runs").await.expect(200);
    let producer_api = srv.with_key(&producer);
    producer_api.get("/v1/media").await.problem(403);
    producer_api
        .get("/v1/media/clip.mp4/runs")
        .await
        .problem(403);

    // The page and its configuration need no key, and say one is needed.
    assert_eq!(get(&srv, "/ui/", &[]).await.status, 200);
    let config = srv.get("/ui/config.json").await;
    assert_eq!(config.expect(200)["auth"], "keys");
}

/// The page directory `ANNOSTORE_UI_DIST` names is served instead of the embedded one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_disk_replaces_the_embedded_one() {
    let dist = tempfile::tempdir().unwrap();
    write(dist.path(), "index.html", "<!doctype html><p>from disk</p>");
    write(dist.path(), "assets/app-123.js", "console.log(1)");
    let srv = Server::start_with(&[("ANNOSTORE_UI_DIST", dist.path().to_str().unwrap())]);
    let page = get(&srv, "/ui/", &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("from disk"));
    assert_eq!(page.header("cache-control"), "no-cache");
    let js = get(&srv, "/ui/assets/app-123.js", &[]).await;
    assert_eq!(js.body, b"console.log(1)");
    assert!(js.header("content-type").contains("javascript"));
    assert_eq!(
        js.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert_problem(&get(&srv, "/ui/..%2F..%2Fetc%2Fpasswd", &[]).await, 404);
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}
