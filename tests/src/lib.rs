//! Black-box harness: starts the `annostore` binary on a free loopback port with a fresh
//! data directory and drives it over HTTP.
//!
//! Every response goes through [`Resp`], which fails the test on any 5xx: the API must
//! never answer one to anything a test sends.

use serde_json::{Value, json};
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub use serde_json;
pub use uuid::Uuid;

/// How long a server may take to print its listening line.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// The `annostore` binary: `ANNOSTORE_BIN`, else `target/debug/annostore` next to the
/// `deps` directory that holds the test executable.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("ANNOSTORE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current test executable");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let bin = dir.join(format!("annostore{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "annostore binary not found at {}: run `cargo build --bin annostore` first \
         (or set ANNOSTORE_BIN)",
        bin.display()
    );
    bin
}

/// An answer of the server: status, content type and the body as JSON (or as a string
/// value when it is not JSON).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub content_type: String,
    pub body: Value,
    pub text: String,
}

impl Resp {
    /// Panics unless the status is `want`; returns the body.
    #[track_caller]
    pub fn expect(&self, want: u16) -> &Value {
        assert_eq!(
            self.status, want,
            "expected HTTP {want}, got {}: {}",
            self.status, self.text
        );
        &self.body
    }

    /// Panics unless this is an `application/problem+json` answer with status `want`
    /// (and the `status` and `detail` members).
    #[track_caller]
    pub fn problem(&self, want: u16) -> &Value {
        self.expect(want);
        assert!(
            self.content_type.starts_with("application/problem+json"),
            "a {want} must be application/problem+json, got {:?}: {}",
            self.content_type,
            self.text
        );
        assert_eq!(
            self.body["status"],
            json!(want),
            "problem status: {}",
            self.text
        );
        assert!(
            self.body["detail"].is_string(),
            "problem without detail: {}",
            self.text
        );
        &self.body
    }
}

