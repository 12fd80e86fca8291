//! Backpressure: past its slots and its queue the API answers 503 with `Retry-After`
//! at once, a queued request waits at most its queue timeout, and an admitted one at
//! most its request timeout. Requests hold their slot while their body arrives, so a
//! body sent piece by piece holds a slot for as long as the test wants.

use annostore_tests::{Api, Server, eventually};
use futures::channel::mpsc;
use std::time::Duration;

type Chunks = mpsc::UnboundedSender<Result<Vec<u8>, std::io::Error>>;

/// Starts a search whose body arrives only as the returned sender sends it.
fn slow_search(
    api: &Api,
) -> (
    Chunks,
    tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
) {
    let (tx, rx) = mpsc::unbounded();
    let req = api
        .http
        .post(api.url("/v1/annotations/search"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(rx));
    tx.unbounded_send(Ok(b"{\"media_id\":".to_vec()))
        .expect("send");
    (tx, tokio::spawn(req.send()))
}

/// The value of a gauge on `/metrics` (which skips the queue).
async fn gauge(api: &Api, name: &str) -> Option<f64> {
    let text = api.get("/metrics").await.text;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn wait_for(api: &Api, name: &str, want: f64) {
    eventually(Duration::from_secs(20), name, || async {
        gauge(api, name).await == Some(want)
    })
    .await;
}

/// A request answered without going through the harness (which refuses any 5xx).
async fn raw_get(api: &Api, path: &str) -> reqwest::Response {
    api.http.get(api.url(path)).send().await.expect("request")
}

async fn assert_overloaded(resp: reqwest::Response, detail: &str) {
    assert_eq!(resp.status(), 503);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let body: serde_json::Value = resp.json().await.expect("problem body");
    let got = body["detail"].as_str().unwrap_or_default();
    assert!(got.contains(detail), "{got:?} lacks {detail:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_slots_and_the_queue_requests_are_refused_at_once() {
    let srv = Server::start_with(&[
        ("ANNOSTORE_HTTP__MAX_IN_FLIGHT", "1"),
        ("ANNOSTORE_HTTP__MAX_QUEUED", "1"),
        ("ANNOSTORE_HTTP__QUEUE_TIMEOUT_MS", "60000"),
    ]);
    let api = srv.api();
    let (a_body, a) = slow_search(&api);
    wait_for(&api, "annostore_http_in_flight", 1.0).await;
    let (b_body, b) = slow_search(&api);
    wait_for(&api, "annostore_http_waiting", 1.0).await;

    // One running, one waiting: the next is refused without waiting.
    assert_overloaded(raw_get(&api, "/v1/types").await, "requests running").await;
    // Health and metrics are still answered.
    srv.get("/healthz").await.expect(200);

    // The held requests complete once their bodies do, one after the other.
    a_body
        .unbounded_send(Ok(br#""m"}"#.to_vec()))
        .expect("send");
    drop(a_body);
    let a = a.await.expect("task").expect("first request");
    assert_eq!(a.status(), 200, "{:?}", a.text().await);
    wait_for(&api, "annostore_http_waiting", 0.0).await;
    b_body
        .unbounded_send(Ok(br#""m"}"#.to_vec()))
        .expect("send");
    drop(b_body);
    let b = b.await.expect("task").expect("second request");
    assert_eq!(b.status(), 200);
    wait_for(&api, "annostore_http_in_flight", 0.0).await;
    srv.get("/v1/types").await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_and_requests_are_bounded_in_time() {
    let srv = Server::start_with(&[
        ("ANNOSTORE_HTTP__MAX_IN_FLIGHT", "1"),
        ("ANNOSTORE_HTTP__QUEUE_TIMEOUT_MS", "300"),
        ("ANNOSTORE_HTTP__REQUEST_TIMEOUT_SECONDS", "2"),
    ]);
    let api = srv.api();
    // A body that never ends holds the one slot until the request timeout.
    let (held_body, held) = slow_search(&api);
    wait_for(&api, "annostore_http_in_flight", 1.0).await;
    assert_overloaded(raw_get(&api, "/v1/types").await, "no slot within 300 ms").await;
    let held = held.await.expect("task").expect("held request");
    assert_overloaded(held, "took longer than 2 s").await;
    drop(held_body);
    wait_for(&api, "annostore_http_in_flight", 0.0).await;
    srv.get("/v1/types").await.expect(200);
}
