//! `POST /v1/runs`: a whole run in one request. The body is the run as NDJSON (start
//! request, then one annotation per line; `runs/ndjson.rs`), streamed, or
//! `{"file": "relative/path.ndjson"}` naming a file under `[runs] file_root`
//! (`files.rs`), read the same way. The run is started as `POST /v1/operations`
//! starts one (the caller's key is its producer), its annotations are upserted batch by
//! batch (the next batch is read while one is written), and it is finished; the answer
//! is the finished operation. Any failure after the start cancels the run, so the key's
//! previous run stays visible, and the problem names the operation, the first bad line
//! and whether the cancel took. A run is bounded by `[runs] max_bytes` and
//! `timeout_seconds` (which admission applies to this route instead of the request
//! timeout); if the request goes away mid-run, the run is cancelled all the same.

mod ndjson;

use super::AppState;
use super::files as file;
use crate::auth::Caller;
use crate::problem::{Json, status_of};
use annostore_core::Error;
use annostore_core::model::Operation;
use annostore_core::service::Service;
use axum::body::Bytes;
use axum::extract::{Extension, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use ndjson::{Batch, Bounds, ReadError, RunReader};
use serde::{Deserialize, Serialize};
use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::time::{Instant, timeout_at};
use tracing::{info, warn};
use uuid::Uuid;

/// Bytes read from a file at a time.
const FILE_CHUNK: usize = 256 * 1024;
/// The longest a failed run's answer waits while the rest of its body is drained, and
/// the most it drains.
const DRAIN_TIME: Duration = Duration::from_secs(5);
const DRAIN_BYTES: u64 = 64 * 1024 * 1024;

/// The `application/json` form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    /// A path relative to `[runs] file_root`.
    file: String,
}

/// The answer to a run written whole.
#[derive(Serialize)]
pub struct RunDone {
    operation: Operation,
    /// Annotation lines written (an id sent twice counts twice here, once in the
    /// operation's `annotation_count`).
    annotations: u64,
    /// Upsert batches they were written in.
    batches: u64,
}

pub async fn put(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    req: Request,
) -> Response {
    let deadline = Instant::now() + Duration::from_secs(state.runs.timeout_seconds.max(1));
    match media_type(req.headers()).as_str() {
        "application/x-ndjson" | "application/ndjson" => {
            let body = req.into_body().into_data_stream();
            run(&state, &caller, body, deadline).await
        }
        "application/json" => {
            let Json(named) = match Json::<FileRef>::from_request(req, &state).await {
                Ok(named) => named,
                Err(problem) => return problem.into_response(),
            };
            let root = state.runs.file_root.as_deref();
            let (file, len) = match file::open(root, "[runs] file_root", &named.file).await {
                Ok(opened) => (opened.file, opened.len),
                Err(e) => return RunProblem::file(e).into_response(),
            };
            if len > state.runs.max_bytes {
                return RunProblem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "file {:?} is {len} bytes; a run may be at most {} ([runs] max_bytes)",
                        named.file, state.runs.max_bytes
                    ),
                )
                .into_response();
            }
            run(&state, &caller, Box::pin(file_chunks(file)), deadline).await
        }
        _ => RunProblem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected Content-Type application/x-ndjson (the run itself) or \
             application/json ({\"file\": \"relative/path.ndjson\"})",
        )
        .into_response(),
    }
}

/// The content type without its parameters, lower case ("" when absent).
fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// A file as a stream of chunks.
fn file_chunks(file: tokio::fs::File) -> impl Stream<Item = std::io::Result<Bytes>> + Send {
    futures::stream::try_unfold(file, |mut file| async move {
        let mut buf = vec![0; FILE_CHUNK];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((Bytes::from(buf), file)))
    })
}

/// Reads, starts, writes and finishes one run; cancels it on any failure after the start.
async fn run<S, E>(state: &AppState, caller: &Caller, stream: S, deadline: Instant) -> Response
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
{
    let began = std::time::Instant::now();
    let limits = state.service.limits();
    let bounds = Bounds {
        // An annotation longer than an upsert body could never be upserted either.
        max_line_bytes: limits.max_body_bytes,
        max_total_bytes: state.runs.max_bytes,
        max_batch: limits.max_batch.max(1),
        max_batch_bytes: limits.max_body_bytes,
    };
    let mut reader = RunReader::new(stream, bounds);
    match attempt(state, caller, &mut reader, deadline).await {
        Ok(done) => {
            info!(
                operation = %done.operation.id,
                annotations = done.annotations,
                batches = done.batches,
                bytes = reader.bytes_read(),
                ms = began.elapsed().as_millis() as u64,
                "run written in one call"
            );
            (StatusCode::CREATED, axum::Json(done)).into_response()
        }
        Err(problem) => {
            // Bounded: a client still sending gets the answer, not a reset connection.
            let drain = deadline.min(Instant::now() + DRAIN_TIME);
            let _ = timeout_at(drain, reader.discard(DRAIN_BYTES)).await;
            problem.into_response()
        }
    }
}

