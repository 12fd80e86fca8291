//! Admission control: at most `max_in_flight` requests are handled at once, at most
//! `max_queued` more wait for a slot (each for at most `queue_timeout_ms`), and the
//! rest are answered 503 with `Retry-After` at once, so overload costs a refusal, not
//! memory. Every admitted request is bounded by `request_timeout_seconds`, but for
//! `POST /v1/runs` (a whole run in one request), bounded by the runs' own time limit
//! (`with_runs_timeout`).
//!
//! Written here rather than from tower's `ConcurrencyLimit` + `LoadShed` + `Buffer`:
//! those give an unbounded queue or none, and no bound on the wait. Health and metrics
//! skip the queue, so probes are answered under overload.

use crate::config::HttpConfig;
use crate::problem::Problem;
use crate::routes::AppState;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;

pub struct Admission {
    slots: Semaphore,
    waiting: AtomicUsize,
    config: HttpConfig,
    /// The bound of `POST /v1/runs` instead of `request_timeout_seconds`.
    runs_timeout: Option<Duration>,
}

/// Counts a waiting request until dropped (also when its client goes away).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub fn new(config: HttpConfig) -> Admission {
        Admission {
            slots: Semaphore::new(config.max_in_flight.max(1)),
            waiting: AtomicUsize::new(0),
            config,
            runs_timeout: None,
        }
    }

    /// Bounds `POST /v1/runs` by `limit` instead of the request timeout: a run streams
    /// for as long as its producer writes (the handler keeps its own, shorter, deadline
    /// and cancels the run past it; this is the backstop).
    pub fn with_runs_timeout(mut self, limit: Duration) -> Admission {
        self.runs_timeout = Some(limit);
        self
    }

    /// Requests handled and waiting now, as gauges (read by operators and by the
    /// admission tests, through `/metrics`, which skips the queue).
    fn report(&self) {
        let running = self.config.max_in_flight.max(1) - self.slots.available_permits();
        metrics::gauge!("annostore_http_in_flight").set(running as f64);
        metrics::gauge!("annostore_http_waiting").set(self.waiting.load(Ordering::Acquire) as f64);
    }

    fn overloaded(&self, detail: String) -> Response {
        metrics::counter!("annostore_http_shed_total").increment(1);
        let mut resp = Problem::new(StatusCode::SERVICE_UNAVAILABLE, detail).into_response();
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(self.config.retry_after_seconds),
        );
        resp
    }

    async fn run(&self, req: Request, next: Next) -> Response {
        let slot = match self.slots.try_acquire() {
            Ok(slot) => slot,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.config.max_queued {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    return self.overloaded(format!(
                        "overloaded: {} requests running and {} waiting; retry later",
                        self.config.max_in_flight, self.config.max_queued
                    ));
                }
                let _waiting = Waiting(&self.waiting);
                self.report();
                let wait = Duration::from_millis(self.config.queue_timeout_ms);
                match tokio::time::timeout(wait, self.slots.acquire()).await {
                    Ok(Ok(slot)) => slot,
                    _ => {
                        return self.overloaded(format!(
                            "overloaded: no slot within {} ms; retry later",
                            self.config.queue_timeout_ms
                        ));
                    }
                }
            }
        };
        self.report();
        let limit = match self.runs_timeout {
            Some(runs) if req.uri().path() == "/v1/runs" => runs,
            _ => Duration::from_secs(self.config.request_timeout_seconds.max(1)),
        };
        let resp = tokio::time::timeout(limit, next.run(req)).await;
        drop(slot);
        self.report();
        match resp {
            Ok(resp) => resp,
            Err(_) => {
                metrics::counter!("annostore_http_timeouts_total").increment(1);
                self.overloaded(format!(
                    "the request took longer than {} s and may or may not have taken \
                     effect; upserts are idempotent and can be retried",
                    limit.as_secs()
                ))
            }
        }
    }
}

/// The middleware.
pub async fn admit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if matches!(req.uri().path(), "/healthz" | "/metrics") {
        return next.run(req).await;
    }
    state.admission.run(req, next).await
}
