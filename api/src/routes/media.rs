//! Media items, for the web viewer: recent media (`GET /v1/media`), the runs of every
//! key that wrote to one (`GET /v1/media/{media_id}/runs`), and its video file under
//! `[ui] media_root` (`GET /v1/media/{media_id}/file`, with range requests; a `<video>`
//! cannot send headers, so this route also takes the key from the `annostore_key`
//! cookie, see `auth::presented`).

use super::AppState;
use super::files::{self, FileError};
use crate::problem::{ApiResult, Json, Path, Problem, Query};
use annostore_core::service::{MediaList, MediaRuns};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tower::ServiceExt;
use tower_http::services::ServeFile;
use tracing::warn;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    q: Option<String>,
    limit: Option<u32>,
}

pub async fn list(
    State(state): State<AppState>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<MediaList>> {
    Ok(Json(
        state.service.recent_media(p.q.as_deref(), p.limit).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsParams {
    per_key: Option<u32>,
}

pub async fn runs(
    State(state): State<AppState>,
    Path(media_id): Path<String>,
    Query(p): Query<RunsParams>,
) -> ApiResult<Json<MediaRuns>> {
    Ok(Json(state.service.media_runs(&media_id, p.per_key).await?))
}

/// The file `media_root/<media_id>`, through tower-http's `ServeFile` (ranges, `HEAD`,
/// `Last-Modified`, `If-Modified-Since`), opened again from the very file that passed
/// the checks of `files::open`.
pub async fn file(
    State(state): State<AppState>,
    Path(media_id): Path<String>,
    req: Request,
) -> Response {
    let root = state.ui.config.media_root.as_deref();
    let opened = match files::open(root, "[ui] media_root", &media_id).await {
        Ok(opened) => opened,
        Err(e) => return refusal(e).into_response(),
    };
    let mime = mime_guess::from_path(&opened.path)
        .first()
        .or_else(|| mime_guess::from_path(&media_id).first())
        .unwrap_or(mime_guess::mime::APPLICATION_OCTET_STREAM);
    let serve = ServeFile::new_with_mime(opened.reopen_path(), &mime);
    // `opened` stays open until ServeFile has opened its path (on Linux, its fd).
    let resp = match serve.oneshot(req).await {
        Ok(resp) => resp.map(Body::new),
        Err(never) => match never {},
    };
    let len = opened.len;
    drop(opened);
    match resp.status() {
        // ServeFile could not open what was open a moment ago.
        StatusCode::NOT_FOUND => {
            return Problem::new(
                StatusCode::NOT_FOUND,
                format!("no file for media {media_id:?}"),
            )
            .into_response();
        }
        // Errors are problems here too; the Content-Range (`bytes */LEN`) stays.
        StatusCode::RANGE_NOT_SATISFIABLE => {
            let mut problem = Problem::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!(
                    "the range cannot be served: the file is {len} bytes \
                     (one range, within the file)"
                ),
            )
            .into_response();
            if let Some(range) = resp.headers().get(header::CONTENT_RANGE) {
                problem
                    .headers_mut()
                    .insert(header::CONTENT_RANGE, range.clone());
            }
            return problem;
        }
        // ServeFile answers an I/O error with a bare 500.
        status if status.is_server_error() => {
            warn!(media_id = %media_id, %status, "a media file could not be served");
            let mut problem = Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the file for media {media_id:?} cannot be read now"),
            )
            .into_response();
            problem
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return problem;
        }
        _ => {}
    }
    let mut resp = resp;
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    resp
}

fn refusal(e: FileError) -> Response {
    let status = match &e {
        FileError::NoRoot(_) | FileError::NotFound(_) | FileError::NotAFile(_) => {
            StatusCode::NOT_FOUND
        }
        FileError::NotRelative(_) => StatusCode::BAD_REQUEST,
        FileError::Outside(_) | FileError::Denied(_) => StatusCode::FORBIDDEN,
        FileError::Root(_) | FileError::Io { .. } => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut resp = Problem::new(status, e.to_string()).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        warn!(error = %e, "a media file cannot be read");
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}