/// The run's start, writes and finish; after the start, a failure cancels it and the
/// problem says so.
async fn attempt<S, E>(
    state: &AppState,
    caller: &Caller,
    reader: &mut RunReader<S>,
    deadline: Instant,
) -> Result<RunDone, RunProblem>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
{
    let timeout = state.runs.timeout_seconds;
    let (start_line, mut start) = match timeout_at(deadline, reader.start()).await {
        Err(_) => return Err(RunProblem::late(timeout, true)),
        Ok(r) => r.map_err(RunProblem::read)?,
    };
    start.producer = caller.key_id();
    let op = state
        .service
        .start(start)
        .await
        .map_err(|e| RunProblem::core(e, At::Start(start_line)))?;
    let mut guard = CancelOnDrop {
        service: state.service.clone(),
        id: Some(op.id),
    };
    let written = write(&state.service, op.id, reader, deadline, timeout).await;
    let Err(mut problem) = written else {
        guard.id = None;
        return written;
    };
    let cancelled = state.service.cancel(op.id).await;
    guard.id = None;
    problem.operation_id = Some(op.id);
    problem.cancelled = Some(cancelled.is_ok());
    match cancelled {
        Ok(_) => problem
            .detail
            .push_str(&format!("; run {} cancelled", op.id)),
        Err(e) => problem
            .detail
            .push_str(&format!("; cancelling run {} failed too: {e}", op.id)),
    }
    if problem.cancelled == Some(true) {
        info!(
            operation = %op.id, status = problem.status, line = problem.line,
            detail = %problem.detail, "one-call run failed and was cancelled"
        );
    } else {
        warn!(
            operation = %op.id, status = problem.status, line = problem.line,
            detail = %problem.detail, "one-call run failed and could not be cancelled"
        );
    }
    Err(problem)
}

/// Upserts every batch, reading the next while one is written, then finishes.
async fn write<S, E>(
    service: &Service,
    id: Uuid,
    reader: &mut RunReader<S>,
    deadline: Instant,
    timeout: u64,
) -> Result<RunDone, RunProblem>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
{
    let (mut annotations, mut batches) = (0u64, 0u64);
    let mut next = read(reader, deadline, timeout).await?;
    while let Some(batch) = next {
        let following = {
            let upsert = timeout_at(deadline, service.upsert(id, &batch.items));
            let read = read(reader, deadline, timeout);
            tokio::pin!(upsert, read);
            let mut read_early = None;
            let written = loop {
                tokio::select! {
                    written = &mut upsert => break written,
                    r = &mut read, if read_early.is_none() => read_early = Some(r),
                }
            };
            // The batch's failure comes first: its lines precede whatever the read met.
            match written {
                Err(_) => return Err(RunProblem::late(timeout, false)),
                Ok(Err(e)) => return Err(RunProblem::core(e, At::Batch(&batch))),
                Ok(Ok(_)) => {}
            }
            match read_early {
                Some(r) => r,
                None => read.await,
            }
        };
        annotations += batch.items.len() as u64;
        batches += 1;
        next = following?;
    }
    let operation = match timeout_at(deadline, service.finish(id)).await {
        Err(_) => return Err(RunProblem::late(timeout, false)),
        Ok(Err(e)) => return Err(RunProblem::core(e, At::Run)),
        Ok(Ok(op)) => op,
    };
    Ok(RunDone {
        operation,
        annotations,
        batches,
    })
}

async fn read<S, E>(
    reader: &mut RunReader<S>,
    deadline: Instant,
    timeout: u64,
) -> Result<Option<Batch>, RunProblem>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
{
    match timeout_at(deadline, reader.next_batch()).await {
        Err(_) => Err(RunProblem::late(timeout, true)),
        Ok(r) => r.map_err(RunProblem::read),
    }
}

