//! Errors as `application/problem+json` (RFC 9457), and the JSON extractor that turns
//! every body rejection into one: malformed JSON 400, wrong shape 422, too large 413.

use crate::auth::Refusal;
use annostore_core::{Error, FieldError};
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            errors: vec![],
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, axum::Json(&self)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        resp
    }
}

/// The API's error type: a core error, or a caller refused by `auth`; answered as a
/// problem.
pub enum ApiError {
    Core(Error),
    Refused(Refusal),
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::Core(e)
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        ApiError::Refused(r)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = match self {
            ApiError::Core(e) => e,
            ApiError::Refused(r) => return r.into_response(),
        };
        let status = status_of(&e);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(error = %e, "engine unavailable");
        }
        let mut p = Problem::new(status, e.to_string());
        if let Error::Invalid(errors) = e {
            p.detail = errors
                .iter()
                .map(|f| match f.index {
                    Some(i) => format!("[{i}].{}: {}", f.field, f.reason),
                    None => format!("{}: {}", f.field, f.reason),
                })
                .take(5)
                .collect::<Vec<_>>()
                .join("; ");
            p.errors = errors;
        }
        let mut resp = p.into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

/// The status that answers a core error.
pub fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::NotFound { .. } => StatusCode::NOT_FOUND,
        Error::Conflict(_) | Error::IdConflict { .. } => StatusCode::CONFLICT,
        Error::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        Error::BadRequest(_) => StatusCode::BAD_REQUEST,
        Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A JSON body whose rejections are problems. The body is parsed in two steps so that
/// malformed JSON is always a 400 and well-formed JSON of the wrong shape always a 422,
/// whichever the parser meets first.
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected a body with content-type application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|r| Problem::new(r.status(), r.body_text()))?;
        // One parse for a good body (upserts carry up to 16 MiB); only a failure is
        // parsed again, in two steps, to tell malformed JSON (400) from a wrong shape (422).
        if let Ok(v) = serde_json::from_slice::<T>(&bytes) {
            return Ok(Json(v));
        }
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")))?;
        serde_json::from_value(value)
            .map(Json)
            .map_err(|e| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<T> IntoResponse for Json<T>
where
    T: Serialize,
{
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Query` whose rejections are problems (400).
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|r: QueryRejection| Problem::new(StatusCode::BAD_REQUEST, r.body_text()))
    }
}

/// `axum::extract::Path` whose rejections are problems: a segment that does not
/// percent-decode to UTF-8 is a 400 like any other malformed request part.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|r: PathRejection| Problem::new(r.status(), r.body_text()))
    }
}

/// A path parameter that must be a UUID: 404 when it is not (no such resource), as a problem.
pub fn parse_id(raw: &str, what: &'static str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(raw).map_err(|_| {
        ApiError::Core(Error::NotFound {
            what,
            id: raw.chars().take(64).collect(),
        })
    })
}