/// A cheap, cloneable client of one server.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
            base: base.to_owned(),
        }
    }

    /// The same server, presenting `key` (`Authorization: Bearer`) on every request.
    pub fn with_key(&self, key: &str) -> Api {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).expect("header"),
        );
        Api {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .default_headers(headers)
                .build()
                .expect("http client"),
            base: self.base.clone(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request; Err only when the server cannot be reached (or dies mid-request).
    pub async fn try_send(&self, req: reqwest::RequestBuilder) -> Result<Resp, reqwest::Error> {
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = resp.bytes().await?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(text.clone()));
        let r = Resp {
            status,
            content_type,
            body,
            text,
        };
        assert!(
            r.status < 500,
            "the server answered {}: {}",
            r.status,
            r.text.chars().take(2000).collect::<String>()
        );
        Ok(r)
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        self.try_send(req)
            .await
            .unwrap_or_else(|e| panic!("request failed: {e}"))
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    /// POST with no body at all (finish, cancel).
    pub async fn post_empty(&self, path: &str) -> Resp {
        self.send(self.http.post(self.url(path))).await
    }

    /// POST of raw bytes as `application/json` (for malformed bodies).
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> Resp {
        self.send(
            self.http
                .post(self.url(path))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body),
        )
        .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.send(self.http.put(self.url(path)).json(body)).await
    }

    // ---- types ----

    pub async fn put_type(&self, name: &str, version: u32, def: &Value) -> Resp {
        self.put(&format!("/v1/types/{name}/versions/{version}"), def)
            .await
    }

    /// Registers a type version with an any-object schema (200 or 201).
    pub async fn register(&self, name: &str, version: u32) {
        let r = self.put_type(name, version, &json!({})).await;
        assert!(
            r.status == 200 || r.status == 201,
            "registering {name} v{version}: {} {}",
            r.status,
            r.text
        );
    }

    // ---- operations ----

    pub async fn start_raw(&self, body: &Value) -> Resp {
        self.post("/v1/operations", body).await
    }

    /// Starts an operation (expects 201) and returns it.
    pub async fn start_op(&self, ty: &str, version: u32, pivot: &str) -> Value {
        self.start_op_with(ty, version, pivot, json!({})).await
    }

    /// Starts an operation with extra fields (lease_seconds, metadata) merged into the body.
    pub async fn start_op_with(&self, ty: &str, version: u32, pivot: &str, extra: Value) -> Value {
        let mut body = json!({
            "annotation_type": ty,
            "annotation_type_version": version,
            "pivot_id": pivot,
        });
        if let Value::Object(extra) = extra {
            body.as_object_mut().unwrap().extend(extra);
        }
        self.start_raw(&body).await.expect(201).clone()
    }

    pub async fn upsert(&self, op: &str, items: &[Value]) -> Resp {
        self.post(
            &format!("/v1/operations/{op}/annotations"),
            &json!({ "annotations": items }),
        )
        .await
    }

    /// Upserts and expects `{upserted: items.len()}`.
    pub async fn upsert_ok(&self, op: &str, items: &[Value]) {
        let r = self.upsert(op, items).await;
        assert_eq!(r.expect(200)["upserted"], json!(items.len()), "{}", r.text);
    }

    pub async fn finish(&self, op: &str) -> Resp {
        self.post_empty(&format!("/v1/operations/{op}/finish"))
            .await
    }

    pub async fn cancel(&self, op: &str) -> Resp {
        self.post_empty(&format!("/v1/operations/{op}/cancel"))
            .await
    }

    pub async fn op(&self, op: &str) -> Resp {
        self.get(&format!("/v1/operations/{op}")).await
    }

    /// The operation (expects 200).
    pub async fn op_ok(&self, op: &str) -> Value {
        self.op(op).await.expect(200).clone()
    }

    // ---- search ----

    pub async fn search(&self, body: &Value) -> Resp {
        self.post("/v1/annotations/search", body).await
    }

    /// Every annotation a search returns, following page tokens with pages of `limit`.
    /// Checks that pages are never larger than asked.
    pub async fn search_all(&self, filter: &Value, limit: u32) -> Vec<Value> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut body = filter.clone();
            body["limit"] = json!(limit);
            if let Some(t) = &token {
                body["page_token"] = json!(t);
            }
            let r = self.search(&body).await;
            let page = r.expect(200);
            let anns = page["annotations"].as_array().expect("annotations array");
            assert!(anns.len() <= limit as usize, "page larger than its limit");
            out.extend(anns.iter().cloned());
            match page["next_page_token"].as_str() {
                Some(t) => token = Some(t.to_owned()),
                None => break,
            }
            assert!(out.len() < 1_000_000, "paging does not end");
        }
        out
    }

    /// Every annotation of `GET /v1/media/{media}/annotations?{query}`, paged by `limit`.
    pub async fn media_all(&self, media: &str, query: &str, limit: u32) -> Vec<Value> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("/v1/media/{media}/annotations?limit={limit}");
            if !query.is_empty() {
                path.push('&');
                path.push_str(query);
            }
            if let Some(t) = &token {
                path.push_str(&format!("&page_token={t}"));
            }
            let r = self.get(&path).await;
            let page = r.expect(200);
            let anns = page["annotations"].as_array().expect("annotations array");
            assert!(anns.len() <= limit as usize);
            out.extend(anns.iter().cloned());
            match page["next_page_token"].as_str() {
                Some(t) => token = Some(t.to_owned()),
                None => break,
            }
        }
        out
    }
}

/// A running `annostore serve` on its own data directory. Killed on drop.
pub struct Server {
    child: Option<Child>,
    dir: TempDir,
    env: Vec<(String, String)>,
    api: Api,
}

impl std::ops::Deref for Server {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts a server with extra environment (configuration as `ANNOSTORE_*` variables).
    pub fn start_with(env: &[(&str, &str)]) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("annostore-test-")
            .tempdir()
            .expect("temp dir");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let (child, base) = spawn(dir.path(), &env);
        Server {
            child: Some(child),
            dir,
            env,
            api: Api::new(&base),
        }
    }

    pub fn api(&self) -> Api {
        self.api.clone()
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same data directory (killing it first if it runs).
    pub fn restart(&mut self) {
        self.kill9();
        let (child, base) = spawn(self.dir.path(), &self.env);
        self.child = Some(child);
        self.api = Api::new(&base);
    }

    /// Runs the command-line client against this server: `annostore ARGS --server URL`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(binary())
            .args(args)
            .args(["--server", &self.api.base])
            .env_remove("ANNOSTORE_SERVER")
            .stdin(Stdio::null())
            .output()
            .expect("running the annostore CLI")
    }
}