/// Cancels the run if the request is dropped before it finished or was cancelled (the
/// client went away, or admission's backstop timed it out).
struct CancelOnDrop {
    service: Arc<Service>,
    id: Option<Uuid>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            warn!(operation = %id, "run abandoned mid-request; left to expire");
            return;
        };
        let service = self.service.clone();
        runtime.spawn(async move {
            match service.cancel(id).await {
                Ok(_) => warn!(operation = %id, "run abandoned mid-request: cancelled"),
                Err(e) => warn!(
                    operation = %id, error = %e,
                    "run abandoned mid-request; cancelling it failed (it expires with its lease)"
                ),
            }
        });
    }
}

/// What a service error is about.
#[derive(Clone, Copy)]
enum At<'a> {
    /// The start request, on this line.
    Start(u64),
    /// One batch of annotations.
    Batch(&'a Batch),
    /// The run as a whole (its finish).
    Run,
}

/// One problem of a run's line (the `errors` of a run's problem).
#[derive(Debug, Serialize, PartialEq)]
struct LineError {
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u64>,
    field: String,
    reason: String,
}

/// A problem (RFC 9457) that also names the run: its operation, the first line at
/// fault, and whether the run was cancelled.
#[derive(Debug, Serialize)]
struct RunProblem {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<LineError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    operation_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cancelled: Option<bool>,
}

impl RunProblem {
    fn new(status: StatusCode, detail: impl Into<String>) -> RunProblem {
        RunProblem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            errors: vec![],
            operation_id: None,
            line: None,
            cancelled: None,
        }
    }

    fn read(e: ReadError) -> RunProblem {
        let status = match &e {
            ReadError::NoStart | ReadError::BadStart { .. } | ReadError::BadJson { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ReadError::LineTooLong { .. } | ReadError::TooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ReadError::Body(_) => StatusCode::BAD_REQUEST,
        };
        let mut p = RunProblem::new(status, e.to_string());
        p.line = e.line();
        p
    }

    /// Past the run's time limit: waiting for its bytes (408), or for the engines (503).
    fn late(timeout: u64, reading: bool) -> RunProblem {
        if reading {
            RunProblem::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the run did not arrive within its time limit of {timeout} s ([runs] timeout_seconds)"
                ),
            )
        } else {
            RunProblem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the run was not written within its time limit of {timeout} s ([runs] timeout_seconds)"
                ),
            )
        }
    }

    /// A service error about what `at` says.
    fn core(e: Error, at: At<'_>) -> RunProblem {
        let line_of = |index: Option<usize>| match at {
            At::Start(line) => Some(line),
            At::Batch(batch) => index.and_then(|i| batch.line_of(i)),
            At::Run => None,
        };
        let mut p = RunProblem::new(status_of(&e), e.to_string());
        match e {
            Error::Invalid(errors) => {
                p.errors = errors
                    .into_iter()
                    .map(|f| LineError {
                        line: line_of(f.index),
                        field: f.field,
                        reason: f.reason,
                    })
                    .collect();
                p.line = p.errors.iter().filter_map(|f| f.line).min();
                p.detail = p
                    .errors
                    .iter()
                    .take(5)
                    .map(|f| match f.line {
                        Some(l) => format!("line {l}: {}: {}", f.field, f.reason),
                        None => format!("{}: {}", f.field, f.reason),
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
            }
            Error::IdConflict { id, .. } => {
                if let At::Batch(batch) = at {
                    p.line = batch
                        .items
                        .iter()
                        .position(|item| {
                            item["id"].as_str().and_then(|s| Uuid::parse_str(s).ok()) == Some(id)
                        })
                        .and_then(|i| batch.line_of(i));
                }
            }
            _ => {}
        }
        p
    }

    fn file(e: file::FileError) -> RunProblem {
        use file::FileError as F;
        let status = match &e {
            F::NoRoot(_) | F::Outside(_) | F::Denied(_) => StatusCode::FORBIDDEN,
            F::NotRelative(_) | F::NotAFile(_) => StatusCode::BAD_REQUEST,
            F::NotFound(_) => StatusCode::NOT_FOUND,
            F::Root(_) | F::Io { .. } => StatusCode::SERVICE_UNAVAILABLE,
        };
        if status == StatusCode::SERVICE_UNAVAILABLE {
            warn!(error = %e, "a run's file cannot be read");
        }
        RunProblem::new(status, e.to_string())
    }
}

impl IntoResponse for RunProblem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, axum::Json(&self)).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}