impl Server {
    /// Runs a command that opens the engines itself (`reconcile`, `schema apply`) on this
    /// server's data directory, with its environment. Stop the server first: the
    /// embedded engines have one owner at a time.
    pub fn offline(&self, args: &[&str]) -> Output {
        command(self.dir.path(), &self.env)
            .args(args)
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .output()
            .expect("running the annostore CLI")
    }

    /// `annostore reconcile --once` on this server's engines (stop it first): the round
    /// it printed.
    pub fn reconcile_once(&self) -> Value {
        let out = self.offline(&["reconcile", "--once"]);
        assert!(
            out.status.success(),
            "reconcile --once failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("reconcile --once prints one JSON object")
    }

    /// `annostore keys create --name NAME --role ROLE` on this server's keys file (a
    /// running server notices it): the key's id and the whole key.
    pub fn create_key(&self, name: &str, role: &str) -> (String, String) {
        let out = self.offline(&["keys", "create", "--name", name, "--role", role, "--json"]);
        assert!(
            out.status.success(),
            "keys create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("keys create --json prints JSON");
        (s(&v, "id"), s(&v, "key"))
    }

    /// The embedded engines' data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The `annostore` binary run in `root`, with `env` as its only `ANNOSTORE_*` variables.
pub fn command(root: &Path, env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(binary());
    // No ./annostore.toml of the developer's may leak in.
    cmd.current_dir(root).stdin(Stdio::null());
    // The binary reads ANNOSTORE_* variables as configuration: pass only ours.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ANNOSTORE_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn spawn(root: &Path, env: &[(String, String)]) -> (Child, String) {
    let log_path = root.join("server.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .expect("server log file");
    let mut child = command(root, env)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(root.join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawning annostore serve");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        // Keeps draining stdout after the listening line so the server never blocks on it.
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.trim().strip_prefix("annostore listening on ") {
                let _ = tx.send(addr.to_owned());
            }
        }
    });
    match rx.recv_timeout(START_DEADLINE) {
        Ok(base) => (child, base),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!(
                "annostore serve did not report its address ({e:?}); its stderr:\n{}",
                tail(&log, 4000)
            );
        }
    }
}

fn tail(s: &str, n: usize) -> &str {
    let start = s.len().saturating_sub(n);
    let start = (start..=s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    &s[start..]
}

/// Polls `check` every 50 ms until it returns true; panics after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `n` annotations on `media`, one after the other (start i*10, end i*10+5), with the
/// given label and `data: {"run": run, "i": i}`.
pub fn anns(media: &str, n: usize, label: &str, run: &str) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({
                "media_id": media,
                "start_ms": i * 10,
                "end_ms": i * 10 + 5,
                "label": label,
                "confidence": 0.5,
                "data": {"run": run, "i": i},
            })
        })
        .collect()
}

/// Like [`anns`] with explicit random ids; returns the items and their ids.
pub fn anns_with_ids(media: &str, n: usize, label: &str, run: &str) -> (Vec<Value>, Vec<String>) {
    let mut items = anns(media, n, label, run);
    let ids: Vec<String> = items
        .iter_mut()
        .map(|a| {
            let id = Uuid::new_v4().to_string();
            a["id"] = json!(id);
            id
        })
        .collect();
    (items, ids)
}

/// The string at `v[key]` (panics when absent).
#[track_caller]
pub fn s(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
        .to_owned()
}

/// Checks search order: (media_id, start_ms, id) strictly increasing.
#[track_caller]
pub fn assert_search_order(anns: &[Value]) {
    let key = |a: &Value| {
        (
            s(a, "media_id"),
            a["start_ms"].as_i64().unwrap(),
            s(a, "id"),
        )
    };
    for w in anns.windows(2) {
        assert!(
            key(&w[0]) < key(&w[1]),
            "out of order or duplicated: {:?} then {:?}",
            key(&w[0]),
            key(&w[1])
        );
    }
}
